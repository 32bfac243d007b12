"""A training run's directory for the dashboard's tests, made in seconds instead of a training run's minutes.

Everything in it is real except which program was sampled at which step: seven 2048 programs (good, poor,
illegal, crashing, forbidden, not Python) are played in the sandbox on two seeds and scored by the default
rubric, and each of ``STEPS`` steps is a draw from them that favours the better ones as the steps go by,
as a learning policy would. The files are what the trainer writes: completions and best program through
``RunDir``'s own writers, metrics lines as ``RunDir.log`` writes them (its TensorBoard copy left out: torch
is seconds to import), and the best program's replays recorded by ``stratagem play --record``. What the
learner alone knows (loss, KL, token counts) is absent; completion lengths are word counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import yaml

from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Runner
from stratagem.envs.spec import resolve
from stratagem.rl.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
STEPS = 8  # whole steps; a ninth is being written (its metrics line torn, no completions yet)
TORN_AT = 40  # bytes of its metrics line written so far
PER_STEP = 8  # completions a step: 2 groups of 4
SEEDS = [0, 1]

CORNER = (ROOT / "examples" / "strategies" / "corner_2048.py").read_text()
RANDOM = "```python\nimport random\n\ndef strategy(board):\n    return str(random.randrange(4))\n```"
PROGRAMS = {  # name -> (completion text, how likely a policy samples it at the first step and at the last)
    "corner": (f"```python\n{CORNER}```", 0.10, 0.55),
    "down_first": (f"```python\n{CORNER.replace('(3, 2, 1, 0)', '(2, 3, 0, 1)')}```", 0.15, 0.25),
    "right_only": ("```python\ndef strategy(board):\n    return '1'\n```", 0.20, 0.08),
    "random": (RANDOM, 0.20, 0.06),
    "crash": ("```python\ndef strategy(board):\n    return board[4][4]\n```", 0.15, 0.03),
    "forbidden": ("```python\nimport os\n\ndef strategy(board):\n    return os.getcwd()\n```", 0.10, 0.02),
    "not_python": ("```python\ndef strategy(board)\n    return 0\n```", 0.10, 0.01),
}
CONFIG = {"model": "default", "env": "2048", "env_params": {}, "seed": 42, "max_steps": 40, "num_generations": 4,
          "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "loss_type": "dapo", "beta": 0.0,
          "num_episodes": len(SEEDS), "move_timeout": 1.0, "episode_timeout": 60.0, "memory_mb": 512,
          "cpu_seconds": 120.0, "allow_weaker_sandbox": False, "log_completions": True,
          "record_best": True}  # fmt: skip


@dataclass
class MadeRun:
    """The run directory, and the step being written when it was made: its metrics line torn after
    ``TORN_AT`` bytes, its completions not written yet. ``finish_step()`` writes both, as the trainer would."""

    run: RunDir
    next_line: bytes
    next_rows: list[dict[str, Any]]

    @property
    def path(self) -> Path:
        return self.run.path

    def finish_step(self) -> None:
        with open(self.run.metrics, "ab") as handle:
            handle.write(self.next_line[TORN_AT:])
        self.run.write_completions(STEPS + 1, self.next_rows)


def make_run(path: Path) -> MadeRun:
    """Write the run into ``path`` (which must not exist)."""
    from stratagem.cli import main

    spec = resolve("2048")
    run = RunDir(path)
    run.create(yaml.safe_dump(CONFIG, sort_keys=False))
    names = list(PROGRAMS)
    with Runner(spec, workers=2) as runner:
        results = runner.evaluate([PROGRAMS[name][0] for name in names], SEEDS)
    scored = Rubric().score_all(results, spec.reward)
    played = {name: (result, score) for name, result, score in zip(names, results, scored, strict=True)}
    best: tuple[float, int, str] | None = None
    for step in range(1, STEPS + 2):
        late = min(1.0, (step - 1) / (STEPS - 1))
        weights = [(1 - late) * PROGRAMS[name][1] + late * PROGRAMS[name][2] for name in names]
        drawn = random.Random(step).choices(names, weights, k=PER_STEP)
        rows = [_row(PROGRAMS[name][0], *played[name]) for name in drawn]
        line = orjson.dumps(_metrics(step, rows, [played[name][0] for name in drawn])) + b"\n"  # as RunDir.log
        if step > STEPS:  # the step being written: a line cut off mid-write, no completions yet
            with open(run.metrics, "ab") as handle:
                handle.write(line[:TORN_AT])
            return MadeRun(run, line, rows)
        run.write_completions(step, rows)
        with open(run.metrics, "ab") as handle:
            handle.write(line)
        top = max(range(PER_STEP), key=lambda i: rows[i]["reward"])
        if best is None or rows[top]["reward"] > best[0]:
            best = (rows[top]["reward"], step, drawn[top])
        if step == STEPS:  # the best program so far, and its replays recorded by `stratagem play`
            reward, at, name = best
            result = played[name][0]
            info = {"step": at, "reward": reward, "completion_sha": result.sha, "mean_score": result.mean_score,
                    "win_rate": result.win_rate, "wins": result.wins, "draws": result.draws,
                    "losses": result.losses, "seeds": SEEDS}  # fmt: skip
            run.write_best(result.source or "", info, "2048", spec.strategy)
            assert main(["play", "2048", "--strategy", str(path / "best_strategy.py"), "--episodes",
                         str(len(SEEDS)), "--record", str(run.replays)]) == 0  # fmt: skip
    raise AssertionError("unreachable: the loop returns at its last step")


def _row(text: str, result: Any, score: Any) -> dict[str, Any]:
    """One completion as the trainer logs it (``Trainer._finish_step``)."""
    return {"reward": score.total, "parts": score.parts, "error": result.error, "rule": result.rule,
            "message": result.message[:300], "score": result.mean_score, "win_rate": result.win_rate,
            "outcomes": outcomes(result), "sha": result.sha, "text": text}  # fmt: skip


def _metrics(step: int, rows: list[dict[str, Any]], results: list[Any]) -> dict[str, Any]:
    """The trainer's per-step figures (``step_metrics`` itself) that do not need the learner: a completion's
    length is its word count, groups are of 4."""
    import torch

    from stratagem.rl.step_metrics import step_metrics

    lengths = torch.tensor([len(row["text"].split()) for row in rows])
    completions = SimpleNamespace(completion_mask=(torch.arange(int(lengths.max())) < lengths[:, None]).long(),
                                  truncated=[False] * len(rows))  # fmt: skip
    scored = [SimpleNamespace(total=row["reward"], parts=row["parts"]) for row in rows]
    rewards = torch.tensor([row["reward"] for row in rows], dtype=torch.float32)
    return step_metrics(step, completions, results, scored, rewards, {}, num_generations=4)


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and mtime: equal before and after means nothing was written."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}
