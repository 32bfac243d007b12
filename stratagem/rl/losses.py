"""GRPO and its variants as one loss function: group advantages, clipped ratios, normalisers.

The trainer calls ``group_advantages`` once per batch and ``policy_loss`` once per
micro-batch, and never learns which loss runs: ``LossSettings.loss_type`` picks a per-token
objective (one short function each, ``OBJECTIVES``) and a normaliser (``NORMALISERS``). The math
follows TRL 1.16's GRPOTrainer:

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
- LUSPO (Liu et al., 2026, arXiv 2602.05261): GSPO's clipped sequence term times the sequence's
  length, summed per sequence and averaged over sequences, so GSPO's 1/|o| no longer favours short
  answers (use it with ``importance_sampling_level="sequence"`` and a small epsilon, 2e-3 in the paper).
- SAPO (Gao et al., 2025, arXiv 2511.20347): a soft gate instead of the clip,
  ``-sigmoid(tau (r - 1)) * 4 / tau * A``, whose gradient weight ``4 sigma (1 - sigma) r`` is 1 on-policy and
  fades smoothly off it; ``tau`` is ``sapo_temperature_pos`` for A > 0, ``sapo_temperature_neg`` otherwise.
  Normalised as GRPO (per sequence, then over sequences).
- VESPO (Shen et al., 2026, arXiv 2602.10693): REINFORCE ``-phi * A * logp`` weighted by a detached kernel of
  the whole sequence's ratio ``W = prod r``: ``phi = W^k exp(lambda (1 - W))`` (1 on-policy), with (k, lambda)
  per advantage sign; ``log W`` is clamped to [ln 1e-8, 20] as in the paper's code. Normalised as DAPO.
- KL: Schulman's k3 estimator ``exp(ref - logp) - (ref - logp) - 1``: >= 0, unbiased on-policy.

Gradient accumulation equals the full batch because every normaliser except bnpo's divides
by counts over the whole optimizer step (``BatchTotals``), never by the micro-batch's own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


class LossSettingWarning(UserWarning):
    """A loss setting that runs but is not what the method's paper means."""


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo", "sapo", "vespo")
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
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0

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
        for name in ("sapo_temperature_pos", "sapo_temperature_neg", "vespo_lambda_pos", "vespo_lambda_neg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected > 0")
        for name in ("vespo_k_pos", "vespo_k_neg"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 0")

    def warn_if_unusual(self) -> None:
        """Settings that run but are not the method as its paper defines it (the config says so once, when made)."""
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            warnings.warn("loss_type='luspo' is the paper's with importance_sampling_level='sequence' (and a small "
                          "epsilon, 2e-3); with 'token' it sums token-level PPO terms per sequence",
                          LossSettingWarning, stacklevel=2)  # fmt: skip

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


def luspo_normaliser(per_token_loss: Tensor, mask: Tensor, settings: LossSettings, totals: BatchTotals) -> Tensor:
    """Sum over each sequence's tokens, mean over sequences: a sequence weighs as much as it is long."""
    return (per_token_loss * mask).sum() / totals.num_sequences


NORMALISERS: dict[str, Normaliser] = {
    "grpo": grpo_normaliser,
    "bnpo": bnpo_normaliser,
    "dr_grpo": dr_grpo_normaliser,
    "dapo": dapo_normaliser,
    "cispo": dapo_normaliser,
    "luspo": luspo_normaliser,
    "sapo": grpo_normaliser,
    "vespo": dapo_normaliser,
}


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return ((values.expand_as(mask) * mask).sum() / mask.sum().clamp(min=1.0)).item()


def importance_ratio(logps: Tensor, old_logps: Tensor, mask: Tensor, level: str) -> Tensor:
    """``pi / pi_old`` per token [b, T], or per sequence [b, 1] (GSPO: the exp of the mean token log-ratio)."""
    log_ratio = (logps - old_logps) * mask  # masked before exp: padding garbage cannot overflow into inf * 0
    if level == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return torch.exp(log_ratio)


# Each objective: (logps, old_logps, A [b, 1], mask, settings) -> per-token loss [b, T] or [b, 1], metrics.
Objective = Callable[[Tensor, Tensor, Tensor, Tensor, LossSettings], tuple[Tensor, dict[str, float]]]


def clipped_objective(logps: Tensor, old_logps: Tensor, A: Tensor, mask: Tensor,
                      s: LossSettings) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """PPO's ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``, with ``delta`` capping the unclipped r."""
    ratio = importance_ratio(logps, old_logps, mask, s.importance_sampling_level)
    clipped = torch.clamp(ratio, 1 - s.epsilon, 1 + s.eps_high)
    low, high = (ratio < 1 - s.epsilon) & (A < 0), (ratio > 1 + s.eps_high) & (A > 0)
    unclipped = ratio if s.delta is None else torch.clamp(ratio, max=s.delta)
    metrics = {"clip_ratio/low_mean": _masked_mean(low.to(mask.dtype), mask),
               "clip_ratio/high_mean": _masked_mean(high.to(mask.dtype), mask),
               "clip_ratio/region_mean": _masked_mean((low | high).to(mask.dtype), mask)}  # fmt: skip
    return -torch.min(unclipped * A, clipped * A), metrics


def cispo_objective(logps: Tensor, old_logps: Tensor, A: Tensor, mask: Tensor,
                    s: LossSettings) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """REINFORCE weighted by the detached ratio capped at ``eps_high``: no token's gradient is ever dropped."""
    ratio = importance_ratio(logps, old_logps, mask, s.importance_sampling_level)
    weight = torch.clamp(ratio, max=s.eps_high).detach()
    return -weight * A * logps, {"cispo_clip_ratio": _masked_mean((ratio > s.eps_high).to(mask.dtype), mask)}


def sapo_objective(logps: Tensor, old_logps: Tensor, A: Tensor, mask: Tensor,
                   s: LossSettings) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """The soft gate ``-sigmoid(tau (r - 1)) * 4 / tau * A``; tau is ``sapo_temperature_pos`` where A > 0."""
    ratio = importance_ratio(logps, old_logps, mask, s.importance_sampling_level)
    tau = torch.full_like(A, s.sapo_temperature_neg).masked_fill(A > 0, s.sapo_temperature_pos)
    return -torch.sigmoid(tau * (ratio - 1)) * (4 / tau) * A, {}


def vespo_objective(logps: Tensor, old_logps: Tensor, A: Tensor, mask: Tensor,
                    s: LossSettings) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """``-phi(W) * A * logp``, ``phi = W^k exp(lambda (1 - W))`` of the sequence ratio ``W = prod r``, detached."""
    with torch.no_grad():
        log_w = ((logps - old_logps).clamp(-20, 20) * mask).sum(-1, keepdim=True).clamp(math.log(1e-8), 20.0)
        k = torch.full_like(A, s.vespo_k_neg).masked_fill(A >= 0, s.vespo_k_pos)
        lam = torch.full_like(A, s.vespo_lambda_neg).masked_fill(A >= 0, s.vespo_lambda_pos)
        phi = torch.exp(lam + k * log_w - lam * log_w.exp()).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    return -phi * A * logps, {"vespo/phi_seq_mean": phi.mean().item()}


OBJECTIVES: dict[str, Objective] = {
    "grpo": clipped_objective,
    "bnpo": clipped_objective,
    "dr_grpo": clipped_objective,
    "dapo": clipped_objective,
    "luspo": clipped_objective,
    "cispo": cispo_objective,
    "sapo": sapo_objective,
    "vespo": vespo_objective,
}


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
    per_token_loss, metrics = OBJECTIVES[settings.loss_type](logps, old_logps, advantages.unsqueeze(-1), mask,
                                                             settings)  # fmt: skip
    if settings.beta > 0:
        if ref_logps is None:
            raise ValueError(f"beta={settings.beta} > 0 needs ref_logps; got None")
        log_ref_ratio = (ref_logps - logps) * mask
        per_token_kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # k3
        per_token_loss = per_token_loss + settings.beta * per_token_kl
        metrics["kl"] = _masked_mean(per_token_kl.detach(), mask)
    return NORMALISERS[settings.loss_type](per_token_loss, mask, settings, totals), metrics
