"""A hostile suite for the redesigned sandbox: the kernel is the boundary, Python checks only classify.

Every attack here is harmless even if it succeeded: it aims only at things this module creates (a
canary file with random content, a path that must not appear, a loopback listener, a victim process,
an environment variable) or at the sandbox's own processes. Each has the outcome the rubric must
give it (``rewards.outcomes``: cheat < crash < timeout < illegal < loss < win), and afterwards the
sandbox must still be healthy: an honest program scores exactly what it scores on a fresh runner.

The attacks come in five tables, each run in as few batches as possible:

- ``PROGRAM_ATTACKS``: strategy programs, through ``Runner.evaluate`` (extraction, AST rules, the
  confined worker, the parent's replay). ``ESCAPE`` was a way past the AST rules this suite found
  (a ``match`` class pattern naming attributes the checker did not read); the rules now refuse it,
  so the attacks built on it score as cheats before they run, and ``RAW_ATTACKS`` show the kernel
  containing the same actions with no Python check at all.
- ``WORKER_ATTACKS``: the parent's side, driven by ``tests/hostile_worker.py``, a payload that
  writes bad frames where a compromised worker would.
- ``CELL_ATTACKS``: code-sandbox cells (full builtins, an audit hook that refuses, the kernel).
- ``RAW_ATTACKS``: raw code in a confined worker with no Python check at all (``sandbox_raw.py``).
- ``EXTRACTION_ATTACKS``: completions built to make extraction slow.

An attack that gets through, or is scored milder than it should be, is marked
``xfail(strict=True)`` with the hole in its reason; none is left. Predicting the environment's
randomness (issue 23) is tested here from inside the sandbox and statistically in test_unpredictable.py.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stratagem.agents.baselines import MATMUL_TEXTBOOK
from stratagem.agents.programs import ProgramError, load
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Limits, PoolError, Runner
from stratagem.envs.sandbox import SandboxEnv
from stratagem.envs.spec import resolve
from stratagem.sandbox.channel import HEADER, POLL_BYTES, FrameReader
from stratagem.sandbox.keys import cache_root
from stratagem.sandbox.pool import WorkerPool
from tests.sandbox_raw import run_raw

HONEST = (Path(__file__).parents[1] / "examples" / "strategies" / "corner_2048.py").read_text()
PLAY = HONEST.split('"""', 2)[2].replace("def strategy(board):", "def play(board):")  # the honest moves, renamed
LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)
SEED = 11
ENV_CANARY = "STRATAGEM_HOSTILE_CANARY"
SIGSYS_EXIT = 128 + signal.SIGSYS


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# --- what the attacks aim at ----------------------------------------------------------------------
@dataclass
class Targets:
    """The harmless targets: each attack's source names them through the placeholders of ``fill``."""

    canary: Path  # a file of random content: no result may ever show it
    secret: str
    target: Path  # a path no attack may create
    listener: socket.socket  # on the host's loopback: no attack may connect
    victim: subprocess.Popen  # a host process no attack may signal
    zygote_pid: int = 0  # the strategy runner's zygote (host pid), once it runs

    def fill(self, code: str) -> str:
        return (
            code.replace("CANARY_PATH", repr(str(self.canary)))
            .replace("TARGET_PATH", repr(str(self.target)))
            .replace("LISTEN_PORT", str(self.listener.getsockname()[1]))
            .replace("VICTIM_PID", str(self.victim.pid))
            .replace("ZYGOTE_PID", str(self.zygote_pid))
            .replace("SECRET_PATH", repr(str(cache_root() / "secret")))
        )

    def assert_untouched(self, texts: list[str]) -> None:
        """Canary unread (its content in no text we got back), target absent, no connection, victim alive."""
        leaked = [text[:200] for text in texts if self.secret in text]
        assert not leaked, leaked
        assert not self.target.exists()
        with pytest.raises(BlockingIOError):
            self.listener.accept()
        assert self.victim.poll() is None, "the victim process was killed"
        assert _state(self.victim.pid) != "T", "the victim process was stopped"


def _state(pid: int) -> str | None:
    """A process's state letter from /proc (R, S, T, Z...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except FileNotFoundError:
            continue
        found += [int(c) for c in children]
        queue += [int(c) for c in children]
    return found


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile")
    secret = "CANARY-" + secrets.token_hex(16)
    canary = root / "canary.txt"
    canary.write_text(secret)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    saved = os.environ.get(ENV_CANARY)
    os.environ[ENV_CANARY] = secret  # before any zygote starts: none may pass it on
    try:
        yield Targets(canary=canary, secret=secret, target=root / "created-by-attack", listener=listener,
                      victim=victim)  # fmt: skip
    finally:
        if saved is None:
            os.environ.pop(ENV_CANARY, None)
        else:
            os.environ[ENV_CANARY] = saved
        victim.kill()
        victim.wait()
        listener.close()


# --- strategy programs ----------------------------------------------------------------------------
# A way past the AST rules: a class pattern's keyword names (``case C(__mro__=m)``) are plain strings in
# the AST (MatchClass.kwd_attrs), never an Attribute node, so no rule reads them; ``typing.ABCMeta`` is a
# public name of the typing proxy, and ``typing.SupportsInt.__mro__`` ends in ``object``, whose class
# pattern then reads any attribute of anything. ``functools.wraps`` is a function of the real functools
# module: its ``__globals__`` hold the real builtins, and their ``__import__`` hands out any module already
# imported without an audit event.
ESCAPE = """import functools
import typing


def escape():
    match typing.SupportsInt:
        case typing.ABCMeta(__mro__=mro):
            root = mro[-1]
    match functools.wraps:
        case root(__globals__=found):
            return found['_' * 2 + 'builtins' + '_' * 2]


def real(name):
    return escape()['_' * 2 + 'import' + '_' * 2](name)


def base():
    match typing.SupportsInt:
        case typing.ABCMeta(__mro__=mro):
            return mro[-1]

"""


def escaped(body: str) -> str:
    """A program that escapes first, then runs ``body`` (indented code of ``strategy``, which may use ``real``)."""
    return ESCAPE + "\ndef strategy(board):\n" + "".join(f"    {line}\n" for line in body.splitlines())


# Another way past them, with functools alone (so it works for every environment): update_wrapper's
# ``updated`` names (built at run time) are read with getattr, and ``wrapper.__globals__.update(...)`` on a
# program function merges a real module's globals into the program's own namespace. functools' globals
# bring ``namedtuple`` (collections'), and collections' globals bring ``_sys``: real sys, by a plain name.
ESCAPE_FUNCTOOLS = """import functools


def real_sys():
    name = '_' * 2 + 'globals' + '_' * 2
    functools.update_wrapper(real_sys, functools.wraps, assigned=(), updated=(name,))
    functools.update_wrapper(real_sys, namedtuple, assigned=(), updated=(name,))
    return _sys

