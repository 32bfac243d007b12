"""``/ws``: one environment per connection, OpenEnv's message envelope and error codes.

An error in one message answers with an error frame and leaves the connection and the
episode as they were. Error frames carry OpenEnv's ``message``/``code`` plus ``status``, the
HTTP status the same mistake gets over HTTP, so a client can raise the same exception for
both transports.

``/ws?session_id=ID`` attaches to a session made by ``openenv/session/create`` (OpenEnv 0.10's
``MCPToolClient`` does this) instead of opening one: one connection at a time, and closing the
connection leaves the session to its owner. ``/mcp`` over WebSocket is JSON-RPC frames on a
session of the connection's own.

When the server closes an idle session it says so (a ``SESSION_ERROR`` frame) before closing
the socket. OpenEnv 0.10's client reconnects by itself on its next call and so lands in a new
session; its first ``step`` there is answered with a message that says exactly that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from stratagem.envs.core import EpisodeNotActive
from stratagem.server.deadline import StepTimeout
from stratagem.server.errors import as_client_error, error_code, validate
from stratagem.server.mcp import SERVER_ERROR, McpServer, error
from stratagem.server.protocol import ErrorCode, JsonRpc, ResetRequest, dumps, error_frame, observation_payload
from stratagem.server.sessions import CapacityReached, Session, SessionBusy, SessionManager, UnknownSession

MCP_STEPS = ("list_tools", "call_tool")  # OpenEnv 0.3.0's MCP actions, sent as steps
ALLOWED_KEYS = {
    "reset": {"type", "data"},
    "step": {"type", "data"},
    "state": {"type"},
    "close": {"type"},
    "mcp": {"type", "data"},
}


def _error(exc: BaseException) -> bytes:
    """An error frame for a failed reset/step/state: OpenEnv's code plus the HTTP status."""
    failure = as_client_error(exc)
    return error_frame(error_code(exc, failure), failure.message, status=failure.status, **failure.extra)


def _reaped_frame(manager: SessionManager) -> bytes:
    return error_frame(
        ErrorCode.SESSION_ERROR,
        f"session expired: the server closed it after {manager.limits.session_timeout_s:g} s idle, and its "
        "episode with it; reset to start again (a client that reconnects gets a new session)",
        status=408,
    )


async def serve_websocket(websocket: WebSocket, manager: SessionManager, mcp: McpServer) -> None:
    await websocket.accept()

    async def reaped() -> None:
        await _send_and_close(websocket, _reaped_frame(manager))

    requested = websocket.query_params.get("session_id")
    attached = bool(requested)
    try:
        if attached:
            session = manager.attach(requested, on_reap=reaped)
        else:
            session = await manager.create("ws", on_reap=reaped)
    except (UnknownSession, SessionBusy) as exc:
        status = 404 if isinstance(exc, UnknownSession) else 409
        return await _send_and_close(websocket, error_frame(ErrorCode.SESSION_ERROR, str(exc), status=status))
    except CapacityReached as exc:
        frame = error_frame(
            ErrorCode.CAPACITY_REACHED, str(exc), active_sessions=exc.active, max_sessions=exc.limit, status=503
        )
        return await _send_and_close(websocket, frame)
    except Exception as exc:  # the environment could not be built
        frame = error_frame(ErrorCode.FACTORY_ERROR, str(exc), factory_name=manager.env_class.__name__, status=500)
        return await _send_and_close(websocket, frame)
    try:
        async for raw in _frames(websocket):
            reply = await _handle(raw, session, manager, mcp)
            if reply is None:  # "close"
                await websocket.close(code=1000)
                break
            await websocket.send_text(reply.decode())
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away, or the reaper closed the socket under us
    finally:
        if attached:
            await manager.detach(session)
        else:
            await manager.close(session)


async def serve_mcp_websocket(websocket: WebSocket, manager: SessionManager, mcp: McpServer) -> None:
    """``WS /mcp``: JSON-RPC requests and responses as text frames, on a session of this connection's own."""
    await websocket.accept()

    async def reaped() -> None:
        message = orjson.loads(_reaped_frame(manager))["data"]["message"]
        await _send_and_close(websocket, dumps(error(SERVER_ERROR, message)))

    try:
        session = await manager.create("ws", on_reap=reaped)
    except CapacityReached as exc:
        data = {"active_sessions": exc.active, "max_sessions": exc.limit}
        return await _send_and_close(websocket, dumps(error(SERVER_ERROR, str(exc), data=data)))
    except Exception as exc:
        data = {"factory_name": manager.env_class.__name__}
        return await _send_and_close(websocket, dumps(error(SERVER_ERROR, str(exc), data=data)))
    try:
        async for raw in _frames(websocket):
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                await websocket.send_text(dumps(error(JsonRpc.PARSE_ERROR, f"Parse error: {exc}")).decode())
                continue
            await websocket.send_text(dumps(await mcp.handle(request, own=session)).decode())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await manager.close(session)


