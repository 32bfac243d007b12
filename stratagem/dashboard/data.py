"""A run directory as the dashboard reads it: read-only, tolerant, and cheap to ask again.

The trainer may be writing the directory from another process while the page polls it, so every
reader here takes what is whole and skips the rest: a torn last line of a JSON-lines file (a line
being appended, or one a killed run left half-written) is skipped, a missing file is an empty
section, a file replaced mid-read (``replays/`` is cleared and re-recorded when the best program
changes) is read again next time. Files are parsed again only when their size or mtime changed, so
polling an idle run costs a ``stat`` per file. Nothing here opens a file for writing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import yaml

from stratagem.rl.rundir import RunDir
from stratagem.viz.episodes import SUFFIXES, Episode
from stratagem.viz.plots import panels, read_metrics
from stratagem.viz.recording import RecordingError, read_recording

RUN_FILES = ("config.yaml", "metrics.jsonl", "completions", "best.json", "replays")
STEP_FILE = re.compile(r"^step-(\d+)\.jsonl$")


class NotFound(LookupError):
    """What a request asked for is not in the run (yet): a step with no completions, an unknown replay."""


def check_run_dir(path: Path) -> Path:
    """``path`` if it looks like a training run's directory; else a ValueError that says what is wrong."""
    if not path.exists():
        raise ValueError(f"{path}: no such directory; give a run directory (what `stratagem train --out DIR` made)")
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory; give a run directory (what `stratagem train --out DIR` made)")
    if not any((path / name).exists() for name in RUN_FILES):
        raise ValueError(f"{path}: not a stratagem run directory (no {', '.join(RUN_FILES)}); "
                         "give what `stratagem train --out DIR` made")  # fmt: skip
    return path


def parse_jsonl(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of whole lines; anything else (a torn line, a non-object) is skipped, not fatal.

    orjson first (fast); json for the lines it refuses, which may hold NaN or Infinity as ``json.dumps``
    writes them."""
    rows = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None, all the way down: JSON (and JavaScript's parser) has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


class _Cached:
    """One parsed file per path, parsed again only when its (size, mtime) changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, parse: Callable[[Path], Any], missing: Any = None) -> Any:
        try:
            stat = path.stat()
        except OSError:  # absent, or gone between listing and reading: an empty section, not an error
            return missing
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        try:
            value = parse(path)
        except FileNotFoundError:
            return missing
        with self._lock:
            self._entries[path] = (key, value)
            if len(self._entries) > 256:  # a long run's many step files: keep the newest few parsed
                self._entries.pop(next(iter(self._entries)))
        return value


