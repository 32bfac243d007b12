"""Log-probabilities of sampled tokens without ever holding the [tokens, vocab] logits.

A GRPO learner needs ``log p(token)`` for every completion token, with gradients. The usual way,
``log_softmax(lm_head(hidden)).gather(...)``, materialises the logits [B, T, V], and autograd keeps
them and the log_softmax result for backward: at a 150k vocabulary and 8k tokens that is 4.6 GiB
for each float32 copy. Here the rows are processed in chunks by a custom autograd function that
saves only its inputs and one logsumexp per row; backward recomputes each chunk's logits, so at any
moment only ``chunk_size x V`` of them exist, in forward and in backward. The price is one extra
matrix product (the recomputation) in backward.

- ``token_logprobs``: hidden states and the LM head in, log-probs out (the chunked function).
- ``naive_token_logprobs``: the full-logits reference, for tests and the benchmark.
- ``model_token_logprobs``: the trainer's entry point for a transformers causal LM, peft-wrapped or not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

# Config attributes by which some architectures rescale their logits (Cohere's ``logit_scale``,
# Granite's ``logits_scaling``); ``model_token_logprobs`` refuses them rather than returning wrong numbers.
UNSUPPORTED_LOGIT_SCALES = ("logit_scale", "logits_scaling")


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """float32 for half, bfloat16 and float32 inputs; float64 stays float64 (exact tests)."""
    return torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)


def _chunk_logits(h: Tensor, w: Tensor, b: Tensor | None, temperature: float, softcap: float | None) -> Tensor:
    """``softcap * tanh((h @ w.T + b) / softcap) / temperature`` for one chunk of rows, in place where possible."""
    z = torch.addmm(b, h, w.T) if b is not None else h @ w.T
    if softcap is not None:
        z = z.div_(softcap).tanh_().mul_(softcap)
    if temperature != 1.0:
        z = z.div_(temperature)
    return z


def _logsumexp_(logits: Tensor) -> Tensor:
    """``logsumexp`` over the last dim, overwriting ``logits``: ``torch.logsumexp`` would allocate another chunk."""
    peak = logits.amax(dim=-1, keepdim=True)
    return logits.sub_(peak).exp_().sum(dim=-1).log_().add_(peak.squeeze(-1))


SLICE_ELEMENTS = 2**24  # a vocabulary slice's weight in float32 is at most this many elements (64 MiB)


def _slices(vocab: int, hidden: int, vocab_chunk: int | None) -> list[slice]:
    """The vocabulary in slices: the head is cast to float32 one slice at a time, never whole (a 150k x 1024
    bfloat16 head would be 600 MB more in float32)."""
    size = vocab_chunk or max(1, SLICE_ELEMENTS // hidden)
    return [slice(v, min(v + size, vocab)) for v in range(0, vocab, size)]


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log p(target) for rows of ``hidden`` [N, H]; saves the inputs and logsumexp [N], recomputes in backward.

    Rows go ``chunk_size`` at a time and, within a chunk, the vocabulary a slice at a time (``_slices``), the
    logsumexp taken online over the slices (a running max and a rescaled sum, as flash attention's softmax)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        temperature: float,
        softcap: float | None,
        chunk_size: int,
        vocab_chunk: int | None,
    ) -> Tensor:
        dtype = _compute_dtype(hidden, weight)
        slices = _slices(weight.shape[0], weight.shape[1], vocab_chunk)
        # Autocast would put the matrix products back into half precision: the point is float32 logits.
        with torch.autocast(hidden.device.type, enabled=False):
            heads = _cast_once(weight, bias, dtype, slices)
            n = hidden.shape[0]
            logprobs = torch.empty(n, dtype=dtype, device=hidden.device)
            lse = torch.empty(n, dtype=dtype, device=hidden.device)
            for start in range(0, n, chunk_size):
                rows = slice(start, start + chunk_size)
                h, t = hidden[rows].to(dtype), targets[rows]
                peak = torch.full((h.shape[0],), -torch.inf, dtype=dtype, device=h.device)
                total = torch.zeros_like(peak)
                target_logits = torch.zeros_like(peak)
                for part in slices:
                    w, b = heads(part)
                    logits = _chunk_logits(h, w, b, temperature, softcap)
                    inside = (t >= part.start) & (t < part.stop)
                    picked = logits.gather(1, (t - part.start).clamp(0, logits.shape[1] - 1)[:, None]).squeeze(1)
                    target_logits = torch.where(inside, picked, target_logits)
                    new_peak = torch.maximum(peak, logits.amax(dim=-1))
                    total = total * (peak - new_peak).exp() + logits.sub_(new_peak[:, None]).exp_().sum(dim=-1)
                    peak = new_peak
                lse[rows] = total.log() + peak
                logprobs[rows] = target_logits - lse[rows]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.temperature, ctx.softcap, ctx.chunk_size, ctx.vocab_chunk = temperature, softcap, chunk_size, vocab_chunk
        return logprobs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_logprobs: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        temperature, softcap, chunk_size = ctx.temperature, ctx.softcap, ctx.chunk_size
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        dtype = lse.dtype
        slices = _slices(weight.shape[0], weight.shape[1], ctx.vocab_chunk)
        with torch.autocast(hidden.device.type, enabled=False):
            heads = _cast_once(weight, bias, dtype, slices)
            grad_out = grad_logprobs.to(dtype)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None
            # Summed over every chunk: accumulate in float32 (or float64), cast to the weight's dtype once at the end.
            grad_weight = torch.zeros_like(weight, dtype=dtype) if need_weight else None
            grad_bias = torch.zeros_like(bias, dtype=dtype) if need_bias else None
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                h, t, g = hidden[rows].to(dtype), targets[rows], grad_out[rows, None]
                grad_h = torch.zeros_like(h) if grad_hidden is not None else None
                for part in slices:
                    w, b = heads(part)
                    logits = _chunk_logits(h, w, b, temperature, softcap)
                    # d softcap*tanh(z/softcap) / dz = 1 - tanh^2, and tanh = logits * temperature / softcap.
                    dcap = None if softcap is None else (logits * (temperature / softcap)).square_().neg_().add_(1)
                    # d log p(t) / d logits = onehot(t) - softmax(logits), times the incoming gradient.
                    grad_z = logits.sub_(lse[rows, None]).exp_().mul_(-g)
                    inside = (t >= part.start) & (t < part.stop)
                    local = (t - part.start).clamp(0, grad_z.shape[1] - 1)[:, None]
                    grad_z.scatter_add_(1, local, torch.where(inside[:, None], g, torch.zeros_like(g)))
                    if temperature != 1.0:
                        grad_z.div_(temperature)
                    if dcap is not None:
                        grad_z.mul_(dcap)
                    if grad_h is not None:
                        grad_h.addmm_(grad_z, w)
                    if grad_weight is not None:
                        grad_weight[part].addmm_(grad_z.T, h)
                    if grad_bias is not None:
                        grad_bias[part] += grad_z.sum(0)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad_h
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def _cast_once(weight: Tensor, bias: Tensor | None, dtype: torch.dtype, slices: list[slice]) -> Any:
    """``heads(part)``: the head's slice ``part`` (and its bias) in ``dtype``. With one slice, cast once for every
    chunk of rows; with several, cast on demand (each slice costs a cast per chunk: bandwidth, not memory)."""
    if len(slices) == 1:
        whole = (weight.to(dtype), None if bias is None else bias.to(dtype))
        return lambda part: whole
    return lambda part: (weight[part].to(dtype), None if bias is None else bias[part].to(dtype))


def _check(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None, temperature: float) -> None:
    if hidden.shape[-1] != weight.shape[-1] or weight.ndim != 2:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: need [..., H] and [V, H]")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must be hidden's shape without H: {tuple(hidden.shape[:-1])}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias {tuple(bias.shape)} must be [V] = {tuple(weight.shape[:1])}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    softcap: float | None = None,
    vocab_chunk: int | None = None,
) -> Tensor:
    """``log p(targets)`` [...] under ``logits = softcap*tanh((hidden @ weight.T + bias)/softcap) / temperature``.

    ``hidden`` is [..., H] (e.g. [B, T, H]), ``weight`` the LM head [V, H] (it may require grad: tied
    embeddings, a trained head), ``targets`` [...] int64 in [0, V). ``softcap`` (None: none) is Gemma-2's
    final logit soft-capping, applied before the temperature as transformers does. The logits are computed
    in float32 (float64 if the inputs are float64), ``chunk_size`` rows by ``vocab_chunk`` words at a time
    (default: slices of 64 MiB of float32 head), and never exist whole; the result is float32 (float64).
    Gradients flow to ``hidden``, ``weight`` and ``bias``, each in its own dtype. Peak extra memory is about
    ``chunk_size * vocab_chunk * 4`` bytes (twice that with softcap) plus a float32 slice of a half-precision
    head (and, in backward, a float32 gradient accumulator for the head where it is trained).
    """
    _check(hidden, weight, targets, bias, temperature)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if vocab_chunk is not None and vocab_chunk < 1:
        raise ValueError(f"vocab_chunk must be >= 1 (or None: automatic), got {vocab_chunk}")
    logprobs = _ChunkedTokenLogprobs.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        bias,
        targets.reshape(-1),
        float(temperature),
        None if softcap is None else float(softcap),
        int(chunk_size),
        vocab_chunk,
    )
    return logprobs.view(targets.shape)


def naive_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
) -> Tensor:
    """The reference: the full float32 logits, ``log_softmax``, ``gather`` (what the chunked version must equal)."""
    _check(hidden, weight, targets, bias, temperature)
    dtype = _compute_dtype(hidden, weight)
    logits = hidden.to(dtype) @ weight.to(dtype).T
    if bias is not None:
        logits = logits + bias.to(dtype)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def model_token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    logits_to_keep: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-probs [B, logits_to_keep] of ``input_ids[:, -logits_to_keep:]`` under a transformers causal LM.

    Equals ``log_softmax(model(...).logits[:, -k-1:-1] / temperature).gather(...)`` without the logits: the
    decoder body (``get_decoder()``; for a peft ``PeftModel``, of ``get_base_model()``, whose injected LoRA
    layers still apply) gives the last hidden states, and ``token_logprobs`` applies the head
    (``get_output_embeddings()``), with its bias and the config's ``final_logit_softcapping`` if set.

    Raises NotImplementedError where that would silently differ from the model's own forward: a head that is
    not a plain ``nn.Linear`` (a LoRA-adapted or quantised head), a config that rescales logits
    (``logit_scale``, ``logits_scaling``), a peft prompt-learning adapter, or a model whose decoder body
    cannot be told apart from the model. Other architecture-specific logit post-processing in a model's
    ``forward`` (remote code, say) is not detected.
    """
    length = input_ids.shape[1]
    if not 0 < logits_to_keep < length:
        raise ValueError(f"logits_to_keep must be in [1, {length - 1}] for sequences of length {length}")
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        raise NotImplementedError("peft prompt-learning adapters change the inputs; only injected adapters (LoRA...)")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head, body = base.get_output_embeddings(), base.get_decoder()
    if type(head) is not nn.Linear:
        raise NotImplementedError(f"the LM head is a {type(head).__name__}; only a plain nn.Linear head is supported")
    if body is base:
        raise NotImplementedError(f"{type(base).__name__}.get_decoder() returns the model itself, not its body")
    config = base.config.get_text_config()
    for name in UNSUPPORTED_LOGIT_SCALES:
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise NotImplementedError(f"config.{name}={getattr(config, name)!r} rescales the logits; not supported")
    softcap = getattr(config, "final_logit_softcapping", None)

    outputs = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    # Position i predicts token i + 1: the k targets are predicted by positions -k-1 .. -2.
    hidden = outputs.last_hidden_state[:, -logits_to_keep - 1 : -1]
    return token_logprobs(
        hidden,
        head.weight,
        input_ids[:, -logits_to_keep:],
        bias=head.bias,
        temperature=temperature,
        chunk_size=chunk_size,
        softcap=softcap,
    )
