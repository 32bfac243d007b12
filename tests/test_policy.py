"""Sampling: the logit filters, left padding, the KV cache, stopping, and determinism.

The models are tiny Llamas built from configs; the tokenizer is trained offline by the same
code that builds the embedded default model.
"""

from __future__ import annotations

import pytest
import torch

from stratagem.agents.policy import (
    PromptTruncatedWarning,
    SamplingParams,
    encode_prompts,
    filter_logits,
    load_model,
    program_complete,
    sample,
)
from stratagem.agents.programs import ProgramError, load
from stratagem.agents.prompts import task_prompt
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs
from stratagem.rl.default_model import _train_tokenizer, completion_text


@pytest.fixture(scope="module")
def tokenizer():
    programs = [completion_text(p) for p in generate_programs(60, 0)]
    return _train_tokenizer(["Write a 2048 strategy.", *programs], 400)


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return LlamaForCausalLM(config).eval()


PROMPTS = ["def strategy(board):", "Write a 2048 strategy.\n```python\nimport random\n", "x"]


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(1))
    kept = filter_logits(logits, SamplingParams(top_k=7)).isfinite()
    assert kept.sum(-1).tolist() == [7] * 5
    assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, logits.topk(7, -1).indices, True))


def test_top_p_keeps_the_smallest_set_covering_p():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    kept = filter_logits(logits, SamplingParams(top_p=0.6)).isfinite()
    for row, keep in zip(logits, kept, strict=True):
        probs, order = row.softmax(-1).sort(descending=True)
        n = int((probs.cumsum(-1) < 0.6).sum()) + 1  # the fewest most-likely tokens whose mass reaches 0.6
        assert set(order[:n].tolist()) == set(keep.nonzero().flatten().tolist())


def test_min_p_drops_tokens_below_a_fraction_of_the_best_and_temperature_scales():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(3))
    kept = filter_logits(logits, SamplingParams(min_p=0.2)).isfinite()
    probs = logits.softmax(-1)
    assert torch.equal(kept, probs >= 0.2 * probs.max(-1, keepdim=True).values)
    assert torch.allclose(filter_logits(logits, SamplingParams(temperature=0.5)), logits * 2)


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("```python\ndef strategy(board):\n    return 0\n```", True),
        ("```python\ndef strategy(board):\n    return 0\n", False),
        ("def strategy(board):\n    return 0\n```", True),
        ("Here it is:\n```python\ndef strategy(board):", False),
        ("```python\nx = '`'\n", False),
    ],
)
def test_program_complete(text, complete):
    assert program_complete(text) is complete


def _greedy_without_cache(model, tokenizer, prompt: str, steps: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_left_padded_batch_with_kv_cache_equals_each_prompt_alone_without_cache(model, tokenizer):
    params = SamplingParams(top_k=1, max_new_tokens=12, stop_at_program_end=False)
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    assert mask[:, 0].tolist().count(0) >= 1, "the prompts must differ in length for this test to mean anything"
    model.generation_config.eos_token_id = None  # run the full 12 tokens
    batch = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(0))
    for row, prompt in enumerate(PROMPTS):
        expected = _greedy_without_cache(model, tokenizer, prompt, 12)
        assert batch.completion_ids[row].tolist() == expected
    assert batch.truncated == [True] * len(PROMPTS)
    assert batch.completion_mask.sum().item() == 12 * len(PROMPTS)


def test_stops_at_eos_and_masks_what_follows(model, tokenizer):
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    model.generation_config.eos_token_id = None
    free = sample(model, tokenizer, ids, mask, SamplingParams(top_k=1, max_new_tokens=8, stop_at_program_end=False))
    eos = int(free.completion_ids[0, 3])  # make row 0's 4th greedy token the end of sequence
    model.generation_config.eos_token_id = eos
    try:
        stopped = sample(model, tokenizer, ids, mask, SamplingParams(top_k=1, max_new_tokens=8,
                                                                     stop_at_program_end=False))  # fmt: skip
    finally:
        model.generation_config.eos_token_id = None
    first = free.completion_ids[0].tolist().index(eos)
    assert stopped.completion_mask[0].sum().item() == first + 1
    assert stopped.truncated[0] is False
    for row in range(len(PROMPTS)):
        n = int(stopped.completion_mask[row].sum())
        assert stopped.completion_ids[row, :n].tolist() == free.completion_ids[row, :n].tolist()
        assert (stopped.completion_ids[row, n:] == tokenizer.pad_token_id).all()


