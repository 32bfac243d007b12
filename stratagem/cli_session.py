"""How a command ends and speaks: SIGTERM raised as an interrupt, stratagem's warnings as lines of ours."""

from __future__ import annotations

import sys
from typing import Any


def our_warnings_as_lines(prefix: str) -> None:
    """stratagem's own warnings (a prompt cut, Triton missing) as ``stratagem CMD: warning: ...``, not as
    Python's ``file:line: Category: message``; other libraries' warnings are left as they are."""
    import warnings

    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:  # fmt: skip
        if category.__module__.startswith("stratagem"):
            print(f"{prefix}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the same clean-up runs."""


def terminated(signum: int, frame: Any) -> None:
    raise Terminated
