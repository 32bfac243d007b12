"""Each kernel layer of the sandbox, alone, against code that got past every Python-level check.

``run_raw`` (``tests/sandbox_raw.py``) runs code with every builtin and no audit hook in a worker
confined by exactly the layers asked for. The attacks aim only at things these tests create
(``Arena``): a canary file with a random secret, target paths that must not come to exist,
listeners that must get no connection and a ``sleep`` process that must stay alive. Every attack
is also run with no layer at all (the controls): there it succeeds, so each check below can fail.

Attacks that survive are run several to a worker, each reporting ``[name, outcome, value]``, where
the outcome is ``"ok"``, an errno name (``"EACCES"``) or an exception's type name (``"MemoryError"``).
Under seccomp a forbidden call ends the worker (SIGSYS, exit code -31), so those get a worker each.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stratagem.sandbox import landlock
from stratagem.sandbox.audit import FORBIDDEN_EXIT
from stratagem.sandbox.confine import LAYERS, UID_BASE, Policy
from stratagem.sandbox.pool import WorkerPool
from tests.sandbox_raw import RawResult, run_raw

SIGSYS, SIGXCPU, SIGKILL = -signal.SIGSYS, -signal.SIGXCPU, -signal.SIGKILL
LANDLOCK_ABI = landlock.abi_version()
IS_ROOT = os.geteuid() == 0

# --- the attacks: function bodies run in the worker; names in capitals come from Arena.prelude --
ATTACKS = {
    "read canary": "return open(CANARY).read()",
    "read public file": "return open(PUBLIC).read()",
    "write file": "open(TARGET + '-write', 'w').write('x')",
    "mkfifo": "os.mkfifo(TARGET + '-fifo')",
    "mknod": "os.mknod(TARGET + '-node')",
    "tcp connect": "s = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', TCP_PORT))\ns.close()",
    "abstract unix connect": "s = socket.socket(socket.AF_UNIX)\ns.connect(ABSTRACT)\ns.close()",
    "unix connect": "s = socket.socket(socket.AF_UNIX)\ns.connect(UNIX_PATH)\ns.close()",
    "kill victim": "os.kill(VICTIM, signal.SIGTERM)",
    "signal parent": "os.kill(os.getppid(), 0)",  # signal 0: only the permission check, harmless
    "signal pid 1": "os.kill(1, 0)",
    "signal self": "os.kill(os.getpid(), 0)",
    "list root": "return sorted(os.listdir('/'))",
    "setuid 0": "os.setuid(0)",
    "chroot": "os.chroot(ARENA)",  # harmless: it changes only the worker's own root
    "fork": "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nreturn os.waitpid(pid, 0)[1]",
    "thread": "import _thread\n_thread.start_new_thread(lambda: None, ())",
    "threading": "import threading\nt = threading.Thread(target=lambda: None)\nt.start()\nt.join()",
    "subprocess": "import subprocess\nsubprocess.run(['true'])",
    "socket": "socket.socket().close()",
    "setitimer": "signal.setitimer(signal.ITIMER_REAL, 100)",
    "alarm": "signal.alarm(100)",
    "signal handler": "signal.signal(signal.SIGUSR1, lambda *_: None)",
    "ptrace": "return ctypes.CDLL(None).ptrace(0, 0, 0, 0)",  # PTRACE_TRACEME: harmless where allowed
    "prctl": "return ctypes.CDLL(None).prctl(15, b'raw', 0, 0, 0)",  # PR_SET_NAME
    # kill(2) through the x32 system call table: the filter must check the ABI, not just the number
    "x32 kill": "return ctypes.CDLL(None).syscall(0x40000000 | 62, VICTIM, signal.SIGTERM)",
    # FIONREAD on the channel, a socket: the real call answers, the filter says ENOTTY
    "ioctl": "n = ctypes.c_int()\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.ioctl(3, 0x541B, ctypes.byref(n)) != 0:\n    raise OSError(ctypes.get_errno(), 'ioctl')",
    "allocate 512 MiB": "bytearray(512 * 2**20)",  # over memory_mb=256 (the default of run_raw)
    "grow a file": "os.close(0)  # free a descriptor: RLIMIT_NOFILE leaves none\n"
    "with open(TARGET + '-grow', 'wb', buffering=0) as f:\n    f.write(b'x')",
    # a code cell, in its scratch directory (its working directory)
    "mkfifo here": "os.mkfifo('fifo')",
    "mknod here": "os.mknod('node')",
    "capabilities": "return {line.split(':')[0]: line.split()[1] for line in open('/proc/self/status')\n"
    "        if line.startswith(('CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs'))}",
    "identity": "return [os.getpid(), os.getuid(), os.getgid(), os.getgroups()]",
    # The classic chroot escape: make a directory, chroot into it while the working directory stays
    # above it, walk up with "..", and chroot to the real root. Needs CAP_SYS_ADMIN (to make the empty
    # read-only root writable) and CAP_SYS_CHROOT.
    "chroot escape": "if os.path.exists('/usr'):  # never remount a real root: only the sandbox's empty one\n"
    "    raise RuntimeError('not in an empty root')\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.mount(b'none', b'/', None, 32, None) != 0:  # MS_REMOUNT, read-write\n"
    "    raise OSError(ctypes.get_errno(), 'remount')\n"
    "os.mkdir('/escape')\nos.chroot('/escape')\nfor _ in range(64):\n    os.chdir('..')\n"
    "os.chroot('.')\nreturn open(CANARY).read()",
}

IN_WORKER = """
import ctypes, errno, os, signal, socket

