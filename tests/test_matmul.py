"""The matmul speed task: its rules, and each way to game a speed reward, closed."""

from __future__ import annotations

import itertools

import orjson
import pytest

from stratagem.agents.baselines import MATMUL_FAST, MATMUL_TEXTBOOK
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs import matmul
from stratagem.envs.core import EpisodeNotActive, InvalidAction
from stratagem.envs.matmul import MatmulEnv, reference_matmul
from stratagem.envs.spec import resolve
from stratagem.sandbox.channel import FrameReader
from stratagem.sandbox.pool import Worker

SMALL = {"size": 12, "trials": 2}
LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)


@pytest.fixture(scope="module")
def runner():
    with Runner("matmul", params=SMALL, limits=LIMITS) as r:
        yield r


def play_right_answers(env: MatmulEnv, seed: int, elapsed_s: float) -> tuple[list, object]:
    obs, seen = env.reset(seed=seed), []
    while not obs.done:
        A, B = env.program_inputs(obs)
        seen.append(A)
        obs = env.step(env.program_action(reference_matmul(A, B), elapsed_s=elapsed_s))
        assert obs.correct is True
    return seen, obs


def test_an_episode_is_trials_of_fresh_matrices_and_a_right_answer_faster_than_the_baseline_wins():
    env = MatmulEnv(size=10, trials=3)
    seen, obs = play_right_answers(env, seed=4, elapsed_s=1e-9)  # far below the textbook loop's time
    assert all(5 <= len(A) <= 10 and 5 <= len(A[0]) <= 10 for A in seen)
    assert obs.won and obs.trial == 3 and obs.reward == obs.speedup > 1 and obs.metadata == {"outcome": "win"}
    assert seen[0] != seen[1] != seen[2]  # a fresh pair every trial
    assert MatmulEnv(size=10).reset(seed=4).A == seen[0]  # and the same ones for the same seed
    with pytest.raises(EpisodeNotActive):
        env.step({"C": [[0.0]], "elapsed_s": 1.0})


def test_a_right_answer_slower_than_the_baseline_of_its_episode_is_played_to_the_end_and_lost():
    _, obs = play_right_answers(MatmulEnv(size=10, trials=3), seed=4, elapsed_s=0.5)  # 1000x the loop's time
    assert obs.done and obs.correct is True and not obs.won and obs.metadata == {"outcome": "loss"}
    assert obs.reward == obs.speedup and 0 < obs.speedup < 1  # the score is still the speedup


def test_a_wrong_answer_ends_the_episode_as_an_error_naming_the_first_wrong_cell():
    env = MatmulEnv(size=6, trials=2)
    obs = env.reset(seed=1)
    A, B = env.program_inputs(obs)
    with pytest.raises(InvalidAction, match=f"is {len(A)}x{len(B[0])}"):  # a wrong shape is refused without harm
        env.step({"C": [[0.0]], "elapsed_s": 1.0})
    wrong = reference_matmul(A, B)
    expected = wrong[1][2]
    wrong[1][2] += 1e-6
    obs = env.step({"C": wrong, "elapsed_s": 1e-9})  # however fast
    assert obs.done and not obs.won and obs.correct is False and obs.reward == 0.0 and obs.speedup is None
    assert obs.metadata == {
        "outcome": "wrong_answer",
        "message": f"wrong product: C[1][2] = {expected + 1e-6!r}, expected {expected!r} (relative tolerance 1e-09)",
    }


@pytest.mark.parametrize(
    ("params", "message"), [({"size": 1}, "size must be"), ({"trials": 0}, "trials must be"), ({"size": "9"}, "size")]
)
def test_bad_parameters_name_themselves(params, message):
    with pytest.raises(ValueError, match=message):
        MatmulEnv(**params)


def test_programs_are_timed_and_scored_through_the_sandbox(runner):
    textbook, fast = runner.evaluate([MATMUL_TEXTBOOK, MATMUL_FAST], seeds=[0, 1])
    for result in (textbook, fast):  # right answers: played to the end, won only when faster than the loop
        assert set(outcomes(result)) <= {"win", "loss"} and result.played_clean
        assert all(e.score > 0 and e.moves == SMALL["trials"] and e.won == (e.score > 1) for e in result.episodes)


def test_a_wrong_product_is_an_error_of_the_program_not_a_loss(runner):
    zeros = "def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]"
    [result] = runner.evaluate([zeros], seeds=[0, 1])
    assert outcomes(result) == ["wrong", "wrong"] and not result.played_clean
    for episode in result.episodes:
        assert episode.error == "wrong_answer" and not episode.won and episode.moves == 1 and episode.score == 0.0
        assert episode.message.startswith("wrong product: C[0][0] = 0.0, expected ")


