"""Activation offload: the activations a forward saves for backward wait in host memory until backward.

With gradient checkpointing these are every layer's input, layers x tokens x hidden bytes: at long context the
largest thing on the GPU (Unsloth's offloaded checkpointing). Only activations move, saved tensors computed
from something that needs a gradient (they have a ``grad_fn``) of at least ``min_bytes``: weights, masks and
rotary tables stay where they are (they live on the GPU anyway, and each layer saves the same rotary table).

The host copies are pageable and sized exactly, not pinned: PyTorch's pinned-memory cache rounds every block up
to a power of two, so 8 sequences of 131,200 tokens (2.0016 GiB a layer on Qwen3-0.6B) would pin 4 GiB a layer,
116 GiB for 28 layers and the head: most of a 128 GiB host, twice what the activations need. Pageable copies
synchronise and are slower, but where offload is needed, long context, the attention's quadratic time dominates.
"""

from __future__ import annotations

import torch

MIN_BYTES = 1 << 20  # smaller saved tensors stay: each copy costs a synchronisation, and they add up to little


def is_activation(tensor: torch.Tensor, min_bytes: int = MIN_BYTES) -> bool:
    """Whether a saved tensor is an activation worth moving: computed with a gradient to follow, and large."""
    return tensor.grad_fn is not None and tensor.numel() * tensor.element_size() >= min_bytes


class ActivationOffload(torch.autograd.graph.saved_tensors_hooks):
    """``with ActivationOffload(): loss = forward(...)``; then ``loss.backward()`` brings each activation back
    to its device when its gradient needs it. ``moved_bytes``: how much went to the host."""

    def __init__(self, min_bytes: int = MIN_BYTES) -> None:
        self.moved_bytes = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor | tuple[torch.device, torch.Tensor]:
            if tensor.device.type == "cpu" or not is_activation(tensor, min_bytes):
                return tensor.detach()  # not the tensor itself: a saved output would hold its own grad_fn, a cycle
            self.moved_bytes += tensor.numel() * tensor.element_size()
            return tensor.device, tensor.detach().to("cpu")

        def unpack(packed: torch.Tensor | tuple[torch.device, torch.Tensor]) -> torch.Tensor:
            if isinstance(packed, torch.Tensor):
                return packed
            device, host = packed
            return host.to(device)

        super().__init__(pack, unpack)
