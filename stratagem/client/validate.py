"""``stratagem validate URL``: check a running server against the wire protocol.

Each check is one small function that talks to the server the way a client would and
raises ``Failed`` with what it saw. Works against any OpenEnv server (stratagem's, OpenEnv
0.3.0's, 0.10's): stratagem's own extensions (stateful HTTP sessions) and 0.10's (MCP
sessions) are checked only when the server offers them, and reported as skipped otherwise.

The WebSocket episode is played the way OpenEnv 0.10's runtime collector plays it (reset with
a seed and an episode_id, ``state`` after the reset and after every step), and three checks
then grade it as 0.10's runtime graders do: ``runtime.reward_well_formed`` (every step reward
a finite number, within the declared range when one is known), ``runtime.observation_schema``
(each observation, with reward and done, valid against ``/schema``) and
``runtime.state_contract`` (``episode_id`` as requested, ``step_count`` = steps since reset).
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    expect("reward" in payload, f"{where}: 'reward' is missing (null is allowed, absence is not)")
    reward = payload.get("reward")
    expect(reward is None or isinstance(reward, (int, float)), f"{where}: 'reward' must be a number or null")
    metadata = payload.get("metadata")  # 0.10 sends null (HTTP) or leaves it out (WS) when empty
    expect(metadata is None or isinstance(metadata, dict), f"{where}: 'metadata' must be an object or null")
    leaked = {"reward", "done"} & set(payload["observation"])
    expect(not leaked, f"{where}: {sorted(leaked)} must be lifted out of 'observation'")


def _numeric(value: Any) -> bool:
    """A finite JSON number (not a boolean), as OpenEnv 0.10's ``runtime.reward_well_formed`` wants."""
    return type(value) in (int, float) and math.isfinite(value)


def _schema_bounds(schema: Any) -> tuple[float, float] | None:
    """``minimum``/``maximum`` of the observation schema's ``reward`` (directly or in one ``anyOf`` branch)."""
    reward = (schema or {}).get("properties", {}).get("reward") if isinstance(schema, dict) else None
    for branch in [reward, *((reward or {}).get("anyOf") or [])]:
        if isinstance(branch, dict) and _numeric(branch.get("minimum")) and _numeric(branch.get("maximum")):
            return float(branch["minimum"]), float(branch["maximum"])
    return None


def manifest_reward_range(path: str | Path) -> tuple[float, float]:
    """``validation.reward.range`` of an ``openenv.yaml`` (OpenEnv 0.10's default, [0, 1], when the block
    has none), the range ``openenv validate PACKAGE`` grades rewards against."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    validation = data.get("validation") if isinstance(data, dict) else None
    if not isinstance(validation, dict):
        raise ValueError(f"{path} has no 'validation:' block, so it declares no reward range")
    reward = validation.get("reward")
    bounds = reward.get("range", (0.0, 1.0)) if isinstance(reward, dict) else (0.0, 1.0)
    if not (
        isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(map(_numeric, bounds)) and bounds[0] < bounds[1]
    ):
        raise ValueError(f"{path}: validation.reward.range must be [low, high] with low < high, got {bounds!r}")
    return float(bounds[0]), float(bounds[1])


@dataclass
class Episode:
    """One WebSocket episode as OpenEnv 0.10's runtime collector records it."""

    episode_id: str  # the id the reset asked for
    reset: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)  # states[i]: after i steps


# A known cause, named in the report: OpenEnv's own OpenSpiel server counts its opponent's plies.
OPPONENT_PLIES = (
    "the server counts more than this client's steps, e.g. an opponent's moves, as OpenEnv's OpenSpiel server does"
)