"""
# (name, source, expected outcome(s) "a|b", hole or None). Sources may use the placeholders of Targets.fill.
PROGRAM_ATTACKS: list[tuple[str, str, str, str | None]] = [
    # -- real objects out of proxies and builtins: the static rules --
    # A string is text, whatever it holds (the rules read attribute access, not text; ``'_' * 2`` always got past
    # a text rule): what stops these is the proxy and the curated builtins. update_wrapper is not in the functools
    # proxy (an AttributeError, a crash), and no callable a program can reach turns keyword names into attributes:
    # the partial it builds is returned as a move, an illegal one.
    ("update_wrapper with a literal dunder",
     "import functools\ndef strategy(board):\n    functools.update_wrapper(strategy, functools.wraps, "
     "assigned=('__globals__',))\n    return '0'", "crash", None),
    ("keyword arguments with a literal dunder",
     "import functools\ndef strategy(board):\n    return functools.partial(len, **{'__self__': 1})", "illegal",
     None),
    ("object in a class pattern",
     "def strategy(board):\n    match board:\n        case object(__class__=c):\n            return c\n", "cheat",
     None),
    # ``type`` is not in the curated builtins: a NameError (a crash, as for any undefined name). Making a class is
    # the class rule's business, a broken program's, and ``type(x)`` is common honest code: not a cheat.
    ("type called to make a class",
     "def strategy(board):\n    return type('X', (), {})", "crash", None),
    ("attrgetter with a built name",
     "import operator\ndef strategy(board):\n    return operator.attrgetter('_' * 2 + 'class' + '_' * 2)(board)",
     "cheat", None),
    ("private name from an allowed module", "from functools import _lru_cache_wrapper\n" + HONEST, "cheat", None),
    ("string naming a frame attribute",
     "def strategy(board):\n    return '{0.gi_frame}'.format(board)", "cheat", None),
    ("format template built at run time reads __code__ (the program's own frame raises the event)",
     "def strategy(board):\n    t = '{0.' + '_' * 2 + 'code' + '_' * 2 + '}'\n    return t.format(strategy)", "cheat",
     None),
    ("a typing subscription, then __code__ through a built template",
     "import typing\ndef strategy(board):\n    typing.List[int]\n    return ('{0.' + '_' * 2 + 'code' + '_' * 2 + '}')"
     ".format(strategy)", "cheat", None),
    ("format template in bytes, decoded at run time",
     "def strategy(board):\n    return b'{0.__class__}'.decode().format(board)", "cheat", None),
    ("__builtins__ rebound through an import alias", "import math as __builtins__\n" + HONEST, "cheat", None),
    ("vars reaches a class's __dict__",
     "import random\ndef strategy(board):\n    return str(len(vars(random.Random)))", "cheat", None),
    ("getattr bound in another function is still the builtin here",
     "def helper(getattr):\n    return getattr\ndef strategy(board):\n    return getattr(board, 'copy')()[0]",
     "cheat", None),
    ("mro attribute", "def strategy(board):\n    return str(len(int.mro()))", "cheat", None),
    ("import time to forge the clock",
     "import time\ntime.monotonic = lambda: 0.0\n" + HONEST, "cheat", None),
    ("global statement naming a dunder",
     "def strategy(board):\n    global __builtins__\n    return '0'", "cheat", None),
    # -- run-time names: the audit hook must see what the rules could not --
    ("format string built at run time reaches a frame",
     "def strategy(board):\n    g = (x for x in board)\n    return ('{0.' + 'gi_' + 'frame}').format(g)", "cheat",
     None),
    ("generator finally reads its frame when the worker drops it",
     "def spy():\n    try:\n        yield 1\n    finally:\n        ('{0.' + 'gi_' + 'frame}').format(x for x in [1])\n"
     "def strategy(board):\n    g = spy()\n    next(g)\n    board.append(g)\n    return play(board[:4])\n" + PLAY,
     "cheat", None),
    ("typing.ForwardRef compiles its argument",
     "import typing\ndef strategy(board):\n    typing.ForwardRef('board')\n    return '0'", "cheat", None),
    ("namedtuple hidden by the proxy (exec inside)",
     "import collections\ndef strategy(board):\n    return collections.namedtuple('P', 'x')", "crash", None),
    # A module hidden by the proxy is just absent: an AttributeError, honestly a crash (nothing was reached).
    ("collections.abc through the proxy",
     "import collections\ndef strategy(board):\n    return collections.abc.Callable", "crash", None),
    # -- holes: the escape, and what it buys without any audit event --
    ("escape: read the process's pid, uid and environment",
     escaped("os = real('os')\nraise ValueError(str(os.getpid()) + ' ' + str(os.getuid()) + ' ' "
             "+ repr(sorted(os.environ)))"), "cheat", None),
    ("escape: real modules through functools.update_wrapper(updated=)",
     "import functools\nimport typing\n\ndef strategy(board):\n    name = '_' * 2 + 'globals' + '_' * 2\n"
     "    functools.update_wrapper(strategy, functools.wraps, assigned=(), updated=(name,))\n\n"
     "    def inner():\n        import typing\n        return typing.sys\n\n"
     "    os = inner().modules['os']\n    os.getpid()\n    return play(board)\n" + PLAY, "crash", None),
    ("escape with functools alone: real sys from collections' globals, then play",
     ESCAPE_FUNCTOOLS + "def strategy(board):\n    real_sys().modules['os'].getpid()\n    return play(board)\n"
     + PLAY, "crash", None),
    ("escape: classic subclasses walk to os, then play",
     ESCAPE + "\ndef strategy(board):\n    o = base()\n    match o:\n        case o(__subclasses__=subs):\n"
     "            pass\n    for c in subs():\n        match c:\n"
     "            case o(__name__='_wrap_close', __init__=init):\n                match init:\n"
     "                    case o(__globals__=g):\n                        g['getpid']()\n"
     "    return play(board)\n" + PLAY, "cheat", None),
    ("escape: class made by type() without a class statement, then play",
     ESCAPE + "\ndef strategy(board):\n    o = base()\n    match o:\n        case o(__class__=meta):\n"
     "            Made = meta('Made', (o,), {})\n    Made()\n    return play(board)\n" + PLAY, "cheat", None),
    ("escape: atexit hook that would run os.system, then play",
     escaped("real('atexit').register(real('os').system, 'touch ' + TARGET_PATH)\nreturn play(board)") + PLAY,
     "cheat", None),
    ("escape: break the forbidden report (worker.orjson = None), try os.system, restore, play",
     escaped("worker = real('sys').modules['stratagem.agents.worker']\nsaved = worker.orjson\nworker.orjson = None\n"
             "try:\n    real('os').system('touch ' + TARGET_PATH)\nexcept Exception:\n    pass\n"
             "worker.orjson = saved\nreturn play(board)") + PLAY, "cheat", None),
    ("escape: a weakref finalizer steals the worker's frames (sys._getframe off the program's stack)",
     escaped("sys = real('sys')\no = base()\nstolen = STOLEN\nif stolen:\n    frame = stolen[0]\n"
             "    while frame is not None:\n"
             "        match frame:\n            case o(f_back=back, f_locals=names):\n"
             "                if 'seed' in names and 'gs' in names:\n"
             "                    raise ValueError('stole seed ' + str(names['seed']) + ' and the game state')\n"
             "        frame = back\nmatch sys:\n    case o(_getframe=getframe):\n        pass\n"
             "marker = functools.partial(len)\nreal('weakref').finalize(marker, stolen.extend, map(getframe, [0]))\n"
             "board.append(marker)\nreturn play(board[:4])").replace("STOLEN", "KEPT") + "\nKEPT = []\n" + PLAY,
     "cheat", None),
    # -- the escape, then something the audit hook or the kernel must stop: cheat --
    ("escape then open the canary", escaped("return real('builtins').open(CANARY_PATH).read()"), "cheat", None),
    ("escape then os.open the canary", escaped("os = real('os')\nreturn os.read(os.open(CANARY_PATH, 0), 99)"),
     "cheat", None),
    ("escape then read the machine secret (the key of program seeds)",
     escaped("return real('builtins').open(SECRET_PATH, 'rb').read().hex()"), "cheat", None),
    ("escape then exec", escaped("real('builtins').exec('x = 1')\nreturn '0'"), "cheat", None),
    ("escape then import a fresh module", escaped("real('xmlrpc')\nreturn '0'"), "cheat", None),
    ("escape then os.system", escaped("real('os').system('touch ' + TARGET_PATH)\nreturn '0'"), "cheat", None),
    ("escape then mkfifo the target path (no audit event: seccomp)",
     escaped("real('os').mkfifo(TARGET_PATH)\nreturn '0'"), "cheat", None),
    ("escape then mknod in the sandbox root", escaped("real('os').mknod('/node')\nreturn '0'"), "cheat", None),
    ("escape then start a thread (no audit event: seccomp)",
     escaped("real('_thread').start_new_thread(len, ((),))\nreturn '0'"), "cheat", None),
    ("escape then pidfd_open the victim", escaped("real('os').pidfd_open(VICTIM_PID)\nreturn '0'"), "cheat", None),
    ("escape then install a signal handler", escaped("real('signal').signal(14, len)\nreturn '0'"), "cheat", None),
    ("escape then arm a timer", escaped("real('signal').setitimer(0, 0.01)\nreturn '0'"), "cheat", None),
    ("escape then SIGSTOP the zygote (pid 1 inside)", escaped("real('os').kill(1, 19)\nreturn '0'"), "cheat", None),
    ("escape then SIGKILL the zygote by its host pid", escaped("real('os').kill(ZYGOTE_PID, 9)\nreturn '0'"),
     "cheat", None),
    ("escape then SIGKILL every sibling worker", escaped("os = real('os')\nfor pid in range(2, 64):\n"
                                                         "    if pid != os.getpid():\n        os.kill(pid, 9)\n"
                                                         "return '0'"), "cheat", None),
    ("escape then kill the process group", escaped("real('os').killpg(0, 9)\nreturn '0'"), "cheat", None),
    ("escape then SIGKILL the host victim", escaped("real('os').kill(VICTIM_PID, 9)\nreturn '0'"), "cheat", None),
    ("escape then connect to the loopback listener",
     escaped("real('socket').create_connection(('127.0.0.1', LISTEN_PORT))\nreturn '0'"), "cheat", None),
    ("escape then setuid(0) (no audit event: seccomp)", escaped("real('os').setuid(0)\nreturn '0'"), "cheat", None),
    ("escape then chroot out (no audit event: seccomp)", escaped("real('os').chroot('..')\nreturn '0'"), "cheat",
     None),
    ("escape then ctypes", escaped("real('ctypes').CDLL(None)\nreturn '0'"), "cheat", None),
    ("escape then gc.get_objects", escaped("real('gc').get_objects()\nreturn '0'"), "cheat", None),
    ("escape then sys.settrace", escaped("real('sys').settrace(len)\nreturn '0'"), "cheat", None),
    # "time.sleep" is a forbidden prefix, but CPython 3.11 raises no such audit event: only the clock sees it.
    ("escape then time.sleep", escaped("real('time').sleep(5)\nreturn '0'"), "cheat|timeout", None),
    ("escape then raise the CPU limit", escaped("r = real('resource')\nr.setrlimit(r.RLIMIT_CPU, (-1, -1))\n"
                                                "return '0'"), "cheat", None),
    ("escape then forge an episode frame on fd 3",
     escaped("os = real('os')\nm = ('{\"t\": \"episode\", \"seed\": ' + str(SEED) + ', \"a\": [], \"error\": null}')"
             ".encode()\nos.write(3, len(m).to_bytes(4, 'big') + m)\nreturn '0'").replace("SEED", str(SEED)),
     "cheat", None),
    ("escape then write a 4 GiB frame header on fd 3",
     escaped("real('os').write(3, bytes([255, 255, 255, 255]))\nreturn '0'"), "cheat", None),
    # -- a forbidden event, then something milder: still a cheat --
    ("forbidden event caught, then a hang",
     escaped("try:\n    real('builtins').open(CANARY_PATH)\nexcept Exception:\n    pass\nwhile True:\n    pass"),
     "cheat", None),
    ("forbidden event caught, then a MemoryError",
     escaped("try:\n    real('builtins').open(CANARY_PATH)\nexcept Exception:\n    pass\nreturn [0] * 10 ** 10"),
     "cheat", None),
    ("forbidden event caught, then an exception that cannot be printed",
     escaped("try:\n    real('builtins').open(CANARY_PATH)\nexcept Exception:\n    pass\n"
             "raise ValueError(board, escape())"), "cheat", None),
    ("forbidden event in a finalizer of a class made by type()",
     ESCAPE + "\ndef strategy(board):\n    o = base()\n    match o:\n        case o(__class__=meta):\n"
     "            pass\n    def gone(self):\n        real('builtins').open(CANARY_PATH)\n"
     "    Made = meta('Made', (o,), {'_' * 2 + 'del' + '_' * 2: gone})\n    board.append(Made())\n"
     "    return play(board[:4])\n" + PLAY, "cheat", None),
    ("forbidden event in a weakref callback that is the program's own function",
     escaped("def callback(ref):\n    real('builtins').open(CANARY_PATH)\nmarker = functools.partial(len)\n"
             "KEEP.append(real('weakref').ref(marker, callback))\nboard.append(marker)\nreturn play(board[:4])")
     + "\nKEEP = []\n" + PLAY, "cheat", None),
    # -- time: the parent's clock is the only one that counts --
    # Patching the worker's clocks is invisible to the kernel and the hook; the parent's clock sees the hang.
    ("escape, patch time.monotonic and perf_counter, then spin",
     escaped("t = real('time')\nt.monotonic = lambda: 0.0\nt.perf_counter = lambda: 0.0\nwhile True:\n    pass"),
     "cheat|timeout", None),
    ("escape, stop itself with SIGSTOP (a hang: the parent's clock ends it)",
     escaped("real('signal').raise_signal(19)\nreturn '0'"), "cheat|timeout", None),
    # A loop statement at top level breaks the "only definitions at top level" rule: a broken program, a crash.
    ("busy loop at import time", "```python\nx = 0\nwhile True:\n    x += 1\n" + HONEST + "```", "crash", None),
    ("busy top level without a loop statement",
     "import itertools\nTABLE = [sum(range(10 ** 5)) for _ in itertools.repeat(None, 10 ** 5)]\n" + HONEST,
     "timeout", None),
    ("generator finally spins after the call returned",
     "def stall():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
     "def strategy(board):\n    g = stall()\n    next(g)\n    board.append(g)\n    return play(board[:4])\n"
     + PLAY, "timeout", None),
    ("an exception swallowing loop around the whole game",
     "def strategy(board):\n    while True:\n        try:\n            while True:\n                pass\n"
     "        except Exception:\n            pass", "timeout", None),
]  # fmt: skip


def _seed_predictor(limit: int) -> str:
    """A program with only ``random``: finds the episode seed from the first board, then predicts every spawn."""
    return (
        "import random\n\nSTATE = {}\n\n"
        "def slide(row):\n    tiles = [v for v in row if v]\n    out = []\n    i = 0\n    while i < len(tiles):\n"
        "        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:\n            out.append(2 * tiles[i])\n"
        "            i += 2\n        else:\n            out.append(tiles[i])\n            i += 1\n"
        "    return out + [0] * (4 - len(out))\n\n"
        "def after(board, move):\n    rows = [list(r) for r in board]\n    if move in (0, 2):\n"
        "        rows = [list(c) for c in zip(*rows)]\n    if move in (1, 2):\n        rows = [r[::-1] for r in rows]\n"
        "    rows = [slide(r) for r in rows]\n    if move in (1, 2):\n        rows = [r[::-1] for r in rows]\n"
        "    if move in (0, 2):\n        rows = [list(c) for c in zip(*rows)]\n    return rows\n\n"
        "def spawn(board, rng):\n    board = [list(r) for r in board]\n"
        "    empty = [(r, c) for r in range(4) for c in range(4) if board[r][c] == 0]\n"
        "    u, acc = rng.random(), 0.0\n    for r, c in empty:\n        for value, p in ((2, 0.9), (4, 0.1)):\n"
        "            acc += p / len(empty)\n            if u < acc:\n                board[r][c] = value\n"
        "                return board\n    return board\n\n"
        "def strategy(board):\n    if not STATE:\n"
        f"        for seed in range({limit}):\n            rng = random.Random(seed)\n"
        "            if spawn(spawn([[0] * 4 for _ in range(4)], rng), rng) == board:\n"
        "                STATE.update(seed=seed, rng=rng, hits=0, tries=0)\n                break\n"
        "        else:\n            raise ValueError('seed not found')\n    else:\n"
        "        STATE['tries'] += 1\n        STATE['hits'] += spawn(after(STATE['prev'], STATE['move']), STATE['rng'])"
        " == board\n    if STATE['tries'] == 40:\n"
        "        raise ValueError('predicted %d of %d spawns of seed %d' % (STATE['hits'], STATE['tries'],"
        " STATE['seed']))\n"
        "    move = int(play(board))\n    STATE['prev'], STATE['move'] = board, move\n    return str(move)\n" + PLAY
    )


SEED_PREDICTOR = _seed_predictor(limit=5000)
RANDOM_PROBE = "import random\n\ndef strategy(board):\n    raise ValueError(repr(random.random()))\n"


@pytest.fixture(scope="module")
def runner(targets: Targets):
    with Runner("2048", workers=2, limits=LIMITS) as r:
        targets.zygote_pid = r.pool.zygote_pid
        yield r


@pytest.fixture(scope="module")
def program_results(runner: Runner, targets: Targets) -> dict[str, Any]:
    """Every program attack, the seed predictor and the honest program, in one batch on SEED."""
    sources = [targets.fill(source) for _, source, _, _ in PROGRAM_ATTACKS] + [SEED_PREDICTOR, HONEST]
    results = runner.evaluate(sources, seeds=[SEED])
    names = [name for name, _, _, _ in PROGRAM_ATTACKS] + ["seed predictor", "honest"]
    return dict(zip(names, results, strict=True))


def _texts(result: Any) -> list[str]:
    return [result.message or "", *(e.message for e in result.episodes)]


def _detail(result: Any) -> str:
    return " | ".join(filter(None, _texts(result)))[:400]


@pytest.mark.parametrize(
    ("name", "expected"),
    [pytest.param(name, expected, id=name, marks=[xfail(hole)] if hole else [])
     for name, _, expected, hole in PROGRAM_ATTACKS],
)  # fmt: skip
def test_program_attack_is_scored_as_expected(program_results: dict[str, Any], runner: Runner, name: str,
                                              expected: str) -> None:  # fmt: skip
    result, honest = program_results[name], program_results["honest"]
    rubric = Rubric()
    assert outcomes(result)[0] in expected.split("|") and len(outcomes(result)) == 1, _detail(result)
    assert rubric.score(result, runner.spec.reward).total < rubric.score(honest, runner.spec.reward).total


def test_after_the_program_attacks_nothing_is_touched_and_the_runner_is_healthy(
    program_results: dict[str, Any], runner: Runner, targets: Targets
) -> None:
    texts = [text for result in program_results.values() for text in _texts(result)]
    targets.assert_untouched(texts)
    zygote = targets.zygote_pid
    assert runner.pool.zygote_pid == zygote, "an attack killed the zygote"
    sandbox = [zygote, *_descendants(zygote)]
    assert all(_state(pid) not in ("T", None) for pid in sandbox), "a sandbox process stopped"
    assert len(sandbox) <= 2 + 2 * runner.workers, f"processes left behind: {sandbox}"  # zygote, its fork, spares
    [after] = runner.evaluate([HONEST], seeds=[SEED])
    with Runner("2048", workers=1, limits=LIMITS) as fresh:
        [clean] = fresh.evaluate([HONEST], seeds=[SEED])
    honest = program_results["honest"]
    assert outcomes(after) == outcomes(clean) == outcomes(honest) == ["loss"]
    assert [(e.score, e.moves) for e in after.episodes] == [(e.score, e.moves) for e in clean.episodes]
    assert [(e.score, e.moves) for e in honest.episodes] == [(e.score, e.moves) for e in clean.episodes]


def test_a_program_cannot_predict_the_game_spawns(program_results: dict[str, Any]) -> None:
    result = program_results["seed predictor"]
    message = result.episodes[0].message
    assert "predicted" not in message or int(message.split("predicted ")[1].split()[0]) < 20, message


def test_the_programs_own_random_is_not_the_games(runner: Runner) -> None:
    """The program's ``random`` is seeded by a keyed hash of the episode seed, never by the seed itself."""
    seeds = list(range(100, 130))
    [result] = runner.evaluate([RANDOM_PROBE], seeds=seeds)
    firsts = [float(e.message.removeprefix("ValueError: ")) for e in result.episodes]
    assert len(firsts) == 30 and len(set(firsts)) == 30
    games = {random.Random(seed).random() for seed in range(0, 10_000)}  # the game's, and any small seed's
    assert not games & set(firsts)
    [again] = runner.evaluate([RANDOM_PROBE], seeds=seeds)  # reproducible on this machine
    assert [e.message for e in again.episodes] == [e.message for e in result.episodes]


