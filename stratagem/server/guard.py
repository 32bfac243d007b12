"""Connection admission and read deadlines, so that one client cannot deny the server to everyone.

uvicorn times out idle keep-alive connections, but not a request that is slow to arrive: a
connection that sends half its headers, or trickles its body a byte at a time, is held for
ever, and ``limit_concurrency`` counts such connections, so a few hundred of them from one
client make every request, ``/health`` included, answer 503. ``guarded_protocol`` returns a
subclass of uvicorn's HTTP protocol (httptools or h11, whichever uvicorn would pick) that adds:

- a header deadline: a request's headers must be complete ``header_timeout_s`` after the
  connection opens (or, on a kept-alive connection, after the first byte of the request), and
  fit in ``MAX_HEADER_BYTES``; otherwise 408 (431) and the connection is closed;
- a body deadline: the whole body must arrive within ``body_timeout_s`` of the end of the
  headers (one deadline for the body, not per byte, so a trickle cannot stretch it); else 408;
- a per-client limit on *slow* connections, those still sending a request (or opened and
  silent) ``SLOW_AFTER_S`` after starting it: past ``max_connections_per_client`` of them from
  one address, that address's oldest is answered 429 and closed. Requests in progress, idle
  keep-alive connections, WebSockets and a burst of fresh connections (a client pool opening
  64 sessions at once; its requests arrive in milliseconds) are not counted, so many honest
  sessions from one address (a NAT, loopback in the tests) are fine;
- a connection cap (``Limits.connection_limit``) on connections that have sent a whole
  request: in progress, idle keep-alive, or WebSocket. Unfinished ones, bounded by the two
  rules above, do not count, so they cannot fill it. A request that finds the server past
  the cap first closes idle keep-alive connections, oldest first; if that is not enough it
  is answered 503, unless it is ``GET /health``, which is always answered.

Every refusal is JSON ``{"detail": ...}`` saying what to do, with ``Connection: close``.
After a refusal the server half-closes and reads (and drops) what the client still sends for
up to ``LINGER_S``, so the client reads the answer instead of a connection reset.
WebSocket upgrades are guarded until their headers are complete; after that the session
limits apply (``max_sessions``, idle sessions reaped) and uvicorn's ping timeout.
The client address is the TCP peer: behind a reverse proxy every client shares the proxy's,
and the proxy should enforce these limits instead.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from stratagem.server.protocol import dumps
from stratagem.server.sessions import Limits

MAX_HEADER_BYTES = 64 * 1024  # h11 alone stops at 16 KiB; httptools has no limit of its own
LINGER_S = 2.0
SLOW_AFTER_S = 1.0  # an honest client sends its request within milliseconds of connecting
SETTLE_S = 0.01  # a due timer waits this long more, so the loop reads what has arrived (see ``later``)
HEALTH_METHODS = ("GET", "HEAD")

# A connection's phase: sending headers, sending a body, waiting for its response, idle
# between requests (keep-alive), handed to the WebSocket protocol, or being closed by us.
HEADERS, BODY, BUSY, IDLE, UPGRADED, CLOSING = "headers", "body", "busy", "idle", "upgraded", "closing"


def response_bytes(status: int, detail: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with a JSON body, written straight to the transport."""
    body = dumps({"detail": detail})
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ConnectionGuard:
    """What the connections of one server share: who is unfinished, per address; who is idle."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.unfinished: set[Any] = set()  # still sending a request (or silent): not counted against the cap
        self.slow: dict[str, dict[Any, None]] = {}  # address -> its slow unfinished connections, oldest first
        self.idle: dict[Any, None] = {}  # keep-alive connections between requests, oldest first
        self.closing: set[Any] = set()  # refused or shed, not yet gone: not counted against the cap
        self.refused: Counter[str] = Counter()  # reason -> how many, for operators and tests

    def held(self, connections: set[Any]) -> int:
        """Connections counted against the cap (uvicorn's set holds HTTP and WebSocket ones)."""
        return len(connections) - len(self.closing) - len(self.unfinished)

    def add_slow(self, conn: Any) -> None:
        mine = self.slow.setdefault(conn.peer, {})
        mine[conn] = None
        limit = self.limits.max_connections_per_client
        while len(mine) > limit:
            oldest = next(iter(mine))
            del mine[oldest]  # first: whatever refuse does, the loop ends
            oldest.refuse(
                429,
                f"too many slow requests from {conn.peer}: at most {limit} connections from one address may take "
                f"over {SLOW_AFTER_S:g} s to send a request, and this one was the oldest; send each request whole "
                "and promptly, and reuse connections rather than opening many",
                "per_client",
                retry_after=1,
            )
        if not mine:
            self.slow.pop(conn.peer, None)

    def forget(self, conn: Any) -> None:
        """``conn`` is no longer unfinished (its request arrived, or it is closing)."""
        self.unfinished.discard(conn)
        mine = self.slow.get(conn.peer)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.slow[conn.peer]
        self.idle.pop(conn, None)

    def make_room(self, connections: set[Any]) -> None:
        """Past the cap, close idle keep-alive connections (oldest first), as HTTP lets a server do."""
        while self.held(connections) > self.limits.connection_limit and self.idle:
            oldest = next(iter(self.idle))
            del self.idle[oldest]  # first: whatever shed does, the loop ends
            oldest.shed()


class GuardedProtocol:
    """Mixed in before uvicorn's H11Protocol or HttpToolsProtocol; ``guard`` is set per server."""

    guard: ConnectionGuard
    # Provided by the uvicorn protocol:
    app: Any
    client: tuple[str, int] | None
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    root_path: str
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inner_app, self.app = self.app, self.admit
        self.peer = "local"
        self.phase = HEADERS
        self.header_bytes = 0
        self.got_bytes = False
        self.seen_cycle: Any = None
        self.timers: dict[str, asyncio.TimerHandle] = {}  # "deadline" (headers or body), "slow", "linger"

    # --- uvicorn's protocol interface ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        if self.client:
            self.peer = self.client[0]
        self.watch_headers()

    def data_received(self, data: bytes) -> None:
        if self.phase == CLOSING:
            return  # refused: read and drop what the client still sends, until it closes or LINGER_S
        starting = self.phase == IDLE  # the first bytes of a request on a kept-alive connection
        if starting:
            self.phase, self.header_bytes = HEADERS, 0
            self.guard.idle.pop(self, None)
        if self.phase == HEADERS:
            self.got_bytes = True
            self.header_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        self.sync()
        if self.phase == HEADERS:  # the request is not all here: its deadline runs from now
            if starting:
                self.watch_headers()
            if self.header_bytes > MAX_HEADER_BYTES:
                self.refuse(431, f"request headers larger than {MAX_HEADER_BYTES} bytes", "header_size")

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self.sync()

    def shutdown(self) -> None:
        if self.phase in (HEADERS, BODY, CLOSING):  # the server is stopping: no request to finish, no lingering
            self.transport.close()
        else:
            super().shutdown()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel("deadline", "slow", "linger")
        self.guard.forget(self)
        self.guard.closing.discard(self)
        super().connection_lost(exc)  # type: ignore[misc]

    # --- phases --------------------------------------------------------------------------
    def watch_headers(self) -> None:
        self.later("deadline", self.guard.limits.header_timeout_s, self.expire)
        self.mark_unfinished()

    def mark_unfinished(self) -> None:
        self.guard.idle.pop(self, None)
        if self not in self.guard.unfinished:
            self.guard.unfinished.add(self)
            self.later("slow", SLOW_AFTER_S, self.became_slow)

    def became_slow(self) -> None:
        if self.phase in (HEADERS, BODY) and not self.transport.is_closing():
            self.guard.add_slow(self)

    def sync(self) -> None:
        """Follow uvicorn's request cycle: a new cycle means headers complete; then body, response."""
        if self.phase in (CLOSING, UPGRADED) or self.transport.is_closing():
            return
        if self.transport.get_protocol() is not self:  # handed over to the WebSocket protocol
            self.phase = UPGRADED
            self.done_sending()
            return
        cycle = self.cycle
        if cycle is not self.seen_cycle:  # a request's headers are complete
            self.seen_cycle = cycle
            self.phase = BODY
            if cycle.more_body:  # and its body is not: the body's deadline runs from now
                self.mark_unfinished()
                self.later("deadline", self.guard.limits.body_timeout_s, self.expire)
        if self.phase == BODY and not cycle.more_body:
            self.phase = BUSY
            self.done_sending()
        if self.phase == BUSY and cycle.response_complete:
            self.phase = IDLE  # uvicorn's keep-alive timeout is in charge until the next byte
            self.guard.idle[self] = None

    def later(self, name: str, delay: float, action: Any) -> None:
        """Run ``action`` after ``delay`` and then after the loop has read the sockets once more.

        uvloop runs due timers before it polls sockets, so after a stall (a GC pause, a busy
        machine) a deadline would fire on a request whose bytes have arrived but are not yet
        read; the short second wait lets them be read first.
        """
        self.cancel(name)

        def due() -> None:
            self.timers[name] = self.loop.call_later(SETTLE_S, fire)

        def fire() -> None:
            del self.timers[name]
            action()

        self.timers[name] = self.loop.call_later(delay, due)

    def cancel(self, *names: str) -> None:
        for name in names:
            handle = self.timers.pop(name, None)
            if handle is not None:
                handle.cancel()

    def done_sending(self) -> None:
        self.cancel("deadline", "slow")
        self.guard.forget(self)

    def expire(self) -> None:
        limits = self.guard.limits
        if self.phase == HEADERS:
            self.refuse(
                408,
                f"the request headers did not arrive within {limits.header_timeout_s:g} s; "
                "send the whole request at once",
                "header_timeout",
            )
        elif self.phase == BODY:
            self.refuse(
                408,
                f"the request body did not arrive within {limits.body_timeout_s:g} s of its headers; "
                "send the whole body promptly (its Content-Length must match what is sent)",
                "body_timeout",
            )

    # --- refusing --------------------------------------------------------------------------
    async def admit(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app uvicorn runs for each request: the connection cap, /health exempt."""
        guard, limit = self.guard, self.guard.limits.connection_limit
        is_health = scope["method"] in HEALTH_METHODS and scope["path"] == self.root_path + "/health"
        if not is_health:
            guard.make_room(self.connections)
        held = guard.held(self.connections)
        if held > limit and not is_health:
            guard.refused["capacity"] += 1
            detail = (
                f"server at its connection limit: {held} connections open, the limit is {limit}; retry in a few "
                "seconds (GET /health is answered even now)"
            )
            body = dumps({"detail": detail})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.inner_app(scope, receive, send)

    def refuse(self, status: int, detail: str, reason: str, retry_after: int | None = None) -> None:
        """Answer ``status`` and close; the app, if it was reading the body, sees a disconnect.

        A connection that has not sent a byte of its request, or whose response already
        began, is closed without an answer: there is nothing to answer, or no way to.
        """
        if self.phase == CLOSING or self.transport.is_closing():
            self.done_sending()  # closing already (uvicorn's doing, if not ours): just forget it
            return
        cycle = self.cycle if self.phase == BODY else None
        if (self.phase == HEADERS and not self.got_bytes) or (cycle is not None and cycle.response_started):
            self.shed(reason)
            return
        if cycle is not None:  # the app may be waiting for the body: let it see the client go
            cycle.disconnected = True
            cycle.message_event.set()
        self.stop(reason)
        self.transport.write(response_bytes(status, detail, retry_after))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.transport.resume_reading()
            self.later("linger", LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def shed(self, reason: str = "idle") -> None:
        """Close without an answer: nothing was asked (idle, or silent), or the answer already began."""
        if self.phase == CLOSING or self.transport.is_closing():
            self.done_sending()
            return
        self.stop(reason)
        self.transport.close()

    def stop(self, reason: str) -> None:
        self.guard.refused[reason] += 1
        self.done_sending()
        self.guard.closing.add(self)
        self.phase = CLOSING


def guarded_protocol(limits: Limits, http: str = "auto") -> type[Any]:
    """A uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) with its own ConnectionGuard.

    ``http`` is uvicorn's name: "auto" (httptools when installed, else h11), "h11" or "httptools".
    """
    if http not in ("auto", "h11", "httptools"):
        raise ValueError(f"http must be 'auto', 'h11' or 'httptools', got {http!r}")
    base = import_from_string(HTTP_PROTOCOLS[http])
    return type(f"Guarded{base.__name__}", (GuardedProtocol, base), {"guard": ConnectionGuard(limits)})
