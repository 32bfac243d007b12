"""Peak memory and time of per-token log-probs, forward + backward: full logits (naive) vs chunked recompute.

    python benchmarks/bench_logprobs.py [--vocab 151936] [--tokens N] [--hidden 896] [--chunk N]
                                        [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16|float16] [--repeats N]

The shape is a Qwen2.5-0.5B-like head (hidden 896, vocab 151936) over ``--tokens`` completion tokens.
``naive`` is ``naive_token_logprobs`` (float32 logits, log_softmax, gather); ``chunked`` is ``token_logprobs``.
Each variant runs in a fresh subprocess, so neither inherits the other's allocations:

- peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the first forward+backward, minus what
  was allocated before it (the inputs); on CPU, the process's peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before) minus its resident set before the step. Both include the gradients
  that both variants must produce (the weight's is V x H, in the inputs' dtype); one float32 copy of the logits is
  ``tokens x vocab x 4`` bytes, printed above the table.
- saved: the bytes of the distinct storages autograd keeps for backward beyond the inputs (hidden, weight,
  targets), counted exactly by ``saved_tensors_hooks``.
- time: the median of ``--repeats`` forward+backward steps after that first (warm-up) one.
- values / gradients: the largest absolute difference between the variants' outputs.

Defaults: CUDA 8192 tokens, chunk 1024, bfloat16 inputs, 5 repeats; CPU 1024 tokens, chunk 128, float32,
2 repeats, which runs in about 2 minutes on 2 cores (the full shape needs about 3 float32 copies of the
logits for naive, 14 GiB at 8192 tokens: the script refuses CPU shapes whose naive estimate passes 16 GiB).

Results (ratios are what to compare; absolute times vary with the machine and its load):

H100 80GB, torch 2.11, ``--device cuda`` (defaults: 8192 tokens, vocab 151936, hidden 896, chunk 1024, bfloat16)::

    variant  |  peak MiB | vs naive | saved MiB |   time ms | vs naive
    naive    |     14824 |    1.000 |   5295.34 |     149.4 |     1.00
    chunked  |      2309 |    0.156 |      0.06 |     197.5 |     1.32
    (float32 inputs: naive 14276 MiB, chunked 1799 MiB (0.126), 149.4 vs 196.4 ms;
     16384 tokens, bfloat16: naive 29096 MiB, chunked 2323 MiB (0.080), 307.4 vs 393.1 ms)
    max |chunked - naive|: values 1.9e-06; bfloat16 grads differ by their rounding (hidden 4.9e-4 of 0.48,
    weight 0.031 of 15.2); with float32 inputs, grads 6e-08 and 3.8e-05

The chunked peak is the float32 copy of a bfloat16 weight, its float32 gradient accumulator and one chunk of
logits (chunk x V x 4 bytes): it stays flat as tokens grow, where naive's grows by three copies of the logits.
The time is one extra matrix product (the recomputation in backward), about 1.3x.

CPU, 2 shared cores, defaults (1024 tokens, vocab 151936, hidden 896, chunk 128, float32)::

    variant  |  peak MiB | vs naive | saved MiB |   time ms | vs naive
    naive    |      1817 |    1.000 |    593.50 |    9869.4 |     1.00
    chunked  |       683 |    0.376 |      0.01 |   11459.9 |     1.16
    (both peaks include the 523 MiB of float32 gradients; max |chunked - naive|: values 1.9e-06,
     grad hidden 4.5e-08, grad weight 8.6e-06)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stratagem.rl.logprobs import naive_token_logprobs, token_logprobs  # noqa: E402

MiB = 1 << 20
CPU_NAIVE_LIMIT = 16 << 30
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--tokens", type=int, default=None, help="rows (B*T); default 8192 on CUDA, 1024 on CPU")
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--chunk", type=int, default=None, help="rows per chunk; default 1024 on CUDA, 128 on CPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=None, help="timed steps; default 5 on CUDA, 2 on CPU")
    p.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)  # the child's role
    p.add_argument("--result", help=argparse.SUPPRESS)  # where the child saves its outputs
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.tokens = args.tokens or (8192 if cuda else 1024)
    args.chunk = args.chunk or (1024 if cuda else 128)
    args.dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (5 if cuda else 2)
    return args


# --- one variant, in its own process -----------------------------------------------------------------------


def status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    """Measure one variant; print its numbers as one JSON line and save its outputs to ``args.result``."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    g = torch.Generator(device).manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g, device=device) * args.hidden**-0.5).to(dtype)
    weight.requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g, device=device)
    upstream = torch.randn(args.tokens, generator=g, device=device)  # a GRPO-like per-token weighting

    def step() -> torch.Tensor:
        hidden.grad = weight.grad = None
        if args.variant == "naive":
            out = naive_token_logprobs(hidden, weight, targets, temperature=args.temperature)
        else:
            out = token_logprobs(hidden, weight, targets, temperature=args.temperature, chunk_size=args.chunk)
        (out * upstream).sum().backward()
        return out

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # What autograd keeps beyond the inputs, which the caller holds anyway (the weight is a parameter).
    inputs = {x.untyped_storage().data_ptr() for x in (hidden, weight, targets)}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in inputs:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        exact = reset_peak_rss()
        before = status_kib("VmRSS") * 1024 if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    sync()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = (status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024 - before

    times = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)

    grads = hidden.grad.numel() * hidden.grad.element_size() + weight.grad.numel() * weight.grad.element_size()
    torch.save({"logprobs": out.detach().cpu(), "hidden": hidden.grad.cpu(), "weight": weight.grad.cpu()}, args.result)
    print(json.dumps({"peak": peak, "saved": sum(storages.values()), "grads": grads, "time": statistics.median(times)}))