@pytest.mark.timeout(90)
def test_a_program_that_closes_its_channel_and_lingers_is_scored_and_the_batch_survives() -> None:
    closer = escaped("os = real('os')\nos.close(3)\nreal('select').select([], [], [], 60)\nreturn '0'")
    with Runner("2048", workers=2, limits=LIMITS) as fresh:
        try:
            hostile, honest = fresh.evaluate([closer, HONEST], seeds=[SEED])
        except PoolError as exc:
            pytest.fail(f"evaluate raised for the whole batch: {exc}")
    assert outcomes(hostile) == ["cheat"] and outcomes(honest) == ["loss"]


# MatmulEnv._draw, replayed by a program; ``textbook`` is the baseline it answers with, ``SAVED`` its answers.
MATMUL_DRAW = (
    (
        "\nSAVED = {}\n\n\ndef draw(rng, size):\n"
        "    low = max(1, size // 2)\n"
        "    n, k, m = rng.randint(low, size), rng.randint(low, size), rng.randint(low, size)\n"
        "    A = [[rng.uniform(-1.0, 1.0) for _ in range(k)] for _ in range(n)]\n"
        "    B = [[rng.uniform(-1.0, 1.0) for _ in range(m)] for _ in range(k)]\n"
        "    return A, B\n\n\n"
    )
    + MATMUL_TEXTBOOK.replace("def matmul(", "def textbook(")
    + "\n\n"
)


