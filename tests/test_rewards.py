"""The rubric: each reward function on real results, the strict outcome ordering, weights, validation.

The ordering, rung by rung: cheat < crash < timeout < illegal move or wrong result (one rung) < loss < win."""

from __future__ import annotations

import itertools

import pytest

from stratagem.agents.baselines import HEURISTIC_2048, MATMUL_TEXTBOOK
from stratagem.agents.rewards import DEFAULT_WEIGHTS, OUTCOMES, Rubric, function_works, outcomes
from stratagem.agents.runner import EpisodeResult, Limits, ProgramResult, Runner
from stratagem.envs.spec import RewardSpec, resolve
from stratagem.sandbox.pool import Worker
from tests.test_runner import ALWAYS_UP, FIRST_LEGAL

LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)
RUNGS = [["cheat"], ["crash"], ["timeout"], ["illegal", "wrong"], ["loss"], ["win"]]  # worst first; a rung ties
ORDER = [outcome for rung in RUNGS for outcome in rung]

PROGRAMS_2048 = {
    "cheat": ["import os\ndef strategy(board):\n    return '0'",
              "def strategy(board):\n    return board.__class__"],
    "crash": ["def strategy(board)\n    return '0'", "def strategy(board):\n    return board[9]"],
    "timeout": ["def strategy(board):\n    while True:\n        pass"],
    "illegal": [ALWAYS_UP, "def strategy(board):\n    return None"],
    "loss": [FIRST_LEGAL, FIRST_LEGAL.replace("(3, 2, 1, 0)", "(0, 1, 2, 3)")],
}  # fmt: skip
SLOW_MATMUL = MATMUL_TEXTBOOK.replace("def matmul(", "def once(") + (
    "\n\ndef matmul(A, B):\n    once(A, B)\n    once(A, B)\n    return once(A, B)\n"
)  # right, and three times the loop's work: never faster than the loop
PROGRAMS_MATMUL = {
    "cheat": ["import numpy\ndef matmul(A, B):\n    return numpy.dot(A, B).tolist()"],
    "crash": ["def matmul(A, B):\n    return A[len(A)][0]"],
    "timeout": ["def matmul(A, B):\n    while True:\n        pass"],
    "illegal": ["def matmul(A, B):\n    return (row for row in A)"],
    "wrong": ["def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]",  # all zeros: it used to "work"
              "def matmul(A, B):\n    return [[1.0] * len(B[0]) for _ in A]"],
    "loss": [SLOW_MATMUL],
}  # fmt: skip


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
    rungs = [[o for o in rung if o in seen] for rung in RUNGS]
    for worse, better in itertools.pairwise([rung for rung in rungs if rung]):
        low, high = max(t for o in worse for t in seen[o]), min(t for o in better for t in seen[o])
        assert low < high, (worse, low, better, high)


def test_the_rungs_are_every_outcome():
    assert sorted(ORDER) == sorted(OUTCOMES)


def test_2048_outcomes_are_strictly_ordered_by_the_default_rubric():
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        seen = totals_by_outcome(runner, PROGRAMS_2048, seeds=[0, 1])
    with Runner("2048", params={"max_tile": 128}, workers=1, limits=LIMITS) as small:  # the heuristic wins to 128
        seen |= totals_by_outcome(small, {"win": [HEURISTIC_2048]}, seeds=[0, 1])
    assert set(seen) == set(ORDER) - {"wrong"}  # 2048 has no wrong result: a legal move is a move
    assert_strictly_ordered(seen)


def test_matmul_outcomes_are_strictly_ordered_by_the_default_rubric(monkeypatch):
    with Runner("matmul", params={"size": 12, "trials": 2}, limits=LIMITS) as runner:
        seen = totals_by_outcome(runner, PROGRAMS_MATMUL, seeds=[0])
        # A win needs a speedup above 1, which no honest program reaches reliably at this size (pure Python is
        # at most ~1.3x the loop, and the call's own overhead weighs most on small matrices). So the worker's CPU
        # clock, as the parent reads it, stands still: the textbook loop is then charged nothing, and wins.
        monkeypatch.setattr(Worker, "cpu_s", lambda self: 0.0)
        seen |= totals_by_outcome(runner, {"win": [MATMUL_TEXTBOOK]}, seeds=[0])
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
    assert parts["function_works"] == pytest.approx((1 + 1 - 1) / 3) and parts["no_cheating"] == 0.0
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


@pytest.mark.parametrize(
    ("episodes", "works"),
    [
        ([EpisodeResult(seed=0, won=True), EpisodeResult(seed=1)], 1.0),  # won and lost: both worked
        ([EpisodeResult(seed=0, draw=True)], 1.0),  # a draw is a game played to its end
        ([EpisodeResult(seed=0, score=5.0, error="wrong_answer")], -1.0),  # a wrong result never works
        ([EpisodeResult(seed=0, won=True), EpisodeResult(seed=1, error="wrong_answer")], 0.0),
        ([EpisodeResult(seed=0, error="timeout"), EpisodeResult(seed=1, error="exception")], -1.0),
        ([], -1.0),  # never ran
    ],
)
def test_function_works_is_how_often_the_function_worked_not_whether_it_built(episodes, works):
    assert function_works(result_with(*episodes), RewardSpec()) == works


def test_a_wrong_result_scores_with_an_illegal_move_below_any_loss_and_a_draw_pays_as_a_loss():
    spec, rubric = RewardSpec(win=1.0, loss=0.0, score_scale=1.0), Rubric()
    wrong = rubric.score(result_with(EpisodeResult(seed=0, score=1000.0, error="wrong_answer")), spec)
    illegal = rubric.score(result_with(EpisodeResult(seed=0, error="illegal_move")), spec)
    lost = rubric.score(result_with(EpisodeResult(seed=0, score=0.0)), spec)
    drawn = rubric.score(result_with(EpisodeResult(seed=0, score=0.0, draw=True)), spec)
    assert outcomes(result_with(EpisodeResult(seed=0, error="wrong_answer"))) == ["wrong"]
    assert wrong.total == illegal.total < lost.total == drawn.total  # however high the wrong result's score
    assert wrong.parts["score_shaped"] == 0.0 and wrong.parts["strategy_succeeds"] == spec.loss
