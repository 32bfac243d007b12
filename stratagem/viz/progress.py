"""Progress bars for people at a terminal, and nothing for pipes and logs."""

from __future__ import annotations

import shutil
import sys
from typing import Any


def terminal_bar(total: int, desc: str, unit: str, shown: bool = True, **options: Any) -> Any:
    """A tqdm bar on stderr when stderr is a terminal (disabled otherwise), sized by ``shutil``: a terminal that
    reports 0 x 0 (a fresh pty) gets 80 x 24 instead of tqdm's empty bar."""
    from tqdm.auto import tqdm

    columns, rows = shutil.get_terminal_size()
    return tqdm(total=total, desc=desc, unit=unit, disable=not (shown and sys.stderr.isatty()), ncols=columns,
                nrows=rows, **options)  # fmt: skip
