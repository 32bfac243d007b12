"""``stratagem doctor``: which layers of the sandbox this machine enforces, seen from inside a real worker.

The report is not a guess from kernel versions: it starts a zygote exactly as training does
(with ``allow_weaker`` so that a missing layer is reported instead of refused), reads the layers
it put in force, and has one confined worker describe what it sees (its pid and uid, its root,
what opening a file of the host gives it). This module is also that worker's payload.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
from typing import Any

import orjson

from stratagem.sandbox import channel
from stratagem.sandbox.confine import LAYERS, Policy, Sandbox


def prepare(setup: dict[str, Any]) -> dict[str, Any]:
    return setup


def serve(fd: int, state: dict[str, Any], box: Sandbox) -> None:
    """In the confined worker: once asked (as a real worker waits for its job; one that described itself at once
    would exit before ``acquire`` handed it out, and a later spare, pid 3 or 4, would answer instead), describe
    the view from inside, then exit."""
    channel.receive(fd, 64)
    facts: dict[str, Any] = {"pid": os.getpid(), "uid": os.getuid()}
    try:
        facts["root"] = sorted(os.listdir("/"))[:8]
    except OSError as exc:
        facts["root"] = errno.errorcode.get(exc.errno or 0, str(exc))
    try:
        with open("/etc/passwd", "rb"):
            facts["open"] = "opened"
    except OSError as exc:
        facts["open"] = errno.errorcode.get(exc.errno or 0, str(exc))
    channel.send(fd, orjson.dumps(facts))


def diagnose() -> dict[str, Any]:
    """{"applied", "missing", "worker": what a confined worker saw, "host": facts about this machine}."""
    from stratagem.sandbox.pool import WorkerPool

    host = {"system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "user": "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"}  # fmt: skip
    try:
        host["libseccomp"] = ".".join(str(part) for part in _libseccomp_version())
    except (OSError, AttributeError) as exc:
        host["libseccomp"] = f"not usable: {exc}"
    with WorkerPool("stratagem.sandbox.doctor", {}, Policy(layers=LAYERS, allow_weaker=True)) as pool:
        worker = pool.acquire()
        worker.reader.send(b"describe")
        frames: list[bytes] = []
        while len(frames) < 2:  # "ready", then the facts
            if not select.select([worker.reader], [], [], 10)[0]:
                break
            try:
                frames += worker.reader.poll()
            except channel.ChannelClosed:
                break
        facts = orjson.loads(frames[1]) if len(frames) > 1 else {"error": "the worker did not answer"}
        pool.release(worker)
        return {"applied": pool.applied, "missing": pool.missing, "worker": facts, "host": host}


def _libseccomp_version() -> tuple[int, int, int]:
    library = ctypes.CDLL("libseccomp.so.2")
    library.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
    major, minor, micro = library.seccomp_version().contents
    return major, minor, micro


def format_report(report: dict[str, Any]) -> str:
    host, worker = report["host"], report["worker"]
    lines = [f"the sandbox on this machine ({host['system']}, running as {host['user']}, "
             f"libseccomp {host['libseccomp']}):"]  # fmt: skip
    for layer in LAYERS:
        if layer in report["applied"]:
            lines.append(f"  {layer:<11} on       {report['applied'][layer]}")
        else:
            lines.append(f"  {layer:<11} MISSING  {report['missing'].get(layer, 'not applied')}")
    if "error" in worker:
        lines.append(f"a confined worker: {worker['error']}")
    else:
        root = "empty" if worker["root"] == [] else worker["root"]
        lines.append(f"a confined worker sees: pid {worker['pid']}, uid {worker['uid']}, '/' {root}, "
                     f"open('/etc/passwd'): {worker['open']}")  # fmt: skip
    if report["missing"]:
        lines.append("verdict: layers are missing; stratagem refuses to run untrusted code here unless given "
                     "--allow-weaker-sandbox")  # fmt: skip
    else:
        lines.append("verdict: every layer is in force; untrusted code runs confined here")
    return "\n".join(lines)
