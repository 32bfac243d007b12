"""The update half of GRPO: a policy with a trainable adapter, its optimizer and schedule, and the loss.

``Learner.update(completions, advantages)`` is one generated batch's ``num_iterations`` optimizer steps over
micro-batches, each micro-batch's loss normalised by the whole batch's counts so that accumulation equals one
big batch (``losses.py``), log-probs chunk by chunk, never the full logits (``logprobs.py``). It knows nothing
of environments or rewards: the trainer hands it advantages, and ``benchmarks/bench_learner.py`` drives it
with a stand-in reward against TRL's GRPOTrainer.

The KL reference, when ``beta > 0``, is the same model with its adapter switched off: no second copy in
memory.

Under torchrun each rank updates on its own rows: the normalisers' counts and the gradients are summed over the
ranks (``distributed.py``), so the step equals one process's on the whole batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from stratagem.rl.config import GRPOConfig
from stratagem.rl.distributed import Distributed
from stratagem.rl.logprobs import model_token_logprobs
from stratagem.rl.losses import BatchTotals, policy_loss
from stratagem.rl.offload import ActivationOffload


@dataclass
class TrainBatch:
    """One generated batch as the learner sees it: prompt + completion ids, masks, advantages."""

    ids: torch.Tensor  # [B, P + C]
    attention: torch.Tensor  # [B, P + C]
    positions: torch.Tensor  # [B, P + C], counting real tokens only (left padding)
    mask: torch.Tensor  # [B, C], the completion tokens the loss counts
    advantages: torch.Tensor  # [B]
    slices: list[slice]  # the micro-batches
    totals: BatchTotals


class Learner:
    """AdamW over the model's trainable parameters (the adapter) with the config's schedule, and the loss."""

    def __init__(self, model: Any, config: GRPOConfig, device: str, dist: Distributed | None = None) -> None:
        from transformers import get_scheduler

        self.model, self.config, self.device = model, config, device
        self.dist = dist or Distributed()  # world size 1: every collective a no-op
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable,
                                           lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                           eps=config.adam_epsilon, weight_decay=config.weight_decay)  # fmt: skip
        updates = config.max_steps * config.num_iterations
        warmup = config.warmup_steps or math.ceil(config.warmup_ratio * updates)
        self.scheduler = get_scheduler(config.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=updates)  # fmt: skip

    def update(self, completions: Any, advantages: torch.Tensor) -> dict[str, float]:
        """``num_iterations`` optimizer updates on this batch; returns the last update's metrics."""
        batch = self.batch(completions, advantages)
        with torch.no_grad():
            old = self.logps(batch) if self.config.num_iterations > 1 else None  # the sampling policy's
            ref = None
            if self.config.beta > 0:
                with self.model.disable_adapter():
                    ref = self.logps(batch)
        sums: dict[str, float] = {}
        for _ in range(self.config.num_iterations):
            sums = self.dist.sum_metrics(self.accumulate(batch, old, ref))
            self.dist.sum_gradients(self.trainable)  # before the norm: the clip sees the whole step's gradient
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm))
            sums["learning_rate"] = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return sums

    def batch(self, completions: Any, advantages: torch.Tensor) -> TrainBatch:
        mask = completions.completion_mask.clone().float()
        if self.config.mask_truncated_completions:
            mask[torch.tensor(completions.truncated, dtype=torch.bool)] = 0.0
        ids = torch.cat([completions.prompt_ids, completions.completion_ids], dim=1)
        attention = torch.cat([completions.prompt_mask, completions.completion_mask], dim=1)
        micro = self.config.per_device_train_batch_size
        slices = [slice(i, i + micro) for i in range(0, ids.shape[0], micro)]
        return TrainBatch(ids=ids.to(self.device), attention=attention.to(self.device),
                          positions=(attention.cumsum(-1) - 1).clamp(min=0).to(self.device),
                          mask=mask.to(self.device), advantages=advantages.to(self.device), slices=slices,
                          totals=self.dist.sum_totals(BatchTotals(num_sequences=ids.shape[0],
                                                                  num_tokens=int(mask.sum()),
                                                                  num_micro_batches=len(slices))))  # fmt: skip

    def logps(self, batch: TrainBatch, part: slice | None = None) -> torch.Tensor:
        """Per-token log-probs of the completion tokens, for one micro-batch or (``None``) all of them."""
        if part is None:
            return torch.cat([self.logps(batch, s) for s in batch.slices])
        return model_token_logprobs(self.model, batch.ids[part], batch.attention[part], batch.positions[part],
                                    batch.mask.shape[1],
                                    temperature=self.config.temperature,
                                    chunk_size=self.config.logprob_chunk_size)  # fmt: skip

    def saved_activations(self) -> contextlib.AbstractContextManager[Any]:
        """Where the forward's saved activations wait for backward: in host memory with ``activation_offload``
        (``offload.py``: with checkpointing these are the layers' inputs, O(layers x tokens x hidden)), else
        where they were made."""
        return ActivationOffload() if self.config.activation_offload else contextlib.nullcontext()

    def accumulate(self, batch: TrainBatch, old: torch.Tensor | None, ref: torch.Tensor | None) -> dict[str, float]:
        """Backward through every micro-batch; each loss is normalised by the whole batch's counts, so the
        summed gradient equals one big batch's (``losses.BatchTotals``). Metrics are averaged over the step's
        micro-batches, every rank's counted (``totals.num_micro_batches``)."""
        self.model.train()
        settings, sums = self.config.loss_settings(), {"loss": 0.0}
        for part in batch.slices:
            with self.saved_activations():
                logps = self.logps(batch, part)
            old_part = old[part] if old is not None else logps.detach()
            loss, parts = policy_loss(logps, old_part, ref[part] if ref is not None else None,
                                      batch.advantages[part], batch.mask[part], settings, batch.totals)  # fmt: skip
            loss.backward()
            sums["loss"] += loss.item()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value / batch.totals.num_micro_batches
        return sums
