"""Deadlines for environment calls that run on the event loop's own thread.

A thread hop costs 150-250 µs on a 2-core machine, ten times a 2048 step, so environments
that declare ``inline_steps = True`` run where the request arrived. Their deadline is
still enforced: a watchdog thread raises ``StepTimeout`` inside the running call
(``PyThreadState_SetAsyncExc``), which interrupts any Python code at its next bytecode. The
environment is then dropped, as after any timeout. (Code stuck inside one C call cannot be
interrupted this way; such environments must not declare ``inline_steps``.)
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_set_async_exc_api = ctypes.pythonapi.PyThreadState_SetAsyncExc


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in that thread, or with None (a NULL pointer) cancel a scheduled one."""
    _set_async_exc_api(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


class StepTimeout(BaseException):
    """An environment call overran its deadline. A BaseException, so ``except Exception``
    inside an environment cannot swallow it."""


class Watchdog:
    def __init__(self, poll_s: float = 0.01) -> None:
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._armed: tuple[int, float, int] | None = None  # (thread id, deadline, token)
        self._fired: int | None = None
        self._token = 0
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """Call ``fn(*args)`` here; raise StepTimeout if it is still running after ``timeout_s``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="env-watchdog", daemon=True)
            self._thread.start()
        with self._lock:
            self._token += 1
            token = self._token
            self._armed = (threading.get_ident(), time.monotonic() + timeout_s, token)
            self._fired = None
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._armed = None
                fired, self._fired = self._fired == token, None
                if fired:  # raised too late to land inside fn: cancel it, and report the overrun
                    _set_async_exc(threading.get_ident(), None)
            if fired:
                raise StepTimeout(f"the environment did not answer within {timeout_s:g} s")

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_s)
            with self._lock:
                armed = self._armed
                if armed is not None and time.monotonic() > armed[1] and self._fired is None:
                    self._fired = armed[2]
                    _set_async_exc(armed[0], StepTimeout)
