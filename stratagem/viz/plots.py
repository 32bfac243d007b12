"""Training curves: ``RUN_DIR/metrics.jsonl`` drawn as one PNG of small panels sharing the step axis.

``stratagem plot RUN_DIR`` calls ``plot_run``, and so does the trainer at each checkpoint and at
the end of a run, so ``RUN_DIR/curves.png`` is always a look at the run so far. It runs inside
training on small CI machines, so it stays cheap: matplotlib's ``Figure`` on the Agg canvas (no
pyplot state, no display), no layout engine, a plain PNG.

Panels exist only for the metrics a run logged, so the same code draws any environment, any
rubric and a run of one step. A metrics file cut off by a killed run (a torn last line) is drawn
up to its last whole line; any other malformed line is an error naming the file and the line.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CURVES = "curves.png"
METRICS = "metrics.jsonl"
REWARD_PREFIX = "rewards/"  # the trainer logs each reward function's mean as rewards/<name>
COLUMNS = 3
PANEL_W, PANEL_H, TITLE_H = 4.0, 2.5, 0.5  # inches; at DPI the PNG is 1200 px wide
DPI = 100
MARKERS_UP_TO = 40  # steps; beyond this a marker per point is clutter


class PlotError(ValueError):
    """Curves that cannot be drawn; the message names the file (and line) and what to do."""


@dataclass(frozen=True)
class Panel:
    """One small chart: ``lines`` are (metric key, legend label); ``band`` is the std key of the first line;
    ``fraction``: the y axis spans 0..1, so a rate reads in absolute terms, not as zoomed-in noise."""

    title: str
    lines: tuple[tuple[str, str], ...]
    band: str | None = None
    fraction: bool = False


# The fixed panels, in reading order; the per-reward-function panel is built from the keys a run logged.
FIXED = (
    Panel("reward (mean ± std)", (("reward", "mean"), ("reward_max", "max")), band="reward_std"),
    Panel(
        "episodes won, drawn, lost", (("win_rate", "won"), ("draw_rate", "drawn"), ("loss_rate", "lost")), fraction=True
    ),
    Panel("score", (("score", "mean score"),)),
    Panel("KL to the reference", (("kl", "kl"),)),
    Panel("completion length (tokens)", (("completion_length", "mean"),)),
)
TRAILING = (
    Panel(
        "programs built, played clean",
        (("frac_programs_built", "built"), ("frac_played_clean", "played clean")),
        fraction=True,
    ),
    Panel("programs built", (("valid_programs", "built"),), fraction=True),  # runs logged before it was renamed
)


def read_metrics(path: Path, lenient: bool = False) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, by step; a step logged twice (an old resume) keeps its later line, and a torn
    last line (no newline, not JSON) is skipped. Any other bad line is a ``PlotError`` naming it; ``lenient``
    (the dashboard, reading a live run) skips it instead, and a missing or empty file is no rows."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        if lenient:
            return []
        if isinstance(exc, FileNotFoundError):
            raise PlotError(f"{path}: no such file; `stratagem train --out DIR` writes DIR/{METRICS}") from None
        raise PlotError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    torn = lines.pop()  # bytes after the last newline: a line a killed run did not finish
    by_step: dict[float, dict[str, Any]] = {}
    for number, line in enumerate([*lines, torn], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # json, not orjson: it also reads NaN/Infinity, which json.dumps writes
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if line is torn or lenient:
                continue
            raise PlotError(f"{path}, line {number}: not JSON ({exc}); fix or delete that line") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not math.isfinite(step):
            if lenient:
                continue
            raise PlotError(f'{path}, line {number}: expected a JSON object with a numeric "step", got {line[:80]!r}')
        by_step[step] = row
    if not by_step and not lenient:
        raise PlotError(f"{path}: no metrics yet (empty file); the run has not finished a step")
    return [by_step[step] for step in sorted(by_step)]


def panels(rows: list[dict[str, Any]]) -> list[Panel]:
    """The panels these rows can fill: a line only for a key some row logged as a number."""
    present = {key for row in rows for key, value in row.items() if _number(value) is not None}
    rubric = sorted(key for key in present if key.startswith(REWARD_PREFIX))
    reward_functions = Panel("reward functions (mean)", tuple((k, k[len(REWARD_PREFIX) :]) for k in rubric))
    chosen = []
    for panel in (*FIXED, reward_functions, *TRAILING):
        lines = tuple(line for line in panel.lines if line[0] in present)
        if lines and lines[0] == panel.lines[0]:  # the panel's main metric is there; the others are optional
            band = panel.band if panel.band in present else None
            title = panel.title if band or not panel.band else panel.title.split(" (")[0]  # no "± std" without one
            chosen.append(Panel(title, lines, band, panel.fraction))
    return chosen


def figure_size(count: int) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for ``count`` panels."""
    rows = max(1, math.ceil(count / COLUMNS))
    return round(COLUMNS * PANEL_W * DPI), round((rows * PANEL_H + TITLE_H) * DPI)


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw ``run_dir/metrics.jsonl`` to ``out`` (default ``run_dir/curves.png``), atomically; returns the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "no such directory"
        raise PlotError(f"{run_dir}: {what}; give a run directory (what `stratagem train --out DIR` made)")
    metrics = run_dir / METRICS
    if not metrics.is_file():
        raise PlotError(f"{run_dir}: no {METRICS}; is it a stratagem run directory? (`stratagem train --out DIR`)")
    out = Path(out) if out is not None else run_dir / CURVES
    if out.suffix.lower() != ".png":
        raise PlotError(f"{out}: curves are written as PNG; give a file name ending in .png")
    if not out.parent.is_dir():
        raise PlotError(f"{out}: the folder {out.parent} does not exist; create it first")
    rows = read_metrics(metrics)
    chosen = panels(rows)
    if not chosen:
        raise PlotError(f"{metrics}: none of its keys is a training metric stratagem draws (reward, score, ...)")
    figure = draw(rows, chosen, _title(run_dir, rows))
    staging = out.with_name(f".{out.name}.tmp")
    try:
        figure.savefig(staging, format="png", dpi=DPI)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    return out


