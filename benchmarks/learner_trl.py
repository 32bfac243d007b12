"""TRL's side of ``bench_learner.py``: its ``GRPOTrainer`` on the same saved model, prompts, LoRA, loss and reward,
timed and measured from outside (its ``generate`` calls and reward function clocked, the update the rest)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from learner_measure import (
    StepTimes,
    peak_gib,
    peak_memory,
    prompts,
    recording,
    release,
    snapshot_path,
    stand_in_reward,
    sync,
)


@contextlib.contextmanager
def timed(owner: Any, name: str, into: list[float]) -> Iterator[None]:
    """Every call of ``owner.name`` timed into ``into`` (TRL's generate and reward, seen from outside)."""
    original = getattr(owner, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            into.append(time.perf_counter() - started)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def trl_trainer(args: argparse.Namespace, completion: int, generations: int, steps: int,
                reward: Callable[..., list[float]]) -> Any:  # fmt: skip
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from stratagem.agents.policy import no_transformers_bars

    config = GRPOConfig(output_dir=str(args.model_dir / "trl"), max_steps=steps, learning_rate=1e-5,
                        per_device_train_batch_size=min(8, generations),
                        gradient_accumulation_steps=max(1, generations // 8),
                        num_generations=min(args.group, generations), max_completion_length=completion,
                        loss_type="dapo", beta=0.0, temperature=1.0, logging_steps=1, report_to="none",
                        save_strategy="no", bf16=args.device == "cuda", use_cpu=args.device == "cpu",
                        gradient_checkpointing=True, seed=0, disable_tqdm=True)  # fmt: skip
    attention = "eager" if args.shape == "gpt-oss" else "sdpa"
    config.model_init_kwargs = {"dtype": torch.bfloat16 if args.device == "cuda" else torch.float32,
                                "attn_implementation": attention}  # fmt: skip
    texts = prompts(max(generations // args.group, 1) * steps * 2, args.prompt, args.vocab)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    with no_transformers_bars():
        trainer = GRPOTrainer(model=str(args.model_dir), reward_funcs=reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": texts}), peft_config=lora)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # its per-step dicts; the table says what is measured
    return trainer


def run_trl(args: argparse.Namespace) -> StepTimes:
    from transformers import GenerationMixin, TrainerCallback

    times, generate, rewards, steps = StepTimes(), [], [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            steps.append(time.perf_counter() - self.started)

    def reward(completions: list[str], **kw: Any) -> list[float]:
        started = time.perf_counter()
        try:
            return stand_in_reward(completions)
        finally:
            rewards.append(time.perf_counter() - started)

    trainer = trl_trainer(args, args.completion, args.generations, args.steps + 1, reward)
    trainer.add_callback(Clock())
    marks: list[int] = []

    class Marks(TrainerCallback):  # where each step's generate and reward calls start
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            marks.append((len(generate), len(rewards)))

    trainer.add_callback(Marks())
    with peak_memory(args.device, times, snapshot_path(args, "trl")), timed(GenerationMixin, "generate", generate):
        trainer.train()
    marks.append((len(generate), len(rewards)))
    for step in range(1, len(steps)):  # step 0 warms up
        (g0, r0), (g1, r1) = marks[step], marks[step + 1]
        sample_s, reward_s = sum(generate[g0:g1]), sum(rewards[r0:r1])
        times.sample.append(sample_s)
        times.reward.append(reward_s)
        times.update.append(steps[step] - sample_s - reward_s)
    return times


def fits_trl(args: argparse.Namespace, length: int) -> tuple[float, float] | None:
    """TRL's step with ``generate`` answering random tokens of ``length`` at once: its peak GiB and seconds, None
    on running out of memory."""
    from transformers import GenerationMixin

    def instant(self: Any, input_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
        tail = torch.randint(2, args.vocab, (input_ids.shape[0], length), device=input_ids.device)
        return torch.cat([input_ids, tail], dim=1)

    release(args.device)
    trainer = trl_trainer(args, length, args.length_batch, 1, stand_in_reward)
    original = GenerationMixin.generate
    GenerationMixin.generate = instant
    try:
        started = time.perf_counter()
        with recording(args.device, snapshot_path(args, "trl", length)):
            trainer.train()
            sync(args.device)
        seconds = time.perf_counter() - started
        peak = peak_gib(args.device)
        # TRL logs the completions' mean length: a fit only counts if it trained on the whole length.
        trained = [row[key] for row in trainer.state.log_history for key in row if key.endswith("mean_length")]
        if trained and min(trained) < length:
            print(f"  trl at {length}: trained on completions of mean length {min(trained):.0f}, not {length}")
            return None
        return peak, seconds
    except torch.OutOfMemoryError:
        return None
    finally:
        GenerationMixin.generate = original
        del trainer
        release(args.device)


def trl_missing() -> str | None:
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        return f"trl left out: {exc} (pip install trl)"
    return None
