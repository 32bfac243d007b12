"""The sampler: one prefill per distinct prompt, then a decode loop built for throughput.

A decode step feeds one token per row; on a GPU its cost is launching kernels, not running them (hundreds
per step for a 28-layer model, each moving a few MB). So the step is made the same every time and captured
once in a CUDA graph: the KV cache is preallocated (``kv.StaticKV``), the slot written and the positions are
device tensors the graph itself advances, the attention is the split-K decode kernel, LoRA is folded into
the weights (``lora.lora_folded``), and nothing in the loop waits for the GPU except the stop check every
``check_every`` tokens (``sampling.StopTracker``). On CPU the same path runs without the graph.

Models whose attention does not go through transformers' attention interface decode through transformers'
dynamic cache, with the same stops, LoRA folding and results.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from stratagem.rollout.kv import KWARG, StaticKV, decoding_with, supports_static_kv
from stratagem.rollout.lora import lora_folded
from stratagem.rollout.sampling import Completions, Draws, SamplingParams, StopTracker, choose_tokens, eos_ids

CHECK_EVERY = 16  # tokens between two host checks of the stops


class CompileFallbackWarning(UserWarning):
    """torch.compile could not compile the decode step; sampling goes on without it (slower, same tokens)."""


def cache_field(output: Any) -> str:
    """The name of the KV cache in a model's output and forward: ``cache`` in newer transformers (which warn,
    with a FutureWarning, that ``past_key_values`` goes in 5.40), ``past_key_values`` in older ones (4.56...)."""
    return "cache" if "cache" in getattr(type(output), "__dataclass_fields__", {}) else "past_key_values"


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (LoRA lives in its modules either way)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CapturedStep:
    """``step()`` recorded once in a CUDA graph and replayed: the same kernels on the same buffers, one launch.

    Two eager runs first (on a side stream, as PyTorch asks) compile and tune the kernels; ``undo`` puts back
    what they advanced (the slot and positions), since replays must start where the eager loop would.
    """

    def __init__(self, step: Callable[[], Tensor], undo: Callable[[], None]) -> None:
        stream = _warmup_stream(torch.cuda.current_device())
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        undo()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step()
        undo()  # capture records the advance without running it; undo is idempotent (it restores saved values)

    def __call__(self) -> Tensor:
        self.graph.replay()
        return self.logits


_WARMUP_STREAMS: dict[int, torch.cuda.Stream] = {}


def _warmup_stream(device: int) -> torch.cuda.Stream:
    """One side stream per device for every capture's warm-up: cuBLAS keeps a 32 MiB workspace for each stream it
    has run on, never freed, so a new stream per sampled chunk grew the memory the update had left by that much."""
    if device not in _WARMUP_STREAMS:
        _WARMUP_STREAMS[device] = torch.cuda.Stream(device)
    return _WARMUP_STREAMS[device]


def _distinct_prompts(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct rows of a batch (a GRPO batch repeats each prompt num_generations times) and, per row, which."""
    rows = torch.cat([ids, mask], dim=1)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    return distinct[:, : ids.shape[1]], distinct[:, ids.shape[1] :], inverse


def compiled_forward(base: Any) -> Callable[..., Any]:
    """The model's forward compiled by torch.compile (inductor fuses each layer's norms, rotary embedding and
    activations around the decode attention); compiled once per model, kept on it."""
    compiled = getattr(base, "_stratagem_compiled_forward", None)
    if compiled is None:
        compiled = torch.compile(base.forward, dynamic=False)
        base._stratagem_compiled_forward = compiled
    return compiled


