"""The rollout engine (``stratagem.rollout``): the same tokens as transformers, whatever path it takes.

Tiny random models of the three attention kinds the engine serves (Llama: plain GQA; Qwen3 with a sliding
window; gpt-oss: sinks, alternating windows, experts), left-padded prompts with a repeated one (a GRPO group),
on CPU in float32, where a greedy decode must equal ``generate(do_sample=False)`` token for token. On a GPU
(the CUDA tests skip here) the captured decode step must equal the eager one exactly.
"""

from __future__ import annotations

import pytest
import torch

from stratagem.rollout import SamplingParams, engine, sample
from stratagem.rollout.lora import lora_folded
from stratagem.rollout.sampling import program_complete

VOCAB = 96
CUDA = torch.cuda.is_available()


def _tokenizer(words: dict[str, int] | None = None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = words or {f"t{i}": i for i in range(VOCAB)}
    backend = Tokenizer(WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", eos_token="t1", unk_token="t0")
    tokenizer.padding_side = "left"
    return tokenizer


SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "vocab_size": VOCAB, "max_position_embeddings": 256}  # fmt: skip


def _model(kind: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, GptOssConfig, LlamaConfig, Qwen3Config

    windows = {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 5}
    experts = {"num_local_experts": 4, "num_experts_per_tok": 2}
    config = {
        "llama": lambda: LlamaConfig(**SHAPE, intermediate_size=128),
        "qwen3": lambda: Qwen3Config(**SHAPE, intermediate_size=128, use_sliding_window=True, **windows),
        "gpt-oss": lambda: GptOssConfig(**SHAPE, intermediate_size=64, **experts, **windows),
    }[kind]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    if kind == "gpt-oss":
        with torch.no_grad():  # sinks are zeros at init: make them matter
            for layer in model.model.layers:
                layer.self_attn.sinks.normal_(0, 2)
    model.generation_config.eos_token_id = 1  # "t1", the tokenizer's: both samplers stop at it
    model.generation_config.pad_token_id = 0
    return model


def _prompts(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Six left-padded rows: three lengths, a row repeated (one prefill for both), a one-token prompt."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (6, 9), generator=gen)
    mask = torch.ones_like(ids)
    for row, pad in ((1, 3), (5, 8)):
        ids[row, :pad], mask[row, :pad] = 0, 0
    ids[4], ids[3] = ids[0], ids[1]
    mask[3] = mask[1]
    return ids.to(device), mask.to(device)


@pytest.fixture(autouse=True)
def _no_interpreted_kernels(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False) if CUDA else None


@pytest.mark.parametrize("kind", ["llama", "qwen3", "gpt-oss"])
def test_greedy_equals_transformers_generate_token_for_token(kind):
    model, (ids, mask) = _model(kind), _prompts()
    expected = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=24)[:, ids.shape[1] :]
    out = sample(model, _tokenizer(), ids, mask, SamplingParams(temperature=0, max_new_tokens=24,
                                                                stop_at_program_end=False))  # fmt: skip
    assert torch.equal(out.completion_ids, expected)


@pytest.mark.parametrize("kind", ["qwen3", "gpt-oss"])
def test_the_static_cache_samples_what_transformers_dynamic_cache_samples(kind, monkeypatch):
    """One generator, one draw per row per step: the preallocated cache and the shared prefill change nothing."""
    model, (ids, mask), tokenizer = _model(kind), _prompts(), _tokenizer()
    params = SamplingParams(temperature=1.2, top_k=20, max_new_tokens=20, stop_at_program_end=False)
    static = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(3))
    monkeypatch.setattr(engine, "supports_static_kv", lambda model: False)
    dynamic = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(3))
    assert torch.equal(static.completion_ids, dynamic.completion_ids)
    assert not torch.equal(static.completion_ids[0], static.completion_ids[4]), "a repeated prompt's rows differ"


