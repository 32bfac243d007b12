"""The zygote: one clean interpreter that sets the sandbox up once and forks a confined worker per request.

Started by ``zygote_control.py`` (for ``pool.py``) as ``python -m stratagem.sandbox.zygote FD`` with a scrubbed
environment. Two processes, because a new pid namespace applies to children only:

- the *outer* process reads the init message, imports the payload (``stratagem.agents.worker``
  for strategy programs, ``stratagem.sandbox.repl_child`` for code cells) and lets it prepare
  (build the environment, import the modules programs may use), builds the seccomp filter, then
  unshares the namespaces and forks the zygote proper. It then only waits, and exits as it did.
- the *zygote* is pid 1 of the new namespace: when it dies, the kernel kills every worker in it.
  It makes an empty tmpfs its root, says ``ready`` (with the layers in force and the ones the
  kernel lacks), and serves ``fork`` and ``kill`` requests on its control socket. Each fork is a
  worker that confines itself (``confine.confine_worker``) before it reads a byte of its job, then
  runs the payload's ``serve``. The caller gets a pidfd for every worker, so it can stop, resume
  or kill it without asking the zygote; the zygote reaps workers and reports their exit status.

Nothing here runs untrusted code; a worker that fails to confine itself says so and exits with
``SETUP_FAILED_EXIT`` before it reads its job.

Ctrl-C reaches every process of the terminal's foreground group, this tree included. The caller
decides what an interrupt means (it stops its work, then closes the pool), so these processes ignore
SIGINT: the pool starts this one with SIGINT blocked, and ``main`` sets it to ignored before
unblocking it, so no interrupt can land in between. Workers inherit the disposition, and the seccomp
filter forbids changing it. Whatever ends them otherwise, the pool reads from their exit status.
"""

from __future__ import annotations

import importlib
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

import orjson

from stratagem.sandbox import channel, keys
from stratagem.sandbox.confine import (
    SETUP_FAILED_EXIT,
    Policy,
    Sandbox,
    confine_worker,
    die_with_parent,
    enter_namespaces,
    identity_status,
    make_root,
    prepare,
)

CONTROL_BYTES = 1 << 16


def main(control_fd: int) -> None:
    ignore_interrupts()
    control = socket.socket(fileno=control_fd)
    die_with_parent()
    try:
        init = orjson.loads(control.recv(CONTROL_BYTES) or b"null")
    except orjson.JSONDecodeError:
        return
    if not isinstance(init, dict):
        return
    try:
        keys.seal()  # whatever the payload builds, the secret never enters memory its workers inherit
        payload = importlib.import_module(init["payload"])
        state = payload.prepare(init["setup"])
        box = prepare(Policy.from_json(init["policy"]))
        if len(os.listdir("/proc/self/task")) > 1:
            raise RuntimeError("the zygote has threads (a library started them at import); it must not fork")
        enter_namespaces(box)
        identity_status(box)
        if box.policy.cell and "namespaces" not in box.applied:
            box.scratch = _scratch_directory()
    except Exception as exc:
        return _say(control, {"t": "error", "message": f"{type(exc).__name__}: {exc}"})
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _zygote(control, box, payload, state)
            code = 0
        finally:
            os._exit(code)
    control.close()
    _, status = os.waitpid(pid, 0)
    if box.scratch and box.scratch != "/":
        shutil.rmtree(box.scratch, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else min(127, code))  # a shell's convention: 128 + N for death by signal N


def ignore_interrupts() -> None:
    """SIGINT ignored, then unblocked (a pending one is dropped): the caller, not this tree, answers Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _zygote(control: socket.socket, box: Sandbox, payload: Any, state: Any) -> None:
    die_with_parent()
    try:
        if os.path.exists("/proc/self/statm"):  # this process's size, which every fork starts at
            box.statm = os.open("/proc/self/statm", os.O_RDONLY)
        make_root(box)
    except Exception as exc:
        return _say(control, {"t": "error", "message": f"the sandbox could not be set up: {exc}"})
    _say(control, {"t": "ready", "applied": box.applied, "missing": box.missing})

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    children: set[int] = set()
    try:
        while True:
            readable, _, _ = select.select([control, wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 4096)
                _reap(control, children)
            if control not in readable:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, CONTROL_BYTES, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                return  # the caller is gone
            message = orjson.loads(data)
            if message["t"] == "fork" and fds:
                pid = os.fork()
                if pid == 0:  # never returns into this loop
                    for fd in (control.fileno(), wake_r, wake_w):
                        os.close(fd)
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _worker(box, fds[0], payload, state)
                os.close(fds[0])
                children.add(pid)
                _forked(control, message["id"], pid)
            elif message["t"] == "kill" and message["pid"] in children:
                os.kill(message["pid"], signal.SIGKILL)  # not yet reaped: still our child, never a reused pid
            _reap(control, children)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)


def _worker(box: Sandbox, channel_fd: int, payload: Any, state: Any) -> None:
    code = 1
    try:
        try:
            fd = confine_worker(box, channel_fd)
        except BaseException as exc:
            try:
                channel.send(3, orjson.dumps({"t": "setup-failed", "message": f"{type(exc).__name__}: {exc}"}))
            finally:
                os._exit(SETUP_FAILED_EXIT)
        channel.send(fd, b'{"t":"ready"}')  # confined: from here on, the payload reads its first untrusted byte
        payload.serve(fd, state, box)
        code = 0
    finally:
        os._exit(code)


def _scratch_directory() -> str:
    """Without a mount namespace, a cell's scratch directory is a fresh temporary one, removed at the end."""
    path = tempfile.mkdtemp(prefix="stratagem-cell-")
    os.chmod(path, 0o1777 if os.geteuid() == 0 else 0o700)  # workers under root take uids of their own
    return path


def _forked(control: socket.socket, request: int, pid: int) -> None:
    """Tell the caller, with a pidfd for the worker where the kernel has them (Linux >= 5.3)."""
    message = orjson.dumps({"t": "forked", "id": request, "pid": pid})
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        control.sendall(message)
        return
    try:
        socket.send_fds(control, [message], [pidfd])
    finally:
        os.close(pidfd)


def _reap(control: socket.socket, children: set[int]) -> None:
    """Report each exited worker: its exit code, and the CPU it used in all (the kernel's CPU limit kills with
    SIGKILL when SIGXCPU is blocked, so the caller needs the figure to tell that death from a ``kill -9``)."""
    while children:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        cpu = round(usage.ru_utime + usage.ru_stime, 3)
        _say(control, {"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status), "cpu": cpu})


def _say(control: socket.socket, message: dict[str, Any]) -> None:
    try:
        control.sendall(orjson.dumps(message))
    except OSError:
        pass  # the caller is gone; the next receive sees it


if __name__ == "__main__":
    main(int(sys.argv[1]))
