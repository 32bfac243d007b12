"""Eager torch references for the kernels: the definition the Triton kernels must equal.

``attention_reference`` is written for clarity, not speed: it materialises the N x N score
matrix, so it is the CPU fallback and the tests' oracle, never the GPU path.

The semantics (shared by the kernel):
- queries sit at the end of the keys: query i has absolute position ``i + Nk - Nq`` (prefill:
  ``Nq == Nk``; decoding one token: ``Nq == 1``);
- ``causal``: key j is visible to query i when ``j <= pos(i)``;
- ``window`` W (gpt-oss sliding layers, causal only): also ``pos(i) - j < W`` (strict);
- ``padding_start[b]``: row b is left-padded; keys before it are masked, and so are queries
  before it (a padding query attends to nothing and outputs 0);
- ``sinks[h]``: a learned logit per query head that joins the softmax denominator only;
- a row with no visible key outputs 0 (never NaN); its log-sum-exp is the sink's, or -inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def visible(nq: int, nk: int, *, causal: bool, window: int | None, padding_start: Tensor | None,
            batch: int, device: torch.device) -> Tensor:  # fmt: skip
    """Boolean [B, 1, Nq, Nk]: which key each query may attend to."""
    q = torch.arange(nq, device=device)[:, None] + (nk - nq)
    k = torch.arange(nk, device=device)[None, :]
    keep = torch.ones((nq, nk), dtype=torch.bool, device=device)
    if causal:
        keep &= k <= q
    if window is not None:
        keep &= q - k < window
    keep = keep[None, None].expand(batch, 1, nq, nk)
    if padding_start is not None:
        start = padding_start.to(device).view(batch, 1, 1, 1)
        keep = keep & (k[None, None] >= start) & (q[None, None] >= start)
    return keep


def attention_reference(q: Tensor, k: Tensor, v: Tensor, *, sinks: Tensor | None = None, window: int | None = None,
                        causal: bool = True, padding_start: Tensor | None = None, scale: float | None = None,
                        return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:  # fmt: skip
    """Softmax attention with sinks, a sliding window, left padding and GQA, computed in float32.

    q [B, Hq, Nq, D], k/v [B, Hkv, Nk, D] with Hq % Hkv == 0; returns [B, Hq, Nq, D] in q's dtype
    (and, with ``return_lse``, the natural-log log-sum-exp [B, Hq, Nq] including the sink).
    """
    batch, hq, nq, d = q.shape
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), kf) * scale
    keep = visible(nq, k.shape[2], causal=causal, window=window, padding_start=padding_start, batch=batch,
                   device=q.device)  # fmt: skip
    scores = scores.masked_fill(~keep, float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, hq, 1, 1).expand(batch, hq, nq, 1)
        scores = torch.cat([scores, sink], dim=-1)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    probs = torch.exp(scores - lse.clamp(min=torch.finfo(torch.float32).min))  # an all -inf row gives 0, not NaN
    out = torch.einsum("bhqk,bhkd->bhqd", probs[..., : kf.shape[2]], vf).to(q.dtype)
    return (out, lse.squeeze(-1)) if return_lse else out
