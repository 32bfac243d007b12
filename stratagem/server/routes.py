"""The HTTP episode routes (``/reset``, ``/step``, ``/state``, ``DELETE /session``), framework-free.

``/reset`` without the ``X-Session-Id`` header opens a provisional session (held while the
server has room; any later request naming it keeps it), so OpenEnv's stateless callers, who
never send the header, cannot fill the session table; ``X-Session-Id: new`` opens a firm one.

Each takes the session header and the raw body and returns a ``Reply``; client mistakes
become 4xx replies, never exceptions. ``HotPath`` serves these routes straight from ASGI,
in front of FastAPI: a 2048 step costs ~20 µs and FastAPI's routing, dependency and
middleware layers would cost ten times that. FastAPI still declares the same routes (they
call the same functions), so ``/openapi.json`` documents them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson

from stratagem.envs.core import Environment
from stratagem.server.deadline import StepTimeout
from stratagem.server.errors import ClientError, as_client_error, validate
from stratagem.server.protocol import SESSION_HEADER, ResetRequest, StepRequest, dumps, observation_payload
from stratagem.server.sessions import Session, SessionBusy, SessionManager, UnknownSession

_SESSION_KEY = SESSION_HEADER.lower().encode()
NEW_SESSION = "new"  # X-Session-Id: new on /reset opens a session that is never made to give way


class Reply(NamedTuple):
    status: int
    body: bytes
    session_id: str | None = None


def error_reply(error: ClientError) -> Reply:
    return Reply(error.status, error.body())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError(422, f"request body must be a JSON object, got {type(data).__name__}")
    return data


class EnvRoutes:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def session(self, sid: str | None) -> Session | None:
        """The session the header names (HTTP and MCP sessions; naming one makes it firm), or None."""
        if sid is None:
            return None
        try:
            return self.manager.named(sid)
        except UnknownSession as exc:
            raise ClientError(
                404, f"unknown session {sid!r}: {exc.reason}; POST /reset without {SESSION_HEADER} to start a new one"
            ) from None
        except SessionBusy as exc:
            raise ClientError(409, str(exc)) from None

    async def on_env(
        self,
        session: Session | None,
        work: Callable[[Environment], bytes],
        *,
        starts_episode: bool = False,
        timeout_s: float | None = None,
    ) -> bytes:
        """Run work on the session's environment, or with no session on a throw-away one (OpenEnv)."""
        manager = self.manager
        try:
            if session is None:
                return await manager.run(lambda: _with_fresh_env(manager, work), timeout_s=timeout_s)
            return await manager.call(session, work, starts_episode=starts_episode, timeout_s=timeout_s)
        except (Exception, StepTimeout) as exc:
            raise as_client_error(exc) from exc

    async def reset(self, sid: str | None, raw: bytes) -> Reply:
        try:
            kwargs = validate(ResetRequest, parse_json_object(raw)).model_dump(exclude_unset=True)
            self.manager.check_kwargs("reset", kwargs)
            new = sid is not None and sid.lower() == NEW_SESSION
            session = None if new else self.session(sid)
            created = session is None
            if session is None:  # without the header: provisional (see sessions.py); "new" asks for a firm one
                session = await self.manager.create("http", confirmed=new)
        except Exception as exc:
            return error_reply(as_client_error(exc))
        meta = {"session_id": session.id}
        try:
            body = await self.on_env(
                session, lambda env: dumps(observation_payload(env.reset(**kwargs), meta)), starts_episode=True
            )
        except ClientError as exc:
            if created:
                await self.manager.close(session)
            return error_reply(exc)
        return Reply(200, body, session.id)

    async def step(self, sid: str | None, raw: bytes) -> Reply:
        try:
            req = validate(StepRequest, parse_json_object(raw))
            action = validate(self.manager.env_class.action_type, req.action, where="action")
            extra = dict(req.model_extra or {})
            self.manager.check_kwargs("step", extra)
            session = self.session(sid)
            meta = {"request_id": req.request_id} if req.request_id else None
            if self.manager.step_takes_timeout:
                extra["timeout_s"] = req.timeout_s
            body = await self.on_env(
                session,
                lambda env: dumps(observation_payload(env.step(action, **extra), meta)),
                timeout_s=req.timeout_s,
            )
        except Exception as exc:
            error = as_client_error(exc)
            if sid is None and error.status == 409:
                error.message += f"; over HTTP, send the {SESSION_HEADER} header that POST /reset returned"
            return error_reply(error)
        return Reply(200, body, sid)

    async def state(self, sid: str | None, raw: bytes = b"") -> Reply:
        try:
            return Reply(200, await self.on_env(self.session(sid), lambda env: dumps(env.state.model_dump())), sid)
        except ClientError as exc:
            return error_reply(exc)

    async def close(self, sid: str | None, raw: bytes = b"") -> Reply:
        if sid is None:
            return error_reply(ClientError(422, f"DELETE /session needs the {SESSION_HEADER} header"))
        try:
            session = self.session(sid)
        except ClientError as exc:
            return error_reply(exc)
        if await self.manager.request_close(session):
            return Reply(200, dumps({"session_id": sid, "closed": True}))
        return Reply(200, dumps({"session_id": sid, "closed": False, "closing": True}))


def _with_fresh_env(manager: SessionManager, work: Callable[[Environment], bytes]) -> bytes:
    env = manager.new_env()
    try:
        return work(env)
    finally:
        env.close()


Handler = Callable[[str | None, bytes], Awaitable[Reply]]


class HotPath:
    """Pure ASGI, outermost: the body-size limit for every request, and the episode routes."""

    def __init__(self, app: Any, routes: EnvRoutes, limit: int) -> None:
        self.app, self.limit = app, limit
        self.hot: dict[tuple[str, str], Handler] = {
            ("POST", "/reset"): routes.reset,
            ("POST", "/step"): routes.step,
            ("GET", "/state"): routes.state,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sid, length = None, None
        for key, value in scope["headers"]:
            if key == _SESSION_KEY:
                sid = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
        if length is not None and length > self.limit:
            message = f"request body of {length} bytes exceeds the limit of {self.limit}"
            return await respond(send, Reply(413, dumps({"detail": message})), close=True)
        handler = self.hot.get((scope["method"], scope["path"]))
        if handler is None:
            return await self.app(scope, _limited(receive, self.limit), send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                detail = f"request body larger than the server's limit of {self.limit} bytes"
                return await respond(send, Reply(413, dumps({"detail": detail})), close=True)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        await respond(send, await handler(sid, b"".join(chunks)))


async def respond(send: Any, reply: Reply, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply.body)).encode())]
    if reply.session_id:
        headers.append((_SESSION_KEY, reply.session_id.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _limited(receive: Any, limit: int) -> Any:
    """A receive that raises 413 (through FastAPI's exception handling) past the limit."""
    from starlette.exceptions import HTTPException

    seen = 0

    async def limited_receive() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise HTTPException(413, f"request body larger than the server's limit of {limit} bytes")
        return message

    return limited_receive