async def _frames(websocket: WebSocket) -> AsyncIterator[str | bytes]:
    """The client's frames, text or bytes, until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else (message.get("bytes") or b"")


async def _handle(raw: str | bytes, session: Session, manager: SessionManager, mcp: McpServer) -> bytes | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error_frame(ErrorCode.INVALID_JSON, f"Invalid JSON: {exc}", status=422)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return error_frame(
            ErrorCode.VALIDATION_ERROR,
            "a message must be a JSON object with a string 'type': reset, step, state, close or mcp",
            status=422,
        )
    kind = msg["type"]
    if kind not in ALLOWED_KEYS:
        return error_frame(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown message type: {kind!r}; expected reset, step, state, close or mcp",
            status=422,
        )
    extra = sorted(set(msg) - ALLOWED_KEYS[kind])
    if extra:
        return error_frame(
            ErrorCode.VALIDATION_ERROR,
            f"unexpected key(s) {extra} in a {kind!r} message; allowed: {sorted(ALLOWED_KEYS[kind])}",
            status=422,
        )
    data = msg.get("data", {} if kind in ("reset", "mcp") else None)
    if kind in ("reset", "step", "mcp") and not isinstance(data, dict):
        return error_frame(
            ErrorCode.VALIDATION_ERROR, f"'data' of a {kind!r} message must be a JSON object", status=422
        )
    if kind == "close":
        return None
    if kind == "mcp":
        return dumps({"type": "mcp", "data": await mcp.handle(data, own=session)})
    if kind == "step" and data.get("type") in MCP_STEPS and "type" not in manager.env_class.action_type.model_fields:
        return await _mcp_step(data, session, mcp)
    try:
        if kind == "reset":
            kwargs = validate(ResetRequest, data, where="data").model_dump(exclude_unset=True)
            manager.check_kwargs("reset", kwargs)
            return await manager.call(
                session,
                lambda env: _frame("observation", observation_payload(env.reset(**kwargs))),
                starts_episode=True,
            )
        if kind == "step":
            action = validate(manager.env_class.action_type, data, where="data")
            return await manager.call(session, lambda env: _frame("observation", observation_payload(env.step(action))))
        return await manager.call(session, lambda env: _frame("state", env.state.model_dump()))
    except EpisodeNotActive as exc:
        if session.episodes == 0:  # a fresh session: most likely a client that reconnected by itself
            failure = as_client_error(exc)
            message = (
                "no episode: call reset first (a reconnected client starts a new session; the server closes "
                f"sessions idle for {manager.limits.session_timeout_s:g} s)"
            )
            return error_frame(ErrorCode.EXECUTION_ERROR, message, status=failure.status)
        return _error(exc)
    except (Exception, StepTimeout) as exc:
        return _error(exc)


async def _mcp_step(data: dict[str, Any], session: Session, mcp: McpServer) -> bytes:
    """OpenEnv 0.3.0's ``MCPToolClient`` calls tools as WebSocket steps: ``{"type": "list_tools"}`` and
    ``{"type": "call_tool", "tool_name", "arguments"}``; the replies are its List/CallToolObservation."""
    if data["type"] == "list_tools":
        observation: dict[str, Any] = {"tools": mcp.tools, "metadata": {}}
        return _frame("observation", {"observation": observation, "reward": None, "done": False, "metadata": {}})
    name = data.get("tool_name")
    params = {"name": name, "arguments": data.get("arguments") or {}}
    answer = await mcp.handle({"jsonrpc": "2.0", "method": "tools/call", "params": params, "id": 0}, own=session)
    reward, done = None, False
    if "error" in answer:
        message = answer["error"]["message"]
        kind = "tool_not_found" if message.startswith("Tool not found") else "invalid_args"
        observation = {"tool_name": name, "result": None, "error": {"error_type": kind, "message": message}}
    else:
        result = answer["result"]
        observation = {"tool_name": name, "result": result, "error": None}
        if not result["isError"] and isinstance(result["data"], dict):
            reward, done = result["data"].get("reward"), bool(result["data"].get("done", False))
    observation["metadata"] = {}
    return _frame("observation", {"observation": observation, "reward": reward, "done": done, "metadata": {}})


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return dumps({"type": kind, "data": data})


async def _send_and_close(websocket: WebSocket, frame: bytes) -> None:
    try:
        if websocket.client_state is WebSocketState.CONNECTED:
            await websocket.send_text(frame.decode())
            await websocket.close(code=1000)
    except (RuntimeError, WebSocketDisconnect):
        pass