def attempt(name, action):
    try:
        value = action()
    except OSError as exc:
        report([name, errno.errorcode.get(exc.errno, type(exc).__name__), str(exc)])
    except BaseException as exc:
        report([name, type(exc).__name__, str(exc)])
    else:
        report([name, "ok", value])
"""


@dataclass
class Arena:
    """What the attacks aim at, all made by the test and harmless if an attack gets through.

    It lives in a root-owned 0755 directory (not pytest's 0700 ``tmp_path``) so that under the
    identity layer only the canary's own mode (0600) keeps it unread: ``public`` (0644) beside it
    is readable, which shows the directory is not what stops the read.
    """

    root: Path
    secret: str
    tcp: socket.socket
    unix: socket.socket
    abstract: socket.socket
    abstract_name: str
    victim: subprocess.Popen[bytes]
    values: dict[str, Any] = field(default_factory=dict)  # what the last ``outcomes`` run returned

    @property
    def canary(self) -> Path:
        return self.root / "canary"

    @property
    def public(self) -> Path:
        return self.root / "public"

    def prelude(self, victim: int | None = None) -> str:
        values = {"ARENA": str(self.root), "CANARY": str(self.canary), "PUBLIC": str(self.public),
                  "TARGET": str(self.root / "target"), "UNIX_PATH": str(self.root / "unix.sock"),
                  "TCP_PORT": self.tcp.getsockname()[1], "ABSTRACT": self.abstract_name,
                  "VICTIM": victim or self.victim.pid}  # fmt: skip
        return IN_WORKER + "".join(f"{name} = {value!r}\n" for name, value in values.items())

    def run(self, names: list[str], layers: tuple[str, ...], victim: int | None = None, **kwargs) -> RawResult:
        """Every attack in ``names`` in one worker, in order."""
        code = self.prelude(victim)
        for name in names:
            code += f"def attack():\n{textwrap.indent(ATTACKS[name], '    ')}\nattempt({name!r}, attack)\n"
        return run_raw(code, layers=layers, **kwargs)

    def outcomes(self, names: list[str], layers: tuple[str, ...], **kwargs) -> dict[str, str]:
        """Run survivable attacks in one worker, which must live to the end; name -> outcome."""
        result = self.run(names, layers, **kwargs)
        assert (result.exit_code, result.done) == (0, True), result
        assert [report[0] for report in result.reports] == names, result.reports
        self.values = {name: value for name, _, value in result.reports}
        return {name: outcome for name, outcome, _ in result.reports}

    def breaches(self, result: RawResult | None = None) -> list[str]:
        """What reached the things the attacks aim at; [] when nothing did."""
        found = []
        if result is not None and self.secret in repr(result.reports):
            found.append("canary read")
        found += [f"{path.name} created" for path in sorted(self.root.glob("target*"))]
        for name, listener in (("tcp", self.tcp), ("unix", self.unix), ("abstract", self.abstract)):
            try:
                listener.accept()[0].close()
                found.append(f"{name} listener connected")
            except BlockingIOError:
                pass
        if self.victim.poll() is not None:
            found.append("victim killed")
        return found


@pytest.fixture
def arena() -> Iterator[Arena]:
    root = Path(tempfile.mkdtemp(prefix="stratagem-layers-"))
    root.chmod(0o755)
    secret = secrets.token_hex(16)
    (root / "canary").write_text(secret)
    (root / "canary").chmod(0o600)
    (root / "public").write_text("public")
    (root / "public").chmod(0o644)
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(root / "unix.sock"))  # mode 0755 by the umask: root alone may connect
    abstract_name = f"\0stratagem-layers-{secret[:8]}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    for listener in (tcp, unix, abstract):
        listener.listen()
        listener.setblocking(False)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        yield Arena(root, secret, tcp, unix, abstract, abstract_name, victim)
    finally:
        victim.kill()
        victim.wait()
        for listener in (tcp, unix, abstract):
            listener.close()
        shutil.rmtree(root)


@pytest.fixture
def throwaway() -> Iterator[subprocess.Popen[bytes]]:
    """A second victim, for the controls that show a kill does work."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def missing() -> dict[str, str]:
    """The layers this machine cannot apply (layer -> why), as the zygote reports them."""
    policy = Policy(layers=LAYERS, allow_weaker=True)
    with WorkerPool("tests.sandbox_raw", {}, policy) as pool:
        return dict(pool.missing)


def need(missing: dict[str, str], *layers: str) -> None:
    """Skip where this machine lacks a layer: the test would show nothing but that."""
    for layer in layers:
        if layer in missing:
            pytest.skip(f"{layer}: {missing[layer]}")


# --- the controls: with no layer, every attack succeeds ---------------------------------------
@pytest.mark.skipif(not IS_ROOT, reason="the controls show what root could do unconfined")
def test_control_without_layers_every_attack_succeeds(arena, throwaway):
    """The same attacks, unconfined, do the harm the other tests say is stopped: so those can fail."""
    names = ["read canary", "write file", "mkfifo", "mknod", "tcp connect", "abstract unix connect",
             "unix connect", "kill victim", "signal parent", "signal pid 1", "list root", "fork", "ioctl",
             "allocate 512 MiB", "grow a file", "capabilities"]  # fmt: skip
    outcomes = arena.run(names, layers=(), victim=throwaway.pid)
    assert outcomes.exit_code == 0 and outcomes.done, outcomes
    assert {name: outcome for name, outcome, _ in outcomes.reports} == dict.fromkeys(names, "ok")
    assert throwaway.wait(timeout=5) == -signal.SIGTERM
    values = {name: value for name, _, value in outcomes.reports}
    assert values["read canary"] == arena.secret
    assert values["fork"] == 0
    assert int(values["capabilities"]["CapEff"], 16) != 0
    assert "canary" in os.listdir(arena.root) and values["list root"]
    assert sorted(arena.breaches(outcomes)) == sorted(
        [
            "canary read",
            "target-write created",
            "target-fifo created",
            "target-node created",
            "target-grow created",
            "tcp listener connected",
            "unix listener connected",
            "abstract listener connected",
        ]
    )  # the arena's own victim was not the target here; the throwaway died


KILLED_BY_SECCOMP = ["fork", "thread", "threading", "subprocess", "socket", "kill victim", "signal parent",
                     "signal pid 1", "mknod", "mkfifo", "setitimer", "alarm", "signal handler", "write file",
                     "prctl", "x32 kill", "ptrace", "chroot"]  # fmt: skip
# (ptrace and chroot last: in the unconfined control they make the worker a tracee and change its root)


@pytest.mark.skipif(not IS_ROOT, reason="the controls show what root could do unconfined")
def test_control_seccomp_attacks_are_real(arena, throwaway):
    """Unconfined, every call that seccomp answers with SIGSYS goes through (``x32 kill`` aside, which this
    kernel may not offer): the worker lives, so the -31 below is the filter's doing."""
    outcomes = arena.outcomes(KILLED_BY_SECCOMP, layers=(), victim=throwaway.pid)
    assert outcomes == dict.fromkeys(KILLED_BY_SECCOMP, "ok")
    assert throwaway.wait(timeout=5) == -signal.SIGTERM


# --- seccomp alone ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", KILLED_BY_SECCOMP)
def test_seccomp_alone_kills_forbidden_calls(arena, missing, name):
    """Each call outside the allowlist ends the worker with SIGSYS before it has any effect."""
    need(missing, "seccomp")
    result = arena.run([name], layers=("seccomp",))
    assert result.exit_code == SIGSYS, result
    assert result.reports == [] and not result.done
    assert arena.breaches(result) == []


def test_seccomp_alone_refuses_reads_politely(arena, missing):
    """A read-only open is EACCES and ioctl is ENOTTY (libraries probe them); signalling itself is allowed."""
    need(missing, "seccomp")
    outcomes = arena.outcomes(["read canary", "list root", "ioctl", "signal self"], layers=("seccomp",))
    assert outcomes == {"read canary": "EACCES", "list root": "EACCES", "ioctl": "ENOTTY", "signal self": "ok"}
    assert arena.breaches() == []


# --- landlock alone -----------------------------------------------------------------------------
def test_landlock_alone(arena, missing):
    """No file opened or made, no TCP connection (ABI 4), no signal or abstract socket outside (ABI 6).

    Not asserted, because Landlock (ABI <= 7) cannot stop them: connecting to a pathname Unix socket,
    UDP, forking.
    """
    need(missing, "landlock")
    expected = {"read canary": "EACCES", "read public file": "EACCES", "write file": "EACCES", "mkfifo": "EACCES",
                "mknod": "EACCES", "list root": "EACCES"}  # fmt: skip
    if LANDLOCK_ABI >= 4:
        expected["tcp connect"] = "EACCES"
    if LANDLOCK_ABI >= 6:
        expected.update({"abstract unix connect": "EPERM", "kill victim": "EPERM", "signal parent": "EPERM",
                         "signal pid 1": "EPERM", "signal self": "ok"})  # fmt: skip
    assert arena.outcomes(list(expected), layers=("landlock",)) == expected
    assert arena.breaches() == []


# --- namespaces alone ---------------------------------------------------------------------------
def test_namespaces_alone(arena, missing):
    """The worker is pid 2 of its own pid namespace, sees an empty read-only root, none of the caller's
    processes, and a network with nothing on it."""
    need(missing, "namespaces")
    expected = {"identity": "ok", "list root": "ok", "read canary": "ENOENT", "write file": "ENOENT",
                "mkfifo": "ENOENT", "tcp connect": "ENETUNREACH", "abstract unix connect": "ECONNREFUSED",
                "unix connect": "ENOENT", "kill victim": "ESRCH"}  # fmt: skip
    assert arena.outcomes(list(expected), layers=("namespaces",)) == expected
    pid, _, _, _ = arena.values["identity"]
    assert pid == 2  # the zygote is pid 1; this is its first worker
    assert arena.values["list root"] == []
    assert arena.breaches() == []


def test_namespaces_alone_withstand_a_chroot_escape(arena, missing):
    """Even holding every capability of its user namespace, the worker cannot get back to the host's files:
    the old root was detached after pivot_root, so remounting, chroot and '..' lead nowhere."""
    need(missing, "namespaces")
    outcomes = arena.outcomes(["chroot escape"], layers=("namespaces",))
    assert outcomes["chroot escape"] != "ok"
    assert arena.secret not in repr(arena.values)


def test_namespaces_with_identity_stop_the_chroot_escape(arena, missing):
    """Without its capabilities (the identity layer), the worker can neither remount its root nor chroot."""
    need(missing, "namespaces", "identity")
    assert arena.outcomes(["chroot escape"], layers=("namespaces", "identity")) == {"chroot escape": "EPERM"}
    assert arena.breaches() == []


# --- identity alone -----------------------------------------------------------------------------
@pytest.mark.skipif(not IS_ROOT, reason="a uid of its own is the identity layer under root only")
def test_identity_alone(arena, missing):
    """Under root, a worker becomes uid UID_BASE + pid with no capability left: file modes and the
    kernel's signal permissions now apply to it, and it cannot become root again."""
    need(missing, "identity")
    expected = {"identity": "ok", "capabilities": "ok", "read public file": "ok", "read canary": "EACCES",
                "write file": "EACCES", "mkfifo": "EACCES", "unix connect": "EACCES", "kill victim": "EPERM",
                "signal parent": "EPERM", "signal pid 1": "EPERM", "setuid 0": "EPERM",
                "chroot": "EPERM"}  # fmt: skip
    assert arena.outcomes(list(expected), layers=("identity",)) == expected
    pid, uid, gid, groups = arena.values["identity"]
    assert uid == gid == UID_BASE + pid and groups == []
    assert arena.values["capabilities"] == {"CapEff": "0" * 16, "CapPrm": "0" * 16, "CapBnd": "0" * 16,
                                            "CapAmb": "0" * 16, "NoNewPrivs": "1"}  # fmt: skip
    assert arena.values["read public file"] == "public"  # the directory is open to it: the canary's mode stops it
    assert arena.breaches() == []


# --- rlimits alone ------------------------------------------------------------------------------
def test_rlimits_alone(arena, missing):
    """Address space over the interpreter's plus memory_mb, no file growth (EFBIG, SIGXFSZ ignored), and
    no spare descriptor (RLIMIT_NOFILE: stdio and the channel only).

    Not asserted: RLIMIT_NPROC=0 does not stop root (the kernel exempts uid 0), so fork works here.
    """
    need(missing, "rlimits")
    expected = {"read canary": "EMFILE", "allocate 512 MiB": "MemoryError", "grow a file": "EFBIG"}
    assert arena.outcomes(list(expected), layers=("rlimits",), memory_mb=256) == expected
    assert arena.breaches() == ["target-grow created"]  # created (no other layer forbids it), but empty
    assert (arena.root / "target-grow").stat().st_size == 0


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [("while True: pass", SIGXCPU), ("signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass", SIGKILL)],
    ids=["sigxcpu", "sigxcpu-ignored"],
)
def test_rlimits_alone_end_a_cpu_loop(missing, code, exit_code):
    """Past cpu_s (rounded down, plus one second), SIGXCPU; a worker that ignores it, SIGKILL a second later."""
    need(missing, "rlimits")
    result = run_raw("import signal\n" + code, layers=("rlimits",), cpu_s=1, timeout_s=15)
    assert not result.timed_out and result.exit_code == exit_code, result


