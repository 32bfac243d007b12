"""Procedurally generated strategy programs for every built-in task: the default model's SFT corpus.

The embedded default model is a tiny causal LM primed on ``prompt -> program`` pairs; GRPO then selects among
what it samples, so for every environment family it must start from legal, varied programs of mixed quality.
One module per task, each with the same two names:

- ``FAMILIES``: quality classes and their weights (mostly mediocre, with a tail of bad and of good programs);
- ``generate(rng) -> Sample``: one program (its family drawn from ``FAMILIES``), with the environment and
  parameters whose prompt it answers.

Tasks: ``2048``; ``atari`` (Pong, Breakout, Freeway, Space Invaders, Ms. Pac-Man over their named objects);
``openspiel`` (programs over legal actions and the observation, for any game); ``matmul``; ``manifest``
(synthetic user-defined environments: programs derived from a manifest's arguments, return value and goal).
``MIX`` weighs them in the default corpus. Everything is drawn from one ``random.Random(seed)``, so a corpus is
a pure function of its arguments, and a shorter one is a prefix of a longer one. ``benchmarks/corpus_quality.py``
plays a corpus in the real sandbox and prints each task's and family's quality.
"""

from __future__ import annotations

import random
from types import ModuleType

from stratagem.rl.corpus import atari, game2048, manifests, matmul, openspiel
from stratagem.rl.corpus.common import Sample, draw

TASKS: dict[str, ModuleType] = {"2048": game2048, "atari": atari, "openspiel": openspiel, "matmul": matmul,
                                "manifest": manifests}  # fmt: skip
MIX: dict[str, float] = {"2048": 0.3, "atari": 0.25, "openspiel": 0.2, "matmul": 0.1, "manifest": 0.15}
MIXED = "mixed"  # generate_samples(task=MIXED): tasks drawn by MIX, as the default model is trained


def program_families(task: str = "2048") -> dict[str, float]:
    """A task's families and their sampling weights (summing to 1); see each task module for what they are."""
    return dict(_module(task).FAMILIES)


def generate_samples(n: int, seed: int, task: str = "2048") -> list[Sample]:
    """n programs of ``task`` (or of every task, drawn by ``MIX``, for ``task="mixed"``), deterministic for
    (n, seed, task): one program at a time from one ``random.Random(seed)``, so n only cuts the stream."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    if task == MIXED:
        return [TASKS[draw(rng, MIX)].generate(rng) for _ in range(n)]
    module = _module(task)
    return [module.generate(rng) for _ in range(n)]


def generate_programs(n: int, seed: int, task: str = "2048") -> list[str]:
    """The sources of ``generate_samples(n, seed, task)``."""
    return [sample.source for sample in generate_samples(n, seed, task)]


def _module(task: str) -> ModuleType:
    if task not in TASKS:
        raise ValueError(f"unknown corpus task {task!r}; expected one of {[*TASKS, MIXED]}")
    return TASKS[task]


__all__ = ["MIX", "MIXED", "TASKS", "Sample", "generate_programs", "generate_samples", "program_families"]
