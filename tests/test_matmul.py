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


def test_an_episode_is_trials_of_fresh_matrices_and_a_right_answer_wins_with_a_speedup():
    env = MatmulEnv(size=10, trials=3)
    obs = env.reset(seed=4)
    seen = []
    while not obs.done:
        A, B = env.program_inputs(obs)
        assert 5 <= len(A) <= 10 and len(A[0]) == len(B) and 5 <= len(B[0]) <= 10
        seen.append(A)
        obs = env.step(env.program_action(reference_matmul(A, B), elapsed_s=0.5))
        assert obs.correct is True
    assert obs.won and obs.trial == 3 and obs.reward == obs.speedup > 0
    assert seen[0] != seen[1] != seen[2]  # a fresh pair every trial
    assert MatmulEnv(size=10).reset(seed=4).A == seen[0]  # and the same ones for the same seed
    with pytest.raises(EpisodeNotActive):
        env.step({"C": [[0.0]], "elapsed_s": 1.0})


def test_a_wrong_answer_loses_and_a_wrong_shape_is_refused_without_harm():
    env = MatmulEnv(size=6, trials=2)
    obs = env.reset(seed=1)
    A, B = env.program_inputs(obs)
    with pytest.raises(InvalidAction, match=f"is {len(A)}x{len(B[0])}"):
        env.step({"C": [[0.0]], "elapsed_s": 1.0})
    wrong = reference_matmul(A, B)
    wrong[0][0] += 1e-6
    obs = env.step({"C": wrong, "elapsed_s": 1.0})
    assert obs.done and not obs.won and obs.correct is False and obs.reward == 0.0


@pytest.mark.parametrize(
    ("params", "message"), [({"size": 1}, "size must be"), ({"trials": 0}, "trials must be"), ({"size": "9"}, "size")]
)
def test_bad_parameters_name_themselves(params, message):
    with pytest.raises(ValueError, match=message):
        MatmulEnv(**params)


def test_programs_are_timed_and_scored_through_the_sandbox(runner):
    textbook, fast = runner.evaluate([MATMUL_TEXTBOOK, MATMUL_FAST], seeds=[0, 1])
    for result in (textbook, fast):
        assert outcomes(result) == ["win", "win"]
        assert all(e.score > 0 and e.moves == SMALL["trials"] for e in result.episodes)


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
    assert outcomes(result) == ["illegal"] or outcomes(result) == ["loss"]
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
    assert outcomes(result) == ["win"] and received and all(e == 2.0 for e in received)


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
    assert outcomes(result) == ["win", "win"] and len(references) == 4
    to_workers = b"".join(sent)
    # Every timed call is preceded by a cache thrash; its arguments leave only when the clock runs.
    assert to_workers.count(b'{"t":"thrash"}') == to_workers.count(b'{"t":"call"') == 4
    for A, C in references:
        assert orjson.dumps(A[0][0]) in to_workers  # the inputs do go there (the check can see values)
        assert not any(orjson.dumps(value) in to_workers for row in C for value in row)


def test_the_task_is_served_and_played_over_the_wire(serve):
    with serve("matmul", params=SMALL) as url, Runner("matmul", params=SMALL, limits=LIMITS, url=url) as remote:
        [result] = remote.evaluate([MATMUL_FAST], seeds=[3])
    assert outcomes(result) == ["win"] and result.episodes[0].score > 0


def test_the_manifest_offers_only_pure_python_modules():
    strategy = resolve("matmul").strategy
    assert strategy.function == "matmul" and strategy.args == ["A", "B"]
    assert "numpy" not in strategy.imports and "time" not in strategy.imports
