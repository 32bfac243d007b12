"""Our output is ours: loading, sampling and training print no warning or progress bar of transformers' or peft's.

The calls that triggered them are fixed (the KV cache passed by the name transformers wants,
checkpointing enabled by its current name); transformers' own loading bar, which no call can
avoid, is turned off while we load and only then. Each run is a fresh interpreter with
``-W always``, so every warning raised is seen on stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


def test_one_training_step_prints_only_our_output(tiny_dir, tmp_path):
    flags = {"max-steps": 1, "num-generations": 2, "per-device-train-batch-size": 2, "max-completion-length": 16,
             "num-episodes": 1, "workers": 1, "lora-r": 2, "lora-alpha": 4, "save-steps": 1}  # fmt: skip
    done = python("-W", "error::FutureWarning", "-m", "stratagem.cli", "train", "--model", str(tiny_dir),
                  "--out", str(tmp_path / "run"), "--gradient-checkpointing",
                  *(f"--{k}={v}" for k, v in flags.items()))  # fmt: skip
    (step,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Every call the trainer makes ran: load, LoRA, checkpointing, sampling through the KV cache, log-probs, backward.
    assert step["completion_length"] > 1 and "grad_norm" in step, step
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


def test_drawing_prints_no_pkg_resources_warning_of_pygames(tmp_path):
    """pygame 2.6 imports ``pkg_resources`` for its default font, and setuptools 80 warns at that import (a
    UserWarning; setuptools here is newer and has no ``pkg_resources``, so one that warns as 80's does stands in)."""
    (tmp_path / "pkg_resources.py").write_text(
        "import warnings\n"
        "warnings.warn('pkg_resources is deprecated as an API. See https://setuptools.pypa.io', UserWarning)\n"
        "def resource_exists(*a): return False\n"
        "def resource_stream(*a): raise OSError\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    draw = "from stratagem.viz._pygame import pygame, start; start(headless=True); pygame.font.Font(None, 12)"
    done = subprocess.run([sys.executable, "-W", "always", "-c", draw], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pkg_resources" not in done.stderr, done.stderr
