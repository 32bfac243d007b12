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

import stratagem.rl.learner as learner_module
from stratagem.cli import main
from stratagem.rl.config import load_config
from stratagem.rl.offload import ActivationOffload
from stratagem.rl.trainer import Trainer
from stratagem.viz.recording import read_recording
from tests.conftest import alive_in_session

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
                "rewards/function_works", "rewards/failure_penalty", "frac_programs_built", "frac_played_clean",
                "draw_rate", "loss_rate"):  # fmt: skip
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
    played = json.loads(capsys.readouterr().out)
    assert played["episodes"] == 2 and played["program"] == best["sha"]  # the file best.json describes
    replays = sorted((smoke_run / "replays").glob("*.jsonl.gz"))
    assert len(replays) == len(best["seeds"])
    assert read_recording(replays[0]).header["program"] == best["sha"]


def test_the_run_ends_with_its_curves_and_the_best_episode_as_a_gif(smoke_run, tmp_path):
    from PIL import Image

    from stratagem.rl.rundir import GIF_FRAMES, RunDir
    from stratagem.viz.plots import figure_size, panels, plot_run, read_metrics

    titles = [p.title for p in panels(read_metrics(smoke_run / "metrics.jsonl"))]
    assert {"reward (mean ± std)", "episodes won, drawn, lost", "score", "KL to the reference",
            "completion length (tokens)", "reward functions (mean)",
            "programs built, played clean"} <= set(titles)  # fmt: skip
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
    """Three steps, uninterrupted, on the CLI's base config: what every resumed run must reproduce exactly."""
    run = tmp_path_factory.mktemp("full") / "run"
    Trainer(load_config(None, {**SMALL, "model": str(tiny_policy), "max_steps": 3, "save_steps": 3}), run).train()
    return run


def test_resume_after_a_crash_equals_the_uninterrupted_run(full_run, tiny_policy, tmp_path):
    run = tmp_path / "cut"
    config = load_config(
        None, {**SMALL, "model": str(tiny_policy), "max_steps": 3, "save_steps": 2, "output_dir": str(run)}
    )  # the embedded default run's base, as the CLI uses
    trainer = Trainer(config, run)
    trainer.step(), trainer.step()
    trainer.checkpoint()
    trainer.step()  # logged, never checkpointed: the "crash" comes before the run's last checkpoint
    trainer.close()
    assert len(_comparable(run)) == 3
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)
    for name, tensor in _adapter(full_run).items():
        assert torch.equal(tensor, _adapter(run)[name]), name


def test_kill_9_at_any_moment_then_resume_equals_the_uninterrupted_run(full_run, tiny_policy, tmp_path):
    run = tmp_path / "killed"
    argv = [sys.executable, "-m", "stratagem.cli", "train", "--model", str(tiny_policy), "--out", str(run),
            "--steps", "3", "--save-steps", "1", *_flags(SMALL)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "latest").exists():  # killed somewhere after the first checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its sandbox processes, mid-whatever-they-were-doing
    proc.wait()
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)


def test_micro_batches_through_the_trainer_give_the_one_batch_gradient(tiny_policy, tmp_path, monkeypatch):
    """And with ``activation_offload`` (activations saved for backward kept in host memory) the same, exactly."""
    offloaded: list[int] = []

    class Spy(ActivationOffload):  # counts the micro-batches whose activations went to the host
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            offloaded.append(1)

    monkeypatch.setattr(learner_module, "ActivationOffload", Spy)
    config = load_config(None, {**SMALL, "model": str(tiny_policy), "per_device_train_batch_size": 8,
                          "gradient_accumulation_steps": 1, "beta": 0.0, "num_iterations": 1,
                          "activation_offload": True})  # fmt: skip
    trainer = Trainer(config, tmp_path / "run")
    try:
        trainer.model.eval()
        from stratagem.agents.policy import sample

        completions = sample(trainer.model, trainer.tokenizer, trainer.prompt_ids, trainer.prompt_mask,
                             trainer.sampling, torch.Generator().manual_seed(0))  # fmt: skip
        advantages = torch.randn(8, generator=torch.Generator().manual_seed(0))
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        for p in params:  # LoRA starts with B = 0; make every LoRA gradient non-trivial
            torch.nn.init.normal_(p, std=0.02)
        grads = []
        for micro, steps in ((8, 1), (4, 2), (2, 4)):
            learner = trainer.learner
            learner.config = config.model_copy(update={"per_device_train_batch_size": micro,
                                                       "gradient_accumulation_steps": steps})  # fmt: skip
            learner.accumulate(learner.batch(completions, advantages), None, None)
            grads.append([p.grad.clone() for p in params])
            learner.optimizer.zero_grad(set_to_none=True)
        for other in grads[1:]:
            for a, b in zip(grads[0], other, strict=True):
                assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        assert any(g.abs().max() > 0 for g in grads[0])
        assert len(offloaded) == 1 + 2 + 4  # every micro-batch's forward ran under the offload
    finally:
        trainer.close()


