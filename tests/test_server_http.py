"""The HTTP side of the wire protocol, route by route, over a real uvicorn server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from stratagem.server.sessions import Limits
from tests.conftest import APPS, health_ok, wait_for

H = "X-Session-Id"


@pytest.fixture
def http(url_2048: str):
    with httpx.Client(base_url=url_2048, timeout=10) as client:
        yield client


def open_session(http: httpx.Client, seed: int = 1) -> tuple[str, dict]:
    response = http.post("/reset", json={"seed": seed})
    assert response.status_code == 200
    return response.headers[H], response.json()


def test_health(http):
    assert http.get("/health").json() == {"status": "healthy"}


def test_metadata(http):
    body = http.get("/metadata").json()
    assert set(body) == {"name", "description", "version", "readme_content", "author", "documentation_url"}
    assert body["name"] == "2048" and "OpenSpiel" in body["description"]


def test_schema(http):
    body = http.get("/schema").json()
    assert body["action"]["properties"]["action_id"]["maximum"] == 3
    assert {"info_state", "legal_actions", "board", "won", "score"} <= set(body["observation"]["properties"])
    assert "step_count" in body["state"]["properties"]


def test_openapi_declares_the_protocol_version_and_routes(http):
    body = http.get("/openapi.json").json()
    assert body["info"]["version"].startswith("1.")
    assert {"/reset", "/step", "/state", "/health", "/schema", "/metadata", "/mcp", "/session"} <= set(body["paths"])
    step_body = body["paths"]["/step"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "action_id" in step_body["properties"]["action"]["properties"]


def test_reset_opens_a_session_and_lifts_reward_done_metadata(http):
    response = http.post("/reset", json={"seed": 3, "episode_id": "ep-1"})
    body = response.json()
    assert set(body) == {"observation", "reward", "done", "metadata"}
    assert body["reward"] is None and body["done"] is False
    assert body["metadata"]["session_id"] == response.headers[H]
    assert not {"reward", "done"} & set(body["observation"])  # lifted; metadata stays inside too (OpenEnv 0.10)
    state = http.get("/state", headers={H: response.headers[H]}).json()
    assert state["episode_id"] == "ep-1" and state["step_count"] == 0 and state["seed"] == 3


def test_a_whole_episode_over_stateful_http_matches_in_process(http):
    from stratagem.envs.game2048 import Game2048Env

    sid, body = open_session(http, seed=9)
    local = Game2048Env()
    expected = local.reset(seed=9)
    steps = 0
    while not body["done"]:
        action = body["observation"]["legal_actions"][0]
        body = http.post("/step", json={"action": {"action_id": action}}, headers={H: sid}).json()
        expected = local.step({"action_id": action})
        assert body["observation"]["board"] == expected.board and body["reward"] == expected.reward
        steps += 1
    assert body["observation"]["score"] == expected.score and body["done"] is True
    assert http.get("/state", headers={H: sid}).json()["step_count"] == steps
    after = http.post("/step", json={"action": {"action_id": 0}}, headers={H: sid})
    assert after.status_code == 409 and "episode is over" in after.json()["detail"]


def test_reset_with_the_header_reuses_the_session(http):
    sid, _ = open_session(http)
    again = http.post("/reset", json={"seed": 2}, headers={H: sid})
    assert again.headers[H] == sid


def test_requests_without_a_header_behave_as_openenv(http):
    # OpenEnv 0.3.0 builds a throw-away environment per request: /state is a fresh state,
    # /step has no episode to act on.
    assert http.get("/state").json()["step_count"] == 0
    response = http.post("/step", json={"action": {"action_id": 0}})
    assert response.status_code == 409
    assert "X-Session-Id" in response.json()["detail"]


def test_illegal_move_is_422_and_the_episode_is_unharmed(http):
    sid, body = open_session(http, seed=0)
    while len(body["observation"]["legal_actions"]) == 4:
        body = http.post(
            "/step", json={"action": {"action_id": body["observation"]["legal_actions"][0]}}, headers={H: sid}
        ).json()
    illegal = next(a for a in range(4) if a not in body["observation"]["legal_actions"])
    before = http.get("/state", headers={H: sid}).json()
    response = http.post("/step", json={"action": {"action_id": illegal}}, headers={H: sid})
    assert response.status_code == 422 and "does not move any tile" in response.json()["detail"]
    assert http.get("/state", headers={H: sid}).json() == before
    ok = http.post("/step", json={"action": {"action_id": body["observation"]["legal_actions"][0]}}, headers={H: sid})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "content", "status", "needle"),
    [
        ("/step", b"{not json", 422, "not valid JSON"),
        ("/step", b"[1, 2]", 422, "must be a JSON object, got list"),
        ("/step", b'{"nothing": 1}', 422, "action: Field required"),
        ("/step", b'{"action": {"action_id": 7}}', 422, "action.action_id: Input should be less than or equal to 3"),
        ("/step", b'{"action": {"action_id": "up"}}', 422, "valid integer"),
        ("/step", b'{"action": {"action_id": 0, "game_name": "catch"}}', 422, "not 'catch'"),
        ("/step", b'{"action": {"action_id": 0}, "timeout_s": -1}', 422, "timeout_s"),
        ("/step", b'{"action": {"action_id": 0}, "render": true}', 422, "unknown step parameter(s) ['render']"),
        ("/reset", b'{"seed": -1}', 422, "seed: Input should be greater than or equal to 0"),
        ("/reset", b'{"seed": "abc"}', 422, "seed"),
        ("/reset", b'{"colour": "red"}', 422, "unknown reset parameter(s) ['colour']"),
    ],
)
def test_client_mistakes_get_4xx_with_a_message(http, path, content, status, needle):
    response = http.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert needle in response.json()["detail"]


def test_unknown_session_is_404(http):
    response = http.post("/step", json={"action": {"action_id": 0}}, headers={H: "nope"})
    assert response.status_code == 404 and "unknown session 'nope'" in response.json()["detail"]
    assert http.get("/state", headers={H: "nope"}).status_code == 404


def test_delete_session(http):
    sid, _ = open_session(http)
    assert http.delete("/session", headers={H: sid}).json() == {"session_id": sid, "closed": True}
    assert http.get("/state", headers={H: sid}).status_code == 404
    assert http.delete("/session").status_code == 422


def test_unknown_route_and_method(http):
    assert http.get("/nope").status_code == 404
    assert http.get("/step").status_code == 405


def test_mcp_json_rpc(http):
    # MCP sessions, tools and their results: tests/test_mcp.py.
    listed = http.post("/mcp", json={"jsonrpc": "2.0", "method": "tools/list", "id": 1}).json()
    assert listed["id"] == 1 and [t["name"] for t in listed["result"]["tools"]] == ["reset", "step", "state"]
    call = http.post("/mcp", json={"jsonrpc": "2.0", "method": "tools/call", "id": 2, "params": {"name": "x"}}).json()
    assert call["error"]["code"] == -32602 and "Tool not found" in call["error"]["message"]
    assert http.post("/mcp", json={"jsonrpc": "2.0", "method": "nope", "id": 3}).json()["error"]["code"] == -32601
    assert http.post("/mcp", json={"method": "tools/list"}).json()["error"]["code"] == -32600
    assert http.post("/mcp", content=b"{bad").json()["error"]["code"] == -32700


def test_body_size_limit_announced_and_streamed(serve):
    with serve(limits=Limits(max_body_bytes=1000)) as url:
        big = b'{"seed": 1, "episode_id": "' + b"x" * 5000 + b'"}'
        response = httpx.post(url + "/reset", content=big)
        assert response.status_code == 413 and "exceeds the limit of 1000" in response.json()["detail"]

        def chunks():
            for _ in range(10):
                yield b" " * 500

        streamed = httpx.post(url + "/reset", content=chunks())
        assert streamed.status_code == 413 and "larger than the server's limit" in streamed.json()["detail"]
        assert health_ok(url)


def test_capacity_is_503_and_frees_up(serve):
    with serve(limits=Limits(max_sessions=2)) as url, httpx.Client(base_url=url) as http:
        # A session only its /reset has named is provisional: it makes room for newcomers (stateless
        # OpenEnv callers never send the header, and must not fill the table; tests/test_mcp.py).
        # Once named by a request, it holds its place.
        a, _ = open_session(http)
        b, _ = open_session(http)
        for sid in (a, b):
            assert http.get("/state", headers={H: sid}).status_code == 200
        full = http.post("/reset", json={})
        assert full.status_code == 503
        assert full.json()["max_sessions"] == 2 and "at capacity" in full.json()["detail"]
        http.delete("/session", headers={H: a})
        assert http.post("/reset", json={}).status_code == 200


def test_idle_sessions_are_reaped(serve):
    with serve(limits=Limits(session_timeout_s=0.3)) as url, httpx.Client(base_url=url) as http:
        sid, _ = open_session(http)
        kept, _ = open_session(http)
        for _ in range(8):  # activity keeps a session alive ...
            time.sleep(0.1)
            assert http.get("/state", headers={H: kept}).status_code == 200
        # ... and idleness ends it (any request would count as activity, so look at the table)
        manager = APPS[url].state.manager
        wait_for(lambda: sid not in manager.sessions, timeout_s=5)
        assert http.get("/state", headers={H: sid}).status_code == 404


def test_step_timeout_is_enforced_and_other_sessions_carry_on(serve, toy_manifest):
    with serve(str(toy_manifest), limits=Limits(step_timeout_s=5)) as url, httpx.Client(base_url=url) as http:
        slow, _ = open_session(http)
        fast, _ = open_session(http)
        results = {}

        def slow_step():
            t0 = time.monotonic()
            results["slow"] = http.post("/step", json={"action": {"sleep": 3}, "timeout_s": 0.3}, headers={H: slow})
            results["elapsed"] = time.monotonic() - t0

        thread = threading.Thread(target=slow_step)
        thread.start()
        time.sleep(0.1)
        assert health_ok(url)  # the loop is free while the step runs on a worker thread
        assert http.post("/step", json={"action": {"add": 1}}, headers={H: fast}).json()["observation"]["count"] == 1
        thread.join()
        assert results["slow"].status_code == 504 and "within 0.3 s" in results["slow"].json()["detail"]
        assert results["elapsed"] < 2.5
        lost = http.post("/step", json={"action": {"add": 1}}, headers={H: slow})
        assert lost.status_code == 409 and "call reset" in lost.json()["detail"]
        assert http.post("/reset", json={}, headers={H: slow}).json()["observation"]["count"] == 0


def test_inline_environment_deadline_interrupts_python_code(serve, toy_manifest):
    spin = toy_manifest.parent / "spin.yaml"
    with serve(str(spin), limits=Limits(step_timeout_s=0.5)) as url, httpx.Client(base_url=url) as http:
        sid, _ = open_session(http)
        response = http.post("/step", json={"action": {"spin": True}}, headers={H: sid})
        assert response.status_code == 504
        assert health_ok(url)
        assert http.post("/reset", json={"start": 1}, headers={H: sid}).json()["observation"]["count"] == 1
        assert http.post("/step", json={"action": {"add": 2}}, headers={H: sid}).json()["done"] is True


def test_user_environment_extra_reset_parameters(serve, toy_manifest):
    with serve(str(toy_manifest)) as url, httpx.Client(base_url=url) as http:
        body = http.post("/reset", json={"start": 2}).json()
        assert body["observation"] == {"count": 2, "target": 3, "metadata": {}}
        refused = http.post("/step", json={"action": {"add": 0}}, headers={H: body["metadata"]["session_id"]})
        assert refused.status_code == 422 and "adding 0" in refused.json()["detail"]


def test_a_buggy_environment_is_a_500_with_a_message_and_the_server_carries_on(serve, toy_manifest):
    with serve(str(toy_manifest)) as url, httpx.Client(base_url=url) as http:
        sid, _ = open_session(http)
        response = http.post("/step", json={"action": {"crash": True}}, headers={H: sid})
        assert response.status_code == 500
        assert response.json()["detail"] == "the environment raised ZeroDivisionError: a bug in the environment"
        assert health_ok(url)
        assert http.post("/step", json={"action": {"add": 1}}, headers={H: sid}).status_code == 200