def test_sampling_in_chunks_gives_each_row_what_one_batch_gives_it():
    """max_batch: rows decoded a chunk at a time (a short last chunk filled up and its filler dropped), then
    merged: greedy rows, their ends, masks and texts equal one batch's, whatever width each chunk stopped at."""
    model, (ids, mask), tokenizer = _model("llama"), _prompts(), _tokenizer()
    params = SamplingParams(temperature=0, max_new_tokens=12, stop_at_program_end=False)
    whole = sample(model, tokenizer, ids, mask, params)
    model.generation_config.eos_token_id = [1, int(whole.completion_ids[0, 2])]  # row 0 (at least) ends early
    whole = sample(model, tokenizer, ids, mask, params)
    assert whole.completion_mask.sum(1).min() < 12 and whole.truncated.count(True) >= 1, "rows of mixed length"
    for max_batch in (1, 2, 4):  # 5 rows: five chunks of 1; three of 2 and two of 3, each last one filled up
        chunked = sample(model, tokenizer, ids[:5], mask[:5], params, max_batch=max_batch)
        assert torch.equal(chunked.completion_ids, whole.completion_ids[:5, : chunked.completion_ids.shape[1]])
        assert torch.equal(chunked.completion_mask, whole.completion_mask[:5, : chunked.completion_mask.shape[1]])
        assert chunked.texts == whole.texts[:5] and chunked.truncated == whole.truncated[:5]
        assert torch.equal(chunked.prompt_ids, ids[:5])
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        sample(model, tokenizer, ids, mask, params, max_batch=0)


def test_a_model_the_static_cache_does_not_serve_decodes_through_transformers_cache():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(**SHAPE, intermediate_size=128, attn_logit_softcapping=50.0, sliding_window=5,
                          attn_implementation="eager")  # fmt: skip
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = 1, 0
    assert not engine.supports_static_kv(model)
    ids, mask = _prompts()
    expected = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12)[:, ids.shape[1] :]
    out = sample(model, _tokenizer(), ids, mask, SamplingParams(temperature=0, max_new_tokens=12,
                                                                stop_at_program_end=False))  # fmt: skip
    assert torch.equal(out.completion_ids, expected)


def _with_lora(model, **extra):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", **extra))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a trained adapter, not the identity peft starts from
    return peft.eval()


@pytest.mark.parametrize("kind", ["llama", "gpt-oss"])
def test_lora_is_folded_while_sampling_and_the_base_weights_come_back_bit_for_bit(kind):
    peft, (ids, mask) = _with_lora(_model(kind)), _prompts()
    before = {name: p.detach().clone() for name, p in peft.named_parameters()}
    with torch.no_grad():
        unmerged = peft(input_ids=ids, attention_mask=mask).logits
        with lora_folded(peft) as folded:
            merged = peft(input_ids=ids, attention_mask=mask).logits
    assert folded
    assert torch.allclose(merged, unmerged, atol=1e-5), (merged - unmerged).abs().max()
    with torch.no_grad():
        without = peft.get_base_model()(input_ids=ids, attention_mask=mask)
        with peft.disable_adapter():
            base = peft(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(base, unmerged, atol=1e-3), "the adapter must change the logits for this to mean anything"
    assert torch.allclose(without.logits, unmerged)
    out = sample(peft, _tokenizer(), ids, mask, SamplingParams(temperature=0, max_new_tokens=8,
                                                               stop_at_program_end=False))  # fmt: skip
    for name, p in peft.named_parameters():
        assert torch.equal(p, before[name]), name
    expected = peft.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8)[:, ids.shape[1] :]
    assert torch.equal(out.completion_ids, expected)


def test_an_adapter_that_cannot_be_folded_exactly_samples_unfolded():
    peft = _with_lora(_model("llama"), use_dora=True)
    with lora_folded(peft) as folded:
        assert not folded
    ids, mask = _prompts()
    out = sample(peft, _tokenizer(), ids, mask, SamplingParams(temperature=0, max_new_tokens=6,
                                                               stop_at_program_end=False))  # fmt: skip
    expected = peft.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6)[:, ids.shape[1] :]
    assert torch.equal(out.completion_ids, expected)