# --- every layer together -----------------------------------------------------------------------
def test_all_layers_refuse_what_survives(arena, missing):
    """With everything on, the worker is pid 2, uid UID_BASE + 2 (root only), and sees and opens nothing."""
    need(missing, *LAYERS)
    expected = {"identity": "ok", "read canary": "EACCES", "list root": "EACCES", "ioctl": "ENOTTY",
                "allocate 512 MiB": "MemoryError"}  # fmt: skip
    assert arena.outcomes(list(expected), layers=LAYERS) == expected
    pid, uid, _, _ = arena.values["identity"]
    assert pid == 2 and (uid == UID_BASE + 2 or not IS_ROOT)
    assert arena.breaches() == []


@pytest.mark.parametrize("name", ["fork", "subprocess", "socket", "kill victim", "mkfifo", "write file",
                                  "chroot escape"])  # fmt: skip
def test_all_layers_kill_forbidden_calls(arena, missing, name):
    need(missing, *LAYERS)
    result = arena.run([name], layers=LAYERS)
    assert result.exit_code == SIGSYS and result.reports == [], result
    assert arena.breaches(result) == []


# --- a code cell, every layer -------------------------------------------------------------------
CELL_FILES = """
with open("notes.txt", "w") as f:
    f.write("hello")
os.mkdir("sub")
with open("sub/x", "w") as f:
    f.write("y")
report(["files", os.getcwd(), sorted(os.listdir(".")), open("notes.txt").read(), open("sub/x").read()])
report(["above", open("../../notes.txt").read()])  # ".." stops at its own root
attempt("symlink out", lambda: os.symlink(CANARY, "link"))
attempt("fill the scratch", lambda: open("big", "wb").write(b"x" * 80 * 2**20))  # over scratch_mb = 64
os.unlink("big")
"""


