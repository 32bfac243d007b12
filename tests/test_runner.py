"""The sandboxed runner: real programs in forked, confined processes; a hostile suite; the replay."""

from __future__ import annotations

import pytest

from stratagem.agents.baselines import HEURISTIC_2048
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.game2048 import Game2048Env

ALWAYS_UP = "def strategy(board):\n    return '0'\n"


@pytest.fixture(scope="module")
def runner():
    return Runner("2048", workers=2, limits=Limits(move_s=0.5, episode_s=20, memory_mb=256, cpu_s=30))


def play_in_process(source_fn, seed: int) -> tuple[float, int]:
    env = Game2048Env()
    obs = env.reset(seed=seed)
    while not obs.done:
        action = source_fn([row[:] for row in obs.board])
        if int(action) not in obs.legal_actions:
            break
        obs = env.step({"action_id": int(action)})
    return obs.score, env.state.step_count


def test_a_good_program_plays_whole_games_and_the_replay_scores_them(runner):
    from stratagem.agents.programs import build, load
    from stratagem.envs.spec import resolve

    [result] = runner.evaluate([HEURISTIC_2048], seeds=[0, 1])
    assert result.error is None and [e.error for e in result.episodes] == [None, None]
    strategy = resolve("2048").strategy
    fn = build(load(HEURISTIC_2048, strategy), strategy)
    for episode in result.episodes:
        assert (episode.score, episode.moves) == play_in_process(fn, episode.seed)
        assert episode.max_tile >= 512 and episode.won is False


def test_a_group_shares_seeds_and_results_do_not_depend_on_batch_mates(runner):
    alone = runner.evaluate([HEURISTIC_2048], seeds=[3])
    group = runner.evaluate(
        [ALWAYS_UP, HEURISTIC_2048, "def strategy(board):\n    while True:\n        pass\n"], seeds=[3]
    )
    assert group[1].episodes[0].score == alone[0].episodes[0].score
    assert [e.seed for r in group for e in r.episodes] == [3, 3, 3]


HOSTILE = [
    # (name, source, the error kinds that count as contained)
    ("import os", "import os\ndef strategy(board):\n    os.system('touch /tmp/pwned')\n    return '0'", {"policy"}),
    ("subprocess", "import subprocess\ndef strategy(board):\n    return '0'", {"policy"}),
    ("dunder import", "def strategy(board):\n    return __import__('os').getcwd()", {"policy"}),
    ("eval", "def strategy(board):\n    return eval('0')", {"policy"}),
    ("exec", "def strategy(board):\n    exec('import os')\n    return '0'", {"policy"}),
    ("read a file", "def strategy(board):\n    return open('/etc/passwd').read()", {"policy"}),
    ("write a file", "def strategy(board):\n    open('/tmp/x', 'w').write('x')\n    return '0'", {"policy"}),
    ("socket", "import socket\ndef strategy(board):\n    return '0'", {"policy"}),
    ("importlib", "import importlib\ndef strategy(board):\n    return '0'", {"policy"}),
    ("ctypes", "import ctypes\ndef strategy(board):\n    return '0'", {"policy"}),
    ("sys.modules", "import sys\ndef strategy(board):\n    return sys.modules['os'].getcwd()", {"policy"}),
    ("builtins via getattr", "def strategy(board):\n    return getattr(__builtins__, 'eval')('0')", {"policy"}),
    (
        "frame walk",
        "def strategy(board):\n    g = (x for x in [1])\n    return g.gi_frame.f_back.f_globals",
        {"policy"},
    ),
    ("format dunder", "def strategy(board):\n    return '{0.__class__.__mro__}'.format(board)", {"policy"}),
    ("private module attr", "import random\ndef strategy(board):\n    return random._os.getcwd()", {"policy"}),
    ("signal handler", "import signal\ndef strategy(board):\n    return '0'", {"policy"}),
    ("timer tamper", "import time\ndef strategy(board):\n    return '0'", {"policy"}),
    (
        "class with __del__",
        "class X:\n    def __del__(self):\n        pass\ndef strategy(board):\n    return '0'",
        {"policy"},
    ),
    ("loop forever", "def strategy(board):\n    while True:\n        pass", {"timeout"}),
    (
        "swallow the timeout",
        "def strategy(board):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass",
        {"timeout"},
    ),
    ("slow move", "def strategy(board):\n    return str(sum(range(10 ** 10)) % 4)", {"timeout"}),
    ("eat memory", "def strategy(board):\n    hog = [0] * (10 ** 10)\n    return '0'", {"memory"}),
    (
        "grow memory",
        "def strategy(board):\n    hog = []\n    while True:\n        hog.append(' ' * 10 ** 6)",
        {"memory", "timeout"},
    ),
    ("recursion bomb", "def strategy(board):\n    return strategy(board)", {"exception"}),
    ("quit", "def strategy(board):\n    raise SystemExit(0)", {"exception"}),
    ("interrupt", "def strategy(board):\n    raise KeyboardInterrupt", {"exception"}),
    ("return None", "def strategy(board):\n    pass", {"illegal_move"}),
    ("return a bool", "def strategy(board):\n    return True", {"illegal_move"}),
    ("return a huge string", "def strategy(board):\n    return 'x' * 10 ** 6", {"illegal_move"}),
    (
        "evaluate annotations",
        "import typing\ndef strategy(board: 'open'):\n    return str(typing.get_type_hints(strategy))",
        {"exception", "forbidden"},
    ),
]


def test_hostile_programs_are_contained_and_the_pool_stays_healthy(runner):
    sources = [source for _, source, _ in HOSTILE]
    results = runner.evaluate([*sources, HEURISTIC_2048], seeds=[0])
    for (name, _, expected), result in zip(HOSTILE, results, strict=False):
        kinds = {result.error} if result.error in ("policy", "syntax") else {e.error for e in result.episodes}
        assert kinds <= expected and kinds, f"{name}: {kinds} ({result.message or result.episodes[0].message})"
    good = results[-1]
    assert good.error is None and good.episodes[0].error is None and good.episodes[0].score > 1000


def test_mutating_the_board_changes_nothing(runner):
    cheat = "def strategy(board):\n    board[0][0] = 2048\n    board[1] = [1024] * 4\n    return '0'\n"
    cheat_result, honest = runner.evaluate([cheat, ALWAYS_UP], seeds=[5])
    assert (cheat_result.episodes[0].score, cheat_result.episodes[0].moves) == (
        honest.episodes[0].score,
        honest.episodes[0].moves,
    )
    assert cheat_result.episodes[0].max_tile < 2048


def test_monkeypatching_shared_modules_does_not_leak_into_the_next_program(runner):
    patcher = "import math\nmath.floor = None\n\ndef strategy(board):\n    return '0'\n"
    user = "import math\n\ndef strategy(board):\n    return str(math.floor(0.5))\n"
    _, after = runner.evaluate([patcher, user], seeds=[1])
    assert after.episodes[0].error in (None, "illegal_move")  # it ran: math.floor was intact
    assert after.episodes[0].moves >= 1
