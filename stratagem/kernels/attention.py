"""The public entry point: validate, then run the Triton kernels (``flash.py``) or the reference.

Triton is imported only when the kernels run, so the package works where Triton is absent: there
``backend="auto"`` runs the reference and says so once per process (``backend.notice_fallback``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stratagem.kernels.backend import interpreting, notice_fallback, require_triton, triton_available
from stratagem.kernels.reference import attention_reference

BACKENDS = ("auto", "triton", "reference")


def _check(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None, window: int | None, causal: bool,
           padding_start: Tensor | None, scale: float | None, backend: str) -> None:  # fmt: skip
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected q [B, Hq, N, D] and "
                         "k, v [B, Hkv, N, D] of one shape")  # fmt: skip
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)}: batch and head dim must match and Hq must be a "
                         "multiple of Hkv")  # fmt: skip
    if sinks is not None and sinks.shape != (q.shape[1],):
        raise ValueError(f"sinks {tuple(sinks.shape)}: expected one logit per query head, [{q.shape[1]}]")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window={window!r}: expected a positive int (keys with q - k < window) or None")
    if window is not None and not causal:
        raise ValueError("a sliding window needs causal=True (gpt-oss windows look back only)")
    if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ValueError(f"scale={scale!r}: expected a positive finite number (the default is 1/sqrt(D))")
    if padding_start is not None and padding_start.shape != (q.shape[0],):
        raise ValueError(
            f"padding_start {tuple(padding_start.shape)}: expected one start per batch row, [{q.shape[0]}]"
        )


def triton_supported(q: Tensor, k: Tensor) -> bool:
    """Whether the Triton kernels take these inputs on this machine (else ``auto`` uses the reference)."""
    if not triton_available():
        return False
    same_length = q.shape[2] == k.shape[2]
    if interpreting():
        return same_length and q.shape[-1] in (16, 32, 64, 128)
    return (same_length and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in (64, 128)
            and k.dtype == q.dtype)  # fmt: skip


def attention(q: Tensor, k: Tensor, v: Tensor, *, sinks: Tensor | None = None, window: int | None = None,
              causal: bool = True, padding_start: Tensor | None = None, scale: float | None = None,
              backend: str = "auto") -> Tensor:  # fmt: skip
    """Softmax attention with sinks, a sliding window (``q - k < window``), left padding and GQA.

    q [B, Hq, N, D], k/v [B, Hkv, N, D] (Hq % Hkv == 0; K/V are never repeated in memory);
    ``sinks`` [Hq] learned logits that join the softmax denominator only; ``padding_start``
    [B] the first real token of each left-padded row; ``scale`` defaults to 1/sqrt(D).
    Autograd gives dq, dk, dv and dsinks. Returns [B, Hq, N, D].
    """
    _check(q, k, v, sinks, window, causal, padding_start, scale, backend)
    if backend == "triton":
        require_triton()
    elif backend == "auto" and not triton_available():
        notice_fallback(stacklevel=3)  # once per process, at the caller of attention()
    use_triton = backend == "triton" or (backend == "auto" and triton_supported(q, k))
    if use_triton:
        if not triton_supported(q, k):
            raise ValueError("backend='triton' takes CUDA fp16/bf16 tensors with D in (64, 128) and Nq == Nk (or any "
                             f"device under TRITON_INTERPRET=1); got {q.device} {q.dtype} D={q.shape[-1]}")  # fmt: skip
        from stratagem.kernels.flash_ops import flash_attention

        return flash_attention(q, k, v, sinks, padding_start, window, causal, scale)
    return attention_reference(q, k, v, sinks=sinks, window=window, causal=causal, padding_start=padding_start,
                               scale=scale)  # fmt: skip
