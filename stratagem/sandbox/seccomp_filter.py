"""The seccomp-bpf allowlist: the system calls a confined CPython may make; any other kills it with SIGSYS.

Built with libseccomp (through ``pyseccomp``), never hand-assembled BPF. The zygote builds the
filter once, before any untrusted byte exists; each forked worker adds the rules that name its
own pid and loads it as the last step of its confinement. The parent reads death by SIGSYS as
**cheat**: honest code never makes these calls (the tests run every built-in environment and the
program corpus under the filter to keep it that way).

What a worker may do: compute (memory management, clocks, randomness, futexes), read and write
the descriptors it already has (its channel to the parent, /dev/null as stdio), look at metadata
of an empty root, and signal itself (``abort()``). What kills it: creating processes or threads
(a thread-free worker is simple to reason about: no code runs beside the one the parent is
timing), ``execve``, sockets, opening a file for writing, ``mknod``/``mkfifo``, signals to others,
pidfds, ``ptrace``, timers (``setitimer``/``alarm``/``timer_create``), signal handlers
(``rt_sigaction``), ``prctl``, namespace and identity changes, raising a resource limit, keys,
BPF, io_uring, and every call not named here. Some calls answer an error instead, because
honest libraries probe them and cope: a read-only ``open`` (EACCES; Landlock denies it too),
``ioctl`` (ENOTTY: "not a terminal").

A code cell (``cell=True``) may also work with files beneath its scratch directory (Landlock
confines the paths; the mount namespace shows nothing else).
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

# Both kinds.
ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync",
    # descriptors it already holds
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek", "close",
    "close_range", "dup", "dup2", "dup3", "poll", "ppoll", "select", "pselect6",
    # metadata (an empty root, or the scratch directory)
    "fstat", "newfstatat", "statx", "stat", "lstat", "access", "faccessat", "faccessat2", "readlink",
    "readlinkat", "getcwd", "getdents64", "fstatfs", "statfs", "chdir", "fchdir", "umask",
    # time, randomness, scheduling, identity (read only)
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep", "getrandom",
    "futex", "sched_yield", "sched_getaffinity", "getcpu", "getrusage", "times", "sysinfo", "uname",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "getpgrp", "getpgid", "getsid", "getrlimit",
    # signals: masks and returns (handlers and timers are not here)
    "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "exit", "exit_group",
)  # fmt: skip
# Files beneath a cell's scratch directory.
CELL_ALLOWED = (
    "open", "openat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "truncate", "ftruncate", "fsync", "fdatasync", "fallocate", "utimensat", "fchmod", "fchmodat", "chmod",
    "link", "linkat", "symlink", "symlinkat", "flock", "sendfile", "copy_file_range",
)  # fmt: skip
# fcntl commands: descriptor flags and duplication (F_SETOWN would aim SIGIO at another process).
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 5, 6, 7, 1030
# open flags that write or create: a strategy worker's open with any of them is a kill, without them EACCES.
# (O_TMPFILE includes O_DIRECTORY's bit; only its own bit says "create".)
_WRITING = os.O_ACCMODE | os.O_CREAT | os.O_TRUNC | os.O_APPEND | (getattr(os, "O_TMPFILE", 0) & ~os.O_DIRECTORY)
PR_SET_VMA = 0x53564D41  # glibc >= 2.39 may name its anonymous mappings: refused quietly


def build(cell: bool) -> Any:
    """The filter for a strategy worker (``cell=False``) or a code cell, without its per-pid rules.

    Raises ImportError when libseccomp cannot be loaded, OSError when the kernel refuses it.
    """
    import pyseccomp as scmp

    rules = scmp.SyscallFilter(scmp.KILL_PROCESS)
    for name in ALLOWED + (CELL_ALLOWED if cell else ()):
        _add(rules, scmp.ALLOW, name)
    fcntl_commands = (F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC)
    for command in fcntl_commands + ((F_GETLK, F_SETLK, F_SETLKW) if cell else ()):
        _add(rules, scmp.ALLOW, "fcntl", scmp.Arg(1, scmp.EQ, command))
    if not cell:  # reading is refused politely, writing is a kill
        _add(rules, scmp.ERRNO(errno.EACCES), "openat", scmp.Arg(2, scmp.MASKED_EQ, _WRITING, 0))
        _add(rules, scmp.ERRNO(errno.EACCES), "open", scmp.Arg(1, scmp.MASKED_EQ, _WRITING, 0))
    _add(rules, scmp.ERRNO(errno.ENOTTY), "ioctl")
    _add(rules, scmp.ERRNO(errno.EINVAL), "prctl", scmp.Arg(0, scmp.EQ, PR_SET_VMA))
    _add(rules, scmp.ALLOW, "prlimit64", scmp.Arg(0, scmp.EQ, 0), scmp.Arg(2, scmp.EQ, 0))  # read own limits
    return rules


# What a worker may send itself: abort()'s signal, a probe (0) and a stop (a hang: the parent's clock ends it).
# Never SIGKILL or SIGTERM: a worker dead by such a signal was killed from outside, and the pool replays its work.
SELF_SIGNALS = (0, signal.SIGABRT, signal.SIGSTOP)


def load(rules: Any, pid: int) -> None:
    """Add the rules that name this process (signals to itself only, ``SELF_SIGNALS``) and load the filter."""
    import pyseccomp as seccomp

    for name, signal_arg in (("kill", 1), ("tkill", 1), ("tgkill", 2)):
        for signum in SELF_SIGNALS:
            only_self = (seccomp.Arg(0, seccomp.EQ, pid), seccomp.Arg(signal_arg, seccomp.EQ, signum))
            _add(rules, seccomp.ALLOW, name, *only_self)
    rules.load()


def _add(rules: Any, action: int, name: str, *args: Any) -> None:
    import pyseccomp as seccomp

    if seccomp.resolve_syscall(seccomp.system_arch(), name) >= 0:  # not every architecture has every call (open)
        rules.add_rule(action, name, *args)