def test_a_zygote_killed_mid_batch_blames_nobody() -> None:
    """The zygote dies under running workers: every program's result equals a clean run's."""
    slow = PLAY + "\ndef strategy(board):\n    sum(range(300000))\n    return play(board)\n"  # ~5 ms a move
    programs = [slow, HONEST, "def strategy(board):\n    return '0'\n", "def strategy(board):\n    return 1 / 0\n",
                slow.replace("300000", "200000"), "def strategy(board):\n    return None\n"]  # fmt: skip
    seeds = [3, 4]
    with Runner("2048", workers=2, limits=LIMITS) as clean_runner:
        clean = clean_runner.evaluate(programs, seeds)
    with Runner("2048", workers=2, limits=LIMITS) as victim:
        first = victim.pool.zygote_pid
        killer = threading.Timer(0.4, os.kill, (first, signal.SIGKILL))  # the batch takes over a second
        killer.start()
        killed = victim.evaluate(programs, seeds)
        killer.join()
        assert victim.pool.zygote_pid != first, "the zygote was not killed during the batch"
    for a, b in zip(clean, killed, strict=True):
        assert [(e.seed, e.score, e.moves, e.error) for e in a.episodes] == [
            (e.seed, e.score, e.moves, e.error) for e in b.episodes
        ]


