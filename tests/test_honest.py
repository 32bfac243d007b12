"""Honest programs are never refused by the kernel: a false cheat teaches a policy to avoid correct code.

Every kernel layer is on. The programs here do nothing a sandbox should mind, and some do it in
unusual ways (every allowed module, deep recursion, a lot of memory, heavy compute, a directory
listing that fails); each must score exactly as it does played in-process without any sandbox.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.agents.baselines import HEURISTIC_2048
from stratagem.agents.programs import build, load
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.spec import load_spec, resolve
from stratagem.rl.corpus import generate_samples

EXAMPLES = Path(__file__).parents[1] / "examples"
LIMITS = Limits(move_s=2.0, episode_s=60, memory_mb=512, cpu_s=60)
CORNER = (EXAMPLES / "strategies" / "corner_2048.py").read_text()

# Honest but unusual: each must play exactly as it does in-process.
UNUSUAL = {
    "every allowed module": "import math, itertools, functools, collections, heapq, bisect, typing, copy, statistics\n"
    + CORNER.replace(
        "def strategy(board):\n",
        "def strategy(board):\n    t: typing.List[int] = sorted(heapq.nsmallest(3, [1, 5, 2]))\n"
        "    copy.deepcopy(collections.Counter(t)); statistics.median(t); bisect.bisect(t, 2)\n"
        "    functools.reduce(lambda a, b: a + b, itertools.chain(t, [math.floor(1.5)]))\n",
        1,
    ),
    "deep recursion within the limit": "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n\n"
    + CORNER.replace("def strategy(board):\n", "def strategy(board):\n    depth(600)\n", 1),
    "a lot of memory": CORNER.replace(
        "def strategy(board):\n",
        "def strategy(board):\n    if sum(map(sum, board)) <= 8:\n        block = [0] * 20_000_000\n"
        "        del block\n",
        1,
    ),
    "heavy compute": CORNER.replace("def strategy(board):\n", "def strategy(board):\n    sum(range(20_000))\n", 1),
    "text with dunder-like words": CORNER.replace(
        "def strategy(board):\n", "def strategy(board):\n    note = 'corner_first strategy: keep max in corner'\n", 1
    ),
    "exceptions caught inside": CORNER.replace(
        "def strategy(board):\n",
        "def strategy(board):\n    try:\n        {}['missing']\n    except KeyError:\n        pass\n",
        1,
    ),
    "generators and closures": "def rows(board):\n    yield from (tuple(r) for r in board)\n\n"
    + CORNER.replace("def strategy(board):\n", "def strategy(board):\n    list(rows(board))\n", 1),
}


def in_process(source: str, env_name: str | Path, seeds: list[int], params: dict | None = None) -> list[tuple]:
    """(score, moves) per seed, the program called directly by the environment's own loop: no sandbox at all."""
    spec = load_spec(env_name) if isinstance(env_name, Path) else resolve(env_name)
    fn = build(load(source, spec.strategy), spec.strategy)
    env, played = spec.make(**(params or {})), []
    for seed in seeds:
        actions: list = []
        obs = env.play(seed, fn, actions)
        _, score = env.replay(seed, actions)
        played.append((score, len(actions), obs.done))
    return played


def test_unusual_honest_programs_score_as_they_do_without_a_sandbox():
    seeds = [0, 1]
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        results = runner.evaluate(list(UNUSUAL.values()), seeds)
    for (name, source), result in zip(UNUSUAL.items(), results, strict=True):
        assert result.error is None and all(e.error is None for e in result.episodes), (name, result.episodes)
        expected = in_process(source, "2048", seeds)
        assert [(e.score, e.moves, True) for e in result.episodes] == expected, name


def test_corpus_programs_score_as_they_do_without_a_sandbox():
    """The embedded default model's training corpus: every family but the deliberately broken one."""
    samples = [s for s in generate_samples(120, seed=11) if s.family != "bad"][:40]
    seeds = [3]
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        results = runner.evaluate([s.source for s in samples], seeds)
    for sample, result in zip(samples, results, strict=True):
        assert "cheat" not in outcomes(result), (sample.family, result.message, result.episodes)
        if "random" not in sample.source and all(e.error is None for e in result.episodes):
            assert [(e.score, e.moves, True) for e in result.episodes] == in_process(sample.source, "2048", seeds)


@pytest.mark.parametrize(
    ("env", "strategy", "params"),
    [
        ("2048", "corner_2048.py", {}),
        ("pong", "pong_tracker.py", {"max_episode_steps": 300}),
        ("breakout", "breakout_tracker.py", {"max_episode_steps": 300}),
        ("openspiel", "tictactoe_heuristic.py", {}),
        ("openspiel", "tictactoe_heuristic.py", {"opponent": "mcts", "mcts_simulations": 50}),
        (EXAMPLES / "custom_env" / "openenv.yaml", "../custom_env/bisect_strategy.py", {}),
    ],
)
def test_example_strategies_of_every_environment_play_clean(env, strategy, params):
    source = (EXAMPLES / "strategies" / strategy).read_text()
    seeds = [0, 1]
    spec = load_spec(env) if isinstance(env, Path) else resolve(env)
    with Runner(spec, params, workers=2, limits=LIMITS) as runner:
        [result] = runner.evaluate([source], seeds)
    assert result.error is None and [e.error for e in result.episodes] == [None, None], result.episodes
    expected = in_process(source, env, seeds, params)
    assert [(e.score, e.moves, True) for e in result.episodes] == expected


def test_the_heuristic_baseline_plays_clean_on_many_seeds():
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        [result] = runner.evaluate([HEURISTIC_2048], list(range(6)))
    assert [e.error for e in result.episodes] == [None] * 6
