"""A blocking WebSocket connection on the ``websockets`` library's sans-I/O protocol.

``websockets.sync`` reads the socket on a background thread, so every reply crosses a
thread boundary: 100-250 µs on a 2-core machine, more than the server's whole step. An
environment client only ever waits for the reply to the message it just sent, so it can
drive the same protocol object from the calling thread over a plain socket instead.
"""

from __future__ import annotations

import socket
from collections import deque
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


class BlockingWebSocket:
    def __init__(self, url: str, timeout_s: float = 30.0, max_size: int | None = None) -> None:
        if urlsplit(url).scheme != "ws":
            raise ValueError(f"the blocking client speaks ws:// only, got {url!r} (use AsyncEnvClient for wss://)")
        uri = parse_uri(url)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol = ClientProtocol(uri, max_size=max_size)
        self._events: deque = deque()
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = self._next_event()
        if not isinstance(response, Response) or self.protocol.state is not State.OPEN:
            self.sock.close()
            raise ConnectionError(f"WebSocket handshake with {url} failed: {self.protocol.handshake_exc}")

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def recv(self) -> str:
        """The next text or binary message (pings are answered by the protocol on the way)."""
        parts: list[bytes] = []
        while True:
            frame = self._next_event()
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                parts.append(frame.data)
                if frame.fin:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(1000)
                self._flush()
        except OSError:
            pass
        finally:
            self.sock.close()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _next_event(self):
        while not self._events:
            if self.protocol.state is State.CLOSED:
                raise self.protocol.close_exc
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self._events.extend(self.protocol.events_received())
            self._flush()  # pongs and close replies
        return self._events.popleft()
