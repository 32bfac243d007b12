"""Screens as ``Frame``s: PNG written and read with zlib alone (no image library), or raw bytes."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from stratagem.envs.atari.models import Frame


def encode_frame(rgb: np.ndarray, encoding: str = "png") -> Frame:
    """An RGB screen as a ``Frame``: PNG (lossless, 1-2 kB for Atari) or raw bytes (134 kB in base64)."""
    if encoding == "raw":
        data = rgb.tobytes()
    else:
        data = encode_png(rgb)
    return Frame(encoding=encoding, shape=list(rgb.shape), data=base64.b64encode(data).decode("ascii"))


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG: every row with filter 0, one zlib stream (no dependency beyond zlib)."""
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 1:] = rgb.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + \
        _chunk(b"IEND", b"")  # fmt: skip


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def decode_frame(frame: Frame | dict[str, Any]) -> np.ndarray:
    """A ``Frame`` (or its JSON dict) as a uint8 array of its shape; reads the PNGs ``encode_png`` writes."""
    frame = frame if isinstance(frame, Frame) else Frame.model_validate(frame)
    data, shape = base64.b64decode(frame.data), tuple(frame.shape)
    if frame.encoding == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)
    pos, idat = 8, b""
    while pos < len(data):
        (length,), tag = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if tag == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(shape[0], -1)
    if rows[:, 0].any():
        raise ValueError("this PNG uses row filters; decode_frame reads only the unfiltered PNGs encode_png writes")
    return rows[:, 1:].reshape(shape).copy()
