"""Sessions: one environment per WebSocket connection, per stateful HTTP episode, or per MCP session.

The session table is where the server's promises are kept: a hard cap on live sessions,
idle sessions reaped, and every environment call run on a worker thread under a deadline,
so a slow or hung environment cannot stall the event loop, ``/health`` or other sessions.
A call that overruns its deadline costs its session its environment (the thread cannot be
killed, and the environment may be half-way through a step); the session stays usable and
the next ``reset`` builds a fresh environment.

Three kinds of session share one table and one cap. ``ws``: owned by one ``/ws`` (or ``/mcp``)
connection, closed with it. ``mcp``: made by ``openenv/session/create`` (OpenEnv 0.10), used by
``tools/call`` with its ``session_id``, by one ``/ws?session_id=`` at a time, or over HTTP with
the header, and kept until ``openenv/session/close`` or idleness. ``http``: opened by
``POST /reset``. A ``/reset`` without the header is what an OpenEnv client sends for a
throw-away environment, so the session it opens is *provisional*: it is held only until the
table is full, when it makes room for a new session; naming it once (any request with its
``X-Session-Id``) makes it a session like the others. Without that, a few stateless callers
would fill the table and lock every WebSocket client out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stratagem.envs.core import Environment, EpisodeNotActive
from stratagem.envs.spec import EnvSpec
from stratagem.server.deadline import StepTimeout, Watchdog

T = TypeVar("T")


class CapacityReached(Exception):
    def __init__(self, active: int, limit: int) -> None:
        super().__init__(
            f"server at capacity: {active} of {limit} sessions in use; close a session "
            "(WebSocket close, or DELETE /session) or retry later"
        )
        self.active, self.limit = active, limit


class UnknownSession(LookupError):
    """No live session has this id; ``reason`` says what became of it, when the server remembers."""

    def __init__(self, sid: str, reason: str) -> None:
        super().__init__(f"unknown session {sid!r}: {reason}")
        self.sid, self.reason = sid, reason


class SessionBusy(Exception):
    """The session cannot be used this way (another WebSocket holds it, or it belongs to a connection)."""


class FactoryFailed(Exception):
    """The environment could not be built (a server-side problem, reported as such)."""


class UnknownParameters(ValueError):
    """A reset/step key the environment does not declare (a client mistake: 422)."""


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 128
    session_timeout_s: float = 300.0
    step_timeout_s: float = 30.0
    max_body_bytes: int = 1 << 20
    # Connection-level (guard.py): deadlines for a request to arrive, slow (still unfinished after
    # a second) requests per client address, and the connection cap (None: 2 * max_sessions + 64).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections_per_client: int = 32
    max_connections: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_sessions",
            "session_timeout_s",
            "step_timeout_s",
            "max_body_bytes",
            "header_timeout_s",
            "body_timeout_s",
            "max_connections_per_client",
            "max_connections",
        ):
            value = getattr(self, name)
            if value is None and name == "max_connections":
                continue
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    @property
    def connection_limit(self) -> int:
        """Connections held at once (HTTP and WebSocket); past it requests other than /health get 503."""
        return self.max_connections if self.max_connections is not None else 2 * self.max_sessions + 64


REMEMBERED_CLOSES = 4096  # how many closed session ids keep the reason they were closed


@dataclass(eq=False)
class Session:
    id: str
    kind: str  # "http", "ws" or "mcp" (see the module docstring)
    env: Environment | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_active: float = field(default_factory=time.monotonic)
    on_reap: Callable[[], Awaitable[None]] | None = None  # tells the connection using it why it ended
    confirmed: bool = True  # False: opened by a /reset without the header and not named since
    episodes: int = 0  # resets that succeeded
    attached: bool = False  # a /ws?session_id= connection is using it
    closing: bool = False  # closed while attached: goes when the WebSocket detaches

    def touch(self) -> None:
        self.last_active = time.monotonic()


class SessionManager:
    def __init__(self, spec: EnvSpec, params: dict[str, Any], limits: Limits) -> None:
        self.spec, self.limits = spec, limits
        self.env_class = spec.env_class()
        self.env_kwargs = spec.constructor_kwargs(**params)
        self.reset_params = _keyword_params(self.env_class.reset, skip={"self"})
        self.step_params = _keyword_params(self.env_class.step, skip={"self", "action", "timeout_s"})
        step_sig = inspect.signature(self.env_class.step).parameters
        self.step_takes_timeout = "timeout_s" in step_sig or any(p.kind is p.VAR_KEYWORD for p in step_sig.values())
        self.sessions: dict[str, Session] = {}
        self.closed: OrderedDict[str, str] = OrderedDict()  # recently closed ids -> why
        self._reserved = 0
        # Threads are cheap and a hung environment pins one for good: size for every session.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.max_sessions + 8, thread_name_prefix="env"
        )
        self.watchdog = Watchdog() if getattr(self.env_class, "inline_steps", False) else None
        self._reaper: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------
    def new_env(self) -> Environment:
        try:
            return self.env_class(**self.env_kwargs)
        except Exception as exc:  # the environment's own failure, not the client's
            raise FactoryFailed(f"could not build {self.env_class.__name__}: {type(exc).__name__}: {exc}") from exc

    async def create(
        self, kind: str, on_reap: Callable[[], Awaitable[None]] | None = None, *, confirmed: bool = True
    ) -> Session:
        active = len(self.sessions) + self._reserved
        if active >= self.limits.max_sessions and not await self._evict_provisional():
            raise CapacityReached(active, self.limits.max_sessions)
        self._reserved += 1  # hold the slot while the environment is built off-loop
        try:
            env = await self.run(self.new_env, timeout_s=self.limits.step_timeout_s)
        except StepTimeout as exc:
            raise FactoryFailed(f"building {self.env_class.__name__} took too long: {exc}") from None
        finally:
            self._reserved -= 1
        session = Session(id=uuid.uuid4().hex, kind=kind, env=env, on_reap=on_reap, confirmed=confirmed)
        self.sessions[session.id] = session
        return session

    async def close(self, session: Session, reason: str = "it was closed") -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.closed[session.id] = reason
        while len(self.closed) > REMEMBERED_CLOSES:
            self.closed.popitem(last=False)
        env, session.env = session.env, None
        if env is not None:
            self.executor.submit(_close_quietly, env)

    async def _evict_provisional(self) -> bool:
        """Close the longest-idle provisional session to make room; False if there is none."""
        candidates = [s for s in self.sessions.values() if not (s.confirmed or s.attached or s.lock.locked())]
        if not candidates:
            return False
        victim = min(candidates, key=lambda s: s.last_active)
        await self.close(
            victim,
            "it was closed to make room for another session: a session opened by a POST /reset without the "
            "X-Session-Id header (or by an MCP initialize) is provisional, kept only while the server has room, "
            "until a request names it",
        )
        return True

    def find(self, sid: str) -> Session:
        """The live session ``sid``, or UnknownSession saying what became of it."""
        session = self.sessions.get(sid)
        if session is None:
            raise self._unknown(sid)
        return session

    def _unknown(self, sid: str) -> UnknownSession:
        reason = self.closed.get(sid) or (
            f"it was closed, timed out after {self.limits.session_timeout_s:g} s idle, or never existed"
        )
        return UnknownSession(sid, reason)

    def named(self, sid: str) -> Session:
        """``find`` for a request that names a session it does not own: that makes a provisional one firm."""
        session = self.find(sid)
        if session.kind == "ws":
            raise SessionBusy(f"session {sid!r} belongs to a WebSocket connection: only that connection uses it")
        session.confirmed = True
        return session

    def attach(self, sid: str, on_reap: Callable[[], Awaitable[None]] | None = None) -> Session:
        """Give a ``/ws?session_id=`` connection the session; one connection at a time."""
        session = self.named(sid)
        if session.attached:
            raise SessionBusy(f"session {sid!r} already has an attached WebSocket; close that one first")
        session.attached, session.on_reap = True, on_reap
        session.touch()
        return session

    async def detach(self, session: Session) -> None:
        """The attached WebSocket went away: the session stays, unless a close was asked for meanwhile."""
        session.attached, session.on_reap = False, None
        if session.closing:
            await self.close(session)

    async def request_close(self, session: Session) -> bool:
        """Close now (True), or once its attached WebSocket detaches (False)."""
        if session.attached:
            session.closing = True
            return False
        await self.close(session)
        return True

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            await self.close(session)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _reap_forever(self) -> None:
        period = min(5.0, max(0.05, self.limits.session_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            await self.reap()

    async def reap(self) -> list[str]:
        """Close sessions idle past the timeout; a session in the middle of a call is never idle."""
        cutoff = time.monotonic() - self.limits.session_timeout_s
        stale = [s for s in self.sessions.values() if s.last_active < cutoff and not s.lock.locked()]
        for session in stale:
            await self.close(session, f"it was closed after {self.limits.session_timeout_s:g} s idle")
            if session.on_reap is not None:
                await session.on_reap()
        return [s.id for s in stale]

    # --- calls into the environment ---------------------------------------------------
    def deadline(self, timeout_s: float | None) -> float:
        return min(timeout_s or self.limits.step_timeout_s, self.limits.step_timeout_s)

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run ``fn`` on a worker thread; raise StepTimeout past the deadline."""
        deadline = self.deadline(timeout_s)
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        try:
            return await asyncio.wait_for(future, deadline)
        except asyncio.TimeoutError:  # not yet TimeoutError on Python 3.10
            raise StepTimeout(f"the environment did not answer within {deadline:g} s") from None

    async def call(
        self,
        session: Session,
        work: Callable[[Environment], T],
        *,
        starts_episode: bool = False,
        timeout_s: float | None = None,
    ) -> T:
        """Run ``work(session.env)``, one call per session at a time, under the deadline.

        A timeout drops the environment (it may be half-way through a step); a later call
        that starts an episode builds a fresh one.
        """
        async with session.lock:
            if self.sessions.get(session.id) is not session:  # closed while this call waited
                raise self._unknown(session.id)
            if session.env is None:
                if not starts_episode:
                    raise EpisodeNotActive("this session's environment was dropped after a timeout: call reset")
                session.env = await self.run(self.new_env)
            env = session.env
            session.touch()
            try:
                if self.watchdog is not None:
                    result = self.watchdog.run(work, env, timeout_s=self.deadline(timeout_s))
                else:
                    result = await self.run(work, env, timeout_s=timeout_s)
                if starts_episode:
                    session.episodes += 1
                return result
            except StepTimeout:
                session.env = None
                self.executor.submit(_close_quietly, env)
                raise
            finally:
                session.touch()

    def check_kwargs(self, kind: str, kwargs: dict[str, Any]) -> None:
        """Extra reset/step keys must be parameters the environment declares."""
        accepted = self.reset_params if kind == "reset" else self.step_params
        if accepted is None:
            return
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise UnknownParameters(
                f"unknown {kind} parameter(s) {unknown}; {self.env_class.__name__}.{kind} accepts: "
                f"{', '.join(sorted(accepted)) or 'no extra parameters'}"
            )


def _keyword_params(fn: Callable[..., Any], skip: set[str]) -> set[str] | None:
    """Names a method accepts by keyword, or None when it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _close_quietly(env: Environment) -> None:
    try:
        env.close()
    except Exception:
        pass
