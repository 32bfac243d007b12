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

A worker can also die alone, from outside (the OOM killer, a ``kill``, a signal sent to a whole
process group). ``death`` tells that apart from every death the program or the pool explains: the
pool's own kill, SIGSYS (seccomp), SIGXCPU or, with the CPU budget spent, SIGKILL (RLIMIT_CPU), and
the crashes a program's own code can cause (SIGSEGV, SIGABRT...). Only the rest is *outside*, and
the caller plays that work again instead of blaming the program (``agents/runner.py``).

Ctrl-C is the caller's to answer: the zygote and its workers ignore SIGINT (``zygote.py``); ``close``
ends the whole tree (the zygote kills its workers when its control channel closes) and reaps it,
also when the caller is interrupted while it waits.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson

from stratagem.sandbox.channel import FrameReader
from stratagem.sandbox.confine import Policy
from stratagem.sandbox.failures import (
    PoolError,
    SandboxUnavailable,
    WorkersKilled,
    describe_signal,
    unavailable_message,
)
from stratagem.sandbox.libc import process_cpu_clock
from stratagem.sandbox.zygote_control import CONTROL_BYTES, Zygote

START_TIMEOUT_S = 120.0
FORK_TIMEOUT_S = 30.0
MAX_RESTARTS = 5  # zygotes started in a row without a worker of theirs finishing: past this, the pool gives up
LOST = "lost"  # exit_code's answer for a worker that died with its zygote
# Deaths a program's own code can cause: the sandbox's verdicts (SIGSYS: seccomp; SIGXCPU: the CPU budget) and crashes.
PROGRAM_SIGNALS = frozenset({signal.SIGSYS, signal.SIGXCPU, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
                             signal.SIGILL, signal.SIGABRT, signal.SIGTRAP})  # fmt: skip


@dataclass(frozen=True)
class Death:
    """How a worker ended, from the zygote's report (``WorkerPool.death``)."""

    code: int | str | None  # exit_code's answer: the exit code (negative: the signal), LOST, or None (no report)
    cpu_s: float | None = None  # the CPU it used in all, user and system (None: not reported)
    outside: str | None = None  # what killed it, where neither the pool nor the program's limits explain it


