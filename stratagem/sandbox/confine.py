"""How a process that will run untrusted code is shut in, before the code's first byte. The kernel enforces.

The layers, each meant to hold alone (``tests/test_sandbox_layers.py`` bypasses the others):

- ``namespaces``: the zygote and its workers live in new pid, network, mount, IPC and UTS
  namespaces (and a user namespace when not root). They see no process of the caller's, have only
  a downed loopback, and their root is an empty tmpfs (a writable, size-capped one for code cells).
- ``identity``: under root, each worker takes an unprivileged uid of its own; in a user namespace,
  it drops every capability. Either way ``no_new_privs``, an empty bounding set, no ambient caps.
- ``landlock``: no file can be opened, no node made, no TCP port used, no process outside the
  worker's own domain signalled (``landlock.py``).
- ``seccomp``: an allowlist of system calls; any other kills the worker with SIGSYS, which the
  parent scores as cheating (``seccomp_filter.py``).
- ``rlimits``: address space, CPU seconds, no file growth, no new processes, few descriptors.

Python-level checks (the AST rules, the audit hooks of ``audit.py``) remain, to classify and to
fail fast; none of them is a boundary. Time is never enforced in here: the parent measures it and kills.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import resource
import signal
from dataclasses import dataclass, field
from typing import Any

from stratagem.sandbox.libc import LIBC, os_error, syscall

LAYERS = ("namespaces", "identity", "landlock", "seccomp", "rlimits")
SETUP_FAILED_EXIT = 98  # a worker that could not confine itself ran nothing untrusted; the parent stops
# Under root, a worker runs as uid UID_BASE + its pid in the sandbox's pid namespace (mod UID_COUNT): far
# above the ranges /etc/subuid hands to rootless containers (100000...) and systemd's dynamic users.
UID_BASE, UID_COUNT = 2_000_000_000, 65_536

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
MNT_DETACH = 2
_X86 = platform.machine() == "x86_64"
_CAPSET, _PIVOT_ROOT, _CAP_VERSION_3 = (126 if _X86 else 91), (155 if _X86 else 41), 0x20080522  # x86_64, else arm64


@dataclass(frozen=True)
class Policy:
    """What confines a worker. ``layers`` is what to apply; fewer than ``LAYERS`` only when asked for."""

    memory_mb: int = 512  # address space the code may add to what the interpreter holds
    cpu_s: float = 120.0  # CPU seconds for the worker's whole life (SIGXCPU, then SIGKILL a second later)
    cell: bool = False  # a code cell: a writable scratch root and the file calls to use it
    scratch_mb: int = 64  # the cell's scratch directory (a tmpfs: files count here, not in memory_mb)
    layers: tuple[str, ...] = LAYERS
    allow_weaker: bool = False  # run even where the kernel lacks a layer (the pool reports which)

    def to_json(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "cpu_s": self.cpu_s, "cell": self.cell, "scratch_mb": self.scratch_mb,
                "layers": list(self.layers), "allow_weaker": self.allow_weaker}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(**{**data, "layers": tuple(data["layers"])})


@dataclass
class Sandbox:
    """What the zygote set up once, for every worker it forks: the layers in force and their means."""

    policy: Policy
    applied: dict[str, str] = field(default_factory=dict)  # layer -> how it is enforced here
    missing: dict[str, str] = field(default_factory=dict)  # layer -> why it is not
    worker_uids: bool = False  # workers can take uids of their own (root, with the range mapped)
    landlock_abi: int = 0
    seccomp_rules: Any = None  # the libseccomp filter, built once; each worker adds its pid and loads it
    devnull: int = -1
    statm: int = -1  # the zygote's /proc/self/statm, read by a fresh fork to size its address-space limit
    scratch: str | None = None  # a code cell's writable directory ("/" inside its own tmpfs root)


# --- in the zygote, before it forks workers ----------------------------------------------------------
def prepare(policy: Policy) -> Sandbox:
    """Check every layer this process can offer its workers; build the seccomp filter. Trusted code only."""
    box = Sandbox(policy)
    requested = set(policy.layers)
    if platform.system() != "Linux":
        box.missing = {layer: f"not Linux ({platform.system()})" for layer in requested}
        return box
    disabled = set(filter(None, os.environ.get("STRATAGEM_SANDBOX_DISABLE", "").split(",")))
    for layer in sorted(requested & disabled):
        box.missing[layer] = "disabled by STRATAGEM_SANDBOX_DISABLE"
    requested -= disabled
    if "landlock" in requested:
        from stratagem.sandbox import landlock

        box.landlock_abi = landlock.abi_version()
        if box.landlock_abi >= 1:
            box.applied["landlock"] = f"ABI {box.landlock_abi}" + (", signals scoped" if box.landlock_abi >= 6 else "")
        else:
            box.missing["landlock"] = "this kernel has no Landlock (Linux >= 5.13 with landlock in the lsm= list)"
    if "seccomp" in requested:
        try:
            from stratagem.sandbox import seccomp_filter

            box.seccomp_rules = seccomp_filter.build(cell=policy.cell)
            box.applied["seccomp"] = "allowlist, SIGSYS on any other call"
        except (ImportError, OSError) as exc:  # no libseccomp, or a kernel without seccomp filters
            box.missing["seccomp"] = f"libseccomp is not usable ({exc}); install libseccomp2 and pyseccomp"
    if "rlimits" in requested:
        box.applied["rlimits"] = f"{policy.memory_mb} MB, {policy.cpu_s:g} CPU s, no files, no processes"
    box.devnull = os.open(os.devnull, os.O_RDWR)
    return box


def enter_namespaces(box: Sandbox) -> None:
    """Move this process into new namespaces; its next child is pid 1 of the new pid namespace.

    Always with a user namespace of its own, so that even the zygote (root inside it) holds
    capabilities over nothing of the host: no device node, no host mount, no escape from its root.
    Under root the namespace maps uid and gid 0 and the range workers take (``UID_BASE``...);
    the map is written from outside by a helper forked first, as ``newuidmap`` would (a process
    cannot map ids other than its own once inside). Anyone else maps only their own uid. Must run
    single-threaded: the kernel refuses a user namespace to a threaded process.
    """
    if "namespaces" not in box.policy.layers or "namespaces" in box.missing:
        return
    flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    root, uid, gid = os.geteuid() == 0, os.getuid(), os.getgid()  # read before: inside, unmapped ids read 65534
    mapper = _MapWriter() if root else None
    if LIBC.unshare(flags) != 0:
        why = os.strerror(ctypes.get_errno())
        if mapper is not None:
            mapper.cancel()
        if root and LIBC.unshare(flags & ~CLONE_NEWUSER) == 0:  # a kernel without user namespaces
            box.worker_uids = True
            box.applied["namespaces"] = "pid, net, mount, ipc, uts (no user namespace: the identity layer matters)"
            return
        box.missing["namespaces"] = f"unshare refused: {why} (no user namespaces for this user?)"
        return
    if mapper is not None:
        mapper.write(f"0 0 1\n{UID_BASE} {UID_BASE} {UID_COUNT}\n")
        box.worker_uids = True
    else:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as mapping:
                mapping.write(text)
    box.applied["namespaces"] = "user, pid, net, mount, ipc, uts"


class _MapWriter:
    """A child forked before ``unshare`` that writes its parent's uid and gid maps from the outer namespace."""

    def __init__(self) -> None:
        self._go_r, self._go_w = os.pipe()
        self._done_r, self._done_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                text = os.read(self._go_r, 4096).decode()
                if text:
                    for name in ("uid_map", "gid_map"):
                        with open(f"/proc/{os.getppid()}/{name}", "w") as mapping:
                            mapping.write(text)
                    os.write(self._done_w, b"ok")
                code = 0
            finally:
                os._exit(code)
        os.close(self._go_r)
        os.close(self._done_w)

    def write(self, text: str) -> None:
        os.write(self._go_w, text.encode())
        os.close(self._go_w)
        done = os.read(self._done_r, 2)
        os.close(self._done_r)
        os.waitpid(self.pid, 0)
        if done != b"ok":
            raise OSError("could not write the user namespace's uid and gid maps")

    def cancel(self) -> None:
        os.close(self._go_w)
        os.close(self._done_r)
        os.waitpid(self.pid, 0)