def test_flags_given_with_resume_override_the_saved_config(smoke_run, tmp_path, capsys):
    run = tmp_path / "extended"
    import shutil

    shutil.copytree(smoke_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["output_dir"] = str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(run), "--max-steps", "3", "--lr", "0.05", "-p", "max_tile=1024"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["max_steps"] == 3 and saved["learning_rate"] == 0.05 and saved["env_params"] == {"max_tile": 1024}
    assert [m["step"] for m in _comparable(run)] == [1, 2, 3]
    assert "resumed from step 2" in capsys.readouterr().out
    assert main(["train", "--out", str(smoke_run)]) == 2  # a new run into a used directory: pointed at --resume
    assert f"--resume {smoke_run}" in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_starts_over_with_the_saved_config(full_run, tiny_policy, tmp_path):
    run = tmp_path / "early"
    config = load_config(None, {**SMALL, "model": str(tiny_policy), "max_steps": 3, "save_steps": 3,
                                "output_dir": str(run)})  # fmt: skip
    trainer = Trainer(config, run)
    trainer.step()  # logged, then the run dies before any checkpoint
    trainer.close()
    assert not (run / "checkpoints").exists() and len(_comparable(run)) == 1
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)


def test_ctrl_c_checkpoints_the_last_finished_step_and_resume_equals_the_uninterrupted_run(full_run, tiny_policy,
                                                                                           tmp_path):  # fmt: skip
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, mid-run and before any checkpoint."""
    run = tmp_path / "ctrl-c"
    argv = [sys.executable, "-m", "stratagem.cli", "train", "--model", str(tiny_policy), "--out", str(run),
            "--steps", "3", "--save-steps", "100", *_flags(SMALL)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    done = len(_comparable(run))
    assert last.startswith(f"stratagem train: interrupted after {done} of 3 steps; checkpoint at step {done}")
    assert f"--resume {run}" in last
    assert not alive_in_session(proc.pid), "processes of the run outlived it"
    assert main(["train", "--resume", str(run)]) == 0
    assert _comparable(run) == _comparable(full_run)


def test_a_run_without_a_best_program_says_so_and_names_no_file(tiny_policy, tmp_path, capsys):
    run = tmp_path / "none"
    # One token: never a whole program.
    argv = ["train", "--model", str(tiny_policy), "--out", str(run), "--steps", "1", *_flags(SMALL),
            "--max-completion-length", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "inf" not in out and "best_strategy.py" not in out and "no best program" in out
    assert not (run / "best_strategy.py").exists()


def test_a_best_program_is_kept_on_its_reward_over_fresh_confirmation_seeds(tiny_policy, tmp_path):
    from stratagem.agents.runner import Runner
    from stratagem.envs.spec import resolve

    run = tmp_path / "confirmed"
    argv = ["train", "--model", str(tiny_policy), "--out", str(run), "--steps", "1", *_flags(SMALL),
            "--best-episodes", "3", "--no-record-best"]  # fmt: skip
    assert main(argv) == 0
    best = json.loads((run / "best.json").read_text())
    assert len(best["seeds"]) == 3 and min(best["seeds"]) >= 2**31  # no training batch plays these
    batch_best = max(json.loads(line)["reward_max"] for line in (run / "metrics.jsonl").read_text().splitlines())
    assert best["batch_reward"] == pytest.approx(batch_best)  # metrics hold float32 figures
    config = load_config(run / "config.yaml")
    with Runner("2048", workers=2) as runner:
        result = runner.evaluate([(run / "best_strategy.py").read_text()], best["seeds"])[0]
    assert result.mean_score == best["mean_score"]
    assert config.rubric().score_all([result], resolve("2048").reward)[0].total == pytest.approx(best["reward"])
