"""``/web``: a page that plays the served environment in a browser, live, or watches a pasted program play.

Why here and not a separate app: the page must never be a way around the server's promises. Its
episode routes call the API's own functions (``routes.EnvRoutes``), so a web reset or step is an API
reset or step: the same validation, sessions (the ``X-Session-Id`` header, the session cap, idle
reaping), deadlines and 4xx messages, and the connection guard and body limit in front of every
route. What the page adds is drawing: each answer carries the frame drawn server-side by the pure
render path the pygame viewer and the GIF exports use (``viz/render.py``, as PNG), and the buttons
built from the action schema and the observation's legal actions. A pasted program runs as
``stratagem play`` runs it, in the kernel sandbox, in a child process (``web_runs.py``).

The page itself is three static files in ``static/`` (no build step, nothing fetched from the
network). ``stratagem serve ENV --no-web`` leaves all of this out.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from stratagem.server.errors import ClientError, as_client_error
from stratagem.server.protocol import SESSION_HEADER, dumps
from stratagem.server.routes import NEW_SESSION, EnvRoutes, Reply, parse_json_object
from stratagem.server.sessions import SessionManager
from stratagem.server.web_runs import ProgramRuns

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"web.js": "text/javascript; charset=utf-8", "web.css": "text/css; charset=utf-8"}
MAX_BUTTONS = 400  # legal actions shown as buttons (a Go board's 362 fit); the JSON box takes any other
_render_lock = threading.Lock()  # pygame's fonts and caches are not thread-safe; frames are drawn one at a time


@dataclass
class LiveEpisode:
    """What the page's session has played since its reset: for the status bar and the action names."""

    seed: Any = None
    step: int = 0
    total: float = 0.0
    buttons: list[dict[str, Any]] = field(default_factory=list)