def test_cell_works_in_its_scratch_directory_only(arena, missing):
    """A code cell reads, writes and lists files in its working directory, a capped tmpfs that is its whole
    world: the host's paths do not exist there, and no link can point out of it."""
    need(missing, *LAYERS)
    code = arena.prelude() + CELL_FILES
    for name in ("read canary", "write file", "list root"):
        code += f"def attack():\n{textwrap.indent(ATTACKS[name], '    ')}\nattempt({name!r}, attack)\n"
    result = run_raw(code, layers=LAYERS, cell=True)
    assert (result.exit_code, result.done) == (0, True), result
    files, above, *attempts = result.reports
    assert files == ["files", "/", ["notes.txt", "sub"], "hello", "y"]
    assert above == ["above", "hello"]
    outcomes = {name: outcome for name, outcome, _ in attempts}
    assert outcomes.pop("fill the scratch") in ("ENOSPC", "EFBIG")  # the tmpfs (scratch_mb) or RLIMIT_FSIZE
    assert outcomes == {"symlink out": "EACCES", "read canary": "ENOENT", "write file": "ENOENT", "list root": "ok"}
    assert attempts[-1][2] == ["notes.txt", "sub"]  # "/" is the scratch directory
    assert arena.breaches(result) == []


@pytest.mark.parametrize("name", ["mkfifo here", "mknod here", "fork", "socket"])
def test_cell_still_makes_no_nodes_processes_or_sockets(arena, missing, name):
    """A cell may make files and directories, nothing else: a FIFO or a node in its own scratch directory
    is as fatal as in a strategy worker."""
    need(missing, *LAYERS)
    result = arena.run([name], layers=LAYERS, cell=True)
    assert result.exit_code == SIGSYS and result.reports == [], result
    assert arena.breaches(result) == []


