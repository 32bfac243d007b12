"""The client's half of the wire, apart from the clients that use it.

The sync and async clients, over HTTP and WebSocket, must read a server the same way: one
status (or WS error code) to exception mapping, one way to find ``metadata`` and the session
id in a reply, one way to turn a URL into the other transport's. Kept here, they cannot drift
between transports, and code that needs only a URL or an exception (the validator, the
server identity check, an agent catching ``RemoteError``) need not load the clients.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

from stratagem.envs.core import EpisodeNotActive, InvalidAction, StepResult
from stratagem.server.protocol import SESSION_HEADER, validation_messages

Action = dict[str, Any] | BaseModel


class RemoteError(Exception):
    """The server refused a request; ``status`` is the HTTP status (WS frames carry it too)."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, payload: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.payload = status, code, payload or {}


class InvalidRequest(RemoteError, InvalidAction):
    """422/413/400: the action or request was not acceptable; the episode is unharmed."""


class NotActive(RemoteError, EpisodeNotActive):
    """409: step before reset or after the episode ended."""


class SessionLost(RemoteError):
    """404/408: the session is gone (closed, reaped when idle, or unknown)."""


class ServerBusy(RemoteError):
    """503: the server is at its session limit."""


class ServerTimeout(RemoteError):
    """504: the environment overran its step deadline; reset to continue."""


class StatelessServer(RemoteError):
    """``transport="http"`` on a server with no HTTP sessions (OpenEnv's): only WebSocket keeps an episode."""


STATELESS_MESSAGE = (
    f"this server's HTTP is stateless: POST /reset returned no {SESSION_HEADER}, so every HTTP request gets a "
    "fresh environment (OpenEnv servers keep an episode only on a WebSocket) and this step would not continue the "
    "episode that reset started. Use the WebSocket transport: EnvClient.connect(url) or "
    "AsyncEnvClient.connect(url), without transport='http'"
)
NOT_STARTED = "no episode has started on this client: call reset first"


_BY_STATUS: dict[int, type[RemoteError]] = {
    400: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    409: NotActive,
    404: SessionLost,
    408: SessionLost,
    503: ServerBusy,
    504: ServerTimeout,
}
_BY_CODE: dict[str, int] = {
    "INVALID_JSON": 422,
    "UNKNOWN_TYPE": 422,
    "VALIDATION_ERROR": 422,
    "CAPACITY_REACHED": 503,
    "SESSION_ERROR": 408,
    "EXECUTION_ERROR": 422,
    "FACTORY_ERROR": 500,
}


def remote_error(
    message: str, status: int | None, code: str | None = None, payload: dict[str, Any] | None = None
) -> RemoteError:
    """Map an HTTP status or a WS error frame (its ``status``, else its ``code``) to an exception."""
    if status is None and code is not None:
        status = _BY_CODE.get(code)
    return _BY_STATUS.get(status or 0, RemoteError)(message, status, code, payload)


def action_dict(action: Action) -> dict[str, Any]:
    if isinstance(action, BaseModel):
        return action.model_dump(exclude_none=True)
    if isinstance(action, dict):
        return action
    raise TypeError(f"an action is a dict or a pydantic Action, got {type(action).__name__}")


def to_result(payload: dict[str, Any]) -> StepResult[dict[str, Any]]:
    """A reply's data as a ``StepResult``. ``metadata`` is the top-level one, else the one OpenEnv 0.10
    nests inside the observation (it sends ``"metadata": null``, or no key, when that one is empty)."""
    observation = payload.get("observation") or {}
    metadata = payload.get("metadata") or observation.get("metadata")
    return StepResult(
        observation=observation,
        reward=payload.get("reward"),
        done=bool(payload.get("done", False)),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


def session_id_of(response: httpx.Response, payload: dict[str, Any]) -> str | None:
    """The HTTP session a ``/reset`` opened: its ``X-Session-Id`` header, else ``metadata.session_id``
    (top-level or nested); None from a stateless server (OpenEnv's)."""
    sid = response.headers.get(SESSION_HEADER)
    if sid:
        return sid
    for meta in (payload.get("metadata"), (payload.get("observation") or {}).get("metadata")):
        if isinstance(meta, dict) and isinstance(meta.get("session_id"), str) and meta["session_id"]:
            return meta["session_id"]
    return None


def ws_url(url: str) -> str:
    url = url.rstrip("/")
    for old, new in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(old):
            url = new + url[len(old) :]
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss://, got {url!r}")
    return url if url.endswith("/ws") else url + "/ws"


def http_url(url: str) -> str:
    url = url.rstrip("/")
    for old, new in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(old):
            url = new + url[len(old) :]
    if url.endswith("/ws"):
        url = url[:-3]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss://, got {url!r}")
    return url


# Requests go out as soon as they are written (headers and body are separate writes in httpx).
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def route_urls(url: str) -> dict[str, httpx.URL]:
    """Absolute URLs parsed once: httpx would otherwise merge and re-parse them per request."""
    base = http_url(url)
    return {path: httpx.URL(base + path) for path in ("/reset", "/step", "/state", "/session")}


def reset_body(seed: int | None, episode_id: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A reset's fields as every transport sends them: a seed or episode id only when one is given."""
    body = dict(kwargs)
    if seed is not None:
        body["seed"] = seed
    if episode_id is not None:
        body["episode_id"] = episode_id
    return body


def _pydantic_errors(errors: Any) -> str | None:
    """pydantic's error list (OpenEnv's 422 ``detail``, its VALIDATION_ERROR frames' ``errors``) as a sentence."""
    if isinstance(errors, list) and errors and all(isinstance(e, dict) and "msg" in e for e in errors):
        return validation_messages(errors)
    return None


def ws_reply(raw: str | bytes, expected: str) -> dict[str, Any]:
    """A WS reply's data, or the exception its error frame stands for (sync and async clients alike)."""
    msg = orjson.loads(raw)
    if msg.get("type") == "error":
        data = msg.get("data") or {}
        message = data.get("message") or "server error"
        if message == "Invalid message":  # OpenEnv's VALIDATION_ERROR: the detail is in 'errors' only
            message = _pydantic_errors(data.get("errors")) or message
        raise remote_error(message, data.get("status"), data.get("code"), data)
    if msg.get("type") != expected:
        raise RemoteError(f"expected a {expected!r} frame, got {msg.get('type')!r}")
    return msg.get("data") or {}


def http_reply(response: httpx.Response) -> dict[str, Any]:
    """An HTTP reply's body, or the exception its status stands for (sync and async clients alike)."""
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = {"detail": response.text[:500]}
    if response.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise remote_error(
            f"HTTP {response.status_code}: {_pydantic_errors(detail) or detail}",
            response.status_code,
            None,
            body if isinstance(body, dict) else None,
        )
    return body