# --- the parent's side: a hostile payload writes what a compromised worker would ----------------------
# (behaviour, expected outcome). The payload's behaviours are chosen by the word in the program's source.
WORKER_ATTACKS: list[tuple[str, str]] = [
    ("HALF_FRAME", "timeout"),  # a frame never finished: only the parent's clock can end it
    ("SLOW_DRIP", "timeout"),  # a byte at a time, each under move_s: frames, not bytes, reset the clock
    ("HUGE_HEADER", "cheat"),
    ("BIG_PARTIAL", "cheat"),  # a frame header over the play cap (1 MiB): out of protocol before a byte of it
    ("GARBAGE", "cheat"),
    ("ZEROS", "cheat"),
    ("NOT_JSON", "cheat"),
    ("NOT_A_DICT", "cheat"),
    ("DEEP_JSON", "cheat"),
    ("FAKE_EPISODE", "cheat"),
    ("FAKE_SCORE", "cheat"),
    ("BAD_ACTIONS", "cheat"),
    ("BUILT_TWICE", "cheat"),
    ("SETUP_FAILED_LATE", "cheat"),
    ("WRONG_SEED", "cheat"),
    ("UNKNOWN_ERROR", "cheat"),
    ("DONE_EARLY", "cheat"),
    ("FORGED_FORBIDDEN_THEN_HANG", "cheat"),
    ("FLOOD", "cheat"),
    ("EMPTY_MOVES", "cheat"),
    # A worker claiming the program raised is indistinguishable from one whose program raised: a crash.
    ("LONG_MESSAGE", "cheat"),  # a 10 MB frame: over the play cap
    # A clean exit without a word is how a broken interpreter looks too: a crash, never a win.
    ("SILENT_EXIT", "crash"),
    ("CLOSE_AND_LINGER", "cheat"),  # a worker alive without its channel: scored at once, the batch goes on
    # Moves of 4 MiB each: a frame under the cap, actions of any size are taken and kept until the episode ends.
    ("FAT_MOVES", "cheat"),
]
WORKER_HOLES: dict[str, str] = {}


def _hostile_runner(workers: int = 2) -> Runner:
    runner = Runner("2048", workers=workers, limits=LIMITS)
    setup = {"spec": runner.spec.model_dump(mode="json"), "params": runner.params,
             "source": str(runner.spec.source) if runner.spec.source else None}  # fmt: skip
    runner._pool = WorkerPool("tests.hostile_worker", setup, runner.policy, size=workers)
    return runner


def _source(behaviour: str) -> str:
    return f"def strategy(board):\n    return '{behaviour}'\n"


@pytest.fixture(scope="module")
def worker_results() -> dict[str, Any]:
    runner = _hostile_runner()
    try:  # a lying worker that hung the parent would hit pytest-timeout here
        results = runner.evaluate([_source(b) for b, _ in WORKER_ATTACKS] + [HONEST], seeds=[SEED])
        [after] = runner.evaluate([HONEST], seeds=[SEED])  # the same runner, after every bad frame
    finally:
        runner.close()
    return {"after": after, **dict(zip([b for b, _ in WORKER_ATTACKS] + ["honest"], results, strict=True))}


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [pytest.param(b, e, id=b, marks=[xfail(WORKER_HOLES[b])] if b in WORKER_HOLES else []) for b, e in WORKER_ATTACKS],
)
def test_a_lying_worker_is_scored_as_expected(worker_results: dict[str, Any], behaviour: str, expected: str) -> None:
    result = worker_results[behaviour]
    assert outcomes(result) == [expected], _detail(result)
    assert all(len(text) <= 600 for text in _texts(result))
    assert result.episodes[0].score == 0 and not result.episodes[0].won


def test_lying_workers_never_hang_the_parent_and_honest_programs_still_play(worker_results: dict[str, Any]) -> None:
    with Runner("2048", workers=1, limits=LIMITS) as fresh:
        [clean] = fresh.evaluate([HONEST], seeds=[SEED])
    for honest in (worker_results["honest"], worker_results["after"]):
        assert [(e.score, e.moves, e.error) for e in honest.episodes] == [
            (e.score, e.moves, e.error) for e in clean.episodes
        ]


