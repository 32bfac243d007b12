"""MCP as OpenEnv 0.10 speaks it (sessions, tools an LLM can play with, /ws?session_id=), sessions under
0.10's auto-reconnecting client, header-less HTTP, the Task API and /schema; real servers, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openenv.core.generic_client import GenericEnvClient
from openenv.core.mcp_client import MCPToolClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stratagem.envs.core import Environment, Observation
from stratagem.envs.spec import EnvSpec
from stratagem.server.app import create_app
from stratagem.server.sessions import Limits
from tests.conftest import APPS, running, wait_for

H = "X-Session-Id"


@pytest.fixture(scope="module")
def url_ttt() -> Iterator[str]:
    with running(create_app("openspiel", {"game": "tic_tac_toe"})) as url:
        yield url


def rpc(url: str, method: str, params: dict[str, Any] | None = None, rid: int = 1, **kw: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": rid}
    response = httpx.post(url + "/mcp", json=body, timeout=10, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def ws(url: str, query: str = "", path: str = "/ws"):
    return connect(url.replace("http://", "ws://") + path + query, open_timeout=10)


def call(conn, message: dict[str, Any]) -> dict[str, Any]:
    conn.send(json.dumps(message))
    return json.loads(conn.recv(timeout=10))


def refused_then_closed(conn) -> dict[str, Any]:
    frame = json.loads(conn.recv(timeout=10))
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=10)
    return frame


def sessions(url: str) -> dict[str, Any]:
    return APPS[url].state.manager.sessions


def settle(url: str, count: int = 0) -> None:
    """Wait until the server has closed what earlier tests' connections left (it does so as they go)."""
    wait_for(lambda: len(sessions(url)) == count)


def first_legal(observation: dict[str, Any]) -> int:
    action = observation["legal_actions"][0]
    return action["id"] if isinstance(action, dict) else action  # ints (OpenEnv's shape) or {id, name}


# --- MCPToolClient: connect, list, play to the end, close ---------------------------------------
def test_mcp_tool_client_plays_2048_to_the_end(url_2048):
    settle(url_2048)

    async def play() -> None:
        async with MCPToolClient(base_url=url_2048) as env:
            (sid,) = [s.id for s in sessions(url_2048).values() if s.kind == "mcp"]
            assert sessions(url_2048)[sid].attached  # its WebSocket rides on the MCP session
            tools = {t.name: t for t in await env.list_tools()}
            assert set(tools) == {"reset", "step", "state"}
            assert tools["step"].input_schema["properties"]["action_id"]["maximum"] == 3
            assert {"seed", "episode_id"} <= set(tools["reset"].input_schema["properties"])
            result = await env.call_tool("reset", seed=5, episode_id="mcp-1")
            steps = 0
            while not result["done"]:
                result = await env.call_tool("step", action_id=result["observation"]["legal_actions"][0])
                assert isinstance(result["reward"], (int, float))
                steps += 1
            state = await env.call_tool("state")
            assert state["episode_id"] == "mcp-1" and state["step_count"] == steps
            # The attached WebSocket drives the same session: OpenEnv's reset/state reach it.
            await env.reset(seed=1, episode_id="ws-1")
            assert (await env.call_tool("state"))["episode_id"] == "ws-1"
        assert sid not in sessions(url_2048)  # close detached the socket, then closed the session

    asyncio.run(play())


def test_mcp_tool_client_plays_tic_tac_toe_sync(url_ttt):
    with MCPToolClient(base_url=url_ttt).sync() as env:
        assert [t.name for t in env.list_tools()] == ["reset", "step", "state"]
        result = env.call_tool("reset", seed=2)
        while not result["done"]:
            result = env.call_tool("step", action_id=first_legal(result["observation"]))
        assert result["reward"] is not None and env.call_tool("state")["step_count"] >= 3


@pytest.mark.parametrize(
    ("env", "arguments", "field"),
    [("sandbox", {"code": "print(6 * 7)"}, "stdout"), ("pong", {"action": "FIRE"}, "ram")],
)
def test_mcp_tool_client_on_the_sandbox_and_atari(env, arguments, field):
    with running(create_app(env)) as url, MCPToolClient(base_url=url).sync() as client:
        step = client.list_tools()[1]
        assert step.name == "step" and set(arguments) <= set(step.input_schema["properties"])
        client.call_tool("reset", seed=1)
        for _ in range(3):
            result = client.call_tool("step", **arguments)
            assert field in result["observation"] and isinstance(result["reward"], (int, float))
        assert client.call_tool("state")["step_count"] == 3
        if env == "sandbox":
            assert result["observation"]["stdout"] == "42\n"


