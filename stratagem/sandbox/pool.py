"""The caller's side of the zygote: a pool of pre-forked, confined, single-use workers, supervised.

Why a zygote: forking the caller (a trainer holding torch, CUDA and threads) is unsafe, and a
fresh interpreter per program costs ~0.4 s of CPU. One clean interpreter (``zygote.py``) sets the
sandbox up and imports what workers need once; each worker is then a fork of it (~ms). ``size``
forks are kept ready ahead of demand.

The caller never waits on, nor believes, more than it must. Every read from the zygote has a
deadline; each worker comes with a pidfd, so stopping, resuming and killing it never depend on
the zygote answering; each worker's channel is a non-blocking ``FrameReader`` with a size cap.
A zygote that dies (killed from outside, or by a bug) takes its workers with it (it is pid 1 of
their namespace): the pool starts a new one, and ``exit_code`` tells the caller the worker was
*lost*, so the work is done again instead of being blamed on the program that ran there.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import stratagem
from stratagem.sandbox.channel import FrameReader
from stratagem.sandbox.confine import LAYERS, Policy
from stratagem.sandbox.libc import process_cpu_clock

CONTROL_BYTES = 1 << 16
START_TIMEOUT_S = 120.0
FORK_TIMEOUT_S = 30.0
MAX_RESTARTS = 5  # zygotes started in a row without a worker of theirs finishing: past this, the pool gives up
LOST = "lost"  # exit_code's answer for a worker that died with its zygote
PASSED_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "STRATAGEM_SANDBOX_DISABLE")


class PoolError(RuntimeError):
    """The sandbox could not start, or its zygote failed for good; the message says why."""


class SandboxUnavailable(PoolError):
    """This kernel lacks a layer of the sandbox, and weaker confinement was not allowed."""


def child_environment() -> dict[str, str]:
    """Only what Python needs to start, and the directory that holds this package: no token or key of
    the caller's reaches untrusted code. One thread per numeric library: the zygote must stay single-threaded."""
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
    root = str(Path(stratagem.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
    return env


def unavailable_message(missing: dict[str, str]) -> str:
    kept = [layer for layer in LAYERS if layer not in missing]
    lines = [f"  {layer}: {why}" for layer, why in missing.items()]
    return ("the sandbox cannot run untrusted code safely on this machine; missing:\n" + "\n".join(lines) +
            f"\npass --allow-weaker-sandbox (Python: allow_weaker=True) to run with the layers that work here "
            f"({', '.join(kept) or 'none'}); `stratagem doctor` shows them all")  # fmt: skip


@dataclass
class Worker:
    """The caller's handle on one forked worker."""

    pid: int  # in the sandbox's pid namespace: only for the zygote
    reader: FrameReader
    pidfd: int | None
    generation: int  # the zygote it came from

    @property
    def host_pid(self) -> int | None:
        """The worker's pid as this process sees it (from its pidfd); None once it is gone."""
        if self.pidfd is None:
            return None
        with open(f"/proc/self/fdinfo/{self.pidfd}") as info:
            for line in info:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
        return None

    def cpu_s(self) -> float | None:
        """The CPU time (user + system) the worker has used so far, read from outside it; None once it is gone.

        A timed environment's clock: unlike a wall clock, it counts only the worker's own work, whatever
        else the machine does, and it counts all of it (loading the program included).
        """
        pid = self.host_pid
        if pid is None:
            return None
        try:
            return time.clock_gettime(process_cpu_clock(pid))
        except OSError:
            return None

    def alive(self) -> bool:
        """Whether the process still runs (its pidfd is readable once it has exited)."""
        if self.pidfd is None:
            return False
        return not select.select([self.pidfd], [], [], 0)[0]

    def signal(self, signum: int) -> None:
        """Deliver a signal straight to the worker (SIGSTOP, SIGCONT, SIGKILL), no zygote involved."""
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except (ProcessLookupError, OSError):
                pass  # it has exited already


class _Zygote:
    """One zygote process tree and its control channel."""

    def __init__(self, init: bytes, generation: int) -> None:
        self.generation = generation
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stratagem.sandbox.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=child_environment(),
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise PoolError(f"cannot start the sandbox's zygote: {exc}") from None
        finally:
            theirs.close()
        self.alive = True
        self.control.sendall(init)

    def receive(self, timeout_s: float) -> tuple[dict[str, Any], list[int]] | None:
        """The next control message and its descriptors; None when none came in time. Marks a dead zygote."""
        if not self.alive:
            return None
        ready, _, _ = select.select([self.control], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        try:
            data, fds, _, _ = socket.recv_fds(self.control, CONTROL_BYTES, 1)
        except OSError:
            data, fds = b"", []
        if not data:
            self.alive = False
            return None
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = {"t": "garbled"}
        return (message if isinstance(message, dict) else {"t": "garbled"}), fds

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> bool:
        try:
            socket.send_fds(self.control, [orjson.dumps(message)], fds or [])
            return True
        except OSError:
            self.alive = False
            return False

    def stop(self) -> None:
        self.alive = False
        self.control.close()  # the zygote sees EOF, kills its workers and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WorkerPool:
    """Forks confined workers running ``payload`` (a module with ``prepare(setup)`` and ``serve(fd, state, box)``).

    ``acquire`` hands out a ready worker; use each once, then ``release`` it. Raises
    SandboxUnavailable at start when a layer is missing and ``policy.allow_weaker`` is false.
    """

    def __init__(self, payload: str, setup: dict[str, Any], policy: Policy, size: int = 1,
                 max_frame_bytes: int = 64 * 2**20, wait: bool = True) -> None:  # fmt: skip
        """``wait=False`` returns as soon as the zygote is launched; the first ``acquire`` waits for it."""
        self.size, self.policy, self.max_frame_bytes = max(1, size), policy, max_frame_bytes
        self._init = orjson.dumps({"payload": payload, "setup": setup, "policy": policy.to_json()})
        if len(self._init) > CONTROL_BYTES:
            raise PoolError(f"the sandbox's set-up message is {len(self._init)} bytes, over {CONTROL_BYTES}")
        self.applied: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        self._zygote: _Zygote | None = None
        self._generation = 0
        self._failed_starts = 0
        self._spares: list[Worker] = []
        self._forking: dict[int, socket.socket] = {}  # request id -> the caller's end of the channel
        self._exits: dict[int, int] = {}
        self._released: set[int] = set()
        self._next_id = 0
        self._starting: _Zygote | None = None
        self._start(wait)

    # --- the zygote's life ----------------------------------------------------------------------
    def _start(self, wait: bool = True) -> None:
        self._generation += 1
        self._starting = _Zygote(self._init, self._generation)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the zygote said ready; raises PoolError or SandboxUnavailable when it cannot start."""
        zygote, self._starting = self._starting, None
        if zygote is None:
            return
        reply = zygote.receive(START_TIMEOUT_S)
        message = reply[0] if reply else {"t": "error", "message": f"no answer within {START_TIMEOUT_S:g} s"}
        if message.get("t") != "ready":
            zygote.stop()
            raise PoolError(f"the sandbox could not start: {message.get('message', message)}")
        self.applied, self.missing = dict(message["applied"]), dict(message["missing"])
        if self.missing and not self.policy.allow_weaker:
            zygote.stop()
            raise SandboxUnavailable(unavailable_message(self.missing))
        self._zygote = zygote
        self._spares, self._forking, self._exits, self._released = [], {}, {}, set()
        for _ in range(self.size):
            self._request_fork()

    def _restart(self) -> None:
        """The zygote died: every worker of it is gone. Start another, unless that keeps failing."""
        self._failed_starts += 1
        if self._failed_starts > MAX_RESTARTS:
            raise PoolError(f"the sandbox's zygote died {MAX_RESTARTS} times in a row; giving up")
        for worker in self._spares:
            self._drop(worker)
        if self._zygote is not None:
            self._zygote.stop()
        self._start()

    @property
    def zygote_pid(self) -> int | None:
        """The outer process of the current zygote (killing it kills every worker of it)."""
        return self._zygote.process.pid if self._zygote is not None else None

    # --- workers -------------------------------------------------------------------------------
    def acquire(self) -> Worker:
        """A forked, idle, confined worker; a replacement is requested at once so the next one is ready."""
        self.wait_ready()
        deadline = time.monotonic() + FORK_TIMEOUT_S
        while True:
            self._drain()
            if self._zygote is None or not self._zygote.alive:
                self._restart()
                continue
            if self._spares:
                worker = self._spares.pop(0)
                self._request_fork()
                return worker
            reply = self._zygote.receive(deadline - time.monotonic())
            if reply is not None:
                self._handle(*reply)
            elif self._zygote.alive and time.monotonic() > deadline:
                raise PoolError(f"the sandbox's zygote did not fork a worker within {FORK_TIMEOUT_S:g} s")

    def kill(self, worker: Worker) -> None:
        if worker.pidfd is not None:
            worker.signal(signal.SIGKILL)
        elif worker.generation == self._generation and self._zygote is not None and worker.pid not in self._exits:
            self._zygote.send({"t": "kill", "pid": worker.pid})

    def exit_code(self, worker: Worker, timeout_s: float = 5.0) -> int | str | None:
        """The worker's exit code (negative: killed by that signal); ``LOST`` when its zygote died with it;
        None when no report came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while worker.pid not in self._exits or worker.generation != self._generation:
            zygote = self._zygote
            if worker.generation != self._generation or zygote is None or not zygote.alive:
                return LOST
            reply = zygote.receive(deadline - time.monotonic())
            if reply is not None:
                self._handle(*reply)
            elif zygote.alive and time.monotonic() >= deadline:
                return None
        return self._exits[worker.pid]

    def succeeded(self) -> None:
        """A worker of this zygote did its work: the zygote is healthy, so its restarts start counting afresh."""
        self._failed_starts = 0

    def release(self, worker: Worker) -> None:
        """Kill the worker if it still runs and drop the caller's ends."""
        self.kill(worker)
        self._drop(worker)
        if worker.generation == self._generation and self._exits.pop(worker.pid, None) is None:
            self._released.add(worker.pid)  # its exit report, still to come, is of no use

    def close(self) -> None:
        if self._starting is not None:
            self._starting.stop()
            self._starting = None
        for worker in self._spares:
            self._drop(worker)
        for sock in self._forking.values():
            sock.close()
        self._spares, self._forking = [], {}
        if self._zygote is not None:
            self._zygote.stop()
            self._zygote = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- control channel -----------------------------------------------------------------------
    def _request_fork(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_id += 1
        self._forking[self._next_id] = ours
        assert self._zygote is not None
        self._zygote.send({"t": "fork", "id": self._next_id}, [theirs.fileno()])
        theirs.close()

    def _drain(self) -> None:
        """Handle every control message already waiting, without blocking."""
        while self._zygote is not None and (reply := self._zygote.receive(0)) is not None:
            self._handle(*reply)

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        kind = message.get("t")
        if kind == "forked" and message.get("id") in self._forking:
            sock = self._forking.pop(message["id"])
            self._spares.append(Worker(pid=message["pid"], reader=FrameReader(sock, self.max_frame_bytes),
                                       pidfd=fds[0] if fds else None, generation=self._generation))  # fmt: skip
            return
        for fd in fds:
            os.close(fd)
        if kind == "exit":
            if message["pid"] in self._released:
                self._released.discard(message["pid"])
            else:
                self._exits[message["pid"]] = message["code"]

    @staticmethod
    def _drop(worker: Worker) -> None:
        worker.reader.close()
        if worker.pidfd is not None:
            os.close(worker.pidfd)
            worker.pidfd = None
