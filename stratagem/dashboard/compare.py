"""Two programs of a run played on one seed, side by side: what the page's "compare" shows.

The programs come from the run (its best program, or any step's completion), so they are untrusted
code like every other: they play in the sandbox through ``agents.runner.Runner``, the trainer's own
path, with the run's environment and sandbox limits, an episode capped at ``EPISODE_S`` and one
comparison at a time (a page cannot queue up work). The recordings go to a temporary directory of
the dashboard's own, never into the run directory; the last ``KEEP`` comparisons are kept for the
page to step through, and all of them are deleted when the dashboard stops.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

from stratagem.dashboard.data import NotFound, RunData
from stratagem.viz.episodes import Episode
from stratagem.viz.recording import RecordingError, read_recording, recording_path

EPISODE_S = 30.0  # wall clock per episode of a comparison: a page's question, not a training run
KEEP = 6  # comparisons kept to step through; older ones are deleted
MAX_SEED = 2**53 - 1  # seeds travel through JavaScript, whose numbers are exact up to here
REFERENCE = re.compile(r"^(?:best|(\d+):(\d+))$")


class Busy(RuntimeError):
    """A comparison is being played already; the page should wait for it."""


class Comparisons:
    """Plays comparisons and keeps their episodes; ``close()`` ends the sandbox and deletes the recordings."""

    def __init__(self, data: RunData, allow_weaker_sandbox: bool = False) -> None:
        self.data = data
        self.allow_weaker_sandbox = allow_weaker_sandbox
        self._folder: Path | None = None  # made at the first comparison: most dashboards never play one
        self._playing = threading.Lock()
        self._runner: Any = None
        self._kept: dict[str, list[Episode]] = {}

    @property
    def folder(self) -> Path:
        """The comparisons' recordings; removed by ``close()``, or at exit if the server never got to it."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="stratagem-dashboard-"))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder

    def program(self, reference: str) -> tuple[str, str]:
        """(label, program text) for ``best`` or ``STEP:INDEX`` (a completion, as the completions table numbers it)."""
        match = REFERENCE.match(reference.strip()) if isinstance(reference, str) else None
        if match is None:
            raise ValueError(f"a program is 'best' or STEP:INDEX (e.g. 3:12, a completion of step 3), "
                             f"got {reference!r}")  # fmt: skip
        if match.group(1) is None:
            source = self.data.best()["source"]
            if source is None:
                raise NotFound("this run has no best program yet (best_strategy.py is written once a program has run)")
            return "best", source
        step, index = int(match.group(1)), int(match.group(2))
        text = self.data.completion(step, index).get("text")
        if not isinstance(text, str):
            raise NotFound(f"completion {step}:{index} holds no program text")
        return f"{step}:{index}", text

    def run(self, references: list[str], seed: int) -> dict[str, Any]:
        """Play the two programs on ``seed``; returns the comparison's id and, per program, how its game went."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer 0..{MAX_SEED}, got {seed!r}")
        if len(references) != 2:
            raise ValueError(f"a comparison is of two programs, got {len(references)}")
        programs = [self.program(reference) for reference in references]
        if not self._playing.acquire(blocking=False):
            raise Busy("a comparison is being played already; wait for it to finish")
        try:
            folder = self.folder / uuid.uuid4().hex[:12]
            results = self._runner_for_run().evaluate([text for _, text in programs], [seed], record=folder)
            sides, episodes = [], []
            for (label, _), result in zip(programs, results, strict=True):
                episode = self._episode(folder, result.sha, seed) if result.episodes else None
                if episode is not None:
                    episodes.append(episode)
                game = result.episodes[0] if result.episodes else None
                sides.append({"program": label, "sha": result.sha, "played": episode is not None,
                              "score": game.score if game else None, "won": game.won if game else None,
                              "moves": game.moves if game else None,
                              "error": (game.error if game else None) or result.error,
                              "message": ((game.message if game else "") or result.message)[:300]})  # fmt: skip
            self._keep(folder.name, episodes)
        finally:
            self._playing.release()
        frames = max((len(e) for e in episodes), default=0)
        return {"id": folder.name, "seed": seed, "sides": sides, "frames": frames}

    def episodes(self, comparison: str) -> list[Episode]:
        episodes = self._kept.get(comparison)
        if not episodes:
            raise NotFound(f"no comparison {comparison!r} with a recorded game: it was never played, is one of "
                           f"the older ones deleted (the last {KEEP} are kept), or neither program ran")  # fmt: skip
        return episodes

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _runner_for_run(self) -> Any:
        """The sandbox for the run's environment, started on the first comparison and kept for the next ones."""
        if self._runner is None:
            from stratagem.agents.runner import Limits, Runner

            config = self.data.config()
            env, params = self.data.env()

            def limit(key: str, default: float, kind: type) -> Any:
                value = config.get(key)
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                return kind(value) if ok else default

            defaults = Limits()
            limits = Limits(move_s=limit("move_timeout", defaults.move_s, float),
                            episode_s=min(limit("episode_timeout", EPISODE_S, float), EPISODE_S),
                            memory_mb=limit("memory_mb", defaults.memory_mb, int),
                            cpu_s=limit("cpu_seconds", defaults.cpu_s, float))  # fmt: skip
            self._runner = Runner(env, params, workers=2, limits=limits,
                                  allow_weaker_sandbox=self.allow_weaker_sandbox)  # fmt: skip
        return self._runner

    @staticmethod
    def _episode(folder: Path, sha: str | None, seed: int) -> Episode | None:
        try:
            return Episode(read_recording(recording_path(folder, sha or "", seed)))
        except (RecordingError, ValueError):  # no step recorded (the program failed before its first move)
            return None

    def _keep(self, comparison: str, episodes: list[Episode]) -> None:
        self._kept[comparison] = episodes
        while len(self._kept) > KEEP:
            oldest = next(iter(self._kept))
            del self._kept[oldest]
            shutil.rmtree(self.folder / oldest, ignore_errors=True)
