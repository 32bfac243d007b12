"""One client API over WebSocket, HTTP and in-process; and wire compatibility with OpenEnv."""

from __future__ import annotations

import asyncio
import re

import pytest

from stratagem.client.http import AsyncEnvClient, EnvClient
from stratagem.client.wire import NotActive, RemoteError, ServerBusy, SessionLost, StatelessServer, http_url, ws_url
from stratagem.envs import EpisodeNotActive, InvalidAction
from stratagem.server.sessions import Limits
from tests.conftest import running


def play(env, seed: int) -> list:
    """First-legal-move policy; the whole trajectory as comparable data."""
    r = env.reset(seed=seed)
    trace = [(r.observation["board"], r.reward, r.done)]
    while not r.done:
        r = env.step({"action_id": r.observation["legal_actions"][0]})
        trace.append((r.observation["board"], r.reward, r.done))
    return trace


def test_the_same_episode_on_every_transport(url_2048):
    local = EnvClient.local("2048")
    expected = play(local, seed=21)
    for transport in ("ws", "http"):
        with EnvClient.connect(url_2048, transport=transport) as env:
            assert play(env, seed=21) == expected
            assert env.state()["step_count"] == len(expected) - 1


def test_async_client_on_both_transports(url_2048):
    expected = play(EnvClient.local("2048"), seed=5)

    async def run(transport: str) -> list:
        async with await AsyncEnvClient.connect(url_2048, transport=transport) as env:
            r = await env.reset(seed=5)
            trace = [(r.observation["board"], r.reward, r.done)]
            while not r.done:
                r = await env.step({"action_id": r.observation["legal_actions"][0]})
                trace.append((r.observation["board"], r.reward, r.done))
            assert (await env.state())["step_count"] == len(trace) - 1
            return trace

    async def both() -> list:
        return await asyncio.gather(run("ws"), run("http"))

    assert asyncio.run(both()) == [expected, expected]


@pytest.mark.parametrize("transport", ["ws", "http", "local"])
def test_errors_are_the_same_exceptions_everywhere(url_2048, transport):
    env = EnvClient.local("2048") if transport == "local" else EnvClient.connect(url_2048, transport=transport)
    with env:
        with pytest.raises(EpisodeNotActive):
            env.step({"action_id": 0})
        r = env.reset(seed=0)
        while len(r.observation["legal_actions"]) == 4:
            r = env.step({"action_id": r.observation["legal_actions"][0]})
        illegal = next(a for a in range(4) if a not in r.observation["legal_actions"])
        with pytest.raises(InvalidAction, match="does not move any tile"):
            env.step({"action_id": illegal})
        with pytest.raises(InvalidAction, match="less than or equal to 3"):
            env.step({"action_id": 11})
        assert not env.step({"action_id": r.observation["legal_actions"][0]}).metadata.get("error")


def test_pydantic_actions_are_accepted(url_2048):
    from stratagem.envs.game2048 import Game2048Action

    with EnvClient.connect(url_2048) as env:
        r = env.reset(seed=1)
        assert env.step(Game2048Action(action_id=r.observation["legal_actions"][0])).reward is not None
        with pytest.raises(TypeError, match="a dict or a pydantic Action"):
            env.step(3)


def test_remote_errors_carry_status(serve):
    with serve(limits=Limits(max_sessions=1)) as url, EnvClient.connect(url) as first:
        first.reset(seed=1)
        with pytest.raises(ServerBusy, match="at capacity") as info, EnvClient.connect(url, "http") as http:
            http.reset()
        assert info.value.status == 503
    with serve(limits=Limits(session_timeout_s=0.3)) as url, EnvClient.connect(url, transport="http") as env:
        env.reset(seed=1)
        import time

        time.sleep(1.2)
        with pytest.raises(SessionLost) as info:
            env.step({"action_id": 0})
        assert info.value.status == 404
        lost = env.session_id
        assert env.reset(seed=1).observation["board"] and env.session_id not in (None, lost)  # a new session
        assert env.step({"action_id": env.reset(seed=1).observation["legal_actions"][0]}).reward is not None
    with serve() as url, EnvClient.connect(url, "http") as env:
        with pytest.raises(NotActive) as info:
            env.step({"action_id": 0})
        assert info.value.status == 409


