"""Clients: one API whether the environment is remote (HTTP or WebSocket) or in-process.

    from stratagem.client.http import EnvClient
    with EnvClient.connect("http://127.0.0.1:8000") as env:      # WebSocket by default
        r = env.reset(seed=1)
        while not r.done:
            r = env.step({"action_id": r.observation["legal_actions"][0]})

``EnvClient.connect(url, transport="http")`` plays the same episode over stateful HTTP
(``X-Session-Id``), ``EnvClient.local("2048")`` runs it in this process with no server, and
``AsyncEnvClient`` offers the same calls with ``await``. Every transport returns the same
``StepResult`` (observation as a plain dict) and raises the same exceptions: a server's 422
is an ``InvalidAction`` here exactly as it is in-process.

Any OpenEnv server works over WebSocket (0.3.0 and 0.10 alike: ``"metadata": null``, or
metadata nested inside the observation, are both read). OpenEnv's HTTP is stateless (each
request gets a fresh environment), so ``transport="http"`` there plays nothing: its reset
works, and the next call raises ``StatelessServer`` saying to use WebSocket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import ValidationError
from websockets.asyncio.client import connect as ws_connect_async
from websockets.exceptions import ConnectionClosed

from stratagem.client.wire import (
    NO_DELAY,
    NOT_STARTED,
    STATELESS_MESSAGE,
    Action,
    NotActive,
    ServerTimeout,
    SessionLost,
    StatelessServer,
    action_dict,
    http_reply,
    reset_body,
    route_urls,
    session_id_of,
    to_result,
    ws_reply,
    ws_url,
)
from stratagem.client.ws import BlockingWebSocket
from stratagem.envs.core import Environment, InvalidAction, StepResult
from stratagem.envs.spec import make
from stratagem.server.protocol import SESSION_HEADER, dumps, jsonable_errors, observation_payload, validation_messages


class EnvClient:
    """Synchronous client. Build one with ``connect`` (remote) or ``local`` (in-process)."""

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> StepResult:
        raise NotImplementedError

    def step(self, action: Action) -> StepResult:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def connect(url: str, transport: str = "ws", timeout_s: float = 30.0) -> EnvClient:
        """A remote environment over WebSocket (one connection = one session) or stateful HTTP."""
        if transport == "ws":
            return WSEnvClient(url, timeout_s)
        if transport == "http":
            return HTTPEnvClient(url, timeout_s)
        raise ValueError(f"transport must be 'ws' or 'http', got {transport!r}")

    @staticmethod
    def local(name_or_path: str, **params: Any) -> EnvClient:
        """The same API on an environment built in this process (no server, no serialisation)."""
        return LocalEnvClient(make(name_or_path, **params))


class LocalEnvClient(EnvClient):
    def __init__(self, env: Environment) -> None:
        self.env = env

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> StepResult:
        return to_result(observation_payload(self.env.reset(**reset_body(seed, episode_id, kwargs))))

    def step(self, action: Action) -> StepResult:
        try:
            action = self.env.action_type.model_validate(action_dict(action))
        except ValidationError as exc:  # as a server would answer: 422, an InvalidAction
            raise InvalidAction(validation_messages(jsonable_errors(exc.errors()))) from None
        return to_result(observation_payload(self.env.step(action)))

    def state(self) -> dict[str, Any]:
        return self.env.state.model_dump()

    def close(self) -> None:
        self.env.close()


class _HTTPSession:
    """What both HTTP clients know of their session: its id, or that the server has none to give."""

    session_id: str | None = None
    stateless = False  # /reset came back without a session id: an OpenEnv server

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        return headers

    def _lost(self, response: httpx.Response) -> bool:
        """A reset naming a session the server no longer has (closed, or reaped when idle): forget it, so
        that the reset is sent again without it and opens a new session."""
        if response.status_code == 404 and self.session_id is not None:
            self.session_id = None
            return True
        return False

    def _opened(self, response: httpx.Response) -> dict[str, Any]:
        payload = http_reply(response)
        self.session_id = session_id_of(response, payload)
        self.stateless = self.session_id is None
        return payload

    def _check_session(self, call: str) -> None:
        """Refuse a call that a stateless server would answer from a fresh environment."""
        if self.stateless:
            raise StatelessServer(STATELESS_MESSAGE)
        if self.session_id is None and call == "step":
            raise NotActive(NOT_STARTED, 409)


class HTTPEnvClient(_HTTPSession, EnvClient):
    """Stateful HTTP: ``/reset`` opens a session; later calls carry its ``X-Session-Id``.

    On a server whose ``/reset`` gives no session (OpenEnv's stateless HTTP), ``step`` and ``state``
    raise ``StatelessServer`` rather than act on a fresh environment."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.urls = route_urls(url)
        self.http = httpx.Client(timeout=timeout_s, transport=httpx.HTTPTransport(socket_options=NO_DELAY))

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(self.urls[path], content=dumps(body), headers=self._headers())

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> StepResult:
        body = reset_body(seed, episode_id, kwargs)
        response = self._post("/reset", body)
        if self._lost(response):
            response = self._post("/reset", body)
        return to_result(self._opened(response))

    def step(self, action: Action) -> StepResult:
        self._check_session("step")
        return to_result(http_reply(self._post("/step", {"action": action_dict(action)})))

    def state(self) -> dict[str, Any]:
        self._check_session("state")
        headers = {SESSION_HEADER: self.session_id} if self.session_id else {}
        return http_reply(self.http.get(self.urls["/state"], headers=headers))

    def close(self) -> None:
        if self.session_id:
            try:
                self.http.delete(self.urls["/session"], headers={SESSION_HEADER: self.session_id})
            except httpx.HTTPError:
                pass  # the server is gone; its reaper would have closed the session anyway
            self.session_id = None
        self.http.close()


class WSEnvClient(EnvClient):
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        try:
            self.ws = BlockingWebSocket(ws_url(url), timeout_s=timeout_s)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {ws_url(url)}: {exc}") from exc

    def _call(self, message: dict[str, Any], expected: str) -> dict[str, Any]:
        try:
            self.ws.send(dumps(message).decode())
            return ws_reply(self.ws.recv(), expected)
        except ConnectionClosed as exc:
            raise SessionLost(f"the server closed the connection: {exc}") from exc
        except TimeoutError as exc:
            raise ServerTimeout(f"no reply within {self.timeout_s:g} s") from exc
        except OSError as exc:
            raise SessionLost(f"the connection failed: {exc}") from exc

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> StepResult:
        return to_result(self._call({"type": "reset", "data": reset_body(seed, episode_id, kwargs)}, "observation"))

    def step(self, action: Action) -> StepResult:
        return to_result(self._call({"type": "step", "data": action_dict(action)}, "observation"))

    def state(self) -> dict[str, Any]:
        return self._call({"type": "state"}, "state")

    def close(self) -> None:
        try:
            self.ws.send('{"type":"close"}')
        except (ConnectionClosed, OSError):
            pass
        self.ws.close()


class AsyncEnvClient(_HTTPSession):
    """The same calls, awaitable: ``async with await AsyncEnvClient.connect(url) as env: ...``."""

    def __init__(self, url: str, transport: str, timeout_s: float) -> None:
        if transport not in ("ws", "http"):
            raise ValueError(f"transport must be 'ws' or 'http', got {transport!r}")
        self.url, self.transport, self.timeout_s = url, transport, timeout_s
        self.urls = route_urls(url)
        self.ws: Any = None
        self.http: httpx.AsyncClient | None = None

    @classmethod
    async def connect(cls, url: str, transport: str = "ws", timeout_s: float = 30.0) -> AsyncEnvClient:
        client = cls(url, transport, timeout_s)
        if transport == "ws":
            try:
                client.ws = await ws_connect_async(ws_url(url), open_timeout=timeout_s, max_size=None, compression=None)
            except OSError as exc:
                raise ConnectionError(f"cannot connect to {ws_url(url)}: {exc}") from exc
        else:
            client.http = httpx.AsyncClient(
                timeout=timeout_s, transport=httpx.AsyncHTTPTransport(socket_options=NO_DELAY)
            )
        return client

    async def _ws_call(self, message: dict[str, Any], expected: str) -> dict[str, Any]:
        try:
            await self.ws.send(dumps(message).decode())
            return ws_reply(await asyncio.wait_for(self.ws.recv(), self.timeout_s), expected)
        except ConnectionClosed as exc:
            raise SessionLost(f"the server closed the connection: {exc}") from exc
        except asyncio.TimeoutError as exc:  # not yet TimeoutError on Python 3.10
            raise ServerTimeout(f"no reply within {self.timeout_s:g} s") from exc

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        assert self.http is not None
        return await self.http.post(self.urls[path], content=dumps(body), headers=self._headers())

    async def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> StepResult:
        body = reset_body(seed, episode_id, kwargs)
        if self.ws is not None:
            return to_result(await self._ws_call({"type": "reset", "data": body}, "observation"))
        response = await self._post("/reset", body)
        if self._lost(response):
            response = await self._post("/reset", body)
        return to_result(self._opened(response))

    async def step(self, action: Action) -> StepResult:
        if self.ws is not None:
            return to_result(await self._ws_call({"type": "step", "data": action_dict(action)}, "observation"))
        self._check_session("step")
        return to_result(http_reply(await self._post("/step", {"action": action_dict(action)})))

    async def state(self) -> dict[str, Any]:
        if self.ws is not None:
            return await self._ws_call({"type": "state"}, "state")
        self._check_session("state")
        assert self.http is not None
        headers = {SESSION_HEADER: self.session_id} if self.session_id else {}
        return http_reply(await self.http.get(self.urls["/state"], headers=headers))

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.send('{"type":"close"}')
            except ConnectionClosed:
                pass
            await self.ws.close()
        if self.http is not None:
            if self.session_id:
                try:
                    await self.http.delete(self.urls["/session"], headers={SESSION_HEADER: self.session_id})
                except httpx.HTTPError:
                    pass
            await self.http.aclose()

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
