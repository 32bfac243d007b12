"""Rewards: a rubric of small named reward functions, weighted, each value logged on its own.

A reward function maps one program's result (``ProgramResult``: how the program fared before
it ran, and each episode) and the environment's ``RewardSpec`` (its manifest's ``reward``
block) to a float. ``Rubric`` sums them with weights and keeps each unweighted value, so a
training log shows *why* a completion scored what it did.

Every episode falls in one outcome, and the default rubric orders them strictly:

    cheat < crash < timeout < illegal move, quitting or a wrong result < loss < win

- cheat: a forbidden import, name or dunder in the source; a forbidden event at run time;
  moves the parent's replay refused;
- crash: no code, a syntax error, a broken signature, an exception, running out of memory;
- timeout: a call or an episode over its wall-clock limit, or the CPU budget spent;
- illegal: a return value that is not a legal move (``None`` and friends: quitting);
- wrong: a result in the right form but wrong, so the environment ended the episode (error kind
  ``wrong_answer``: matmul's wrong product); as bad as an illegal move, never a loss;
- loss / win: played to the end (``won`` as judged by the environment on the final position; a draw
  is a loss here: not won).

The score only counts for games played to the end: a program that plays 500 good moves and
then quits never outranks one that plays and loses. A wrong result never pays as working:
``function_works`` is the mean over episodes of +1 for an episode played to its end without an
error (won, drawn or lost) and -1 for any other, and -1 for a program that never ran, so it says how
often the function worked, not whether it compiled. ``test_rewards.py`` checks the ordering on real
programs, for the 2048 and matmul manifests, and ``test_honest_rewards.py`` that a wrong result,
in every environment that can tell one, pays as neither working nor winning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from stratagem.agents.results import ProgramResult
from stratagem.envs.spec import RewardSpec

RewardFunction = Callable[[ProgramResult, RewardSpec], float]

OUTCOMES = ("cheat", "crash", "timeout", "illegal", "wrong", "loss", "win")
# Policy rules whose breach is an attempt to get around the sandbox, not a broken program.
CHEATING_RULES = frozenset({"import", "forbidden-name", "dunder", "introspection"})
PENALTIES = {"cheat": -6.0, "crash": -3.0, "timeout": -2.0, "illegal": -1.0, "wrong": -1.0, "loss": 0.0,
             "win": 0.0}  # fmt: skip
_EPISODE_OUTCOMES = {"forbidden": "cheat", "exception": "crash", "memory": "crash", "syntax": "crash",
                     "policy": "crash", "timeout": "timeout", "illegal_move": "illegal",
                     "wrong_answer": "wrong"}  # fmt: skip
PLAYED = frozenset({"loss", "win"})  # the outcomes of an episode played to its end without an error


def cheated_before_running(result: ProgramResult) -> bool:
    return result.error == "policy" and result.rule in CHEATING_RULES


def outcomes(result: ProgramResult) -> list[str]:
    """One outcome per episode; a program that never ran counts as one episode of its failure."""
    if not result.episodes:
        return ["cheat" if cheated_before_running(result) else "crash"]
    return [
        _EPISODE_OUTCOMES.get(e.error, "crash") if e.error is not None else ("win" if e.won else "loss")
        for e in result.episodes
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def function_works(result: ProgramResult, spec: RewardSpec) -> float:
    """The mean over episodes of +1 for one played to its end without an error, -1 for any other (a crash, a
    timeout, an illegal move, a wrong result); -1 for a program that never ran."""
    return _mean([1.0 if o in PLAYED else -1.0 for o in outcomes(result)])


def no_cheating(result: ProgramResult, spec: RewardSpec) -> float:
    """-1 when the program tried to get around the sandbox, before or while running; else 0."""
    return -1.0 if "cheat" in outcomes(result) else 0.0


def strategy_succeeds(result: ProgramResult, spec: RewardSpec) -> float:
    """The universal win/loss: the manifest's ``win`` per won episode, ``loss`` for every other."""
    return _mean([spec.win if o == "win" else spec.loss for o in outcomes(result)])


def failure_penalty(result: ProgramResult, spec: RewardSpec) -> float:
    """The penalty ladder: cheat -6 < crash -3 < timeout -2 < illegal move or wrong result -1 < played to the end 0."""
    return _mean([PENALTIES[o] for o in outcomes(result)])


def score_shaped(result: ProgramResult, spec: RewardSpec) -> float:
    """score / score_scale, clipped to [0, 1], for games played to the end; 0 for the others."""
    values = [
        min(1.0, max(0.0, e.score) / spec.score_scale) if o in PLAYED else 0.0
        for e, o in zip(result.episodes, outcomes(result), strict=False)
    ]
    return _mean(values) if values else 0.0


REWARD_FUNCTIONS: dict[str, RewardFunction] = {
    f.__name__: f for f in (function_works, no_cheating, strategy_succeeds, failure_penalty, score_shaped)
}
# score_shaped at 0.5 keeps a loss (at most 1 + loss + 0.5) below a win (at least 1 + win).
DEFAULT_WEIGHTS = {"function_works": 1.0, "no_cheating": 1.0, "strategy_succeeds": 1.0, "failure_penalty": 1.0,
                   "score_shaped": 0.5}  # fmt: skip


@dataclass
class Scored:
    total: float
    parts: dict[str, float] = field(default_factory=dict)  # each function's unweighted value


@dataclass
class Rubric:
    """Named reward functions with weights; ``Rubric()`` is the default rubric."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    functions: dict[str, RewardFunction] = field(default_factory=lambda: dict(REWARD_FUNCTIONS))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(self.functions))
        if unknown:
            raise ValueError(f"unknown reward function(s) {unknown}; known: {sorted(self.functions)}")
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"the weight of {name} must be a finite number, got {weight!r}")

    def score(self, result: ProgramResult, spec: RewardSpec) -> Scored:
        parts = {name: self.functions[name](result, spec) for name in self.weights}
        return Scored(total=sum(self.weights[name] * value for name, value in parts.items()), parts=parts)

    def score_all(self, results: list[ProgramResult], spec: RewardSpec) -> list[Scored]:
        return [self.score(result, spec) for result in results]
