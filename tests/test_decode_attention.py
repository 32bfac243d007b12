"""Decode attention (one query per row against a KV cache): the split-K kernels and the torch path.

Both must equal ``attention_reference`` on the cache sliced at ``last``, for GQA ratios 1/2/4,
sinks or none, windows (1, shorter and longer than what is visible), left padding (a row the
window cuts short, a row padded past ``last``: output 0), ``last`` at 0, mid-cache and the end,
caches that are strided views of a bigger NaN-filled buffer (so a read past ``last`` or outside
the view shows as NaN), and one split or several (more splits than key blocks leaves some
empty). Under TRITON_INTERPRET=1 the kernels run on CPU in fp32/fp16; on a GPU the same tests
run in fp16/bf16 with head dims 64/128, plus a CUDA graph replayed as ``last`` advances.
"""

from __future__ import annotations

import os

import pytest
import torch

from stratagem.kernels import decode_attention, decode_reference
from stratagem.kernels.backend import triton_available
from stratagem.kernels.reference import attention_reference

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
kernels = pytest.mark.skipif(not triton_available() or not (INTERPRETED or DEVICE == "cuda"),
                             reason="the kernel tests need Triton and a GPU or TRITON_INTERPRET=1")  # fmt: skip
KERNEL_DTYPES = [torch.float32, torch.float16] if INTERPRETED else [torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}

# (case name, B, Hq, Hkv, L, D, window, sinks, padding_start, the positions `last` takes)
CASES = [
    ("MHA", 2, 2, 2, 40, 16, None, False, None, (0, 17, 39)),
    ("GQA 2, sinks", 2, 4, 2, 80, 32, None, True, None, (0, 50, 79)),
    ("GQA 4, window 5, padding", 3, 8, 2, 64, 16, 5, True, (0, 7, 30), (3, 33, 63)),
    ("GQA 4, one KV head, window > visible", 2, 4, 1, 48, 32, 100, False, (5, 47), (4, 20, 47)),
    ("window 1, a row all padding", 2, 4, 2, 24, 16, 1, True, (0, 30), (0, 23)),
]


def _head_dim(d: int) -> int:
    return d if DEVICE == "cpu" else 4 * d  # the GPU kernels take D 64 and 128


def _inputs(case: tuple, dtype: torch.dtype):
    """q, the cache's true contents [B, Hkv, L, D], sinks and padding; fp16 q in transformers' strided layout."""
    _, b, hq, hkv, length, d, _, sinks, padding, _ = case
    d = _head_dim(d)
    gen = torch.Generator().manual_seed(len(case[0]))
    q = torch.randn(b, 1, hq, d, generator=gen).to(dtype).transpose(1, 2).to(DEVICE)
    k, v = (torch.randn(b, hkv, length, d, generator=gen).to(dtype).to(DEVICE) for _ in range(2))
    s = (1.0 + torch.randn(hq, generator=gen)).to(dtype).to(DEVICE) if sinks else None
    pad = torch.tensor(padding, device=DEVICE) if padding is not None else None
    return q, k, v, s, pad


def _cache(x: torch.Tensor, last: int, heads_outer: bool) -> torch.Tensor:
    """``x`` up to ``last``, as a strided view of a bigger buffer that is NaN everywhere else."""
    b, h, length, d = x.shape
    if heads_outer:  # [B, Hkv + 1, L + 5, D], sliced along heads and L
        buffer = torch.full((b, h + 1, length + 5, d), float("nan"), dtype=x.dtype, device=x.device)
        view = buffer[:, 1:, :length]
    else:  # [B, L + 5, Hkv + 1, D] (tokens outer), transposed and sliced
        buffer = torch.full((b, length + 5, h + 1, d), float("nan"), dtype=x.dtype, device=x.device)
        view = buffer.transpose(1, 2)[:, 1:, :length]
    view[:, :, : last + 1] = x[:, :, : last + 1]
    return view


def _expected(q, k, v, s, pad, window, last):
    return attention_reference(q.double(), k[:, :, : last + 1].double(), v[:, :, : last + 1].double(),
                               sinks=None if s is None else s.double(), window=window, padding_start=pad)  # fmt: skip


def _check_close(got, want, dtype, pad, last, what):
    assert got.dtype == dtype and got.shape == want.shape, what
    assert not got.isnan().any(), f"{what}: NaN (an unwritten element, a fully masked row, or a read past last)"
    error = (got.double() - want).norm() / want.norm().clamp(min=1e-6)
    assert error < TOLERANCE[dtype], f"{what}: relative error {error:.2e}"
    for row, start in enumerate([] if pad is None else pad.tolist()):
        if start > last:
            assert (got[row] == 0).all(), f"{what}: row {row} is padding at position {last}, but not 0"


@pytest.fixture
def poison(monkeypatch):
    """The kernels' buffers (partials and output) start as NaN, so an element left unwritten shows."""
    from stratagem.kernels import decode_ops

    def poisoned(shape, like, dtype=None):
        return torch.full(tuple(shape), float("nan"), dtype=dtype or like.dtype, device=like.device)

    monkeypatch.setattr(decode_ops, "_alloc", poisoned)
    return decode_ops


@kernels
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_kernels_equal_the_reference(poison, case, dtype):
    q, k, v, s, pad = _inputs(case, dtype)
    window, lasts = case[6], case[9]
    if DEVICE == "cpu":
        assert poison._splits(q.shape[0], k.shape[1], k.shape[2], q.device) > 1, "the tiny shapes must split"
    for i, last in enumerate(lasts):
        position = torch.tensor([last] if i == 0 else last, device=DEVICE)  # [1] or 0-d
        kc, vc = _cache(k, last, heads_outer=i % 2 == 0), _cache(v, last, heads_outer=i % 2 == 1)
        got = decode_attention(q, kc, vc, position, sinks=s, window=window, padding_start=pad, backend="triton")
        _check_close(got, _expected(q, k, v, s, pad, window, last), dtype, pad, last, f"last={last}")