class RunData:
    """Everything the page shows, read from one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.run = RunDir(self.path)  # its layout, one place; only its paths are used here, never its writers
        self._cache = _Cached()

    # --- the config ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """config.yaml as a dict; empty when it is missing or unreadable (the rest of the page still works)."""

        def parse(path: Path) -> dict[str, Any]:
            try:
                value = yaml.safe_load(path.read_text())
            except (UnicodeDecodeError, yaml.YAMLError):
                return {}
            return value if isinstance(value, dict) else {}

        return self._cache.get(self.path / "config.yaml", parse, {})

    def env(self) -> tuple[str, dict[str, Any]]:
        """The run's environment and its parameters (``env: 2048`` in YAML is the name '2048', not a number)."""
        config = self.config()
        params = config.get("env_params")
        return str(config.get("env") or "2048"), dict(params) if isinstance(params, dict) else {}

    # --- metrics -------------------------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        """One row per step, in step order; a step logged twice (a resumed run) keeps its later line; lines that
        are not a step's JSON object are skipped (a live run's file is read while it grows)."""

        def parse(path: Path) -> list[dict[str, Any]]:
            return [finite(row) for row in read_metrics(path, lenient=True)]  # as `stratagem plot` reads it

        return self._cache.get(self.run.metrics, parse, [])

    def curves(self) -> dict[str, Any]:
        """The metrics and the panels ``stratagem plot`` would draw from them (``viz.plots.panels``), so the page
        and curves.png show the same charts."""
        rows = self.metrics()
        return {"rows": rows, "panels": [asdict(panel) for panel in panels(rows)] if rows else []}

    # --- completions ---------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The steps that have a completions file, in order."""
        try:
            names = [p.name for p in self.run.completions.iterdir()]
        except OSError:
            return []
        return sorted(int(m.group(1)) for m in map(STEP_FILE.match, names) if m)

    def completions(self, step: int) -> list[dict[str, Any]]:
        """Step ``step``'s samples, each with its index in the file (what a comparison names it by)."""

        def parse(path: Path) -> list[dict[str, Any]]:
            return [{"index": i, **finite(row)} for i, row in enumerate(parse_jsonl(path.read_bytes()))]

        rows = self._cache.get(self.run.completions / f"step-{step:06d}.jsonl", parse)
        if rows is None:
            steps = self.steps()
            have = f"it has steps {steps[0]}..{steps[-1]}" if steps else "it has none yet"
            raise NotFound(f"no completions for step {step} in this run; {have}")
        return rows

    def completion(self, step: int, index: int) -> dict[str, Any]:
        rows = self.completions(step)
        if not 0 <= index < len(rows):
            raise NotFound(f"step {step} has completions 0..{len(rows) - 1}, not {index}")
        return rows[index]

    # --- the best program ----------------------------------------------------------------------
    def best(self) -> dict[str, Any]:
        """best.json and best_strategy.py; either may be None (no program has run yet)."""

        def info(path: Path) -> dict[str, Any] | None:
            try:
                value = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):  # mid-replace on a filesystem without atomic rename
                return None
            return finite(value) if isinstance(value, dict) else None

        def source(path: Path) -> str | None:
            try:
                return path.read_text()
            except UnicodeDecodeError:
                return None

        return {"info": self._cache.get(self.path / "best.json", info),
                "source": self._cache.get(self.path / "best_strategy.py", source)}  # fmt: skip

    # --- replays -------------------------------------------------------------------------------
    def replay_paths(self) -> list[Path]:
        try:
            found = [p for p in self.run.replays.iterdir() if p.name.endswith(SUFFIXES)]
        except OSError:
            return []
        return sorted(found, key=_natural)

    def replays(self) -> list[dict[str, Any]]:
        """What the page lists of each recording: its seed, length, score, result; or why it cannot be shown."""
        listed = []
        for path in self.replay_paths():
            episode = self._cache.get(path, _episode)
            if episode is not None:  # None: gone since the listing (replays/ is being re-recorded)
                listed.append(_describe(path.name, episode))
        return listed

    def episode(self, name: str) -> Episode:
        """The recording ``name`` (a file name in replays/, nothing else) ready to draw."""
        path = self.run.replays / name
        if "/" in name or name.startswith(".") or not name.endswith(SUFFIXES) or not path.is_file():
            names = [p.name for p in self.replay_paths()]
            raise NotFound(f"no replay {name!r} in this run" + (f"; it has {', '.join(names)}" if names else
                                                                  "; it has none yet"))  # fmt: skip
        episode = self._cache.get(path, _episode)
        if episode is None:
            raise NotFound(f"replay {name!r} was replaced while being read; ask again")
        if isinstance(episode, str):
            raise NotFound(episode)
        return episode


def _episode(path: Path) -> Episode | str:
    """The recording as an Episode, or the reason it cannot be drawn (a file still being written has no steps)."""
    try:
        return Episode(read_recording(path))
    except (RecordingError, ValueError) as exc:
        return str(exc)


def _describe(name: str, episode: Episode | str) -> dict[str, Any]:
    if isinstance(episode, str):
        return {"name": name, "problem": episode}
    recording = episode.recording
    last = recording.steps[-1]["observation"]
    end = recording.end or {}
    header = episode.header
    return finite({"name": name, "seed": episode.seed, "program": header.get("program"), "env": header.get("env"),
                   "steps": len(episode), "score": end.get("score", last.get("score")), "won": end.get("won"),
                   "error": end.get("error"), "finished": recording.end is not None})  # fmt: skip


def _natural(path: Path) -> list[Any]:
    """'p-seed2' before 'p-seed10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