def _peak_allocated_mb(action: Any) -> float:
    """The peak of Python allocations in this process while ``action`` ran (resident memory would hide reuse)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("behaviour", "limit_mb"),
    [
        ("HUGE_HEADER", 16),
        ("GARBAGE", 16),
        ("ZEROS", 16),
        ("BIG_PARTIAL", 16),
        ("FLOOD", 16),
        ("FAT_MOVES", 16),
    ],
)
def test_a_lying_worker_costs_the_parent_little_memory(behaviour: str, limit_mb: float) -> None:
    runner = _hostile_runner(workers=1)
    try:
        runner.evaluate([HONEST], seeds=[SEED])  # warm: the zygote and the parent's game exist
        results: list[Any] = []
        grown = _peak_allocated_mb(lambda: results.extend(runner.evaluate([_source(behaviour)], seeds=[SEED])))
    finally:
        runner.close()
    assert outcomes(results[0])[0] in ("cheat", "timeout")
    assert grown < limit_mb, f"the parent's peak memory grew by {grown:.0f} MB"


class _CountedPolls:
    """Wraps ``FrameReader.poll`` (the parent's only read) to count the frames each call handed back: a read
    is bounded (``POLL_BYTES``), so a flood cannot keep the parent in it, whatever the machine's speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.frames: list[int] = []
        original = FrameReader.poll

        def poll(reader: FrameReader) -> list[bytes]:
            frames = original(reader)
            self.frames.append(len(frames))
            return frames

        monkeypatch.setattr(FrameReader, "poll", poll)

    def bounded(self) -> bool:
        return max(self.frames) <= POLL_BYTES // HEADER.size + 1  # every frame is at least its header


@pytest.mark.timeout(60)
def test_a_worker_flooding_tiny_frames_cannot_hold_the_parent_in_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _hostile_runner(workers=1)
    try:
        runner.evaluate([HONEST], seeds=[SEED])
        polls = _CountedPolls(monkeypatch)
        [result] = runner.evaluate([_source("TINY_FLOOD")], seeds=[SEED])
    finally:
        runner.close()
    assert outcomes(result) == ["cheat"], _detail(result)
    assert polls.bounded(), f"one poll returned {max(polls.frames)} frames"


# --- code-sandbox cells ----------------------------------------------------------------------------
FORGE = "import os, json, struct\ndef forge(message):\n    m = json.dumps(message).encode()\n" \
        "    os.write(3, struct.pack('!I', len(m)) + m)\n"  # fmt: skip

# (name, code, expected): "sigsys" (killed by SIGSYS: state lost, exit 159), "refused" (the audit hook's
# PermissionError, the process lives), "error:Name" (an exception of that name, the process lives),
# "lost" (the parent replaced a process that broke protocol), "timeout" (exit 124), "result:repr".
CELL_ATTACKS: list[tuple[str, str, str]] = [
    ("mkfifo in the scratch directory", "import os\nos.mkfifo('pipe')", "sigsys"),
    ("mkfifo at the host's target path", "import os\nos.mkfifo(TARGET_PATH)", "sigsys"),
    ("mknod a character device", "import os, stat\nos.mknod('zero', stat.S_IFCHR | 0o666, os.makedev(1, 5))",
     "sigsys"),
    ("signal handler to compute between cells", "import signal\nsignal.signal(signal.SIGCONT, print)", "sigsys"),
    ("interval timer", "import signal\nsignal.setitimer(signal.ITIMER_VIRTUAL, 0.01, 0.01)", "sigsys"),
    ("alarm", "import signal\nsignal.alarm(1)", "sigsys"),
    ("a thread to compute between cells", "import threading\nthreading.Thread(target=sum, args=([],)).start()",
     "sigsys"),
    ("fork_exec without subprocess",
     "import _posixsubprocess, os\n_posixsubprocess.fork_exec(['/bin/true'], [b'/bin/true'], True, (), None, None, "
     "-1, -1, -1, -1, -1, -1, 3, 3, False, False, -1, None, None, None, -1, None, False)", "refused|sigsys"),
    ("posix_spawn", "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'touch ' + TARGET_PATH], {})", "refused"),
    ("os.fork", "import os\nos.fork()", "refused"),
    # Cells may open files (the hook lets "open" through): the root is an empty tmpfs, so the host's are not there.
    ("read /etc/passwd", "open('/etc/passwd').read()", "error:FileNotFoundError"),
    ("read the canary by absolute path", "import os\nos.read(os.open(CANARY_PATH, os.O_RDONLY), 100)",
     "error:FileNotFoundError"),
    ("stat the canary (no audit event: the root is empty)", "import os\nos.stat(CANARY_PATH)",
     "error:FileNotFoundError"),
    ("symlink to the canary in scratch", "import os\nos.symlink(CANARY_PATH, 'link')\nopen('link').read()",
     "error:PermissionError"),
    ("hard link to the canary", "import os\nos.link(CANARY_PATH, 'hard')", "error:FileNotFoundError"),
    ("chroot out of the scratch root", "import os\nos.chroot('..')", "sigsys"),
    ("setuid(0)", "import os\nos.setuid(0)", "sigsys"),
    ("connect to the host's loopback listener",
     "import socket\nsocket.create_connection(('127.0.0.1', LISTEN_PORT), timeout=1)", "refused"),
    ("connect through the channel's own socket",
     "import socket\ns = socket.socket(fileno=3)\ns.connect(('127.0.0.1', LISTEN_PORT))", "refused|sigsys"),
    ("SIGKILL the host victim", "import os\nos.kill(VICTIM_PID, 9)", "refused"),
    ("pidfd_send_signal to the victim", "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(VICTIM_PID), 9)",
     "sigsys"),
    ("SIGSTOP the zygote (pid 1 inside)", "import os\nos.kill(1, 19)", "refused"),
    ("ctypes.pythonapi to run C", "import ctypes\nctypes.pythonapi.PyRun_SimpleString(b'1')", "refused"),
    ("unhook the audit hook by emptying FORBIDDEN_PREFIXES",
     "import sys, socket\nsys.modules['stratagem.sandbox.audit'].FORBIDDEN_PREFIXES = ()\nsocket.socket()",
     "refused"),
    ("fill the scratch directory past its size",
     "with open('big', 'wb') as f:\n    for _ in range(100):\n        f.write(b'x' * 2**20)", "error:OSError"),
    ("the host's environment variable", f"import os\nrepr(os.environ.get({ENV_CANARY!r}))", "result:'None'"),
    ("a 4 GiB reply header", FORGE + "os.write(3, b'\\xff\\xff\\xff\\xff')", "lost"),
    ("a reply that is not JSON", FORGE + "os.write(3, struct.pack('!I', 5) + b'{nope')", "lost"),
    ("a forged reply of the wrong kind", FORGE + "forge({'t': 'value', 'v': 1})", "lost"),
    ("a flood of small forged frames", FORGE + "for _ in range(1000):\n    forge({'t': 'ran'})", "lost"),
    # The parent sees the channel close, waits up to 2 s for an exit status, then gives the process up.
    ("close the channel and linger", "import os, select\nos.close(3)\nselect.select([], [], [], 60)", "lost"),
]  # fmt: skip
# Cells that hang: run on an env with a short timeout.
HANGING_CELLS: list[tuple[str, str, str]] = [
    ("a reply left half-written, then a hang", "import os\nos.write(3, b'\\x00\\x00\\x01\\x00{\"t\":')\n"
     "while True:\n    pass", "timeout"),
    ("a reply left half-written, then the real one", "import os\nos.write(3, b'\\x00\\x00\\x01\\x00{\"t\":')",
     "timeout"),  # the parent reads the real reply as the half frame's rest: still incomplete, so the clock ends it
    ("stop itself with SIGSTOP", "import signal\nsignal.raise_signal(signal.SIGSTOP)", "timeout"),
    ("sleep in select past the timeout", "import select\nselect.select([], [], [], 60)", "timeout"),
]  # fmt: skip


def _check_cell(obs: Any, expected: str) -> None:
    kinds = expected.split("|")
    if obs.exit_code == SIGSYS_EXIT and obs.state_lost:
        assert "sigsys" in kinds, obs.stderr
    elif "refused" in kinds and "forbidden in the sandbox" in obs.stderr:
        assert obs.exit_code == 1 and not obs.state_lost
    elif obs.exit_code == 124:
        assert "timeout" in kinds and obs.state_lost, obs.stderr
    elif obs.state_lost:
        assert "lost" in kinds and obs.exit_code == 1, (obs.exit_code, obs.stderr)
    elif kinds[0].startswith("error:"):
        assert obs.exit_code == 1 and f"{kinds[0][6:]}:" in obs.stderr, obs.stderr
    elif kinds[0].startswith("result:"):
        assert obs.exit_code == 0 and obs.result == kinds[0][7:], (obs.result, obs.stderr)
    else:
        pytest.fail(f"unexpected: exit {obs.exit_code}, lost {obs.state_lost}: {obs.stderr[-300:]}")


@pytest.fixture(scope="module")
def cell_results(targets: Targets) -> dict[str, Any]:
    """Every cell attack in one episode (a lost process is replaced), each followed by a health check."""
    results: dict[str, Any] = {}
    for cells, timeout_s in ((CELL_ATTACKS, 5.0), (HANGING_CELLS, 1.0)):
        env = SandboxEnv(timeout_s=timeout_s, memory_mb=256, cpu_s=60, scratch_mb=16, max_episode_steps=1000)
        try:
            env.reset(seed=0)
            for name, code, _ in cells:
                obs = env.step({"code": targets.fill(code)})
                healthy = env.step({"code": "'alive'"})
                results[name] = (obs, healthy)
        finally:
            env.close()
    return results


@pytest.mark.parametrize(
    ("name", "expected"), [(n, e) for n, _, e in CELL_ATTACKS + HANGING_CELLS], ids=[n for n, _, _ in
                                                                                      CELL_ATTACKS + HANGING_CELLS]
)  # fmt: skip
def test_cell_attack_is_contained(cell_results: dict[str, Any], name: str, expected: str) -> None:
    obs, healthy = cell_results[name]
    _check_cell(obs, expected)
    assert healthy.result == "'alive'" and healthy.exit_code == 0


def test_after_the_cell_attacks_nothing_is_touched(cell_results: dict[str, Any], targets: Targets) -> None:
    texts = [text for obs, _ in cell_results.values() for text in (obs.stdout, obs.stderr, obs.result or "")]
    targets.assert_untouched(texts)


def test_nothing_survives_reset_and_no_process_outlives_the_episode(
    targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = SandboxEnv(timeout_s=5, memory_mb=256, cpu_s=60)
    try:
        env.reset(seed=0)
        write = f"open('kept.txt', 'w').write({targets.secret!r})\nimport os\nos.path.exists('kept.txt')"
        assert env.step({"code": write}).result == "True"
        first = env._repl.host_pid
        monkeypatch.setenv(ENV_CANARY + "_2", targets.secret)
        env.reset(seed=1)
        obs = env.step({"code": f"import os\nos.path.exists('kept.txt'), os.environ.get({ENV_CANARY + '_2'!r})"})
        assert obs.result == "(False, None)", obs.stderr
        assert _state(first) is None, "the previous episode's process still runs"
        last = env._repl.host_pid
    finally:
        env.close()
    deadline = time.monotonic() + 5
    while _state(last) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(last) is None, "the process outlived close()"


def test_no_cell_code_runs_between_cells() -> None:
    """Cyclic garbage with a finalizer left by a cell, no thread or timer to run it: no CPU between cells."""
    env = SandboxEnv(timeout_s=5, memory_mb=256, cpu_s=60)
    try:
        env.reset(seed=0)
        arm = ("import time\nticks = []\nclass Tick:\n    def __del__(self):\n"
               "        ticks.append(time.process_time())\n"
               "loop = [Tick()]\nloop.append(loop)\ndel loop\nstart = time.process_time()")  # fmt: skip
        assert env.step({"code": arm}).exit_code == 0
        time.sleep(1.0)
        obs = env.step({"code": "round(time.process_time() - start, 2) < 0.3"})
        assert obs.result == "True", (obs.result, obs.stderr)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_cell_flooding_tiny_frames_is_stopped_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    env = SandboxEnv(timeout_s=1, memory_mb=256, cpu_s=60)
    try:
        env.reset(seed=0)
        env.step({"code": "1"})
        polls = _CountedPolls(monkeypatch)
        flood = "import os\nchunk = b'\\x00\\x00\\x00\\x02{}' * (8 * 2**20 // 6)\nfor _ in range(6):\n"
        flood += "    os.write(3, chunk)"
        obs = env.step({"code": flood})
        assert obs.state_lost and env.step({"code": "'alive'"}).result == "'alive'"
    finally:
        env.close()
    assert polls.bounded(), f"one poll returned {max(polls.frames)} frames"


def test_a_forged_reply_cannot_shift_later_observations() -> None:
    env = SandboxEnv(timeout_s=5, memory_mb=256, cpu_s=60)
    try:
        env.reset(seed=0)
        forge = FORGE + (
            "forge({'t': 'ran', 'stdout': 'FORGED', 'stderr': '', 'exit_code': 0, 'result': \"'forged'\", "
            "'rebound': False})\nimport time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.5:\n    pass\n"
            "'real'"
        )
        env.step({"code": forge})
        later = [env.step({"code": repr(name)}) for name in ("B", "C")]
        for name, obs in zip(("B", "C"), later, strict=True):
            assert obs.state_lost or obs.result == repr(name), (name, obs.result)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_cell_cannot_precompute_the_matmul_tasks_next_trials() -> None:
    predictor = (
        "import random\n"
        + MATMUL_DRAW
        + (
            "HITS = []\n\n\ndef matmul(A, B):\n"
            "    key = (len(A), len(B), A[0][0])\n"
            "    if key in SAVED:\n"
            "        HITS.append(key)\n"
            "        return SAVED[key]\n"
            "    for reset_seed in range(1000):\n"
            "        outer = random.Random(reset_seed)\n"
            "        for _ in range(3):\n"
            "            rng = random.Random(outer.randrange(2**31))\n"
            "            if draw(rng, 48)[0][0][0] == A[0][0]:\n"
            "                for _ in range(2):\n"
            "                    a, b = draw(rng, 48)\n"
            "                    SAVED[(len(a), len(b), a[0][0])] = textbook(a, b)\n"
            "                return textbook(A, B)\n"
            "    return textbook(A, B)\n"
        )
    )
    env = SandboxEnv(timeout_s=10, memory_mb=256, cpu_s=60, task="matmul", task_params={"size": 48, "trials": 3})
    try:
        env.reset(seed=123)
        obs = env.step({"code": predictor})
        assert obs.task_outcome is not None and obs.task_outcome.error is None, obs.task_outcome
        hits = env.step({"code": "len(HITS)"}).result  # trials answered from a product computed in advance
    finally:
        env.close()
    assert hits == "0", f"{hits} of 3 trials were known before they arrived"


# --- raw code: no Python check at all, only the kernel ------------------------------------------------
# (name, code, expected): "sigsys" (killed by SIGSYS), or "denied" (the call failed with an OSError, reported).
# The code may call report(value); any exception it catches it reports as "denied: ...".
RAW_ATTACKS: list[tuple[str, str, str]] = [
    ("read the canary", "open(CANARY_PATH).read()", "denied"),
    ("list the root and /proc", "report(os.listdir('/'))\nos.listdir('/proc')", "denied"),
    ("open a file for writing", "open(TARGET_PATH, 'w')", "sigsys"),
    ("connect to the loopback listener", "import socket\nsocket.socket().connect(('127.0.0.1', LISTEN_PORT))",
     "sigsys"),
    ("SIGKILL the host victim", "os.kill(VICTIM_PID, 9)", "sigsys"),
    ("SIGSTOP the zygote (pid 1 inside)", "os.kill(1, signal.SIGSTOP)", "sigsys"),
    ("SIGKILL every other pid of the namespace", "[os.kill(p, 9) for p in range(2, 64) if p != os.getpid()]", "sigsys"),
    ("fork", "os.fork()", "sigsys"),
    ("execve a shell", "os.execv('/bin/sh', ['sh', '-c', 'touch ' + TARGET_PATH])", "sigsys"),
    ("a thread", "import _thread\n_thread.start_new_thread(len, ((),))", "sigsys"),
    ("a new user namespace", "import ctypes\nctypes.CDLL(None).unshare(0x10000000)", "sigsys"),
    ("setns into another network namespace", "import ctypes\nctypes.CDLL(None).setns(0, 0x40000000)", "sigsys"),
    ("ptrace the zygote", "import ctypes\nctypes.CDLL(None).ptrace(16, 1, 0, 0)", "sigsys"),
    ("io_uring", "import ctypes\nctypes.CDLL(None).syscall(425, 1, 0)", "sigsys"),
    ("mknod in the root", "os.mknod('/node')", "sigsys"),
    ("raise a resource limit", "import resource\nresource.setrlimit(resource.RLIMIT_NPROC, (100, 100))", "sigsys"),
    ("set up a signal handler", "signal.signal(signal.SIGUSR1, print)", "sigsys"),
    ("read the machine secret (the key of program seeds)", "report(open(SECRET_PATH, 'rb').read().hex())", "denied"),
    ("read the host's environment", "report(os.environ.get(ENV_CANARY))\nraise OSError('not there')", "denied"),
]  # fmt: skip


def _raw(code: str, targets: Targets) -> str:
    body = "".join(f"    {line}\n" for line in targets.fill(code).replace("ENV_CANARY", repr(ENV_CANARY)).splitlines())
    return f"import os, signal\ntry:\n{body}except OSError as exc:\n    report('denied: ' + repr(exc))\n"


@pytest.mark.parametrize(("name", "code", "expected"), RAW_ATTACKS, ids=[n for n, _, _ in RAW_ATTACKS])
def test_raw_code_is_held_by_the_kernel(targets: Targets, name: str, code: str, expected: str) -> None:
    result = run_raw(_raw(code, targets), timeout_s=10)
    texts = [str(report) for report in result.reports]
    targets.assert_untouched(texts)
    if expected == "sigsys":
        assert result.exit_code == -signal.SIGSYS, (result.exit_code, texts)
    else:
        assert result.done and any(t.startswith("denied: ") for t in texts), (result.exit_code, texts)


# --- extraction --------------------------------------------------------------------------------------
DEF = "def strategy(board):\n    return '0'\n"
# (name, completion, expected): "too-long", "syntax", "program" (a program is found and checked).
EXTRACTION_ATTACKS: list[tuple[str, str, str]] = [
    ("one character over the cap", "x" * 200_001, "too-long"),
    ("a megabyte of fences", "```python\n" * 100_000 + DEF, "too-long"),
    ("a line of 60k fences", "```" * 60_000 + "\n" + DEF, "program"),
    ("19k opening fences", "```python\n" * 19_000 + DEF, "program"),
    ("90k nested parentheses", "def strategy(board):\n    return " + "(" * 90_000 + "0" + ")" * 90_000, "syntax"),
    ("190k unclosed brackets", "def strategy(board):\n    return " + "[" * 190_000, "syntax"),
    ("190k spaces", " " * 190_000 + "\n" + DEF, "program"),
    ("190k blank lines", "\n" * 190_000 + DEF, "program"),
    ("32k constant lines before bare code", "x = 1\n" * 32_000 + DEF, "program"),
    ("30k unclosed assignments before bare code", "A = (\n" * 30_000 + DEF, "program"),
    ("40k triple quotes", "'''\n" * 40_000 + DEF, "program"),
    ("null bytes everywhere", ("\0" * 1000 + "\n") * 150 + DEF, "program"),
    ("4.5k unclosed fenced definitions", "```python\ndef strategy(board):\n    return (\n" * 4_500, "syntax"),
    ("100-deep indentation, repeated", ("def strategy(board):\n" + "".join(" " * i + "if board:\n"
                                                                         for i in range(1, 101))) * 8, "syntax"),
    ("a line of 190k tabs and spaces", "x =" + " \t" * 95_000 + "\n" + DEF, "program"),
]  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "completion", "expected"), EXTRACTION_ATTACKS, ids=[n for n, _, _ in
                                                                                      EXTRACTION_ATTACKS])  # fmt: skip
