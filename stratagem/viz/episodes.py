"""Recorded episodes as the viewer and the exporters see them: found on disk, sliced, paired.

``read_recording`` (``recording.py``) reads a file and owns every rule about bad files; this
module adds what drawing a step needs and the recording does not hold directly: the running
score, a readable name for the action taken, the Atari screen, where the episode ended. The
window and the exporters both take their steps from here, so they draw the same thing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stratagem.viz.atari_screens import AtariScreens
from stratagem.viz.recording import Recording, RecordingError, read_recording

SUFFIXES = (".jsonl", ".jsonl.gz")
MOVES_2048 = ("up", "right", "down", "left")  # envs.game2048.ACTION_NAMES, without importing OpenSpiel


def kind_of(observation: dict[str, Any]) -> str:
    """How to draw an observation: '2048', 'atari', 'openspiel', or 'text' for anything else."""
    board = observation.get("board")
    if isinstance(board, list) and board and all(isinstance(row, list) for row in board) and "score" in observation:
        return "2048"
    if "ram" in observation and "action_names" in observation:
        return "atari"
    if isinstance(observation.get("observation_string"), str):
        return "openspiel"
    return "text"


class Episode:
    """One recording, optionally a slice of its steps; ``step(i)`` is the dict ``render.render_step`` draws."""

    def __init__(self, recording: Recording, start: int = 0, end: int | None = None) -> None:
        steps = recording.steps
        if not steps:
            raise RecordingError(f"{recording.path}: no steps to replay (the file holds only its header)")
        last = len(steps) - 1
        if start > last:
            raise ValueError(f"--start {start} is past the end of {recording.path}: its steps are 0..{last}")
        self.recording, self.header, self.path = recording, recording.header, recording.path
        self.first, self.last = start, last if end is None else min(end, last)
        if self.last < self.first:
            raise ValueError(f"--end {end} is before --start {start}; give --end >= --start")
        self.kind = kind_of(steps[0]["observation"])
        self.screens = AtariScreens(recording) if self.kind == "atari" else None
        self.totals = _running_totals(steps)

    def __len__(self) -> int:
        return self.last - self.first + 1

    @property
    def seed(self) -> Any:
        return self.header.get("seed")

    def step(self, i: int) -> dict[str, Any]:
        """Step ``first + i`` with the running total, the action's name, the screen, the episode's result (on every
        step) and, on its last step, its end."""
        n = self.first + i
        steps = self.recording.steps
        step = dict(steps[n])
        step["total"] = self.totals[n]
        step["last"] = len(steps) - 1
        step["action_label"] = self.action_label(i)
        step["result"] = self.recording.end  # the episode's result (None if cut off): every panel's label shows it
        if n == len(steps) - 1:
            step["end"] = self.recording.end if self.recording.end is not None else {"cut": True}
        if self.screens is not None:
            step["screen"] = self.screens.screen(n)
            step["note"] = self.screens.note if step["screen"] is None else None
        return step

    def action_label(self, i: int) -> str | None:
        """The name of the action that led to step ``first + i`` (None at the reset); cheap: no screen is rebuilt,
        so a whole episode's log can be listed without replaying an emulator."""
        n = self.first + i
        steps = self.recording.steps
        return _action_label(self.kind, steps[n].get("action"), steps[n - 1] if n else None)

    @property
    def note(self) -> str | None:
        """Anything the viewer should tell the user about this episode's screens."""
        return self.screens.note if self.screens is not None else None


def find_recordings(path: str | Path) -> list[Path]:
    """A recording file as itself; a directory as its recordings, in seed order."""
    path = Path(path)
    if path.is_dir():
        found = sorted((p for p in path.iterdir() if p.name.endswith(SUFFIXES)), key=_natural)
        if not found:
            raise ValueError(f"{path}: no recordings (*.jsonl.gz) in this directory; "
                             f"record some with: stratagem play ENV --strategy FILE --record {path}")  # fmt: skip
        return found
    if not path.exists():
        raise RecordingError(f"{path}: no such recording or directory")
    return [path]


def load_items(paths: list[Path], *, side_by_side: bool = False, start: int = 0,
               end: int | None = None) -> list[tuple[Episode, ...]]:  # fmt: skip
    """What to show, in order: one episode per item, or with ``side_by_side`` two episodes of one seed."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError("--start and --end are step numbers, >= 0")
    if not paths:
        raise ValueError("give a recording (.jsonl.gz) or a directory of them")
    if not side_by_side:
        return [(Episode(read_recording(f), start, end),) for p in paths for f in find_recordings(p)]
    if len(paths) != 2:
        raise ValueError(f"side by side compares two recordings (or two directories), got {len(paths)} paths")
    left = [Episode(read_recording(f), start, end) for f in find_recordings(paths[0])]
    right = {e.seed: e for e in (Episode(read_recording(f), start, end) for f in find_recordings(paths[1]))}
    envs = {left[0].header.get("env"), next(iter(right.values())).header.get("env")}
    if len(envs) > 1:
        raise ValueError(f"side by side needs recordings of one environment; {paths[0]} and {paths[1]} hold "
                         f"{' and '.join(map(repr, sorted(map(str, envs))))}")  # fmt: skip
    pairs = [(e, right[e.seed]) for e in left if e.seed in right]
    if not pairs:
        seeds_a, seeds_b = sorted({str(e.seed) for e in left}), sorted(map(str, right))
        raise ValueError(f"side by side plays two programs on the same seed, but {paths[0]} has seed(s) "
                         f"{', '.join(seeds_a[:8])} and {paths[1]} has {', '.join(seeds_b[:8])}; record both "
                         "with the same --seed (stratagem play ... --seed N --record DIR)")  # fmt: skip
    return pairs


def _running_totals(steps: list[dict[str, Any]]) -> list[float]:
    totals, total = [], 0.0
    for step in steps:
        reward = step.get("reward")
        total += reward if isinstance(reward, (int, float)) else 0.0
        totals.append(total)
    return totals


def _action_label(kind: str, action: Any, before: dict[str, Any] | None) -> str | None:
    """The action taken to reach this step, as a player would name it (None at the reset)."""
    if not isinstance(action, dict):
        return None
    if kind == "2048" and action.get("action_id") in range(4):
        return MOVES_2048[action["action_id"]]
    if kind == "atari":
        if isinstance(action.get("action"), str):
            return action["action"].upper()
        names = before["observation"].get("action_names", []) if before else []
        if isinstance(action.get("action_id"), int) and action["action_id"] < len(names):
            return names[action["action_id"]]
    if kind == "openspiel":
        if isinstance(action.get("action_name"), str):
            return action["action_name"]
        seen = before["observation"] if before else {}
        legal = seen.get("legal_actions", [])
        names = {a.get("id"): a.get("name") for a in legal if isinstance(a, dict)}  # recorded before OpenEnv's shape
        names.update(zip(legal, seen.get("legal_action_names", []), strict=False))  # ids, their names beside them
        if action.get("action_id") in names:
            return str(names[action["action_id"]])
    text = json.dumps(action, separators=(",", ":"))
    return text if len(text) <= 60 else text[:59] + "…"


def _natural(path: Path) -> list[Any]:
    """'p-seed2' before 'p-seed10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
