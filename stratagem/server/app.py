"""The environment server: OpenEnv's wire protocol on FastAPI/uvicorn, stateful and bounded.

Routes and messages follow ARCHITECTURE.md ("The wire protocol") so unmodified OpenEnv
clients work. Two things go further than OpenEnv 0.3.0: HTTP is stateful (``/reset`` opens a
session named by the ``X-Session-Id`` header; requests without the header behave exactly as
OpenEnv's, on a throw-away environment), and every limit is enforced, with each client mistake
answered by a 4xx whose message says what to fix. The episode routes live in ``routes.py``;
this module assembles the app.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import stratagem
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.server import mcp
from stratagem.server.protocol import (
    PROTOCOL,
    PROTOCOL_VERSION,
    SESSION_HEADER,
    ResetRequest,
    StepRequest,
    dumps,
    jsonable_errors,
    validation_messages,
)
from stratagem.server.routes import EnvRoutes, HotPath, Reply
from stratagem.server.sessions import Limits, SessionManager
from stratagem.server.websocket import serve_websocket

if TYPE_CHECKING:
    import uvicorn


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def reply_response(reply: Reply) -> Response:
    return json_response(reply.body, reply.status, {SESSION_HEADER: reply.session_id} if reply.session_id else None)


def create_app(spec: EnvSpec | str, params: dict[str, Any] | None = None, limits: Limits | None = None) -> FastAPI:
    """A FastAPI app serving one environment (a registered name, manifest path or EnvSpec)."""
    spec = resolve(spec) if isinstance(spec, (str, Path)) else spec
    limits = limits or Limits()
    manager = SessionManager(spec, params or {}, limits)
    manager.new_env().close()  # fail now, not at the first client, when the parameters are wrong
    routes = EnvRoutes(manager)
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
    app.add_middleware(HotPath, routes=routes, limit=limits.max_body_bytes)

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
            raise HTTPException(400, "the client disconnected before sending the whole body") from None

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

    # The three episode routes are answered by HotPath before FastAPI sees them; declared
    # here, calling the same functions, so that /openapi.json documents them.
    @app.post(
        "/reset",
        tags=["Environment Control"],
        openapi_extra=_body_doc(ResetRequest.model_json_schema()),
        summary="Start an episode; opens a session unless X-Session-Id names one",
    )
    async def reset(request: Request) -> Response:
        return reply_response(await routes.reset(request.headers.get(SESSION_HEADER), await read_body(request)))

    @app.post(
        "/step",
        tags=["Environment Control"],
        openapi_extra=_body_doc(StepRequest.model_json_schema(), action=cls.action_type.model_json_schema()),
        summary="Apply one action to the session named by X-Session-Id",
    )
    async def step(request: Request) -> Response:
        return reply_response(await routes.step(request.headers.get(SESSION_HEADER), await read_body(request)))

    @app.get("/state", tags=["State Management"])
    async def state(request: Request) -> Response:
        return reply_response(await routes.state(request.headers.get(SESSION_HEADER)))

    @app.delete("/session", tags=["Environment Control"], summary="Close the session named by X-Session-Id")
    async def close_session(request: Request) -> Response:
        return reply_response(await routes.close(request.headers.get(SESSION_HEADER)))

    @app.post("/mcp", tags=["MCP"], summary="JSON-RPC 2.0: initialize, ping, tools/list, tools/call")
    async def mcp_route(request: Request) -> Response:
        return json_response(dumps(mcp.handle_raw(await read_body(request), spec)))

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_websocket(websocket, manager, spec)

    return app


def _body_doc(schema: dict[str, Any], action: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = dict(schema)
    if action is not None and "$defs" not in action:
        schema["properties"] = {**schema["properties"], "action": action}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


def server_config(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", http: str = "auto"
) -> uvicorn.Config:
    """The ``uvicorn.Config`` that ``serve`` runs (tests run the same): the app's limits, guarded connections.

    uvicorn's ``limit_concurrency`` is left off: guard.py keeps the connection cap instead,
    counting what one client cannot inflate, and answers ``/health`` even at the cap.
    """
    import uvicorn

    from stratagem.server.guard import guarded_protocol

    limits: Limits = app.state.manager.limits
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(limits, http),
        ws_max_size=limits.max_body_bytes,
        timeout_keep_alive=30,
        access_log=False,
    )


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
    from uvicorn.config import STARTUP_FAILURE

    app = create_app(spec, params, limits or Limits())
    name = app.state.manager.spec.name
    print(f"serving {name!r} on http://{host}:{port} (WebSocket: ws://{host}:{port}/ws); Ctrl-C stops", file=sys.stderr)
    server = uvicorn.Server(server_config(app, host, port, log_level))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # as uvicorn.run: it logged why
        sys.exit(STARTUP_FAILURE)


def __getattr__(name: str) -> Any:
    """``stratagem.server.app:app`` (the manifests' OpenEnv ``app`` key) serves $STRATAGEM_ENV."""
    if name == "app":
        return create_app(os.environ.get("STRATAGEM_ENV", "2048"))
    raise AttributeError(name)
