"""Listening for ``stratagem serve`` and ``stratagem dashboard``: the socket bound before anything is announced
(so a taken port is one clear line, not uvicorn's traceback), and uvicorn run on it, announcing where it listens."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any


class ServeError(ValueError):
    """The server could not listen where it was asked to (port in use, no permission, not this machine's
    address); the message says which and what to pass instead. Nothing was served."""


def listen_socket(host: str = "127.0.0.1", port: int = 8000, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, as uvicorn would bind it (SO_REUSEADDR; IPv6
    when ``host`` has a colon); ``port`` 0 takes a free one. Raises ``ServeError`` saying what was wrong."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)  # listening, not only bound: a second SO_REUSEADDR socket cannot take the port now
    except OSError as exc:
        sock.close()
        raise ServeError(_bind_failure(exc, host, port)) from None
    sock.set_inheritable(True)
    return sock


def _bind_failure(exc: OSError, host: str, port: int) -> str:
    hosts = "pass --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host!r}: the name does not resolve ({exc.strerror}); {hosts}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use; pass --port with a free one (or stop what listens on {host}:{port})"
    if exc.errno == errno.EACCES:
        if 0 < port < 1024:
            return (
                f"no permission to listen on port {port}: ports below 1024 need root or CAP_NET_BIND_SERVICE; "
                "pass --port with a port of 1024 or above (the default is 8000)"
            )
        return f"no permission to listen on {host}:{port} ({exc.strerror}); pass --port with another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine; {hosts}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def run_announced(config: Any, sock: socket.socket, line: str, on_exit: Callable[[], None] | None = None) -> bool:
    """uvicorn on the bound, listening ``sock`` until it is stopped; ``line`` goes to stderr once it accepts
    connections (never when its startup failed), and ``on_exit`` runs first when a signal stops it. The socket
    is closed at the end. Whether it started (uvicorn has logged why not)."""
    import sys

    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                print(line, file=sys.stderr, flush=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return server.started
