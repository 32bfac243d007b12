"""Python-level classification in a confined process: audit hooks and plain-data replies. Never the boundary.

The kernel confines (``confine.py``). What this module adds is *knowing*: a strategy program
that raises a forbidden audit event is reported to the parent at that moment and ends, so it is
scored as a cheat whatever it would have done next; a code cell gets a clear PermissionError
instead of a bare EACCES or SIGSYS; and what goes back to the parent is JSON that the parent can
check without running any of the program's code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import orjson

FORBIDDEN_EXIT = 97  # a strategy worker whose program raised a forbidden event exits with this, after saying so
FORBIDDEN_PREFIXES = (
    "open", "os.", "subprocess.", "socket.", "ctypes.", "import", "sys.", "code.", "function.", "compile",
    "exec", "marshal.", "pickle.", "shutil.", "signal.", "resource.", "builtins.input", "urllib.", "http.",
    "ftplib.", "smtplib.", "sqlite3.", "glob.", "tempfile.", "gc.", "mmap.", "_posixsubprocess", "object.",
    "cpython.", "fcntl.", "pty.", "syslog.", "winreg.", "msvcrt.",
)  # fmt: skip
# Events an allowed library raises for its own bookkeeping while serving the program (typing's
# ``TypeVar``/``List[int]`` read the caller's module name through ``sys._getframe``; ``overload``
# reads ``__code__``): forbidden when the program's own frame raises them (a format template that
# reads ``__code__``), not when a library frame does, since what it reads never reaches the program.
LIBRARY_BOOKKEEPING = frozenset({"sys._getframe", "sys._getframemodulename", "object.__getattr__"})


def watch_program(namespace: dict[str, Any], report: Callable[[str], None], exempt: Iterable[str] = ()) -> None:
    """For the rest of this process's life: a forbidden event raised while the program's code is on the
    stack is reported (``report`` writes it to the parent at once) and ends the process. The events of
    ``LIBRARY_BOOKKEEPING`` count only when raised by the program's own frame.

    The program's frames are those whose globals are ``namespace``: finalizers, generator
    ``finally`` blocks and callbacks count as the program wherever they run. Our own code between
    calls (the game's step, lazy imports of the environment's libraries) is not the program's. The
    hook looks up no global and is referenced only by the interpreter's hook list, so code that
    reaches any object of this process still cannot find, disarm or change it.
    """
    forbidden, allowed, frame_of, busy = FORBIDDEN_PREFIXES, frozenset(exempt), sys._getframe, [False]
    bookkeeping = LIBRARY_BOOKKEEPING
    leave = os._exit

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0] or not event.startswith(forbidden) or event in allowed:
            return
        busy[0] = True  # sys._getframe below raises an event of its own
        try:
            frame = frame_of(1)  # the frame that raised it
            if event in bookkeeping and frame.f_globals is not namespace:
                return
            while frame is not None and frame.f_globals is not namespace:
                frame = frame.f_back
        finally:
            busy[0] = False
        if frame is not None:
            try:
                report(event)
            finally:  # whatever the report met (a module the program rewired), the process ends here
                leave(FORBIDDEN_EXIT)

    sys.addaudithook(hook)


def lock_down(exempt: Iterable[str] = ()) -> None:
    """Refuse every forbidden event but ``exempt`` for the rest of this process's life (code cells).

    Cells are plain Python with every builtin, so every frame is untrusted: the refusal (a
    PermissionError the cell sees) fails fast with a clear error, where the kernel would otherwise
    answer EACCES or end the process.
    """
    forbidden, allowed, error = FORBIDDEN_PREFIXES, frozenset(exempt), PermissionError

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(forbidden) and event not in allowed:
            raise error(f"forbidden in the sandbox: {event}")

    sys.addaudithook(hook)


MAX_VALUE_BYTES = 16 * 2**20


def encode_value(value: Any, **fields: Any) -> bytes:
    """The reply ``{"t": "value", **fields, "v": value}``, if ``value`` is JSON data of exact builtin types.

    orjson walks the value in C without calling anything of the program's: a subclass
    (``collections.Counter``), a lazy object (a generator, ``map``) or an int past 64 bits is
    refused with ValueError. A NaN or an infinity becomes null, which no environment accepts as a move.
    """
    try:
        payload = orjson.dumps({"t": "value", **fields, "v": value}, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"the strategy did not return plain data ({exc}); return str, int, float, bool, None, "
                         "or lists, tuples and dicts of them") from None  # fmt: skip
    if len(payload) > MAX_VALUE_BYTES:
        raise ValueError(f"the returned value is larger than {MAX_VALUE_BYTES // 2**20} MiB as JSON")
    return payload
