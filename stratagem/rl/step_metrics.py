"""A training step's figures and its one printed line: what ``metrics.jsonl``, TensorBoard, the curves and the
dashboard all show, computed in one place so they agree (the trainer only hands over what the step made)."""

from __future__ import annotations

from typing import Any

import torch

from stratagem.agents.results import ProgramResult


def step_metrics(step: int, completions: Any, results: list[ProgramResult], scored: list[Any], rewards: torch.Tensor,
                 train: dict[str, float], num_generations: int) -> dict[str, Any]:  # fmt: skip
    """One step's figures. ``win_rate``, ``draw_rate`` and ``loss_rate``: the fraction of a program's episodes
    won, drawn (where the environment says so) and lost (played to the end, neither), averaged over the
    programs; what they leave of 1 is episodes ended by an error and programs that never ran.
    ``frac_programs_built``: programs that passed the static checks and built (their top level ran without
    an error reported; they may still fail every episode); ``frac_played_clean``: programs that played
    every episode to its end without an error."""
    lengths = completions.completion_mask.sum(-1).float()
    groups = rewards.view(-1, num_generations)
    n = len(results)
    metrics: dict[str, Any] = {
        "step": step,
        "reward": rewards.mean().item(),
        "reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        "reward_max": rewards.max().item(),
        "frac_reward_zero_std": (groups.std(-1) < 1e-6).float().mean().item(),
        "win_rate": sum(r.win_rate for r in results) / n,
        "draw_rate": sum(r.draws / len(r.episodes) for r in results if r.episodes) / n,
        "loss_rate": sum(r.losses / len(r.episodes) for r in results if r.episodes) / n,
        "score": sum(r.mean_score for r in results) / n,
        "frac_programs_built": sum(r.error is None for r in results) / n,
        "frac_played_clean": sum(r.played_clean for r in results) / n,
        "completion_length": lengths.mean().item(),
        "truncated": sum(completions.truncated) / len(completions.truncated),
    }
    for name in scored[0].parts:
        metrics[f"rewards/{name}"] = sum(s.parts[name] for s in scored) / len(scored)
    metrics.update(train)
    return metrics


def live_line(m: dict[str, Any]) -> str:
    """One line per logged step: ``w/d/l`` the episodes' win, draw and loss rates; ``built`` and ``clean`` the
    fractions of programs that built and that played every episode without an error (``step_metrics``)."""
    return (f"step {m['step']:>4}  reward {m['reward']:+.3f} ± {m['reward_std']:.3f}  "
            f"w/d/l {m['win_rate']:.2f}/{m['draw_rate']:.2f}/{m['loss_rate']:.2f}  score {m['score']:7.1f}  "
            f"built {m['frac_programs_built']:.2f}  clean {m['frac_played_clean']:.2f}  kl {m.get('kl', 0.0):.4f}  "
            f"loss {m['loss']:+.4f}  len {m['completion_length']:.0f}")  # fmt: skip
