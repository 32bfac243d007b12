"""Time that counts all of a program's work: precomputing at load time is not free.

For a timed environment (matmul) the runner charges each answer with the CPU its process used since
the previous answer, the first since the process took the program; the code sandbox charges every
cell since the task was last scored. So top-level code, default arguments, decorators and work done
in an earlier cell all lower the speedup, by about what they cost. Scores are compared with each
other in the same run (the same machine, the same moment), with a wide margin: the extra work is
~50x one answer's.
"""

from __future__ import annotations

import pytest

from stratagem.agents.baselines import MATMUL_TEXTBOOK
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.sandbox import SandboxEnv

SMALL = {"size": 24, "trials": 3}
LIMITS = Limits(move_s=5.0, episode_s=60, memory_mb=256, cpu_s=60)
WORK = "sum(i * i for i in range(1_500_000))"  # ~0.1-0.3 s of CPU; one answer at size 24 is a few ms

AT_LOAD = {
    "top-level code": f"TABLE = {WORK}\n\n" + MATMUL_TEXTBOOK,
    "a default argument": f"def helper(x=({WORK})):\n    return x\n\n\n" + MATMUL_TEXTBOOK,
    "a comprehension at top level": f"SQUARES = [{WORK} for _ in range(1)]\n\n" + MATMUL_TEXTBOOK,
    "the first call, cached": "CACHE = []\n\n\n"
    + MATMUL_TEXTBOOK.replace(
        "def matmul(A, B):\n", f"def matmul(A, B):\n    if not CACHE:\n        CACHE.append({WORK})\n"
    ),
}


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    programs = {"plain": MATMUL_TEXTBOOK, **AT_LOAD}
    with Runner("matmul", params=SMALL, limits=LIMITS) as runner:
        results = runner.evaluate(list(programs.values()), seeds=[0, 1])
    for name, result in zip(programs, results, strict=True):  # right answers: won or lost, by their speed
        assert result.played_clean and set(outcomes(result)) <= {"win", "loss"}, (name, result.episodes)
    return {name: result.episodes[0].score for name, result in zip(programs, results, strict=True)}  # load: first


@pytest.mark.parametrize("where", list(AT_LOAD))
def test_work_done_while_loading_counts_against_the_speedup(scores: dict[str, float], where: str):
    assert scores[where] < scores["plain"] / 3, scores


def test_the_load_is_charged_once_per_process_not_per_episode():
    """A second episode in the same worker is not charged again for the first one's loading."""
    with Runner("matmul", params=SMALL, limits=LIMITS) as runner:
        [result] = runner.evaluate([AT_LOAD["top-level code"]], seeds=[0, 1])
    first, second = (e.score for e in result.episodes)
    assert second > 3 * first, (first, second)


def _cell_scores(cells: list[str]) -> list[float | None]:
    env = SandboxEnv(timeout_s=20, memory_mb=256, cpu_s=60, task="matmul", task_params=SMALL)
    try:
        env.reset(seed=5)
        outcomes_ = [env.step({"code": code}).task_outcome for code in cells]
    finally:
        env.close()
    assert all(o is None or (o.error is None and o.won == (o.score > 1)) for o in outcomes_), outcomes_
    return [None if o is None else o.score for o in outcomes_]


@pytest.mark.timeout(120)
def test_a_cells_work_before_its_function_counts_and_so_does_an_earlier_cells():
    [plain, again] = _cell_scores([MATMUL_TEXTBOOK, MATMUL_TEXTBOOK])
    [same_cell] = _cell_scores([f"TABLE = {WORK}\n" + MATMUL_TEXTBOOK])
    [earlier, defined] = _cell_scores([f"TABLE = {WORK}", MATMUL_TEXTBOOK])
    assert earlier is None  # a cell that defines nothing is not scored
    assert same_cell < plain / 3 and defined < plain / 3 and again > defined, (plain, again, same_cell, defined)


def test_work_in_every_call_counts_too():
    """The clock charges work wherever it is: a call that does twice the work scores about half."""
    twice = (
        MATMUL_TEXTBOOK.replace("def matmul(", "def once(") + "\n\ndef matmul(A, B):\n    once(A, B)\n"
        "    return once(A, B)\n"
    )
    # Matrices big enough (32..64 a side) that the product, not the cold start after the cache thrash, is the call.
    with Runner("matmul", params={"size": 64, "trials": 3}, limits=LIMITS) as runner:
        textbook, slow = runner.evaluate([MATMUL_TEXTBOOK, twice], seeds=[0, 1])
    assert slow.played_clean and textbook.played_clean
    assert slow.episodes[1].score < 0.8 * textbook.episodes[1].score, (slow.episodes, textbook.episodes)
