"""Frames between a parent and a sandboxed worker: a 4-byte big-endian length, then that many bytes of JSON.

The two sides trust differently. The worker trusts its parent, so it reads and writes with
plain blocking calls (``send``, ``receive``). The parent trusts nothing the worker sends: a
``FrameReader`` never blocks (it takes what the socket has and keeps a partial frame for
later, so a half-written frame cannot hang it), checks a frame's declared length against its
cap before reading a byte of it (so a huge frame costs nothing), and leaves deadlines to its
caller, who knows what the worker was asked and for how long.
"""

from __future__ import annotations

import os
import socket
import struct

HEADER = struct.Struct("!I")
CHUNK = 1 << 16
POLL_BYTES = 1 << 18  # read at most this much per poll: a flood of frames cannot hold the parent in one call


class ChannelClosed(Exception):
    """The other side closed its end (a worker that exited or died)."""


class FrameTooLarge(Exception):
    """A frame declared a length over the cap: out of protocol."""


def send(fd: int, payload: bytes) -> None:
    """Write one frame, whole (blocking)."""
    data = memoryview(HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def receive(fd: int, max_bytes: int) -> bytes:
    """Read one frame (blocking). Raises ChannelClosed at end of stream, FrameTooLarge over the cap."""
    (size,) = HEADER.unpack(_read_exactly(fd, HEADER.size))
    if size > max_bytes:
        raise FrameTooLarge(f"a frame of {size} bytes, over the cap of {max_bytes}")
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            raise ChannelClosed("the other side closed the channel")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class FrameReader:
    """The parent's end of a channel: non-blocking, capped. ``poll`` returns the frames complete so far."""

    def __init__(self, sock: socket.socket, max_bytes: int) -> None:
        sock.setblocking(False)
        self.sock, self.max_bytes = sock, max_bytes
        self._buffer = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self) -> list[bytes]:
        """The frames completed by what the socket holds now (at most POLL_BYTES of it), without
        blocking; raises ChannelClosed once the stream ended (after handing out the frames before the
        end) and FrameTooLarge at a frame over the cap."""
        frames: list[bytes] = []
        budget = POLL_BYTES
        while budget > 0:
            try:
                data = self.sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                return frames
            except OSError as exc:  # a reset connection reads as its end
                data, self.closed = b"", True
                if not frames:
                    raise ChannelClosed(str(exc)) from None
            if not data:
                self.closed = True
                if frames:
                    return frames
                raise ChannelClosed("the worker closed its channel")
            budget -= len(data)
            self._buffer += data
            frames.extend(self._complete())
        return frames

    def _complete(self) -> list[bytes]:
        frames, buffer, start = [], self._buffer, 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > self.max_bytes:
                raise FrameTooLarge(f"the worker sent a frame of {size} bytes, over the cap of {self.max_bytes}")
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]  # once per read: many small frames cost no repeated shifting
        return frames

    def send(self, payload: bytes, timeout_s: float = 10.0) -> None:
        """Write one frame to the worker, giving up after ``timeout_s`` (a worker that stopped reading)."""
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(HEADER.pack(len(payload)) + payload)
        finally:
            self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()
