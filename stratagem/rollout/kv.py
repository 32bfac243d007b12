"""A preallocated KV cache that a transformers model writes in place, and the attention that reads it.

transformers' dynamic cache grows every layer's K and V by ``torch.cat`` at every token (a copy of the whole
cache per step), and its static cache fixes one length for all rows. ``StaticKV`` holds one
[B, Hkv, L, D] buffer per layer, sized once for the prompt and the whole completion; every row writes its
step-t token at the same slot ``last`` (prompts are left-padded to one width), which lives on the device, so
one decode step is the same kernels with the same addresses every time: what a CUDA graph needs.

The model finds the cache through its usual ``cache.update`` call; the attention it then runs is
``static_kv_attention`` (switched in by ``decoding_with``), which reads the cache with the split-K decode
kernel: keys ``padding_start[b] .. last`` of row b, a sliding window and sinks where the layer has them.

The prompt is prefilled by the model's own attention into its dynamic cache, once per distinct prompt (a
GRPO group repeats one prompt), and copied into every row that has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from stratagem.kernels import decode_attention, decode_reference
from stratagem.kernels.reference import visible

NAME = "stratagem_static_kv"
KWARG = "stratagem_kv"


class StaticKV:
    """The cache object the model's attention layers call ``update`` on during decode (duck-typed: transformers
    only calls ``update`` when positions and masks are given)."""

    def __init__(self, keys: list[Tensor], values: list[Tensor], last: Tensor, padding_start: Tensor | None) -> None:
        self.keys, self.values = keys, values
        self.last = last  # 0-d long on the device: the slot this step writes and its query reads up to
        self.padding_start = padding_start  # [B] first real slot of each row (None: no row is padded)
        # The eager (CPU) path reads only the slots written so far; a host int costs nothing there. A step that
        # is captured or compiled must not depend on it (``fixed_shapes``).
        self.filled = int(last) + 1 if not last.is_cuda else None
        self._masks: dict[tuple[int, int | None], Tensor] = {}
        # An empty prompt is all padding: its row has no key to attend to (sdpa would give it NaN).
        self.every_row_real = padding_start is None or bool((padding_start <= last).all())

    def fixed_shapes(self) -> None:
        """Every step reads the whole buffer, bounded by ``last`` on the device (for a compiled step on CPU)."""
        self.filled = None

    def advance(self) -> None:
        """The next slot: on the device always (a captured step advances itself), on the host where eager."""
        self.last.add_(1)
        if self.filled is not None:
            self.filled += 1

    def visible(self, window: int | None) -> Tensor:
        """[B, 1, 1, filled] which written slots the current query sees (the eager path's mask, once a step)."""
        key = (self.filled, window)
        if key not in self._masks:
            if len(self._masks) > 2:  # last step's masks: a step has at most two (full and sliding layers)
                self._masks.clear()
            self._masks[key] = visible(1, self.filled, causal=True, window=window, padding_start=self.padding_start,
                                       batch=self.keys[0].shape[0], device=self.last.device)  # fmt: skip
        return self._masks[key]

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Tensor, Tensor]:  # fmt: skip
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        slot = self.last.view(1)
        keys.index_copy_(2, slot, key_states)
        values.index_copy_(2, slot, value_states)
        return keys, values

    @classmethod
    def from_prefill(cls, cache: Any, rows: Tensor, width: int, capacity: int, padding_start: Tensor | None,
                     layers: int) -> StaticKV | None:  # fmt: skip
        """Every row's copy of its prompt's prefilled K/V, at slots ``width - n .. width`` of a ``capacity``-slot
        buffer (a sliding-window layer's dynamic cache keeps only its last ``window - 1`` positions: the only
        ones a later query can see). None when the cache is not one this can read (the caller decodes through
        transformers' own cache instead)."""
        prefilled = getattr(cache, "layers", None)
        if prefilled is None or len(prefilled) != layers:
            return None
        keys, values = [], []
        for layer in prefilled:
            k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(k, Tensor) or not isinstance(v, Tensor) or k.ndim != 4 or k.shape[2] > width:
                return None
            for source, into in ((k, keys), (v, values)):
                buffer = source.new_zeros((rows.shape[0], source.shape[1], capacity, source.shape[3]))
                buffer[:, :, width - source.shape[2] : width] = source[rows]
                into.append(buffer)
        last = torch.tensor(width - 1, dtype=torch.long, device=keys[0].device)
        return cls(keys, values, last, padding_start)


@torch.library.custom_op("stratagem::decode_attention", mutates_args=())
def decode_op(q: Tensor, k_cache: Tensor, v_cache: Tensor, last: Tensor, sinks: Tensor | None, window: int | None,
              padding_start: Tensor | None, scale: float | None) -> Tensor:  # fmt: skip
    """``kernels.decode_attention`` as one opaque operator, so that torch.compile fuses the layer around it
    without tracing into the Triton launch. On CPU the torch reference (the kernel would run interpreted)."""
    backend = "auto" if q.is_cuda else "reference"
    return decode_attention(q, k_cache, v_cache, last, sinks=sinks, window=window, padding_start=padding_start,
                            scale=scale, backend=backend)  # fmt: skip


@decode_op.register_fake
def _(q: Tensor, k_cache: Tensor, v_cache: Tensor, last: Tensor, sinks: Tensor | None, window: int | None,
      padding_start: Tensor | None, scale: float | None) -> Tensor:  # fmt: skip
    return torch.empty_like(q)


def static_kv_attention(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        sliding_window: int | None = None, s_aux: Tensor | None = None,
                        **kwargs: Any) -> tuple[Tensor, None]:  # fmt: skip
    """transformers' attention signature for one decode step: q [B, Hq, 1, D] against the whole ``StaticKV``."""
    kv: StaticKV = kwargs[KWARG]
    if kv.filled is None:  # on the device: the split-K kernel over the whole buffer, bounded by ``last`` on the GPU
        out = decode_op(query, key, value, kv.last, s_aux, sliding_window, kv.padding_start, scaling)
    elif s_aux is None and kv.every_row_real:  # eager: the written slots only, through torch's own attention
        keys, values = key[:, :, : kv.filled], value[:, :, : kv.filled]
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=kv.visible(sliding_window), scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])  # fmt: skip
    else:  # sinks, or a row with no real token (sdpa would give it NaN): the reference, on the written slots
        out = decode_reference(query, key[:, :, : kv.filled], value[:, :, : kv.filled], kv.last, sinks=s_aux,
                               window=sliding_window, padding_start=kv.padding_start, scale=scaling)  # fmt: skip
    return out.transpose(1, 2), None


def supports_static_kv(model: Any) -> bool:
    """Whether the model's attention goes through transformers' attention interface with nothing the decode
    kernel lacks (a logit softcap); others decode through transformers' dynamic cache."""
    config = model.config
    return bool(getattr(type(model), "_supports_attention_backend", False)) and (
        getattr(config, "attn_logit_softcapping", None) is None
    )


@contextmanager
def decoding_with(model: Any) -> Iterator[None]:
    """The model's attention switched to ``static_kv_attention`` inside; its own implementation after."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, static_kv_attention)
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
