"""Any text as an element of a Gymnasium ``Text`` space (for environments' Gymnasium hooks): printable ASCII.

A ``Text`` space lists the characters it holds, so it cannot hold "any str": a program's
output, a traceback or an OpenSpiel position (bridge prints its suits as ``♠♥♦♣``) may contain
any character. Rather than a charset of all of Unicode, text is escaped the way Python escapes
it (``\\u2660``, ``\\x1b``): still readable, and always inside the space.
"""

from __future__ import annotations

import string

from gymnasium import spaces

TEXT_CHARSET = string.printable  # the characters of every Text space here, escapes included

ESCAPE_WIDTH = 10  # the longest escape of one character: \U0001f600
# ASCII control characters outside TEXT_CHARSET (which keeps tab, newline, CR, VT and FF), as \xNN.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), 127] if chr(code) not in TEXT_CHARSET}


def text_space(max_length: int) -> spaces.Text:
    """The space ``printable`` text lives in; "" included (Gymnasium's default minimum is 1)."""
    return spaces.Text(min_length=0, max_length=max_length, charset=TEXT_CHARSET)


def printable(text: str, max_length: int) -> str:
    """``text`` with every character outside ``TEXT_CHARSET`` backslash-escaped, cut to ``max_length``.

    Size a space ``ESCAPE_WIDTH`` times the longest raw text for the cut never to happen.
    """
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_CONTROLS)[:max_length]
