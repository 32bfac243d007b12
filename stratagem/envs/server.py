"""The environment server: OpenEnv's wire protocol on FastAPI/uvicorn, stateful and bounded.

Routes and messages follow ARCHITECTURE.md ("The wire protocol") so unmodified OpenEnv
clients work. Two things go further than OpenEnv 0.3.0: HTTP is stateful (``/reset`` opens a
session named by the ``X-Session-Id`` header; requests without the header behave exactly as
OpenEnv's, on a throw-away environment), and every limit is enforced, with each client mistake
answered by a 4xx whose message says what to fix. The hot routes parse and serialise with
orjson by hand, which is what makes a round trip cheap enough for thousands of steps a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import stratagem
from stratagem.envs import mcp
from stratagem.envs.core import EnvError, Environment, EpisodeNotActive, InvalidAction
from stratagem.envs.protocol import (
    PROTOCOL,
    PROTOCOL_VERSION,
    SESSION_HEADER,
    ResetRequest,
    StepRequest,
    dumps,
    jsonable_errors,
    observation_payload,
    validation_messages,
)
from stratagem.envs.sessions import (
    CapacityReached,
    FactoryFailed,
    Limits,
    Session,
    SessionManager,
    StepTimeout,
    UnknownParameters,
)
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.envs.websocket import serve_websocket

M = TypeVar("M", bound=BaseModel)


class ClientError(Exception):
    """Becomes an HTTP error response: ``{"detail": message, ...extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def validate(model: type[M], data: Any, where: str = "body") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": (where, *e["loc"])} for e in jsonable_errors(exc.errors())]
        raise ClientError(422, validation_messages(errors), errors=errors) from None


def env_errors_as_http(exc: BaseException) -> ClientError:
    """One mapping from environment-side failures to statuses, shared by every route."""
    if isinstance(exc, InvalidAction):
        return ClientError(422, str(exc))
    if isinstance(exc, EpisodeNotActive):
        return ClientError(409, str(exc))
    if isinstance(exc, EnvError):
        return ClientError(400, str(exc))
    if isinstance(exc, ValidationError):
        errors = jsonable_errors(exc.errors())
        return ClientError(422, validation_messages(errors), errors=errors)
    if isinstance(exc, CapacityReached):
        return ClientError(503, str(exc), active_sessions=exc.active, max_sessions=exc.limit)
    if isinstance(exc, StepTimeout):
        return ClientError(504, f"{exc}; the session's environment was dropped: call reset to continue")
    if isinstance(exc, FactoryFailed):
        return ClientError(500, str(exc))
    return ClientError(500, f"the environment raised {type(exc).__name__}: {exc}")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the server's limit of {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies past the limit, announced or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                body = dumps({"detail": f"request body of {int(value)} bytes exceeds the limit of {self.limit}"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                    }
                )
                return await send({"type": "http.response.body", "body": body})
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def create_app(spec: EnvSpec | str, params: dict[str, Any] | None = None, limits: Limits | None = None) -> FastAPI:
    """A FastAPI app serving one environment (a registered name, manifest path or EnvSpec)."""
    spec = resolve(spec) if isinstance(spec, (str, Path)) else spec
    limits = limits or Limits()
    manager = SessionManager(spec, params or {}, limits)
    manager.new_env().close()  # fail now, not at the first client, when the parameters are wrong
    cls = manager.env_class

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await manager.start()
        yield
        await manager.stop()

    app = FastAPI(
        title=f"stratagem · {spec.name}",
        description=f"{spec.description}\n\nWire protocol: {PROTOCOL} (OpenEnv-compatible), stateful over HTTP "
        f"via the {SESSION_HEADER} header. Server: stratagem {stratagem.__version__}.",
        version=PROTOCOL_VERSION,  # OpenEnv reads the protocol profile from info.version
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(ClientError)
    async def _client_error(_: Request, exc: ClientError) -> Response:
        return json_response(dumps({"detail": exc.message, **exc.extra}), exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> Response:
        return json_response(dumps({"detail": exc.detail}), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_errors(list(exc.errors()))
        return json_response(dumps({"detail": validation_messages(errors), "errors": errors}), 422)

    async def read_body(request: Request) -> bytes:
        try:
            return await request.body()
        except ClientDisconnect:
            raise ClientError(400, "the client disconnected before sending the whole body") from None

    async def read_json(request: Request) -> dict[str, Any]:
        raw = await read_body(request)
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ClientError(422, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ClientError(422, f"request body must be a JSON object, got {type(data).__name__}")
        return data

    def session_for(request: Request) -> Session | None:
        sid = request.headers.get(SESSION_HEADER)
        if sid is None:
            return None
        session = manager.sessions.get(sid)
        if session is None or session.kind != "http":
            raise ClientError(
                404,
                f"unknown session {sid!r}: it was closed, reaped after "
                f"{limits.session_timeout_s:g} s idle, or never existed; POST /reset without "
                f"{SESSION_HEADER} to start a new one",
            )
        return session

    async def on_env(
        session: Session | None,
        work: Callable[[Environment], Any],
        *,
        starts_episode: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """Run work on the session's environment, or, with no session, on a throw-away one (OpenEnv)."""
        try:
            if session is None:
                return await manager.run(lambda: _with_fresh_env(manager, work), timeout_s=timeout_s)
            async with session.lock:
                return await manager.call(session, work, starts_episode=starts_episode, timeout_s=timeout_s)
        except ClientError:
            raise
        except (Exception, StepTimeout) as exc:
            raise env_errors_as_http(exc) from exc

    @app.get("/health", tags=["Health"])
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/metadata", tags=["Environment Info"])
    async def metadata() -> dict[str, Any]:
        readme = None
        if spec.readme and spec.source:
            path = spec.source.parent / spec.readme
            readme = path.read_text() if path.is_file() else None
        return {
            "name": spec.name,
            "description": spec.description,
            "version": spec.version,
            "readme_content": readme,
            "author": spec.author,
            "documentation_url": spec.documentation_url,
        }

    @app.get("/schema", tags=["Schema"])
    async def schema() -> dict[str, Any]:
        return {
            "action": cls.action_type.model_json_schema(),
            "observation": cls.observation_type.model_json_schema(),
            "state": cls.state_type.model_json_schema(),
        }

    @app.post(
        "/reset",
        tags=["Environment Control"],
        openapi_extra=_body_doc(ResetRequest.model_json_schema()),
        summary="Start an episode; opens a session unless X-Session-Id names one",
    )
    async def reset(request: Request) -> Response:
        req = validate(ResetRequest, await read_json(request))
        kwargs = req.model_dump(exclude_unset=True)
        try:
            manager.check_kwargs("reset", kwargs)
        except UnknownParameters as exc:
            raise ClientError(422, str(exc)) from None
        session = session_for(request)
        created = session is None
        if created:
            try:
                session = await manager.create("http")
            except (CapacityReached, FactoryFailed) as exc:
                raise env_errors_as_http(exc) from exc
        meta = {"session_id": session.id}
        try:
            body = await on_env(
                session, lambda env: dumps(observation_payload(env.reset(**kwargs), meta)), starts_episode=True
            )
        except ClientError:
            if created:
                await manager.close(session)
            raise
        return json_response(body, headers={SESSION_HEADER: session.id})

    @app.post(
        "/step",
        tags=["Environment Control"],
        openapi_extra=_body_doc(StepRequest.model_json_schema(), action=cls.action_type.model_json_schema()),
        summary="Apply one action to the session named by X-Session-Id",
    )
    async def step(request: Request) -> Response:
        req = validate(StepRequest, await read_json(request))
        action = validate(cls.action_type, req.action, where="action")
        extra = dict(req.model_extra or {})
        try:
            manager.check_kwargs("step", extra)
        except UnknownParameters as exc:
            raise ClientError(422, str(exc)) from None
        session = session_for(request)
        meta = {"request_id": req.request_id} if req.request_id else None
        if manager.step_takes_timeout:
            extra["timeout_s"] = req.timeout_s

        def work(env: Environment) -> bytes:
            return dumps(observation_payload(env.step(action, **extra), meta))

        try:
            body = await on_env(session, work, timeout_s=req.timeout_s)
        except ClientError as exc:
            if session is None and exc.status == 409:
                exc.message += f"; over HTTP, send the {SESSION_HEADER} header that POST /reset returned"
            raise
        return json_response(body, headers={SESSION_HEADER: session.id} if session else None)

    @app.get("/state", tags=["State Management"])
    async def state(request: Request) -> Response:
        return json_response(await on_env(session_for(request), lambda env: dumps(env.state.model_dump())))

    @app.delete("/session", tags=["Environment Control"], summary="Close the session named by X-Session-Id")
    async def close_session(request: Request) -> dict[str, Any]:
        session = session_for(request)
        if session is None:
            raise ClientError(422, f"DELETE /session needs the {SESSION_HEADER} header")
        await manager.close(session)
        return {"session_id": session.id, "closed": True}

    @app.post("/mcp", tags=["MCP"], summary="JSON-RPC 2.0: initialize, ping, tools/list, tools/call")
    async def mcp_route(request: Request) -> Response:
        return json_response(dumps(mcp.handle_raw(await read_body(request), spec)))

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_websocket(websocket, manager, spec)

    return app


def _with_fresh_env(manager: SessionManager, work: Callable[[Environment], Any]) -> Any:
    env = manager.new_env()
    try:
        return work(env)
    finally:
        env.close()


def _body_doc(schema: dict[str, Any], action: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = dict(schema)
    if action is not None and "$defs" not in action:
        schema["properties"] = {**schema["properties"], "action": action}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


def serve(
    spec: EnvSpec | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    params: dict[str, Any] | None = None,
    limits: Limits | None = None,
    log_level: str = "warning",
) -> None:
    """Run the server in the foreground with uvicorn (uvloop and httptools when installed)."""
    import sys

    import uvicorn

    limits = limits or Limits()
    app = create_app(spec, params, limits)
    name = app.state.manager.spec.name
    print(f"serving {name!r} on http://{host}:{port} (WebSocket: ws://{host}:{port}/ws); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=limits.max_body_bytes,
        limit_concurrency=limits.max_sessions * 2 + 64,
        timeout_keep_alive=30,
    )


def __getattr__(name: str) -> Any:
    """``stratagem.envs.server:app`` (the manifests' OpenEnv ``app`` key) serves $STRATAGEM_ENV."""
    if name == "app":
        return create_app(os.environ.get("STRATAGEM_ENV", "2048"))
    raise AttributeError(name)
