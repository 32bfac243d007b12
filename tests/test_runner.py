"""The sandboxed runner: real programs in forked, confined workers; a hostile suite; the replay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stratagem.agents.baselines import HEURISTIC_2048
from stratagem.agents.programs import build, load
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Limits, PoolError, Runner
from stratagem.envs.game2048 import Game2048Env
from stratagem.envs.spec import load_spec, resolve

ALWAYS_UP = "def strategy(board):\n    return '0'\n"
FIRST_LEGAL = (Path(__file__).parents[1] / "examples" / "strategies" / "corner_2048.py").read_text()
LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)


@pytest.fixture(scope="module")
def runner():
    with Runner("2048", workers=2, limits=LIMITS) as r:
        yield r


def play_in_process(source: str, seed: int) -> tuple[float, int]:
    strategy = resolve("2048").strategy
    fn = build(load(source, strategy), strategy)
    env = Game2048Env()
    obs = env.reset(seed=seed)
    while not obs.done:
        action = fn([row[:] for row in obs.board])
        if int(action) not in obs.legal_actions:
            break
        obs = env.step({"action_id": int(action)})
    return obs.score, env.state.step_count


def test_a_good_program_plays_whole_games_and_the_replay_scores_them(runner):
    [result] = runner.evaluate([HEURISTIC_2048], seeds=[0, 1])
    assert result.error is None and [e.error for e in result.episodes] == [None, None]
    for episode in result.episodes:
        assert (episode.score, episode.moves) == play_in_process(HEURISTIC_2048, episode.seed)
        assert episode.max_tile >= 512 and episode.won == (episode.max_tile == 2048)
    assert result.source is not None and result.sha


def test_a_group_shares_seeds_and_results_do_not_depend_on_batch_mates(runner):
    alone = runner.evaluate([HEURISTIC_2048], seeds=[3])
    group = runner.evaluate(
        [ALWAYS_UP, HEURISTIC_2048, "def strategy(board):\n    while True:\n        pass\n"], seeds=[3]
    )
    assert group[1].episodes[0].score == alone[0].episodes[0].score
    assert [e.seed for r in group for e in r.episodes] == [3, 3, 3]


def test_seeds_split_over_workers_give_the_results_of_one_worker(runner):
    seeds = [9, 4, 7, 1, 5]
    with Runner("2048", workers=1, limits=LIMITS) as single:
        [one] = single.evaluate([FIRST_LEGAL], seeds)
    [split] = runner.evaluate([FIRST_LEGAL], seeds)  # one program, two workers: seeds split in two jobs
    assert [e.seed for e in split.episodes] == seeds
    assert [(e.score, e.moves, e.error) for e in split.episodes] == [(e.score, e.moves, e.error) for e in one.episodes]
    assert all(e.error is None and e.moves > 10 for e in one.episodes)


def test_the_win_is_judged_on_the_final_position():
    # A 2048 game to 64: the winning merge is the last move; it must count.
    with Runner("2048", params={"max_tile": 64}, workers=1, limits=LIMITS) as small:
        [result] = small.evaluate([HEURISTIC_2048], seeds=[0, 1])
    assert all(e.won and e.error is None and e.max_tile == 64 for e in result.episodes)
    assert outcomes(result) == ["win", "win"]


# (name, source, the outcome the rubric must give it). Most are stopped by the static checks;
# the ones marked "runtime" pass them and must be stopped by the process around them.
HOSTILE = [
    ("import os", "import os\ndef strategy(board):\n    os.system('touch /tmp/pwned')\n    return '0'", "cheat"),
    ("subprocess", "import subprocess\ndef strategy(board):\n    return '0'", "cheat"),
    ("fork", "import os\ndef strategy(board):\n    os.fork()\n    return '0'", "cheat"),
    ("subclasses walk", "def strategy(board):\n    return ().__class__.__base__.__subclasses__()", "cheat"),
    ("dunder import", "def strategy(board):\n    return __import__('os').getcwd()", "cheat"),
    ("eval", "def strategy(board):\n    return eval('0')", "cheat"),
    ("exec", "def strategy(board):\n    exec('import os')\n    return '0'", "cheat"),
    ("read a file", "def strategy(board):\n    return open('/etc/passwd').read()", "cheat"),
    ("write a file", "def strategy(board):\n    open('/tmp/x', 'w').write('x')\n    return '0'", "cheat"),
    ("socket", "import socket\ndef strategy(board):\n    return '0'", "cheat"),
    ("importlib", "import importlib\ndef strategy(board):\n    return '0'", "cheat"),
    ("ctypes", "import ctypes\ndef strategy(board):\n    return '0'", "cheat"),
    ("threading", "import threading\ndef strategy(board):\n    return '0'", "cheat"),
    ("sys.modules", "import sys\ndef strategy(board):\n    return sys.modules['os'].getcwd()", "cheat"),
    ("builtins via getattr", "def strategy(board):\n    return getattr(__builtins__, 'eval')('0')", "cheat"),
    ("frame walk", "def strategy(board):\n    g = (x for x in [1])\n    return g.gi_frame.f_back.f_globals", "cheat"),
    ("format dunder", "def strategy(board):\n    return '{0.__class__.__mro__}'.format(board)", "cheat"),
    ("private module attr", "import random\ndef strategy(board):\n    return random._os.getcwd()", "cheat"),
    ("signal handler", "import signal\ndef strategy(board):\n    signal.signal(14, print)\n    return '0'", "cheat"),
    ("timer tamper", "import time\ndef strategy(board):\n    time.monotonic = lambda: 0.0\n    return '0'", "cheat"),
    (
        "class with __del__",
        "class X:\n    def __del__(self):\n        pass\ndef strategy(board):\n    return '0'",
        "crash",
    ),
    # runtime: the process, not the static checks, must stop these
    ("loop forever (runtime)", "def strategy(board):\n    while True:\n        pass", "timeout"),
    (
        "swallow the timeout (runtime)",
        "def strategy(board):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass",
        "timeout",
    ),
    ("slow move (runtime)", "def strategy(board):\n    return str(sum(range(10 ** 10)) % 4)", "timeout"),
    ("stuck in C code (runtime)", "def strategy(board):\n    return str(10 ** 10 ** 9 % 4)", "timeout"),
    ("eat memory (runtime)", "def strategy(board):\n    hog = [0] * (10 ** 10)\n    return '0'", "crash"),
    (
        "grow memory (runtime)",  # out of memory, or out of time when the machine is slow to hand out pages
        "def strategy(board):\n    hog = []\n    while True:\n        hog.append(' ' * 10 ** 7)",
        "crash|timeout",
    ),
    ("patch a builtin type (runtime)", "def strategy(board):\n    str.join = None\n    return '0'", "crash"),
    ("recursion bomb (runtime)", "def strategy(board):\n    return strategy(board)", "crash"),
    ("quit with SystemExit (runtime)", "def strategy(board):\n    raise SystemExit(0)", "crash"),
    ("interrupt (runtime)", "def strategy(board):\n    raise KeyboardInterrupt", "crash"),
    (
        "namedtuple class factory (runtime)",
        "import collections\nP = collections.namedtuple('P', 'x')\n" + ALWAYS_UP,
        "crash",
    ),
    ("return None: quitting (runtime)", "def strategy(board):\n    pass", "illegal"),
    ("return a bool (runtime)", "def strategy(board):\n    return True", "illegal"),
    (
        "return a str subclass-like Counter (runtime)",
        "import collections\ndef strategy(board):\n    return collections.Counter('0')",
        "illegal",
    ),
    ("return a lazy generator (runtime)", "def strategy(board):\n    return (d for d in '0123')", "illegal"),
    ("return a huge string (runtime)", "def strategy(board):\n    return 'x' * 10 ** 6", "illegal"),
    ("flood stdout (runtime)", "def strategy(board):\n    print('x' * 10 ** 5)\n    return '0'", "illegal"),
]


def test_hostile_programs_are_contained_scored_by_the_rubric_and_the_pool_stays_healthy(runner):
    assert len(HOSTILE) >= 25
    results = runner.evaluate([source for _, source, _ in HOSTILE] + [FIRST_LEGAL], seeds=[0])
    rubric, reward_spec = Rubric(), runner.spec.reward
    honest = results[-1]
    assert outcomes(honest) == ["loss"] and honest.episodes[0].moves > 20  # the pool is still healthy
    honest_total = rubric.score(honest, reward_spec).total
    for (name, _, expected), result in zip(HOSTILE, results, strict=False):
        detail = result.message or (result.episodes[0].message if result.episodes else "")
        assert outcomes(result)[0] in expected.split("|") and len(outcomes(result)) == 1, f"{name}: {detail}"
        assert rubric.score(result, reward_spec).total < honest_total, name
    assert not os.path.exists("/tmp/pwned")


def test_rigging_random_changes_nothing_in_the_game(runner):
    """The game draws from its own keyed stream (envs/rng.py), not from anything ``random`` holds."""
    rigged = "import random\nrandom.Random.random = lambda rng: 0.0\nrandom.Random.getrandbits = lambda rng, k: 0\n"
    cheat_result, honest = runner.evaluate([rigged + FIRST_LEGAL, FIRST_LEGAL], seeds=[5])
    assert [(e.score, e.moves, e.error) for e in cheat_result.episodes] == [
        (e.score, e.moves, e.error) for e in honest.episodes
    ]


def test_mutating_the_board_changes_nothing(runner):
    cheat = "def strategy(board):\n    board[0][0] = 2048\n    board[1] = [1024] * 4\n    return '0'\n"
    cheat_result, honest = runner.evaluate([cheat, ALWAYS_UP], seeds=[5])
    assert (cheat_result.episodes[0].score, cheat_result.episodes[0].moves) == (
        honest.episodes[0].score,
        honest.episodes[0].moves,
    )
    assert cheat_result.episodes[0].max_tile < 2048


def test_monkeypatching_shared_modules_does_not_leak_into_the_next_program():
    patcher = "import math\nimport random\nmath.floor = None\nrandom.Random.random = None\n\n" + ALWAYS_UP
    user = "import math\n\ndef strategy(board):\n    return str(math.floor(0.5))\n"
    with Runner("2048", workers=1, limits=LIMITS) as one:  # the same pool, one program after the other
        _, after = one.evaluate([patcher, user], seeds=[1])
    assert after.episodes[0].error == "illegal_move" and after.episodes[0].moves >= 1  # math.floor was intact


def test_the_cpu_budget_ends_a_program_that_is_slow_on_every_move():
    # ~0.1 s of CPU a move: each call is far under move_s, but the moves add up past cpu_s.
    slow = FIRST_LEGAL.replace("def strategy(board):\n", "def strategy(board):\n    sum(range(3 * 10 ** 6))\n")
    with Runner("2048", workers=1, limits=Limits(move_s=2, episode_s=60, cpu_s=1)) as tight:
        [result] = tight.evaluate([slow], seeds=[0, 1])
    assert [e.error for e in result.episodes] == ["timeout", "timeout"]
    assert "CPU" in result.episodes[0].message


def test_a_user_environment_is_played_through_the_sandbox(toy_manifest):
    program = "def strategy(observation):\n    return {'add': observation['target'] - observation['count']}\n"
    with Runner(load_spec(toy_manifest), params={"target": 7}, workers=1, limits=LIMITS) as toy:
        [result] = toy.evaluate([program], seeds=[0, 1])
    assert [(e.score, e.moves, e.error) for e in result.episodes] == [(7.0, 1, None), (7.0, 1, None)]


def test_bad_arguments_fail_before_any_work():
    with pytest.raises(ValueError, match="positive number"):
        Limits(move_s=0)
    with pytest.raises(ValueError, match="positive integer"):
        Runner("2048", workers=0)
    with Runner("2048", workers=1) as r, pytest.raises(ValueError, match="seeds"):
        r.evaluate([ALWAYS_UP], seeds=[-1])


def test_an_environment_that_cannot_be_built_is_a_clear_error(tmp_path, toy_manifest):
    spec = load_spec(toy_manifest)
    with pytest.raises((PoolError, ValueError), match="target must be >= 1"):
        Runner(spec, {"target": 0})


def test_the_pool_leaves_no_process_behind():
    runner = Runner("2048", workers=2)
    pool = runner.pool
    workers = [pool.acquire() for _ in range(3)]
    pids = [pool.zygote_pid, *(w.host_pid for w in workers)]
    assert all(pids)
    runner.close()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
