"""Clients of any OpenEnv-protocol server (ours or OpenEnv's): HTTP and WebSocket, sync and async, and a validator."""

from __future__ import annotations

from typing import Any

_EXPORTS = {"EnvClient": "http", "HTTPEnvClient": "http", "WSEnvClient": "http", "LocalEnvClient": "http",
            "AsyncEnvClient": "http", "Validator": "validate", "RemoteError": "wire", "InvalidRequest": "wire",
            "NotActive": "wire", "SessionLost": "wire", "ServerBusy": "wire", "ServerTimeout": "wire",
            "StatelessServer": "wire"}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"stratagem.client.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'stratagem.client' has no attribute {name!r}")