def test_extraction_stays_fast_and_clear(name: str, completion: str, expected: str) -> None:
    try:
        program = load(completion, resolve("2048").strategy)
    except ProgramError as exc:
        assert exc.kind == "syntax" and (exc.rule == expected or (expected == "syntax" and exc.rule == "no-code")), exc
        if expected == "too-long":
            assert "200,000" in str(exc)
        return
    assert expected == "program", f"a program was found: {program.source[:80]!r}"


@pytest.mark.timeout(60)
def test_extraction_attacks_through_the_runner_score_below_honest(runner: Runner) -> None:
    """Refused completions are crashes (no program: nothing was attempted against the sandbox), never better."""
    results = runner.evaluate([c for _, c, _ in EXTRACTION_ATTACKS] + [HONEST], seeds=[SEED])
    rubric, spec = Rubric(), runner.spec.reward
    honest = rubric.score(results[-1], spec).total
    for (name, _, expected), result in zip(EXTRACTION_ATTACKS, results, strict=False):
        if expected != "program":
            assert outcomes(result) == ["crash"] and result.error == "syntax", name
        assert rubric.score(result, spec).total < honest, name


def test_the_suite_has_at_least_sixty_attacks() -> None:
    # Closed channel, matmul prediction (runner and cell), zygote kill, forged-reply shift, random state, tiny-frame
    # floods (worker and cell).
    extra = 8
    count = (len(PROGRAM_ATTACKS) + 1 + len(WORKER_ATTACKS) + len(CELL_ATTACKS) + len(HANGING_CELLS)
             + len(RAW_ATTACKS) + len(EXTRACTION_ATTACKS) + extra)  # fmt: skip
    assert count >= 60, count
