"""Landlock (Linux >= 5.13): a process gives up, for good, access to files, TCP ports and signals.

A ruleset "handles" access rights; every handled right is denied unless a rule grants it
beneath a directory. A strategy worker handles every right it can and grants none: it can
open no file, make no node (FIFO, device, socket), connect or bind no TCP port, and signal no
process outside its own domain (ABI 6). A code cell gets one rule: read and write beneath its
scratch directory, still no nodes, no execution, no links across directories.

Three system calls through libc's ``syscall``, on structs whose layout is part of the kernel's
ABI; the kernel's ABI version decides which rights exist, and asking for an unknown one is
EINVAL, so the masks below grow with it.
"""

from __future__ import annotations

import ctypes
import os
import platform

from stratagem.sandbox.libc import os_error, syscall

# The same numbers on every architecture (they were added after the tables were unified).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem rights, by the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

# What a cell may do beneath its scratch directory: ordinary files and directories, nothing else.
SCRATCH_RIGHTS = READ_FILE | WRITE_FILE | READ_DIR | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI (0: no Landlock: not Linux, too old, or not enabled at boot)."""
    if platform.system() != "Linux":
        return 0
    return max(0, syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))


def fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(abi: int, writable: str | None = None) -> None:
    """Deny this process every right the ABI knows, but full use of ordinary files beneath ``writable``.

    Needs ``no_new_privs`` (or CAP_SYS_ADMIN); irreversible, and inherited by every child.
    """
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    attr = _RulesetAttr(fs_rights(abi), NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)  # fmt: skip
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this ABI knows it
    ruleset = syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise os_error("landlock_create_ruleset")
    try:
        if writable is not None:
            directory = os.open(writable, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(SCRATCH_RIGHTS & fs_rights(abi), directory)
                if syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
                    raise os_error("landlock_add_rule")
            finally:
                os.close(directory)
        if syscall(_RESTRICT_SELF, ruleset, 0) < 0:
            raise os_error("landlock_restrict_self")
    finally:
        os.close(ruleset)
