"""GRPO and its variants as one loss function: group advantages, clipped ratios, normalisers.

The trainer calls ``group_advantages`` once per batch and ``policy_loss`` once per
micro-batch, and never learns which loss runs: ``LossSettings.loss_type`` picks the
normaliser (and, for ``cispo``, the per-token objective). The math follows TRL's GRPOTrainer:

- GRPO (Shao et al., 2024, DeepSeekMath): PPO's clipped ratio with a group-relative
  advantage ``A = (r - mean_group) / std_group``, loss averaged per sequence then over sequences.
- BNPO: average over the active tokens of the local (micro-)batch.
- Dr. GRPO (Liu et al., 2025): a constant normaliser ``num_sequences * max_completion_length``,
  so a token weighs the same whatever the length of its sequence (usually with
  ``scale_rewards="none"``, which removes the other bias, the division by std).
- DAPO (Yu et al., 2025): average over all active tokens of the batch; asymmetric clipping
  ``epsilon_high`` (0.28 in the paper) lets unlikely tokens grow.
- CISPO (MiniMax-M1, 2025): REINFORCE weighted by a clipped, detached IS ratio, so no
  token's gradient is ever dropped; the paper clips with a large ``epsilon_high`` (e.g. 5.0).
- GSPO (Zheng et al., 2025): ``importance_sampling_level="sequence"``, one ratio per sequence,
  the exp of its mean token log-ratio.
- KL: Schulman's k3 estimator ``exp(ref - logp) - (ref - logp) - 1``: >= 0, unbiased on-policy.

Gradient accumulation equals the full batch because every normaliser except bnpo's divides
by counts over the whole optimizer step (``BatchTotals``), never by the micro-batch's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4


def group_advantages(rewards: Tensor, num_generations: int, scale_rewards: str = "group") -> Tensor:
    """``A = r - mean_group``, divided by the group's std, the batch's std, or nothing.

    ``rewards`` is [B], consecutive groups of ``num_generations`` completions of one prompt.
    Only the comparison within a group carries signal; a group whose rewards are all equal
    gets zero advantages (the ``1e-4`` keeps that 0 / 0 from becoming NaN). The std is
    unbiased (``torch.std``), as in TRL.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")
    if num_generations < 2 or rewards.ndim != 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} do not split into groups of num_generations={num_generations}"
            " (need a 1-D tensor and num_generations >= 2 dividing its length)"
        )
    grouped = rewards.view(-1, num_generations)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + STD_EPS)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + STD_EPS)
    return advantages.flatten()


@dataclass(frozen=True)
class LossSettings:
    """What the loss computes. ``epsilon_high=None`` means ``epsilon`` (symmetric clipping).

    ``delta`` (two-sided clipping) caps the unclipped ratio too: with a negative advantage
    PPO's min keeps the unclipped term, so one huge ratio could dominate the step. It must
    lie above ``1 + epsilon_high`` or it would clip inside the trust region. CISPO ignores
    it: its weight is already capped at ``epsilon_high``.
    """

    loss_type: str = "dapo"
    importance_sampling_level: str = "token"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float | None = None
    beta: float = 0.0
    max_completion_length: int = 256

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r}; expected one of {LOSS_TYPES}")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level={self.importance_sampling_level!r};"
                f" expected one of {IMPORTANCE_SAMPLING_LEVELS}"
            )
        if self.epsilon < 0:
            raise ValueError(f"epsilon={self.epsilon}; expected >= 0")
        if self.epsilon_high is not None and self.epsilon_high < 0:
            raise ValueError(f"epsilon_high={self.epsilon_high}; expected None or >= 0")
        if self.delta is not None and self.delta <= 1 + self.eps_high:
            raise ValueError(f"delta={self.delta}; expected None or > 1 + epsilon_high = {1 + self.eps_high}")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta}; expected >= 0")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length={self.max_completion_length}; expected >= 1")

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclass(frozen=True)
class BatchTotals:
    """Counts over the WHOLE batch of one optimizer step (all micro-batches).

    So that k micro-batches sum to exactly the full-batch loss.
    """

    num_sequences: int
    num_tokens: int  # active (mask==1) completion tokens in the whole batch
    num_micro_batches: int

    def __post_init__(self) -> None:
        if self.num_sequences < 1 or self.num_tokens < 0 or self.num_micro_batches < 1:
            raise ValueError(f"{self}; expected num_sequences >= 1, num_tokens >= 0, num_micro_batches >= 1")


Normaliser = Callable[[Tensor, Tensor, LossSettings, BatchTotals], Tensor]


