"""The OpenEnv wire protocol, served: FastAPI app, routes, WebSocket, sessions, MCP, limits and errors.

``protocol`` (the messages and their encoding) is all a client needs from here; the rest is
imported on first use, so ``import stratagem.server.protocol`` does not pull in FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "server_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stratagem.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'stratagem.server' has no attribute {name!r}")
