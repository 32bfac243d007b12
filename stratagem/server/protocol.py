"""The OpenEnv wire protocol (``openenv-http/1.x``: OpenEnv 0.10, and openenv-core 0.3.0), in one place.

Server, client and ``stratagem validate`` all import these names, so the three can only
disagree with OpenEnv, never with each other. See ARCHITECTURE.md, "The wire protocol".
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from stratagem.envs.core import Observation

SESSION_HEADER = "X-Session-Id"
PROTOCOL = "openenv-http/1.x"
PROTOCOL_VERSION = "1.0.0"  # /openapi.json info.version: OpenEnv derives the profile from it


class ResetRequest(BaseModel):
    """Body of ``POST /reset`` and data of a WS ``reset``; extra keys go to ``Environment.reset``."""

    model_config = ConfigDict(extra="allow")
    seed: int | None = Field(default=None, ge=0, description="replay an episode exactly")
    episode_id: str | None = Field(default=None, max_length=255)


class StepRequest(BaseModel):
    """Body of ``POST /step``; a WS ``step`` carries the action fields alone."""

    model_config = ConfigDict(extra="allow")
    action: dict[str, Any]
    timeout_s: float | None = Field(default=None, gt=0)
    request_id: str | None = Field(default=None, max_length=255)


class ErrorCode:
    """WebSocket error-frame codes, exactly OpenEnv's."""

    INVALID_JSON = "INVALID_JSON"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    EXECUTION_ERROR = "EXECUTION_ERROR"
    CAPACITY_REACHED = "CAPACITY_REACHED"
    FACTORY_ERROR = "FACTORY_ERROR"
    SESSION_ERROR = "SESSION_ERROR"


class JsonRpc:
    """JSON-RPC 2.0 error codes used by ``/mcp``."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602


def observation_payload(obs: Observation, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"observation", "reward", "done", "metadata"}``, as OpenEnv 0.10 shapes it.

    ``reward`` and ``done`` are lifted out of the observation. Its ``metadata`` stays inside it (OpenEnv
    0.10's typed clients read it only there; 0.3.0's, whose ``Observation`` has the field, accept it) and
    is also copied to the top level, merged with the server's own keys (``metadata``: the HTTP session
    id), where 0.10's ``StepResult.metadata`` and stratagem's client read it. That copy is always an
    object, ``{}`` when empty (0.10's own server sends ``null`` over HTTP and leaves it out over WS).
    """
    body = obs.model_dump(exclude={"reward", "done"})
    meta = {**body["metadata"], **metadata} if metadata else dict(body["metadata"])
    return {"observation": body, "reward": obs.reward, "done": obs.done, "metadata": meta}


def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays and scalars are serialised natively."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    return dumps({"type": "error", "data": {"message": message, "code": code, **extra}})


def validation_messages(errors: list[dict[str, Any]]) -> str:
    """pydantic's error list as one readable sentence: where, what, and what was sent."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(
            f"{where}: {err.get('msg')} (got {err.get('input')!r})" if "input" in err else f"{where}: {err.get('msg')}"
        )
    return "; ".join(parts)


def jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic errors without the non-JSON bits (exception objects in ``ctx``)."""
    keep = ("type", "loc", "msg", "input")
    return [{k: err[k] for k in keep if k in err} for err in errors]
