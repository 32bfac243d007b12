"""Flash attention, forward and backward, with attention sinks, sliding windows, left padding and GQA.

Why our own: FlashAttention 2/3 have no sink backward; gpt-oss's Triton kernel is forward
only; FlexAttention needs an unfused epilogue for sinks. The math (see ``reference.py`` for the
exact semantics, and ``../shared/ARCHITECTURE.md``):

- forward, per query block, the online softmax in the log2 domain, started from the sink:
  ``m = sink * log2(e)``, ``l = 1`` (without a sink: ``m = -inf``, ``l = 0``); ``O = acc / l``;
  the stored log-sum-exp includes the sink; a row that sees no key outputs 0;
- backward is FlashAttention-2's with that log-sum-exp: ``Delta = rowsum(O * dO)``, one
  kernel for dK/dV per key block (looping over the query heads of its GQA group, so no
  atomics: deterministic), one for dQ per query block; and
  ``dsink[h] = -sum exp(sink[h] - LSE) * Delta`` over batch and rows (a torch reduction:
  deterministic too);
- only key blocks that can be visible are visited: below the diagonal (causal), within
  ``W - 1`` of it (window), at or after the row's ``padding_start``; so a sliding-window layer
  costs O(N * W), and no N x N tensor exists anywhere.

GQA: query head ``h`` reads key/value head ``h // (Hq / Hkv)`` in place; K and V are never
repeated in memory.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _keep(offs_m, offs_n, N, pad, CAUSAL: tl.constexpr, WINDOW: tl.constexpr):
    """[M, N] visibility: in bounds, after the padding, causal, inside the window."""
    keep = (offs_m[:, None] < N) & (offs_n[None, :] < N) & (offs_n[None, :] >= pad) & (offs_m[:, None] >= pad)
    if CAUSAL:
        keep = keep & (offs_n[None, :] <= offs_m[:, None])
    if WINDOW > 0:
        keep = keep & (offs_m[:, None] - offs_n[None, :] < WINDOW)
    return keep


@triton.jit
def _key_range(start_m, N, pad, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               WINDOW: tl.constexpr):  # fmt: skip
    """The key blocks a query block can see: [lo, hi), lo a multiple of BLOCK_N."""
    lo = pad
    if WINDOW > 0:
        lo = tl.maximum(lo, start_m * BLOCK_M - WINDOW + 1)
    lo = (tl.maximum(lo, 0) // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, N)
    else:
        hi = N + start_m * 0
    return lo, hi


@triton.jit
def _interior_keys(start_m, N, pad, lo, hi, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                   WINDOW: tl.constexpr):  # fmt: skip
    """Key blocks every row of this query block sees whole: [full_lo, full_hi) needs no mask.

    Below the diagonal, at or after the padding, and (window) no further back than the block's
    last row allows; [lo, full_lo) and [full_hi, hi) are the edges, which are masked.
    """
    full_lo = pad
    if WINDOW > 0:
        full_lo = tl.maximum(full_lo, start_m * BLOCK_M + BLOCK_M - WINDOW)
    full_lo = ((tl.maximum(full_lo, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
    if CAUSAL:
        full_hi = (start_m * BLOCK_M // BLOCK_N) * BLOCK_N
    else:
        full_hi = (N // BLOCK_N) * BLOCK_N + start_m * 0
    full_lo = tl.minimum(tl.maximum(full_lo, lo), hi)
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
    return full_lo, full_hi


@triton.jit
def _fwd_step(acc, m_i, l_i, q, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad, qk_scale,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """One key block of the online softmax (log2 domain)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None], mask=offs_n[None, :] < N, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_d[None, :], mask=offs_n[:, None] < N, other=0.0)
        qk = tl.dot(q, k) * qk_scale
        qk = tl.where(_keep(offs_m, offs_n, N, pad, CAUSAL, WINDOW), qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
    else:
        k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None])
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_d[None, :])
        qk = tl.dot(q, k) * qk_scale
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = m_new
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(qk - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _fwd_kernel(Q, K, V, Sinks, Pad, O, LSE,  # noqa: E741
                s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on,
                N, N_BUCKET, H, GROUP, qk_scale,
                HAS_SINKS: tl.constexpr, HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :], mask=offs_m[:, None] < N,
                other=0.0)  # fmt: skip
    pad = tl.load(Pad + b) if HAS_PAD else start_m * 0
    if HAS_SINKS:
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + tl.load(Sinks + h).to(tl.float32) * 1.4426950408889634
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0
    else:
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    lo, hi = _key_range(start_m, N, pad, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    full_lo, full_hi = _interior_keys(start_m, N, pad, lo, hi, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    for start_n in range(lo, full_lo, BLOCK_N):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad,
                                  qk_scale, True, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    for start_n in range(full_lo, full_hi, BLOCK_N):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad,
                                  qk_scale, False, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    for start_n in range(full_hi, hi, BLOCK_N):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad,
                                  qk_scale, True, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    empty = (l_i == 0.0) | (offs_m < pad)  # padding queries attend to nothing
    l_safe = tl.where(empty, 1.0, l_i)
    out = tl.where(offs_m[:, None] < pad, 0.0, acc / l_safe[:, None])
    tl.store(O + b * s_ob + h * s_oh + offs_m[:, None] * s_on + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=offs_m[:, None] < N)  # fmt: skip
    # log2-domain LSE including the sink; +inf for a row with nothing at all, so that backward's p = 0 there.
    tl.store(LSE + bh * N + offs_m, tl.where(empty, float("inf"), m_i + tl.log2(l_safe)), mask=offs_m < N)


@triton.jit
def _delta_kernel(O, DO, Delta, s_ob, s_oh, s_on, s_db, s_dh, s_dn, N, H,  # noqa: E741
                  D: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    """Delta = rowsum(O * dO) in float32, without a float32 copy of either."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    rows = offs_m[:, None] < N
    o = tl.load(O + b * s_ob + h * s_oh + offs_m[:, None] * s_on + offs_d[None, :], mask=rows, other=0.0)
    do = tl.load(DO + b * s_db + h * s_dh + offs_m[:, None] * s_dn + offs_d[None, :], mask=rows, other=0.0)
    tl.store(Delta + bh * N + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=offs_m < N)


@triton.jit
def _dkdv_step(dk, dv, k, v, q_base, do_base, LSE, Delta, row_base, s_qn, s_dn, start_m, offs_n, offs_d, N, pad,
               qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
               BLOCK_M: tl.constexpr):  # fmt: skip
    """One query block's contribution to a key block's dK and dV (everything transposed: keys are rows)."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    if MASKED:
        q_t = tl.load(q_base + offs_m[None, :] * s_qn + offs_d[:, None], mask=offs_m[None, :] < N, other=0.0)
        do = tl.load(do_base + offs_m[:, None] * s_dn + offs_d[None, :], mask=offs_m[:, None] < N, other=0.0)
        lse = tl.load(LSE + row_base + offs_m, mask=offs_m < N, other=float("inf"))
        delta = tl.load(Delta + row_base + offs_m, mask=offs_m < N, other=0.0)
        keep_t = tl.trans(_keep(offs_m, offs_n, N, pad, CAUSAL, WINDOW))
        p_t = tl.where(keep_t, tl.exp2(tl.dot(k, q_t) * qk_scale - lse[None, :]), 0.0)
    else:
        q_t = tl.load(q_base + offs_m[None, :] * s_qn + offs_d[:, None])
        do = tl.load(do_base + offs_m[:, None] * s_dn + offs_d[None, :])
        lse = tl.load(LSE + row_base + offs_m)
        delta = tl.load(Delta + row_base + offs_m)
        p_t = tl.exp2(tl.dot(k, q_t) * qk_scale - lse[None, :])
    dv += tl.dot(p_t.to(do.dtype), do)
    ds_t = p_t * (tl.dot(v, tl.trans(do)) - delta[None, :])
    dk += tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t))
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, Pad, DO, LSE, Delta, DK, DV,
                     s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_db, s_dh, s_dn,
                     s_kgb, s_kgh, s_kgn,
                     N, N_BUCKET, H, HKV, GROUP, qk_scale, sm_scale,
                     HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                     D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    start_n = tl.program_id(0)
    bhk = tl.program_id(1)  # one KV head, looping over the query heads of its group: no atomics
    b = bhk // HKV
    hk = bhk % HKV
    n0 = start_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k = tl.load(K + b * s_kb + hk * s_kh + offs_n[:, None] * s_kn + offs_d[None, :], mask=offs_n[:, None] < N,
                other=0.0)  # fmt: skip
    v = tl.load(V + b * s_vb + hk * s_vh + offs_n[:, None] * s_vn + offs_d[None, :], mask=offs_n[:, None] < N,
                other=0.0)  # fmt: skip
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    pad = tl.load(Pad + b) if HAS_PAD else start_n * 0
    # The query blocks that can see this key block: [lo, hi); of those, [full_lo, full_hi) see all of it.
    lo = pad
    if CAUSAL:
        lo = tl.maximum(lo, n0)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = N + start_n * 0
    if WINDOW > 0:
        hi = tl.minimum(hi, n0 + BLOCK_N + WINDOW - 1)
    if CAUSAL:
        full_lo = ((n0 + BLOCK_N - 1 + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    else:
        full_lo = ((pad + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    full_hi = (N // BLOCK_M) * BLOCK_M + start_n * 0
    if WINDOW > 0:
        full_hi = tl.minimum(full_hi, ((n0 + WINDOW) // BLOCK_M) * BLOCK_M)
    if (n0 < pad) | (n0 + BLOCK_N > N):  # a key block with padding or past the end: mask all of it
        full_lo = hi
    full_lo = tl.minimum(tl.maximum(full_lo, lo), hi)
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        q_base = Q + b * s_qb + h * s_qh
        do_base = DO + b * s_db + h * s_dh
        row_base = (b * H + h) * N
        for start_m in range(lo, full_lo, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_base, do_base, LSE, Delta, row_base, s_qn, s_dn, start_m, offs_n,
                                offs_d, N, pad, qk_scale, True, CAUSAL, WINDOW, BLOCK_M)  # fmt: skip
        for start_m in range(full_lo, full_hi, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_base, do_base, LSE, Delta, row_base, s_qn, s_dn, start_m, offs_n,
                                offs_d, N, pad, qk_scale, False, CAUSAL, WINDOW, BLOCK_M)  # fmt: skip
        for start_m in range(full_hi, hi, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_base, do_base, LSE, Delta, row_base, s_qn, s_dn, start_m, offs_n,
                                offs_d, N, pad, qk_scale, True, CAUSAL, WINDOW, BLOCK_M)  # fmt: skip
    dk = dk * sm_scale
    tl.store(DK + b * s_kgb + hk * s_kgh + offs_n[:, None] * s_kgn + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=offs_n[:, None] < N)  # fmt: skip
    tl.store(DV + b * s_kgb + hk * s_kgh + offs_n[:, None] * s_kgn + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=offs_n[:, None] < N)  # fmt: skip


@triton.jit
def _dq_step(dq, q, do, lse, delta, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad, qk_scale,
             MASKED: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k_t = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None], mask=offs_n[None, :] < N, other=0.0)
        v_t = tl.load(v_base + offs_n[None, :] * s_vn + offs_d[:, None], mask=offs_n[None, :] < N, other=0.0)
        keep = _keep(offs_m, offs_n, N, pad, CAUSAL, WINDOW)
        p = tl.where(keep, tl.exp2(tl.dot(q, k_t) * qk_scale - lse[:, None]), 0.0)
    else:
        k_t = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None])
        v_t = tl.load(v_base + offs_n[None, :] * s_vn + offs_d[:, None])
        p = tl.exp2(tl.dot(q, k_t) * qk_scale - lse[:, None])
    ds = p * (tl.dot(do, v_t) - delta[:, None])
    dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t))
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, Pad, DO, LSE, Delta, DQ,
                   s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_db, s_dh, s_dn, s_gb, s_gh, s_gn,
                   N, N_BUCKET, H, GROUP, qk_scale, sm_scale,
                   HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                   D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :], mask=offs_m[:, None] < N,
                other=0.0)  # fmt: skip
    do = tl.load(DO + b * s_db + h * s_dh + offs_m[:, None] * s_dn + offs_d[None, :], mask=offs_m[:, None] < N,
                 other=0.0)  # fmt: skip
    lse = tl.load(LSE + bh * N + offs_m, mask=offs_m < N, other=float("inf"))
    delta = tl.load(Delta + bh * N + offs_m, mask=offs_m < N, other=0.0)
    pad = tl.load(Pad + b) if HAS_PAD else start_m * 0
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    lo, hi = _key_range(start_m, N, pad, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    full_lo, full_hi = _interior_keys(start_m, N, pad, lo, hi, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    for start_n in range(lo, full_lo, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad, qk_scale,
                      True, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    for start_n in range(full_lo, full_hi, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad, qk_scale,
                      False, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    for start_n in range(full_hi, hi, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, v_base, s_kn, s_vn, start_n, offs_m, offs_d, N, pad, qk_scale,
                      True, CAUSAL, WINDOW, BLOCK_N)  # fmt: skip
    dq = dq * sm_scale
    tl.store(DQ + b * s_gb + h * s_gh + offs_m[:, None] * s_gn + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=offs_m[:, None] < N)  # fmt: skip


def _alloc(shape: tuple[int, ...] | torch.Size, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Every buffer a kernel writes; the tests fill these with NaN first, so a missed element shows."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}  # small: several blocks a row


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in shapes]


# N_BUCKET (the next power of two of N), not N: a learner's batches change length every step, and
# retuning for each length would cost more than it saves.
_KEY = ["N_BUCKET", "GROUP", "D", "CAUSAL", "WINDOW", "HAS_PAD"]


def _tuned(kernel: Any, shapes: list[tuple[int, int, int, int]]) -> Any:
    """On a GPU, autotuned over a few tile shapes (per shape, mask and GQA ratio); interpreted: fixed small tiles."""
    return kernel if interpreting() else triton.autotune(configs=_configs(shapes), key=_KEY)(kernel)


FWD = _tuned(_fwd_kernel, [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 4), (128, 32, 4, 4)])
DKDV = _tuned(_bwd_dkdv_kernel, [(32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (16, 128, 4, 3)])
DQ = _tuned(_bwd_dq_kernel, [(128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)])


def _launch(kernel: Any, rows: str, n: int, programs: int, *args: Any, **meta: Any) -> None:
    """Grid: one program per ``rows`` tile (BLOCK_M or BLOCK_N) of the sequence, times ``programs``."""
    if interpreting():
        kernel[(triton.cdiv(n, INTERPRETER_BLOCKS[rows]), programs)](*args, **meta, **INTERPRETER_BLOCKS)
    else:
        kernel[lambda m: (triton.cdiv(n, m[rows]), programs)](*args, **meta)


def _forward(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None, pad: Tensor | None, window: int,
             causal: bool, scale: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    batch, hq, n, d = q.shape
    out = _alloc(q.shape, q)
    lse = _alloc((batch, hq, n), q, torch.float32)
    _launch(FWD, "BLOCK_M", n, batch * hq, q, k, v, sinks if sinks is not None else q,
            pad if pad is not None else q, out, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            n, triton.next_power_of_2(n), hq, hq // k.shape[1], scale * LOG2E,
            HAS_SINKS=sinks is not None, HAS_PAD=pad is not None, CAUSAL=causal, WINDOW=window, D=d)  # fmt: skip
    return out, lse


def _backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None, pad: Tensor | None,
              out: Tensor, lse: Tensor, window: int, causal: bool,
              scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:  # fmt: skip
    batch, hq, n, d = q.shape
    hkv = k.shape[1]
    do = do if do.stride(-1) == 1 else do.contiguous()
    delta = _alloc((batch, hq, n), q, torch.float32)
    _delta_kernel[(triton.cdiv(n, 64), batch * hq)](out, do, delta, *out.stride()[:3], *do.stride()[:3], n, hq, D=d,
                                                    BLOCK_M=64)  # fmt: skip
    dq = _alloc(q.shape, q)
    dk = _alloc(k.shape, k)  # dk and dv share one (contiguous) layout
    dv = _alloc(v.shape, v)
    pad_arg = pad if pad is not None else q
    common = dict(HAS_PAD=pad is not None, CAUSAL=causal, WINDOW=window, D=d)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    _launch(DKDV, "BLOCK_N", n, batch * hkv, q, k, v, pad_arg, do, lse, delta, dk, dv, *strides, *dk.stride()[:3],
            n, triton.next_power_of_2(n), hq, hkv, hq // hkv, scale * LOG2E, scale, **common)  # fmt: skip
    _launch(DQ, "BLOCK_M", n, batch * hq, q, k, v, pad_arg, do, lse, delta, dq, *strides, *dq.stride()[:3],
            n, triton.next_power_of_2(n), hq, hq // hkv, scale * LOG2E, scale, **common)  # fmt: skip
    dsinks = None
    if sinks is not None:  # d LSE / d sink = exp(sink - LSE); a torch reduction, so deterministic
        weight = torch.exp2(sinks.float().view(1, hq, 1) * LOG2E - lse)
        dsinks = (-(weight * delta).sum(dim=(0, 2))).to(sinks.dtype)
    return dq, dk, dv, dsinks


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sinks, pad, window, causal, scale):  # type: ignore[override]
        out, lse = _forward(q, k, v, sinks, pad, window, causal, scale)
        ctx.save_for_backward(q, k, v, sinks, pad, out, lse)
        ctx.window, ctx.causal, ctx.scale = window, causal, scale
        return out

    @staticmethod
    def backward(ctx, do):  # type: ignore[override]
        q, k, v, sinks, pad, out, lse = ctx.saved_tensors
        dq, dk, dv, dsinks = _backward(do, q, k, v, sinks, pad, out, lse, ctx.window, ctx.causal, ctx.scale)
        return dq, dk, dv, dsinks, None, None, None, None


def flash_attention(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None, padding_start: Tensor | None,
                    window: int | None, causal: bool, scale: float | None) -> Tensor:  # fmt: skip
    """The Triton path; ``kernels.attention`` validates and dispatches here."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    pad = padding_start.to(device=q.device, dtype=torch.int32).contiguous() if padding_start is not None else None
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _FlashAttention.apply(q, k, v, sinks, pad, int(window or 0), bool(causal), scale)