@kernels
@pytest.mark.parametrize("splits", [1, 3, 8])
def test_any_split_count_gives_the_same_result(poison, monkeypatch, splits):
    """One split (no real reduction), an odd count, and more splits than key blocks (some left empty)."""
    monkeypatch.setattr(poison, "FORCE_SPLITS", splits)
    case = CASES[2]
    dtype = KERNEL_DTYPES[0]
    q, k, v, s, pad = _inputs(case, dtype)
    last = 40
    got = decode_attention(q, _cache(k, last, True), _cache(v, last, False), torch.tensor(last, device=DEVICE),
                           sinks=s, window=9, padding_start=pad, backend="triton")  # fmt: skip
    _check_close(got, _expected(q, k, v, s, pad, 9, last), dtype, pad, last, f"{splits} splits")


def test_the_split_count_fills_the_gpu_and_leaves_each_split_a_few_blocks(monkeypatch):
    pytest.importorskip("triton")
    from stratagem.kernels import decode_ops

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(decode_ops, "_multiprocessors", lambda index: 132)  # an H200
    device = torch.device("cuda", 0)
    assert decode_ops._splits(1, 8, 4096, device) == 16  # gpt-oss, one row: 16 x 4 blocks of 64
    assert decode_ops._splits(1, 8, 131072, device) == 64
    assert decode_ops._splits(1, 1, 131072, device) == decode_ops.MAX_SPLITS
    assert decode_ops._splits(64, 8, 4096, device) == 1  # 512 programs already
    assert decode_ops._splits(2, 8, 256, device) == 1  # 4 blocks: not worth a split


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_torch_path_equals_the_reference(case, dtype):
    q, k, v, s, pad = _inputs(case, dtype)
    window = case[6]
    for i, last in enumerate(case[9]):
        position = torch.tensor(last, device=DEVICE)
        kc, vc = _cache(k, last, heads_outer=i % 2 == 0), _cache(v, last, heads_outer=True)
        got = decode_reference(q, kc, vc, position, sinks=s, window=window, padding_start=pad)
        assert torch.equal(got, decode_attention(q, kc, vc, position, sinks=s, window=window, padding_start=pad,
                                                 backend="reference"))  # fmt: skip
        _check_close(got, _expected(q, k, v, s, pad, window, last), dtype, pad, last, f"last={last}")


def test_auto_uses_the_reference_where_the_kernels_cannot_run():
    q, k = torch.randn(1, 2, 1, 48), torch.randn(1, 1, 8, 48)  # D 48: not a kernel size
    last = torch.tensor(5)
    assert torch.equal(decode_attention(q, k, k, last), decode_reference(q, k, k, last))
    if triton_available():
        with pytest.raises(ValueError, match="backend='triton' takes"):
            decode_attention(q, k, k, last, backend="triton")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"q": torch.randn(1, 4, 2, 32)}, r"q \[B, Hq, 1, D\]"),
        ({"k": torch.randn(1, 3, 8, 32)}, "multiple of Hkv"),
        ({"k": torch.randn(1, 2, 8, 32).half()}, "one dtype"),
        ({"last": 5}, "0-d"),
        ({"last": torch.tensor([5, 6])}, "0-d"),
        ({"last": torch.tensor(5.0)}, "int64"),
        ({"last": torch.tensor(5, device="meta")}, "reads it from q's device"),
        ({"sinks": torch.zeros(3)}, "one logit per query head"),
        ({"window": 0}, "positive int"),
        ({"window": 2.5}, "positive int"),
        ({"padding_start": torch.zeros(2, dtype=torch.long)}, "one integer start per batch row"),
        ({"padding_start": torch.zeros(1)}, "one integer start per batch row"),
        ({"backend": "cuda"}, "backend="),
        ({"scale": float("inf")}, "positive finite"),
    ],
)
def test_bad_arguments_say_what_is_expected(kwargs, needle):
    args = {"q": torch.randn(1, 4, 1, 32), "k": torch.randn(1, 2, 8, 32), "last": torch.tensor(5)}
    args.update(kwargs)
    q, k, last = args.pop("q"), args.pop("k"), args.pop("last")
    with pytest.raises(ValueError, match=needle):
        decode_attention(q, k, torch.randn(k.shape).to(k.dtype), last, **args)


@pytest.mark.skipif(DEVICE != "cuda" or INTERPRETED, reason="needs a GPU")
def test_a_captured_step_replays_as_last_advances():
    """gpt-oss-like shapes in bf16: one capture, replayed at positions it was not captured at."""
    b, hq, hkv, length, d, window = 2, 16, 2, 2048, 64, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, hq, 1, d, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, length, d, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(2))
    s = torch.randn(hq, device="cuda", generator=gen, dtype=torch.bfloat16)
    pad = torch.tensor([0, 300], device="cuda")
    last = torch.zeros((), dtype=torch.long, device="cuda")
    for w in (None, window):
        decode_attention(q, k, v, last, sinks=s, window=w, padding_start=pad)  # compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = decode_attention(q, k, v, last, sinks=s, window=w, padding_start=pad)
        for position in (0, 5, 299, 1000, length - 1):
            last.fill_(position)
            graph.replay()
            want = attention_reference(q.double(), k[:, :, : position + 1].double(), v[:, :, : position + 1].double(),
                                       sinks=s.double(), window=w, padding_start=pad)  # fmt: skip
            _check_close(out.clone(), want, torch.bfloat16, pad, position, f"window {w}, replay at {position}")
