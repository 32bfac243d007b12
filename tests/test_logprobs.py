"""Chunked per-token log-probs: the same values and gradients as the full-logits way, without keeping the logits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from stratagem.rl.logprobs import model_token_logprobs, naive_token_logprobs, token_logprobs

H, V = 16, 50
TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def inputs(shape: tuple[int, ...], dtype: torch.dtype, bias: bool = True, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden": torch.randn(*shape, H, generator=g, dtype=dtype).requires_grad_(),
        "weight": torch.randn(V, H, generator=g, dtype=dtype).requires_grad_(),
        "bias": torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None,
        "targets": torch.randint(0, V, shape, generator=g),
        "upstream": torch.randn(shape, generator=g, dtype=torch.float64),  # a non-uniform incoming gradient
    }


def run(fn: Callable[..., Tensor], x: dict[str, Tensor], **kwargs) -> tuple[Tensor, list[Tensor | None]]:
    """The log-probs and the gradients of sum(logp * upstream) w.r.t. hidden, weight and bias."""
    leaves = [x["hidden"], x["weight"], x["bias"]]
    for leaf in leaves:
        if leaf is not None:
            leaf.grad = None
    out = fn(x["hidden"], x["weight"], x["targets"], bias=x["bias"], **kwargs)
    (out * x["upstream"].to(out.dtype)).sum().backward()
    return out.detach(), [None if leaf is None else leaf.grad for leaf in leaves]


def assert_same(chunked: tuple[Tensor, list], naive: tuple[Tensor, list], **tolerance) -> None:
    torch.testing.assert_close(chunked[0], naive[0], **tolerance)
    for got, want in zip(chunked[1], naive[1], strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize(("shape", "chunk_size"), [((3, 7), 4), ((13,), 5), ((2, 5), 1024)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_the_full_logits_way(dtype, temperature, shape, chunk_size, bias):
    x = inputs(shape, dtype, bias)
    chunked = run(token_logprobs, x, temperature=temperature, chunk_size=chunk_size)
    naive = run(naive_token_logprobs, x, temperature=temperature)
    assert chunked[0].shape == shape and chunked[0].dtype == dtype
    assert_same(chunked, naive, **TOLERANCE[dtype])


@pytest.mark.parametrize("vocab_chunk", [1, 3, 7, 10_000])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_the_vocabulary_in_slices_gives_the_same_values_and_gradients(vocab_chunk, softcap):
    """The head cast to float32 a slice at a time, the logsumexp taken online over the slices: any slice width
    (one word, widths that do not divide the vocabulary, the whole of it) equals the full logits' answer."""
    x = inputs((3, 5), torch.float64, True)
    sliced = run(token_logprobs, x, temperature=0.7, chunk_size=4, vocab_chunk=vocab_chunk, softcap=softcap)
    naive = run(naive_token_logprobs, x, temperature=0.7, softcap=softcap)
    assert_same(sliced, naive, **TOLERANCE[torch.float64])


def test_soft_capping_matches_the_reference_and_changes_the_result():
    x = inputs((4, 6), torch.float64)
    capped = run(token_logprobs, x, temperature=0.7, softcap=2.0, chunk_size=5)
    assert_same(capped, run(naive_token_logprobs, x, temperature=0.7, softcap=2.0), **TOLERANCE[torch.float64])
    assert not torch.allclose(capped[0], run(token_logprobs, x, temperature=0.7)[0])


