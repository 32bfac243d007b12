"""Sampling throughput: stratagem's sampler against transformers' ``generate`` on the same model and prompts.

    python benchmarks/bench_rollout.py [--shape qwen3|gpt-oss|all] [--batch 64] [--tokens 256] [--prompt 128]
                                       [--device auto|cpu|cuda] [--quick]

Random-initialised models built from configs (no download): a Qwen3-0.6B shape (28 layers, hidden 1024,
16/8 heads of 128, vocab 151,936, tied embeddings) and a gpt-oss shape (hidden 2880, 64/8 heads of 64,
attention sinks, sliding windows of 128 on alternate layers, 32 experts of which 4 per token; 4 layers so it
fits the time), in bfloat16 on CUDA. Every variant samples ``--batch`` completions of exactly ``--tokens``
tokens (EOS off) from the same left-padded prompts of ``--prompt`` tokens:

- ``hf dynamic``: ``model.generate`` with its default dynamic cache (the baseline every GRPO user has);
- ``hf static``: ``model.generate(cache_implementation="static")``;
- ``stratagem``: ``stratagem.rollout.sample`` as the trainer calls it: on CUDA the decode step compiled by
  torch.compile and captured in a CUDA graph (its warm-up runs the measured length: compiling is per shape);
- ``no compile``: the same, captured but not compiled; ``eager``: neither.

Columns: tokens/s (new tokens over the whole call, prefill included), the ratio to the first variant, peak
memory (CUDA: ``max_memory_allocated`` during the call, minus the model), and the fraction of the
memory-bandwidth roofline a decode step reaches: (bytes of weights + the KV cache read per step) / time per
step, against ``--bandwidth`` (4.3 TB/s measured on the H200). ``--quick`` (implied by ``--device cpu``) is a
tiny Qwen3 shape, batch 4 x 16 tokens, for CI-size runs. ``--profile`` prints the top kernels of a call.

Measured 2026-12-03 on the H200 (torch 2.11, transformers 5.17), with the rollout engine of issue 15::

    # SHAPE qwen3, then gpt-oss (--tokens is 256 by default):
    python benchmarks/bench_rollout.py --shape SHAPE --batch 64 256 --variants "hf dynamic" stratagem "no compile"
    python benchmarks/bench_rollout.py --shape all --batch 64 256 --tokens 1024 --variants stratagem

    shape    batch tokens  variant       tokens/s   vs first  peak MiB roofline
    qwen3       64    256  hf dynamic         553       1.00      2950     0.6%
    qwen3       64    256  stratagem        20627      37.32      3621    23.0%
    qwen3       64    256  no compile       10060      18.20      3621    11.2%
    qwen3      256    256  hf dynamic        2655       1.00     11799     2.1%
    qwen3      256    256  stratagem        43619      16.43     14485    34.5%
    qwen3      256    256  no compile       27784      10.46     14485    22.0%
    gpt-oss     64    256  hf dynamic        1689       1.00     12388     4.8%
    gpt-oss     64    256  stratagem        16886      10.00      2183    48.1%
    gpt-oss     64    256  no compile       14138       8.37      2183    40.3%
    gpt-oss    256    256  hf dynamic        1927       1.00     49548     1.4%
    gpt-oss    256    256  stratagem        47838      24.83      8720    35.4%
    gpt-oss    256    256  no compile       40917      21.23      8720    30.3%
    qwen3       64   1024  stratagem        18920                 8998    40.5%
    qwen3      256   1024  stratagem        33866                35991    61.5%
    gpt-oss     64   1024  stratagem        17617                 2182    50.9%

hf dynamic varies from run to run (709 and 764 tokens/s at qwen3 64 x 256 in two other runs). Before the
engine our sampler made 1,432 tokens/s there (2.0x), and every variant sat under 13% of the roofline: a decode
step was host-bound. Now, at batch 256 x 256, the decode-attention kernel is 38% of the compiled step's GPU
time (it reads the KV cache at ~3.7 TB/s); most of the rest is the sampling outside the graph (float logits,
softmax and multinomial over a 151,936-word vocabulary, ~0.5 ms a step) and small kernels. ``hf static``
compiles inside ``generate`` for each batch shape (minutes), so it is left out (165 tokens/s at qwen3
64 x 256, compile included, in the run before the engine).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import torch

QWEN3 = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
         "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
         "max_position_embeddings": 4096}  # fmt: skip
QWEN3_QUICK = {**QWEN3, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512}  # fmt: skip
GPT_OSS = {"hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 4, "num_attention_heads": 64,
           "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088, "num_local_experts": 32,
           "num_experts_per_tok": 4, "sliding_window": 128, "max_position_embeddings": 4096,
           "layer_types": ["sliding_attention", "full_attention"] * 2}  # fmt: skip


VARIANTS = ("hf dynamic", "hf static", "stratagem", "no compile", "eager")


@dataclass
class Row:
    variant: str
    tokens_per_s: float
    peak_mib: float
    roofline: float


def build(shape: str, quick: bool, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """A random model of the shape and a word-level tokenizer over its whole vocabulary (no download)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import AutoModelForCausalLM, GptOssConfig, PreTrainedTokenizerFast, Qwen3Config

    config = GptOssConfig(**GPT_OSS) if shape == "gpt-oss" else Qwen3Config(**(QWEN3_QUICK if quick else QWEN3))
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0", eos_token="t1", unk_token="t0")  # fmt: skip
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = None  # every row samples exactly --tokens tokens
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def prompts(batch: int, length: int, vocab: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts: row i has ``length - i % 8`` real tokens (padding as a group's prompts have none,
    but a batch of several tasks does)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for row in range(batch):
        pad = row % 8
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids.to(device), mask.to(device)


def run(variant: str, model: Any, tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor, tokens: int) -> float:
    """Seconds for one call that samples ``tokens`` new tokens per row."""
    from stratagem.rollout import SamplingParams, sample

    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    started = time.perf_counter()
    if not variant.startswith("hf"):
        params = SamplingParams(max_new_tokens=tokens, stop_at_program_end=False)
        graph = False if variant == "eager" else None
        out = sample(model, tokenizer, ids, mask, params, torch.Generator(device=ids.device).manual_seed(0),
                     cuda_graph=graph, compile=None if variant == "stratagem" else False)  # fmt: skip
        assert out.completion_ids.shape[1] == tokens, out.completion_ids.shape
    else:
        extra = {"cache_implementation": "static"} if variant == "hf static" else {}
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=tokens,
                             min_new_tokens=tokens, top_k=0, top_p=1.0, **extra)  # fmt: skip
        assert out.shape[1] == ids.shape[1] + tokens, out.shape
    sync()
    return time.perf_counter() - started


