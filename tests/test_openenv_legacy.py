"""OpenEnv 0.3.0 (``openenv-core``) still works with us, from the second environment .ci/run builds.

0.3.0 and 0.10 install the same modules, so 0.3.0 runs in its own interpreter
(``STRATAGEM_OPENENV_LEGACY_PYTHON``, default .ci/.venv-openenv-0.3.0/bin/python: this
environment's packages plus openenv-core 0.3.0 alone): its GenericEnvClient, sync and async,
plays whole episodes against our servers, and its own server (tests/openenv_twin.py) serves
our client and ``stratagem validate``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stratagem.client.http import AsyncEnvClient, EnvClient
from stratagem.client.wire import StatelessServer
from stratagem.server.app import create_app
from tests.conftest import cli_server, free_port, running

ROOT = Path(__file__).resolve().parents[1]
LEGACY_VENV = ROOT / ".ci" / ".venv-openenv-0.3.0" / "bin" / "python"


def legacy_python() -> str | None:
    """OpenEnv 0.3.0's interpreter: $STRATAGEM_OPENENV_LEGACY_PYTHON, else the environment .ci/run builds."""
    for candidate in (os.environ.get("STRATAGEM_OPENENV_LEGACY_PYTHON"), str(LEGACY_VENV)):
        if candidate and Path(candidate).exists():
            return candidate
    return None


LEGACY = legacy_python()
pytestmark = pytest.mark.skipif(
    LEGACY is None,
    reason="no OpenEnv 0.3.0 interpreter: STRATAGEM_OPENENV_LEGACY_PYTHON is unset and "
    f"{LEGACY_VENV.relative_to(ROOT)} is missing (.ci/run builds it: python -m venv --system-site-packages "
    ".ci/.venv-openenv-0.3.0 && .ci/.venv-openenv-0.3.0/bin/pip install --no-deps openenv-core==0.3.0)",
)
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}

# Run by the legacy interpreter: 0.3.0's GenericEnvClient plays one episode per URL and mode, the first
# legal action each move; then a step after the end (an error frame) and a reset on the same socket.
LEGACY_CLIENT = r"""
import asyncio, json, sys
from openenv.core.generic_client import GenericEnvClient
from tests.openenv_twin import openenv_version

def move(observation):
    first = observation["legal_actions"][0]
    return {"action_id": first["id"] if isinstance(first, dict) else first}

def record(r):
    return [r.observation, r.reward, r.done]

def after_the_end(env_step, observation):
    try:
        env_step(move(observation))
    except RuntimeError as exc:
        return str(exc)

def sync_episode(url, seed):
    with GenericEnvClient(base_url=url).sync() as env:
        r = env.reset(seed=seed, episode_id="legacy-sync")
        trace = [record(r)]
        while not r.done:
            r = env.step(move(r.observation))
            trace.append(record(r))
        state, error = env.state(), after_the_end(env.step, trace[0][0])
        return {"trace": trace, "state": state, "error": error, "again": record(env.reset(seed=seed))}

async def async_episode(url, seed):
    async with GenericEnvClient(base_url=url) as env:
        r = await env.reset(seed=seed, episode_id="legacy-async")
        trace = [record(r)]
        while not r.done:
            r = await env.step(move(r.observation))
            trace.append(record(r))
        state = await env.state()
        try:
            await env.step(move(trace[0][0]))
            error = None
        except RuntimeError as exc:
            error = str(exc)
        return {"trace": trace, "state": state, "error": error, "again": record(await env.reset(seed=seed))}

seed, urls = int(sys.argv[1]), sys.argv[2:]
runs = {url: {"sync": sync_episode(url, seed), "async": asyncio.run(async_episode(url, seed))} for url in urls}
print(json.dumps({"version": openenv_version(), "runs": runs}))
"""


