"""The attention kernels compile for an H100 here, without a GPU.

The interpreter runs the kernels as Python and accepts code the compiler refuses (a list
comprehension, say), so without this a kernel edit could pass every CPU test and fail on the
first GPU launch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_attention_kernel_compiles_to_an_sm90_cubin_that_fits():
    backends = pytest.importorskip("triton.backends")
    if "nvidia" not in backends.backends:
        pytest.skip("this Triton build has no NVIDIA backend to compile with")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "benchmarks/compile_attention.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compiled 4 variants for sm_90; 0 over the shared-memory limit" in done.stdout
    for kernel in ("forward", "dK/dV", "dQ", "Delta"):
        assert kernel in done.stdout
