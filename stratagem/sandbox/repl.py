"""The parent's handle on one code-sandbox process: start it, run cells, time calls, kill it.

The process is a worker of its own zygote (``pool.py``, payload ``repl_child.py``): the kernel
confines it exactly as it confines strategy programs, with a writable, size-capped scratch
directory that is its root and working directory, and that vanishes with the process. Starting
the zygote (a fresh interpreter: the caller is a server with threads and an event loop, which
must not be forked) overlaps with the agent's thinking: ``ReplProcess`` returns at once and the
first request waits for it.

Every limit that protects the caller is enforced here, from outside: the process is stopped
(SIGSTOP through its pidfd) whenever no request is in flight, so nothing runs between cells; a
request that gets no complete answer within its time is answered by SIGKILL, however much of a
reply had arrived; a reply is read without blocking, with a size cap checked before it is read,
and parsed as JSON of the expected shape, or the process is killed as broken. A process that is
killed or dies takes its variables with it: ``Lost`` says so, with the cause.
"""

from __future__ import annotations

import secrets
import select
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from stratagem.sandbox.audit import MAX_VALUE_BYTES
from stratagem.sandbox.channel import ChannelClosed, FrameTooLarge
from stratagem.sandbox.confine import LAYERS, Policy
from stratagem.sandbox.failures import PoolError
from stratagem.sandbox.pool import LOST, Worker, WorkerPool

TIMEOUT_EXIT = 124  # GNU timeout's exit status for "killed for running too long"
START_TIMEOUT_S = 60.0


@dataclass
class Ran:
    """What one cell did, as the parent saw it."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    result: str | None = None
    duration_s: float = 0.0
    state_lost: bool = False
    rebound: bool = False  # the cell bound a new function to the watched name


class Lost(Exception):
    """The process is gone (killed after a timeout, dead of a limit, or broken), and every variable with it."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


class CallFailed(Exception):
    """The called function raised, or returned something that is not plain data; the process lives on."""


class SandboxStartError(RuntimeError):
    """The sandbox process did not start: a problem of the server, not of the code."""


