"""``attn_implementation="stratagem"``: our attention inside transformers models (GptOss, Llama, Qwen3, ...).

Importing this module registers the function with transformers' ``AttentionInterface`` and its
mask with ``AttentionMaskInterface`` (FlashAttention-2's convention: no 4-D mask is built; the
layer gets the 2-D padding mask, or None). GptOss hands over its sinks (``s_aux``) and its
sliding window; Qwen3's sliding layers their window; Llama neither.

Padding: a row's mask must be zeros, then ones, then (for causal models) optionally zeros
again: left padding, and right padding after the last token, which no real query can see. A
mask with holes is refused with a message rather than silently mis-attended.

Prefill and training (query length == key length) run the Triton kernels on CUDA; decoding
steps (one query against the cache) run the torch reference, which handles the offset. Where
Triton is not installed, everything runs the reference, after one ``TritonMissingWarning``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stratagem.kernels import attention

NAME = "stratagem"


def padding_starts(mask: Tensor | None) -> Tensor | None:
    """[B] first real position of each row of a 2-D padding mask (None: no padding)."""
    if mask is None:
        return None
    mask = mask.bool()
    length = mask.shape[1]
    first = torch.where(mask.any(-1), mask.int().argmax(-1), torch.full_like(mask[:, 0], length, dtype=torch.long))
    last = length - 1 - mask.flip(-1).int().argmax(-1)
    positions = torch.arange(length, device=mask.device)[None, :]
    inside = (positions >= first[:, None]) & (positions <= last[:, None])
    if bool((inside & ~mask).any()):
        raise ValueError("stratagem attention takes left-padded (and right-padded) rows only; this attention mask "
                         "has holes: use attn_implementation='eager' for arbitrary masks")  # fmt: skip
    return first if bool((first > 0).any()) else None


def stratagem_attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                                attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                                sliding_window: int | None = None, s_aux: Tensor | None = None,
                                **kwargs: Any) -> tuple[Tensor, None]:  # fmt: skip
    """transformers' attention signature: q [B, Hq, N, D], k/v [B, Hkv, Nk, D] -> ([B, N, Hq, D], None)."""
    if dropout and module.training:
        raise ValueError("stratagem attention has no dropout; set the model's attention_dropout to 0")
    if kwargs.get("softcap") is not None:
        raise ValueError("stratagem attention has no logit softcap; use attn_implementation='eager'")
    out = attention(query, key, value, sinks=s_aux, window=sliding_window, causal=getattr(module, "is_causal", True),
                    padding_start=padding_starts(attention_mask), scale=scaling)  # fmt: skip
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, stratagem_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)


register()
