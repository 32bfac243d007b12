"""`stratagem train` end to end on a tiny policy: the run directory, resume after a crash (and
after ``kill -9``) equal to the uninterrupted run, the adapter's peft round trip, and gradient
accumulation through the trainer's own batching."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stratagem.cli import main
from stratagem.rl.config import load_config
from stratagem.rl.trainer import Trainer
from stratagem.viz.recording import read_recording

SMALL = {"num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
         "max_completion_length": 48, "num_episodes": 2, "workers": 2, "learning_rate": 1e-2, "lora_r": 4,
         "lora_alpha": 8, "beta": 0.05, "num_iterations": 2, "seed": 3}  # fmt: skip


def _flags(values: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]


def _comparable(run: Path) -> list[dict]:
    """metrics.jsonl without wall-clock timings."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def smoke_run(tiny_policy, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("train") / "run"
    argv = ["train", "--model", str(tiny_policy), "--out", str(run), "--steps", "2", "--save-steps", "1",
            "--save-merged", *_flags(SMALL)]  # fmt: skip
    assert main(argv) == 0
    return run


def test_two_step_train_writes_the_whole_run_directory(smoke_run, capsys):
    config = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert config["max_steps"] == 2 and config["loss_type"] == "dapo" and config["output_dir"] == str(smoke_run)
    metrics = _comparable(smoke_run)
    assert [m["step"] for m in metrics] == [1, 2]
    for key in ("reward", "reward_std", "win_rate", "score", "kl", "loss", "completion_length", "grad_norm",
                "rewards/function_works", "rewards/failure_penalty", "valid_programs"):  # fmt: skip
        assert key in metrics[0], key
    assert list((smoke_run / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (smoke_run / "completions" / "step-000001.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"text", "reward", "parts", "outcomes"} <= set(rows[0])
    assert (smoke_run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert (smoke_run / "adapter" / "adapter_config.json").is_file()
    assert (smoke_run / "merged" / "config.json").is_file()
    sandbox = json.loads((smoke_run / "sandbox.json").read_text())  # the layers that confined its programs
    assert set(sandbox["applied"]) == {"namespaces", "identity", "landlock", "seccomp", "rlimits"}
    assert sandbox["missing"] == {} and sandbox["allow_weaker"] is False
    # The best program is a runnable strategy, and its episodes were recorded.
    best = json.loads((smoke_run / "best.json").read_text())
    second = (smoke_run / "completions" / "step-000002.jsonl").read_text().splitlines()
    assert best["reward"] == max(r["reward"] for r in rows + [json.loads(line) for line in second])
    capsys.readouterr()
    assert main(["play", "2048", "--strategy", str(smoke_run / "best_strategy.py"), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    replays = sorted((smoke_run / "replays").glob("*.jsonl.gz"))
    assert len(replays) == len(best["seeds"])
    assert read_recording(replays[0]).header["program"] == best["sha"]


def test_the_run_ends_with_its_curves_and_the_best_episode_as_a_gif(smoke_run, tmp_path):
    from PIL import Image

    from stratagem.rl.rundir import GIF_FRAMES, RunDir
    from stratagem.viz.plots import figure_size, panels, plot_run, read_metrics

    titles = [p.title for p in panels(read_metrics(smoke_run / "metrics.jsonl"))]
    assert {"reward (mean ± std)", "win rate", "score", "KL to the reference", "completion length (tokens)",
            "reward functions (mean)"} <= set(titles)  # fmt: skip
    with Image.open(smoke_run / "curves.png") as image:
        assert image.format == "PNG" and image.size == figure_size(len(titles))
    # Drawn after the last step: the same picture as drawing the finished run's metrics now.
    assert (smoke_run / "curves.png").read_bytes() == plot_run(smoke_run, tmp_path / "again.png").read_bytes()
    assert not list(smoke_run.glob(".*")), "a staging file was left in the run directory"
    pytest.importorskip("stratagem.viz.export")
    best = RunDir(smoke_run).best_replay()
    with Image.open(smoke_run / "best_episode.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == min(GIF_FRAMES, len(best.steps))


def test_the_adapter_loads_with_peft_and_the_merged_model_matches_it(smoke_run, tiny_policy):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 33, 2, 9, 40]])
    base = AutoModelForCausalLM.from_pretrained(tiny_policy)
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, smoke_run / "adapter")(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(smoke_run / "merged")(input_ids=ids).logits
    assert not torch.allclose(plain, adapted, atol=1e-4), "the adapter changed nothing"
    assert torch.allclose(adapted, merged, atol=1e-4)


@pytest.fixture(scope="module")
def full_run(tiny_policy, tmp_path_factory) -> Path:
    """Four steps, uninterrupted, on the CLI's base config: what every resumed run must reproduce exactly."""
    run = tmp_path_factory.mktemp("full") / "run"
    Trainer(load_config(None, {**SMALL, "model": str(tiny_policy), "max_steps": 4, "save_steps": 4}), run).train()
    return run


def test_resume_after_a_crash_equals_the_uninterrupted_run(full_run, tiny_policy, tmp_path):
    run = tmp_path / "cut"
    config = load_config(
        None, {**SMALL, "model": str(tiny_policy), "max_steps": 4, "save_steps": 2, "output_dir": str(run)}
    )  # the embedded default run's base, as the CLI uses
    trainer = Trainer(config, run)
    trainer.step(), trainer.step()
    trainer.checkpoint()
    trainer.step()  # logged, never checkpointed: the "crash" comes before step 4's checkpoint
    trainer.close()
    assert len(_comparable(run)) == 3
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)
    for name, tensor in _adapter(full_run).items():
        assert torch.equal(tensor, _adapter(run)[name]), name


def test_kill_9_at_any_moment_then_resume_equals_the_uninterrupted_run(full_run, tiny_policy, tmp_path):
    run = tmp_path / "killed"
    argv = [sys.executable, "-m", "stratagem.cli", "train", "--model", str(tiny_policy), "--out", str(run),
            "--steps", "4", "--save-steps", "1", *_flags(SMALL)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "latest").exists():  # killed somewhere after the first checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its sandbox processes, mid-whatever-they-were-doing
    proc.wait()
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)


def test_micro_batches_through_the_trainer_give_the_one_batch_gradient(tiny_policy, tmp_path):
    config = load_config(None, {**SMALL, "model": str(tiny_policy), "per_device_train_batch_size": 8,
                          "gradient_accumulation_steps": 1, "beta": 0.0, "num_iterations": 1})  # fmt: skip
    trainer = Trainer(config, tmp_path / "run")
    try:
        trainer.model.eval()
        from stratagem.agents.policy import sample

        completions = sample(trainer.model, trainer.tokenizer, trainer.prompt_ids, trainer.prompt_mask,
                             trainer.sampling, trainer.generator)  # fmt: skip
        advantages = torch.randn(8, generator=torch.Generator().manual_seed(0))
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        for p in params:  # LoRA starts with B = 0; make every LoRA gradient non-trivial
            torch.nn.init.normal_(p, std=0.02)
        grads = []
        for micro, steps in ((8, 1), (4, 2), (2, 4)):
            trainer.config = config.model_copy(update={"per_device_train_batch_size": micro,
                                                       "gradient_accumulation_steps": steps})  # fmt: skip
            trainer.accumulate(trainer.batch(completions, advantages), None, None)
            grads.append([p.grad.clone() for p in params])
            trainer.optimizer.zero_grad(set_to_none=True)
        for other in grads[1:]:
            for a, b in zip(grads[0], other, strict=True):
                assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        assert any(g.abs().max() > 0 for g in grads[0])
    finally:
        trainer.close()


def test_resume_refuses_to_change_the_config(smoke_run, capsys):
    assert main(["train", "--resume", str(smoke_run), "--lr", "0.1"]) == 2
    assert "only --max-steps may change" in capsys.readouterr().err
    assert main(["train", "--out", str(smoke_run)]) == 2
    assert "--resume" in capsys.readouterr().err