@pytest.mark.parametrize("every", [1, 5, 16])
def test_a_closing_fence_ends_its_row_at_the_exact_token_however_often_stops_are_checked(every):
    """The fence is checked on the host every ``every`` tokens; rows end where a check after each token would
    end them, and what was sampled after is padding."""
    fences = {f"\n```{i}": i for i in range(70, VOCAB)}  # a quarter of the vocabulary opens or closes a block
    tokenizer = _tokenizer({f"t{i}": i for i in range(70)} | fences)
    model, (ids, mask) = _model("llama"), _prompts()
    model.generation_config.eos_token_id = None
    free = sample(model, tokenizer, ids, mask, SamplingParams(max_new_tokens=40, stop_at_program_end=False),
                  torch.Generator().manual_seed(0))  # fmt: skip
    params = SamplingParams(max_new_tokens=40)
    out = engine.sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(0), check_every=every)
    lengths = []
    for row in range(ids.shape[0]):
        tokens = free.completion_ids[row].tolist()
        closes = [n for n in range(1, 41) if program_complete(tokenizer.decode(tokens[:n]))]
        n = int(out.completion_mask[row].sum())
        assert n == (closes[0] if closes else 40)
        assert out.completion_ids[row, :n].tolist() == tokens[:n]
        assert (out.completion_ids[row, n:] == tokenizer.pad_token_id).all()
        assert out.truncated[row] is (not closes)
        lengths.append(n)
    assert len(set(lengths)) > 2, f"rows must end at different steps for this to mean anything: {lengths}"


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
@pytest.mark.parametrize("kind", ["qwen3", "gpt-oss"])
def test_the_captured_decode_step_equals_the_eager_one_on_a_gpu(kind):
    model, (ids, mask), tokenizer = _model(kind, "cuda", torch.bfloat16), _prompts("cuda"), _tokenizer()
    params = SamplingParams(max_new_tokens=32, stop_at_program_end=False)
    graphed = sample(model, tokenizer, ids, mask, params, torch.Generator("cuda").manual_seed(0), cuda_graph=True)
    eager = sample(model, tokenizer, ids, mask, params, torch.Generator("cuda").manual_seed(0), cuda_graph=False)
    assert torch.equal(graphed.completion_ids, eager.completion_ids)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_lora_folded_into_the_compiled_captured_step_on_a_gpu():
    peft, (ids, mask), tokenizer = _with_lora(_model("qwen3", "cuda", torch.bfloat16)), _prompts("cuda"), _tokenizer()
    before = {name: p.detach().clone() for name, p in peft.named_parameters()}
    params = SamplingParams(temperature=0, max_new_tokens=8, stop_at_program_end=False)
    compiled = sample(peft, tokenizer, ids, mask, params, compile=True, cuda_graph=True)
    again = sample(peft, tokenizer, ids, mask, params, compile=True, cuda_graph=False)
    assert torch.equal(compiled.completion_ids, again.completion_ids)
    for name, p in peft.named_parameters():
        assert torch.equal(p, before[name]), name
    expected = peft.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8)[:, ids.shape[1] :]
    agree = (compiled.completion_ids.to(expected.device) == expected).float().mean().item()
    assert agree > 0.8, f"bf16 greedy tokens agree with transformers' unmerged generate at only {agree:.0%}"


def test_a_model_torch_compile_cannot_compile_samples_without_it_and_says_so(monkeypatch):
    def broken(base):
        def forward(**kwargs):
            raise RuntimeError("no C++ compiler here\nmore detail")

        return forward

    monkeypatch.setattr(engine, "compiled_forward", broken)
    model, (ids, mask), tokenizer = _model("qwen3"), _prompts(), _tokenizer()
    params = SamplingParams(temperature=0, max_new_tokens=12, stop_at_program_end=False)
    with pytest.warns(engine.CompileFallbackWarning, match=r"RuntimeError: no C\+\+ compiler here\); sampling"):
        fallback = sample(model, tokenizer, ids, mask, params, compile=True)
    assert torch.equal(fallback.completion_ids, sample(model, tokenizer, ids, mask, params).completion_ids)


def test_no_kv_cache_outlives_the_sampling_that_compiled_the_step(monkeypatch):
    """torch.compile's trace objects keep the batch they traced (its KV cache, most of sampling's memory) in
    reference cycles; the sampler collects them once, after the call that compiled, instead of leaving them to
    Python's collector while the update runs. A compiled forward that holds its cache the same way stands in for
    dynamo here (a real CPU compile takes a minute)."""
    import gc

    from stratagem.rollout.kv import StaticKV

    def holding_forward(base):
        class Trace:  # a cycle through the cache it saw, as dynamo's guards and graph arguments are
            pass

        def forward(**kwargs):
            trace = Trace()
            trace.me, trace.cache = trace, kwargs[engine.KWARG]
            return base(**kwargs)

        return forward

    monkeypatch.setattr(engine, "compiled_forward", holding_forward)
    model, (ids, mask), tokenizer = _model("qwen3"), _prompts(), _tokenizer()
    params = SamplingParams(temperature=0, max_new_tokens=6, stop_at_program_end=False)
    gc.collect()
    gc.disable()
    try:
        out = sample(model, tokenizer, ids, mask, params, compile=True, cuda_graph=False)
        assert not [o for o in gc.get_objects() if type(o) is StaticKV], "a KV cache outlived sampling"
    finally:
        gc.enable()
    assert torch.equal(out.completion_ids, sample(model, tokenizer, ids, mask, params).completion_ids)