def test_a_refused_move_is_a_tool_error_the_model_can_read(url_2048):
    sid = rpc(url_2048, "openenv/session/create")["result"]["session_id"]
    try:
        data = rpc(url_2048, "tools/call", {"name": "reset", "arguments": {"seed": 0}, "session_id": sid})
        obs = data["result"]["data"]["observation"]
        while len(obs["legal_actions"]) == 4:
            args = {"action_id": obs["legal_actions"][0]}
            obs = rpc(url_2048, "tools/call", {"name": "step", "arguments": args, "session_id": sid})["result"]["data"]
            obs = obs["observation"]
        before = rpc(url_2048, "tools/call", {"name": "state", "session_id": sid})["result"]["data"]
        illegal = next(a for a in range(4) if a not in obs["legal_actions"])
        args = {"action_id": illegal}
        result = rpc(url_2048, "tools/call", {"name": "step", "arguments": args, "session_id": sid})["result"]
        assert result["isError"] is True and result["is_error"] is True
        assert "does not move any tile" in result["content"][0]["text"]
        assert result["data"] == {**result["data"], "code": "EXECUTION_ERROR", "status": 422}
        assert rpc(url_2048, "tools/call", {"name": "state", "session_id": sid})["result"]["data"] == before
        bad = rpc(url_2048, "tools/call", {"name": "step", "arguments": {"action_id": 9}, "session_id": sid})
        assert bad["result"]["data"]["code"] == "VALIDATION_ERROR" and "less than or equal to 3" in str(bad)
    finally:
        rpc(url_2048, "openenv/session/close", {"session_id": sid})

    async def through_the_client() -> None:  # MCPToolClient returns the error as data, no exception
        async with MCPToolClient(base_url=url_2048) as env:
            refused = await env.call_tool("step", action_id=0)
            assert refused["code"] == "EXECUTION_ERROR" and "call the reset tool first" in refused["error"]

    asyncio.run(through_the_client())


