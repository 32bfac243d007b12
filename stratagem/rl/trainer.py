"""The GRPO loop: prompt -> completions -> programs played in the sandbox -> rewards -> update.

One step, top to bottom (``Trainer.step``):

1. sample ``per_device_train_batch_size * gradient_accumulation_steps`` completions of the
   task prompt, in groups of ``num_generations`` (``agents.policy``);
2. play every program of a group on the same episode seeds (common random numbers), in the
   sandbox (``agents.runner``), and score it with the rubric (``agents.rewards``);
3. group-relative advantages, then the learner's ``num_iterations`` optimizer updates over
   micro-batches (``learner.py``);
4. log, keep the best program, checkpoint and redraw curves.png (``rundir.py``, ``checkpoint.py``).

The trainer does not know which loss variant it runs. Under torchrun each rank samples, plays and trains on
its own groups of the step (``distributed.py``); rank 0 alone writes the run directory and prints.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stratagem.agents.interrupts import deferred_interrupt, raise_if_dropped, sticky_interrupts
from stratagem.agents.policy import (
    add_lora,
    context_length,
    enable_checkpointing,
    encode_prompts,
    load_model,
    no_transformers_bars,
    sample,
)
from stratagem.agents.prompts import task_prompt
from stratagem.agents.results import ProgramResult
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.spec import resolve
from stratagem.rl.checkpoint import latest_checkpoint, load_state, restore_rng, rng_state, save_checkpoint
from stratagem.rl.config import ConfigError, GRPOConfig, make_config, read_yaml
from stratagem.rl.distributed import Distributed, group_uniforms
from stratagem.rl.learner import Learner
from stratagem.rl.losses import group_advantages
from stratagem.rl.rundir import RunDir
from stratagem.rl.step_metrics import live_line, step_metrics


@dataclass
class Best:
    reward: float = -math.inf
    step: int = 0
    sha: str | None = None


def episode_seeds(seed: int, step: int, group: int, groups: int, count: int) -> list[int]:
    """Fresh seeds for every group of every step (a program cannot overfit a fixed set), shared within a group."""
    start = (seed * 7_919 + (step * groups + group) * count) % (2**31 - count)
    return list(range(start, start + count))


class Trainer:
    def __init__(self, config: GRPOConfig, run_dir: str | Path, resume: bool = False) -> None:
        """Check and build everything; on failure nothing is left behind (no run directory, no process)."""
        self.config = config
        config.check_model()
        self.spec = resolve(config.env)
        self.rubric = config.rubric()
        self.device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device; use --device cpu or auto")
        self.dist = Distributed.from_env()  # torchrun's rank and world size; alone, rank 0 of 1 and no process group
        self.dist.start(self.device, config.ddp_timeout)
        self.run = RunDir(Path(self.dist.broadcast(str(run_dir))))  # rank 0's: a default name is a timestamp
        # The environment and its parameters first: bad -p parameters fail before a model is loaded.
        self.runner = Runner(self.spec, config.env_params, workers=config.workers,
                             limits=Limits(move_s=config.move_timeout, episode_s=config.episode_timeout,
                                           memory_mb=config.memory_mb, cpu_s=config.cpu_seconds),
                             allow_weaker_sandbox=config.allow_weaker_sandbox, url=config.url,
                             ray=config.ray)  # fmt: skip
        try:
            self._build(config, resume)
        except BaseException:
            self.runner.close()
            self.dist.close()
            raise
        if self.dist.is_main:
            self.run.record_sandbox(self.sandbox)

    def _build(self, config: GRPOConfig, resume: bool) -> None:
        self.sandbox = self.runner.sandbox  # starts the sandbox now: a machine that cannot confine programs fails here
        # Built on first use; seeding comes after, so a run that builds the default model and one that
        # finds it cached start from the same RNG state.
        with self.dist.main_first():  # under torchrun, rank 0 builds it and the others find it cached
            model_path = config.model_path()
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        attention = config.attn_implementation
        if attention is None and self.device == "cuda" and config.dtype != "float32":
            attention = "stratagem"  # our flash attention: sinks, windows, left padding, GQA, with a backward
        base, self.tokenizer = load_model(model_path, config.dtype, self.device, attention)
        self.model = add_lora(base, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
        if config.gradient_checkpointing:
            enable_checkpointing(self.model)
        self.learner = Learner(self.model, config, self.device, self.dist)  # the adapter's optimizer, schedule, loss
        self.shard = self.dist.shard(config.generation_batch_size, config.num_generations)  # its groups of a step
        self.sampling = config.sampling_params()
        prompts = [task_prompt(self.spec, config.env_params)] * config.generation_batch_size
        self.prompt_ids, self.prompt_mask = encode_prompts(self.tokenizer, prompts,
                                                           config.max_prompt_length, context=context_length(base),
                                                           max_new_tokens=config.max_completion_length)  # fmt: skip
        self.step_done = 0
        self.saved_step = 0  # the step of the last checkpoint written or restored
        self.best = Best()
        self._rng_at_step: dict[str, Any] | None = None  # RNG state where the step in progress began
        self._to_record: tuple[str, list[int]] | None = None  # a new best program's text and seeds, to replay
        self._candidate: tuple[int, str, dict[str, Any]] | None = None  # a best to confirm (best_episodes)
        if resume:
            self._restore()
        self.dist.same_parameters(self.learner.trainable)  # as DDP starts: every rank from rank 0's adapter
        if self.dist.is_main:
            self.run.create(config.to_yaml())  # on resume too: flags given with --resume hold for the next resume

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Run to ``max_steps``; returns the metrics of the steps this call ran. Ctrl-C checkpoints the last
        finished step; one swallowed by a finaliser is raised at the next phase's end (``sticky_interrupts``)."""
        with sticky_interrupts():
            return self._train()

    def _train(self) -> list[dict[str, Any]]:
        config, history = self.config, []
        bar = tqdm(total=config.max_steps, initial=self.step_done, desc="GRPO", unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main)  # fmt: skip
        try:
            self._rng_at_step = rng_state()
            while self.step_done < config.max_steps:
                metrics = self.step()
                history.append(metrics)
                bar.update(1)
                bar.set_postfix_str(f"reward {metrics['reward']:+.3f} score {metrics['score']:.0f}")
                if self.dist.is_main and (self.step_done % config.logging_steps == 0
                                          or self.step_done == config.max_steps):  # fmt: skip
                    tqdm.write(live_line(metrics))
                if self.step_done % config.save_steps == 0 or self.step_done == config.max_steps:
                    self.checkpoint()
                    if self.dist.is_main:
                        self.run.plot_curves()  # curves.png: at each checkpoint, so also at the end
                raise_if_dropped()
            self.finish()
        except KeyboardInterrupt:
            bar.close()
            self.checkpoint_on_interrupt()
            raise
        finally:
            bar.close()
            self.close()
        return history

    def step(self) -> dict[str, Any]:
        config, step, shard = self.config, self.step_done + 1, self.shard
        timer = time.perf_counter()
        self.model.eval()
        # A group's draws are keyed by (seed, step, group): the same on any rank, at any world size, resumed or not.
        draws = group_uniforms(config.seed, step, shard.group_ids, config.num_generations,
                               config.max_completion_length, self.device)  # fmt: skip
        mine = sample(self.model, self.tokenizer, self.prompt_ids, self.prompt_mask, self.sampling, draws,
                      max_batch=config.sampling_batch_size)  # fmt: skip
        t_sample = time.perf_counter() - timer
        raise_if_dropped()  # a Ctrl-C that landed in a finaliser while sampling

        timer = time.perf_counter()
        results: list[ProgramResult] = []
        for index, group in enumerate(shard.group_ids):
            members = mine.texts[index * config.num_generations : (index + 1) * config.num_generations]
            results += self.runner.evaluate(members, episode_seeds(config.seed, step, group, shard.total_groups,
                                                                   config.num_episodes))  # fmt: skip
        # The whole step's batch on every rank (alone, this one's), scored and normalised as one.
        completions = self.dist.gather_completions(mine, self.tokenizer.pad_token_id)
        results = [result for part in self.dist.gather(results) for result in part]
        scored = self.rubric.score_all(results, self.spec.reward)
        rewards = torch.tensor([s.total for s in scored], dtype=torch.float32)
        advantages = group_advantages(rewards, config.num_generations, config.scale_rewards)
        t_reward = time.perf_counter() - timer

        raise_if_dropped()
        with deferred_interrupt():  # the update and its bookkeeping land whole, or the step never happened
            metrics = self._finish_step(step, mine, completions, results, scored, rewards, advantages[shard.rows],
                                        t_sample, t_reward)  # fmt: skip
            self._rng_at_step = rng_state()  # what a checkpoint of this step holds
        self._record_best()
        self._rng_at_step = rng_state()
        return metrics

    def _finish_step(self, step: int, mine: Any, completions: Any, results: list[ProgramResult], scored: list[Any],
                     rewards: torch.Tensor, advantages: torch.Tensor, t_sample: float,
                     t_reward: float) -> dict[str, Any]:  # fmt: skip
        """The update on this rank's completions (``mine``, ``advantages``); the metrics of the whole batch."""
        config = self.config
        timer = time.perf_counter()
        train_metrics = self.learner.update(mine, advantages)
        t_update = time.perf_counter() - timer

        self.step_done = step
        metrics = step_metrics(step, completions, results, scored, rewards, train_metrics, config.num_generations)
        metrics.update({"time/sample_s": t_sample, "time/reward_s": t_reward, "time/update_s": t_update})
        if not self.dist.is_main:
            return metrics
        self.run.log(metrics)
        if config.log_completions:
            self.run.write_completions(step, [
                {"reward": s.total, "parts": s.parts, "error": r.error, "rule": r.rule, "message": r.message[:300],
                 "score": r.mean_score, "win_rate": r.win_rate, "outcomes": outcomes(r), "sha": r.sha, "text": text}
                for text, r, s in zip(completions.texts, results, scored, strict=True)])  # fmt: skip
        self._keep_best(step, results, scored)
        return metrics

    # -- bookkeeping --------------------------------------------------------------------------

    def _keep_best(self, step: int, results: list[ProgramResult], scored: list[Any]) -> None:
        """A step's top program becomes the candidate if its batch reward beats the best's. The top of 64 programs
        on 4 shared seeds is mostly the luckiest, so with ``best_episodes`` it must also beat the best on fresh
        seeds (``_confirm_best``, outside the step's uninterruptible part); the kept reward is that unbiased one."""
        index = max(range(len(scored)), key=lambda i: scored[i].total)
        result, reward = results[index], scored[index].total
        if result.source is None or reward <= self.best.reward:
            return
        info = {"step": step, "reward": reward, "completion_sha": result.sha, "mean_score": result.mean_score,
                "win_rate": result.win_rate, "wins": result.wins, "draws": result.draws, "losses": result.losses,
                "seeds": [e.seed for e in result.episodes]}  # fmt: skip
        if self.config.best_episodes:
            self._candidate = (step, result.source, info)
        else:
            self._write_best(step, result.source, info, [e.seed for e in result.episodes])

    def _write_best(self, step: int, source: str, info: dict[str, Any], seeds: list[int]) -> None:
        # best.json's sha is the file's, as ``play`` hashes it; the replays are of that file too, so they carry it.
        text, sha = self.run.write_best(source, info, str(self.config.env), self.spec.strategy)
        self.best = Best(reward=info["reward"], step=step, sha=sha)
        if self.config.record_best and seeds:
            self._to_record = (text, seeds)

    def _confirm_best(self) -> None:
        """The candidate replayed on ``best_episodes`` seeds no batch uses (above 2**31) and scored by the rubric."""
        if self._candidate is None:
            return
        (step, source, info), self._candidate = self._candidate, None
        seeds = [2**31 + (step * self.config.best_episodes + i) % 2**30 for i in range(self.config.best_episodes)]
        result = self.runner.evaluate([source], seeds)[0]
        reward = self.rubric.score_all([result], self.spec.reward)[0].total
        if result.error is None and reward > self.best.reward:
            info = {**info, "batch_reward": info["reward"], "reward": reward, "mean_score": result.mean_score,
                    "win_rate": result.win_rate, "wins": result.wins, "draws": result.draws,
                    "losses": result.losses, "seeds": seeds}  # fmt: skip
            self._write_best(step, source, info, seeds[: self.config.num_episodes])

    def _record_best(self) -> None:
        """Replays of the new best program: played again, so outside the step's uninterruptible part."""
        if not self.dist.is_main:  # rank 0 keeps the best (``_keep_best``)
            return
        self._confirm_best()
        if self._to_record is not None:
            (text, seeds), self._to_record = self._to_record, None
            self.run.clear_replays()
            self.runner.evaluate([text], seeds, record=self.run.replays)

    def checkpoint(self, rng: dict[str, Any] | None = None) -> None:
        """Rank 0 writes it; it holds nothing per rank (the adapter and optimizer are every rank's), so any world
        size resumes it."""
        if self.dist.is_main:
            state = {"step": self.step_done, "optimizer": self.learner.optimizer.state_dict(),
                     "scheduler": self.learner.scheduler.state_dict(), "rng": rng or rng_state(),
                     "best": vars(self.best)}  # fmt: skip
            save_checkpoint(self.run.checkpoints, self.step_done, self.model, state, keep=self.config.save_total_limit)
        self.saved_step = self.step_done

    def checkpoint_on_interrupt(self) -> None:
        """Ctrl-C: keep the last finished step. Its RNG state is the one the interrupted step started from,
        so the resumed run samples that step again exactly as an uninterrupted run would have."""
        if self.step_done > self.saved_step and self._rng_at_step is not None:
            with deferred_interrupt():
                self.checkpoint(rng=self._rng_at_step)

    def _restore(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        checkpoint = latest_checkpoint(self.run.checkpoints)
        if checkpoint is None:  # stopped before its first checkpoint: start over, same directory, same config
            if self.dist.is_main:
                self.run.start_over()
            return
        state = load_state(checkpoint)
        set_peft_model_state_dict(self.model, load_file(checkpoint / "adapter_model.safetensors", device=self.device))
        self.learner.optimizer.load_state_dict(state["optimizer"])
        self.learner.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        self.step_done, self.best = state["step"], Best(**state["best"])
        self.saved_step = self.step_done
        if self.dist.is_main:
            self.run.truncate_metrics(self.step_done)
            self.run.tensorboard(purge_step=self.step_done + 1)

    def finish(self) -> None:
        """The final adapter (peft format), the merged model when asked for, the best episode as a GIF."""
        if not self.dist.is_main:
            return
        self.model.save_pretrained(self.run.path / "adapter")
        if self.config.record_best:
            self.run.export_best_episode()
        if self.config.save_merged:
            merged = self.model.merge_and_unload()
            with no_transformers_bars():
                merged.save_pretrained(self.run.path / "merged")
            self.tokenizer.save_pretrained(self.run.path / "merged")

    def close(self) -> None:
        self.runner.close()
        self.run.close()
        self.dist.close()


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None,
                  env_params: dict[str, Any] | None = None) -> GRPOConfig:  # fmt: skip
    """A run's own config (its config.yaml), with ``overrides`` on top: flags given with ``--resume`` win, as
    ``--max-steps`` does in TRL's resume; ``env_params`` (``-p``) merge into the saved ones."""
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory")
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: not a stratagem run directory (no config.yaml in it)")
    values = {**read_yaml(path), **(overrides or {})}
    if env_params:
        values["env_params"] = {**values.get("env_params", {}), **env_params}
    values["output_dir"] = str(run_dir)  # the run lives where it is, even if it was moved
    return make_config(values)
