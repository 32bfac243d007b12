"""Decoding attention: one new query token per row against a preallocated KV cache.

``decode_attention(q, k_cache, v_cache, last)`` gives what ``attention`` gives for the one query at
position ``last`` over ``k_cache[:, :, :last + 1]``, without slicing: ``last`` is a device
tensor, so a sampling step can be captured once in a CUDA graph and replayed as the sequence
grows (no host sync, no shape that depends on ``last``). Keys after ``last`` are never read into
the result, so the cache's unwritten tail may hold anything, NaN included.

On CUDA (fp16/bf16, head dim 64 or 128) it runs the split-K Triton kernels of ``decode_ops.py``;
elsewhere ``decode_reference``, which is capture-safe too. Triton is imported only when the
kernels run, as in ``attention.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stratagem.kernels.attention import BACKENDS
from stratagem.kernels.backend import interpreting, notice_fallback, require_triton, triton_available

_INTEGERS = (torch.int32, torch.int64)


def _check(q: Tensor, k: Tensor, v: Tensor, last: Tensor, sinks: Tensor | None, window: int | None,
           padding_start: Tensor | None, scale: float | None, backend: str) -> None:  # fmt: skip
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
    if q.ndim != 4 or q.shape[2] != 1 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)}, k_cache {tuple(k.shape)}, v_cache {tuple(v.shape)}: expected q "
                         "[B, Hq, 1, D] and k_cache, v_cache [B, Hkv, L, D] of one shape")  # fmt: skip
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k_cache {tuple(k.shape)}: batch and head dim must match and Hq "
                         "must be a multiple of Hkv")  # fmt: skip
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q {q.dtype}, k_cache {k.dtype}, v_cache {v.dtype}: expected one dtype")
    if not isinstance(last, Tensor) or last.shape not in ((), (1,)) or last.dtype not in _INTEGERS:
        raise ValueError(f"last={last!r}: expected the query's position as a 0-d (or [1]) int64 tensor on the device "
                         "(a tensor, so that a captured CUDA graph replays with the new position)")  # fmt: skip
    if last.device != q.device:
        raise ValueError(f"last is on {last.device} and q on {q.device}: the kernel reads it from q's device")
    if sinks is not None and sinks.shape != (q.shape[1],):
        raise ValueError(f"sinks {tuple(sinks.shape)}: expected one logit per query head, [{q.shape[1]}]")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window={window!r}: expected a positive int (keys with last - k < window) or None")
    if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ValueError(f"scale={scale!r}: expected a positive finite number (the default is 1/sqrt(D))")
    if padding_start is not None and (padding_start.shape != (q.shape[0],) or padding_start.dtype not in _INTEGERS):
        raise ValueError(f"padding_start {tuple(padding_start.shape)} {padding_start.dtype}: expected one integer "
                         f"start per batch row, [{q.shape[0]}]")  # fmt: skip


def decode_supported(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the Triton kernels take these inputs on this machine (else ``auto`` uses the reference)."""
    if not triton_available() or k.stride(-1) != 1 or v.stride(-1) != 1:
        return False
    if interpreting():
        return q.shape[-1] in (16, 32, 64, 128)
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in (64, 128)


def decode_reference(q: Tensor, k_cache: Tensor, v_cache: Tensor, last: Tensor, *, sinks: Tensor | None = None,
                     window: int | None = None, padding_start: Tensor | None = None,
                     scale: float | None = None) -> Tensor:  # fmt: skip
    """The torch path, in float32 over the whole cache: masked rather than sliced by ``last``, so that
    it never syncs and its shapes never change (capture-safe), and masked values too, so that a NaN
    tail cannot leak through a zero probability (0 * NaN is NaN)."""
    batch, hq, _, d = q.shape
    hkv, capacity = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    keys = torch.arange(capacity, device=q.device)
    position = last.reshape(())
    keep = (keys <= position)[None, :].expand(batch, capacity)  # [B, L]
    if window is not None:
        keep = keep & (position - keys < window)
    if padding_start is not None:
        keep = keep & (keys[None, :] >= padding_start.to(q.device).view(batch, 1))
    keep = keep[:, None, None, :]  # [B, 1, 1, L] against scores [B, Hkv, group, L]
    qf = q.float().reshape(batch, hkv, hq // hkv, d)  # GQA: a group's heads side by side, K/V not repeated
    scores = torch.einsum("bhgd,bhld->bhgl", qf, k_cache.float()) * scale
    scores = scores.masked_fill(~keep, float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, hkv, hq // hkv, 1).expand(batch, -1, -1, 1)
        scores = torch.cat([scores, sink], dim=-1)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    probs = torch.exp(scores - lse.clamp(min=torch.finfo(torch.float32).min))  # nothing visible: 0, not NaN
    values = v_cache.float().masked_fill(~keep.transpose(2, 3), 0.0)  # [B, 1, L, 1]
    out = torch.einsum("bhgl,bhld->bhgd", probs[..., :capacity], values)
    return out.reshape(batch, hq, 1, d).to(q.dtype)


def decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, last: Tensor, *, sinks: Tensor | None = None,
                     window: int | None = None, padding_start: Tensor | None = None, scale: float | None = None,
                     backend: str = "auto") -> Tensor:  # fmt: skip
    """Attention of the token at position ``last`` to keys ``padding_start[b] .. last`` of the cache.

    q [B, Hq, 1, D]; k_cache/v_cache [B, Hkv, L, D] (L the capacity; any strides but a contiguous
    last dim; Hq % Hkv == 0, K/V never repeated); ``last`` a 0-d int64 tensor on q's device, below
    L; ``sinks`` [Hq]; ``window`` W keeps keys with ``last - j < W``; ``padding_start`` [B] on q's
    device (a row with ``padding_start > last`` outputs 0). Returns [B, Hq, 1, D]. No autograd.
    """
    _check(q, k_cache, v_cache, last, sinks, window, padding_start, scale, backend)
    if backend == "triton":
        require_triton()
    elif backend == "auto" and not triton_available():
        notice_fallback(stacklevel=3)
    use_triton = backend == "triton" or (backend == "auto" and decode_supported(q, k_cache, v_cache))
    if use_triton:
        if not decode_supported(q, k_cache, v_cache):
            raise ValueError("backend='triton' takes CUDA fp16/bf16 tensors with D in (64, 128) and K/V with a "
                             "contiguous last dim (or any device under TRITON_INTERPRET=1); got "
                             f"{q.device} {q.dtype} D={q.shape[-1]}")  # fmt: skip
        from stratagem.kernels.decode_ops import decode_attention_triton

        return decode_attention_triton(q, k_cache, v_cache, last, sinks, padding_start, window, scale)
    return decode_reference(q, k_cache, v_cache, last, sinks=sinks, window=window, padding_start=padding_start,
                            scale=scale)  # fmt: skip
