"""The LLM that writes programs: load a causal LM (plus a LoRA adapter) and sample completions.

Sampling is our own loop rather than ``model.generate``: a training step needs the exact
token ids, masks and "was it cut off" flags GRPO trains on, the random stream must come from
one ``torch.Generator`` (saved in checkpoints, so a resumed run samples what the uninterrupted
one would have), and a completion should stop as soon as its program is complete, not run on
to ``max_new_tokens``. Prompts are left-padded into one batch; positions count real tokens
only; every step after the prefill feeds one token per row through the KV cache.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
            return get_peft_model(model, config)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ModelLoadError(f"lora_target_modules {target_modules}: {exc}") from None


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


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    max_new_tokens: int = 256
    stop_at_program_end: bool = True  # stop once a fenced code block closes


@dataclass
class Completions:
    prompt_ids: Tensor  # [B, P], left-padded
    prompt_mask: Tensor  # [B, P]
    completion_ids: Tensor  # [B, C], right-padded with the pad id
    completion_mask: Tensor  # [B, C], 1 up to and including the last generated token
    texts: list[str]
    truncated: list[bool]  # stopped by max_new_tokens, not by EOS or the end of the program


def filter_logits(logits: Tensor, params: SamplingParams) -> Tensor:
    """Temperature, then top-k, top-p (nucleus) and min-p, as vLLM and transformers apply them."""
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > params.top_p  # the mass before a token already covers top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    if params.min_p is not None and params.min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(-1, keepdim=True).values, float("-inf"))
    return logits


_FENCE = re.compile(r"(?m)^[ \t]*```")  # [ \t], not \s: a run of blank lines stays linear


def program_complete(text: str) -> bool:
    """Whether a completion's code block has closed: a second fence, or a fence after unfenced code."""
    fences = list(_FENCE.finditer(text))
    return len(fences) >= 2 or (len(fences) == 1 and "def " in text[: fences[0].start()])


def _backtick_tokens(tokenizer: Any) -> Tensor:
    """Per vocabulary id: whether the token can end a fence (only then is the text decoded and checked)."""
    cached = getattr(tokenizer, "_stratagem_backticks", None)
    if cached is None:
        size = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0))
        cached = torch.tensor(["`" in tokenizer.decode([i]) for i in range(size)], dtype=torch.bool)
        tokenizer._stratagem_backticks = cached
    return cached


def cache_field(output: Any) -> str:
    """The name of the KV cache in a model's output and forward: ``cache`` in newer transformers (which warn,
    with a FutureWarning, that ``past_key_values`` goes in 5.40), ``past_key_values`` in older ones (4.56...)."""
    return "cache" if "cache" in getattr(type(output), "__dataclass_fields__", {}) else "past_key_values"


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompt_ids: Tensor, prompt_mask: Tensor, params: SamplingParams,
           generator: torch.Generator | None = None) -> Completions:  # fmt: skip
    """Sample one completion per prompt row, all rows in one batch through one KV cache."""
    device = next(model.parameters()).device
    ids, mask = prompt_ids.to(device), prompt_mask.to(device)
    batch = ids.shape[0]
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    eos = {tokenizer.eos_token_id, *configured} - {None}
    eos_ids = torch.tensor(sorted(eos), device=device)
    backticks = _backtick_tokens(tokenizer).to(device) if params.stop_at_program_end else None
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    cache = cache_field(out)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), params.max_new_tokens, dtype=torch.long, device=device)
    tokens: list[Tensor] = []
    for step in range(params.max_new_tokens):
        logits = filter_logits(out.logits[:, -1, :].float(), params)
        token = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
        tokens.append(token)
        ended = ~done & torch.isin(token, eos_ids)
        if backticks is not None:
            for row in (~done & ~ended & backticks[token]).nonzero().flatten().tolist():
                if program_complete(tokenizer.decode(torch.stack(tokens)[:, row])):
                    ended[row] = True
        lengths[ended] = step + 1  # a row keeps the token that ended it (EOS or the closing fence)
        done |= ended
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=-1)
        position = position[:, -1:] + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    **{cache: getattr(out, cache)})  # fmt: skip
    completion = torch.stack(tokens, dim=1) if tokens else torch.empty((batch, 0), dtype=torch.long, device=device)
    completion_mask = (torch.arange(completion.shape[1], device=device)[None, :] < lengths[:, None]).long()
    texts = [
        tokenizer.decode(row[: int(n)], skip_special_tokens=True)
        for row, n in zip(completion, lengths.tolist(), strict=True)
    ]
    return Completions(prompt_ids=ids.cpu(), prompt_mask=prompt_mask.cpu(), completion_ids=completion.cpu(),
                       completion_mask=completion_mask.cpu(), texts=texts, truncated=(~done).tolist())  # fmt: skip