def mirrors(grader: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Mark a check as OpenEnv 0.10's runtime grader ``grader``: its failures say that grader fails too, so
    that a failing server (OpenEnv's own included) reads as a finding about the server, not as a crash here."""

    def wrap(check: Callable[..., str]) -> Callable[..., str]:
        @functools.wraps(check)
        def checked(self: Any) -> str:
            try:
                return check(self)
            except Failed as exc:
                raise Failed(f"{exc} [OpenEnv 0.10's {grader} fails this server too]") from None

        return checked

    return wrap


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
        if self.reward_range is None and (bounds := _schema_bounds(body["observation"])):
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

    def _played(self) -> Episode:
        if self.episode is None:
            raise Skipped("no WebSocket episode to grade (see 'WS episode')")
        if not self.episode.steps:
            raise Skipped("the episode ended at its reset: no step to grade")
        return self.episode

    @mirrors("runtime.reward_well_formed")
    def check_rewards(self) -> str:
        """OpenEnv 0.10's ``runtime.reward_well_formed``: reset reward null or a number, every step's a finite
        number, within the declared range when one is known."""
        episode = self._played()
        low, high = self.reward_range or (-math.inf, math.inf)
        reset = episode.reset.get("reward")
        expect(reset is None or (_numeric(reset) and low <= reset <= high), f"reset reward {reset!r} out of range")
        for index, data in enumerate(episode.steps, 1):
            reward = data.get("reward")
            expect(_numeric(reward), f"step {index}: reward {reward!r} is not a finite number")
            expect(low <= reward <= high, f"step {index}: reward {reward} outside the range [{low:g}, {high:g}]")
        rewards = [data["reward"] for data in episode.steps]
        seen = f"{len(rewards)} step rewards numeric, {min(rewards):g}..{max(rewards):g}"
        if self.reward_range is None:
            return seen + " (no range declared: --reward-range or --manifest to check one)"
        return seen + f", within [{low:g}, {high:g}] ({self.range_source})"

    @mirrors("runtime.observation_schema")
    def check_observation_schema(self) -> str:
        """OpenEnv 0.10's ``runtime.observation_schema``: each observation, with reward and done, is valid
        against ``/schema``'s ``observation`` (``reset_observation`` for the reset, when given)."""
        episode = self._played()
        try:
            from jsonschema import Draft202012Validator
        except ImportError:
            raise Skipped("needs the jsonschema package (pip install jsonschema)") from None
        if not self.schemas:
            raise Skipped("no schema to check against (see 'GET /schema')")
        step = Draft202012Validator(self.schemas["observation"])
        reset_schema = self.schemas.get("reset_observation")
        reset = Draft202012Validator(reset_schema) if reset_schema else step
        for where, validator, data in [("reset", reset, episode.reset)] + [
            (f"step {i}", step, data) for i, data in enumerate(episode.steps, 1)
        ]:
            instance = {**data["observation"], "reward": data.get("reward"), "done": data["done"]}
            error = next(iter(validator.iter_errors(instance)), None)
            if error is not None:
                at = "/".join(str(p) for p in error.absolute_path) or "the observation"
                raise Failed(f"{where}: {at}: {error.message}"[:300])
        which = "reset_observation and observation" if reset is not step else "observation"
        return f"{len(episode.steps) + 1} observations valid against /schema {which}"

    @mirrors("runtime.state_contract")
    def check_state_contract(self) -> str:
        """OpenEnv 0.10's ``runtime.state_contract``: after the reset and every step, ``state`` has the
        ``episode_id`` the reset asked for and ``step_count`` = the steps since the reset."""
        episode = self._played()
        problems = []
        ids = {state.get("episode_id") for state in episode.states}
        if ids != {episode.episode_id}:
            seen = ", ".join(sorted(repr(i)[:40] for i in ids))
            problems.append(
                f"episode_id is {seen}, not the {episode.episode_id!r} the reset asked for (the server ignores "
                "a requested episode_id)"
            )
        for steps, state in enumerate(episode.states):
            count = state.get("step_count")
            if type(count) is not int:
                problems.append(f"step_count {count!r} after {steps} step(s) is not an integer")
                break
            if count != steps:
                cause = OPPONENT_PLIES if count > steps else "the server counts fewer than this client's steps"
                problems.append(f"step_count is {count} after {steps} step(s) ({cause})")
                break
        if problems:
            raise Failed("; ".join(problems))
        return f"episode_id as requested, step_count 0..{len(episode.steps)} over {len(episode.states)} states"

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


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.name:<{width}}  {r.outcome:<6}  {r.detail}" for r in results]
    passed = sum(r.outcome == "PASS" for r in results)
    failed = sum(r.outcome == "FAIL" for r in results)
    lines.append(f"{passed} passed, {failed} failed, {len(results) - passed - failed} skipped")
    return "\n".join(lines)