def test_laziness_numpy_is_refused_before_it_runs(runner):
    for source in ("import numpy\ndef matmul(A, B):\n    return numpy.dot(A, B).tolist()",
                   "def matmul(A, B):\n    np = __import__('numpy')\n    return np.dot(A, B).tolist()"):  # fmt: skip
        [result] = runner.evaluate([source], seeds=[0])
        assert result.error == "policy" and outcomes(result) == ["cheat"]


def test_a_lazy_result_is_not_a_product(runner):
    # A generator or map would only do its work when serialised, after the clock stopped.
    lazy = [
        "def matmul(A, B):\n    columns = list(zip(*B))\n"
        "    return ([sum(a * b for a, b in zip(row, c)) for c in columns] for row in A)",
        "def matmul(A, B):\n    return map(list, A)",
    ]
    for result in runner.evaluate(lazy, seeds=[0]):
        assert outcomes(result) == ["illegal"] and "plain data" in result.episodes[0].message


def test_a_cache_only_returns_stale_answers(runner):
    caching = (
        "ANSWERS = []\n\n"
        "def matmul(A, B):\n"
        "    if not ANSWERS:\n"
        "        columns = list(zip(*B))\n"
        "        ANSWERS.append([[sum(a * b for a, b in zip(row, c)) for c in columns] for row in A])\n"
        "    return ANSWERS[0]\n"
    )
    [result] = runner.evaluate([caching], seeds=[0])
    # The first trial is right; the second has fresh matrices (here of another shape), so the cache is wrong.
    assert outcomes(result) == ["illegal"] or outcomes(result) == ["wrong"]
    assert not result.episodes[0].won and result.episodes[0].moves <= 1


def test_the_timer_is_out_of_reach_and_only_the_parent_reads_it(runner, monkeypatch):
    for source in ("import time\ndef matmul(A, B):\n    time.perf_counter = lambda: 0.0\n    return A",
                   "import timeit\ndef matmul(A, B):\n    return A"):  # fmt: skip
        [result] = runner.evaluate([source], seeds=[0])
        assert result.error == "policy" and outcomes(result) == ["cheat"]
    # The elapsed time the environment receives is the worker's CPU clock as the parent reads it: replace
    # that reading and every program, fast or slow, is credited exactly what the parent read. Each read
    # advances one tick: ready, then per call thrash start, thrash end, answer; the thrash is left out.
    ticks = itertools.count()
    monkeypatch.setattr(Worker, "cpu_s", lambda self: float(next(ticks)))
    received = []
    original = MatmulEnv.program_action
    monkeypatch.setattr(MatmulEnv, "program_action", lambda self, v, elapsed_s: received.append(elapsed_s) or
                        original(self, v, elapsed_s=elapsed_s))  # fmt: skip
    [result] = runner.evaluate([MATMUL_TEXTBOOK], seeds=[0])
    assert received and all(e == 2.0 for e in received)
    assert outcomes(result) == ["loss"]  # right, but 2 s an answer is far slower than the loop


def test_the_reference_product_never_reaches_the_programs_process(monkeypatch):
    references, sent = [], []

    def recording_reference(A, B):
        C = reference_matmul(A, B)
        references.append((A, C))
        return C

    monkeypatch.setattr(matmul, "reference_matmul", recording_reference)
    original_send = FrameReader.send
    monkeypatch.setattr(FrameReader, "send", lambda self, data, *a, **k: sent.append(bytes(data)) or
                        original_send(self, data, *a, **k))  # fmt: skip
    with Runner("matmul", params=SMALL, limits=LIMITS) as fresh:
        [result] = fresh.evaluate([MATMUL_TEXTBOOK], seeds=[0, 1])
    assert result.played_clean and len(references) == 4
    to_workers = b"".join(sent)
    # Every timed call is preceded by a cache thrash; its arguments leave only when the clock runs.
    assert to_workers.count(b'{"t":"thrash"}') == to_workers.count(b'{"t":"call"') == 4
    for A, C in references:
        assert orjson.dumps(A[0][0]) in to_workers  # the inputs do go there (the check can see values)
        assert not any(orjson.dumps(value) in to_workers for row in C for value in row)


def test_the_task_is_served_and_played_over_the_wire(serve):
    zeros = "def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]"
    with serve("matmul", params=SMALL) as url, Runner("matmul", params=SMALL, limits=LIMITS, url=url) as remote:
        right, wrong = remote.evaluate([MATMUL_FAST, zeros], seeds=[3])
    assert right.played_clean and right.episodes[0].score > 0
    # Over the wire a wrong product still ends the episode with an observation (not a 4xx), and its metadata
    # carries the verdict: the runner classifies it exactly as in-process.
    assert outcomes(wrong) == ["wrong"] and wrong.episodes[0].error == "wrong_answer"
    assert wrong.episodes[0].message.startswith("wrong product: C[0][0] = 0.0, expected ")


def test_the_manifest_offers_only_pure_python_modules():
    strategy = resolve("matmul").strategy
    assert strategy.function == "matmul" and strategy.args == ["A", "B"]
    assert "numpy" not in strategy.imports and "time" not in strategy.imports