# --- the Python-level classification (not a boundary) -------------------------------------------
WATCHED = """
import sys
from stratagem.sandbox.audit import watch_program

namespace = {"__builtins__": __builtins__, "__name__": "program"}
exempt = ["open"] if sys.argv[1] == "exempt" else []
watch_program(namespace, lambda event: print("reported", event, flush=True), exempt=exempt)
case = sys.argv[1]
if case == "ours":
    open("/dev/null").close()  # the same event from code that is not the program's
elif case == "callback":
    exec("def callback():\\n    open('/dev/null').close()", namespace)
    namespace["callback"]()  # the program's function, called from our code: still the program
else:
    exec("open('/dev/null').close()", namespace)
print("finished", flush=True)
"""


@pytest.mark.parametrize(
    ("case", "stdout", "returncode"),
    [("program", "reported open\n", FORBIDDEN_EXIT), ("callback", "reported open\n", FORBIDDEN_EXIT),
     ("ours", "finished\n", 0), ("exempt", "finished\n", 0)],
)  # fmt: skip
def test_watch_program_reports_the_programs_forbidden_events(case, stdout, returncode):
    """``watch_program`` reports a forbidden event raised while a frame of the program's namespace is on the
    stack and exits with FORBIDDEN_EXIT; the same event from other code (or an exempt one) passes.
    In a fresh interpreter: the audit hook cannot be removed from the one that installs it."""
    run = subprocess.run([sys.executable, "-c", WATCHED, case], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert (run.stdout, run.returncode) == (stdout, returncode), run.stderr
