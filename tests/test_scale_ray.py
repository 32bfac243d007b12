"""Evaluation on Ray (``Runner(ray=...)``): a real local cluster of 2 CPUs, 2 actors of 1 sandbox worker each.

The same jobs on the same seeds give the local runner's results, field for field; an actor killed
mid-evaluation costs a replay of its jobs, not the run, nor a result; without Ray the flag is one line.
One cluster for the module (starting Ray is most of this file's time).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stratagem.agents.ray_backend import RayCluster
from stratagem.agents.runner import Limits, Runner
from stratagem.cli import main
from tests.conftest import processes

ROOT = Path(__file__).resolve().parents[1]
CORNER = (ROOT / "examples" / "strategies" / "corner_2048.py").read_text()
STATEFUL = "n = 0\ndef strategy(board):\n    global n\n    n += 1\n    return '0123'[n % 4]\n"  # depends on its job
PROGRAMS = [
    CORNER,
    "def strategy(board):\n    return '0'\n",
    STATEFUL,
    "def strategy(board):\n    return board[9]\n",  # raises: an error of the program, the same everywhere
    "def strategy(:\n",  # never runs: syntax
    "import os\ndef strategy(board):\n    return '0'\n",  # never runs: policy
    f"# another\n{CORNER}",
]
SEEDS = [0, 1, 2]
LIMITS = Limits(move_s=5.0, episode_s=30, memory_mb=256, cpu_s=30)  # roomy: the machine may be busy
CLUSTER = RayCluster("auto", actors=2, workers=1)


def fields(results):
    """Every field of every result but ``seconds`` (a clock)."""
    return [dataclasses.asdict(dataclasses.replace(result, seconds=0.0)) for result in results]


def recordings(folder: Path) -> dict[str, list[dict]]:
    """Each recording's lines, but when it was made."""
    found = {}
    for path in folder.iterdir():
        with gzip.open(path) as file:
            lines = [json.loads(line) for line in file]
        lines[0].pop("created")
        found[path.name] = lines
    return found


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")  # CI installs it (.ci/run: the [ray] extra); elsewhere these tests skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The local runner with as many workers as the cluster's actors hold together, and what it recorded."""
    folder = tmp_path_factory.mktemp("local-replays")
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        return runner.evaluate(PROGRAMS, SEEDS, record=folder), folder


@pytest.fixture(scope="module")
def on_ray(cluster):
    with Runner("2048", limits=LIMITS, ray=CLUSTER) as runner:
        yield runner


def test_the_results_are_the_local_runners_field_for_field(on_ray, local, tmp_path):
    expected, local_folder = local
    assert fields(on_ray.evaluate(PROGRAMS, SEEDS, record=tmp_path)) == fields(expected)
    assert [r.error for r in expected][3:6] == [None, "syntax", "policy"]
    assert {e.error for e in expected[3].episodes} == {"exception"}
    # the recordings come back from the actors' nodes: the same episodes, move for move
    assert recordings(tmp_path) == recordings(local_folder)
    sandbox = on_ray.sandbox
    assert not sandbox["missing"] and sandbox["applied"] and len(sandbox["ray"]["actors"]) == 2
    # a second call reuses the actors; programs shared by no one still play
    assert fields(on_ray.evaluate(PROGRAMS[:1], SEEDS)) == fields(expected[:1])


def test_an_actor_killed_mid_evaluation_costs_a_replay_not_the_run(on_ray, local):
    actors = on_ray.sandbox["ray"]["actors"]
    victim = actors[0]["pid"]
    sandbox = [pid for pid, (parent, _, _) in processes().items() if parent == victim]  # its zygote
    assert sandbox
    killed = []

    def kill_once(episode) -> None:  # the first task back: the victim still has one queued or running
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(time.monotonic())

    results = on_ray.evaluate(PROGRAMS, SEEDS, on_episode=kill_once)
    assert killed and fields(results) == fields(local[0])
    after = on_ray.sandbox["ray"]
    assert victim not in [a["pid"] for a in after["actors"]] and after["actors_replaced"] == 1
    deadline = time.monotonic() + 10
    while any(pid in processes() for pid in sandbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid in processes() for pid in sandbox), "the dead actor's sandbox outlived it"


def test_without_ray_the_flag_is_one_line_and_exit_2(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\nfrom stratagem.cli import main\n"
            f"sys.exit(main(['play', '2048', '--strategy', {str(ROOT / 'examples/strategies/corner_2048.py')!r}, "
            "'--episodes', '2', '--ray', 'local']))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        'stratagem play: error: --ray needs Ray, which is not installed here: pip install -e ".[ray]" in a '
        "checkout, or pip install 'stratagem[ray]'"
    ]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_bad_ray_address_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit) as info:
        main(["play", "2048", "--strategy", "x.py", "--ray", "my cluster"])
    assert info.value.code == 2
    assert "--ray: takes auto (a running cluster), local (start one on this machine), HOST:PORT or " \
           "ray://HOST:PORT, got 'my cluster'" in capsys.readouterr().err  # fmt: skip