def identity_status(box: Sandbox) -> None:
    """Whether workers can take an identity of their own: a uid of their own under root; elsewhere a
    user namespace in which they hold no capability (they keep the caller's uid outside it)."""
    if "identity" not in box.policy.layers or "identity" in box.missing:
        return
    if os.geteuid() == 0 and "namespaces" not in box.applied:
        box.worker_uids = True  # root in the host's user namespace: setresuid itself gives a plain uid
    if box.worker_uids:
        box.applied["identity"] = f"a uid of its own (from {UID_BASE}), no capabilities, no_new_privs"
    elif "namespaces" in box.applied:
        box.applied["identity"] = "the caller's uid in a user namespace, every capability dropped, no_new_privs"
    else:
        box.missing["identity"] = "neither root nor in a user namespace: workers would keep the caller's uid"


def make_root(box: Sandbox) -> None:
    """In the zygote (pid 1 of its namespace): an empty tmpfs becomes the root of it and its workers.

    ``pivot_root`` then detaching the old root, so no ``chroot``/``..`` trick finds the host's
    files again. Strategy workers get a read-only root with nothing in it; a code cell gets a
    writable one of ``scratch_mb``, its scratch directory, gone with the namespace when the episode ends.
    """
    if "namespaces" not in box.applied:
        return
    if LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise os_error("making the mounts private")
    policy = box.policy
    options = f"size={policy.scratch_mb}m,nr_inodes=4096,mode=1777" if policy.cell else "size=4k,nr_inodes=2,mode=555"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if policy.cell else MS_RDONLY)
    target = next(path for path in ("/tmp", "/mnt", "/proc", "/dev") if os.path.isdir(path))
    if LIBC.mount(b"none", target.encode(), b"tmpfs", flags, options.encode()) != 0:
        raise os_error(f"mounting an empty tmpfs on {target}")
    os.chdir(target)
    if syscall(_PIVOT_ROOT, b".", b".") != 0:  # the new root, with the old one on top of it
        raise os_error("pivot_root into the empty tmpfs")
    if LIBC.umount2(b".", MNT_DETACH) != 0:  # the old root, on top: gone from this namespace
        raise os_error("detaching the old root")
    os.chdir("/")
    box.scratch = "/" if policy.cell else None


