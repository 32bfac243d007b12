"""Launching the Triton kernels of ``flash.py``: tiles, autotuning, buffers, and the autograd Function."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import triton
from torch import Tensor

from stratagem.kernels.backend import interpreting
from stratagem.kernels.flash import LOG2E, _bwd_dkdv_kernel, _bwd_dq_kernel, _delta_kernel, _fwd_kernel


def _alloc(shape: tuple[int, ...] | torch.Size, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Every buffer a kernel writes; the tests fill these with NaN first, so a missed element shows."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}  # small: several blocks a row


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in shapes]


# N_BUCKET (the next power of two of N), not N: a learner's batches change length every step, and
# retuning for each length would cost more than it saves.
_KEY = ["N_BUCKET", "GROUP", "D", "CAUSAL", "WINDOW", "HAS_PAD"]


def _tuned(kernel: Any, shapes: list[tuple[int, int, int, int]], key: tuple[str, ...] = ()) -> Any:
    """On a GPU, autotuned over a few tile shapes (per shape, mask and GQA ratio); interpreted: fixed small tiles."""
    return kernel if interpreting() else triton.autotune(configs=_configs(shapes), key=_KEY + list(key))(kernel)


# Tile shapes the autotuner tries, as (BLOCK_M, BLOCK_N, num_warps, num_stages).
FWD_TILES = [(128, 64, 4, 3), (128, 64, 4, 4), (128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 4), (128, 32, 4, 4)]
DKDV_TILES = [(32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (16, 128, 4, 3), (64, 32, 4, 3),
              (32, 32, 4, 3)]  # fmt: skip
DQ_TILES = [(128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)]
DELTA_BLOCK_M = 64
FWD = _tuned(_fwd_kernel, FWD_TILES)
DKDV = _tuned(_bwd_dkdv_kernel, DKDV_TILES, key=("SPLIT",))
DQ = _tuned(_bwd_dq_kernel, DQ_TILES)


PROGRAMS_PER_SM = 8  # dK/dV: split a GQA group until there are about this many programs per multiprocessor
INTERPRETER_SMS = 2  # small, so that the CPU tests' tiny shapes split too


@functools.cache
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _group_split(batch: int, hkv: int, group: int, n: int, device: torch.device) -> int:
    """How many programs share one GQA group's dK/dV (a divisor of ``group``; 1 needs no extra memory).

    One program per (key tile, KV head) is few for short sequences with few KV heads (gpt-oss at
    4k: 512 programs of 8 heads each on 132 SMs), and each walks its heads serially. Splitting
    costs float32 partials of ``split`` x the size of dK and dV, so it stops at enough programs.
    """
    sms = INTERPRETER_SMS if interpreting() else _multiprocessors(device.index or 0)
    programs = batch * hkv * triton.cdiv(n, 64)
    split = 1
    while split < group and group % (split * 2) == 0 and programs * split < PROGRAMS_PER_SM * sms:
        split *= 2
    return split


def _launch(kernel: Any, rows: str, n: int, programs: int, *args: Any, **meta: Any) -> None:
    """Grid: ``programs`` (batch x heads, fastest) times one program per ``rows`` tile (BLOCK_M or BLOCK_N)."""
    if interpreting():
        kernel[(programs, triton.cdiv(n, INTERPRETER_BLOCKS[rows]))](*args, **meta, **INTERPRETER_BLOCKS)
    else:
        kernel[lambda m: (programs, triton.cdiv(n, m[rows]))](*args, **meta)


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
    tiles = triton.cdiv(n, 64)
    dsink_part = _alloc((batch, hq, tiles), q, torch.float32) if sinks is not None else delta
    _delta_kernel[(batch * hq, tiles)](out, do, lse, sinks if sinks is not None else q, delta, dsink_part,
                                       *out.stride()[:3], *do.stride()[:3], n, hq, HAS_SINKS=sinks is not None, D=d,
                                       BLOCK_M=DELTA_BLOCK_M)  # fmt: skip
    dq = _alloc(q.shape, q)
    split = _group_split(batch, hkv, hq // hkv, n, q.device)
    # dk and dv share one contiguous layout; split: float32 partial sums [split, B, Hkv, N, D], added below
    dk = _alloc((split, *k.shape), k, torch.float32 if split > 1 else None)
    dv = _alloc((split, *v.shape), v, torch.float32 if split > 1 else None)
    pad_arg = pad if pad is not None else q
    common = dict(HAS_PAD=pad is not None, CAUSAL=causal, WINDOW=window, D=d)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    _launch(DKDV, "BLOCK_N", n, batch * hkv * split, q, k, v, pad_arg, do, lse, delta, dk, dv, *strides,
            *dk.stride()[:4], n, triton.next_power_of_2(n), hq, hkv, hq // hkv, scale * LOG2E, scale, SPLIT=split,
            **common)  # fmt: skip
    dk, dv = (t[0] if split == 1 else t.sum(0).to(k.dtype) for t in (dk, dv))
    _launch(DQ, "BLOCK_M", n, batch * hq, q, k, v, pad_arg, do, lse, delta, dq, *strides, *dq.stride()[:3],
            n, triton.next_power_of_2(n), hq, hq // hkv, scale * LOG2E, scale, **common)  # fmt: skip
    # d LSE / d sink = exp(sink - LSE): per-tile partial sums from the Delta kernel, then a torch sum (deterministic).
    dsinks = dsink_part.sum(dim=(0, 2)).to(sinks.dtype) if sinks is not None else None
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
