"""The run directory: everything a training run leaves behind, laid out for people and tools.

```
RUN_DIR/
  config.yaml            the exact config (``stratagem train --config RUN_DIR/config.yaml`` reruns it)
  metrics.jsonl          one JSON line per step: reward (mean, std, per reward function), win rate, score, KL, ...
  tensorboard/           the same scalars as TensorBoard event files (``tensorboard --logdir RUN_DIR``)
  completions/           step-NNNNNN.jsonl: every sampled completion with its reward, parts and outcome
  best_strategy.py       the best program so far (``stratagem play ENV --strategy RUN_DIR/best_strategy.py``)
  best.json              its reward, step, hash and scores
  replays/               recordings of the best program's episodes (``viz/recording.py``)
  checkpoints/           step-NNNNNN/ (peft adapter + trainer state) and ``latest`` (checkpoint.py)
  adapter/               the final adapter in peft's format; merged/ too with ``save_merged``
```
On resume, lines of ``metrics.jsonl`` past the checkpoint are dropped and TensorBoard purges
the same steps, so a resumed run's logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import orjson


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
        self._atomic_write(self.metrics, "".join(json.dumps(row) + "\n" for row in kept))
        for late in self.completions.glob("step-*.jsonl"):
            if int(late.stem.split("-")[1]) > last_step:
                late.unlink()

    def write_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        self.completions.mkdir(parents=True, exist_ok=True)
        body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        self._atomic_write(self.completions / f"step-{step:06d}.jsonl", body.decode())

    def write_best(self, source: str, info: dict[str, Any], env: str) -> None:
        command = f"stratagem play {env} --strategy {self.path / 'best_strategy.py'}"
        header = (f'"""The best program of a stratagem run so far: step {info["step"]}, reward {info["reward"]:.3f}, '
                  f'mean score {info["mean_score"]:.0f}.\n\n    {command}\n"""\n\n')  # fmt: skip
        self._atomic_write(self.path / "best_strategy.py", header + source.strip() + "\n")
        self._atomic_write(self.path / "best.json", json.dumps(info, indent=2) + "\n")

    def clear_replays(self) -> None:
        shutil.rmtree(self.replays, ignore_errors=True)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(text)
        os.replace(staging, path)
