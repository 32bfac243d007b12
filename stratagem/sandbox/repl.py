"""The parent's handle on one code-sandbox process: start it, run cells, time calls, kill it.

Why a fresh interpreter per episode rather than a fork of the caller: the caller is a server
with threads and an event loop, which must not be forked, and a child that imports only
``stratagem.sandbox`` and the standard library starts in about a tenth of a second. The
child gets a scrubbed environment (no token or key of the server's reaches the code) and ``/``
as its working directory, and dies with its parent (``PR_SET_PDEATHSIG``); it confines itself
(``repl_child.py``) before it says it is ready.

Every limit that protects the caller is enforced here, from outside: a request that gets no
answer within its time is answered by SIGKILL; a reply is read with a size cap and parsed as
JSON of the expected shape, or the process is killed as broken. A process that is killed or
dies takes its variables with it: ``Lost`` says so, with the cause.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

import stratagem
from stratagem.sandbox.confine import MAX_VALUE_BYTES

TIMEOUT_EXIT = 124  # GNU timeout's exit status for "killed for running too long"
START_TIMEOUT_S = 60.0
PASSED_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH")


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


def child_environment() -> dict[str, str]:
    """Only what Python needs to start, and the directory that holds this package."""
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
    root = str(Path(stratagem.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8")
    return env


class ReplProcess:
    """One confined Python process keeping one namespace. Use from one thread; ``kill`` from any."""

    def __init__(self, memory_mb: int, cpu_s: float, max_output_chars: int, watch: str | None = None) -> None:
        self.cpu_s = cpu_s
        # Three capped texts, each character at most 7 bytes once escaped (a lone surrogate).
        self.max_ran_bytes = 3 * 7 * (max_output_chars + 100) + 2**12
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stratagem.sandbox.repl_child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=child_environment(),
                cwd="/",
            )
        except OSError as exc:
            ours.close()
            raise SandboxStartError(f"cannot start the sandbox process: {exc}") from None
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._ready = False
        config = {"memory_mb": memory_mb, "cpu_s": cpu_s, "max_output_chars": max_output_chars, "watch": watch}
        try:
            self._conn.send_bytes(orjson.dumps(config))
        except OSError as exc:  # it died at once (a broken interpreter, say)
            self.kill()
            raise SandboxStartError(f"the sandbox process exited as it started: {exc}") from None

    @property
    def alive(self) -> bool:
        return not self._conn.closed and self.process.poll() is None

    def run(self, code: str, timeout_s: float) -> Ran:
        """Run one cell; a timeout, a death or a broken reply becomes a Ran with ``state_lost``."""
        self.wait_ready()
        started = time.monotonic()
        try:
            reply = self._request(orjson.dumps({"t": "run", "code": code}), timeout_s, ("ran",), self.max_ran_bytes)
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

        Raises SandboxStartError when it cannot start; a process that is gone is left to the
        next request, which reports it as Lost.
        """
        with self._lock:
            if self.alive:
                self._wait_ready()

    def call(self, name: str, args: list[Any], timeout_s: float, timed: bool = False) -> tuple[Any, float]:
        """``name(*args)`` in the sandbox: (return value, seconds by this process's clock).

        Timed calls have the child thrash its caches first; the clock then covers sending the
        arguments, the call and the answer's return, so the arguments never reach the child
        before the clock runs. Raises CallFailed (the process lives on) or Lost.
        """
        self.wait_ready()
        if timed:
            self._request(orjson.dumps({"t": "thrash"}), timeout_s, ("thrashed",), 2**10)
        payload = orjson.dumps({"t": "call", "name": name, "args": args}, option=orjson.OPT_SERIALIZE_NUMPY)
        started = time.perf_counter()
        reply = self._request(payload, timeout_s, ("value", "error"), MAX_VALUE_BYTES + 2**16)
        elapsed = time.perf_counter() - started
        if reply["t"] == "error":
            message = reply.get("message")
            raise CallFailed(message if isinstance(message, str) else f"{name} failed")
        return reply.get("v"), elapsed

    def kill(self) -> None:
        """SIGKILL and reap the process; safe from any thread, at any time, more than once."""
        self._terminate()
        with self._lock:  # a request in flight sees EOF at once, then lets go
            self._conn.close()

    # --- one request, one reply ----------------------------------------------------------
    def _request(self, payload: bytes, timeout_s: float, expect: tuple[str, ...], max_bytes: int) -> dict[str, Any]:
        with self._lock:
            if not self.alive:  # killed from another thread (a closing session), or dead between requests
                code = self.process.poll()
                raise Lost(1, "the sandbox process is gone") if code is None else self._ended(code)
            self._wait_ready()
            conn = self._conn
            if conn.poll(0):
                raise self._lose(1, "the sandbox process sent a message nobody asked for")
            try:
                conn.send_bytes(payload)
            except OSError:
                raise self._died() from None
            if not conn.poll(timeout_s):
                raise self._lose(TIMEOUT_EXIT, f"timed out after {timeout_s:g} s: the sandbox process was killed")
            try:
                raw = conn.recv_bytes(max_bytes)
            except EOFError:
                raise self._died() from None
            except OSError:  # longer than max_bytes, or a broken channel
                raise self._lose(1, f"the sandbox process sent a reply over {max_bytes} bytes") from None
            try:
                reply = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise self._lose(1, "the sandbox process sent a reply that is not JSON") from None
            if not isinstance(reply, dict) or reply.get("t") not in expect:
                raise self._lose(1, "the sandbox process sent a reply out of protocol")
            return reply

    def _wait_ready(self) -> None:
        if self._ready:
            return
        if self._conn.poll(START_TIMEOUT_S):
            try:
                if orjson.loads(self._conn.recv_bytes(2**10)) == {"t": "ready"}:
                    self._ready = True
                    return
            except (EOFError, OSError, orjson.JSONDecodeError):
                pass
        self._terminate()
        self._conn.close()
        raise SandboxStartError(
            f"the sandbox process did not start (exit code {self.process.returncode}); the server's stderr shows why"
        )

    def _terminate(self) -> None:
        self.process.kill()  # a no-op once it has been reaped
        self.process.wait()

    def _lose(self, exit_code: int, message: str) -> Lost:
        """Kill the process (the caller holds the lock) and describe the loss."""
        self._terminate()
        self._conn.close()
        return Lost(exit_code, message)

    def _died(self) -> Lost:
        """The channel closed: say how the process ended, by its exit status."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # alive, with its end of the channel closed by a cell
            return self._lose(1, "the sandbox process closed its channel and was killed")
        self._conn.close()
        return self._ended(code)

    def _ended(self, code: int) -> Lost:
        """Describe a process that has exited, by its exit status."""
        if code == -signal.SIGXCPU:
            return Lost(128 + signal.SIGXCPU, f"the sandbox process used up its CPU budget of {self.cpu_s:g} s")
        if code < 0:
            return Lost(128 - code, f"the sandbox process was killed by {signal.Signals(-code).name}")
        return Lost(code, f"the sandbox process exited with code {code}")
