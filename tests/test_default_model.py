"""The embedded default model: deterministic, cached, a normal transformers directory; and
checkpoints whose "latest" survives a crash mid-write."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stratagem.rl import default_model
from stratagem.rl.checkpoint import latest_checkpoint, save_checkpoint
from stratagem.rl.default_model import DefaultModelSettings, build_default_model, default_model_path

TINY = DefaultModelSettings(programs=80, sft_steps=4, hidden_size=32, layers=1, heads=2, kv_heads=1,
                            intermediate_size=64, vocab_size=600, batch_size=4)  # fmt: skip


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_the_build_is_deterministic_from_its_settings(tmp_path):
    before = torch.get_rng_state()
    a = build_default_model(tmp_path / "a", TINY)
    assert torch.equal(torch.get_rng_state(), before), "building must not move the caller's random stream"
    b = build_default_model(tmp_path / "b", TINY)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    other = DefaultModelSettings(**{**TINY.__dict__, "seed": 1})
    assert other.fingerprint() != TINY.fingerprint()


def test_the_cache_builds_once_and_a_killed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATAGEM_CACHE", str(tmp_path))
    path = default_model_path(TINY)
    assert path.parent == tmp_path / "default-model" and (path / "config.json").is_file()

    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(default_model, "build_default_model", must_not_build)
    assert default_model_path(TINY) == path

    monkeypatch.undo()
    monkeypatch.setenv("STRATAGEM_CACHE", str(tmp_path))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", killed)  # killed while writing the files
    with pytest.raises(KeyboardInterrupt):
        default_model_path(DefaultModelSettings(**{**TINY.__dict__, "seed": 2}))
    assert sorted(p.name for p in (tmp_path / "default-model").iterdir()) == [path.name]


def test_the_tokenizer_encodes_any_text_and_programs_compactly():
    """One tokenizer for every task: any text round-trips; the built-in prompts and the programs are short."""
    from stratagem.agents.prompts import task_prompt
    from stratagem.envs.spec import resolve
    from stratagem.rl.default_model import default_tokenizer, training_pairs

    settings = DefaultModelSettings()  # the real default's corpus and vocabulary
    tokenizer = default_tokenizer(settings)
    programs = [completion for _, completion in training_pairs(settings)]
    for text in ["naïve 🙂 code\n\tx = 1", "def strategy(board):\n    return 'never seen this line'\n", programs[0]]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    tokens = [len(tokenizer(p)["input_ids"]) for p in programs[:300]]
    chars = [len(p) for p in programs[:300]]
    assert sum(tokens) < sum(chars) / 8, "whole lines should merge into few tokens"
    for env in ("2048", "pong", "breakout", "openspiel", "matmul", "atari"):
        assert len(tokenizer(task_prompt(resolve(env)))["input_ids"]) < 40, env


def test_latest_checkpoint_survives_a_crash_mid_write(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from stratagem.agents.policy import add_lora

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    adapter = add_lora(LlamaForCausalLM(config), r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, adapter, {"step": 1})
    save_checkpoint(root, 2, adapter, {"step": 2})
    assert (root / "step-000002" / "adapter_config.json").is_file()
    (root / ".tmp-step-000003-x").mkdir()  # a write killed before its rename
    (root / "step-000004").mkdir()  # a directory without its state file is never "complete"
    assert latest_checkpoint(root) == root / "step-000002"
    assert not (root / ".tmp-step-000003-x").exists()
    (root / "latest").write_text("step-000009\n")  # names a checkpoint that is gone
    assert latest_checkpoint(root) == root / "step-000002"
    save_checkpoint(root, 3, adapter, {"step": 3}, keep=2)
    assert sorted(p.name for p in root.glob("step-*") if (p / "trainer_state.pt").exists()) == [
        "step-000002", "step-000003"]  # fmt: skip


def test_the_gpt_oss_default_is_a_gpt_oss_the_sampler_and_the_config_take(tmp_path, monkeypatch):
    """``model: default-gpt-oss`` (the GPU preset, examples/gpu_gpt_oss.yaml): the same build as a gpt-oss, with
    sinks, alternating windows and experts."""
    from stratagem.agents.policy import encode_prompts, load_model
    from stratagem.rl.config import load_config
    from stratagem.rollout import SamplingParams, sample

    settings = DefaultModelSettings(**{**TINY.__dict__, "architecture": "gpt-oss", "layers": 2})
    assert settings.fingerprint() != DefaultModelSettings(**{**TINY.__dict__, "layers": 2}).fingerprint()
    model, tokenizer = load_model(build_default_model(tmp_path / "oss", settings))
    config = model.config
    assert type(model).__name__ == "GptOssForCausalLM" and config.layer_types == ["sliding_attention",
                                                                                   "full_attention"]  # fmt: skip
    assert config.sliding_window == 128 and config.num_local_experts == 4 and config.head_dim == 16
    assert model.model.layers[0].self_attn.sinks.shape == (2,)
    ids, mask = encode_prompts(tokenizer, ["Write a 2048 strategy."] * 4)
    out = sample(model, tokenizer, ids, mask, SamplingParams(max_new_tokens=8), torch.Generator().manual_seed(0))
    assert out.completion_ids.shape[0] == 4 and out.completion_mask.sum() > 0

    monkeypatch.setattr(default_model, "default_model_path", lambda s=None, build=True: tmp_path / s.architecture)
    preset = load_config(str(Path(__file__).parents[1] / "examples" / "gpu_gpt_oss.yaml"), {})
    assert (preset.model, preset.device, preset.dtype) == ("default-gpt-oss", "cuda", "bfloat16")
    assert preset.model_path() == str(tmp_path / "gpt-oss")


def test_a_user_manifest_primes_the_default_model_once_and_built_in_ones_do_not(tmp_path, monkeypatch):
    """A manifest of a class the corpus can derive programs for (the example's guessing game) gets the default
    model primed on programs using its declared names, built once and cached; built-in environments and
    manifests of a class not recognised get the default model itself."""
    monkeypatch.setattr(default_model, "PRIME_PROGRAMS", 8)
    monkeypatch.setattr(default_model, "PRIME_STEPS", 2)
    base = build_default_model(tmp_path / "base", TINY)
    example = str(Path(__file__).parents[1] / "examples" / "custom_env" / "openenv.yaml")
    primed = default_model.primed_for(base, example, {}, TINY)
    assert primed != base and primed.parent == base.parent and (primed / "config.json").is_file()
    assert _weights(primed).keys() == _weights(base).keys()
    assert any(not torch.equal(_weights(primed)[k], _weights(base)[k]) for k in _weights(base)), "it trained"

    def must_not_build(*args, **kwargs):
        raise AssertionError("primed again")

    monkeypatch.setattr(default_model, "_prime", must_not_build)
    assert default_model.primed_for(base, example, {}, TINY) == primed  # cached
    with pytest.raises(AssertionError, match="primed again"):  # another run's prompt is another priming
        default_model.primed_for(base, example, {"high": 50}, TINY)
    assert default_model.primed_for(base, "2048", {}, TINY) == base
    toy = str(Path(__file__).parent / "toy_env" / "openenv.yaml")  # "an action dict": no class to derive from
    assert default_model.primed_for(base, toy, {}, TINY) == base
