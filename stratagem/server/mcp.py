"""``/mcp``: JSON-RPC 2.0 as OpenEnv 0.10 serves it, with the episode as MCP tools an LLM can call.

Methods: ``openenv/session/create`` and ``openenv/session/close`` (sessions from the same
table, and the same cap, as ``/ws`` and HTTP), ``tools/list`` and ``tools/call`` (with an
optional ``params.session_id``; without one a tool runs on a throw-away environment, as in
OpenEnv), and MCP's ``initialize`` and ``ping`` for clients that send them.

Every environment has three tools: ``reset`` (``seed``, ``episode_id`` and the reset parameters
the environment declares), ``step`` (its arguments are the action's fields: the input schema is
the action's JSON schema) and ``state``. A result carries the reply twice over, once for each
kind of reader: MCP's ``content``/``structuredContent``/``isError`` and the
``content``/``structured_content``/``data``/``is_error`` shape of fastmcp's results, which
OpenEnv's ``MCPToolClient.call_tool`` reads (it returns ``data``). A refused call (an illegal
move, a bad argument, a step before reset) is a tool error, ``isError: true`` with the reason
in the text and ``data: {"error", "code", "status"}``, so the model reads why and the episode
is as it was; only protocol mistakes (an unknown tool or session) are JSON-RPC errors.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import orjson
from pydantic import TypeAdapter

import stratagem
from stratagem.envs.core import EpisodeNotActive
from stratagem.server.deadline import StepTimeout
from stratagem.server.errors import as_client_error, error_code, validate
from stratagem.server.protocol import JsonRpc, ResetRequest, dumps, observation_payload
from stratagem.server.sessions import (
    CapacityReached,
    FactoryFailed,
    Session,
    SessionBusy,
    SessionManager,
    UnknownParameters,
    UnknownSession,
)

MCP_PROTOCOL_VERSION = "2025-06-18"
INTERNAL_ERROR = -32603  # JSON-RPC codes protocol.JsonRpc does not name
SERVER_ERROR = -32000
SESSION_CREATE = "openenv/session/create"
SESSION_CLOSE = "openenv/session/close"
MCP_SESSION_HEADER = "Mcp-Session-Id"  # MCP's streamable HTTP transport: a client's session
METHODS = ("initialize", "ping", "tools/list", "tools/call", SESSION_CREATE, SESSION_CLOSE)
TOOLS = ("reset", "step", "state")


def error(code: int, message: str, request_id: Any = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "error": body, "id": request_id}


def success(result: Any, request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def is_notification(request: Any) -> bool:
    """A JSON-RPC notification (no ``id``): over HTTP it gets 202 and no body."""
    return (
        isinstance(request, dict)
        and "id" not in request
        and str(request.get("method", "")).startswith("notifications/")
    )


def tool_result(payload: dict[str, Any]) -> dict[str, Any]:
    text = dumps(payload).decode()
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": payload,
        "isError": False,
        "structured_content": payload,
        "data": payload,
        "is_error": False,
    }


def tool_error(message: str, code: str, status: int) -> dict[str, Any]:
    payload = {"error": message, "code": code, "status": status}
    return {
        "content": [{"type": "text", "text": message}],
        "structuredContent": payload,
        "isError": True,
        "structured_content": payload,
        "data": payload,
        "is_error": True,
    }


class McpServer:
    """The ``/mcp`` methods for one environment's sessions (HTTP and both WebSocket routes use it)."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.spec = manager.spec
        self.tools = build_tools(manager)

    async def handle(self, request: Any, own: Session | None = None, named: Session | None = None) -> dict[str, Any]:
        """One JSON-RPC request in, one response out; never raises.

        ``own``: the calling WebSocket connection's session; ``named``: the session an MCP client's
        ``Mcp-Session-Id`` header names. Either is where tools run when ``params`` names none.
        """
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            rid = request.get("id") if isinstance(request, dict) else None
            return error(
                JsonRpc.INVALID_REQUEST,
                "Invalid Request: expected an object with jsonrpc='2.0' and a string 'method'",
                rid if isinstance(rid, (str, int)) else None,
            )
        rid, method, params = request.get("id"), request["method"], request.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return error(JsonRpc.INVALID_PARAMS, "Invalid params: 'params' must be an object", rid)
        try:
            if method == "initialize":
                return success(
                    {
                        "protocolVersion": MCP_PROTOCOL_VERSION,
                        "capabilities": {"tools": {"listChanged": False}},
                        "serverInfo": {"name": f"stratagem-{self.spec.name}", "version": stratagem.__version__},
                        "instructions": self.instructions(),
                    },
                    rid,
                )
            if method == "ping" or method.startswith("notifications/"):
                return success({}, rid)
            if method == SESSION_CREATE:
                return await self.create_session(rid, own)
            if method == SESSION_CLOSE:
                return await self.close_session(params, rid, own)
            if method == "tools/list":
                self.session_for(params, own or named)  # an unknown session_id is an error here too
                return success({"tools": self.tools}, rid)
            if method == "tools/call":
                return await self.call_tool(params, rid, own, named)
        except UnknownSession as exc:
            return error(JsonRpc.INVALID_PARAMS, f"Unknown session_id: {exc.sid} ({exc.reason})", rid)
        except SessionBusy as exc:
            return error(JsonRpc.INVALID_REQUEST, str(exc), rid)
        except Exception as exc:  # a bug here must still answer in JSON-RPC
            return error(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", rid)
        return error(JsonRpc.METHOD_NOT_FOUND, f"Method not found: {method!r}; supported: {', '.join(METHODS)}", rid)

    async def handle_http(self, body: bytes, mcp_session: str | None) -> tuple[int, dict[str, Any] | None, str | None]:
        """``POST /mcp``: (HTTP status, JSON-RPC response or None for none, the Mcp-Session-Id to send back).

        MCP's streamable-HTTP clients (``initialize`` first) get a session of their own, named by the
        ``Mcp-Session-Id`` header, so their tool calls play one episode; it stays provisional (it
        makes room when the server is full) until a tool call uses it. A request naming a session
        the server no longer has gets 404, which tells such a client to initialize again.
        """
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 200, error(JsonRpc.PARSE_ERROR, f"Parse error: {exc}"), None
        named = None
        if mcp_session:
            try:
                named = self.manager.find(mcp_session)
            except UnknownSession as exc:
                rid = request.get("id") if isinstance(request, dict) else None
                return (
                    404,
                    error(JsonRpc.INVALID_REQUEST, f"Unknown Mcp-Session-Id: {exc.sid} ({exc.reason})", rid),
                    None,
                )
        if is_notification(request):
            return 202, None, None
        if named is None and isinstance(request, dict) and request.get("method") == "initialize":
            try:
                named = await self.manager.create("mcp", confirmed=False)
            except CapacityReached as exc:
                data = {"active_sessions": exc.active, "max_sessions": exc.limit}
                return 200, error(SERVER_ERROR, str(exc), request.get("id"), data), None
            except FactoryFailed as exc:
                data = {"factory_name": self.manager.env_class.__name__}
                return 200, error(SERVER_ERROR, str(exc), request.get("id"), data), None
        answer = await self.handle(request, named=named)
        return 200, answer, named.id if named is not None else None

    def instructions(self) -> str:
        return (
            f"{self.spec.name}: {self.spec.description} Call reset to start an episode, then step with the "
            "action's fields until done is true; state describes the episode. Pass the session_id from "
            f"{SESSION_CREATE} to keep one episode across calls."
        )

    # --- sessions ------------------------------------------------------------------------
    async def create_session(self, rid: Any, own: Session | None) -> dict[str, Any]:
        if own is not None:  # a WebSocket connection already has its session (as OpenEnv 0.10)
            return success({"session_id": own.id}, rid)
        try:
            session = await self.manager.create("mcp")
        except CapacityReached as exc:
            return error(SERVER_ERROR, str(exc), rid, {"active_sessions": exc.active, "max_sessions": exc.limit})
        except FactoryFailed as exc:
            return error(SERVER_ERROR, str(exc), rid, {"factory_name": self.manager.env_class.__name__})
        return success({"session_id": session.id}, rid)

    async def close_session(self, params: dict[str, Any], rid: Any, own: Session | None) -> dict[str, Any]:
        sid = params.get("session_id")
        if not isinstance(sid, str) or not sid:
            return error(JsonRpc.INVALID_PARAMS, "Invalid params - 'session_id' is required", rid)
        if own is not None and sid == own.id:
            return error(
                JsonRpc.INVALID_REQUEST,
                "Cannot close active WebSocket-managed session via MCP method: close the WebSocket instead",
                rid,
            )
        session = self.manager.named(sid)
        if await self.manager.request_close(session):
            return success({"session_id": sid, "closed": True}, rid)
        return success({"session_id": sid, "closed": False, "closing": True}, rid)

    def session_for(self, params: dict[str, Any], own: Session | None) -> Session | None:
        sid = params.get("session_id")
        if sid is None or sid == "":
            return own
        if not isinstance(sid, str):
            raise UnknownSession(str(sid), "a session_id is a string")
        if own is not None and sid == own.id:
            return own
        return self.manager.named(sid)

    # --- tools ---------------------------------------------------------------------------
    async def call_tool(
        self, params: dict[str, Any], rid: Any, own: Session | None, named: Session | None = None
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return error(JsonRpc.INVALID_PARAMS, "Missing 'name' in params", rid)
        if name not in TOOLS:
            return error(
                JsonRpc.INVALID_PARAMS, f"Tool not found: {name!r}; this server's tools: {', '.join(TOOLS)}", rid
            )
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return error(JsonRpc.INVALID_PARAMS, "Invalid params: 'arguments' must be an object", rid)
        session = self.session_for(params, own)
        if session is None and named is not None:
            session = self.manager.named(named.id)  # a tool call makes an initialize's session firm
        try:
            payload = await self.run_tool(name, arguments, session)
        except (Exception, StepTimeout) as exc:
            failure = as_client_error(exc)
            message = failure.message
            if isinstance(exc, EpisodeNotActive) and (session is None or session.episodes == 0):
                message = self.no_episode(session, message)
            return success(tool_error(message, error_code(exc, failure), failure.status), rid)
        return success(tool_result(payload), rid)

    def no_episode(self, session: Session | None, message: str) -> str:
        if session is None:
            return (
                f"{message}. Without a session_id each tools/call runs on a fresh environment, so no episode "
                f"lasts from one call to the next: create a session with {SESSION_CREATE} and pass its session_id"
            )
        return f"no episode in this session yet: call the reset tool first ({message})"

    async def run_tool(self, name: str, arguments: dict[str, Any], session: Session | None) -> dict[str, Any]:
        manager = self.manager
        starts = False
        if name == "reset":
            kwargs = validate(ResetRequest, arguments, where="arguments").model_dump(exclude_unset=True)
            manager.check_kwargs("reset", kwargs)
            starts = True

            def work(env: Any) -> dict[str, Any]:
                return observation_payload(env.reset(**kwargs))
        elif name == "step":
            action = validate(manager.env_class.action_type, arguments, where="arguments")

            def work(env: Any) -> dict[str, Any]:
                return observation_payload(env.step(action))
        else:
            if arguments:
                raise UnknownParameters(f"the state tool takes no arguments, got {sorted(arguments)}")

            def work(env: Any) -> dict[str, Any]:
                return env.state.model_dump()

        if session is None:
            return await manager.run(lambda: _on_fresh_env(manager, work))
        return await manager.call(session, work, starts_episode=starts)


def _on_fresh_env(manager: SessionManager, work: Any) -> Any:
    env = manager.new_env()
    try:
        return work(env)
    finally:
        env.close()


def build_tools(manager: SessionManager) -> list[dict[str, Any]]:
    """The MCP tool list: reset, step and state, with input schemas from the environment's models."""
    spec, cls = manager.spec, manager.env_class
    returns = "Returns {observation, reward, done, metadata}."
    refused = "A refused call returns an error result saying why, and leaves the episode as it was."
    action_schema = cls.action_type.model_json_schema()
    properties = action_schema.get("properties", {})
    if "metadata" in properties and "metadata" not in action_schema.get("required", []):
        action_schema = {**action_schema, "properties": {k: v for k, v in properties.items() if k != "metadata"}}
    return [
        {
            "name": "reset",
            "description": f"Start a new episode of {spec.name}: {spec.description} {returns} "
            "Give seed to replay an episode exactly.",
            "inputSchema": reset_schema(manager),
        },
        {
            "name": "step",
            "description": f"Take one action in the current {spec.name} episode; the arguments are the action's "
            f"fields. {returns} {refused}",
            "inputSchema": action_schema,
        },
        {
            "name": "state",
            "description": f"The current {spec.name} episode's state: episode_id, step_count and more.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    ]


def reset_schema(manager: SessionManager) -> dict[str, Any]:
    """``seed``, ``episode_id`` and the extra parameters ``reset`` declares, typed from its signature."""
    base = ResetRequest.model_json_schema()
    properties = {name: base["properties"][name] for name in ("seed", "episode_id")}
    required: list[str] = []
    reset = manager.env_class.reset
    try:
        hints = typing.get_type_hints(reset)
    except Exception:
        hints = {}
    for param in inspect.signature(reset).parameters.values():
        if param.name in ("self", "seed", "episode_id") or param.kind not in (
            param.POSITIONAL_OR_KEYWORD,
            param.KEYWORD_ONLY,
        ):
            continue
        try:
            schema = TypeAdapter(hints.get(param.name, Any)).json_schema()
        except Exception:
            schema = {}
        if param.default is param.empty:
            required.append(param.name)
        else:
            try:
                schema["default"] = orjson.loads(dumps(param.default))
            except TypeError:
                pass
        properties[param.name] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": manager.reset_params is None}
    if required:
        schema["required"] = required
    return schema
