"""The C library, for the calls Python does not wrap (unshare, mount, prctl, capset, pivot_root, Landlock).

Loaded at import, long before any untrusted code exists. Fixed-signature functions get their
argument types; the variadic ``syscall`` goes through ``syscall()``, which widens every integer to a
long, as the kernel's registers expect (ctypes would pass a 32-bit int with undefined upper bits).
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.unshare.argtypes = [ctypes.c_int]
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def syscall(number: int, *args: object) -> int:
    """libc's ``syscall(number, ...)``; pointers and buffers pass as they are."""
    return LIBC.syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def os_error(what: str) -> OSError:
    """The OSError of the last failed call, named ``what``."""
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {os.strerror(errno)}")


def process_cpu_clock(pid: int) -> int:
    """The clock id of process ``pid``'s CPU time, for ``time.clock_gettime`` (glibc's ``clock_getcpuclockid``,
    which Python lacks): the kernel's ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``, nanosecond resolution."""
    return ctypes.c_int32((~pid << 3) | 2).value
