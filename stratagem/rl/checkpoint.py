"""Checkpoints that survive ``kill -9`` at any moment, and restore a run exactly.

A checkpoint is a directory ``checkpoints/step-NNNNNN/`` holding the adapter in peft's own
format (``PeftModel.from_pretrained`` loads it) and ``trainer_state.pt``: optimizer,
scheduler, every RNG stream (Python, NumPy, torch, the sampling generator), the step and the
best program so far. It is written under a temporary name, flushed to disk, and renamed into
place, which is atomic; only then does ``checkpoints/latest`` (replaced atomically too) point
at it. A crash mid-write leaves a temporary directory that is ignored and cleaned up, never a
broken "latest".
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def _fsync_tree(path: Path) -> None:
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The process's random streams (and ``generator``'s). The trainer keys its sampling by (seed, step, group),
    so it passes none: the state is then the same whatever the world size that saved it."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():  # as many devices as both machines have
        for index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def save_checkpoint(root: Path, step: int, model: Any, state: dict[str, Any], keep: int | None = None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, point ``latest`` at it, prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        model.save_pretrained(staging)  # peft: adapter_config.json + adapter_model.safetensors
        torch.save(state, staging / STATE_FILE)
        _fsync_tree(staging)
        final = root / name
        if final.exists():  # re-saving a step (a resumed run reaching it again): replace it whole
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = root / ".latest.tmp"
    pointer.write_text(name + "\n")
    with open(pointer, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(pointer, root / "latest")
    _fsync_dir(root)
    if keep is not None:
        for old in sorted(complete_checkpoints(root))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    return [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, else the newest complete one; leftovers of a crash are removed."""
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / STATE_FILE).is_file():
            return named
    complete = sorted(complete_checkpoints(root))
    return complete[-1] if complete else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, weights_only=False)