def draw_png(step: dict[str, Any], header: dict[str, Any]) -> bytes:
    """One frame as PNG, by ``render_step``: exactly what the viewer's window would show for this step."""
    from stratagem.viz.render import render_step, to_png

    with _render_lock:
        return to_png(render_step(step, header))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def action_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The action schema's top-level fields, simplified for a form: name, type (integer, number, boolean,
    string, or json for anything nested), default, bounds, choices and description. The page builds its form
    from these for actions that are not a choice among ids (a user's manifest)."""
    fields, required = [], set(schema.get("required", []))
    for name, prop in (schema.get("properties") or {}).items():
        if name == "metadata":  # OpenEnv's free-form field on every action: nothing a player chooses
            continue
        options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
        one = options[0] if len(options) == 1 else {}
        kind = one.get("type") if one.get("type") in ("integer", "number", "boolean", "string") else "json"
        entry = {"name": name, "type": kind, "required": name in required, "description": prop.get("description", "")}
        for key in ("default", "minimum", "maximum", "enum"):
            if key in one or key in prop:
                entry[key] = one.get(key, prop.get(key))
        fields.append(entry)
    return fields


def action_buttons(obs: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One button per action a player can choose now, for environments whose action is an ``action_id``.

    Names come from the observation where it has them (OpenSpiel's ``legal_action_names``, Atari's
    ``action_names``), else from the field's description ("0=up, 1=right, ..."); a bounded id range
    shows every id, the illegal ones disabled (2048 keeps its four arrows in place).
    """
    prop = (schema.get("properties") or {}).get("action_id")
    if prop is None:
        return []
    raw = obs.get("legal_actions")
    legal = [a for a in raw if isinstance(a, int)] if isinstance(raw, list) else None
    done = bool(obs.get("done"))
    names = obs.get("legal_action_names")
    if isinstance(names, list) and legal is not None and len(names) == len(legal):
        choices = [(i, str(n), True) for i, n in zip(legal, names, strict=True)]
    elif isinstance(obs.get("action_names"), list):
        choices = [(i, str(n), legal is None or i in legal) for i, n in enumerate(obs["action_names"])]
    else:
        bounds = [p for p in prop.get("anyOf", [prop]) if p.get("type") == "integer"]
        lo, hi = (bounds[0].get("minimum"), bounds[0].get("maximum")) if bounds else (None, None)
        named = {int(i): n for i, n in re.findall(r"(\d+)\s*=\s*([A-Za-z][\w-]*)", prop.get("description", ""))}
        if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo < MAX_BUTTONS:
            ids = range(lo, hi + 1)
        elif legal:
            ids = legal
        else:
            return []
        choices = [(i, named.get(i, str(i)), legal is None or i in legal) for i in ids]
    return [{"label": label, "action": {"action_id": i}, "legal": ok and not done}
            for i, label, ok in choices[:MAX_BUTTONS]]  # fmt: skip


def action_label(action: dict[str, Any], buttons: list[dict[str, Any]]) -> str:
    """The name of the action played: its button's label, else its JSON (cut at 60 characters)."""
    for button in buttons:
        if button["action"] == action:
            return button["label"]
    text = orjson.dumps(action).decode()
    return text if len(text) <= 60 else text[:59] + "…"


class WebPlay:
    """The page's routes: live episodes on the API's own sessions, plus frames and buttons."""

    def __init__(self, manager: SessionManager, params: dict[str, Any]) -> None:
        self.manager, self.routes = manager, EnvRoutes(manager)
        self.spec = manager.spec
        self.schema = manager.env_class.action_type.model_json_schema()
        self.live: dict[str, LiveEpisode] = {}  # session id -> its episode; only sessions still open
        self.runs = ProgramRuns(manager, params, draw_png)

    def info(self) -> dict[str, Any]:
        strategy = self.spec.strategy
        return {
            "env": self.spec.name,
            "description": self.spec.description,
            "session_header": SESSION_HEADER,
            "action_schema": self.schema,
            "fields": action_fields(self.schema),
            "max_episode_steps": self.spec.max_episode_steps,
            "strategy": {"function": strategy.function, "args": strategy.args, "returns": strategy.returns},
            "template": f"def {strategy.function}({', '.join(strategy.args)}):\n    # return {strategy.returns}\n",
            "runs": self.runs.describe(),
        }

    async def render(self, step: dict[str, Any], header: dict[str, Any]) -> str | None:
        """The frame as a data URL, drawn on a worker thread under the server's deadline; None if it cannot
        be drawn (the answer still carries the observation: a drawing problem never fails a move)."""
        try:
            return data_url(await self.manager.run(draw_png, step, header))
        except Exception:  # a frame is an extra; the move itself succeeded
            return None

    async def reset(self, sid: str | None, raw: bytes) -> Response:
        reply = await self.routes.reset(sid or NEW_SESSION, raw)  # a page's session is firm: it is in use
        if reply.status != 200:
            return answer(reply)
        live = LiveEpisode(seed=parse_json_object(raw).get("seed"))
        for gone in [s for s in self.live if s not in self.manager.sessions]:
            del self.live[gone]
        self.live[reply.session_id or ""] = live
        return await self.show(reply, live, None)

    async def step(self, sid: str | None, raw: bytes) -> Response:
        if sid is None:
            return json_error(ClientError(422, f"no session: press Reset first (the {SESSION_HEADER} header is "
                                          "missing)"))  # fmt: skip
        reply = await self.routes.step(sid, raw)
        if reply.status != 200:
            return answer(reply)
        live = self.live.setdefault(sid, LiveEpisode())
        payload = orjson.loads(reply.body)
        live.step += 1
        reward = payload.get("reward")
        live.total += reward if isinstance(reward, (int, float)) else 0.0
        return await self.show(reply, live, action_label(parse_json_object(raw)["action"], live.buttons), payload)

    async def show(self, reply: Reply, live: LiveEpisode, label: str | None,
                   payload: dict[str, Any] | None = None) -> Response:  # fmt: skip
        """The answer to a successful reset or step: the API's reply, the frame, the buttons, the log line."""
        payload = payload or orjson.loads(reply.body)
        obs, done = payload["observation"], bool(payload.get("done"))
        step: dict[str, Any] = {"observation": obs, "step": live.step, "reward": payload.get("reward"),
                                "total": live.total, "last": self.spec.max_episode_steps or "?",
                                "action_label": label}  # fmt: skip
        if done:
            outcome = (payload.get("metadata") or {}).get("outcome")
            step["end"] = {"won": outcome == "win" if outcome else bool(obs.get("won"))}
        screen = await self.atari_screen(reply.session_id, obs)
        if screen is not None:
            step["screen"] = screen
        seed = live.seed if not isinstance(live.seed, int) or abs(live.seed) < 2**53 else str(live.seed)
        header = {"env": self.spec.name, "seed": "-" if seed is None else seed, "program": "you"}
        live.buttons = action_buttons({**obs, "done": done}, self.schema)
        body = {**payload, "session_id": reply.session_id, "seed": seed, "step": live.step, "total": live.total,
                "frame": await self.render(step, header), "buttons": live.buttons,
                "log": {"step": live.step, "action": label, "reward": payload.get("reward"), "done": done}}  # fmt: skip
        return Response(dumps(body), 200, media_type="application/json",
                        headers={SESSION_HEADER: reply.session_id} if reply.session_id else None)  # fmt: skip

    async def atari_screen(self, sid: str | None, obs: dict[str, Any]) -> Any:
        """An Atari step's screen: the observation's frame when it carries one, else the session's emulator's."""
        if "ram" not in obs or "action_names" not in obs or sid is None:
            return None
        try:
            if obs.get("frame"):
                from stratagem.envs.atari import decode_frame

                return decode_frame(obs["frame"])
            session = self.routes.session(sid)
            return await self.manager.call(session, _emulator_screen)
        except Exception:  # then the objects are drawn instead, as the viewer does
            return None

    async def close(self, sid: str | None) -> Response:
        self.live.pop(sid or "", None)
        return answer(await self.routes.close(sid))


def _emulator_screen(env: Any) -> Any:
    ale = getattr(env, "ale", None)
    return None if ale is None else ale.getScreenRGB().copy()


def answer(reply: Reply) -> Response:
    headers = {SESSION_HEADER: reply.session_id} if reply.session_id else None
    return Response(reply.body, reply.status, media_type="application/json", headers=headers)


def json_error(error: ClientError) -> Response:
    return Response(error.body(), error.status, media_type="application/json")


def mount_web(app: FastAPI, manager: SessionManager, params: dict[str, Any]) -> WebPlay:
    """Add ``/web`` and its routes to ``app``; a program run still going is stopped when the server stops."""
    web = WebPlay(manager, params)
    app.state.web = web
    page = (STATIC / "index.html").read_bytes()
    no_cache = {"Cache-Control": "no-cache"}

    async def body(request: Request) -> bytes:
        """The request's body, which must be JSON: a JSON content type cannot be posted by another site's
        page without the browser asking first (CORS), and this server never says yes."""
        try:
            raw = await request.body()
        except ClientDisconnect:
            raise ClientError(400, "the client disconnected before sending the whole body") from None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if raw.strip() and kind != "application/json":
            raise ClientError(415, f"send the body as JSON, with Content-Type: application/json (got {kind!r})")
        return raw

    def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
        """Any ClientError (a bad body, a disconnect) as its 4xx JSON answer: never a 500."""

        @functools.wraps(handler)  # FastAPI reads the handler's own signature through this
        async def run(**kwargs: Any) -> Response:
            try:
                return await handler(**kwargs)
            except ClientError as exc:
                return json_error(exc)
            except ValueError as exc:
                return json_error(as_client_error(exc))

        return run

    @app.get("/web", include_in_schema=False)
    @app.get("/web/", include_in_schema=False)
    async def web_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=no_cache)

    @app.get("/web/static/{name}", include_in_schema=False)
    async def web_static(name: str) -> Response:
        if name not in PAGE_FILES:
            return json_error(ClientError(404, f"no file {name!r} here; the page's files: {', '.join(PAGE_FILES)}"))
        return Response((STATIC / name).read_bytes(), media_type=PAGE_FILES[name], headers=no_cache)

    @app.get("/web/info", include_in_schema=False)
    async def web_info() -> Response:
        return Response(dumps(web.info()), media_type="application/json")

    @app.post("/web/reset", include_in_schema=False)
    @guarded
    async def web_reset(request: Request) -> Response:
        return await web.reset(request.headers.get(SESSION_HEADER), await body(request))

    @app.post("/web/step", include_in_schema=False)
    @guarded
    async def web_step(request: Request) -> Response:
        return await web.step(request.headers.get(SESSION_HEADER), await body(request))

    @app.post("/web/close", include_in_schema=False)
    @guarded
    async def web_close(request: Request) -> Response:
        return await web.close(request.headers.get(SESSION_HEADER))

    @app.post("/web/run", include_in_schema=False)
    @guarded
    async def web_run(request: Request) -> Response:
        return Response(dumps(await web.runs.start(await body(request))), media_type="application/json")

    @app.get("/web/runs/{run_id}/frames/{index}", include_in_schema=False)
    @guarded
    async def web_frame(request: Request, run_id: str, index: str) -> Response:
        png = await web.runs.frame(run_id, index)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            try:
                yield state
            finally:
                await web.runs.stop()

    app.router.lifespan_context = lifespan
    return web
