"""A pool of pre-started, single-use sandbox workers, forked from a zygote process.

Why a zygote: forking the caller (a trainer holding torch, CUDA and threads) is unsafe, and
``multiprocessing``'s fork server re-imports the caller's ``__main__`` in every child. Starting
a fresh interpreter per program costs ~0.4 s of CPU. So the pool starts one clean interpreter
(the zygote) that imports the worker code and builds the environment once; every program
then runs in a fresh fork of it (~1 ms), which confines itself, plays, and exits. Nothing a
program does to its process survives it. ``size`` forks are kept ready ahead of demand.

The zygote is the children's parent, so it reaps them and reports exit codes (a worker that
hit its CPU rlimit dies of SIGXCPU, and the runner scores that as a timeout); kills go
through it too, so a pid is never signalled after it was reaped and perhaps reused. Each
child gets its own socket to the caller (length-prefixed frames) and a shared 8-byte page,
the heartbeat, where it stamps the start of every call of the program.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from stratagem.envs.spec import EnvSpec

_HEARTBEAT = struct.Struct("d")
_CONTROL_BYTES = 1 << 16


class PoolError(RuntimeError):
    """The zygote could not start or stopped answering; the message says why."""


@dataclass
class Worker:
    """The caller's handle on one forked worker."""

    pid: int
    conn: Connection
    heartbeat: mmap.mmap

    def beat(self) -> float:
        """When the program's current call started (monotonic seconds), or 0.0 between calls."""
        return _HEARTBEAT.unpack_from(self.heartbeat)[0]


class WorkerPool:
    """Forks workers for one environment. ``acquire`` hands out a ready one; use each once."""

    def __init__(self, spec: EnvSpec, params: dict[str, Any] | None = None, size: int = 1) -> None:
        self.size = max(1, size)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        self._process = subprocess.Popen(
            [sys.executable, "-m", "stratagem.agents.pool", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        init = {"spec": spec.model_dump(mode="json"), "params": params or {},
                "source": str(spec.source) if spec.source else None}  # fmt: skip
        self._control.sendall(orjson.dumps(init))
        self._spares: list[Worker] = []
        self._forking: dict[int, tuple[Connection, mmap.mmap]] = {}  # request id -> the caller's ends
        self._exits: dict[int, int] = {}
        self._released: set[int] = set()
        self._next_id = 0
        reply = self._receive(timeout_s=120) or {"message": "no answer within 120 s"}
        if reply.get("t") != "ready":
            self.close()
            raise PoolError(f"the sandbox could not start the environment: {reply.get('message', reply)}")
        for _ in range(self.size):
            self._request_fork()

    def acquire(self) -> Worker:
        """A forked, idle worker; a replacement is requested at once so the next one is ready."""
        self._drain()
        while not self._spares:
            message = self._receive(timeout_s=30)
            if message is None:
                raise PoolError("the sandbox's zygote did not fork a worker within 30 s")
            self._handle(message)
        worker = self._spares.pop(0)
        self._request_fork()
        return worker

    def kill(self, worker: Worker) -> None:
        if worker.pid not in self._exits:
            self._send({"t": "kill", "pid": worker.pid})

    def exit_code(self, worker: Worker, timeout_s: float = 5.0) -> int | None:
        """The worker's exit code (negative: killed by that signal), waiting for it to be reaped."""
        deadline = time.monotonic() + timeout_s
        while worker.pid not in self._exits:
            message = self._receive(timeout_s=deadline - time.monotonic())
            if message is None:
                return None
            self._handle(message)
        return self._exits[worker.pid]

    def release(self, worker: Worker) -> None:
        """Kill the worker if it still runs and drop the caller's ends."""
        self.kill(worker)
        worker.conn.close()
        worker.heartbeat.close()
        if self._exits.pop(worker.pid, None) is None:
            self._released.add(worker.pid)  # its exit report, still to come, is of no use

    def close(self) -> None:
        for conn, heartbeat in [*((w.conn, w.heartbeat) for w in self._spares), *self._forking.values()]:
            conn.close()
            heartbeat.close()
        self._spares.clear()
        self._forking.clear()
        try:
            self._control.close()  # the zygote sees EOF, kills its children and exits
        finally:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- control channel --------------------------------------------------------------
    def _request_fork(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        page = os.memfd_create("stratagem-heartbeat")
        os.ftruncate(page, _HEARTBEAT.size)
        heartbeat = mmap.mmap(page, _HEARTBEAT.size)
        self._next_id += 1
        self._forking[self._next_id] = (Connection(ours.detach()), heartbeat)
        try:
            socket.send_fds(self._control, [orjson.dumps({"t": "fork", "id": self._next_id})], [theirs.fileno(), page])
        except OSError as exc:
            raise PoolError(f"the sandbox's zygote is gone: {exc}") from None
        finally:
            theirs.close()
            os.close(page)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._control.sendall(orjson.dumps(message))
        except OSError as exc:
            raise PoolError(f"the sandbox's zygote is gone: {exc}") from None

    def _drain(self) -> None:
        """Handle every control message already waiting, without blocking."""
        while (message := self._receive(timeout_s=0)) is not None:
            self._handle(message)

    def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        """The next control message, or None when none came within ``timeout_s``."""
        ready, _, _ = select.select([self._control], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        data = self._control.recv(_CONTROL_BYTES)
        if not data:
            raise PoolError(f"the sandbox's zygote exited (code {self._process.poll()})")
        return orjson.loads(data)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "forked":
            conn, heartbeat = self._forking.pop(message["id"])
            self._spares.append(Worker(pid=message["pid"], conn=conn, heartbeat=heartbeat))
        elif kind == "exit":
            if message["pid"] in self._released:
                self._released.discard(message["pid"])
            else:
                self._exits[message["pid"]] = message["code"]
        elif kind == "error":
            raise PoolError(f"the sandbox's zygote failed: {message.get('message')}")


# --- the zygote (runs as ``python -m stratagem.agents.pool FD``) ---------------------------
def _zygote(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    init = orjson.loads(control.recv(_CONTROL_BYTES) or b"null")
    if not isinstance(init, dict):
        return
    try:
        from stratagem.agents import worker  # imported once here; every child inherits it

        spec = EnvSpec.model_validate(init["spec"])
        if init["source"]:
            from pathlib import Path

            spec.source = Path(init["source"])
        env = spec.make(**init["params"])
        worker.preload(spec.strategy)
    except Exception as exc:
        control.sendall(orjson.dumps({"t": "error", "message": f"{type(exc).__name__}: {exc}"}))
        return
    control.sendall(orjson.dumps({"t": "ready"}))

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
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
                data, fds, _, _ = socket.recv_fds(control, _CONTROL_BYTES, 2)
            except OSError:
                data = b""
            if not data:
                return  # the caller is gone
            message = orjson.loads(data)
            if message["t"] == "fork":
                pid = os.fork()
                if pid == 0:  # the child: never returns into this loop
                    code = 1
                    try:
                        for fd in (control.fileno(), wake_r, wake_w):
                            os.close(fd)
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        worker.run_child(fds[0], fds[1], env, spec)
                        code = 0
                    finally:
                        os._exit(code)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                control.sendall(orjson.dumps({"t": "forked", "id": message["id"], "pid": pid}))
            elif message["t"] == "kill" and message["pid"] in children:
                os.kill(message["pid"], signal.SIGKILL)  # not yet reaped: still our child
            _reap(control, children)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)


def _reap(control: socket.socket, children: set[int]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        try:
            control.sendall(orjson.dumps({"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)}))
        except OSError:
            return


if __name__ == "__main__":
    _zygote(int(sys.argv[1]))
