"""An animated GIF written one frame at a time, so an export's memory does not grow with its length.

Pillow writes animations only from a list of every frame (``save_all``), which for a long Atari
episode is gigabytes. Here each frame is encoded on its own: the rectangle that changed since
the previous frame is cut out, quantized to its own 256-colour palette (a local colour table),
LZW-compressed by Pillow as a one-frame GIF, and its image block is appended to the file behind
a graphic control extension that carries the delay. Frames are drawn over the previous one
(disposal 1), which is how the changed rectangles add up to the full picture.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

TRANSPARENT = 255  # the palette index of "as in the previous frame"; quantizing leaves it free
_LOOP_FOREVER = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"


class GifStream:
    """``write(rgb)`` per frame, then ``close()``; frames are (height, width, 3) uint8 of one size."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        self.delay = max(2, round(100 / fps))  # in 1/100 s, as GIF stores it
        self.frames = 0
        self._previous: np.ndarray | None = None
        self._file: BinaryIO = open(path, "wb")  # closed by close()
        # Header, logical screen (no global colour table: every frame brings its own), loop forever.
        self._file.write(b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + _LOOP_FOREVER)

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"frame of shape {rgb.shape}; this GIF's frames are {(self.height, self.width, 3)}")
        x0, y0, x1, y1, same = self._changed(rgb)
        self._previous = rgb.copy()
        crop = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        quantized = crop.quantize(255, Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        indices, palette = np.array(quantized, dtype=np.uint8), quantized.getpalette() or []
        if same is not None:
            indices[same] = TRANSPARENT  # unchanged pixels: long runs of one index, which LZW packs well
        frame = Image.fromarray(indices, "P")
        frame.putpalette((palette + [0] * 768)[:768])
        size_bits, table, image_data = _encode(frame)
        flags = 1 << 2 | (1 if same is not None else 0)  # disposal 1 (keep), transparency on
        control = b"\x21\xf9\x04" + struct.pack("<BHB", flags, self.delay, TRANSPARENT) + b"\x00"
        descriptor = b"\x2c" + struct.pack("<HHHHB", x0, y0, x1 - x0, y1 - y0, 0x80 | size_bits)
        self._file.write(control + descriptor + table + image_data)
        self.frames += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.write(b"\x3b")
            self._file.close()

    def _changed(self, rgb: np.ndarray) -> tuple[int, int, int, int, np.ndarray | None]:
        """The box (x0, y0, x1, y1) around what differs from the previous frame, and which pixels in it do not."""
        if self._previous is None:
            return 0, 0, self.width, self.height, None
        diff = (rgb != self._previous).any(axis=-1)
        rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
        if not len(rows):
            return 0, 0, 1, 1, np.ones((1, 1), dtype=bool)  # an unchanged frame still takes its time on screen
        x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        return x0, y0, x1, y1, ~diff[y0:y1, x0:x1]


def _encode(image: Image.Image) -> tuple[int, bytes, bytes]:
    """(table size bits, colour table, LZW data with its sub-blocks) of a palette image, from Pillow's GIF.

    A table holds ``2 ** (size_bits + 1)`` colours.
    """
    buffer = io.BytesIO()
    image.save(buffer, "GIF", optimize=False, interlace=False)  # rows in order: the descriptor says so
    data = buffer.getvalue()
    flags = data[10]
    size_bits = flags & 7
    table_end = 13 + (3 << (size_bits + 1) if flags & 0x80 else 0)
    palette, pos = data[13:table_end], table_end
    while data[pos] == 0x21:  # extensions Pillow may add (none carry the picture): skip
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    if data[pos] != 0x2C:
        raise ValueError("unexpected GIF block from Pillow")
    local = data[pos + 9]
    pos += 10
    if local & 0x80:  # a local table instead of a global one
        size_bits = local & 7
        palette_end = pos + (3 << (size_bits + 1))
        palette, pos = data[pos:palette_end], palette_end
    end = pos + 1  # the LZW minimum code size, then sub-blocks up to a zero-length one
    while data[end]:
        end += data[end] + 1
    return size_bits, palette, data[pos : end + 1]