class ReplProcess:
    """One confined Python process keeping one namespace. Use from one thread; ``kill`` from any."""

    def __init__(self, memory_mb: int, cpu_s: float, max_output_chars: int, watch: str | None = None,
                 scratch_mb: int = 64, allow_weaker_sandbox: bool = False,
                 layers: tuple[str, ...] = LAYERS) -> None:  # fmt: skip
        self.cpu_s = cpu_s
        # Three capped texts, each character at most 7 bytes once escaped (a lone surrogate).
        self.max_ran_bytes = 3 * 7 * (max_output_chars + 100) + 2**12
        policy = Policy(memory_mb=memory_mb, cpu_s=cpu_s, cell=True, scratch_mb=scratch_mb, layers=tuple(layers),
                        allow_weaker=allow_weaker_sandbox)  # fmt: skip
        setup = {"max_output_chars": max_output_chars, "watch": watch}
        try:
            self._pool = WorkerPool("stratagem.sandbox.repl_child", setup, policy, size=1, wait=False,
                                    max_frame_bytes=max(self.max_ran_bytes, MAX_VALUE_BYTES + 2**16))  # fmt: skip
        except PoolError as exc:
            raise SandboxStartError(str(exc)) from None
        self._worker: Worker | None = None
        self._lock = threading.Lock()
        self._lost: Lost | None = None  # once set, every request answers it
        self._killed = False
        self._cpu_mark = 0.0  # the process's CPU clock at its last timed answer (at first: once confined)

    @property
    def alive(self) -> bool:
        return self._lost is None and not self._killed

    @property
    def host_pid(self) -> int | None:
        """The process's pid in the caller's pid namespace (inside its own, it is a small number)."""
        return self._worker.host_pid if self._worker is not None else None

    def run(self, code: str, timeout_s: float) -> Ran:
        """Run one cell; a timeout, a death or a broken reply becomes a Ran with ``state_lost``."""
        self.wait_ready()
        started = time.monotonic()
        try:
            reply = self._request({"t": "run", "code": code}, timeout_s, ("ran",))
        except Lost as exc:
            return Ran(stderr=exc.message, exit_code=exc.exit_code, duration_s=time.monotonic() - started,
                       state_lost=True)  # fmt: skip
        duration = time.monotonic() - started
        texts = (reply.get("stdout"), reply.get("stderr"))
        result, exit_code, rebound = reply.get("result"), reply.get("exit_code"), reply.get("rebound")
        if (any(type(t) is not str for t in texts) or type(result) not in (str, type(None))
                or type(exit_code) is not int or exit_code not in (0, 1) or type(rebound) is not bool):  # fmt: skip
            lost = self._lose(1, "the sandbox process sent a malformed reply")
            return Ran(stderr=lost.message, exit_code=1, duration_s=duration, state_lost=True)
        return Ran(*texts, exit_code=exit_code, result=result, duration_s=duration, rebound=rebound)

    def wait_ready(self) -> None:
        """Block until the process is confined and listening (it starts while the agent thinks).

        Raises SandboxStartError when it cannot start (the pool's message says why: a missing
        kernel layer, an interpreter that would not start); a process that is gone is left to
        the next request, which reports it as Lost.
        """
        with self._lock:
            if self.alive:
                self._ensure_worker()

    def call(self, name: str, args: list[Any], timeout_s: float, timed: bool = False) -> tuple[Any, float]:
        """``name(*args)`` in the sandbox: (return value, seconds). Raises CallFailed (the process lives on) or Lost.

        Untimed calls: the wall time of the request. Timed calls have the child thrash its caches
        first, then are charged with the process's CPU time since its previous timed answer (the
        first: since it started), read from outside it with the thrashing left out: every cell run
        in between counts, so work done ahead of the call (defining the function, building tables)
        is not free.
        """
        self.wait_ready()
        excluded = 0.0
        if timed:
            before = self._cpu()
            self._request({"t": "thrash"}, timeout_s, ("thrashed",))
            excluded = self._cpu() - before
        started = time.perf_counter()
        reply = self._request({"t": "call", "name": name, "args": args}, timeout_s, ("value", "error"))
        elapsed = time.perf_counter() - started
        if timed:
            now = self._cpu()
            elapsed, self._cpu_mark = max(now - self._cpu_mark - excluded, 1e-9), now
        if reply["t"] == "error":
            message = reply.get("message")
            raise CallFailed(message if isinstance(message, str) else f"{name} failed")
        return reply.get("v"), elapsed

    def kill(self) -> None:
        """SIGKILL the process and end its zygote; safe from any thread, at any time, more than once."""
        self._killed = True
        worker = self._worker
        if worker is not None:
            worker.signal(signal.SIGKILL)  # a request in flight sees the channel close at once, then lets go
        with self._lock:
            if self._lost is None and worker is not None:
                self._lost = self._ended(self._exit_code())  # what a later request reports
            self._pool.close()

    # --- one request, one reply ----------------------------------------------------------
    def _ensure_worker(self) -> Worker:
        if self._worker is None:
            try:
                self._worker = self._pool.acquire()
                self._await(("ready",), START_TIMEOUT_S)
            except (PoolError, Lost) as exc:
                self._pool.close()
                raise SandboxStartError(f"the sandbox process did not start: {getattr(exc, 'message', exc)}") from None
            self._worker.signal(signal.SIGSTOP)  # nothing runs until the first request
            self._cpu_mark = self._cpu()
        return self._worker

    def _cpu(self) -> float:
        """The process's CPU clock; stopped or blocked whenever this is asked, so the figure is settled."""
        return (self._worker.cpu_s() if self._worker is not None else None) or 0.0

    def _request(self, message: dict[str, Any], timeout_s: float, expect: tuple[str, ...]) -> dict[str, Any]:
        """Send ``message`` with a fresh nonce; the reply must carry it back. A cell that writes a reply
        of its own on the channel cannot know the nonce, so a forged reply is out of protocol."""
        nonce = secrets.token_hex(8)
        payload = orjson.dumps({**message, "n": nonce}, option=orjson.OPT_SERIALIZE_NUMPY)
        with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._killed:  # killed before it ever started
                raise Lost(128 + signal.SIGKILL, "the sandbox process was killed by SIGKILL")
            worker = self._ensure_worker()
            worker.signal(signal.SIGCONT)
            try:
                worker.reader.send(payload, timeout_s)
            except OSError:
                raise self._died() from None
            reply = self._await(expect, timeout_s, nonce)
            worker.signal(signal.SIGSTOP)
            return reply

    def _await(self, expect: tuple[str, ...], timeout_s: float, nonce: str | None = None) -> dict[str, Any]:
        """The next whole reply, within ``timeout_s`` (a half-written one counts as none)."""
        worker = self._worker
        assert worker is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                frames = worker.reader.poll()
            except ChannelClosed:
                raise self._died() from None
            except FrameTooLarge:
                raise self._lose(1, f"the sandbox process sent a reply over {worker.reader.max_bytes} bytes") from None
            if frames:
                if len(frames) > 1:
                    raise self._lose(1, "the sandbox process sent a message nobody asked for")
                try:
                    reply = orjson.loads(frames[0])
                except orjson.JSONDecodeError:
                    raise self._lose(1, "the sandbox process sent a reply that is not JSON") from None
                if not isinstance(reply, dict) or reply.get("t") not in expect or reply.get("n") != nonce:
                    if isinstance(reply, dict) and reply.get("t") == "setup-failed":
                        raise self._lose(1, f"the sandbox could not confine its process: {reply.get('message')}")
                    raise self._lose(1, "the sandbox process sent a reply out of protocol")
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._lose(TIMEOUT_EXIT, f"timed out after {timeout_s:g} s: the sandbox process was killed")
            select.select([worker.reader], [], [], left)

    def _exit_code(self) -> int | str | None:
        worker = self._worker
        return None if worker is None else self._pool.exit_code(worker, timeout_s=2)

    def _lose(self, exit_code: int, message: str) -> Lost:
        """Kill the process (the caller holds the lock) and describe the loss."""
        if self._worker is not None:
            self._worker.signal(signal.SIGKILL)
        self._lost = Lost(exit_code, message)
        self._pool.close()
        return self._lost

    def _died(self) -> Lost:
        """The channel closed: say how the process ended, by its exit status."""
        lost = self._ended(self._exit_code())
        self._lost = lost
        self._pool.close()
        return lost

    def _ended(self, code: int | str | None) -> Lost:
        """Describe a process that has exited, by its exit status."""
        if code is None or code == LOST:
            return Lost(1, "the sandbox process is gone")
        if code == -signal.SIGXCPU:
            return Lost(128 + signal.SIGXCPU, f"the sandbox process used up its CPU budget of {self.cpu_s:g} s")
        if code == -signal.SIGSYS:
            return Lost(128 + signal.SIGSYS, "the sandbox process was killed by SIGSYS: it made a system call "
                        "the sandbox forbids (threads, processes, sockets, signals to others, timers...)")  # fmt: skip
        if isinstance(code, int) and code < 0:
            return Lost(128 - code, f"the sandbox process was killed by {signal.Signals(-code).name}")
        return Lost(int(code), f"the sandbox process exited with code {code}")