def draw(rows: list[dict[str, Any]], chosen: list[Panel], title: str) -> Any:
    """A matplotlib Figure with one axes per panel, in ``chosen`` order, sharing the step axis."""
    from matplotlib.figure import Figure  # imported here: `stratagem --help` should not pay for matplotlib
    from matplotlib.ticker import MaxNLocator

    width, height = figure_size(len(chosen))
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    rows_n = math.ceil(len(chosen) / COLUMNS)
    top = 1 - TITLE_H / (height / DPI)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.35 / (height / DPI) + 0.02, top=top - 0.04,
                           wspace=0.22, hspace=0.45)  # fmt: skip
    grid = figure.subplots(rows_n, COLUMNS, sharex=True, squeeze=False).ravel()
    steps = [float(row["step"]) for row in rows]
    marker = "o" if len(steps) <= MARKERS_UP_TO else None
    if len(steps) == 1:  # else the shared axis spans 0.95..1.05 with fractional "steps"
        grid[0].set_xlim(steps[0] - 1, steps[0] + 1)
    for axes in grid[len(chosen) :]:
        axes.remove()
    for column in range(min(COLUMNS, len(chosen))):  # the lowest panel of each column carries the step axis
        lowest = grid[column + COLUMNS * ((len(chosen) - 1 - column) // COLUMNS)]
        lowest.xaxis.set_tick_params(labelbottom=True)
        lowest.set_xlabel("step", fontsize=8)
    for axes, panel in zip(grid, chosen, strict=False):
        for number, (key, label) in enumerate(panel.lines):
            values = [_value(row, key) for row in rows]
            style = {"linestyle": ":", "linewidth": 1.0} if key == "reward_max" else {"linewidth": 1.5}
            (line,) = axes.plot(steps, values, marker=marker, markersize=3, label=label, **style)
            if number == 0 and panel.band:
                std = [_value(row, panel.band) for row in rows]
                if len(steps) == 1:  # a band needs two points; one step gets an error bar
                    axes.errorbar(steps, values, yerr=std, color=line.get_color(), alpha=0.4, capsize=4, label="± std")
                else:
                    low = [v - s for v, s in zip(values, std, strict=True)]
                    high = [v + s for v, s in zip(values, std, strict=True)]
                    axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0, label="± std")
        if panel.fraction:
            axes.set_ylim(-0.04, 1.04)
        axes.set_title(panel.title, fontsize=10)
        axes.tick_params(labelsize=8)
        axes.yaxis.set_major_locator(MaxNLocator(nbins=4))  # few ticks: tick artists are most of the cost
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        axes.grid(alpha=0.3)
        if len(panel.lines) > 1 or panel.band:
            _legend_on_top(axes, len(panel.lines) + bool(panel.band))
    figure.suptitle(title, fontsize=11, y=1 - 0.12 / (height / DPI), va="top")
    return figure


def _legend_on_top(axes: Any, entries: int) -> None:
    """A legend in a band of headroom above the data, so it never hides a curve (loc="best" would
    scan every point of every line: slow on long runs, and it still overlaps when the panel is full)."""
    columns = min(entries, 3)
    rows = math.ceil(entries / columns)
    low, high = axes.get_ylim()
    axes.set_ylim(low, high + (high - low) * 0.16 * rows / (1 - 0.16 * rows))
    axes.legend(fontsize=7, loc="upper left", ncols=columns, frameon=False, borderaxespad=0.2,
                columnspacing=0.8, handlelength=1.5)  # fmt: skip


def _title(run_dir: Path, rows: list[dict[str, Any]]) -> str:
    """The run's name, environment and progress; details from config.yaml when it is there and readable."""
    import yaml

    env, progress = None, f"step {rows[-1]['step']:g}"
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # a broken config only costs the title its details
        config = None
    if isinstance(config, dict):
        env = config.get("env")
        if isinstance(config.get("max_steps"), int):
            progress += f" of {config['max_steps']}"
    return "  ·  ".join(str(part) for part in (run_dir.resolve().name, env and f"env {env}", progress) if part)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _value(row: dict[str, Any], key: str) -> float:
    """The metric as a float; absent, null (orjson's NaN), infinite or not a number draws as a gap."""
    number = _number(row.get(key))
    return number if number is not None and math.isfinite(number) else math.nan
