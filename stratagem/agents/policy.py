"""The LLM that writes programs: load a causal LM (plus a LoRA adapter), encode prompts, and sample.

Sampling is our own engine (``stratagem.rollout``) rather than ``model.generate``: a training step needs
the exact token ids, masks and "was it cut off" flags GRPO trains on, the random stream must be one we
control (a ``torch.Generator``, or uniforms drawn ahead per row, which the trainer keys by (seed, step, group)
so a resumed run, or one split over processes, samples what the uninterrupted one would), a completion should
stop as soon as its program is complete, and on a GPU it is several times faster (a preallocated KV cache, a
CUDA-graph decode step, one prefill per distinct prompt). Prompts are left-padded into one batch; positions count
real tokens only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stratagem.rollout import Completions, SamplingParams, cache_field, filter_logits, program_complete, sample

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # "gpt2", "Qwen/Qwen3-0.6B"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """The model or tokenizer named by the user cannot be loaded; the message says why."""


class PromptTruncatedWarning(UserWarning):
    """A prompt is longer than the room it is given: its first tokens are cut (the message names both lengths)."""


@contextmanager
def no_transformers_bars() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Loading checkpoint shards") off, and only those.

    ``transformers.utils.logging.disable_progress_bar`` would also turn off (and re-enabling would reset)
    huggingface_hub's download bars, which are worth seeing; so the one switch that guards transformers'
    ``tqdm`` is set and restored here.
    """
    from transformers.utils import logging as hf_logging

    before = getattr(hf_logging, "_tqdm_active", None)
    if before is not None:
        hf_logging._tqdm_active = False
    try:
        yield
    finally:
        if before is not None:
            hf_logging._tqdm_active = before


def load_model(name_or_path: str | Path, dtype: str = "float32", device: str = "cpu",
               attn_implementation: str | None = None) -> tuple[Any, Any]:  # fmt: skip
    """A transformers causal LM and its tokenizer, from a local directory or (where a hub is reachable) a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name_or_path).expanduser()
    if not local.exists() and not HUB_ID.fullmatch(str(name_or_path)):
        raise ModelLoadError(f"cannot load model {name_or_path!r}: no such directory (and it is not a hub id)")
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(f"{local} is not a transformers model directory (no config.json in it)")
    source = str(local) if local.exists() else str(name_or_path)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if attn_implementation == "stratagem":
        import stratagem.kernels.hf  # noqa: F401  (registers the implementation with transformers)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        with no_transformers_bars():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local.exists())
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local.exists(), **kwargs)
    except (OSError, ValueError) as exc:
        where = "the local directory" if local.exists() else "a local directory or a reachable hub id"
        raise ModelLoadError(f"cannot load model {name_or_path!r} ({where}): {exc}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def add_lora(model: Any, r: int, alpha: int, dropout: float, target_modules: list[str]) -> Any:
    """Wrap the model in a fresh peft LoRA adapter; only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = "all-linear" if target_modules == ["all-linear"] else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
            model = get_peft_model(model, config)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ModelLoadError(f"lora_target_modules {target_modules}: {exc}") from None
    adapters_compute_in_input_dtype(model)
    return model


class InputDtypeLinear(torch.nn.Linear):
    """A LoRA factor whose float32 weights are cast to its input's dtype for the product (bf16 under a bf16 base,
    as autocast would): what it saves for backward is then the base layer's own input, not a float32 copy of it.
    peft's default casts the input up instead: one float32 copy of every adapted layer's input held until backward,
    2 GiB of the 23 GiB peak of a Qwen3-0.6B update at 131k tokens (``benchmarks/memory_peak.py``). The gradient
    still reaches the float32 weights, which the optimizer keeps in float32."""

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