def grpo_normaliser(per_token_loss: Tensor, mask: Tensor, settings: LossSettings, totals: BatchTotals) -> Tensor:
    """Mean over each sequence's tokens, then over sequences: a long sequence's tokens weigh less."""
    per_sequence = (per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_sequence.sum() / totals.num_sequences


def bnpo_normaliser(per_token_loss: Tensor, mask: Tensor, settings: LossSettings, totals: BatchTotals) -> Tensor:
    """Mean over the micro-batch's own active tokens, averaged over micro-batches.

    Local by definition: the sum over micro-batches equals the full-batch token mean only
    when every micro-batch holds the same number of active tokens.
    """
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / totals.num_micro_batches


def dr_grpo_normaliser(per_token_loss: Tensor, mask: Tensor, settings: LossSettings, totals: BatchTotals) -> Tensor:
    """A constant, ``num_sequences * max_completion_length``: no length bias at all."""
    return (per_token_loss * mask).sum() / (totals.num_sequences * settings.max_completion_length)


def dapo_normaliser(per_token_loss: Tensor, mask: Tensor, settings: LossSettings, totals: BatchTotals) -> Tensor:
    """Mean over every active token of the batch: each token weighs the same."""
    return (per_token_loss * mask).sum() / max(totals.num_tokens, 1)


NORMALISERS: dict[str, Normaliser] = {
    "grpo": grpo_normaliser,
    "bnpo": bnpo_normaliser,
    "dr_grpo": dr_grpo_normaliser,
    "dapo": dapo_normaliser,
    "cispo": dapo_normaliser,
}


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return ((values.expand_as(mask) * mask).sum() / mask.sum().clamp(min=1.0)).item()


def policy_loss(
    logps: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    settings: LossSettings,
    totals: BatchTotals,
) -> tuple[Tensor, dict[str, float]]:
    """This micro-batch's share of the batch loss, and its metrics.

    ``logps``, ``old_logps``, ``ref_logps`` are [b, T] log-probs of the sampled tokens under
    the current, sampling and reference policies (``ref_logps`` may be None when beta == 0);
    ``advantages`` is [b]; ``mask`` is [b, T], 1 for the completion tokens that count.
    Summing the returned losses of all micro-batches gives the full-batch loss.
    """
    if not (logps.shape == old_logps.shape == mask.shape) or advantages.shape != logps.shape[:1]:
        raise ValueError(
            f"shapes: logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)}, mask {tuple(mask.shape)},"
            f" advantages {tuple(advantages.shape)}; expected [b, T] and advantages [b]"
        )
    mask = mask.to(logps.dtype)
    # Masked before exp, so garbage at padded positions cannot overflow into inf * 0 = NaN.
    log_ratio = (logps - old_logps) * mask
    if settings.importance_sampling_level == "sequence":  # GSPO: one ratio per sequence, [b, 1]
        log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    coef_1 = torch.exp(log_ratio)
    A = advantages.unsqueeze(-1)
    eps_low, eps_high = settings.epsilon, settings.eps_high
    metrics: dict[str, float] = {}

    if settings.loss_type == "cispo":
        # The weight is a constant: the gradient is REINFORCE's, A * d logp, scaled by min(ratio, eps_high).
        is_weight = torch.clamp(coef_1, max=eps_high).detach()
        per_token_loss = -is_weight * A * logps
        metrics["cispo_clip_ratio"] = _masked_mean((coef_1 > eps_high).to(mask.dtype), mask)
    else:
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        is_low_clipped = (coef_1 < 1 - eps_low) & (A < 0)
        is_high_clipped = (coef_1 > 1 + eps_high) & (A > 0)
        if settings.delta is not None:
            coef_1 = torch.clamp(coef_1, max=settings.delta)
        per_token_loss = -torch.min(coef_1 * A, coef_2 * A)
        metrics["clip_ratio/low_mean"] = _masked_mean(is_low_clipped.to(mask.dtype), mask)
        metrics["clip_ratio/high_mean"] = _masked_mean(is_high_clipped.to(mask.dtype), mask)
        metrics["clip_ratio/region_mean"] = _masked_mean((is_low_clipped | is_high_clipped).to(mask.dtype), mask)

    if settings.beta > 0:
        if ref_logps is None:
            raise ValueError(f"beta={settings.beta} > 0 needs ref_logps; got None")
        log_ref_ratio = (ref_logps - logps) * mask
        per_token_kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # k3
        per_token_loss = per_token_loss + settings.beta * per_token_kl
        metrics["kl"] = _masked_mean(per_token_kl.detach(), mask)

    return NORMALISERS[settings.loss_type](per_token_loss, mask, settings, totals), metrics
