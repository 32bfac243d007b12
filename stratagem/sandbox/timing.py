"""Fair timing of untrusted code: evict the CPU caches before each timed trial.

A speed reward must not be won by a warm cache: between trials the process that will run
the timed code writes and reads a buffer larger than the private caches and the last-level
cache of common machines, so every trial starts cold, the baseline's and the program's alike.
"""

from __future__ import annotations

THRASH_BYTES = 32 * 2**20


def thrash_caches(size: int = THRASH_BYTES) -> int:
    """Write then read ``size`` bytes; the result depends on the read, so it cannot be skipped."""
    buffer = bytearray(size)  # zero-filled: every cache line written
    return buffer.find(1)  # and read back (no 1 anywhere: the whole buffer is scanned)
