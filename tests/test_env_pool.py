"""Environment servers as one pool (``--url A --url B``): health checks, failover, one clear error when all are down.

Real servers on loopback: ``stratagem serve`` in a subprocess (to be killed mid-run) and our app on a thread.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

from stratagem.agents.runner import Limits, Runner
from stratagem.cli import build_parser, main
from stratagem.client.pool import EnvPool, NoServer
from stratagem.server.app import create_app
from tests.conftest import cli_server, free_port, running

ROOT = Path(__file__).resolve().parents[1]
CORNER = ROOT / "examples" / "strategies" / "corner_2048.py"
LIMITS = Limits(move_s=5.0, episode_s=30, memory_mb=256, cpu_s=30)  # roomy: the machine may be busy


def fields(results):
    return [dataclasses.asdict(dataclasses.replace(result, seconds=0.0)) for result in results]


@pytest.fixture(scope="module")
def server_b():
    with running(create_app("2048")) as url:
        yield url


def test_a_server_killed_mid_run_costs_a_replay_on_another_not_a_result(tmp_path, server_b):
    program, seeds = CORNER.read_text(), list(range(6))
    with Runner("2048", workers=2, limits=LIMITS) as local:
        expected = local.evaluate([program], seeds)
    with cli_server(tmp_path / "a.log", "2048") as (server_a, process):
        killed = []

        def kill_a(episode) -> None:  # each server has a job of 3 episodes going: A's has more to play
            if not killed:
                os.kill(process.pid, signal.SIGKILL)
                killed.append(episode.seed)

        with Runner("2048", workers=2, limits=LIMITS, url=[server_a, server_b]) as runner:
            results = runner.evaluate([program], seeds, on_episode=kill_a)
            [a, b] = runner.servers.servers
    assert killed and fields(results) == fields(expected)
    assert (a.up, b.up) == (False, True) and "failed" in a.why and a.games == b.games == 0


def test_every_server_down_is_one_clear_error(capsys):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    code = main(["play", "2048", "--strategy", str(CORNER), "--episodes", "2", "--url", dead[0], "--url", dead[1]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"stratagem play: error: all 2 environment servers are down: cannot reach the environment "
                          f"server at {dead[0]}: ")  # fmt: skip
    assert f"; cannot reach the environment server at {dead[1]}: " in err


def test_the_pool_asks_health_skips_the_dead_and_takes_back_the_recovered(server_b):
    dead = f"http://127.0.0.1:{free_port()}"
    pool = EnvPool([dead, server_b, server_b + "/"])  # the same server twice counts once
    assert pool.urls == [dead, server_b]
    with pool.connect() as env:  # the dead one is asked first and skipped, at no episode's cost
        assert env.reset(seed=1).observation["board"]
        assert [server.games for server in pool.servers] == [0, 1]
    assert [server.games for server in pool.servers] == [0, 0]
    assert pool.servers[0].up is False and "cannot reach" in pool.servers[0].why
    pool.failed(server_b, "the environment server failed: connection reset")
    with pytest.raises(NoServer, match="all 2 environment servers are down: .*connection reset"):
        pool.acquire()
    assert pool.refresh() == [server_b]  # healthy again at the next refresh (each evaluate does one)
    assert pool.acquire() == server_b


def test_url_is_repeatable_or_comma_separated():
    args = build_parser(train_fields=False).parse_args(
        ["play", "2048", "--strategy", "x.py", "--url", "http://a:1,http://b:2", "--url", "ws://c:3"]
    )
    assert args.url == ["http://a:1", "http://b:2", "ws://c:3"]


def test_train_takes_the_same_flags_and_checks_them_before_any_work(capsys, tmp_path, monkeypatch):
    code = main(["train", "--url", "http://a:1", "--url", "ftp://b", "--out", str(tmp_path / "a")])
    assert code == 2 and "url: expected server URLs such as http://127.0.0.1:8000, not 'ftp://b'" in \
        capsys.readouterr().err  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed
    code = main(["train", "--ray", "local", "--max-steps", "1", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == ["stratagem train: error: --ray needs Ray, which is not installed here: "
                                              "pip install -e \".[ray]\" in a checkout, or pip install "
                                              "'stratagem[ray]'"], err  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
