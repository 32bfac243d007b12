"""How a process that will run untrusted code shuts itself in, before the code's first line.

The layers, each holding even if another is bypassed:

- rlimits: address space, CPU seconds, no file growth (RLIMIT_FSIZE=0), no new descriptors,
  no core dumps; a network namespace of its own when the kernel allows it;
- stdout/stderr to /dev/null (whatever the code prints must be captured in Python, and capped);
- an audit hook (PEP 578) that refuses and records every event that reaches files, processes,
  sockets, imports, ctypes, frames or code objects. A program that catches the refusal is
  still caught: the record decides, not the exception.

Time is never enforced in the confined process: its parent kills it (a SIGALRM can be caught).
What comes back to the parent is plain JSON that ``encode_value`` builds without calling any
of the code's own methods.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

FORBIDDEN_PREFIXES = (
    "open", "os.", "subprocess.", "socket.", "ctypes.", "import", "sys.", "code.", "function.", "compile",
    "exec", "marshal.", "pickle.", "shutil.", "signal.", "resource.", "builtins.input", "urllib.", "http.",
    "ftplib.", "smtplib.", "sqlite3.", "glob.", "tempfile.", "gc.", "mmap.", "_posixsubprocess", "object.",
    "cpython.", "fcntl.", "pty.", "syslog.", "time.sleep",
)  # fmt: skip


class AuditGuard:
    """Refuses forbidden events once armed; ``permit`` lets named events through a counted number of times.

    For strategy programs, which the static checks keep from reaching this object or its class.
    Code with every builtin could rewrite the class; it gets ``lock_down`` instead.
    """

    def __init__(self) -> None:
        self.armed = False
        self.events: list[str] = []
        self.permits: dict[str, int] = {}

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed or not event.startswith(FORBIDDEN_PREFIXES):
            return
        if self.permits.get(event, 0) > 0:
            self.permits[event] -= 1
            return
        self.events.append(event)
        raise PermissionError(f"forbidden in the sandbox: {event}")


def lock_down(exempt: Iterable[str] = ()) -> None:
    """Refuse every forbidden event but ``exempt`` for the rest of this process's life.

    The hook is a closure over immutable values that nothing but the interpreter's hook list
    references, and it looks up no global or attribute: code that can reach any module or
    class of this process still cannot find it, disarm it or change what it refuses.
    """
    forbidden, allowed, error = FORBIDDEN_PREFIXES, frozenset(exempt), PermissionError

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(forbidden) and event not in allowed:
            raise error(f"forbidden in the sandbox: {event}")

    sys.addaudithook(hook)


def confine(memory_mb: int, cpu_s: float, single_process: bool = False) -> None:
    """Apply the rlimits, silence stdout/stderr and leave the network; irreversible for this process.

    ``single_process``: this process may start no process or thread (RLIMIT_NPROC=0), for code
    that can reach the calls CPython does not audit (``_posixsubprocess.fork_exec``, pidfds).
    Root ignores that limit, so a root process first becomes a user of its own (uid 100000 +
    pid), which can signal no other process either; where it cannot, this raises.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG, visibly
    vm_bytes = _current_vm_bytes()
    limits = [
        (resource.RLIMIT_AS, vm_bytes + memory_mb * 2**20),
        (resource.RLIMIT_CPU, int(time.process_time() + cpu_s) + 1),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, _highest_fd() + 1),
    ]
    for which, value in limits:
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # CPU: the soft limit sends SIGXCPU (which the parent reads as "out of CPU time") a second
        # before the hard limit's SIGKILL.
        resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))
    _leave_the_network()
    if single_process:
        _be_alone()


def _be_alone() -> None:
    if os.geteuid() == 0:
        uid = 100_000 + os.getpid()
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        die_with_parent()  # a change of credentials clears the parent-death signal
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _current_vm_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _highest_fd() -> int:
    """The highest open descriptor, not counting the one that listing them opened for a moment."""
    return max(fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any audit hook exists
PR_SET_PDEATHSIG, CLONE_NEWNET = 1, 0x40000000


def _leave_the_network() -> None:
    """A fresh network namespace has only a downed loopback; skipped where not permitted."""
    _LIBC.unshare(CLONE_NEWNET)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so no confined process outlives whoever watches it."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


MAX_VALUE_BYTES = 16 * 2**20


def encode_value(value: Any, **fields: Any) -> bytes:
    """The reply ``{"t": "value", **fields, "v": value}``, if ``value`` is JSON data of exact builtin types.

    orjson walks the value in C without calling anything of the program's: a subclass
    (``collections.Counter``), a lazy object (a generator, ``map``) or an int past 64 bits is
    refused with ValueError. A NaN or an infinity becomes null, which no environment accepts as a move.
    """
    try:
        payload = orjson.dumps({"t": "value", **fields, "v": value}, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"the strategy did not return plain data ({exc}); return str, int, float, bool, None, "
                         "or lists, tuples and dicts of them") from None  # fmt: skip
    if len(payload) > MAX_VALUE_BYTES:
        raise ValueError(f"the returned value is larger than {MAX_VALUE_BYTES // 2**20} MiB as JSON")
    return payload