@dataclass
class Worker:
    """The caller's handle on one forked worker."""

    pid: int  # in the sandbox's pid namespace: only for the zygote
    reader: FrameReader
    pidfd: int | None
    generation: int  # the zygote it came from
    killed: bool = False  # the pool killed it (``WorkerPool.kill``): its death is never "from outside"

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
        self._zygote: Zygote | None = None
        self._generation = 0
        self._failed_starts = 0
        self._spares: list[Worker] = []
        self._forking: dict[int, socket.socket] = {}  # request id -> the caller's end of the channel
        self._exits: dict[int, int] = {}
        self._released: set[int] = set()
        self._next_id = 0
        self._starting: Zygote | None = None
        self.zygote_deaths: list[str] = []  # how each zygote that died under the pool ended
        try:
            self._start(wait)
        except BaseException:  # an error or an interrupt while it starts: leave no process behind
            self.close()
            raise

    # --- the zygote's life ----------------------------------------------------------------------
    def _start(self, wait: bool = True) -> None:
        self._generation += 1
        self._starting = Zygote(self._init, self._generation)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the zygote said ready; raises PoolError or SandboxUnavailable when it cannot start."""
        zygote = self._starting
        if zygote is None:
            return
        reply = zygote.receive(START_TIMEOUT_S)  # interrupted here, it is still ``_starting``: ``close`` ends it
        self._starting = None
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
        for worker in self._spares:
            self._drop(worker)
        self._spares = []
        if self._zygote is not None:
            self.zygote_deaths.append(self._zygote.ended())
            self._zygote.stop()
            self._zygote = None
        if self._failed_starts > MAX_RESTARTS:
            last = self.zygote_deaths[-1] if self.zygote_deaths else "no report"
            message = f"the sandbox's zygote died {MAX_RESTARTS} times in a row before any work was done ({last})"
            if last.startswith("killed by"):
                raise WorkersKilled(
                    f"{message}; something outside kills the sandbox's processes (the OOM "
                    f"killer: see `dmesg`; a `kill`; a signal to the whole process group); giving up"
                )
            raise PoolError(f"{message}; giving up")
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
                if worker.pidfd is not None and not worker.alive():  # killed while it waited: no job need lose to it
                    self.release(worker)
                    continue
                return worker
            reply = self._zygote.receive(deadline - time.monotonic())
            if reply is not None:
                self._handle(*reply)
            elif self._zygote.alive and time.monotonic() > deadline:
                raise PoolError(f"the sandbox's zygote did not fork a worker within {FORK_TIMEOUT_S:g} s")

    def kill(self, worker: Worker) -> None:
        worker.killed = True
        if worker.pidfd is not None:
            worker.signal(signal.SIGKILL)
        elif worker.generation == self._generation and self._zygote is not None and worker.pid not in self._exits:
            self._zygote.send({"t": "kill", "pid": worker.pid})

    def exit_code(self, worker: Worker, timeout_s: float = 5.0) -> int | str | None:
        """The worker's exit code (negative: killed by that signal); ``LOST`` when its zygote died with it;
        None when no report came within ``timeout_s``."""
        return self.death(worker, timeout_s).code

    def death(self, worker: Worker, timeout_s: float = 5.0) -> Death:
        """How the worker ended (``exit_code``'s answer, its CPU), and whether that came from outside.

        Outside means neither the pool nor the program explains it: not the pool's own kill, not a death
        the sandbox's limits give (SIGSYS, SIGXCPU, SIGKILL once the CPU budget is spent), not a crash of
        the program's own making (``PROGRAM_SIGNALS``), not an exit of its own; and a worker lost with its
        zygote. A program could raise such a signal itself only through a sandbox escape.
        """
        deadline = time.monotonic() + timeout_s
        while worker.pid not in self._exits or worker.generation != self._generation:
            zygote = self._zygote
            if worker.generation != self._generation or zygote is None or not zygote.alive:
                why = "the sandbox's zygote died"
                if zygote is not None and zygote.generation == worker.generation and not worker.killed:
                    why += f" ({zygote.ended()})"
                return Death(LOST, outside=why)
            reply = zygote.receive(deadline - time.monotonic())
            if reply is not None:
                self._handle(*reply)
            elif zygote.alive and time.monotonic() >= deadline:
                return Death(None)
        code, cpu = self._exits[worker.pid]
        return Death(code, cpu, None if worker.killed else self._outside(code, cpu))

    def _outside(self, code: int, cpu: float | None) -> str | None:
        if code >= 0 or -code in PROGRAM_SIGNALS:
            return None
        if -code == signal.SIGKILL and "rlimits" in self.applied and cpu is not None and cpu >= self.policy.cpu_s:
            return None  # RLIMIT_CPU's hard limit (the program blocked SIGXCPU): its budget, spent
        return f"killed by {describe_signal(-code)}"

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
        """End every process of the pool and reap it (within a few seconds, even when interrupted)."""
        starting, zygote = self._starting, self._zygote
        self._starting = self._zygote = None
        try:
            for worker in self._spares:
                self._drop(worker)
            for sock in self._forking.values():
                sock.close()
            self._spares, self._forking = [], {}
        finally:
            try:
                if starting is not None:
                    starting.stop()
            finally:
                if zygote is not None:
                    zygote.stop()

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
                cpu = message.get("cpu")
                self._exits[message["pid"]] = (message["code"], float(cpu) if isinstance(cpu, (int, float)) else None)

    @staticmethod
    def _drop(worker: Worker) -> None:
        worker.reader.close()
        if worker.pidfd is not None:
            os.close(worker.pidfd)
            worker.pidfd = None
