"""The environment server: OpenEnv's wire protocol on FastAPI/uvicorn, stateful and bounded.

Routes and messages follow ARCHITECTURE.md ("The wire protocol") so unmodified OpenEnv
clients (0.10 and 0.3.0) work. Two things go further than OpenEnv: HTTP is stateful (``/reset``
opens a session named by the ``X-Session-Id`` header; requests without the header work on a
throw-away environment, as OpenEnv's, and cannot fill the session table: sessions.py), and
every limit is enforced, with each client mistake answered by a 4xx whose message says what to
fix. The episode routes live in ``routes.py``, MCP (sessions and the episode as tools) in
``mcp.py``, WebSockets in ``websocket.py``, binding the port and running uvicorn in ``listen.py``; this module
assembles the app, with OpenEnv 0.10's Task API."""

from __future__ import annotations

import inspect
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import stratagem
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.server.listen import listen_socket, run_announced, url_host
from stratagem.server.mcp import MCP_SESSION_HEADER, McpServer
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
from stratagem.server.websocket import serve_mcp_websocket, serve_websocket

if TYPE_CHECKING:
    import uvicorn


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def reply_response(reply: Reply) -> Response:
    return json_response(reply.body, reply.status, {SESSION_HEADER: reply.session_id} if reply.session_id else None)


