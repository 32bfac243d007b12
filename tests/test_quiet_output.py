"""Our output is ours: loading, sampling and training print no warning or progress bar of transformers' or peft's.

The calls that triggered them are fixed (the KV cache passed by the name transformers wants,
checkpointing enabled by its current name); transformers' own loading bar, which no call can
avoid, is turned off while we load and only then. Each run is a fresh interpreter with
``-W always``, so every warning raised is seen on stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.tiny_llama import save_tiny_llama

ROOT = Path(__file__).parents[1]
# What transformers, peft and torch print when a call is out of date or a bar runs.
NOISE = ("Loading weights", "Loading checkpoint shards", "past_key_values", "cache_params", "is deprecated",
         "[transformers]", "generation flags", "Setting `pad_token_id`")  # fmt: skip
WARNING = re.compile(r"^(?P<path>\S+?):\d+: (?P<category>\w*Warning): (?P<message>.*)$", re.M)
LIBRARIES = ("transformers", "peft", "torch", "stratagem", "<string>")


def python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-W", "always", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def assert_quiet(stderr: str) -> None:
    for match in WARNING.finditer(stderr):
        deprecation = match["category"] in ("FutureWarning", "DeprecationWarning", "PendingDeprecationWarning")
        assert not (deprecation and any(lib in match["path"] for lib in LIBRARIES)), match[0]
    for noise in NOISE:
        assert noise not in stderr, f"{noise!r} on stderr:\n{stderr}"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def test_load_sample_and_a_checkpointed_training_step_are_quiet(tiny_dir):
    """The trainer's calls one by one: load, LoRA, checkpointing, sampling through the KV cache, log-probs, backward."""
    script = textwrap.dedent(f"""
        import torch

        from stratagem.agents.policy import (SamplingParams, add_lora, enable_checkpointing, encode_prompts,
                                             load_model, sample)
        from stratagem.agents.prompts import task_prompt
        from stratagem.envs.spec import resolve
        from stratagem.rl.logprobs import model_token_logprobs

        base, tokenizer = load_model({str(tiny_dir)!r})
        model = add_lora(base, 4, 8, 0.0, ["all-linear"])
        enable_checkpointing(model)
        ids, mask = encode_prompts(tokenizer, [task_prompt(resolve("2048"))] * 2, 512)
        model.eval()
        params = SamplingParams(max_new_tokens=10, stop_at_program_end=False)
        out = sample(model, tokenizer, ids, mask, params, torch.Generator().manual_seed(0))
        assert out.completion_ids.shape[1] > 1, "the KV cache path was not taken"
        model.train()
        full = torch.cat([out.prompt_ids, out.completion_ids], 1)
        attention = torch.cat([out.prompt_mask, out.completion_mask], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logps = model_token_logprobs(model, full, attention, positions, out.completion_ids.shape[1])
        (logps * out.completion_mask).sum().backward()
        assert any(p.grad is not None for p in model.parameters() if p.requires_grad)
        print("ok")
    """)
    done = python("-W", "error::FutureWarning", "-c", script)
    assert "ok" in done.stdout
    assert_quiet(done.stderr)


def test_one_training_step_prints_only_our_output(tiny_dir, tmp_path):
    flags = {"max-steps": 1, "num-generations": 2, "per-device-train-batch-size": 2, "max-completion-length": 16,
             "num-episodes": 1, "workers": 1, "lora-r": 2, "lora-alpha": 4, "save-steps": 1}  # fmt: skip
    done = python("-m", "stratagem.cli", "train", "--model", str(tiny_dir), "--out", str(tmp_path / "run"),
                  *(f"--{k}={v}" for k, v in flags.items()))  # fmt: skip
    assert (tmp_path / "run" / "metrics.jsonl").is_file(), done.stdout
    assert_quiet(done.stderr)


def test_loading_restores_transformers_progress_bars_as_they_were(tiny_dir):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    from stratagem.agents.policy import load_model

    before = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    load_model(tiny_dir)
    assert (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()) == before
    hf_logging.disable_progress_bar()
    try:
        load_model(tiny_dir)
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        if before[0]:
            hf_logging.enable_progress_bar()
