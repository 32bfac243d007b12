"""Whether the Triton kernels can run here, and the one notice given when they cannot.

Triton is optional: without it ``attention(backend="auto")`` (and so ``attn_implementation=
"stratagem"``) runs the torch reference, and says so once per process with a
``TritonMissingWarning``; ``backend="triton"`` raises an ImportError that says how to get it.
Nothing here imports Triton at module level.
"""

from __future__ import annotations

import functools
import os
import warnings

INSTALL = "pip install 'triton>=3.8'"


class TritonMissingWarning(UserWarning):
    """Triton cannot be imported: the torch reference runs instead of the flash kernels."""


def interpreting() -> bool:
    """Triton's CPU interpreter is on (``TRITON_INTERPRET=1``): the kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_import_error() -> str | None:
    """Why ``import triton`` fails here (None: it works). Tried once per process."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def triton_available() -> bool:
    return triton_import_error() is None


_noticed = False


def notice_fallback(stacklevel: int = 3) -> None:
    """Warn, the first time only in this process, that Triton is missing and the torch reference runs."""
    global _noticed
    if _noticed:
        return
    _noticed = True
    warnings.warn(f"Triton is not installed ({triton_import_error()}), so stratagem's attention runs the torch "
                  f"reference instead of the flash kernels; for the kernels on CUDA: {INSTALL}",
                  TritonMissingWarning, stacklevel=stacklevel)  # fmt: skip


def require_triton() -> None:
    """For ``backend="triton"``: an ImportError that says what is missing and how to get it."""
    error = triton_import_error()
    if error is not None:
        raise ImportError(f"backend='triton' needs Triton, which cannot be imported here ({error}): {INSTALL}, "
                          "or use backend='auto' (the torch reference where Triton is missing)")  # fmt: skip
