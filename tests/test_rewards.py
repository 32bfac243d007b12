"""The rubric: each reward function on real results, the strict outcome ordering, weights, validation."""

from __future__ import annotations

import itertools

import pytest

from stratagem.agents.baselines import HEURISTIC_2048, MATMUL_TEXTBOOK
from stratagem.agents.rewards import DEFAULT_WEIGHTS, Rubric, outcomes
from stratagem.agents.runner import EpisodeResult, Limits, ProgramResult, Runner
from stratagem.envs.spec import RewardSpec, resolve
from tests.test_runner import ALWAYS_UP, FIRST_LEGAL

LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)
ORDER = ["cheat", "crash", "timeout", "illegal", "loss", "win"]

PROGRAMS_2048 = {
    "cheat": ["import os\ndef strategy(board):\n    return '0'",
              "def strategy(board):\n    return board.__class__"],
    "crash": ["def strategy(board)\n    return '0'", "def strategy(board):\n    return board[9]"],
    "timeout": ["def strategy(board):\n    while True:\n        pass"],
    "illegal": [ALWAYS_UP, "def strategy(board):\n    return None"],
    "loss": [FIRST_LEGAL, FIRST_LEGAL.replace("(3, 2, 1, 0)", "(0, 1, 2, 3)")],
}  # fmt: skip
PROGRAMS_MATMUL = {
    "cheat": ["import numpy\ndef matmul(A, B):\n    return numpy.dot(A, B).tolist()"],
    "crash": ["def matmul(A, B):\n    return A[len(A)][0]"],
    "timeout": ["def matmul(A, B):\n    while True:\n        pass"],
    "illegal": ["def matmul(A, B):\n    return (row for row in A)"],
    "loss": ["def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]"],
    "win": [MATMUL_TEXTBOOK],
}


def totals_by_outcome(runner: Runner, programs: dict[str, list[str]], seeds: list[int]) -> dict[str, list[float]]:
    sources = [source for group in programs.values() for source in group]
    results = runner.evaluate(sources, seeds)
    rubric, seen = Rubric(), {}
    for result in results:
        [outcome] = set(outcomes(result))
        seen.setdefault(outcome, []).append(rubric.score(result, runner.spec.reward).total)
    assert {k: len(v) for k, v in seen.items()} == {k: len(v) for k, v in programs.items() if k in seen}
    return seen


def assert_strictly_ordered(seen: dict[str, list[float]]) -> None:
    present = [o for o in ORDER if o in seen]
    for worse, better in itertools.pairwise(present):
        assert max(seen[worse]) < min(seen[better]), (worse, seen[worse], better, seen[better])


def test_2048_outcomes_are_strictly_ordered_by_the_default_rubric():
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        seen = totals_by_outcome(runner, PROGRAMS_2048, seeds=[0, 1])
    with Runner("2048", params={"max_tile": 128}, workers=1, limits=LIMITS) as small:  # the heuristic wins to 128
        seen |= totals_by_outcome(small, {"win": [HEURISTIC_2048]}, seeds=[0, 1])
    assert list(seen) == ORDER or set(seen) == set(ORDER)
    assert_strictly_ordered(seen)


def test_matmul_outcomes_are_strictly_ordered_by_the_default_rubric():
    with Runner("matmul", params={"size": 12, "trials": 2}, limits=LIMITS) as runner:
        seen = totals_by_outcome(runner, PROGRAMS_MATMUL, seeds=[0])
    assert set(seen) == set(ORDER)
    assert_strictly_ordered(seen)


def result_with(*episodes: EpisodeResult, error: str | None = None, rule: str | None = None) -> ProgramResult:
    return ProgramResult(sha="x", episodes=list(episodes), error=error, rule=rule)


def test_each_function_on_hand_made_results():
    spec = RewardSpec(win=2.0, loss=-0.5, score_scale=100)
    rubric = Rubric()
    won, lost = EpisodeResult(seed=0, score=150, won=True), EpisodeResult(seed=1, score=50)
    quit_early = EpisodeResult(seed=2, score=90, error="illegal_move")
    parts = rubric.score(result_with(won, lost, quit_early), spec).parts
    assert parts["function_works"] == 1.0 and parts["no_cheating"] == 0.0
    assert parts["strategy_succeeds"] == pytest.approx((2.0 - 0.5 - 0.5) / 3)
    assert parts["failure_penalty"] == pytest.approx(-1 / 3)
    assert parts["score_shaped"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # a quit game's score counts for nothing
    refused = result_with(error="policy", rule="import")
    assert outcomes(refused) == ["cheat"] and rubric.score(refused, spec).parts["no_cheating"] == -1.0
    assert outcomes(result_with(error="policy", rule="signature")) == ["crash"]  # broken, not cheating
    assert outcomes(result_with(error="syntax", rule="no-code")) == ["crash"]


def test_weights_pick_and_scale_the_functions():
    spec = resolve("2048").reward
    result = result_with(EpisodeResult(seed=0, score=10000))
    only_score = Rubric(weights={"score_shaped": 4.0}).score(result, spec)
    assert list(only_score.parts) == ["score_shaped"] and only_score.total == pytest.approx(4 * 10000 / 20000)
    full = Rubric().score(result, spec)
    assert set(full.parts) == set(DEFAULT_WEIGHTS)
    assert full.total == pytest.approx(sum(DEFAULT_WEIGHTS[k] * v for k, v in full.parts.items()))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"function_wroks": 1.0}, "unknown reward function"),
        ({"score_shaped": float("nan")}, "finite number"),
        ({"score_shaped": "1"}, "finite number"),
    ],
)
def test_bad_weights_are_refused_by_name(weights, message):
    with pytest.raises(ValueError, match=message):
        Rubric(weights=weights)


def test_the_manifest_reward_block_is_checked():
    with pytest.raises(ValueError, match="win .* must be greater than loss"):
        RewardSpec(win=0.0, loss=1.0)
    with pytest.raises(ValueError, match="greater than 0"):
        RewardSpec(score_scale=0)
