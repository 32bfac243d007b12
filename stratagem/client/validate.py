"""``stratagem validate URL``: check a running server against the wire protocol.

Each check is one small function that talks to the server the way a client would and
raises ``Failed`` with what it saw. Works against any OpenEnv server (stratagem's, OpenEnv
0.3.0's, 0.10's): stratagem's own extensions (stateful HTTP sessions) and 0.10's (MCP
sessions) are checked only when the server offers them, and reported as skipped otherwise.

The WebSocket episode is played the way OpenEnv 0.10's runtime collector plays it (reset with
a seed and an episode_id, ``state`` after the reset and after every step), and then graded as
0.10's runtime graders do (``stratagem.client.runtime_graders``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from stratagem.client.check_results import CheckResult, Failed, Skipped, expect
from stratagem.client.runtime_graders import (
    Episode,
    grade_observation_schema,
    grade_rewards,
    grade_state_contract,
    schema_bounds,
)
from stratagem.client.wire import http_url, ws_url
from stratagem.server.protocol import SESSION_HEADER


def _json(response: httpx.Response, status: int = 200) -> Any:
    expect(response.status_code == status, f"HTTP {response.status_code} (expected {status}): {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise Failed(f"body is not JSON: {response.text[:200]!r}") from None


def _step_result_shape(payload: Any, where: str) -> None:
    expect(isinstance(payload, dict), f"{where}: expected an object, got {type(payload).__name__}")
    expect(isinstance(payload.get("observation"), dict), f"{where}: 'observation' must be an object")
    expect(isinstance(payload.get("done"), bool), f"{where}: 'done' must be a boolean")
    expect("reward" in payload, f"{where}: 'reward' is missing (null is allowed, absence is not)")
    reward = payload.get("reward")
    expect(reward is None or isinstance(reward, (int, float)), f"{where}: 'reward' must be a number or null")
    metadata = payload.get("metadata")  # 0.10 sends null (HTTP) or leaves it out (WS) when empty
    expect(metadata is None or isinstance(metadata, dict), f"{where}: 'metadata' must be an object or null")
    leaked = {"reward", "done"} & set(payload["observation"])
    expect(not leaked, f"{where}: {sorted(leaked)} must be lifted out of 'observation'")


class Validator:
    def __init__(
        self,
        url: str,
        action: dict[str, Any] | None = None,
        timeout_s: float = 10.0,
        max_steps: int = 5000,
        reward_range: tuple[float, float] | None = None,
        range_source: str = "given",
    ) -> None:
        self.base, self.ws_base = http_url(url), ws_url(url)
        self.http = httpx.Client(base_url=self.base, timeout=timeout_s)
        self.timeout_s, self.max_steps = timeout_s, max_steps
        self.fixed_action = action
        self.reward_range, self.range_source = reward_range, range_source if reward_range else None
        self.schemas: dict[str, Any] = {}
        self.episode: Episode | None = None

    # --- helpers ------------------------------------------------------------------------
    def action_for(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The action to play: the one given on the command line, else the first legal action id.

        ``legal_actions`` lists ids, or objects carrying one (OpenSpiel's ``{"id", "name"}``).
        """
        if self.fixed_action is not None:
            return self.fixed_action
        legal = observation.get("legal_actions")
        if isinstance(legal, list) and legal:
            first = legal[0]
            return {"action_id": first["id"] if isinstance(first, dict) and "id" in first else first}
        raise Skipped("cannot derive a valid action from the observation; pass --action JSON")

    def ws(self) -> ClientConnection:
        return ws_connect(self.ws_base, open_timeout=self.timeout_s, close_timeout=self.timeout_s)

    def ws_call(self, conn: ClientConnection, message: Any) -> dict[str, Any]:
        conn.send(message if isinstance(message, str) else json.dumps(message))
        reply = json.loads(conn.recv(timeout=self.timeout_s))
        expect(isinstance(reply, dict) and "type" in reply, f"reply is not an envelope: {reply!r}"[:200])
        return reply

    # --- checks -------------------------------------------------------------------------
    def check_health(self) -> str:
        body = _json(self.http.get("/health"))
        expect(body.get("status") == "healthy", f"expected status 'healthy', got {body!r}")
        return "healthy"

    def check_metadata(self) -> str:
        body = _json(self.http.get("/metadata"))
        missing = {"name", "description"} - set(body)
        expect(not missing, f"missing keys {sorted(missing)}")
        return f"name={body['name']!r}"

    def check_schema(self) -> str:
        body = _json(self.http.get("/schema"))
        for key in ("action", "observation", "state"):
            expect(isinstance(body.get(key), dict) and body[key], f"'{key}' must be a non-empty JSON Schema")
        reset = body.get("reset_observation")
        expect(reset is None or (isinstance(reset, dict) and reset), "'reset_observation' must be a JSON Schema")
        self.schemas = body
        if self.reward_range is None and (bounds := schema_bounds(body["observation"])):
            self.reward_range, self.range_source = bounds, "/schema"
        return "action, observation, state" + (", reset_observation" if reset else "") + " schemas"

    def check_openapi(self) -> str:
        body = _json(self.http.get("/openapi.json"))
        version = body.get("info", {}).get("version")
        expect(bool(version), "info.version is missing")
        paths = set(body.get("paths", {}))
        missing = {"/reset", "/step", "/state", "/health", "/schema", "/metadata"} - paths
        expect(not missing, f"paths missing from the spec: {sorted(missing)}")
        return f"version {version}"

    def check_reset(self) -> str:
        response = self.http.post("/reset", json={"seed": 1})
        payload = _json(response)
        _step_result_shape(payload, "/reset")
        self.first_observation = payload["observation"]
        self.session_id = response.headers.get(SESSION_HEADER)
        return "stateful session opened" if self.session_id else "stateless (no X-Session-Id)"

    def check_http_errors(self) -> str:
        bad_json = self.http.post("/step", content=b"{not json", headers={"content-type": "application/json"})
        expect(bad_json.status_code == 422, f"malformed JSON got HTTP {bad_json.status_code}, expected 422")
        no_action = self.http.post("/step", json={"nothing": 1})
        expect(no_action.status_code == 422, f"a body without 'action' got HTTP {no_action.status_code}")
        bad_seed = self.http.post("/reset", json={"seed": -1})
        expect(bad_seed.status_code == 422, f"seed=-1 got HTTP {bad_seed.status_code}, expected 422")
        return "422 for malformed JSON, missing action, negative seed"

    def check_http_session(self) -> str:
        if not getattr(self, "session_id", None):
            raise Skipped("server is stateless over HTTP (OpenEnv's servers, 0.3.0 and 0.10, keep episodes on WS only)")
        headers = {SESSION_HEADER: self.session_id}
        payload = _json(
            self.http.post("/step", json={"action": self.action_for(self.first_observation)}, headers=headers)
        )
        _step_result_shape(payload, "/step")
        state = _json(self.http.get("/state", headers=headers))
        expect(state.get("step_count") == 1, f"step_count after one step is {state.get('step_count')!r}")
        lost = self.http.post(
            "/step",
            json={"action": self.action_for(self.first_observation)},
            headers={SESSION_HEADER: "no-such-session"},
        )
        expect(lost.status_code == 404, f"an unknown session got HTTP {lost.status_code}, expected 404")
        self.http.delete("/session", headers=headers)
        return "step + state on the session; 404 for an unknown one"

    def check_state(self) -> str:
        body = _json(self.http.get("/state"))
        expect(isinstance(body.get("step_count"), int), f"'step_count' must be an integer, got {body!r}"[:200])
        return "episode_id, step_count"

    def check_mcp(self) -> str:
        body = _json(self.http.post("/mcp", json={"jsonrpc": "2.0", "method": "tools/list", "id": 1}))
        expect(body.get("jsonrpc") == "2.0" and body.get("id") == 1, f"not a JSON-RPC 2.0 reply: {body!r}"[:200])
        expect("result" in body or "error" in body, "neither result nor error")
        garbage = _json(self.http.post("/mcp", content=b"{oops", headers={"content-type": "application/json"}))
        expect(garbage.get("error", {}).get("code") == -32700, f"parse error not reported: {garbage!r}"[:200])
        return "tools/list answered; -32700 for bad JSON"

    def _state(self, conn: ClientConnection, after: str) -> dict[str, Any]:
        reply = self.ws_call(conn, {"type": "state"})
        shaped = reply["type"] == "state" and isinstance(reply.get("data"), dict)
        expect(shaped, f"state {after} answered {reply!r}"[:300])
        return reply["data"]

    def check_ws_episode(self) -> str:
        """Reset (seed, episode_id), state, then step + state until done, as 0.10's collector does."""
        with self.ws() as conn:
            episode_id = f"stratagem-validate-{uuid.uuid4().hex[:12]}"
            reply = self.ws_call(conn, {"type": "reset", "data": {"seed": 7, "episode_id": episode_id}})
            expect(reply["type"] == "observation", f"reset answered {reply!r}"[:300])
            _step_result_shape(reply["data"], "ws reset")
            episode = Episode(episode_id, reply["data"], states=[self._state(conn, "after the reset")])
            data = reply["data"]
            while not data["done"] and len(episode.steps) < self.max_steps:
                steps = len(episode.steps)
                reply = self.ws_call(conn, {"type": "step", "data": self.action_for(data["observation"])})
                expect(reply["type"] == "observation", f"step {steps + 1} answered {reply!r}"[:300])
                _step_result_shape(reply["data"], f"ws step {steps + 1}")
                data = reply["data"]
                episode.steps.append(data)
                episode.states.append(self._state(conn, f"after step {steps + 1}"))
            self.episode = episode
            steps = len(episode.steps)
            conn.send(json.dumps({"type": "close"}))
            try:
                conn.recv(timeout=self.timeout_s)
                raise Failed("the server kept the connection open after 'close'")
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                expect(code == 1000, f"closed with code {code}, expected 1000")
        cut = " (stopped at the step limit)" if not data["done"] else ""
        return f"{steps} steps, done={data['done']}{cut}, closed with 1000"

    # --- OpenEnv 0.10's runtime grades (stratagem.client.runtime_graders) ---------------
    def _played(self) -> Episode:
        if self.episode is None:
            raise Skipped("no WebSocket episode to grade (see 'WS episode')")
        if not self.episode.steps:
            raise Skipped("the episode ended at its reset: no step to grade")
        return self.episode

    def check_rewards(self) -> str:
        return grade_rewards(self._played(), self.reward_range, self.range_source)

    def check_observation_schema(self) -> str:
        return grade_observation_schema(self._played(), self.schemas)

    def check_state_contract(self) -> str:
        return grade_state_contract(self._played())

    def mcp(self, method: str, **params: Any) -> dict[str, Any]:
        return _json(self.http.post("/mcp", json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))

    def check_mcp_sessions(self) -> str:
        """OpenEnv 0.10's MCP sessions (what its MCPToolClient opens on connect): create, attach a
        WebSocket with ``?session_id=``, play a reset there, detach, close; closing twice is refused."""
        created = self.mcp("openenv/session/create")
        if created.get("error", {}).get("code") == -32601:
            raise Skipped("no MCP sessions (openenv/session/create is an OpenEnv 0.10 method)")
        sid = (created.get("result") or {}).get("session_id")
        expect(isinstance(sid, str) and bool(sid), f"openenv/session/create answered {created!r}"[:300])
        try:
            with ws_connect(
                f"{self.ws_base}?session_id={sid}", open_timeout=self.timeout_s, close_timeout=self.timeout_s
            ) as conn:
                reply = self.ws_call(conn, {"type": "reset", "data": {"seed": 3}})
                expect(reply["type"] == "observation", f"a reset on the attached session answered {reply!r}"[:300])
        finally:
            closed = self.mcp("openenv/session/close", session_id=sid)
        expect((closed.get("result") or {}).get("closed") is True, f"openenv/session/close answered {closed!r}"[:300])
        again = self.mcp("openenv/session/close", session_id=sid)
        refused = again.get("error", {}).get("code") == -32602
        expect(refused, f"closing it again answered {again!r}, expected -32602"[:300])
        return "create, attach /ws?session_id=, reset, close; -32602 for a closed session"

    def check_ws_errors(self) -> str:
        with self.ws() as conn:
            for message, code in (
                ("{not json", "INVALID_JSON"),
                ({"type": "dance"}, "UNKNOWN_TYPE"),
                ({"type": "step", "data": {"no_such_field": 1}}, "VALIDATION_ERROR"),
            ):
                reply = self.ws_call(conn, message)
                got = reply.get("data", {}).get("code")
                expect(
                    reply["type"] == "error" and got == code, f"{message!r} answered {reply!r}, expected {code}"[:300]
                )
                expect(isinstance(reply["data"].get("message"), str), "error frames need a 'message'")
            reply = self.ws_call(conn, {"type": "reset", "data": {}})
            expect(reply["type"] == "observation", "the connection did not survive the errors")
        return "INVALID_JSON, UNKNOWN_TYPE, VALIDATION_ERROR; connection survives"

    def checks(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("GET /health", self.check_health),
            ("GET /metadata", self.check_metadata),
            ("GET /schema", self.check_schema),
            ("GET /openapi.json", self.check_openapi),
            ("POST /reset", self.check_reset),
            ("HTTP errors", self.check_http_errors),
            ("HTTP session", self.check_http_session),
            ("GET /state", self.check_state),
            ("POST /mcp", self.check_mcp),
            ("WS episode", self.check_ws_episode),
            ("rewards", self.check_rewards),
            ("observation schema", self.check_observation_schema),
            ("state contract", self.check_state_contract),
            ("WS error frames", self.check_ws_errors),
            ("MCP sessions", self.check_mcp_sessions),
        ]

    def run(self) -> list[CheckResult]:
        results = []
        for name, check in self.checks():
            try:
                results.append(CheckResult(name, "PASS", check()))
            except Skipped as exc:
                results.append(CheckResult(name, "SKIP", str(exc)))
            except Failed as exc:
                results.append(CheckResult(name, "FAIL", str(exc)))
            except (httpx.HTTPError, OSError, WebSocketException, TimeoutError, ValueError) as exc:
                results.append(CheckResult(name, "FAIL", f"{type(exc).__name__}: {exc}"))
        self.http.close()
        return results
