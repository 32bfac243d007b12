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
  ``dsink[h] = -sum exp(sink[h] - LSE) * Delta`` over batch and rows (per-tile sums in the
  Delta kernel, added by torch: deterministic too);
- only key blocks that can be visible are visited: below the diagonal (causal), within
  ``W - 1`` of it (window), at or after the row's ``padding_start``; so a sliding-window layer
  costs O(N * W), and no N x N tensor exists anywhere.

GQA: query head ``h`` reads key/value head ``h // (Hq / Hkv)`` in place; K and V are never
repeated in memory. This module is the device code; ``flash_ops.py`` launches it.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _program(LONGEST_FIRST: tl.constexpr):
    """(tile, batch x head) of this program.

    Heads vary fastest, so the tiles of one length run together across all heads; with
    LONGEST_FIRST (causal query tiles: the last ones see the most keys) the long tiles start
    first and the short ones fill the tail of the grid.
    """
    tile = tl.program_id(1)
    if LONGEST_FIRST:
        tile = tl.num_programs(1) - 1 - tile
    return tile, tl.program_id(0)


@triton.jit
def _load_rows(base, offs, s_n, offs_d, N):
    """A [rows, D] tile; rows past N read as 0."""
    return tl.load(base + offs[:, None] * s_n + offs_d[None, :], mask=offs[:, None] < N, other=0.0)


@triton.jit
def _row_tile(X, s_xb, s_xh, s_xn, N, H, LONGEST_FIRST: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr):
    """This program's tile of query rows: its tile index, its (batch, head), and those rows of X."""
    start_m, bh = _program(LONGEST_FIRST)
    b = bh // H
    h = bh % H
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    x = _load_rows(X + b * s_xb + h * s_xh, offs_m, s_xn, offs_d, N)
    return start_m, bh, b, h, offs_m, offs_d, x


@triton.jit
def _query_tile(Q, Pad, s_qb, s_qh, s_qn, N, H, GROUP, HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    """What the forward and dQ kernels start from: the row tile of Q, plus its KV head and its padding."""
    start_m, bh, b, h, offs_m, offs_d, q = _row_tile(Q, s_qb, s_qh, s_qn, N, H, CAUSAL, D, BLOCK_M)
    pad = tl.load(Pad + b) if HAS_PAD else start_m * 0
    return start_m, bh, b, h, h // GROUP, offs_m, offs_d, q, pad


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
        qk = tl.dot(q, k)
        qk = tl.where(_keep(offs_m, offs_n, N, pad, CAUSAL, WINDOW), qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
    else:
        k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None])
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_d[None, :])
        qk = tl.dot(q, k)
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_safe = m_new
    # The scale is applied inside one fused multiply-add (qk_scale > 0, so max commutes with it).
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(qk * qk_scale - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _fwd_kernel(Q, K, V, Sinks, Pad, O, LSE,  # noqa: E741
                s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on,
                N, N_BUCKET, H, GROUP, qk_scale,
                HAS_SINKS: tl.constexpr, HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    start_m, bh, b, h, hk, offs_m, offs_d, q, pad = _query_tile(Q, Pad, s_qb, s_qh, s_qn, N, H, GROUP, HAS_PAD,
                                                                 CAUSAL, D, BLOCK_M)  # fmt: skip
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
def _delta_kernel(O, DO, LSE, Sinks, Delta, DSinkPart, s_ob, s_oh, s_on, s_db, s_dh, s_dn, N, H,  # noqa: E741
                  HAS_SINKS: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    """Delta = rowsum(O * dO) in float32, without a float32 copy of either; and, with sinks, this
    tile's share of dsink = -sum exp(sink - LSE) * Delta (summed over tiles in a fixed order by torch)."""
    start_m, bh, b, h, offs_m, offs_d, o = _row_tile(O, s_ob, s_oh, s_on, N, H, False, D, BLOCK_M)
    do = _load_rows(DO + b * s_db + h * s_dh, offs_m, s_dn, offs_d, N)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + bh * N + offs_m, delta, mask=offs_m < N)
    if HAS_SINKS:
        lse = tl.load(LSE + bh * N + offs_m, mask=offs_m < N, other=float("inf"))
        weight = tl.exp2(tl.load(Sinks + h).to(tl.float32) * 1.4426950408889634 - lse)
        tl.store(DSinkPart + bh * tl.num_programs(1) + start_m, -tl.sum(weight * delta, 0))


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
                     s_kgs, s_kgb, s_kgh, s_kgn,
                     N, N_BUCKET, H, HKV, GROUP, qk_scale, sm_scale,
                     HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SPLIT: tl.constexpr,
                     D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """dK, dV of one key tile of one KV head, summed over the query heads of its GQA group.

    The group's heads are looped over here (no atomics: deterministic); with SPLIT > 1 they are
    shared out among SPLIT programs, each writing a float32 partial sum into DK/DV[part] for
    torch to add, which gives short sequences with few KV heads enough programs to fill the GPU.
    """
    start_n, program = _program(False)  # causal: the first key tiles have the most queries, and run first
    bhk = program // SPLIT
    part = program % SPLIT
    b = bhk // HKV
    hk = bhk % HKV
    n0 = start_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k = _load_rows(K + b * s_kb + hk * s_kh, offs_n, s_kn, offs_d, N)
    v = _load_rows(V + b * s_vb + hk * s_vh, offs_n, s_vn, offs_d, N)
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
    heads = GROUP // SPLIT
    for g in range(part * heads, part * heads + heads):
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
    out = part * s_kgs + b * s_kgb + hk * s_kgh + offs_n[:, None] * s_kgn + offs_d[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=offs_n[:, None] < N)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < N)


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
    start_m, bh, b, h, hk, offs_m, offs_d, q, pad = _query_tile(Q, Pad, s_qb, s_qh, s_qn, N, H, GROUP, HAS_PAD,
                                                                 CAUSAL, D, BLOCK_M)  # fmt: skip
    do = _load_rows(DO + b * s_db + h * s_dh, offs_m, s_dn, offs_d, N)
    lse = tl.load(LSE + bh * N + offs_m, mask=offs_m < N, other=float("inf"))
    delta = tl.load(Delta + bh * N + offs_m, mask=offs_m < N, other=0.0)
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
