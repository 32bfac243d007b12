"""The dashboard's web app: a JSON API over ``data.RunData`` and the static page that polls it.

Routes (all GET but the comparison; JSON unless said otherwise):

```
/                                   the page (static/index.html; static/ holds its script and style)
/api/run                            the run at a glance: name, environment, steps, best program's record, replays
/api/metrics                        metrics.jsonl's rows and the panels to draw them in (as curves.png has them)
/api/completions/{step}             that step's samples: reward, parts, outcome, program text
/api/best                           best.json and best_strategy.py
/api/replays/{name}/frames/{i}      step i of a recording of the best program, as PNG (?size=PX wide)
POST /api/compare                   {"a": "best" | "STEP:INDEX", "b": ..., "seed": N}: play both on one seed
/api/compare/{id}/frames/{i}        step i of a comparison, both programs side by side, as PNG
```

Every bad input is a 4xx with ``{"detail": "<one readable sentence>"}``, which the page shows as it
is: 404 for something the run does not hold (yet), 422 for a value that can never be right, 409
while a comparison is being played, 503 when the sandbox cannot run here. Never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from stratagem.dashboard import DEFAULT_PORT
from stratagem.dashboard.compare import MAX_SEED, Busy, Comparisons
from stratagem.dashboard.data import NotFound, RunData, check_run_dir
from stratagem.dashboard.frames import BadFrame, frame_png

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


class JSON(Response):
    """JSON by orjson: fast for a step's completions, and NaN (which JSON lacks) becomes null, not a 500."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: str = Field(description="'best' or STEP:INDEX, a completion as the completions table numbers it")
    b: str
    seed: int = Field(ge=0, le=MAX_SEED)


def create_app(run_dir: Path, allow_weaker_sandbox: bool = False) -> FastAPI:
    """The dashboard of ``run_dir`` (checked here: a ValueError says what is wrong with it)."""
    data = RunData(check_run_dir(Path(run_dir)))
    comparisons = Comparisons(data, allow_weaker_sandbox)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            comparisons.close()  # the sandbox's processes and the comparisons' recordings

    app = FastAPI(title=f"stratagem dashboard: {data.path.name}", default_response_class=JSON, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # fmt: skip
    app.state.data, app.state.comparisons = data, comparisons
    _error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/run")
    def run() -> JSON:
        env, params = data.env()
        config = data.config()
        metrics = data.metrics()
        best = data.best()["info"]
        return _fresh({"name": data.path.resolve().name, "path": str(data.path), "env": env, "params": params,
                       "max_steps": config.get("max_steps"), "steps": data.steps(),
                       "metrics": {"count": len(metrics), "last_step": metrics[-1]["step"] if metrics else None},
                       "best": best, "replays": data.replays()})  # fmt: skip

    @app.get("/api/metrics")
    def metrics() -> JSON:
        return _fresh(data.curves())

    @app.get("/api/completions/{step}")
    def completions(step: int) -> JSON:
        return _fresh({"step": step, "rows": data.completions(step)})

    @app.get("/api/best")
    def best() -> JSON:
        return _fresh(data.best())

    @app.get("/api/replays/{name}/frames/{index}")
    def replay_frame(name: str, index: int, size: int | None = None) -> Response:
        return _png(frame_png([data.episode(name)], index, size))

    @app.post("/api/compare")
    def compare(request: CompareRequest) -> JSON:
        return _fresh(comparisons.run([request.a, request.b], request.seed))

    @app.get("/api/compare/{comparison}/frames/{index}")
    def compare_frame(comparison: str, index: int, size: int | None = None) -> Response:
        return _png(frame_png(comparisons.episodes(comparison), index, size))

    return app


def _fresh(content: Any) -> JSON:
    """A JSON answer the browser must not reuse: the page polls, and the run moves on."""
    return JSON(content, headers={"Cache-Control": "no-store"})


def _png(body: bytes) -> Response:
    return Response(body, media_type="image/png", headers={"Cache-Control": "no-cache"})


def _error_handlers(app: FastAPI) -> None:
    """Each failure a request can meet, as a status and one sentence; nothing else reaches the client."""
    from stratagem.sandbox.failures import PoolError

    statuses: list[tuple[type[BaseException], int]] = [(NotFound, 404), (Busy, 409), (BadFrame, 422),
                                                       (PoolError, 503), (ValueError, 422)]  # fmt: skip
    for kind, status in statuses:

        async def handle(_: Request, exc: Exception, status: int = status) -> JSON:
            return JSON({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(kind, handle)

    async def invalid(_: Request, exc: Exception) -> JSON:
        assert isinstance(exc, RequestValidationError)
        return JSON({"detail": "; ".join(_readable(error) for error in exc.errors())}, status_code=422)

    async def failed(request: Request, exc: Exception) -> JSON:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSON({"detail": f"the dashboard failed on this request ({type(exc).__name__}: {exc})"},
                    status_code=500)  # fmt: skip

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, failed)


def _readable(error: dict[str, Any]) -> str:
    """pydantic's error as '<field>: <what is wrong> (got <value>)', e.g. 'step: expected an integer (got 'x')'."""
    if error.get("type") == "json_invalid":
        return f"the request body is not JSON ({error.get('ctx', {}).get('error', 'cannot be parsed')})"
    loc = [str(part) for part in error.get("loc", ())]
    where = ".".join(part for part in loc if part not in ("body", "path", "query")) or (loc[0] if loc else "request")
    message = str(error.get("msg", "invalid")).replace("Input should be", "should be")
    if error.get("type") == "missing":
        return f"{where}: missing"
    given = error.get("input")
    shown = f" (got {given!r})" if isinstance(given, (str, int, float)) and not isinstance(given, bool) else ""
    return f"{where}: {message}{shown}"


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, allow_weaker_sandbox: bool = False,
          log_level: str = "warning") -> None:  # fmt: skip
    """Serve the dashboard in the foreground until Ctrl-C. The run directory is checked and the socket bound
    before anything is announced (``ServeError``: the port is taken, or the like), as ``stratagem serve`` does."""
    import uvicorn

    from stratagem.server.listen import listen_socket, run_announced, url_host

    app = create_app(run_dir, allow_weaker_sandbox)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    sock = listen_socket(host, port, config.backlog)
    run_announced(
        config, sock, f"dashboard of {run_dir} on http://{url_host(host)}:{sock.getsockname()[1]}/ ; Ctrl-C stops"
    )