# --- in a freshly forked worker, before any untrusted byte is read -----------------------------------
def confine_worker(box: Sandbox, channel_fd: int) -> int:
    """Shut this forked worker in, every layer of ``box.applied``; returns the channel's descriptor (3).

    Order matters: descriptors and limits first, then the identity (while capabilities still
    allow it), then Landlock, and the seccomp filter last, since it forbids the calls before it.
    """
    die_with_parent()
    os.dup2(box.devnull, 0)
    os.dup2(box.devnull, 1)
    os.dup2(box.devnull, 2)
    if channel_fd != 3:
        os.dup2(channel_fd, 3)
    vm_bytes = int(os.pread(box.statm, 64, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE") if box.statm >= 0 else None
    os.closerange(4, 1 << 16)  # the zygote's descriptors (control socket, /dev/null, statm) and the channel's copy
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG, visibly
    policy = box.policy
    if policy.cell and box.scratch:
        os.chdir(box.scratch)
    if "rlimits" in box.applied:
        _set_limits(policy, vm_bytes)
    if "identity" in box.applied:
        _drop_identity(box)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if "landlock" in box.applied:
        from stratagem.sandbox import landlock

        landlock.restrict(box.landlock_abi, writable=box.scratch if policy.cell else None)
    if "rlimits" in box.applied:  # stdio and the channel; a cell may open files in its scratch directory
        _lower(resource.RLIMIT_NOFILE, 64 if policy.cell else 4)
    if "seccomp" in box.applied:
        from stratagem.sandbox import seccomp_filter

        seccomp_filter.load(box.seccomp_rules, os.getpid())
    return 3


def _set_limits(policy: Policy, vm_bytes: int | None) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(used.ru_utime + used.ru_stime + policy.cpu_s)
    scratch = policy.scratch_mb * 2**20 if policy.cell else 0
    limits = [] if vm_bytes is None else [(resource.RLIMIT_AS, vm_bytes + policy.memory_mb * 2**20, None)]
    limits += [
        # The soft limit sends SIGXCPU (read by the parent as "out of CPU time"), the hard one SIGKILL a second later.
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, scratch, None),
        (resource.RLIMIT_CORE, 0, None),
        (resource.RLIMIT_NPROC, 0, None),
        (resource.RLIMIT_MEMLOCK, 0, None),
        (resource.RLIMIT_MSGQUEUE, 0, None),
    ]
    for which, soft, hard in limits:
        _lower(which, soft, hard)


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit already in force (lowering is all an unprivileged process may do)."""
    _, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


def _drop_identity(box: Sandbox) -> None:
    """No capability left, in any set; under root (not in a user namespace), a uid nobody else has."""
    for cap in range(64):  # the bounding set: what an execve could ever regain
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if box.worker_uids:
        uid = UID_BASE + os.getpid() % UID_COUNT
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to a plain uid: the kernel clears every capability
        die_with_parent()  # a change of credentials clears the parent-death signal
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all zero, twice (64 capabilities)
    if syscall(_CAPSET, header, data) != 0:
        raise os_error("dropping capabilities")


def _prctl(option: int, value: int) -> None:
    if LIBC.prctl(option, value, 0, 0, 0) != 0:
        raise os_error(f"prctl({option})")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so no confined process outlives whoever watches it."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
