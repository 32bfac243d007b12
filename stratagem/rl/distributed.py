"""Several processes, one run: ``torchrun --nproc-per-node N -m stratagem.cli train ...``.

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. Without them (a
plain ``stratagem train``) nothing here does anything: world size 1, no process group, no copies. Under
``torchrun --nproc-per-node 1`` the one rank joins a process group of its own, so its collectives really run
(how NCCL is checked on a machine of one GPU).

How the work is split, and why N ranks reproduce one process with the same total batch:

- TRL's semantics: each rank samples ``per_device_train_batch_size * gradient_accumulation_steps`` completions,
  whole groups of ``num_generations`` (a group's advantages need all its members), so a step sees N times that.
  Rank r holds the step's groups ``r * G .. (r + 1) * G - 1`` (``Shard``).
- A group's randomness is keyed by (seed, step, group), never by rank or batch: its sampling draws (one uniform
  per row and token, ``group_uniforms``; the sampler inverts each row's CDF with its own) and its episode seeds
  (``trainer.episode_seeds``). So N ranks with ``gradient_accumulation_steps=A`` sample and play exactly the
  groups one process with ``N * A`` does.
- The results are gathered and scored as one batch on every rank (``scale_rewards="batch"`` needs the batch's
  std); each rank trains on its own rows.
- Every loss normaliser divides by counts over the whole step (``losses.BatchTotals``): those counts are summed
  over the ranks and the gradients summed (not averaged, as DDP does), so the step's gradient is one process's,
  for every loss type (bnpo's per-micro-batch mean too: the micro-batches are the same ones).
- Only the LoRA adapter trains: a few MB, replicated, so its gradient is one flat all-reduce after the
  accumulation (data parallel as DDP, without DDP's per-parameter hooks, which would need every forward to go
  through its wrapper: the learner also runs the model with the adapter off and folds LoRA in to sample). The
  frozen base is replicated too; a model too big for one device would need FSDP2 (not done).
- Rank 0 alone writes the run directory and prints. A checkpoint holds nothing per rank (adapter, optimizer and
  schedule are the same on every rank), so a run resumes at any world size.
- gloo on CPU, NCCL on CUDA (rank on ``cuda:LOCAL_RANK``), with a timeout (``ddp_timeout``): a rank that dies or
  hangs ends the others' waits instead of hanging them forever (torchrun also stops the rest when one fails).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from stratagem.agents.policy import Completions
    from stratagem.rl.losses import BatchTotals

T = TypeVar("T")


class Distributed:
    """This process's place in the run and the collectives the trainer and learner use: no-ops at world size 1."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, launched: bool = False) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank}, WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE")
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.launched = launched  # started by torchrun: join a process group even alone (a 1-rank NCCL run is real)
        self.device = torch.device("cpu")  # where collectives' tensors live: NCCL's must be on the rank's GPU
        self.started = False

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; a plain process is rank 0 of 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))), launched)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and speaks."""
        return self.rank == 0

    def shard(self, batch: int, num_generations: int) -> Shard:
        """This rank's groups when each rank samples ``batch`` completions a step (whole groups, as the config
        checks)."""
        return Shard(self.rank, self.world_size, batch // num_generations, num_generations)

    def start(self, device: str, timeout_s: float) -> None:
        """Join the process group: NCCL when the model runs on CUDA (this rank on ``cuda:LOCAL_RANK``, which the
        plain "cuda" then means), else gloo. Other ranks stay quiet: their warnings are rank 0's."""
        if (self.world_size == 1 and not self.launched) or self.started:
            return
        import torch.distributed as dist

        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=self.rank, world_size=self.world_size,
                                timeout=timedelta(seconds=timeout_s))  # fmt: skip
        self.started = True
        self.all_sum(torch.zeros(1))  # every rank is here: each has passed the CLI's checks of the run directory
        if not self.is_main:
            warnings.simplefilter("ignore")

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others do: what it builds and caches on first use (the default
        model, 9 minutes of CPU) the others then find cached instead of building it N times at once."""
        if not self.is_main:
            self.all_sum(torch.zeros(1))  # wait for rank 0 to finish the block
        yield
        if self.is_main:
            self.all_sum(torch.zeros(1))

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist

            self.started = False
            dist.destroy_process_group()

    # -- collectives --------------------------------------------------------------------------------------------

    def all_sum(self, values: Tensor) -> Tensor:
        """The element-wise sum over the ranks, on the tensor's own device (alone: the tensor itself)."""
        if not self.started:
            return values
        import torch.distributed as dist

        summed = values.detach().to(self.device, copy=True)
        dist.all_reduce(summed)
        return summed.to(values.device)

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (any picklable object), in rank order."""
        if not self.started:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.started:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_totals(self, totals: BatchTotals) -> BatchTotals:
        """The step's counts over every rank's batch: what each loss normaliser divides by (``losses.py``)."""
        counts = torch.tensor([totals.num_sequences, totals.num_tokens, totals.num_micro_batches])
        sequences, tokens, micro = (int(n) for n in self.all_sum(counts))
        return replace(totals, num_sequences=sequences, num_tokens=tokens, num_micro_batches=micro)

    def sum_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank sums (of micro-batch losses, of metrics already divided by the step's micro-batch count)
        summed over the ranks; the names are the same on every rank (one loss, one config)."""
        if not self.started:
            return values
        names = sorted(values)
        summed = self.all_sum(torch.tensor([values[n] for n in names], dtype=torch.float64))
        return dict(zip(names, summed.tolist(), strict=True))

    def sum_gradients(self, params: list[Tensor]) -> None:
        """Each parameter's gradient summed over the ranks, as one flat all-reduce (in float32 at least)."""
        if not self.started:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.promote_types(g.dtype, torch.float32)) for g in grads])
        flat = self.all_sum(flat)
        for p, g, part in zip(params, grads, flat.split([g.numel() for g in grads]), strict=True):
            p.grad = g.copy_(part.view_as(g))

    def same_parameters(self, params: list[Tensor]) -> None:
        """Rank 0's values of ``params`` on every rank (as DDP does at the start), so the ranks step in lockstep."""
        if not self.started:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                value = p.detach().to(self.device, copy=True)
                dist.broadcast(value, src=0)
                p.copy_(value)

    def gather_completions(self, completions: Completions, pad_id: int) -> Completions:
        """The step's whole batch of completions, in group order, right-padded to the widest rank's."""
        if not self.started:
            return completions
        from stratagem.agents.policy import Completions

        fields = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        parts = self.gather({**{f: getattr(completions, f).cpu() for f in fields},
                             "texts": completions.texts, "truncated": completions.truncated})  # fmt: skip
        width = max(p["completion_ids"].shape[1] for p in parts)

        def joined(name: str, value: int) -> Tensor:
            widen = name.startswith("completion")  # prompts share one width; completions end where each rank's did
            return torch.cat([torch.nn.functional.pad(p[name], (0, width - p[name].shape[1]), value=value)
                              if widen else p[name] for p in parts])  # fmt: skip

        return Completions(prompt_ids=joined("prompt_ids", 0), prompt_mask=joined("prompt_mask", 0),
                           completion_ids=joined("completion_ids", pad_id),
                           completion_mask=joined("completion_mask", 0),
                           texts=[t for p in parts for t in p["texts"]],
                           truncated=[t for p in parts for t in p["truncated"]])  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """Which of a step's groups this rank samples, plays and trains on: a contiguous block, in rank order."""

    rank: int
    world_size: int
    groups: int  # per rank
    num_generations: int

    @property
    def total_groups(self) -> int:
        return self.groups * self.world_size

    @property
    def group_ids(self) -> range:
        """This rank's groups, numbered as in the whole step's batch."""
        return range(self.rank * self.groups, (self.rank + 1) * self.groups)

    @property
    def rows(self) -> slice:
        """This rank's rows of the whole step's batch."""
        size = self.groups * self.num_generations
        return slice(self.rank * size, (self.rank + 1) * size)


def group_seed(seed: int, step: int, group: int) -> int:
    """A well-mixed 64-bit seed for one group of one step: neighbouring (step, group) pairs share no stream."""
    return int(np.random.SeedSequence([seed, step, group]).generate_state(1, dtype=np.uint64)[0])


def group_uniforms(seed: int, step: int, groups: range, num_generations: int, tokens: int,
                   device: str | torch.device) -> Tensor:  # fmt: skip
    """[len(groups) * num_generations, tokens] uniforms, each group's from its own keyed CPU generator: the same
    draws whatever the rank, world size, batch, chunking or device that samples the group."""
    draws = [torch.rand((num_generations, tokens), generator=torch.Generator().manual_seed(group_seed(seed, step, g)))
             for g in groups]  # fmt: skip
    return torch.cat(draws).to(device)
