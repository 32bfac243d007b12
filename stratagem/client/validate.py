"""``stratagem validate URL``: check a running server against the wire protocol.

Each check is one small function that talks to the server the way a client would and
raises ``Failed`` with what it saw. Works against any OpenEnv server: stratagem's own
extensions (stateful HTTP sessions, ``status`` in error frames) are checked only when the
server offers them, and reported as skipped otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from stratagem.client.http import http_url, ws_url
from stratagem.server.protocol import SESSION_HEADER


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


@dataclass
class CheckResult:
    name: str
    outcome: str  # PASS, FAIL or SKIP
    detail: str


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


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
    reward = payload.get("reward")
    expect(reward is None or isinstance(reward, (int, float)), f"{where}: 'reward' must be a number or null")
    leaked = {"reward", "done"} & set(payload["observation"])
    expect(not leaked, f"{where}: {sorted(leaked)} must be lifted out of 'observation'")


class Validator:
    def __init__(
        self, url: str, action: dict[str, Any] | None = None, timeout_s: float = 10.0, max_steps: int = 5000
    ) -> None:
        self.base, self.ws_base = http_url(url), ws_url(url)
        self.http = httpx.Client(base_url=self.base, timeout=timeout_s)
        self.timeout_s, self.max_steps = timeout_s, max_steps
        self.fixed_action = action

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
        return "action, observation, state schemas"

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
            raise Skipped("server is stateless over HTTP (OpenEnv 0.3.0 behaviour)")
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

    def check_ws_episode(self) -> str:
        with self.ws() as conn:
            reply = self.ws_call(conn, {"type": "reset", "data": {"seed": 7}})
            expect(reply["type"] == "observation", f"reset answered {reply['type']!r}")
            _step_result_shape(reply["data"], "ws reset")
            steps, data = 0, reply["data"]
            while not data["done"] and steps < self.max_steps:
                reply = self.ws_call(conn, {"type": "step", "data": self.action_for(data["observation"])})
                expect(reply["type"] == "observation", f"step {steps + 1} answered {reply!r}"[:300])
                data, steps = reply["data"], steps + 1
            state = self.ws_call(conn, {"type": "state"})
            expect(state["type"] == "state", f"state answered {state['type']!r}")
            expect(state["data"].get("step_count") == steps, f"step_count {state['data'].get('step_count')} != {steps}")
            conn.send(json.dumps({"type": "close"}))
            try:
                conn.recv(timeout=self.timeout_s)
                raise Failed("the server kept the connection open after 'close'")
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                expect(code == 1000, f"closed with code {code}, expected 1000")
        return f"{steps} steps, done={data['done']}, closed with 1000"

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
            ("WS error frames", self.check_ws_errors),
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


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.name:<{width}}  {r.outcome:<6}  {r.detail}" for r in results]
    passed = sum(r.outcome == "PASS" for r in results)
    failed = sum(r.outcome == "FAIL" for r in results)
    lines.append(f"{passed} passed, {failed} failed, {len(results) - passed - failed} skipped")
    return "\n".join(lines)
