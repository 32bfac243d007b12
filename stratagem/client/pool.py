"""Many environment servers used as one: health checks, least-loaded choice, failover.

    from stratagem.client.pool import EnvPool
    servers = EnvPool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
    with servers.connect() as env:          # an EnvClient on a healthy server
        r = env.reset(seed=1)

The runner's call mode (``stratagem play --url A --url B``, ``stratagem train --url ...``) takes one
server per job: ``refresh`` asks every server that is not known to be up for ``/health`` (all at
once, before any job starts, so that a dead address never stalls the runner's clocks), ``acquire``
hands out the healthy server with the fewest games on it, ``failed`` takes a server out. The caller
plays the episodes a failed server cost again on another one; when none is left, ``acquire`` raises
``NoServer`` naming every server and why it is out. A server taken out comes back at the next
``refresh`` that finds it healthy (the runner refreshes at the start of each ``evaluate``), so a
server restarted between training steps is used again.

``check`` (optional) is called once per server before its first game, e.g. ``identify.check_serves``
to refuse a server of another environment; what it raises is a mistake of the caller's (a wrong
address), not a failure of the server, and is passed on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from stratagem.client.http import EnvClient
from stratagem.client.wire import http_url

HEALTH_TIMEOUT_S = 3.0  # a server that cannot say it is healthy within this is out


class NoServer(ConnectionError):
    """No environment server of the pool is healthy; the message names each and why it is out."""


@dataclass
class Server:
    url: str
    up: bool | None = None  # None: not asked yet
    why: str = ""  # why it is out, when it is
    games: int = 0  # games being played on it now
    checked: bool = False  # ``check`` passed


class EnvPool:
    """Environment servers (base URLs of ``stratagem serve`` or any OpenEnv server) used as one."""

    def __init__(self, urls: Sequence[str], check: Callable[[str], None] | None = None,
                 timeout_s: float = HEALTH_TIMEOUT_S) -> None:  # fmt: skip
        """``urls``: one or more server URLs (http, https, ws or wss; duplicates count once)."""
        if isinstance(urls, str):
            urls = [urls]
        unique = list(dict.fromkeys(http_url(url) for url in urls))  # http_url raises ValueError on a bad scheme
        if not unique:
            raise ValueError("an EnvPool needs at least one server URL")
        self.servers = [Server(url) for url in unique]
        self.check, self.timeout_s = check, timeout_s
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def health(self, url: str) -> str | None:
        """None when the server at ``url`` answers ``GET /health`` with 200 in time; else why not."""
        try:
            response = httpx.get(url + "/health", timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            return f"cannot reach the environment server at {url}: {type(exc).__name__}: {exc}".rstrip(": ")
        if response.status_code != 200:
            return f"the environment server at {url} is not healthy: GET /health answered {response.status_code}"
        return None

    def refresh(self) -> list[str]:
        """Ask every server not known to be up for ``/health``, all at once; returns the healthy URLs."""
        asked = [server for server in self.servers if server.up is not True]
        if asked:
            with ThreadPoolExecutor(max_workers=min(16, len(asked))) as threads:
                answers = list(threads.map(self.health, [server.url for server in asked]))
            with self._lock:
                for server, why in zip(asked, answers, strict=True):
                    server.up, server.why = why is None, why or ""
        return [server.url for server in self.servers if server.up]

    def acquire(self) -> str:
        """The healthy server with the fewest games on it now (the first listed on a tie); its game count goes
        up until ``release``. Servers never asked are asked first. Raises ``NoServer`` when none is healthy."""
        if any(server.up is None for server in self.servers):
            self.refresh()
        while True:
            with self._lock:
                healthy = [server for server in self.servers if server.up]
                if not healthy:
                    raise NoServer(self.down_message())
                server = min(healthy, key=lambda s: s.games)
                server.games += 1
                if server.checked or self.check is None:
                    return server.url
            try:
                self.check(server.url)  # outside the lock: it asks the server
            except BaseException:
                self.release(server.url)
                raise
            with self._lock:
                server.checked = True
                if server.up:  # not failed meanwhile
                    return server.url
                server.games -= 1

    def release(self, url: str) -> None:
        """A game on ``url`` is over (however it ended)."""
        with self._lock:
            server = self._find(url)
            server.games = max(0, server.games - 1)

    def failed(self, url: str, why: str) -> None:
        """``url`` failed a request: out until a ``refresh`` finds it healthy again."""
        with self._lock:
            server = self._find(url)
            server.up, server.why = False, why

    def down_message(self) -> str:
        """Why each server is out, naming it (once)."""
        reasons = [server.why if server.url in server.why else f"{server.url}: {server.why or 'out'}"
                   for server in self.servers]  # fmt: skip
        if len(reasons) == 1:
            return reasons[0]
        return f"all {len(reasons)} environment servers are down: " + "; ".join(reasons)

    def connect(self, transport: str = "ws", timeout_s: float = 30.0) -> EnvClient:
        """An ``EnvClient`` on a healthy server, trying the next one when a connection fails; its game counts
        on that server until the client is closed. Raises ``NoServer`` when no server takes the connection."""
        while True:
            url = self.acquire()
            try:
                client = EnvClient.connect(url, transport=transport, timeout_s=timeout_s)
            except (OSError, ValueError) as exc:
                self.release(url)
                self.failed(url, f"cannot connect: {exc}")
                continue
            close, released = client.close, []

            def close_and_release(close: Callable[[], Any] = close, url: str = url, released: list = released) -> None:
                try:
                    close()
                finally:
                    if not released:
                        released.append(True)
                        self.release(url)

            client.close = close_and_release  # type: ignore[method-assign]
            return client

    def _find(self, url: str) -> Server:
        for server in self.servers:
            if server.url == url:
                return server
        raise KeyError(f"{url} is not a server of this pool ({', '.join(self.urls)})")
