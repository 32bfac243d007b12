"""Ctrl-C that cannot be lost.

Python's own SIGINT handler raises KeyboardInterrupt wherever the signal lands. Landing inside a finaliser
(a file or a generator closed during garbage collection), the interpreter prints "Exception ignored" and drops
it, and the work goes on as if nothing was pressed. ``sticky_interrupts`` installs a handler that raises the
same way but also notes the signal, so that a long loop can ``raise_if_dropped`` at its safe points and raise
what a finaliser swallowed. Code that manages SIGINT itself (the runner's scheduling loop, the trainer's
uninterruptible update) treats this handler as it treats Python's (``raises_where_it_lands``);
``ScheduleSignals`` is the runner's, ``deferred_interrupt`` the trainer's.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_noted = False


def sticky(signum: int, frame: Any) -> None:
    """Python's default SIGINT behaviour, remembered."""
    global _noted
    _noted = True
    raise KeyboardInterrupt


def raises_where_it_lands(handler: Any) -> bool:
    """Whether a SIGINT handler is Python's default or ``sticky`` (both raise KeyboardInterrupt where it lands)."""
    return handler is signal.default_int_handler or handler is sticky


@contextmanager
def sticky_interrupts() -> Iterator[None]:
    """Inside: SIGINT raises as usual and is also noted. Only from the main thread, and only where SIGINT has
    Python's default handler (a caller that ignores or handles it keeps its choice)."""
    global _noted
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    _noted = False
    previous = signal.signal(signal.SIGINT, sticky)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _noted = False


def raise_if_dropped() -> None:
    """KeyboardInterrupt if a SIGINT was noted by ``sticky`` (raised already, or swallowed by a finaliser)."""
    if _noted:
        raise KeyboardInterrupt


class ScheduleSignals:
    """The signals that matter while programs are timed, watched for the length of an ``evaluate``.

    SIGCONT ends a stop of this process (Ctrl-Z then fg, SIGSTOP): its wall clocks jumped, and the jump is not
    the programs' time. SIGINT is noted, and the scheduling loop raises KeyboardInterrupt at its next tick
    (``check``), never wherever the signal lands: raised inside a finaliser (a recording's file closing, say),
    the interpreter would print it and drop it, and the work would go on. Handlers are only set from the main
    thread, and SIGINT's only where it raises where it lands (Python's default or ``sticky``; not
    where a caller ignores it)."""

    def __init__(self) -> None:
        self.continued, self.interrupted = 0, False
        self._previous: dict[int, Any] = {}

    def start(self) -> ScheduleSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._on_continue)
            if raises_where_it_lands(signal.getsignal(signal.SIGINT)):
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def stop(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_continue(self, signum: int, frame: Any) -> None:
        self.continued += 1

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def check(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so state changed together (weights, optimizer, logs) stays whole.
    A second Ctrl-C does not wait."""
    if threading.current_thread() is not threading.main_thread() or not raises_where_it_lands(
        signal.getsignal(signal.SIGINT)
    ):
        yield  # not ours to manage (a worker thread, SIGINT ignored or handled by someone else)
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
