"""The Triton attention kernels themselves (Triton's CPU interpreter here), against the reference.

Every feature and its edge: causal or not, windows (1, small, larger than N), sinks (none,
ordinary, very large, very negative), left padding (including a fully padded row: output 0,
no NaN), GQA ratios 1/2/8, N not a multiple of the block; forward and every gradient, dsinks
included; fp32 and fp16 (the interpreter computes bf16 wrongly: bf16 is checked on a GPU by
benchmarks/check_attention_gpu.py), the fp16 inputs in transformers' strided layout. Output
buffers are poisoned with NaN before each kernel.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

from stratagem.kernels import attention
from stratagem.kernels.reference import attention_reference

pytest.importorskip("triton", reason="the kernel tests need Triton (.ci/run installs it)")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")  # fmt: skip


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    import importlib

    kernels = importlib.import_module("stratagem.kernels.flash_ops")

    def poisoned(shape, like, dtype=None):
        return torch.full(tuple(shape), float("nan"), dtype=dtype or like.dtype, device=like.device)

    monkeypatch.setattr(kernels, "_alloc", poisoned)


# (case name, B, Hq, Hkv, N, D, window, sinks, padding, causal)
CASES = [
    ("plain causal", 2, 2, 2, 32, 64, None, None, None, True),
    ("sinks, N % block != 0", 2, 4, 2, 37, 64, None, "normal", None, True),
    ("window 1", 1, 4, 4, 29, 32, 1, "normal", None, True),
    ("window 5, GQA 8", 2, 8, 1, 40, 32, 5, "normal", "some", True),
    ("window > N", 1, 2, 1, 23, 64, 64, "normal", "some", True),
    ("huge sinks", 2, 4, 2, 33, 32, None, "huge", "some", True),
    ("very negative sinks", 2, 4, 2, 33, 32, 7, "negative", None, True),
    ("a fully padded row, no sinks", 2, 4, 2, 24, 32, None, None, "full", True),
    ("a fully padded row, sinks", 2, 4, 4, 24, 64, 3, "normal", "full", True),
    ("not causal", 2, 4, 2, 35, 32, None, "normal", "some", False),
    ("not causal, GQA 2, no sinks", 2, 4, 2, 19, 64, None, None, None, False),
    ("D 128", 1, 2, 1, 21, 128, 9, "normal", "some", True),
]
SINKS = {None: None, "normal": 1.0, "huge": 30.0, "negative": -30.0}


def _inputs(case: tuple, dtype: torch.dtype, seed: int):
    _, b, hq, hkv, n, d, window, sinks, padding, causal = case
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.float16:  # transformers' layout: [B, N, H, D] viewed as [B, H, N, D] (strided)
        q, k, v = (torch.randn(b, n, h, d, generator=gen).to(dtype).transpose(1, 2) for h in (hq, hkv, hkv))
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    else:
        q, k, v = (torch.randn(b, h, n, d, generator=gen).to(dtype).requires_grad_() for h in (hq, hkv, hkv))
    s = None
    if sinks is not None:
        s = (SINKS[sinks] + torch.randn(hq, generator=gen)).to(dtype).requires_grad_()
    pad = None
    if padding == "some":
        pad = torch.randint(0, n // 2, (b,), generator=gen)
    elif padding == "full":
        pad = torch.tensor([3, n][:b] if b > 1 else [n])  # the last row is padding only
    return q, k, v, s, pad, window, causal


# Every case in float32; in float16 (transformers' strided layout, half-precision loads and stores) the cases
# that take different paths through the kernels: blocks cut short, windows with GQA, padding, no mask, wide heads.
FP16_CASES = {"sinks, N % block != 0", "window 5, GQA 8", "a fully padded row, sinks", "not causal", "D 128"}
DTYPE_CASES = [pytest.param(case, torch.float32, id=f"{case[0]}-fp32") for case in CASES] + [
    pytest.param(case, torch.float16, id=f"{case[0]}-fp16") for case in CASES if case[0] in FP16_CASES
]


@pytest.mark.parametrize(("case", "dtype"), DTYPE_CASES)
def test_kernels_equal_the_reference_forward_and_backward(case, dtype):
    seed = zlib.crc32(f"{case[0]} {dtype}".encode())  # fresh inputs for every case, the same in every run
    q, k, v, s, pad, window, causal = _inputs(case, dtype, seed)
    out = attention(q, k, v, sinks=s, window=window, causal=causal, padding_start=pad, backend="triton")
    assert not out.isnan().any(), "NaN in the output (an unwritten element, or a fully masked row)"
    leaves = [q, k, v] + ([s] if s is not None else [])
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    grads = torch.autograd.grad(out, leaves, grad_out)
    # The reference in float64 from the same inputs: the truth both are measured against.
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rq, rk, rv = ref_leaves[:3]
    rs = ref_leaves[3] if s is not None else None
    ref = attention_reference(rq, rk, rv, sinks=rs, window=window, causal=causal, padding_start=pad)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out.double())
    tol = 2e-5 if dtype == torch.float32 else 1e-2
    for name, got, want in zip(["out", "dq", "dk", "dv", "dsinks"], [out, *grads], [ref, *ref_grads], strict=False):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert not got.isnan().any(), f"NaN in {name}"
        error = (got.double() - want).norm() / want.norm().clamp(min=1e-6)
        assert error < tol, f"{name}: relative error {error:.2e} (seed {seed})"
    if pad is not None:  # padding queries output exactly 0
        for row, start in enumerate(pad.tolist()):
            assert (out[row, :, :start] == 0).all()


@pytest.mark.parametrize("split", [1, 4])
def test_dk_dv_are_the_same_however_a_gqa_group_is_split(monkeypatch, split):
    """A group's query heads in one program (split 1: no float32 partials) or shared by 4 (the path any split
    above 1 takes)."""
    from stratagem.kernels import flash_ops

    monkeypatch.setattr(flash_ops, "_group_split", lambda *args: split)
    q, k, v, s, pad, window, _ = _inputs(("split", 2, 8, 2, 41, 32, 6, "normal", "some", True), torch.float32, 11)
    out = attention(q, k, v, sinks=s, window=window, padding_start=pad, backend="triton")
    grads = torch.autograd.grad(out.square().sum(), [k, v])
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v, s)]
    ref = attention_reference(*ref_leaves[:3], sinks=ref_leaves[3], window=window, padding_start=pad)
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_leaves[1:3])
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got.double() - want).norm() / want.norm() < 2e-5


def test_dsinks_and_every_gradient_are_deterministic():
    case = ("det", 2, 8, 2, 45, 32, 11, "normal", "some", True)
    runs = []
    for _ in range(2):
        q, k, v, s, pad, window, _ = _inputs(case, torch.float32, 5)
        out = attention(q, k, v, sinks=s, window=window, padding_start=pad, backend="triton")
        runs.append(torch.autograd.grad(out.square().sum(), [q, k, v, s]))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_auto_uses_the_reference_where_triton_cannot_run_and_triton_says_why(monkeypatch):
    q = torch.randn(1, 2, 8, 48)  # D 48: not a kernel size
    k = v = torch.randn(1, 1, 8, 48)
    assert torch.equal(attention(q, k, v), attention_reference(q, k, v))
    with pytest.raises(ValueError, match="backend='triton' takes"):
        attention(q, k, v, backend="triton")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"k": torch.randn(1, 3, 8, 32)}, "multiple of Hkv"),
        ({"sinks": torch.zeros(3)}, "one logit per query head"),
        ({"window": 0}, "positive int"),
        ({"window": 4, "causal": False}, "causal=True"),
        ({"padding_start": torch.zeros(2, dtype=torch.long)}, "one start per batch row"),
        ({"backend": "cuda"}, "backend="),
        ({"scale": -0.5}, "positive finite"),
        ({"scale": float("nan")}, "positive finite"),
    ],
)
def test_bad_arguments_say_what_is_expected(kwargs, needle):
    args = {"q": torch.randn(1, 4, 8, 32), "k": torch.randn(1, 2, 8, 32), "v": None}
    args.update(kwargs)
    args["v"] = torch.randn(args["k"].shape)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(ValueError, match=needle):
        attention(q, k, v, **args)


def _tiny(name: str):
    from transformers import (
        GptOssConfig,
        GptOssForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    common = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}  # fmt: skip
    if name == "gptoss":
        config = GptOssConfig(**common, num_local_experts=2, num_experts_per_tok=1, sliding_window=5,
                              layer_types=["sliding_attention", "full_attention"],
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})  # fmt: skip
        model = GptOssForCausalLM(config)
        for layer in model.model.layers:
            torch.nn.init.normal_(layer.self_attn.sinks, std=1.0)
        return model
    if name == "qwen3":
        config = Qwen3Config(**common, use_sliding_window=True, sliding_window=4, max_window_layers=1,
                             layer_types=["sliding_attention", "full_attention"])  # fmt: skip
        return Qwen3ForCausalLM(config)
    return LlamaForCausalLM(LlamaConfig(**common))


@pytest.mark.parametrize("name", ["gptoss", "llama", "qwen3"])
def test_models_with_attn_implementation_stratagem_match_eager(name):
    import stratagem.kernels.hf  # noqa: F401  (registers "stratagem")

    torch.manual_seed(0)
    model = _tiny(name).float()
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 64, (2, 21))
    mask = torch.ones(2, 21, dtype=torch.long)
    mask[1, :6] = 0  # left padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    real = mask.bool()
    outputs = {}
    for implementation in ("eager", "stratagem"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        logits[real].square().mean().backward()
        outputs[implementation] = (logits[real].detach(), [p.grad.clone() for p in model.parameters()
                                                           if p.grad is not None])  # fmt: skip
    assert torch.allclose(outputs["eager"][0], outputs["stratagem"][0], atol=1e-5)
    for a, b in zip(outputs["eager"][1], outputs["stratagem"][1], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_masks_with_holes_are_refused():
    from stratagem.kernels.hf import padding_starts

    assert padding_starts(torch.tensor([[1, 1, 1], [0, 1, 1]])).tolist() == [0, 1]
    assert padding_starts(torch.tensor([[1, 1, 0], [1, 1, 1]])) is None  # right padding only: nothing to do
    with pytest.raises(ValueError, match="holes"):
        padding_starts(torch.tensor([[1, 0, 1]]))


def test_sampling_with_stratagem_attention_equals_eager():
    """Prefill through the kernels, decoding steps (one query against the cache) through the reference."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import stratagem.kernels.hf  # noqa: F401
    from stratagem.agents.policy import SamplingParams, encode_prompts, sample
    from stratagem.rl.default_model import _train_tokenizer

    tokenizer = _train_tokenizer(["a prompt", *["def strategy(board):\n    return 0\n"] * 4], 300)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    ids, mask = encode_prompts(tokenizer, ["def strategy(board):", "a much longer prompt than the other one"])
    assert (mask == 0).any(), "the batch must be left-padded for this test to mean anything"
    params = SamplingParams(top_k=1, max_new_tokens=9, stop_at_program_end=False)
    runs = {}
    for implementation in ("eager", "stratagem"):
        model.set_attn_implementation(implementation)
        runs[implementation] = sample(model, tokenizer, ids, mask, params).completion_ids
    assert torch.equal(runs["eager"], runs["stratagem"])