def create_app(spec: EnvSpec | str, params: dict[str, Any] | None = None, limits: Limits | None = None,
               web: bool = True) -> FastAPI:  # fmt: skip
    """A FastAPI app serving one environment (a registered name, manifest path or EnvSpec); ``web``: with the
    browser page at ``/web`` (``web.py``), whose routes go through the same sessions and limits."""
    spec = resolve(spec) if isinstance(spec, (str, Path)) else spec
    limits = limits or Limits()
    manager = SessionManager(spec, params or {}, limits)
    manager.new_env().close()  # fail now, not at the first client, when the parameters are wrong
    routes = EnvRoutes(manager)
    mcp = McpServer(manager)
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
        reset_type = getattr(cls, "reset_observation_type", None) or cls.observation_type
        return {
            "action": cls.action_type.model_json_schema(),
            "observation": cls.observation_type.model_json_schema(),
            "state": cls.state_type.model_json_schema(),
            "reset_observation": reset_type.model_json_schema(),
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

    @app.post(
        "/mcp",
        tags=["MCP"],
        summary="JSON-RPC 2.0: openenv/session/create|close, tools/list, tools/call (reset, step, state), "
        "initialize, ping",
    )
    async def mcp_route(request: Request) -> Response:
        status, answer, session_id = await mcp.handle_http(
            await read_body(request), request.headers.get(MCP_SESSION_HEADER)
        )
        headers = {MCP_SESSION_HEADER: session_id} if session_id else None
        if answer is None:
            return Response(status_code=status, headers=headers)
        return json_response(dumps(answer), status, headers)

    @app.delete("/mcp", tags=["MCP"], summary="End the MCP session named by the Mcp-Session-Id header")
    async def mcp_end(request: Request) -> Response:
        sid = request.headers.get(MCP_SESSION_HEADER)
        if not sid:
            raise HTTPException(400, f"DELETE /mcp needs the {MCP_SESSION_HEADER} header")
        return reply_response(await routes.close(sid))

    @app.websocket("/mcp")
    async def mcp_ws(websocket: WebSocket) -> None:
        await serve_mcp_websocket(websocket, manager, mcp)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_websocket(websocket, manager, mcp)

    if web:
        from stratagem.server.web import mount_web

        mount_web(app, manager, params or {})
    _task_routes(app, manager)
    return app


class _TaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = Field(description="Task split name")


class _TaskIndexRequest(_TaskRequest):
    index: int = Field(description="Task index within the split")


class _TaskRangeRequest(_TaskRequest):
    start: int | None = Field(default=None, description="Inclusive start index")
    stop: int | None = Field(default=None, description="Exclusive stop index")


def _task_routes(app: FastAPI, manager: SessionManager) -> None:
    """OpenEnv 0.10's Task API. An environment opts in with the methods ``list_splits()``,
    ``list_tasks(split)``, ``num_tasks(split)``, ``get_task(split, index)`` and
    ``get_task_range(split, start, stop)``; none of stratagem's own has task lists (their
    episodes come from seeds), so for them each route says 501."""
    name = manager.spec.name

    def check(env_name: str) -> None:
        if env_name.lower() != name.lower():
            raise HTTPException(404, f"unknown environment {env_name!r}; this server serves {name!r}")

    async def call(method: str, *args: Any) -> Any:
        if not callable(getattr(manager.env_class, method, None)):
            raise HTTPException(
                501,
                f"{method} is not supported for this environment: {name!r} has no task lists (its episodes are "
                "generated from a seed: reset with seed=N to replay one)",
            )

        def work() -> Any:
            env = manager.new_env()
            try:
                return getattr(env, method)(*args)
            finally:
                env.close()

        try:
            result = await manager.run(work)
            if inspect.isawaitable(result):
                result = await result
        except NotImplementedError:
            raise HTTPException(501, f"{method} is not supported for this environment") from None
        except IndexError:
            raise HTTPException(400, "Invalid task index") from None
        except Exception as exc:
            raise HTTPException(500, f"{method} raised {type(exc).__name__}: {exc}") from None
        return jsonable_encoder(result)

    def split_entry(split: Any) -> dict[str, Any]:
        if isinstance(split, BaseModel):
            return split.model_dump()
        if isinstance(split, dict):
            return jsonable_encoder(split)
        kind = split if split in ("train", "validation", "test") else "validation"
        return {"name": str(split), "type": kind}

    @app.get("/list_environments", tags=["Task API"])
    async def list_environments() -> list[str]:
        return [name]

    @app.get("/{env_name}/splits", tags=["Task API"])
    async def splits(env_name: str) -> list[dict[str, Any]]:
        check(env_name)
        return [split_entry(s) for s in await call("list_splits")]

    @app.post("/{env_name}/tasks", tags=["Task API"])
    async def tasks(env_name: str, body: _TaskRequest) -> dict[str, Any]:
        check(env_name)
        return {"tasks": await call("list_tasks", body.split), "env_name": name}

    @app.post("/{env_name}/num_tasks", tags=["Task API"])
    async def num_tasks(env_name: str, body: _TaskRequest) -> dict[str, Any]:
        check(env_name)
        return {"num_tasks": await call("num_tasks", body.split)}

    @app.post("/{env_name}/task", tags=["Task API"])
    async def task(env_name: str, body: _TaskIndexRequest) -> dict[str, Any]:
        check(env_name)
        return {"task": await call("get_task", body.split, body.index)}

    @app.post("/{env_name}/task_range", tags=["Task API"])
    async def task_range(env_name: str, body: _TaskRangeRequest) -> dict[str, Any]:
        check(env_name)
        return {"tasks": await call("get_task_range", body.split, body.start, body.stop)}


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
    web: bool = True,
) -> None:
    """Run the server in the foreground with uvicorn (uvloop and httptools when installed).

    The socket is bound before anything is announced: when the port cannot be had this raises
    ``ServeError`` (its message says why and what to pass) and prints nothing. The line
    "serving ... on http://HOST:PORT" goes to stderr once uvicorn is accepting connections on it.
    Ctrl-C (SIGINT) and SIGTERM stop the server gracefully (open sessions closed) by uvicorn's own
    handling; then SIGINT raises ``KeyboardInterrupt`` from here, and SIGTERM is raised again with the
    handler that was in place before (the default one ends the process quietly, status 143).
    """
    import sys

    from uvicorn.config import STARTUP_FAILURE

    app = create_app(spec, params, limits or Limits(), web=web)
    name = app.state.manager.spec.name
    config = server_config(app, host, port, log_level)
    sock = listen_socket(host, port, config.backlog)
    where = url_host(host)
    bound = sock.getsockname()[1]
    page = f"; in a browser: http://{where}:{bound}/web" if web else ""
    line = f"serving {name!r} on http://{where}:{bound} (WebSocket: ws://{where}:{bound}/ws{page}); Ctrl-C stops"
    # a program run on /web must not hold the stop up
    if not run_announced(config, sock, line, on_exit=app.state.web.runs.interrupt if web else None):
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run: it logged why (the app's startup failed)


def __getattr__(name: str) -> Any:
    """``stratagem.server.app:app`` (the manifests' OpenEnv ``app`` key) serves $STRATAGEM_ENV."""
    if name == "app":
        return create_app(os.environ.get("STRATAGEM_ENV", "2048"))
    raise AttributeError(name)
