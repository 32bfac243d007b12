"""Attention kernels: ``attention(q, k, v, sinks=, window=, causal=, padding_start=, scale=)``.

On CUDA (fp16/bf16, head dim 64 or 128) it runs our Triton flash attention, forward and
backward (``flash.py``); anywhere else it runs the torch reference (``reference.py``), so
the library works everywhere. ``backend="triton"`` forces the kernels (with
``TRITON_INTERPRET=1`` they run on CPU tensors, which is how the tests check them);
``backend="reference"`` forces the reference. Triton is optional: without it ``auto`` runs the
reference everywhere and says so once per process (a ``TritonMissingWarning``).

``decode_attention(q, k_cache, v_cache, last, ...)`` is the sampling step's counterpart: one
query token per row against a preallocated KV cache, its position ``last`` a device tensor so
that the step can be captured in a CUDA graph (``decode.py``: split-K Triton kernels on CUDA,
a capture-safe torch reference elsewhere).
"""

from stratagem.kernels.attention import BACKENDS, attention, triton_supported
from stratagem.kernels.backend import TritonMissingWarning, triton_available
from stratagem.kernels.decode import decode_attention, decode_reference, decode_supported
from stratagem.kernels.reference import attention_reference

__all__ = ["BACKENDS", "TritonMissingWarning", "attention", "attention_reference", "decode_attention",
           "decode_reference", "decode_supported", "triton_available", "triton_supported"]  # fmt: skip
