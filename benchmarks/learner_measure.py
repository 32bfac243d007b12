"""What ``bench_learner.py`` measures, the same way for both trainers: the workload (prompts, the stand-in reward),
peak GPU memory (whole, and by phase) and the allocator's history for ``memory_peak.py``."""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class StepTimes:
    sample: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)
    peak_gib: float = float("nan")
    sample_peak_gib: float = float("nan")  # ours: the peak while sampling, and while updating (which phase to cut)
    update_peak_gib: float = float("nan")


def stand_in_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """The same cheap reward for both trainers: the fraction of distinct words (TRL's reward signature)."""
    return [len(set(text.split())) / max(len(text.split()), 1) for text in completions]


def prompts(count: int, length: int, vocab: int) -> list[str]:
    g = torch.Generator().manual_seed(1)
    return [" ".join(f"t{int(i)}" for i in torch.randint(2, vocab, (length,), generator=g)) for _ in range(count)]


@contextlib.contextmanager
def peak_memory(device: str, into: StepTimes, snapshot: Path | None = None) -> Iterator[None]:
    """The peak over the block; with ``snapshot`` (CUDA), also PyTorch's allocator history for
    ``torch.cuda.memory._snapshot`` readers (https://pytorch.org/memory_viz): who holds the peak's bytes."""
    release(device)
    try:
        with recording(device, snapshot):
            yield
    finally:
        into.peak_gib = max(peak_gib(device), into.sample_peak_gib, into.update_peak_gib, key=nan_low)


@contextlib.contextmanager
def recording(device: str, snapshot: Path | None) -> Iterator[None]:
    """With ``snapshot`` (CUDA): the allocator's history over the block saved there; ``memory_peak.py`` reads it."""
    if snapshot is None or device != "cuda":
        yield
        return
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    try:
        yield
    finally:
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        torch.cuda.memory._dump_snapshot(str(snapshot))
        torch.cuda.memory._record_memory_history(enabled=None)


def snapshot_path(args: argparse.Namespace, variant: str, length: int | None = None) -> Path | None:
    name = f"{args.shape}-{variant}" + (f"-{length}" if length else "")
    return Path(args.memory_snapshots) / f"{name}.pickle" if args.memory_snapshots else None


def release(device: str) -> None:
    """Memory of the last try given back (an out-of-memory leaves frames and cycles holding tensors) and the
    peak counter reset, so each try starts from the same empty GPU."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def phase_peak(device: str) -> float:
    """The peak since the last reset, and the counter reset: the next phase's peak starts from what is live."""
    peak = peak_gib(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return peak


def nan_low(x: float) -> float:
    """``max`` key under which an unmeasured peak (nan) loses to a measured one."""
    return float("-inf") if x != x else x


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