def _decode_static(base: Any, ids: Tensor, mask: Tensor, params: SamplingParams, stops: StopTracker,
                   generator: Draws, cuda_graph: bool, compile: bool) -> bool:  # fmt: skip
    """Prefill each distinct prompt once, copy its K/V into its rows, decode through ``StaticKV``; False if the
    model's prefill cache is not one ``StaticKV`` reads (nothing sampled then)."""
    batch, width = ids.shape
    distinct_ids, distinct_mask, rows = _distinct_prompts(ids, mask)
    out = base(input_ids=distinct_ids, attention_mask=distinct_mask, use_cache=True, logits_to_keep=1,
               position_ids=(distinct_mask.cumsum(-1) - 1).clamp(min=0))  # fmt: skip
    field = cache_field(out)
    real = mask.sum(-1)
    padding_start = (width - real) if bool((real < width).any()) else None
    kv = StaticKV.from_prefill(getattr(out, field), rows, width, width + params.max_new_tokens, padding_start,
                               base.config.get_text_config().num_hidden_layers)  # fmt: skip
    if kv is None:
        return False
    logits = out.logits[rows, -1]
    del out
    forward = [compiled_forward(base) if compile else base]  # a list: the compile may fail and be dropped
    if compile:
        kv.fixed_shapes()
    token = torch.zeros((batch, 1), dtype=torch.long, device=ids.device)
    position = (real - 1)[:, None].clone()
    masks = {"full_attention": None, "sliding_attention": None}  # StaticKV's attention needs no mask

    def step() -> Tensor:
        kv.advance()
        position.add_(1)
        return forward[0](input_ids=token, position_ids=position, attention_mask=masks, use_cache=True,
                          logits_to_keep=1, **{field: kv, KWARG: kv}).logits[:, -1]  # fmt: skip

    saved = kv.last.clone(), position.clone()

    def undo() -> None:  # back to before the first step: warm-up and capture runs must leave no trace
        kv.last.copy_(saved[0])
        position.copy_(saved[1])

    with decoding_with(base):
        if compile:
            try:
                with warnings.catch_warnings():
                    # Inductor's advice to turn on TF32: the float32 products in a half-precision decode are the
                    # rotary angles, float32 in transformers on purpose; TF32 would round them to 10 bits.
                    warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores", category=UserWarning)
                    # And its note that a softmax it split across blocks is not computed online: a speed remark
                    # meant for PyTorch's developers (it says to file an issue with them), nothing a user can act on.
                    warnings.filterwarnings("ignore", message=r"\s*Online softmax is disabled", category=UserWarning)
                    step()  # the compile happens here, before anything depends on it
            except Exception as exc:  # inductor or dynamo cannot compile this model here
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                warnings.warn(f"torch.compile failed on this model ({type(exc).__name__}: {reason}); sampling "
                              "without it (pass compile=False to skip the attempt)", CompileFallbackWarning,
                              stacklevel=3)  # fmt: skip
                forward[0] = base
            undo()
        if cuda_graph:
            step = CapturedStep(step, undo)
        for t in range(params.max_new_tokens):
            token[:, 0] = stops.record(t, choose_tokens(logits, params, generator, t))
            if stops.all_done(t):
                break
            logits = step()
    return True


