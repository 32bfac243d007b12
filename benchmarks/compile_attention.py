"""Compile the attention kernels for a GPU without one: Triton's own front end, LLVM and ptxas.

Why: the CPU tests run the kernels under ``TRITON_INTERPRET=1``, which executes the Python
and never lowers it, so code the compiler refuses (or a tile config whose shared memory does
not fit) would only show on a lent GPU. This compiles every kernel to a cubin for sm_90 (H100)
and checks each config's shared memory against the device's 227 KiB.

    python benchmarks/compile_attention.py            # every autotune config, both head sizes (~4 min)
    python benchmarks/compile_attention.py --quick    # one variant per kernel (~15 s; the tests run this)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("unset TRITON_INTERPRET: the interpreter replaces the kernels with Python and nothing is compiled")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from stratagem.kernels import flash, flash_ops

SM90_SHARED_BYTES = 227 * 1024  # the most one block may use on an H100
FLOAT32_POINTERS = {"LSE", "Delta", "DSinkPart", "Sinks"}
INT_ARGS = {"N", "N_BUCKET", "H", "HKV", "GROUP"}
# (kernel, the tile shapes the autotuner tries as (BLOCK_M, BLOCK_N, warps, stages))
KERNELS = {
    "forward": (flash._fwd_kernel, flash_ops.FWD_TILES),
    "dK/dV": (flash._bwd_dkdv_kernel, flash_ops.DKDV_TILES),
    "dQ": (flash._bwd_dq_kernel, flash_ops.DQ_TILES),
    "Delta": (flash._delta_kernel, [(flash_ops.DELTA_BLOCK_M, 0, 4, 3)]),
}


def signature(kernel: triton.JITFunction, dtype: str, constexprs: dict[str, object], split: int) -> dict[str, str]:
    """Triton types for every argument, as flash_ops passes them."""
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in INT_ARGS or name.startswith("s_"):
            types[name] = "i32"
        elif name in ("qk_scale", "sm_scale"):
            types[name] = "fp32"
        elif name == "Pad":
            types[name] = "*i32"
        elif name in FLOAT32_POINTERS or (name in ("DK", "DV") and split > 1):
            types[name] = "*fp32"
        else:
            types[name] = f"*{dtype}"
    return types


def compile_one(name: str, config: tuple[int, int, int, int], head_dim: int, dtype: str, window: int,
                split: int) -> tuple[int, float]:  # fmt: skip
    """Compile one variant with sinks and left padding; returns (shared memory bytes, seconds)."""
    kernel, _ = KERNELS[name]
    block_m, block_n, warps, stages = config
    if name == "Delta":
        constexprs: dict[str, object] = {"HAS_SINKS": True, "D": head_dim, "BLOCK_M": block_m}
    else:
        constexprs = {"HAS_PAD": True, "CAUSAL": True, "WINDOW": window, "D": head_dim,
                      "BLOCK_M": block_m, "BLOCK_N": block_n}  # fmt: skip
        if name == "forward":
            constexprs["HAS_SINKS"] = True
        if name == "dK/dV":
            constexprs["SPLIT"] = split
    source = ASTSource(fn=kernel, signature=signature(kernel, dtype, constexprs, split), constexprs=constexprs)
    started = time.perf_counter()
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, "num_stages": stages})  # fmt: skip
    if not compiled.asm.get("cubin"):
        raise RuntimeError(f"{name}: ptxas produced no cubin")
    return compiled.metadata.shared, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one variant per kernel (bf16, D=64, W=128)")
    args = parser.parse_args()
    if args.quick:
        cases = [(name, configs[0], 64, "bf16", 128, 2) for name, (_, configs) in KERNELS.items()]
    else:
        cases = [(name, config, d, dtype, window, split)
                 for name, (_, configs) in KERNELS.items()
                 for config, (d, dtype), window, split in itertools.product(configs, [(64, "bf16"), (128, "fp16")],
                                                                             [0, 128], [1, 2])
                 if split == 1 or name == "dK/dV"]  # fmt: skip
    print(f"{'kernel':8} {'BLOCK_M x N':>11} {'warps':>5} {'stages':>6} {'D':>4} {'dtype':>5} {'window':>6} "
          f"{'split':>5} {'shared KiB':>10} {'s':>5}")  # fmt: skip
    too_big = 0
    for name, config, d, dtype, window, split in cases:
        shared, seconds = compile_one(name, config, d, dtype, window, split)
        fits = shared <= SM90_SHARED_BYTES
        too_big += not fits
        block = f"{config[0]} x {config[1]}" if config[1] else f"{config[0]}"
        print(f"{name:8} {block:>11} {config[2]:>5} {config[3]:>6} {d:>4} {dtype:>5} {window:>6} {split:>5} "
              f"{shared / 1024:>10.1f} {seconds:>5.1f}{'' if fits else '  OVER THE 227 KiB LIMIT'}")  # fmt: skip
    print(f"compiled {len(cases)} variants for sm_90; {too_big} over the shared-memory limit")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