def test_sampling_repeats_with_the_generator_and_respects_top_k(model, tokenizer):
    ids, mask = encode_prompts(tokenizer, PROMPTS * 3)
    params = SamplingParams(temperature=1.3, top_k=3, max_new_tokens=10, stop_at_program_end=False)
    a = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(5))
    b = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(5))
    c = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(6))
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    full = torch.cat([a.prompt_ids, a.completion_ids], dim=1)
    attention = torch.cat([a.prompt_mask, a.completion_mask], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=attention,
                       position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).logits  # fmt: skip
    width = a.completion_ids.shape[1]
    top3 = logits[:, -width - 1 : -1].topk(3, -1).indices
    assert (top3 == a.completion_ids[..., None]).any(-1).all(), "a sampled token outside the top 3"


def test_prompts_keep_their_last_tokens_when_cut(tokenizer):
    with pytest.warns(PromptTruncatedWarning, match="more than max_prompt_length 3"):
        ids, mask = encode_prompts(tokenizer, ["a b c d e f g h", "a"], max_length=3)
    assert ids.shape[1] <= 3
    assert tokenizer.decode(ids[0][mask[0].bool()]).endswith("h")


def test_the_sft_primed_policy_writes_programs_that_end_at_their_fence(tiny_policy):
    model, tokenizer = load_model(tiny_policy)
    spec = resolve("2048")
    ids, mask = encode_prompts(tokenizer, [task_prompt(spec)] * 16)
    out = sample(model, tokenizer, ids, mask, SamplingParams(max_new_tokens=160), torch.Generator().manual_seed(0))
    finished = [t for t, cut in zip(out.texts, out.truncated, strict=True) if not cut]
    assert finished, "every completion ran to max_new_tokens"
    for row, (text, cut) in enumerate(zip(out.texts, out.truncated, strict=True)):
        if not cut and program_complete(text):  # stopped at the token that closed the fence, not one later
            ids = out.completion_ids[row, : int(out.completion_mask[row].sum())].tolist()
            assert not program_complete(tokenizer.decode(ids[:-1], skip_special_tokens=True)), "ran on past the fence"
    assert any(t.rstrip().endswith("```") for t in finished)
    loaded = 0
    for text in out.texts:
        try:
            load(text, spec.strategy)
            loaded += 1
        except ProgramError:
            pass
    assert loaded >= 4, f"only {loaded} of 16 samples are programs that load"


def test_adapters_on_a_half_precision_base_keep_float32_weights_but_save_no_float32_copy_of_their_input(model):
    """``add_lora`` on a bf16 base: the adapter's weights (and so the optimizer's state) stay float32, its product
    runs in bf16 on the base layer's own input, so backward holds no float32 copy of that input (peft's default,
    one per adapted layer: 2 GiB of a Qwen3-0.6B update at 131k tokens); the gradient still reaches the weights."""
    import copy

    from stratagem.agents.policy import add_lora

    half = add_lora(copy.deepcopy(model).to(torch.bfloat16), 4, 8, 0.0, ["all-linear"])
    layer = half.get_base_model().model.layers[0].self_attn.q_proj
    assert {p.dtype for p in half.parameters() if p.requires_grad} == {torch.float32}
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)  # B starts at zero: make the delta count
    x = torch.randn(3, 5, layer.in_features, dtype=torch.bfloat16, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    big = [t for t in saved if t.numel() >= x.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big), [(t.dtype, tuple(t.shape)) for t in big]
    assert out.dtype == torch.bfloat16
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    exact = x.float() @ layer.base_layer.weight.float().T + (x.float() @ a.T @ b.T) * layer.scaling["default"]
    assert torch.allclose(out.float(), exact, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert a.grad is not None and a.grad.dtype == torch.float32 and a.grad.abs().sum() > 0