def _decode_dynamic(base: Any, ids: Tensor, mask: Tensor, params: SamplingParams, stops: StopTracker,
                    generator: Draws) -> None:  # fmt: skip
    """Through transformers' own dynamic cache: any causal LM, a step at a time."""
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = base(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    field = cache_field(out)
    for t in range(params.max_new_tokens):
        token = stops.record(t, choose_tokens(out.logits[:, -1], params, generator, t))
        if stops.all_done(t):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        position = position[:, -1:] + 1
        out = base(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                   **{field: getattr(out, field)})  # fmt: skip


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompt_ids: Tensor, prompt_mask: Tensor, params: SamplingParams,
           generator: Draws = None, *, cuda_graph: bool | None = None, compile: bool | None = None,
           check_every: int = CHECK_EVERY, max_batch: int | None = None) -> Completions:  # fmt: skip
    """Sample one completion per prompt row (left-padded ``prompt_ids``/``prompt_mask``).

    ``max_batch`` caps the rows decoded at once: the KV cache, most of sampling's memory, grows with the rows,
    so a memory-bound run samples in chunks of ``max_batch`` rows, one after another (a short last chunk is
    filled up with copies of its last row, whose samples are dropped, so every chunk has the same shape and
    the compiled, captured step is reused). Chunked draws differ from one whole batch's but are as
    deterministic. By default all rows are decoded in one batch, the fastest.

    ``generator`` may instead be a [rows, >= max_new_tokens] tensor of uniforms drawn ahead, one per row and
    token (``sampling.choose_tokens``): then each row's tokens are the same whatever the batch or chunk it is
    decoded in.
    """
    rows = prompt_ids.shape[0]
    if isinstance(generator, Tensor) and (generator.ndim != 2 or generator.shape[0] != rows
                                          or generator.shape[1] < params.max_new_tokens):  # fmt: skip
        raise ValueError(f"uniforms of shape {tuple(generator.shape)}: expected [{rows}, >= {params.max_new_tokens}]"
                         " (one per row and token)")  # fmt: skip
    if max_batch is None or max_batch >= rows:
        return _sample_batch(model, tokenizer, prompt_ids, prompt_mask, params, generator, cuda_graph, compile,
                             check_every)  # fmt: skip
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1 (rows decoded at once), got {max_batch}")
    chunks = -(-rows // max_batch)
    size = -(-rows // chunks)  # as even as possible: 64 rows at most 24 at once are 3 chunks of 22
    parts = []
    for start in range(0, rows, size):
        index = torch.arange(start, start + size).clamp(max=rows - 1)
        draws = generator[index] if isinstance(generator, Tensor) else generator  # a filler row: its row's copy
        part = _sample_batch(model, tokenizer, prompt_ids[index], prompt_mask[index], params, draws,
                             cuda_graph, compile, check_every)  # fmt: skip
        parts.append((part, min(size, rows - start)))
    return _concatenate(parts, int(tokenizer.pad_token_id))  # the pad StopTracker writes after each row


def _concatenate(parts: list[tuple[Completions, int]], pad: int) -> Completions:
    """The chunks' completions as one batch: each chunk's first ``keep`` rows, right-padded to the widest."""
    width = max(part.completion_ids.shape[1] for part, _ in parts)

    def widened(t: Tensor, value: int, keep: int) -> Tensor:
        return torch.nn.functional.pad(t[:keep], (0, width - t.shape[1]), value=value)

    return Completions(prompt_ids=torch.cat([p.prompt_ids[:k] for p, k in parts]),
                       prompt_mask=torch.cat([p.prompt_mask[:k] for p, k in parts]),
                       completion_ids=torch.cat([widened(p.completion_ids, pad, k) for p, k in parts]),
                       completion_mask=torch.cat([widened(p.completion_mask, 0, k) for p, k in parts]),
                       texts=[t for p, k in parts for t in p.texts[:k]],
                       truncated=[t for p, k in parts for t in p.truncated[:k]])  # fmt: skip


def _sample_batch(model: Any, tokenizer: Any, prompt_ids: Tensor, prompt_mask: Tensor, params: SamplingParams,
                  generator: Draws, cuda_graph: bool | None, compile: bool | None,
                  check_every: int) -> Completions:  # fmt: skip
    """All rows in one batch.

    The random stream is ``generator``'s alone (one draw per row per step, done rows included), so a run
    resumed with a saved generator samples what the uninterrupted run would have. ``cuda_graph`` (default: on
    CUDA) replays the captured decode step; where capture is not possible it raises (pass False to run eager).
    ``compile`` (default: on CUDA) runs the decode step through torch.compile first: inductor fuses each layer's
    norms, rotary embedding and activations, 1.7-1.9x the step on an H200; it costs a one-off compile per model
    and cache shape (the trainer's shape never changes).
    """
    device = next(model.parameters()).device
    ids, mask = prompt_ids.to(device), prompt_mask.to(device)
    stops = StopTracker(tokenizer, eos_ids(model, tokenizer), params, ids.shape[0], device, check_every)
    base = base_model(model)
    graph = device.type == "cuda" if cuda_graph is None else cuda_graph
    compile = device.type == "cuda" if compile is None else compile
    compiles_now = compile and getattr(base, "_stratagem_compiled_forward", None) is None
    with lora_folded(model):
        if not (supports_static_kv(base) and _decode_static(base, ids, mask, params, stops, generator, graph, compile)):
            _decode_dynamic(base, ids, mask, params, stops, generator)
    if compiles_now:  # dynamo's trace objects hold this batch's KV cache in reference cycles: free it now, once,
        gc.collect()  # not whenever Python's collector next runs (the KV cache is most of sampling's memory)
    return stops.completions(ids, prompt_mask)