def local_trace(env: str, seed: int, **params) -> list:
    """The episode our in-process client plays, as JSON would carry it."""
    with EnvClient.local(env, **params) as local:
        r = local.reset(seed=seed)
        trace = [[r.observation, r.reward, r.done]]
        while not r.done:
            r = local.step({"action_id": r.observation["legal_actions"][0]})
            trace.append([r.observation, r.reward, r.done])
    return json.loads(json.dumps(trace))


@pytest.fixture(scope="module")
def legacy_twin():
    """OpenEnv 0.3.0's own server (tests/openenv_twin.py under the legacy interpreter), started at once:
    importing OpenEnv takes seconds, spent while the first test runs."""
    port = free_port()
    proc = subprocess.Popen(
        [LEGACY, "-m", "tests.openenv_twin", str(port)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                return url
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"the 0.3.0 server did not start: {proc.stdout.read()}") from None
                time.sleep(0.1)

    try:
        yield ready
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_openenv_030_clients_play_our_servers(tmp_path, legacy_twin):
    seed = 13
    with (
        cli_server(tmp_path / "serve.log", "2048") as (url_2048, _),
        running(create_app("openspiel", {"game": "tic_tac_toe"})) as url_ttt,
    ):
        done = subprocess.run(
            [LEGACY, "-c", LEGACY_CLIENT, str(seed), url_2048, url_ttt],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["version"] == "0.3.0"
    ttt = local_trace("openspiel", seed, game="tic_tac_toe")
    for url, expected in ((url_2048, local_trace("2048", seed)), (url_ttt, ttt)):
        for mode, run in report["runs"][url].items():
            assert run["trace"] == expected, (url, mode)  # whole episodes, identical to ours in-process
            assert run["state"]["episode_id"] == f"legacy-{mode}"
            assert run["state"]["step_count"] == len(expected) - 1
            assert "EXECUTION_ERROR" in run["error"], run["error"]  # a step after the end: refused, socket kept
            assert run["again"] == expected[0]


def play(env: EnvClient, seed: int) -> list:
    r = env.reset(seed=seed)
    trace = [[r.observation["board"], r.reward, r.done]]
    while not r.done:
        r = env.step({"action_id": r.observation["legal_actions"][0]})
        trace.append([r.observation["board"], r.reward, r.done])
    return trace


def test_our_client_and_validate_against_an_openenv_030_server(legacy_twin, capsys):
    url = legacy_twin()
    expected = [[obs["board"], reward, done] for obs, reward, done in local_trace("2048", 3)]
    with EnvClient.connect(url) as env:
        assert play(env, 3) == expected
        assert env.state()["step_count"] == len(expected) - 1

    async def async_episode() -> list:
        async with await AsyncEnvClient.connect(url) as env:
            r = await env.reset(seed=3)
            trace = [[r.observation["board"], r.reward, r.done]]
            while not r.done:
                r = await env.step({"action_id": r.observation["legal_actions"][0]})
                trace.append([r.observation["board"], r.reward, r.done])
        async with await AsyncEnvClient.connect(url, transport="http") as env:
            await env.reset(seed=3)
            with pytest.raises(StatelessServer):
                await env.step({"action_id": 0})
        return trace

    assert asyncio.run(async_episode()) == expected
    with EnvClient.connect(url, transport="http") as env:
        assert env.reset(seed=3).observation["board"] == expected[0][0]
        with pytest.raises(StatelessServer, match="stateless"):
            env.step({"action_id": 0})

    from stratagem.cli import main

    assert main(["validate", url, "--reward-range", "0", "100000"]) == 0
    out = capsys.readouterr().out
    skipped = {line.split("  ")[0] for line in out.splitlines() if "  SKIP  " in line}
    assert skipped == {"HTTP session"}, out  # 0.3.0 keeps no HTTP session (it has MCP sessions already)
    assert "14 passed, 0 failed, 1 skipped" in out, out
    assert "action, observation, state schemas" in out  # no reset_observation before 0.10
