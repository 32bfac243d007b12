"""Where one forward+backward of our attention spends its time: each kernel's GPU time (torch
profiler) against the host time to issue the whole call, for one shape.

    python benchmarks/profile_attention.py --n 4096 --window 128

When the host time exceeds the sum of kernel times, the GPU waits on Python (launch-bound) and
no kernel change helps; the wall time a benchmark sees is then the host's.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from stratagem.kernels import attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--window", type=int, default=None)
    args = parser.parse_args()
    q = torch.randn(1, args.heads, args.n, args.d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(1, args.kv_heads, args.n, args.d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(2))  # fmt: skip
    s = torch.randn(args.heads, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(q)

    def both() -> None:
        out = attention(q, k, v, sinks=s, window=args.window)
        torch.autograd.grad(out, [q, k, v, s], do)

    for _ in range(10):  # autotune and warm up
        both()
    torch.cuda.synchronize()
    calls = 50
    start = time.perf_counter()
    for _ in range(calls):
        both()
    host_ms = (time.perf_counter() - start) / calls * 1e3  # the host runs ahead until the queue fills
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / calls * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            both()
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time / calls / 1e3
    print(f"N={args.n} D={args.d} Hq={args.heads} Hkv={args.kv_heads} window={args.window}: host issues a "
          f"forward+backward in {host_ms:.3f} ms, wall {wall_ms:.3f} ms per call, kernels sum to "
          f"{sum(kernels.values()):.3f} ms")  # fmt: skip
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1]):
        print(f"  {ms:8.3f} ms  {name[:90]}")
    host_costs(q, k, v, s, do, args.window)


def host_costs(q, k, v, s, do, window) -> None:
    """Host time of each piece, issued back to back (the GPU work itself is far shorter here)."""
    from stratagem.kernels import flash_ops

    small = torch.zeros(16, device="cuda")
    out, lse = flash_ops._forward(q, k, v, s, None, window or 0, True, q.shape[-1] ** -0.5)
    pieces = {
        "one small torch op (x.add_(1))": lambda: small.add_(1),
        "forward kernel (_forward)": lambda: flash_ops._forward(q, k, v, s, None, window or 0, True, 0.125),
        "backward kernels (_backward)": lambda: flash_ops._backward(
            do, q, k, v, s, None, out, lse, window or 0, True, 0.125
        ),
        "attention() forward, autograd on": lambda: attention(q, k, v, sinks=s, window=window),
    }
    for name, fn in pieces.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(200):
            fn()
        per_call = (time.perf_counter() - start) / 200 * 1e6
        torch.cuda.synchronize()
        print(f"  host {per_call:8.1f} us  {name}")


if __name__ == "__main__":
    main()
