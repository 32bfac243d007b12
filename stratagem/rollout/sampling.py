"""What a sampling call is asked for and what it gives back, and the per-token choices it makes.

``SamplingParams`` and ``Completions`` are the sampler's contract with the trainer: exact token ids, the
masks GRPO trains on, and "was it cut off" flags. ``StopTracker`` decides when a row is finished without a
host sync per token: end-of-sequence tokens and the token budget are tracked on the device, and the closing
code fence (a text-level condition: a fence can be split over tokens) is checked on the host every few
tokens, only for the rows that drew a token containing a backtick, at the exact token where it closed. So a
row's tokens and length are those of a check after every token; only the loop may run a few steps past the
moment every row was done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy (the most likely token, as generate(do_sample=False))
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


Draws = torch.Generator | Tensor | None  # a generator, or one uniform per row and token drawn ahead ([B, T])


def choose_tokens(logits: Tensor, params: SamplingParams, generator: Draws, step: int = 0) -> Tensor:
    """[B] next tokens from [B, V] logits: drawn from the filtered distribution, or the argmax at temperature 0.

    ``generator`` is a ``torch.Generator`` (one stream for the whole batch), or a [B, T] tensor of uniforms in
    [0, 1), row ``i``'s draw for token ``step`` at ``[i, step]``, inverted through the row's CDF. With the
    latter, a row's tokens depend on its own uniforms only, never on which other rows share its batch: a
    trainer split over several processes samples each group as one process would (``rl/distributed.py``).
    """
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float(), params).softmax(-1)
    if not isinstance(generator, Tensor):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    cdf = probs.double().cumsum(-1)  # float64: a float32 sum over a 150k vocabulary loses the tail's tokens
    target = generator[:, step : step + 1].to(cdf) * cdf[:, -1:]
    token = torch.searchsorted(cdf, target, right=True).clamp(max=probs.shape[-1] - 1).squeeze(-1)
    # ``target`` < the total puts every draw on a token of positive probability; rounding at the very top of the
    # CDF could land on a filtered-out last token, which then gives way to the row's most likely one.
    return torch.where(probs.gather(-1, token[:, None]).squeeze(-1) > 0, token, probs.argmax(-1))


_FENCE = re.compile(r"(?m)^[ \t]*```")  # [ \t], not \s: a run of blank lines stays linear


def program_complete(text: str) -> bool:
    """Whether a completion's code block has closed: a second fence, or a fence after unfenced code."""
    fences = list(_FENCE.finditer(text))
    return len(fences) >= 2 or (len(fences) == 1 and "def " in text[: fences[0].start()])


def backtick_tokens(tokenizer: Any) -> Tensor:
    """Per vocabulary id: whether the token can end a fence (only then is the text decoded and checked)."""
    cached = getattr(tokenizer, "_stratagem_backticks", None)
    if cached is None:
        size = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0))
        cached = torch.tensor(["`" in tokenizer.decode([i]) for i in range(size)], dtype=torch.bool)
        tokenizer._stratagem_backticks = cached
    return cached


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's end of sequence and every one the model's generation config names."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    return sorted({tokenizer.eos_token_id, *configured} - {None})


class StopTracker:
    """Which rows are done and how long each is, kept on the device; the fence check runs every ``every`` tokens.

    ``lengths[b]`` is the number of tokens row b keeps (the one that ended it included); rows not done keep
    ``max_new_tokens``. ``tokens`` [B, max_new_tokens] is the buffer the sampler writes into.
    """

    def __init__(self, tokenizer: Any, eos: list[int], params: SamplingParams, batch: int, device: torch.device,
                 every: int = 16) -> None:  # fmt: skip
        self.tokenizer, self.params, self.every = tokenizer, params, max(1, every)
        self.pad = int(tokenizer.pad_token_id)
        self.eos = torch.tensor(eos, dtype=torch.long, device=device)
        self.backticks = backtick_tokens(tokenizer).to(device) if params.stop_at_program_end else None
        self.tokens = torch.full((batch, params.max_new_tokens), self.pad, dtype=torch.long, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.lengths = torch.full((batch,), params.max_new_tokens, dtype=torch.long, device=device)
        self.checked = 0  # the fence is checked for every token before this step

    def record(self, step: int, token: Tensor) -> Tensor:
        """Store step's [B] tokens (pad for rows already done) and end the rows that drew an EOS; the token to feed."""
        token = torch.where(self.done, self.pad, token)
        self.tokens[:, step] = token
        ended = ~self.done & torch.isin(token, self.eos)
        self.lengths.masked_fill_(ended, step + 1)
        self.done |= ended
        return token

    def all_done(self, step: int) -> bool:
        """After step's tokens: whether every row is done (a host sync: only every ``every`` steps and at the end)."""
        last = step + 1 == self.params.max_new_tokens
        if not last and (step + 1) % self.every:
            return False
        if self.backticks is not None:
            self._check_fences(step + 1)
        return last or bool(self.done.all())

    def _check_fences(self, upto: int) -> None:
        """End each row whose code block closed at one of the tokens ``checked..upto``, at that token."""
        start, self.checked = self.checked, upto
        block = self.tokens[:, start:upto]
        open_rows = self.lengths > start  # an EOS row is done only from its EOS on
        candidates = (self.backticks[block] & open_rows[:, None]).nonzero().tolist()
        if not candidates:
            return
        rows, lengths = self.tokens.tolist(), self.lengths.tolist()
        # A row done by an EOS was checked up to the token before it (that token ends it whatever it is).
        limits = [n - done for n, done in zip(lengths, self.done.tolist(), strict=True)]
        for row, offset in candidates:  # row-major, so each row's earliest closing fence comes first
            step = start + offset
            if step < min(limits[row], lengths[row]) and program_complete(self.tokenizer.decode(rows[row][: step + 1])):
                lengths[row] = step + 1
        new = torch.tensor(lengths, dtype=torch.long, device=self.lengths.device)
        self.done |= new < self.lengths
        self.lengths.copy_(new)

    def completions(self, prompt_ids: Tensor, prompt_mask: Tensor) -> Completions:
        """The result: tokens cut to the longest row, pad after each row's end, and the texts."""
        width = int(self.lengths.max()) if bool(self.done.all()) else self.params.max_new_tokens
        columns = torch.arange(width, device=self.tokens.device)[None, :]
        mask = columns < self.lengths[:, None]
        ids = torch.where(mask, self.tokens[:, :width], self.pad)
        rows = zip(ids.tolist(), self.lengths.tolist(), strict=True)
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in rows]
        return Completions(prompt_ids=prompt_ids.cpu(), prompt_mask=prompt_mask.cpu(), completion_ids=ids.cpu(),
                           completion_mask=mask.long().cpu(), texts=texts, truncated=(~self.done).tolist())  # fmt: skip
