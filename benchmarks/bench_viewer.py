"""Frames/s of the replay viewer's rendering, headless, and of its exports.

    python benchmarks/bench_viewer.py [--seconds 2]

Records real episodes first (the 2048 heuristic on one seed, Pong's tracker for 300 steps,
tic-tac-toe), then measures, on SDL's dummy video driver:

- ``render_step`` alone, frames/s, for 2048 at three widths (the target: >= 500 frames/s at the
  default 400 px), Atari at 320 px (screens already rebuilt), tic-tac-toe at 480 px, and two
  2048 panels side by side;
- Atari screens rebuilt from the seed (emulator replay, RAM checked against the recording), steps/s;
- whole exports, frames/s end to end (render, convert, encode): GIF, MP4 (H.264), PNG sheet.

Each rendering cell runs the episode's steps in a loop for ``--seconds``; compare ratios across
machines, not absolutes (this is a shared 2-core box).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["SDL_VIDEODRIVER"] = "dummy"

from stratagem.agents.runner import Runner  # noqa: E402
from stratagem.viz._pygame import start  # noqa: E402
from stratagem.viz.episodes import Episode, load_items  # noqa: E402
from stratagem.viz.export import export  # noqa: E402
from stratagem.viz.recording import read_recording  # noqa: E402
from stratagem.viz.render import render_step, side_by_side  # noqa: E402

EXAMPLES = ROOT / "examples" / "strategies"


def record(directory: Path, env: str, strategy: str, params: dict | None = None) -> Path:
    with Runner(env, params or {}, workers=1) as runner:
        [result] = runner.evaluate([(EXAMPLES / strategy).read_text()], [0], record=directory)
    return directory / f"{result.sha}-seed0.jsonl.gz"


def render_rate(episode: Episode, size: int | None, seconds: float, pair: bool = False) -> float:
    steps = [episode.step(i) for i in range(len(episode))]
    header = episode.header
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for step in steps:
            picture = render_step(step, header, size)
            if pair:
                side_by_side(picture, render_step(step, header, size))
            frames += 1
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per rendering cell")
    args = parser.parse_args()
    start(headless=True)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        game = record(root / "2048", "2048", "corner_2048.py")
        pong = record(root / "pong", "pong", "pong_tracker.py", {"max_episode_steps": 300})
        ttt = record(root / "ttt", "openspiel", "tictactoe_heuristic.py")
        [(board,)], [(screen,)], [(text,)] = (load_items([p]) for p in (game, pong, ttt))
        n = len(board)
        for size in (240, 400, 800):
            rows.append((f"render 2048, {size} px", render_rate(board, size, args.seconds), f"{n} steps"))
        rows.append(("render 2048 side by side, 2 x 400 px", render_rate(board, 400, args.seconds, True), ""))

        started = time.perf_counter()
        fresh = Episode(read_recording(pong))
        fresh.step(len(fresh) - 1)  # rebuilds every screen up to the last
        rebuilt = len(fresh) / (time.perf_counter() - started)
        rows.append(("Atari screens rebuilt from the seed (steps/s)", rebuilt, "RAM checked every step"))
        rows.append(("render Pong, 320 px", render_rate(screen, 320, args.seconds), f"{len(screen)} steps"))
        rows.append(("render tic-tac-toe, 480 px", render_rate(text, 480, args.seconds), f"{len(text)} steps"))

        for suffix in (".gif", ".mp4", ".png"):
            started = time.perf_counter()
            out = export([game], root / f"out{suffix}", progress=False)
            seconds = time.perf_counter() - started
            frames = 12 if suffix == ".png" else n
            rows.append((f"export 2048 {suffix}, 400 px", frames / seconds, f"{out.stat().st_size / 1024:.0f} kB"))
    width = max(len(label) for label, _, _ in rows)
    print(f"replay viewer, headless (SDL dummy driver), {os.cpu_count()} CPUs")
    print(f"{'':<{width}}  {'frames/s':>9}")
    for label, rate, note in rows:
        print(f"{label:<{width}}  {rate:>9.0f}  {note}")


if __name__ == "__main__":
    main()
