"""Attention speed on a GPU (bf16): our kernel vs FlexAttention with a sink epilogue vs SDPA vs eager.

    python benchmarks/bench_attention.py                   # gpt-oss shape: B=1, 64 query heads, 8 KV heads
    python benchmarks/bench_attention.py --n 4096 8192 --d 64

FlexAttention has no sinks; the usual way to add them is its ``return_lse`` plus an unfused
epilogue, ``out * sigmoid(lse - sink)`` (the sink joins the denominator only). SDPA runs without
sinks, as an upper reference (its sliding window needs an explicit mask). Eager materialises
N x N scores, so it runs at 4k only. One table, all in the same run: milliseconds of GPU time
(median of ``triton.testing.do_bench_cudagraph``: the calls replayed from a CUDA graph, so the
host's launch overhead, large under this machine's gVisor, does not hide the kernels), TFLOP/s
(causal FLOPs halved, a window's counted exactly;
backward = 2.5 x forward), ratios against FlexAttention+sinks; the wall time of eagerly launched
forward+backward calls (what a loop without CUDA graphs sees when the kernels are short); and
the peak memory of a forward+backward above the inputs.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from stratagem.kernels import attention

H100_BF16_TFLOPS = 990.0


def flops_forward(b: int, h: int, n: int, d: int, window: int | None) -> float:
    pairs = n * (n + 1) / 2 if window is None else n * window - window * (window - 1) / 2
    return 4.0 * b * h * d * pairs


def implementations(n: int, window: int | None, hq: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q, kv):
        keep = q >= kv
        return keep if window is None else keep & (q - kv < window)

    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda")
    flex = torch.compile(flex_attention, dynamic=False)

    def ours(q, k, v, s):
        return attention(q, k, v, sinks=s, window=window)

    def flex_sinks(q, k, v, s):
        out, lse = flex(q, k, v, block_mask=block_mask, enable_gqa=True, return_lse=True)
        return out * torch.sigmoid(lse - s.float().view(1, -1, 1)).unsqueeze(-1).to(out.dtype)

    dense_mask = None
    if window is not None:
        i = torch.arange(n, device="cuda")
        dense_mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)

    def sdpa(q, k, v, s):
        if dense_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask, enable_gqa=True)

    def eager(q, k, v, s):
        from stratagem.kernels.reference import attention_reference

        return attention_reference(q, k, v, sinks=s, window=window)

    found = {"stratagem": ours, "flex+sinks": flex_sinks, "sdpa (no sinks)": sdpa}
    if n <= 4096:
        found["eager"] = eager
    return found


def measure(fn, q, k, v, s) -> dict[str, float]:
    """Forward and forward+backward ms, replayed from a CUDA graph (GPU time) and launched eagerly
    (wall: includes the host's launch overhead), and the peak MiB of a forward+backward above the inputs."""
    do = torch.randn_like(q)

    def fwd():
        fn(q, k, v, s)

    def both():
        out = fn(q, k, v, s)
        torch.autograd.grad(out, [q, k, v, s], do, allow_unused=True)

    found = {"fwd": triton.testing.do_bench_cudagraph(fwd, rep=100, return_mode="median"),
             "both": triton.testing.do_bench_cudagraph(both, rep=100, return_mode="median"),
             "both wall": triton.testing.do_bench(both, warmup=25, rep=100, return_mode="median")}  # fmt: skip
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    both()
    torch.cuda.synchronize()
    found["peak"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--d", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--window", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; bf16, B=1, "
          f"Hq={args.heads}, Hkv={args.kv_heads}; H100 bf16 dense peak ~{H100_BF16_TFLOPS:.0f} TFLOP/s")  # fmt: skip
    header = (f"{'D':>3} {'N':>6} {'mask':>6} | {'implementation':<16} | {'fwd ms':>8} {'TFLOP/s':>8} {'vs flex':>7} |"
              f" {'fwd+bwd ms':>10} {'TFLOP/s':>8} {'vs flex':>7} | {'wall ms':>8} {'vs flex':>7} |"
              f" {'peak MiB':>9}")  # fmt: skip
    rows = [header, "-" * len(header)]
    for d in args.d:
        for n in args.n:
            for window in (None, args.window):
                q = torch.randn(1, args.heads, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                k, v = (torch.randn(1, args.kv_heads, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                        for _ in range(2))  # fmt: skip
                s = torch.randn(args.heads, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                flops = flops_forward(1, args.heads, n, d, window)
                results = {}
                for name, fn in implementations(n, window, args.heads).items():
                    try:
                        results[name] = measure(fn, q, k, v, s)
                    except Exception as exc:  # a baseline that cannot run this shape: say so, keep going
                        results[name] = None
                        print(f"  {name} at D={d} N={n} window={window}: {type(exc).__name__}: {str(exc)[:150]}")
                flex = results.get("flex+sinks")
                for name, r in results.items():
                    mask = "causal" if window is None else f"W={window}"
                    head = f"{d:>3} {n:>6} {mask:>6} | {name:<16} |"
                    if r is None:
                        rows.append(f"{head} {'failed':>8}")
                        continue
                    vs = {key: f"{flex[key] / r[key]:6.2f}x" if flex else "   n/a"
                          for key in ("fwd", "both", "both wall")}  # fmt: skip
                    rows.append(f"{head} {r['fwd']:8.3f} {flops / r['fwd'] / 1e9:8.1f} {vs['fwd']:>7} |"
                                f" {r['both']:10.3f} {3.5 * flops / r['both'] / 1e9:8.1f} {vs['both']:>7} |"
                                f" {r['both wall']:8.3f} {vs['both wall']:>7} | {r['peak']:9.0f}")  # fmt: skip
                del q, k, v, s
                torch.cuda.empty_cache()
    floor_bytes = (args.heads * 2 + args.kv_heads * 2) * max(args.n) * 64 * 2
    print(f"\nmemory-bound floor of a W={args.window} forward at N={max(args.n)}, D=64: read q, k, v, write o once = "
          f"{floor_bytes / 2**20:.0f} MiB, {floor_bytes / 3.35e12 * 1e3:.3f} ms at 3.35 TB/s; compute floor "
          f"{flops_forward(1, args.heads, max(args.n), 64, args.window) / H100_BF16_TFLOPS / 1e9:.3f} ms")  # fmt: skip
    print("\n".join(rows))
    from stratagem.kernels import flash_ops

    print("\ntiles chosen by autotuning (key: N bucket, GQA group, D, causal, window, padding, dtypes):")
    for name in ("FWD", "DKDV", "DQ"):
        for key, config in getattr(flash_ops, name).cache.items():
            print(f"  {name:<4} {key[:6]}: {config}")


if __name__ == "__main__":
    main()
