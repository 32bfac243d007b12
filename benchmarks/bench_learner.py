"""The learner end to end against TRL's GRPOTrainer on the same model: time per step, peak memory, longest fit.

    python benchmarks/bench_learner.py [--shape qwen3|gpt-oss] [--variants trl ours ours-sdpa]
                                       [--generations 64] [--group 8] [--prompt 128] [--completion 256]
                                       [--lengths 1024 2048 ... 131072] [--device auto|cpu|cuda] [--quick]
                                       [--memory-snapshots DIR]   # CUDA: who holds the peak's bytes (memory_peak.py)

One random-initialised model (the shapes of ``bench_rollout.py``, bf16 on CUDA), saved to a directory with a
word-level tokenizer over its whole vocabulary, so both trainers load the same weights offline. Same prompts
(random words, ``--prompt`` long), same group size, completion length and loss (``dapo``, beta 0), LoRA r=16
alpha=32 on every linear layer, one optimizer step per generated batch of ``--generations`` completions
(micro-batches of 8), temperature 1, the end-of-sequence token never drawn in practice (a 150k vocabulary). The
reward is a cheap stand-in, the same function for both (the fraction of distinct words in a completion).

- ``trl``: TRL's ``GRPOTrainer`` (``pip install trl``; skipped with a note where it is missing), transformers'
  own attention (sdpa, eager for gpt-oss's sinks), gradient checkpointing on (its default);
- ``ours``: ``rollout.sample`` + ``rl.learner.Learner``, our attention on CUDA (``attn_implementation=
  "stratagem"``), gradient checkpointing on;
- ``ours-chunked``: ``ours`` sampling ``--sampling-batch`` completions at a time (``sampling_batch_size``: the
  KV cache, most of sampling's memory, is that much smaller);
- ``ours-offload``: ``ours`` with ``activation_offload`` (the activations saved for backward wait in host
  memory);
- ``ours-sdpa``: ``ours`` with transformers' sdpa attention.

First table: seconds per optimizer step split into sample / reward / update (the mean of ``--steps`` steps
after one warm-up step), and the peak GPU memory over the steps. TRL's split: its ``generate`` calls and its
reward function timed from outside, the update the rest of the step. Second table: the longest completion that
fits (``--lengths``, one update of ``--length-batch`` completions each), its peak and how long its update took;
generation replaced by random tokens of that length, for both: this measures the learner, and sampling 32k
tokens would take the whole budget.

``--device cpu`` (implied ``--quick``): a tiny Qwen3 shape, 4 completions of 8 tokens, lengths 16 and 32; the
test suite runs it so the code path stays alive where there is no GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_rollout import build  # the same shapes and tokenizer
from learner_measure import (
    StepTimes,
    nan_low,
    peak_gib,
    peak_memory,
    phase_peak,
    prompts,
    recording,
    release,
    snapshot_path,
    stand_in_reward,
    sync,
)
from learner_trl import fits_trl, run_trl, trl_missing

VARIANTS = ("trl", "ours", "ours-chunked", "ours-offload", "ours-sdpa")


def save_model(shape: str, quick: bool, device: str, where: Path) -> Path:
    from stratagem.agents.policy import no_transformers_bars

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tokenizer = build(shape, quick, "cpu", dtype)
    with no_transformers_bars():
        model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


def our_config(args: argparse.Namespace, completion: int, generations: int, variant: str) -> Any:
    from stratagem.rl.config import make_config

    return make_config({"model": str(args.model_dir), "device": args.device, "max_steps": 1000,
                        "dtype": "bfloat16" if args.device == "cuda" else "float32", "loss_type": "dapo",
                        "beta": 0.0, "num_generations": min(args.group, generations),
                        "per_device_train_batch_size": min(8, generations),
                        "gradient_accumulation_steps": max(1, generations // 8), "learning_rate": 1e-5,
                        "max_completion_length": completion, "max_prompt_length": None, "lora_r": 16,
                        "lora_alpha": 32, "lora_dropout": 0.0, "gradient_checkpointing": True,
                        "activation_offload": variant == "ours-offload",
                        "sampling_batch_size": args.sampling_batch if variant == "ours-chunked" else None})  # fmt: skip


def load_ours(args: argparse.Namespace, variant: str, completion: int, generations: int) -> tuple[Any, Any, Any]:
    from stratagem.agents.policy import add_lora, enable_checkpointing, load_model
    from stratagem.rl.learner import Learner

    config = our_config(args, completion, generations, variant)
    attention = "sdpa" if variant == "ours-sdpa" or args.device != "cuda" else "stratagem"
    base, tokenizer = load_model(args.model_dir, config.dtype, args.device, attention)
    model = add_lora(base, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
    enable_checkpointing(model)
    return model, tokenizer, Learner(model, config, args.device)


def run_ours(args: argparse.Namespace, variant: str) -> StepTimes:
    from stratagem.agents.policy import encode_prompts
    from stratagem.rl.losses import group_advantages
    from stratagem.rollout import SamplingParams, sample

    model, tokenizer, learner = load_ours(args, variant, args.completion, args.generations)
    texts = [p for p in prompts(args.generations // args.group, args.prompt, args.vocab) for _ in range(args.group)]
    ids, mask = encode_prompts(tokenizer, texts)
    params = SamplingParams(max_new_tokens=args.completion, stop_at_program_end=False)
    generator = torch.Generator(device=args.device).manual_seed(0)
    times = StepTimes()
    with peak_memory(args.device, times, snapshot_path(args, variant)):
        for step in range(args.steps + 1):
            started = time.perf_counter()
            model.eval()
            completions = sample(model, tokenizer, ids, mask, params, generator,
                                 max_batch=learner.config.sampling_batch_size)  # fmt: skip
            sync(args.device)
            times.sample_peak_gib = max(times.sample_peak_gib, phase_peak(args.device), key=nan_low)
            sampled = time.perf_counter()
            rewards = torch.tensor(stand_in_reward(completions.texts))
            advantages = group_advantages(rewards, args.group)
            rewarded = time.perf_counter()
            learner.update(completions, advantages)
            sync(args.device)
            times.update_peak_gib = max(times.update_peak_gib, phase_peak(args.device), key=nan_low)
            if step:  # the first step warms up (compiles, tunes kernels)
                times.sample.append(sampled - started)
                times.reward.append(rewarded - sampled)
                times.update.append(time.perf_counter() - rewarded)
    return times


def fits_ours(args: argparse.Namespace, variant: str, length: int) -> tuple[float, float] | None:
    """One update of ``--length-batch`` random completions of ``length`` tokens: its peak GiB (read before the
    ``finally`` resets the counter) and seconds, None on running out of memory."""
    release(args.device)
    from stratagem.rollout.sampling import Completions

    model, _, learner = load_ours(args, variant, length, args.length_batch)
    batch, vocab = args.length_batch, args.vocab
    g = torch.Generator().manual_seed(0)
    completions = Completions(prompt_ids=torch.randint(2, vocab, (batch, args.prompt), generator=g),
                              prompt_mask=torch.ones(batch, args.prompt, dtype=torch.long),
                              completion_ids=torch.randint(2, vocab, (batch, length), generator=g),
                              completion_mask=torch.ones(batch, length, dtype=torch.long), texts=[""] * batch,
                              truncated=[True] * batch)  # fmt: skip
    try:
        started = time.perf_counter()
        with recording(args.device, snapshot_path(args, variant, length)):
            learner.update(completions, torch.randn(batch, generator=g))
            sync(args.device)
        return peak_gib(args.device), time.perf_counter() - started
    except torch.OutOfMemoryError:
        return None
    finally:
        del model, learner
        release(args.device)


def longest_fit(args: argparse.Namespace, variant: str) -> tuple[int | None, float, float]:
    """The longest of ``--lengths`` (tried shortest first, up to the first that does not fit), its peak GiB and
    the seconds its update took."""
    best, peak, seconds = None, float("nan"), float("nan")
    for length in sorted(args.lengths):
        fit = fits_trl(args, length) if variant == "trl" else fits_ours(args, variant, length)
        if fit is None:
            break
        best, (peak, seconds) = length, fit
    return best, peak, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--shape", choices=["qwen3", "gpt-oss"], default="qwen3")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--generations", type=int, default=64, help="completions per optimizer step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (num_generations)")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="measured steps, after one warm-up step")
    parser.add_argument("--lengths", type=int, nargs="*", default=[2**n for n in range(10, 18)])  # 1k..128k
    parser.add_argument("--length-batch", type=int, default=2, help="completions per update in the length table")
    parser.add_argument("--sampling-batch", type=int, default=16, help="ours-chunked: completions sampled at once")
    parser.add_argument("--tables", nargs="+", choices=["steps", "lengths"], default=["steps", "lengths"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--memory-snapshots",
        metavar="DIR",
        help="CUDA: save each variant's allocator history as DIR/SHAPE-VARIANT.pickle (steps table) and "
        "DIR/SHAPE-VARIANT-LENGTH.pickle (lengths table); benchmarks/memory_peak.py prints who holds each peak",
    )
    args = parser.parse_args(argv)
    args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    args.quick = args.quick or args.device == "cpu"
    if args.quick:
        args.shape, args.generations, args.group, args.prompt, args.completion = "qwen3", 4, 2, 8, 8
        args.steps, args.length_batch = 1, 2
        args.lengths = [n for n in args.lengths if n <= 32] or [16, 32]
    variants = list(args.variants)
    if "trl" in variants and (why := trl_missing()):
        print(why)
        variants.remove("trl")
    with tempfile.TemporaryDirectory() as where:
        args.model_dir = save_model(args.shape, args.quick, args.device, Path(where))
        from transformers import AutoConfig

        args.vocab = AutoConfig.from_pretrained(args.model_dir).vocab_size
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        print(f"{name}, torch {torch.__version__}, {args.shape}, {args.generations} completions of {args.completion} "
              f"tokens in groups of {args.group}, prompts of {args.prompt}, LoRA r=16 all-linear, dapo")  # fmt: skip
        if "steps" in args.tables:
            steps_table(args, variants)
        if "lengths" in args.tables:
            lengths_table(args, variants)


def steps_table(args: argparse.Namespace, variants: list[str]) -> None:
    print(f"{'variant':12} {'sample s':>9} {'reward s':>9} {'update s':>9} {'step s':>8} {'vs first':>9} "
          f"{'peak GiB':>9} {'vs first':>9} {'in sample':>10} {'in update':>10}")  # fmt: skip
    first, first_peak = None, None
    for variant in variants:
        times = run_trl(args) if variant == "trl" else run_ours(args, variant)
        parts = [statistics.mean(x) if x else float("nan") for x in (times.sample, times.reward, times.update)]
        step = sum(parts)
        first, first_peak = first or step, first_peak or times.peak_gib
        print(f"{variant:12} {parts[0]:>9.2f} {parts[1]:>9.3f} {parts[2]:>9.2f} {step:>8.2f} {step / first:>9.2f} "
              f"{times.peak_gib:>9.2f} {times.peak_gib / first_peak:>9.2f} {times.sample_peak_gib:>10.2f} "
              f"{times.update_peak_gib:>10.2f}", flush=True)  # fmt: skip


def lengths_table(args: argparse.Namespace, variants: list[str]) -> None:
    print(f"\nlongest completion that fits ({args.length_batch} completions of a {args.prompt}-token prompt, one "
          f"update; tried {sorted(args.lengths)}):")  # fmt: skip
    print(f"{'variant':12} {'longest':>9} {'vs first':>9} {'peak GiB':>9} {'update s':>9}")
    first = None
    for variant in variants:
        best, peak, seconds = longest_fit(args, variant)
        first = first or best
        ratio = f"{best / first:>9.2f}" if best and first else f"{'-':>9}"
        print(f"{variant:12} {best or 'none':>9} {ratio} {peak:>9.2f} {seconds:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