def test_a_frozen_weight_gets_no_gradient_and_the_hidden_states_still_do():
    x = inputs((3, 5), torch.float32, bias=False)
    x["weight"].requires_grad_(False)
    chunked = run(token_logprobs, x, chunk_size=4)
    assert chunked[1][1] is None
    assert_same(chunked, run(naive_token_logprobs, x), **TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32_and_get_gradients_in_their_dtype(dtype):
    x = inputs((3, 5), dtype)
    chunked = run(token_logprobs, x, temperature=0.7, chunk_size=4)
    assert chunked[0].dtype == torch.float32
    assert [g.dtype for g in chunked[1]] == [dtype] * 3
    # The reference upcasts the same half-precision values: values agree to float32 precision, and the
    # gradients to the rounding of their own dtype (the float32 accumulations differ only in order).
    naive = run(naive_token_logprobs, x, temperature=0.7)
    torch.testing.assert_close(chunked[0], naive[0], **TOLERANCE[torch.float32])
    for got, want in zip(chunked[1], naive[1], strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def test_autocast_does_not_lower_the_logits_to_bfloat16():
    x = inputs((3, 5), torch.float32)
    plain = run(token_logprobs, x, chunk_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = run(token_logprobs, x, chunk_size=4)
    assert_same(autocast, plain, rtol=0, atol=0)


def test_bad_shapes_and_settings_are_refused():
    x = inputs((3, 5), torch.float32)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(x["hidden"], x["weight"], x["targets"][:, :4])
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(x["hidden"], x["weight"], x["targets"], temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(x["hidden"], x["weight"], x["targets"], chunk_size=0)
    with pytest.raises(ValueError, match="bias"):
        token_logprobs(x["hidden"], x["weight"], x["targets"], bias=x["bias"][:-1])


def saved_bytes(fn: Callable[..., Tensor], x: dict[str, Tensor], **kwargs) -> int:
    """Bytes of the distinct storages autograd keeps for backward (exact: every saved tensor passes the hook)."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x["hidden"], x["weight"], x["targets"], **kwargs)
    out.sum().backward()  # the graph still works with what it kept
    return sum(storages.values())


def test_the_chunked_graph_keeps_no_logits_and_the_naive_one_keeps_at_least_one_copy():
    shape, vocab = (4, 128), 4096  # 512 rows: one float32 copy of the logits is 8 MiB
    g = torch.Generator().manual_seed(0)
    x = {
        "hidden": torch.randn(*shape, H, generator=g).requires_grad_(),
        "weight": torch.randn(vocab, H, generator=g).requires_grad_(),
        "targets": torch.randint(0, vocab, shape, generator=g),
    }
    logits_bytes = shape[0] * shape[1] * vocab * 4
    chunked, naive = saved_bytes(token_logprobs, x, chunk_size=100), saved_bytes(naive_token_logprobs, x)
    # Chunked keeps hidden (32 KiB), the weight (256 KiB), targets and one logsumexp per row: the inputs and O(rows).
    assert chunked < logits_bytes / 20
    assert naive >= logits_bytes
    inputs_bytes = (x["hidden"].numel() + x["weight"].numel()) * 4
    assert inputs_bytes < chunked <= inputs_bytes + shape[0] * shape[1] * (8 + 4)  # + int64 targets, float32 lse


# --- a transformers causal LM ---------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 97,
    "max_position_embeddings": 64,
}
MODELS = {
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**TINY, head_dim=8)),
    # Gemma-2 soft-caps its final logits (a small cap, so that it matters) and ties the head to the embeddings.
    "gemma2": lambda: transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(**TINY, head_dim=8, final_logit_softcapping=2.0)
    ),
}
K, TEMPERATURE = 5, 0.7


def left_padded_batch() -> tuple[Tensor, Tensor, Tensor]:
    """Three sequences of 12 with 0, 3 and 9 pad tokens on the left; the last one's kept positions include pads."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, TINY["vocab_size"], (3, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    for row, pads in enumerate((0, 3, 9)):
        attention_mask[row, :pads], input_ids[row, :pads] = 0, 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def reference_logprobs(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
    """The trainer's naive way: the model's own logits, temperature, log_softmax, gather."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logprobs = torch.log_softmax(logits[:, -K - 1 : -1].float() / TEMPERATURE, dim=-1)
    return logprobs.gather(-1, input_ids[:, -K:, None]).squeeze(-1)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_token_logprobs_equals_the_models_own_logits(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    batch = left_padded_batch()
    got = model_token_logprobs(model, *batch, K, temperature=TEMPERATURE, chunk_size=4)
    assert got.shape == (3, K)
    torch.testing.assert_close(got, reference_logprobs(model, *batch), **TOLERANCE[torch.float32])
    # and the gradient reaches the body and the head (Gemma-2's is the tied embedding) as the naive way's does
    upstream = torch.randn(3, K)
    (got * upstream).sum().backward()
    chunked_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (reference_logprobs(model, *batch) * upstream).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(chunked_grads[n], p.grad, **TOLERANCE[torch.float32], msg=n)


def test_lora_parameters_get_the_same_gradients_through_a_peft_model():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so A's gradient is not trivially zero.
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(MODELS["qwen3"](), config).eval()
    batch, upstream = left_padded_batch(), torch.randn(3, K)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)

    got = model_token_logprobs(model, *batch, K, temperature=TEMPERATURE, chunk_size=4)
    (got * upstream).sum().backward()
    chunked_grads = {n: p.grad.clone() for n, p in lora.items()}
    model.zero_grad()
    want = reference_logprobs(model, *batch)
    (want * upstream).sum().backward()
    torch.testing.assert_close(got, want, **TOLERANCE[torch.float32])
    for n, p in lora.items():
        assert p.grad.abs().sum() > 0, n
        torch.testing.assert_close(chunked_grads[n], p.grad, **TOLERANCE[torch.float32], msg=n)


def test_what_would_silently_differ_is_refused():
    model = MODELS["llama"]()
    batch = left_padded_batch()
    with pytest.raises(ValueError, match="logits_to_keep"):
        model_token_logprobs(model, *batch, 12)
    model.config.logit_scale = 0.5  # Cohere-style rescaling: the forward would multiply, we would not
    with pytest.raises(NotImplementedError, match="logit_scale"):
        model_token_logprobs(model, *batch, K)