def test_url_helpers_and_bad_arguments():
    assert ws_url("http://h:1") == "ws://h:1/ws" and ws_url("https://h/") == "wss://h/ws"
    assert http_url("ws://h:1/ws") == "http://h:1"
    with pytest.raises(ValueError, match="must start with"):
        ws_url("ftp://h")
    with pytest.raises(ValueError, match="transport must be 'ws' or 'http'"):
        EnvClient.connect("http://127.0.0.1:1", transport="grpc")
    with pytest.raises(ConnectionError, match="cannot connect"):
        EnvClient.connect("http://127.0.0.1:1")


def test_openenv_client_plays_against_our_server(url_2048):
    """An unmodified OpenEnv client (0.10 here; 0.3.0's in test_openenv_legacy.py), as the public 2048
    notebook uses it."""
    from openenv.core.generic_client import GenericEnvClient

    expected = play(EnvClient.local("2048"), seed=13)
    with GenericEnvClient(base_url=url_2048).sync() as env:
        result = env.reset(seed=13)
        trace = [(result.observation["board"], result.reward, result.done)]
        while not result.done:
            board = [result.observation["info_state"][i : i + 4] for i in range(0, 16, 4)]  # the notebook's way
            assert board == [[float(v) for v in row] for row in result.observation["board"]]
            action = {"action_id": result.observation["legal_actions"][0], "game_name": "2048", "game_params": {}}
            result = env.step(action)
            trace.append((result.observation["board"], result.reward, result.done))
        assert trace == expected
        assert env.state()["step_count"] == len(expected) - 1
        with pytest.raises(RuntimeError, match="EXECUTION_ERROR"):
            env.step({"action_id": 0})


def test_our_client_plays_against_an_openenv_server():
    """OpenEnv's own server (tests/openenv_twin.py; 0.10 here, 0.3.0 in test_openenv_legacy.py, more 0.10
    servers in test_openenv_servers.py); WebSocket is its stateful transport."""
    from tests.openenv_twin import make_app

    expected = play(EnvClient.local("2048"), seed=3)
    with running(make_app()) as url:
        with EnvClient.connect(url) as env:
            assert play(env, seed=3) == expected
            assert env.state()["step_count"] == len(expected) - 1
            with pytest.raises(InvalidAction):  # OpenEnv's VALIDATION_ERROR frame has no status: mapped by code
                env.step({"action_id": "not a number"})

        async def async_episode() -> int:
            async with await AsyncEnvClient.connect(url) as env:
                r = await env.reset(seed=3)
                steps = 0
                while not r.done:
                    r = await env.step({"action_id": r.observation["legal_actions"][0]})
                    steps += 1
                return steps

        assert asyncio.run(async_episode()) == len(expected) - 1


def test_validate_grades_rewards_against_a_declared_range(url_2048, tmp_path, capsys):
    from stratagem.cli import main

    assert main(["validate", url_2048, "--reward-range", "0", "1"]) == 1  # 2048's step rewards are merge points
    out = capsys.readouterr().out
    assert re.search(
        r"rewards\s+FAIL\s+step \d+: reward [\d.]+ outside the range \[0, 1\] \[OpenEnv 0.10's runtime", out
    )
    assert "14 passed, 1 failed, 0 skipped" in out
    manifest = tmp_path / "openenv.yaml"
    manifest.write_text("name: g\nvalidation:\n  reward: {range: [0, 20000], floor_margin: 0.1}\n")
    assert main(["validate", url_2048, "--manifest", str(manifest)]) == 0
    assert f"within [0, 20000] ({manifest})" in capsys.readouterr().out
    manifest.write_text("name: g\n")
    assert main(["validate", url_2048, "--manifest", str(manifest)]) == 2
    assert "has no 'validation:' block" in capsys.readouterr().err
    assert main(["validate", url_2048, "--reward-range", "1", "0"]) == 2
    assert "needs LO < HI" in capsys.readouterr().err


def test_http_on_a_stateless_server_says_to_use_websocket():
    """OpenEnv's HTTP gives every request a fresh environment: our HTTP client plays nothing there."""
    from tests.openenv_twin import make_app

    with running(make_app()) as url, EnvClient.connect(url, transport="http") as env:
        with pytest.raises(EpisodeNotActive, match="call reset first"):
            env.step({"action_id": 0})  # before a reset: refused here, not sent to a fresh environment
        assert env.reset(seed=1).observation["board"]  # one request: fine
        with pytest.raises(StatelessServer, match=r"no X-Session-Id.*EnvClient\.connect\(url\)") as info:
            env.step({"action_id": 0})
        assert isinstance(info.value, RemoteError) and not isinstance(info.value, EpisodeNotActive)
        with pytest.raises(StatelessServer):
            env.state()
