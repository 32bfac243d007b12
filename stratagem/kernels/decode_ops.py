"""Split-K decode attention (flash-decoding): one query token per row against a preallocated KV cache.

A decoding step has one query per (row, head), so the flash kernel's grid (query tiles x heads)
would be a handful of programs, each walking the whole cache alone. Here the visible keys are
shared out among SPLITS programs per KV head, each leaving a partial softmax (its running max
``m``, sum ``l`` and unnormalised output ``acc``, log2 domain); a second kernel combines them
with the sink. Each program serves every query head of its GQA group, so a K/V block is read once
per group, padded up to 16 rows for ``tl.dot``.

The step is meant to be captured in a CUDA graph and replayed as the sequence grows, so the
query's position ``last`` is read from device memory: the grid and SPLITS depend only on shapes
(and the GPU), the key range each program visits is computed inside the kernel, and nothing
here waits on the GPU. Keys after ``last`` may be garbage (NaN) and are never loaded.
``decode.py`` validates and dispatches here.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from stratagem.kernels.backend import interpreting
from stratagem.kernels.flash import LOG2E
from stratagem.kernels.flash_ops import _alloc, _multiprocessors


@triton.jit
def _split_kernel(Q, K, V, Last, Pad, PartM, PartL, PartAcc,
                  s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
                  HQ, HKV, GROUP, CAPACITY, qk_scale,
                  HAS_PAD: tl.constexpr, WINDOW: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr,
                  BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """One (row, KV head, split): the online softmax of its group's query heads over its share of the keys."""
    bhk = tl.program_id(0)
    split = tl.program_id(1)
    b = bhk // HKV
    hk = bhk % HKV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    heads = hk * GROUP + offs_g
    q = tl.load(Q + b * s_qb + heads[:, None] * s_qh + offs_d[None, :], mask=offs_g[:, None] < GROUP, other=0.0)

    # The visible keys [lo, hi) of this row, from the position in memory; hi is clamped to the cache.
    last = tl.load(Last)
    hi = tl.minimum(last + 1, CAPACITY)
    lo = tl.load(Pad + b) if HAS_PAD else last * 0
    if WINDOW > 0:
        lo = tl.maximum(lo, last - WINDOW + 1)
    lo = tl.maximum(lo, 0)
    # Their blocks (aligned to BLOCK_N), shared out evenly: early in a sequence the late splits get none.
    first = (lo // BLOCK_N) * BLOCK_N
    blocks = tl.where(lo < hi, (hi - first + BLOCK_N - 1) // BLOCK_N, 0)
    per_split = (blocks + SPLITS - 1) // SPLITS
    start = first + split * per_split * BLOCK_N
    end = tl.minimum(start + per_split * BLOCK_N, hi)

    m_i = tl.zeros([BLOCK_G], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, D], dtype=tl.float32)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = (offs_n >= lo) & (offs_n < hi)  # masked loads: invisible keys (NaN tails) are never read
        k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None], mask=keep[None, :], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_d[None, :], mask=keep[:, None], other=0.0)
        qk = tl.where(keep[None, :], tl.dot(q, k) * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet in this split
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    # An empty split leaves m = -inf, l = 0, acc = 0, which the reduction weighs as nothing.
    part = (b * HQ + heads) * SPLITS + split
    rows = offs_g < GROUP
    tl.store(PartM + part, m_i, mask=rows)
    tl.store(PartL + part, l_i, mask=rows)
    tl.store(PartAcc + part[:, None] * D + offs_d[None, :], acc, mask=rows[:, None])


@triton.jit
def _reduce_kernel(PartM, PartL, PartAcc, Sinks, Out, s_ob, s_oh, HQ,
                   HAS_SINKS: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr,
                   BLOCK_S: tl.constexpr):  # fmt: skip
    """One (row, query head): rescale the partials to a common max, add the sink to the denominator."""
    bh = tl.program_id(0)
    b = bh // HQ
    h = bh % HQ
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    part = bh * SPLITS + offs_s
    m = tl.load(PartM + part, mask=offs_s < SPLITS, other=float("-inf"))
    l_s = tl.load(PartL + part, mask=offs_s < SPLITS, other=0.0)
    acc = tl.load(PartAcc + part[:, None] * D + offs_d[None, :], mask=offs_s[:, None] < SPLITS, other=0.0)
    m_max = tl.max(m, 0)
    if HAS_SINKS:
        sink = tl.load(Sinks + h).to(tl.float32) * 1.4426950408889634
        m_max = tl.maximum(m_max, sink)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)  # no key and no sink: every weight is 0
    weight = tl.exp2(m - m_safe)
    total = tl.sum(l_s * weight, 0)
    if HAS_SINKS:
        total += tl.exp2(sink - m_safe)
    out = tl.sum(acc * weight[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(Out + b * s_ob + h * s_oh + offs_d, out.to(Out.dtype.element_ty))


# Fixed tiles, no autotuning: the autotuner times candidates on first use, which a CUDA graph
# capture would record, and SPLITS is chosen from the block size.
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 3
INTERPRETER_BLOCK_N = 16  # small under the interpreter, so that the tests' short caches span several blocks
INTERPRETER_SMS = 4  # likewise few, so that their few (row, KV head) pairs still split
PROGRAMS_PER_SM = 2  # split until (row, KV head, split) programs are about this many per multiprocessor
MIN_BLOCKS_PER_SPLIT = 4  # on a GPU; a split's fixed costs (its partial, the reduction) want a few blocks
MAX_SPLITS = 64
FORCE_SPLITS: int | None = None  # tests set this to pin the split count


def _splits(batch: int, hkv: int, capacity: int, device: torch.device) -> int:
    """How many programs share one (row, KV head): from shapes and the GPU only, never from ``last``.

    A power of two, doubled while the grid is short of PROGRAMS_PER_SM per multiprocessor and a
    full cache still gives each split MIN_BLOCKS_PER_SPLIT blocks (fewer early in the sequence:
    the visible keys are shared out inside the kernel).
    """
    if FORCE_SPLITS is not None:
        return FORCE_SPLITS
    if interpreting():
        sms, block, min_blocks = INTERPRETER_SMS, INTERPRETER_BLOCK_N, 1
    else:
        sms, block, min_blocks = _multiprocessors(device.index or 0), BLOCK_N, MIN_BLOCKS_PER_SPLIT
    blocks = triton.cdiv(capacity, block)
    splits = 1
    while (splits < MAX_SPLITS and batch * hkv * splits < PROGRAMS_PER_SM * sms
           and blocks >= 2 * splits * min_blocks):  # fmt: skip
        splits *= 2
    return splits


def decode_attention_triton(q: Tensor, k_cache: Tensor, v_cache: Tensor, last: Tensor, sinks: Tensor | None,
                            padding_start: Tensor | None, window: int | None,
                            scale: float | None) -> Tensor:  # fmt: skip
    """The Triton path; ``decode.decode_attention`` validates and dispatches here."""
    batch, hq, _, d = q.shape
    hkv, capacity = k_cache.shape[1], k_cache.shape[2]
    group = hq // hkv
    q = q if q.stride(-1) == 1 else q.contiguous()
    pad = padding_start.to(q.device).contiguous() if padding_start is not None else None
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    splits = _splits(batch, hkv, capacity, q.device)
    block_n = INTERPRETER_BLOCK_N if interpreting() else BLOCK_N
    launch = {} if interpreting() else {"num_warps": NUM_WARPS, "num_stages": NUM_STAGES}
    m = _alloc((batch, hq, splits), q, torch.float32)
    l_s = _alloc((batch, hq, splits), q, torch.float32)
    acc = _alloc((batch, hq, splits, d), q, torch.float32)
    _split_kernel[(batch * hkv, splits)](
        q, k_cache, v_cache, last, pad if pad is not None else last, m, l_s, acc,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
        hq, hkv, group, capacity, scale * LOG2E,
        HAS_PAD=pad is not None, WINDOW=int(window or 0), SPLITS=splits, D=d,
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n, **launch)  # fmt: skip
    out = _alloc((batch, hq, 1, d), q)
    _reduce_kernel[(batch * hq,)](m, l_s, acc, sinks if sinks is not None else m, out, out.stride(0), out.stride(1),
                                  hq, HAS_SINKS=sinks is not None, SPLITS=splits, D=d,
                                  BLOCK_S=triton.next_power_of_2(splits))  # fmt: skip
    return out
