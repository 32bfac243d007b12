"""What each failure means to a client: one HTTP status per kind of failure, for both transports.

HTTP answers with that status; a WebSocket error frame carries it as ``status`` beside
OpenEnv's ``code``, so clients raise the same exception whichever way they connect.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from stratagem.envs.core import EnvError, EpisodeNotActive, InvalidAction
from stratagem.server.deadline import StepTimeout
from stratagem.server.protocol import ErrorCode, dumps, jsonable_errors, validation_messages
from stratagem.server.sessions import CapacityReached, FactoryFailed, SessionBusy, UnknownParameters, UnknownSession

M = TypeVar("M", bound=BaseModel)


class ClientError(Exception):
    """A failure with its HTTP status and a message that says what to fix."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra

    def body(self) -> bytes:
        return dumps({"detail": self.message, **self.extra})


def validate(model: type[M], data: Any, where: str = "body") -> M:
    """``model.model_validate(data)``, or a 422 naming each bad field under ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": (where, *e["loc"])} for e in jsonable_errors(exc.errors())]
        raise ClientError(422, validation_messages(errors), errors=errors) from None


def as_client_error(exc: BaseException) -> ClientError:
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, InvalidAction):
        return ClientError(422, str(exc))
    if isinstance(exc, EpisodeNotActive):
        return ClientError(409, str(exc))
    if isinstance(exc, EnvError):
        return ClientError(400, str(exc))
    if isinstance(exc, ValidationError):
        errors = jsonable_errors(exc.errors())
        return ClientError(422, validation_messages(errors), errors=errors)
    if isinstance(exc, UnknownParameters):
        return ClientError(422, str(exc))
    if isinstance(exc, CapacityReached):
        return ClientError(503, str(exc), active_sessions=exc.active, max_sessions=exc.limit)
    if isinstance(exc, StepTimeout):
        return ClientError(504, f"{exc}; the environment was dropped: reset to continue")
    if isinstance(exc, FactoryFailed):
        return ClientError(500, str(exc))
    if isinstance(exc, UnknownSession):
        return ClientError(404, str(exc))
    if isinstance(exc, SessionBusy):
        return ClientError(409, str(exc))
    return ClientError(500, f"the environment raised {type(exc).__name__}: {exc}")


def error_code(exc: BaseException, error: ClientError) -> str:
    """OpenEnv's WebSocket error code for a failed reset/step/state (MCP tool errors carry it too)."""
    if isinstance(exc, FactoryFailed):
        return ErrorCode.FACTORY_ERROR
    if isinstance(exc, (UnknownSession, SessionBusy)):
        return ErrorCode.SESSION_ERROR
    if error.status == 422 and not isinstance(exc, InvalidAction):
        return ErrorCode.VALIDATION_ERROR  # the message itself was malformed
    return ErrorCode.EXECUTION_ERROR  # well-formed, but the environment refused or failed
