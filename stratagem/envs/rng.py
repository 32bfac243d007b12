"""Environment randomness a program cannot rerun: a keyed stream, not a Mersenne Twister.

A program that knows our source and the (small, sequential) episode seeds could rebuild
``random.Random(seed)`` and see the future: the next 2048 spawn, the matmul matrices, the
"random" opponent's move. So every episode's randomness comes from a key instead:

    episode key = BLAKE2b(key=secret, "episode:<seed>")          (``episode_key``)
    stream      = BLAKE2b(key=BLAKE2b(key=episode key, purpose), counter)  (``KeyedRandom``)

``secret`` is the machine's (``sandbox/keys.py``: a 0600 file no sandbox can see). The same seed
and secret give the same episode, so ``play --seed N`` agrees with itself and groups share
their seeds' games; without the secret, the seed tells nothing. A strategy worker playing its
own copy of a game is sent the episode's key (``EpisodeKey``), never the seed or the secret.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from typing import Any

from stratagem.sandbox.keys import machine_secret

KEY_BYTES = 32
_BLOCK_BYTES = 64


class EpisodeKey(int):
    """An episode's key, standing in for its seed where the seed must not travel (a sandboxed worker).

    A 256-bit integer, so an environment written for integer seeds (``random.Random(seed)``,
    a ``seed: int`` field) takes it unchanged; ``episode_rng`` uses it as the key, as it is.
    """

    def __new__(cls, key: bytes) -> EpisodeKey:
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise ValueError(f"an episode key is {KEY_BYTES} bytes")
        return super().__new__(cls, int.from_bytes(key, "big"))

    @property
    def key(self) -> bytes:
        return self.to_bytes(KEY_BYTES, "big")

    def __repr__(self) -> str:
        return f"EpisodeKey({hashlib.blake2b(self.key, digest_size=4).hexdigest()})"  # never the key itself

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self) if not spec else super().__format__(spec)


Seed = int  # an episode seed, or an EpisodeKey in its place
WARM_UP = EpisodeKey(bytes(KEY_BYTES))  # a fixed key for constructors and warm-ups: no scored episode uses it


def episode_key(seed: int, secret: bytes | None = None) -> EpisodeKey:
    """The key of episode ``seed`` under ``secret`` (default: this machine's)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"a seed is an integer, got {seed!r}")
    secret = machine_secret() if secret is None else secret
    return EpisodeKey(hashlib.blake2b(f"episode:{seed}".encode(), key=secret, digest_size=KEY_BYTES).digest())


def new_seed() -> int:
    """A seed for ``reset(seed=None)``: unpredictable, and recorded in the state so the episode can be replayed."""
    return secrets.randbits(31)


def seed_number(seed: Seed) -> int | None:
    """What a state records as its seed: the number, or None where only the key was given."""
    return None if isinstance(seed, EpisodeKey) else seed


def episode_rng(seed: Seed, purpose: str) -> KeyedRandom:
    """The stream for one ``purpose`` ("2048/spawns", "matmul/matrices"...) of one episode."""
    key = seed if isinstance(seed, EpisodeKey) else episode_key(seed)
    return KeyedRandom(hashlib.blake2b(purpose.encode(), key=key.key, digest_size=KEY_BYTES).digest())


class KeyedRandom(random.Random):
    """``random.Random``'s methods (``randrange``, ``choice``, ``uniform``, ``shuffle``...) over BLAKE2b in
    counter mode: its outputs say nothing about its key, unlike a Mersenne Twister's 624 words."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)

    def seed(self, key: Any = None, version: int = 2) -> None:  # random.Random's signature
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise TypeError(f"a KeyedRandom is seeded with a {KEY_BYTES}-byte key")
        self._key, self._counter, self._buffer = key, 0, b""
        self.gauss_next = None

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.blake2b(self._counter.to_bytes(8, "little"), key=self._key, digest_size=_BLOCK_BYTES)
            self._buffer += block.digest()
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        n = (k + 7) // 8
        return int.from_bytes(self._take(n), "little") >> (8 * n - k) if n else 0

    def random(self) -> float:
        return (int.from_bytes(self._take(7), "little") >> 3) * 2.0**-53

    def getstate(self) -> tuple[bytes, int, bytes]:
        return self._key, self._counter, self._buffer

    def setstate(self, state: tuple[bytes, int, bytes]) -> None:
        self._key, self._counter, self._buffer = state
