"""What ``stratagem play`` prints: one program's episodes summarised, as a table or as JSON.

Every episode is counted once: ``wins``, ``draws`` and ``losses`` are the episodes played to their end
(a draw only where the environment says so: OpenSpiel's ties), and ``errors`` counts the others by kind
(``wrong_answer`` among them: a result the environment found wrong). Fields that belong to one kind
of environment appear only for it: ``max_tile_histogram`` for environments whose observation reports a
``max_tile`` (2048).
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from stratagem.agents.results import ProgramResult
from stratagem.agents.rewards import Rubric
from stratagem.envs.spec import EnvSpec


def summarize(result: ProgramResult, spec: EnvSpec, seconds: float) -> dict[str, Any]:
    """Plain data (JSON-ready): outcomes, scores, max tiles (2048), errors by kind, speed and the rubric's rewards."""
    episodes = result.episodes
    scores = [e.score for e in episodes]
    moves = result.moves
    scored = Rubric().score(result, spec.reward)
    summary: dict[str, Any] = {
        "env": spec.name,
        "program": result.sha,
        "program_error": result.error,
        "message": result.message,
        "episodes": len(episodes),
        "wins": result.wins,
        "draws": result.draws,
        "losses": result.losses,
        "win_rate": result.win_rate,
        "mean_score": result.mean_score,
        "median_score": statistics.median(scores) if scores else 0.0,
        "max_score": max(scores, default=0.0),
        "errors": dict(Counter(e.error for e in episodes if e.error is not None)),
        "first_error": next((f"seed {e.seed}: {e.error}: {e.message}" for e in episodes if e.error), None),
        "moves": moves,
        "seconds": seconds,
        "moves_per_s": moves / seconds if seconds > 0 else 0.0,
        "episodes_per_s": len(episodes) / seconds if seconds > 0 else 0.0,
        "reward": scored.total,
        "reward_parts": scored.parts,
    }
    if reports_max_tile(spec, result):
        tiles = Counter(e.max_tile for e in episodes if e.max_tile is not None)
        summary["max_tile_histogram"] = {str(tile): tiles[tile] for tile in sorted(tiles)}
    return summary


def reports_max_tile(spec: EnvSpec, result: ProgramResult) -> bool:
    """Whether the environment's observation has a ``max_tile`` (2048), so a histogram of it means something."""
    if any(e.max_tile is not None for e in result.episodes):
        return True
    try:
        return "max_tile" in spec.env_class().observation_type.model_fields
    except Exception:  # an entry point that does not import: then it reported nothing either
        return False


def format_summary(summary: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("environment", summary["env"]), ("program", str(summary["program"]))]
    if summary["program_error"] and not summary["episodes"]:
        rows.append(("refused", f"{summary['program_error']}: {summary['message']}"))
    rows += [
        ("episodes", str(summary["episodes"])),
        ("win rate", f"{summary['win_rate']:.1%} ({summary['wins']} won, {summary['draws']} drawn, "
                     f"{summary['losses']} lost)"),
        ("score", f"mean {summary['mean_score']:.1f}, median {summary['median_score']:.1f}, "
                  f"max {summary['max_score']:.1f}"),
    ]  # fmt: skip
    if summary.get("max_tile_histogram"):
        total = max(1, summary["episodes"])
        histogram = ", ".join(f"{tile}: {n} ({n / total:.0%})" for tile, n in summary["max_tile_histogram"].items())
        rows.append(("max tile", histogram))
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(summary["errors"].items())) or "none"
    rows.append(("errors", errors))
    if summary["first_error"]:
        rows.append(("first error", summary["first_error"]))
    rows.append(("speed", f"{summary['moves_per_s']:.0f} moves/s, {summary['episodes_per_s']:.2f} episodes/s "
                          f"({summary['moves']} moves in {summary['seconds']:.2f} s)"))  # fmt: skip
    parts = ", ".join(f"{name} {value:+.2f}" for name, value in summary["reward_parts"].items())
    rows.append(("reward", f"{summary['reward']:+.3f} ({parts})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