# --- the parent: run both, compare, print ------------------------------------------------------------------


def run_variant(variant: str, args: argparse.Namespace, result: Path) -> dict:
    argv = [sys.executable, __file__, "--variant", variant, "--result", str(result)]
    for name in ("vocab", "tokens", "hidden", "chunk", "device", "dtype", "temperature", "repeats"):
        argv += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{variant} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.variant:
        child(args)
        return
    logits_bytes = args.tokens * args.vocab * 4
    if args.device == "cpu" and 3 * logits_bytes > CPU_NAIVE_LIMIT:
        sys.exit(
            f"naive at {args.tokens} tokens x {args.vocab} vocab needs about 3 float32 copies of the logits,"
            f" {3 * logits_bytes / (1 << 30):.1f} GiB, over the 16 GiB this CPU run allows: reduce --tokens"
        )
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"{where}; tokens {args.tokens}, vocab {args.vocab}, hidden {args.hidden}, chunk {args.chunk},"
        f" {args.dtype} inputs, temperature {args.temperature}, torch {torch.__version__}"
    )
    if args.device == "cuda":
        measure = "peak memory = torch.cuda.max_memory_allocated above the inputs, one forward+backward"
    else:
        measure = "peak memory = peak RSS (VmHWM, reset before) above the RSS before one forward+backward"
    print(f"{measure}, fresh process per variant; one float32 copy of the logits = {logits_bytes / MiB:.0f} MiB")

    with tempfile.TemporaryDirectory() as tmp:
        rows, outputs = {}, {}
        for variant in ("naive", "chunked"):
            result = Path(tmp) / f"{variant}.pt"
            rows[variant] = run_variant(variant, args, result)
            outputs[variant] = torch.load(result)
            os.remove(result)

    naive = rows["naive"]
    print(f"\n{'variant':<8} | {'peak MiB':>9} | {'vs naive':>8} | {'saved MiB':>9} | {'time ms':>9} | {'vs naive':>8}")
    print(f"{'-' * 8} | {'-' * 9} | {'-' * 8} | {'-' * 9} | {'-' * 9} | {'-' * 8}")
    for variant, r in rows.items():
        print(
            f"{variant:<8} | {r['peak'] / MiB:>9.0f} | {r['peak'] / naive['peak']:>8.3f} | {r['saved'] / MiB:>9.2f}"
            f" | {r['time'] * 1e3:>9.1f} | {r['time'] / naive['time']:>8.2f}"
        )
    print(
        f"\nsaved = what autograd keeps for backward beyond the inputs (saved_tensors_hooks); both peaks include"
        f" the {naive['grads'] / MiB:.0f} MiB of gradients that both return"
    )
    print(f"times: median of {args.repeats} forward+backward steps after one warm-up step")
    for name in ("logprobs", "hidden", "weight"):
        diff = (outputs["chunked"][name].float() - outputs["naive"][name].float()).abs().max().item()
        scale = outputs["naive"][name].float().abs().max().item()
        what = "values" if name == "logprobs" else f"grad {name}"
        print(f"max |chunked - naive| {what:<12} {diff:.3g}  (max |naive| {scale:.3g})")


if __name__ == "__main__":
    main()