def test_session_lifecycle_and_protocol_errors(url_2048):
    sid = rpc(url_2048, "openenv/session/create")["result"]["session_id"]
    assert sessions(url_2048)[sid].kind == "mcp"
    assert len(rpc(url_2048, "tools/list", {"session_id": sid})["result"]["tools"]) == 3
    for method, params in [
        ("tools/list", {"session_id": "nope"}),
        ("tools/call", {"name": "state", "session_id": "nope"}),
        ("openenv/session/close", {"session_id": "nope"}),
    ]:
        error = rpc(url_2048, method, params)["error"]
        assert error["code"] == -32602 and error["message"].startswith("Unknown session_id: nope")
    assert rpc(url_2048, "tools/call", {"name": "dance"})["error"]["code"] == -32602
    assert rpc(url_2048, "tools/call", {})["error"]["message"] == "Missing 'name' in params"
    assert rpc(url_2048, "openenv/session/close", {})["error"]["code"] == -32602
    # Without a session each call has a fresh environment: reset answers, step explains.
    assert rpc(url_2048, "tools/call", {"name": "reset", "arguments": {"seed": 1}})["result"]["isError"] is False
    lone = rpc(url_2048, "tools/call", {"name": "step", "arguments": {"action_id": 0}})["result"]
    assert lone["isError"] and "openenv/session/create" in lone["data"]["error"]
    # The same id works over HTTP with the header.
    assert httpx.post(url_2048 + "/reset", json={"seed": 4}, headers={H: sid}).headers[H] == sid
    assert rpc(url_2048, "openenv/session/close", {"session_id": sid})["result"] == {"session_id": sid, "closed": True}
    again = rpc(url_2048, "openenv/session/close", {"session_id": sid})["error"]
    assert again["code"] == -32602 and "it was closed" in again["message"]
    assert rpc(url_2048, "ping")["result"] == {}
    # MCP's own clients: initialize opens a session named by Mcp-Session-Id; DELETE /mcp ends it.
    init = httpx.post(url_2048 + "/mcp", json={"jsonrpc": "2.0", "method": "initialize", "id": 1, "params": {}})
    assert init.json()["result"]["serverInfo"]["name"] == "stratagem-2048"
    named = {"Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(url_2048 + "/mcp", json=note, headers=named).status_code == 202
    assert httpx.delete(url_2048 + "/mcp", headers=named).json()["closed"] is True
    stale = httpx.post(url_2048 + "/mcp", json={"jsonrpc": "2.0", "method": "ping", "id": 2}, headers=named)
    assert stale.status_code == 404  # tells an MCP client to initialize again


def test_ws_attach_one_at_a_time_and_close_while_attached(url_2048):
    sid = rpc(url_2048, "openenv/session/create")["result"]["session_id"]
    rpc(url_2048, "tools/call", {"name": "reset", "arguments": {"episode_id": "shared"}, "session_id": sid})
    with ws(url_2048, f"?session_id={sid}") as attached:
        assert call(attached, {"type": "state"})["data"]["episode_id"] == "shared"
        with ws(url_2048, f"?session_id={sid}") as second:
            frame = refused_then_closed(second)
            assert frame["data"]["code"] == "SESSION_ERROR" and "already has an attached WebSocket" in str(frame)
        closing = rpc(url_2048, "openenv/session/close", {"session_id": sid})["result"]
        assert closing == {"session_id": sid, "closed": False, "closing": True}
        assert call(attached, {"type": "step", "data": {"action_id": 0}})["type"] in ("observation", "error")
    wait_for(lambda: sid not in sessions(url_2048))  # it went when the socket detached

    sid = rpc(url_2048, "openenv/session/create")["result"]["session_id"]
    with ws(url_2048, f"?session_id={sid}") as attached:
        call(attached, {"type": "reset", "data": {"episode_id": "kept"}})
    wait_for(lambda: not sessions(url_2048)[sid].attached)
    state = rpc(url_2048, "tools/call", {"name": "state", "session_id": sid})["result"]["data"]
    assert state["episode_id"] == "kept"  # a plain disconnect leaves the session to its owner
    rpc(url_2048, "openenv/session/close", {"session_id": sid})

    with ws(url_2048, "?session_id=nope") as unknown:
        frame = refused_then_closed(unknown)
        assert frame["data"]["code"] == "SESSION_ERROR" and "unknown session 'nope'" in frame["data"]["message"]


def test_mcp_over_websockets(url_2048):
    with ws(url_2048, path="/mcp") as conn:
        own = call(conn, {"jsonrpc": "2.0", "method": "openenv/session/create", "id": 1})["result"]["session_id"]
        assert sessions(url_2048)[own].kind == "ws"
        reset = {"jsonrpc": "2.0", "method": "tools/call", "id": 2, "params": {"name": "reset", "arguments": {}}}
        assert call(conn, reset)["result"]["data"]["done"] is False
        step = {"jsonrpc": "2.0", "method": "tools/call", "id": 3, "params": {"name": "state"}}
        assert call(conn, step)["result"]["data"]["step_count"] == 0
        close = {"jsonrpc": "2.0", "method": "openenv/session/close", "id": 4, "params": {"session_id": own}}
        assert call(conn, close)["error"]["code"] == -32600
    wait_for(lambda: own not in sessions(url_2048))
    with ws(url_2048) as conn:  # and inside /ws, as {"type": "mcp"}: tools act on the connection's session
        call(conn, {"type": "reset", "data": {"episode_id": "in-ws"}})
        message = {"jsonrpc": "2.0", "method": "tools/call", "id": 5, "params": {"name": "state"}}
        reply = call(conn, {"type": "mcp", "data": message})
        assert reply["type"] == "mcp" and reply["data"]["result"]["data"]["episode_id"] == "in-ws"


def test_a_standard_mcp_client_plays_in_its_own_session(url_2048):
    """MCP's streamable-HTTP clients (fastmcp here) initialize first; Mcp-Session-Id keeps their episode."""
    from fastmcp import Client

    settle(url_2048)

    async def play() -> None:
        async with Client(url_2048 + "/mcp") as client:
            assert {t.name for t in await client.list_tools()} == {"reset", "step", "state"}
            obs = (await client.call_tool("reset", {"seed": 3})).structured_content
            for _ in range(3):
                step = await client.call_tool("step", {"action_id": obs["observation"]["legal_actions"][0]})
                obs = step.structured_content
            assert (await client.call_tool("state", {})).structured_content["step_count"] == 3
            assert [s.kind for s in sessions(url_2048).values()] == ["mcp"]
        assert not sessions(url_2048)  # DELETE /mcp ended it

    asyncio.run(play())


# --- capacity, reaping, header-less HTTP ---------------------------------------------------------
def test_capacity_is_shared_and_reported_as_openenv_does(serve):
    with serve(limits=Limits(max_sessions=1)) as url:
        sid = rpc(url, "openenv/session/create")["result"]["session_id"]
        full = rpc(url, "openenv/session/create")["error"]
        assert full["code"] == -32000 and full["data"] == {"active_sessions": 1, "max_sessions": 1}
        with ws(url) as conn:
            assert refused_then_closed(conn)["data"]["code"] == "CAPACITY_REACHED"
        with pytest.raises(RuntimeError, match="Failed to create MCP session: server at capacity"):
            MCPToolClient(base_url=url).sync().connect()
        assert httpx.post(url + "/reset", json={}).status_code == 503
        rpc(url, "openenv/session/close", {"session_id": sid})
        with MCPToolClient(base_url=url).sync() as env:
            assert env.call_tool("reset")["done"] is False


def test_a_reaped_session_tells_the_reconnecting_client_why(serve):
    with serve(limits=Limits(session_timeout_s=0.5)) as url:
        with ws(url) as conn:  # the frame a client reads when it is listening
            frame = refused_then_closed(conn)
            assert frame["data"]["code"] == "SESSION_ERROR"
            assert "session expired" in frame["data"]["message"] and "reset" in frame["data"]["message"]

        with GenericEnvClient(base_url=url).sync() as env:
            env.reset(seed=1)
            wait_for(lambda: not sessions(url))
            # 0.10's client reconnects by itself, into a new session: the reply says so.
            # (If the client sends before it has read the server's close, it reads the expiry frame instead.)
            with pytest.raises(
                RuntimeError,
                match=r"no episode: call reset first \(a reconnected client starts a new session|session expired",
            ):
                env.step({"action_id": 0})
            assert env.reset(seed=1).done is False

        sid = rpc(url, "openenv/session/create")["result"]["session_id"]
        wait_for(lambda: sid not in sessions(url))
        gone = rpc(url, "tools/call", {"name": "state", "session_id": sid})["error"]
        assert gone["code"] == -32602 and "idle" in gone["message"]


def test_header_less_resets_cannot_exhaust_sessions(serve):
    with serve(limits=Limits(max_sessions=2)) as url, httpx.Client(base_url=url, timeout=10) as http:
        firm = http.post("/reset", json={"seed": 1}).headers[H]
        assert http.get("/state", headers={H: firm}).status_code == 200  # naming it makes it firm
        for _ in range(5):  # OpenEnv-style stateless resets: each one makes room for the next
            assert http.post("/reset", json={}).status_code == 200
        with GenericEnvClient(base_url=url).sync() as env:  # and a WebSocket client still gets in
            assert env.reset(seed=2).done is False
            assert http.post("/reset", json={}).status_code == 503  # two firm sessions: now it is full
        settle(url, 1)
        assert http.get("/state", headers={H: firm}).json()["seed"] == 1
        provisional = http.post("/reset", json={}).headers[H]
        explicit = http.post("/reset", json={}, headers={H: "new"}).headers[H]  # evicts the provisional one
        gone = http.get("/state", headers={H: provisional})
        assert gone.status_code == 404 and "make room" in gone.json()["detail"]
        assert http.post("/reset", json={}).status_code == 503
        for sid in (firm, explicit):
            assert http.delete("/session", headers={H: sid}).json()["closed"] is True


LEGACY_MCP_CLIENT = r"""
import asyncio, json, sys
from openenv.core.mcp_client import MCPToolClient

async def main():
    env = MCPToolClient(base_url=sys.argv[1])  # 0.3.0: tools/list and tools/call travel as WebSocket steps
    try:
        names = [t.name for t in await env.list_tools()]
        result, steps = await env.call_tool("reset", seed=4), 0
        while not result["done"] and steps < 20:
            result = await env.call_tool("step", action_id=result["observation"]["legal_actions"][0])
            steps += 1
        refused = await env.call_tool("step", action_id=9)
        print(json.dumps([names, steps, (await env.call_tool("state"))["step_count"], refused["code"]]))
    finally:
        await env.close()

asyncio.run(main())
"""


def test_openenv_030_mcp_tool_client(url_2048):
    """0.3.0's MCPToolClient, from the second environment .ci/run builds (see test_openenv_legacy.py)."""
    root = Path(__file__).resolve().parents[1]
    found = [
        c
        for c in (os.environ.get("STRATAGEM_OPENENV_LEGACY_PYTHON"), str(root / ".ci/.venv-openenv-0.3.0/bin/python"))
        if c and Path(c).exists()
    ]
    if not found:
        pytest.skip("no OpenEnv 0.3.0 interpreter (STRATAGEM_OPENENV_LEGACY_PYTHON unset; .ci/run builds one)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(
        [found[0], "-c", LEGACY_MCP_CLIENT, url_2048], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [["reset", "step", "state"], 20, 20, "VALIDATION_ERROR"]


def test_openenv_generic_client_async_and_auto(url_2048):
    async def play_async() -> None:
        async with GenericEnvClient(base_url=url_2048) as env:
            result = await env.reset(seed=3)
            result = await env.step({"action_id": result.observation["legal_actions"][0]})
            assert (await env.state())["step_count"] == 1

    asyncio.run(play_async())
    env = GenericEnvClient(base_url=url_2048)  # auto: plain calls outside a loop run synchronously
    try:
        result = env.reset(seed=3)
        env.step({"action_id": result.observation["legal_actions"][0]})
        assert env.state()["step_count"] == 1
    finally:
        env.close()


# --- Task API and /schema ------------------------------------------------------------------------
class TaskObservation(Observation):
    task: str = ""


class TaskEnv(Environment):
    """A user environment with task lists (OpenEnv's Task API methods)."""

    observation_type = TaskObservation
    TASKS = {"train": ["add", "sub", "mul"], "test": ["div"]}

    def reset(self, seed: int | None = None, episode_id: str | None = None) -> TaskObservation:
        return TaskObservation()

    def list_splits(self) -> list[str]:
        return list(self.TASKS)

    def list_tasks(self, split: str) -> list[str]:
        return self.TASKS[split]

    def num_tasks(self, split: str) -> int:
        return len(self.TASKS[split])

    def get_task(self, split: str, index: int) -> str:
        return self.TASKS[split][index]

    def get_task_range(self, split: str, start: int | None, stop: int | None) -> list[str]:
        return self.TASKS[split][start:stop]


def test_task_api(url_2048):
    assert httpx.get(url_2048 + "/list_environments").json() == ["2048"]
    none = httpx.get(url_2048 + "/2048/splits")
    assert none.status_code == 501 and none.json()["detail"].startswith("list_splits is not supported")
    assert "seed" in none.json()["detail"]
    assert httpx.post(url_2048 + "/2048/tasks", json={"split": "train"}).status_code == 501
    assert httpx.get(url_2048 + "/chess/splits").status_code == 404
    assert httpx.post(url_2048 + "/2048/tasks", json={"split": "train", "x": 1}).status_code == 422

    spec = EnvSpec(name="Tasks", entry_point="tests.test_mcp:TaskEnv")
    with running(create_app(spec)) as url:
        assert httpx.get(url + "/tasks/splits").json() == [
            {"name": "train", "type": "train"},
            {"name": "test", "type": "test"},
        ]
        post = lambda path, body: httpx.post(url + path, json=body)  # noqa: E731
        assert post("/TASKS/tasks", {"split": "train"}).json() == {"tasks": ["add", "sub", "mul"], "env_name": "Tasks"}
        assert post("/tasks/num_tasks", {"split": "test"}).json() == {"num_tasks": 1}
        assert post("/tasks/task", {"split": "train", "index": 1}).json() == {"task": "sub"}
        assert post("/tasks/task", {"split": "train", "index": 7}).status_code == 400
        assert post("/tasks/task_range", {"split": "train", "start": 1}).json() == {"tasks": ["sub", "mul"]}
        assert httpx.get(url + "/schema").json()["reset_observation"]["title"] == "TaskObservation"


def test_schema_has_the_reset_observation(url_2048):
    body = httpx.get(url_2048 + "/schema").json()
    assert set(body) == {"action", "observation", "state", "reset_observation"}
    assert body["reset_observation"] == body["observation"]