def decode_bytes(model: Any, batch: int, prompt: int, tokens: int) -> float:
    """Bytes one decode step reads, on average: every weight once (the embedding's rows aside) and the KV cache."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "embed_tokens" not in name)
    if config.tie_word_embeddings:
        weights += model.get_input_embeddings().weight.numel() * model.dtype.itemsize
    per_token = 2 * config.num_key_value_heads * config.head_dim * model.dtype.itemsize  # K and V, one layer
    windows = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    context = prompt + tokens / 2  # the mean length over the decode
    kv = sum(min(context, config.sliding_window) if kind == "sliding_attention" else context for kind in windows)
    return weights + batch * per_token * kv


def measure(shape: str, args: argparse.Namespace) -> list[Row]:
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tokenizer = build(shape, args.quick, device, dtype)
    ids, mask = prompts(args.batch, args.prompt, model.config.vocab_size, device)
    rows = []
    step_bytes = decode_bytes(model, args.batch, args.prompt, args.tokens)
    for variant in args.variants:
        # Warm-up at the measured batch: kernels, autotuning, the allocator, and the compilation that
        # transformers' static cache triggers per batch shape.
        # (The compiled step is compiled per cache shape: its warm-up runs the measured length.)
        run(variant, model, tokenizer, ids, mask, args.tokens if variant == "stratagem" and device == "cuda" else 4)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        seconds = min(run(variant, model, tokenizer, ids, mask, args.tokens) for _ in range(args.repeats))
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
        roofline = step_bytes / (seconds / args.tokens) / (args.bandwidth * 1e12) if device == "cuda" else float("nan")
        rows.append(Row(variant, args.batch * args.tokens / seconds, peak, roofline))
        if args.profile and not variant.startswith("hf"):
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run(variant, model, tokenizer, ids, mask, args.tokens)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--shape", choices=["qwen3", "gpt-oss", "all"], default="all")
    parser.add_argument("--batch", type=int, nargs="+", default=None)
    parser.add_argument("--tokens", type=int, nargs="+", default=None)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="a tiny Qwen3 shape, batch 4 x 16 tokens")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="the first is the baseline of the 'vs' column")  # fmt: skip
    parser.add_argument("--bandwidth", type=float, default=4.3, help="the GPU's memory bandwidth, TB/s")
    parser.add_argument("--profile", action="store_true", help="also print the top kernels of one stratagem call")
    args = parser.parse_args()
    args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    args.quick = args.quick or args.device == "cpu"
    shapes = ["qwen3"] if args.quick else (["qwen3", "gpt-oss"] if args.shape == "all" else [args.shape])
    batches = args.batch or ([4] if args.quick else [64])
    lengths = args.tokens or ([16] if args.quick else [256])
    if args.quick:
        args.prompt = min(args.prompt, 32)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, prompts of {args.prompt} tokens, sampling at temperature 1")
    print(f"{'shape':8} {'batch':>5} {'tokens':>6}  {'variant':11} {'tokens/s':>10} {'vs first':>10} "
          f"{'peak MiB':>9} {'roofline':>8}")  # fmt: skip
    for shape in shapes:
        for batch in batches:
            for tokens in lengths:
                args.batch, args.tokens = batch, tokens
                rows = measure(shape, args)
                base = rows[0].tokens_per_s
                for row in rows:
                    print(f"{shape:8} {batch:>5} {tokens:>6}  {row.variant:11} {row.tokens_per_s:>10.0f} "
                          f"{row.tokens_per_s / base:>10.2f} {row.peak_mib:>9.0f} {row.roofline:>8.1%}",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
