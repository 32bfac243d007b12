"""The episode recording format: what ``stratagem play --record DIR`` writes and the viewer reads.

One file per episode, JSON lines, gzip-compressed when the name ends in ``.gz`` (the runner
writes ``<program hash>-seed<seed>.jsonl.gz``). Every line is one JSON object:

1. the header, first line::

       {"format": "stratagem-replay", "version": 1, "env": "2048", "params": {...},
        "seed": 7, "program": "3f2a9c01b6de", "created": "2026-11-23T10:00:00+00:00"}

2. one line per step, the reset first (``step`` 0, ``action`` null)::

       {"step": 0, "action": null, "reward": null, "done": false, "observation": {...}}
       {"step": 1, "action": {"action_id": 3}, "reward": 4.0, "done": false, "observation": {...}}

   ``observation`` is the environment's observation without ``reward``/``done``/``metadata``
   (those are the step's own keys): for 2048 it holds ``board`` (4x4 tile values), ``score``,
   ``max_tile``, ``won``, ``legal_actions`` and ``text``, enough to redraw the position.

3. the result, last line, once the episode is over::

       {"end": {"score": 2484.0, "moves": 211, "won": false, "max_tile": 256,
                "error": null, "message": ""}}

   ``error`` is null for a game played to its end, else the kind that stopped it
   (``exception``, ``illegal_move``, ``timeout``, ``memory``, ``forbidden``).

Lines are flushed as they are written, so a file cut off by a killed run still replays up to
its last whole step: ``read_recording`` keeps the whole lines before a torn last one and
reports ``end`` as None. Anything else malformed raises ``RecordingError`` naming the file and
the line.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import orjson

FORMAT = "stratagem-replay"
VERSION = 1


class RecordingError(ValueError):
    """A recording that cannot be read; the message names the file and the line."""


@dataclass
class Recording:
    header: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None  # None: the file stops before the episode's result
    path: Path | None = None


def recording_path(directory: str | Path, program: str, seed: int) -> Path:
    return Path(directory) / f"{program}-seed{seed}.jsonl.gz"


def _open(path: Path, mode: str) -> IO[bytes]:
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


class RecordingWriter:
    """Writes one episode; each line is flushed so a killed run leaves a readable prefix."""

    def __init__(self, path: str | Path, *, env: str, seed: int, program: str, params: dict[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _open(self.path, "wb")
        self._steps = 0
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._write({"format": FORMAT, "version": VERSION, "env": env, "params": params or {}, "seed": seed,
                     "program": program, "created": created})  # fmt: skip

    def step(
        self, action: dict[str, Any] | None, reward: float | None, done: bool, observation: dict[str, Any]
    ) -> None:
        self._write({"step": self._steps, "action": action, "reward": reward, "done": done,
                     "observation": observation})  # fmt: skip
        self._steps += 1

    def close(self, end: dict[str, Any] | None = None) -> None:
        if end is not None:
            self._write({"end": end})
        self._file.close()

    def _write(self, line: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(line) + b"\n")
        self._file.flush()


def read_recording(path: str | Path) -> Recording:
    """Read one episode; a torn last line (a run killed mid-write) is dropped, nothing else is forgiven."""
    path = Path(path)
    try:
        with _open(path, "rb") as file:
            raw = _read_all(file)
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such recording") from None
    except gzip.BadGzipFile:
        raise RecordingError(f"{path}: not a gzip file; name it without .gz if it is plain JSON lines") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read: {exc}") from None
    lines = raw.split(b"\n")
    torn = lines.pop() if lines else b""  # bytes after the last newline: a line cut off mid-write
    if not lines and not torn:
        raise RecordingError(f"{path}: empty file; a recording starts with a header line")
    rows: list[Any] = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{path}, line {number}: not JSON ({exc})") from None
    if not rows:
        raise RecordingError(f"{path}, line 1: the header line is incomplete")
    header = rows[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f'{path}, line 1: not a stratagem recording (no "format": {FORMAT!r} header)')
    if header.get("version") != VERSION:
        raise RecordingError(
            f"{path}, line 1: recording format version {header.get('version')!r}; "
            f"this stratagem reads version {VERSION}"
        )
    recording = Recording(header=header, path=path)
    for number, row in enumerate(rows[1:], start=2):
        if recording.end is not None:
            raise RecordingError(f"{path}, line {number}: a line after the episode's end line")
        if isinstance(row, dict) and isinstance(row.get("end"), dict):
            recording.end = row["end"]
        elif (
            isinstance(row, dict)
            and row.get("step") == len(recording.steps)
            and isinstance(row.get("observation"), dict)
        ):
            recording.steps.append(row)
        else:
            raise RecordingError(
                f"{path}, line {number}: expected step {len(recording.steps)} "
                '(an object with "step" and "observation") or the end line'
            )
    return recording


def _read_all(file: IO[bytes]) -> bytes:
    """Everything readable; a gzip stream cut off mid-member yields what it decoded so far."""
    out = io.BytesIO()
    try:
        while chunk := file.read1(1 << 16):  # read1: what is decoded so far survives a cut-off stream
            out.write(chunk)
    except EOFError:
        pass
    except gzip.BadGzipFile:
        if not out.tell():
            raise
    return out.getvalue()
