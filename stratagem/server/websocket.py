"""``/ws``: one environment per connection, OpenEnv's message envelope and error codes.

An error in one message answers with an error frame and leaves the connection and the
episode as they were. Error frames carry OpenEnv's ``message``/``code`` plus ``status``, the
HTTP status the same mistake gets over HTTP, so a client can raise the same exception for
both transports.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from stratagem.envs.core import InvalidAction
from stratagem.envs.spec import EnvSpec
from stratagem.server import mcp
from stratagem.server.deadline import StepTimeout
from stratagem.server.errors import as_client_error, validate
from stratagem.server.protocol import ErrorCode, ResetRequest, dumps, error_frame, observation_payload
from stratagem.server.sessions import CapacityReached, FactoryFailed, SessionManager

ALLOWED_KEYS = {
    "reset": {"type", "data"},
    "step": {"type", "data"},
    "state": {"type"},
    "close": {"type"},
    "mcp": {"type", "data"},
}


def _error(exc: BaseException) -> bytes:
    """An error frame for a failed reset/step/state: OpenEnv's code plus the HTTP status."""
    error = as_client_error(exc)
    if isinstance(exc, FactoryFailed):
        code = ErrorCode.FACTORY_ERROR
    elif error.status == 422 and not isinstance(exc, InvalidAction):
        code = ErrorCode.VALIDATION_ERROR  # the message itself was malformed
    else:
        code = ErrorCode.EXECUTION_ERROR  # well-formed, but the environment refused or failed
    return error_frame(code, error.message, status=error.status, **error.extra)


async def serve_websocket(websocket: WebSocket, manager: SessionManager, spec: EnvSpec) -> None:
    await websocket.accept()

    async def reaped() -> None:
        frame = error_frame(
            ErrorCode.SESSION_ERROR,
            f"session closed after {manager.limits.session_timeout_s:g} s idle; reconnect to start again",
            status=408,
        )
        await _send_and_close(websocket, frame)

    try:
        session = await manager.create("ws", on_reap=reaped)
    except CapacityReached as exc:
        frame = error_frame(
            ErrorCode.CAPACITY_REACHED, str(exc), active_sessions=exc.active, max_sessions=exc.limit, status=503
        )
        return await _send_and_close(websocket, frame)
    except Exception as exc:  # the environment could not be built
        return await _send_and_close(websocket, error_frame(ErrorCode.FACTORY_ERROR, str(exc), status=500))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            reply = await _handle(raw, session, manager, spec)
            if reply is None:  # "close"
                await websocket.close(code=1000)
                break
            await websocket.send_text(reply.decode())
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away, or the reaper closed the socket under us
    finally:
        await manager.close(session)


async def _handle(raw: str | bytes, session: Any, manager: SessionManager, spec: EnvSpec) -> bytes | None:
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
        return dumps({"type": "mcp", "data": mcp.handle(data, spec)})
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
    except (Exception, StepTimeout) as exc:
        return _error(exc)


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return dumps({"type": kind, "data": data})


async def _send_and_close(websocket: WebSocket, frame: bytes) -> None:
    try:
        if websocket.client_state is WebSocketState.CONNECTED:
            await websocket.send_text(frame.decode())
            await websocket.close(code=1000)
    except (RuntimeError, WebSocketDisconnect):
        pass