def adapters_compute_in_input_dtype(model: Any) -> None:
    """Every plain LoRA layer's factors turned into ``InputDtypeLinear``, and peft's input cast switched off for
    them (a no-op in float32: the tests' exact comparisons see the same products). DoRA and other variants,
    which read the weights themselves, keep peft's cast."""
    from peft.tuners.lora import LoraLayer

    for layer in model.modules():
        if not isinstance(layer, LoraLayer) or getattr(layer, "lora_variant", None):
            continue
        factors = [*layer.lora_A.values(), *layer.lora_B.values()]
        if factors and all(type(f) in (torch.nn.Linear, InputDtypeLinear) for f in factors):
            for factor in factors:
                factor.__class__ = InputDtypeLinear
            layer.cast_input_dtype_enabled = False


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing, peft-wrapped or not, with input grads so a frozen base passes them on.

    Newer transformers name it ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` warns
    that it goes in v6); older ones have only the second name.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    enable()
    base.enable_input_require_grads()


def context_length(model: Any) -> int | None:
    """The most positions the model takes (``max_position_embeddings``), peft-wrapped or not; None if unknown."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    length = getattr(config, "max_position_embeddings", None)
    return int(length) if isinstance(length, int) and length > 0 else None


def prompt_room(max_length: int | None, context: int | None, max_new_tokens: int = 0) -> int | None:
    """How many prompt tokens fit: ``max_length`` (the user's ``max_prompt_length``) and, where the model's
    ``context`` is known, what it leaves beside the completion's ``max_new_tokens``; None: no bound."""
    bounds = [max_length] if max_length is not None else []
    if context is not None:
        bounds.append(max(1, context - max_new_tokens))
    return min(bounds) if bounds else None


def _truncation_message(lengths: list[int], room: int, max_length: int | None, context: int | None,
                        max_new_tokens: int) -> str:  # fmt: skip
    longest = max(lengths)
    over = sum(n > room for n in lengths)
    subject = "the prompt is" if len(set(lengths)) == 1 else f"{over} of {len(lengths)} prompts are cut; the longest is"
    if room == max_length:
        bound = f"max_prompt_length {max_length}"
        fits = context is None or longest + max_new_tokens <= context
        advice = f"raise max_prompt_length to {longest}" if fits else "raise max_prompt_length"
        advice += f" (the model's context is {context})" if context is not None else ""
    else:
        bound = f"the {room} tokens the model's context {context} leaves beside max_completion_length {max_new_tokens}"
        advice = "lower max_completion_length or use a model with a longer context"
    return (f"{subject} {longest} tokens, more than {bound}: its first {longest - room} tokens are cut, so the "
            f"model does not see the whole task; {advice}")  # fmt: skip


def encode_prompts(tokenizer: Any, prompts: list[str], max_length: int | None = None, *, context: int | None = None,
                   max_new_tokens: int = 0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Left-padded prompt ids and mask; a chat model's own template wraps each prompt as a user turn.

    A prompt longer than ``prompt_room(max_length, context, max_new_tokens)`` (``context``: the model's,
    see ``context_length``) keeps its last tokens, and one ``PromptTruncatedWarning`` per call says so,
    naming the prompt's length and the bound.
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    if chat:  # the template already holds the special tokens
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]  # fmt: skip
    rows = [tokenizer(p, add_special_tokens=not chat)["input_ids"] for p in prompts]
    room = prompt_room(max_length, context, max_new_tokens)
    if room is not None and max(map(len, rows)) > room:
        message = _truncation_message([len(row) for row in rows], room, max_length, context, max_new_tokens)
        warnings.warn(message, PromptTruncatedWarning, stacklevel=2)
        rows = [row[-room:] for row in rows]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


__all__ = ["Completions", "ModelLoadError", "PromptTruncatedWarning", "SamplingParams", "add_lora", "cache_field",
           "context_length", "enable_checkpointing", "encode_prompts", "filter_logits", "load_model",
           "no_transformers_bars", "program_complete", "prompt_room", "sample"]  # fmt: skip
