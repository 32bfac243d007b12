"""LoRA folded into the base weights while sampling, so a decoded token costs the base model's matmuls only.

peft applies an adapter as two extra matmuls per layer per token (``x @ A.T @ B.T``): at decode, where each
step moves one token per row, that is dozens of small launches and an extra read of every adapter per token.
Folding ``W + scale * B @ A`` into the weight removes them. peft's own ``unmerge_adapter`` subtracts the
delta again, which in bf16 does not give back the weight the optimizer trains against (rounding twice drifts
it a little every step); here the base weight is copied aside first (to host memory on a GPU) and copied
back after, bit for bit.

Only peft's plain ``lora.Linear`` over an ``nn.Linear`` is folded (no DoRA, no LoRA bias, no quantised
base); a model with any other kind of active adapter samples through peft unmerged, which is exact too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _lora_layers(model: Any) -> list[Any] | None:
    """The adapter layers to fold, or None when one of them cannot be folded exactly (or there is no peft)."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return None
    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or getattr(module, "disable_adapters", False):
            continue
        active = [name for name in module.active_adapters if name in module.lora_A]
        if not active:
            continue
        plain = isinstance(module, LoraLinear) and type(module.get_base_layer()) is torch.nn.Linear
        if (
            not plain
            or getattr(module, "merged", False)
            or any(module.use_dora.get(name, False) or module.lora_bias.get(name, False) for name in active)
        ):
            return None
        layers.append(module)
    return layers


def _copy_aside(layer: Any, weight: torch.Tensor) -> torch.Tensor:
    """The weight's copy: in pinned host memory, reused every step, for a GPU weight (a copy beside it on the GPU
    would hold every adapted weight twice while sampling: 0.9 GB of Qwen3-0.6B's 1.2, the peak of a step);
    a clone for a CPU weight. The copies queue on the current stream, so the fold waits for them."""
    if weight.device.type != "cuda":
        return weight.detach().clone()
    aside = getattr(layer, "_stratagem_weight_aside", None)
    if aside is None or aside.shape != weight.shape or aside.dtype != weight.dtype:
        aside = torch.empty(weight.shape, dtype=weight.dtype, pin_memory=True)
        layer._stratagem_weight_aside = aside  # a plain attribute: not in state_dict, not moved by .to()
    aside.copy_(weight, non_blocking=True)
    return aside


@contextmanager
def lora_folded(model: Any) -> Iterator[bool]:
    """Inside: the model's active LoRA adapters folded into its base weights and switched off; after: the base
    weights as they were, bit for bit. Yields whether it folded (False: nothing to fold, or not exactly)."""
    layers = _lora_layers(model)
    if not layers or not hasattr(model, "disable_adapter"):
        yield False
        return
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer in layers:
                weight = layer.get_base_layer().weight
                saved.append((weight, _copy_aside(layer, weight)))
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        weight.add_(layer.get_delta_weight(name).to(weight.dtype))
        with model.disable_adapter():
            yield True
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original, non_blocking=True)
