"""The run directory: everything a training run leaves behind, laid out for people and tools.

```
RUN_DIR/
  config.yaml            the exact config (``stratagem train --config RUN_DIR/config.yaml`` reruns it)
  sandbox.json           the sandbox's layers in force and missing on the machine that ran it (each start/resume)
  metrics.jsonl          one JSON line per step: reward (mean, std, per reward function), win rate, score, KL, ...
  tensorboard/           the same scalars as TensorBoard event files (``tensorboard --logdir RUN_DIR``)
  completions/           step-NNNNNN.jsonl: every sampled completion with its reward, parts and outcome
  best_strategy.py       the best program so far (``stratagem play ENV --strategy RUN_DIR/best_strategy.py``)
  best.json              its reward, step, hash (``sha``: the one ``play`` prints for best_strategy.py) and scores
  replays/               recordings of the best program's episodes (``viz/recording.py``)
  checkpoints/           step-NNNNNN/ (peft adapter + trainer state) and ``latest`` (checkpoint.py)
  adapter/               the final adapter in peft's format; merged/ too with ``save_merged``
  curves.png             the training curves (``viz/plots.py``), redrawn at each checkpoint and at the end
  best_episode.gif       the last moves of the best program's highest-scoring recorded episode (``viz/export.py``)
```
On resume, lines of ``metrics.jsonl`` past the checkpoint are dropped and TensorBoard purges
the same steps, so a resumed run's logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from stratagem.envs.spec import StrategySpec
    from stratagem.viz.recording import Recording

log = logging.getLogger(__name__)
BEST_EPISODE_GIF = "best_episode.gif"
GIF_FRAMES = 100  # a 2048 game runs to 1000+ moves: the GIF shows the last 100, the endgame and the result
GIF_WIDTH = 240  # pixels; still legible, and a third of the default's encoding time


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.completions = path / "completions"
        self.replays = path / "replays"
        self.checkpoints = path / "checkpoints"
        self.metrics = path / "metrics.jsonl"
        self._tensorboard: Any = None

    def create(self, config_yaml: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._atomic_write(self.path / "config.yaml", config_yaml)

    def record_sandbox(self, sandbox: dict[str, Any]) -> None:
        """Which sandbox layers confined this run's programs (a weaker sandbox is on record, not silent)."""
        self._atomic_write(self.path / "sandbox.json", json.dumps(sandbox, indent=2) + "\n")

    def tensorboard(self, purge_step: int | None = None) -> Any:
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)
        return self._tensorboard

    def log(self, metrics: dict[str, float]) -> None:
        with open(self.metrics, "ab") as handle:
            handle.write(orjson.dumps(metrics) + b"\n")
        writer = self.tensorboard()
        for name, value in metrics.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(name, value, metrics["step"])
        writer.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole line of metrics.jsonl (a line torn by a crash is skipped)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_bytes().splitlines():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return rows

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the steps a checkpoint covers; what came after it will be logged again."""
        kept = [row for row in self.read_metrics() if row.get("step", 0) <= last_step]
        self._atomic_write(self.metrics, "".join(orjson.dumps(row).decode() + "\n" for row in kept))  # as log() writes
        for late in self.completions.glob("step-*.jsonl"):
            if int(late.stem.split("-")[1]) > last_step:
                late.unlink()

    def write_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        self.completions.mkdir(parents=True, exist_ok=True)
        body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        self._atomic_write(self.completions / f"step-{step:06d}.jsonl", body.decode())

    def write_best(self, source: str, info: dict[str, Any], env: str, strategy: StrategySpec) -> tuple[str, str]:
        """best_strategy.py (``source`` under a header naming the command that plays it) and best.json (``info``),
        describing the same program: best.json's ``sha`` is the hash ``stratagem play ENV --strategy
        RUN_DIR/best_strategy.py`` prints, that of the file as written, header included (the hash of the program
        as the completion held it stays in ``info["completion_sha"]``). Returns (the file's text, that sha)."""
        from stratagem.agents.programs import ProgramError, load

        command = f"stratagem play {env} --strategy {self.path / 'best_strategy.py'}"
        header = (f'"""The best program of a stratagem run so far: step {info["step"]}, reward {info["reward"]:.3f}, '
                  f'mean score {info["mean_score"]:.0f}.\n\n    {command}\n"""\n\n')  # fmt: skip
        text = header + source.strip() + "\n"
        try:
            sha = load(text, strategy).sha  # exactly what play does with the file
        except ProgramError:  # a header can't break a program that passed; if it ever did, the program alone
            text = source.strip() + "\n"
            sha = load(text, strategy).sha
        self._atomic_write(self.path / "best_strategy.py", text)
        info = {"step": info["step"], "reward": info["reward"], "sha": sha, **info}
        self._atomic_write(self.path / "best.json", json.dumps(info, indent=2) + "\n")
        return text, sha

    def start_over(self) -> None:
        """Forget every step of a run that never reached a checkpoint (its config stays): it restarts at step 0."""
        self.truncate_metrics(0)
        self.tensorboard(purge_step=1)
        self.clear_replays()
        for name in ("best_strategy.py", "best.json", BEST_EPISODE_GIF, "curves.png"):
            (self.path / name).unlink(missing_ok=True)

    def clear_replays(self) -> None:
        shutil.rmtree(self.replays, ignore_errors=True)

    def plot_curves(self) -> Path | None:
        """Redraw curves.png; a failure is logged, never raised: a plot must not end a training run."""
        try:
            from stratagem.viz.plots import plot_run

            return plot_run(self.path)
        except Exception as exc:  # any failure at all: the run matters more than its picture
            log.warning("training curves not drawn: %s", exc)
            return None

    def best_replay(self) -> Recording | None:
        """The highest-scoring recording in replays/ (they are all the best program's); None when there is none."""
        from stratagem.viz.recording import RecordingError, read_recording

        best, best_score = None, -math.inf
        for path in sorted(self.replays.glob("*.jsonl*")):
            try:
                recording = read_recording(path)
            except RecordingError as exc:
                log.warning("skipping a replay: %s", exc)
                continue
            last = recording.steps[-1]["observation"] if recording.steps else {}
            score = (recording.end or last).get("score")
            if isinstance(score, (int, float)) and score > best_score and recording.steps:
                best, best_score = recording, score
        return best

    def export_best_episode(self, max_frames: int = GIF_FRAMES) -> Path | None:
        """best_episode.gif: the last ``max_frames`` steps of the best replay (a slice, not every k-th step, so
        the step numbers, running score and Atari screens stay true); failures are logged, not raised."""
        staging = self.path / f".{BEST_EPISODE_GIF}.tmp.gif"  # export picks the format from the suffix
        try:
            replay = self.best_replay()
            if replay is None or replay.path is None:
                return None
            from stratagem.viz.export import export  # lazily: the GIF is the end of a run, not a reason to fail one

            start = max(0, len(replay.steps) - max_frames)
            export([replay.path], staging, size=GIF_WIDTH, progress=False, start_step=start)
            os.replace(staging, self.path / BEST_EPISODE_GIF)
            return self.path / BEST_EPISODE_GIF
        except Exception as exc:  # as for the curves: never the end of a run
            log.warning("%s not written: %s", BEST_EPISODE_GIF, exc)
            return None
        finally:
            staging.unlink(missing_ok=True)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(text)
        os.replace(staging, path)
