"""The caller's handle on one zygote process (launched, messaged, reaped), apart from the pool that uses it.

The pool reasons about workers: which are ready, which were lost, which were killed from outside.
Everything that touches the zygote process itself is here instead: its launch (a fresh interpreter, a
scrubbed environment, SIGINT blocked while it starts), its control channel (every read with a deadline,
a dead or garbled zygote told apart from a quiet one) and its end (reaped within seconds, killed at once
when the caller is interrupted). In one small module, the promise that no zygote of ours outlives an
error or an interrupt, and that no secret of the caller's reaches it, can be checked in one read.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

import stratagem
from stratagem.sandbox.failures import PoolError, describe_exit

CONTROL_BYTES = 1 << 16
PASSED_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "STRATAGEM_SANDBOX_DISABLE")


def child_environment() -> dict[str, str]:
    """Only what Python needs to start, and the directory that holds this package: no token or key of
    the caller's reaches untrusted code. One thread per numeric library: the zygote must stay single-threaded."""
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
    root = str(Path(stratagem.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
    return env


class Zygote:
    """One zygote process tree and its control channel."""

    def __init__(self, init: bytes, generation: int) -> None:
        self.generation = generation
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.process: subprocess.Popen[bytes] | None = None
        try:
            # Started with SIGINT blocked (a child inherits the mask): it ignores SIGINT before unblocking it,
            # so a Ctrl-C that comes while the interpreter starts is dropped, not a traceback (zygote.py).
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "stratagem.sandbox.zygote", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=child_environment(),
                )  # fmt: skip
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.alive = True
            self.control.sendall(init)
        except BaseException as exc:  # an error, or an interrupt: no zygote of ours outlives this
            if self.process is not None:
                self.process.kill()
                self.process.wait()
            ours.close()
            if isinstance(exc, OSError):
                raise PoolError(f"cannot start the sandbox's zygote: {exc}") from None
            raise
        finally:
            theirs.close()

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
        """False, with the zygote marked dead, when the channel is gone: a lost zygote is found, not raised."""
        try:
            socket.send_fds(self.control, [orjson.dumps(message)], fds or [])
            return True
        except OSError:
            self.alive = False
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the tree and reap it: the zygote sees EOF, kills its workers and exits (the kernel reaps the
        workers as their namespace ends). Killed after ``timeout_s``, or at once when the caller is
        interrupted while it waits, so no process of it is left behind either way."""
        self.alive = False
        self.control.close()
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout_s)
        except BaseException as exc:
            self.process.kill()  # its own zygote child gets SIGKILL with it (PR_SET_PDEATHSIG)
            self.process.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise

    def ended(self) -> str:
        """How the zygote ended, once it has (``killed by signal 9, SIGKILL: ...``); it is given a second.
        The outer process exits with 128 + N when the zygote proper died by signal N (``zygote.py``)."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        return describe_exit(128 - code if code > 128 else code)
