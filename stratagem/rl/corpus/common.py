"""What every task's corpus generator shares: the sample record and how a program is laid out."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One generated program, where it came from, and the prompt it answers.

    ``family`` is the quality class (each task's ``FAMILIES``), ``variant`` its sub-kind. The prompt is the
    task prompt of ``env`` with ``params`` (the ``-p`` parameters, which the prompt names), or, for a
    synthetic user-defined environment, ``prompt`` itself.
    """

    family: str
    variant: str
    source: str
    task: str = "2048"
    env: str = "2048"
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None

    def prompt_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        key = (self.env, repr(sorted(self.params.items())))
        if key not in _PROMPTS:  # a corpus has a few dozen distinct prompts: resolve each manifest once
            from stratagem.agents.prompts import task_prompt
            from stratagem.envs.spec import resolve

            _PROMPTS[key] = task_prompt(resolve(self.env), self.params)
        return _PROMPTS[key]


_PROMPTS: dict[tuple[str, str], str] = {}


Generator = Callable[[random.Random], Sample]


def program(*parts: str) -> str:
    """Top-level parts (constants, imports, defs) separated by one blank line."""
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def draw(rng: random.Random, weights: dict[str, float]) -> str:
    """One key of ``weights``, drawn with those weights."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]
