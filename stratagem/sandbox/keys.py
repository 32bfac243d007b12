"""Keys a sandboxed program can never read, and the seeds derived from them.

A program that knows how a number was made can make it again. The seed of a program's own
``random`` is therefore not the episode's seed (which also seeds the game) but a keyed hash of
it: BLAKE2b keyed with a per-machine secret, stored with mode 0600 in the cache directory,
outside every sandbox's view (Landlock, an empty root), or given for a run as
``STRATAGEM_SECRET`` (hex; never passed into the sandbox). The same secret, seed and purpose give
the same value, so runs stay reproducible; nothing the program sees reveals the key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

SECRET_BYTES = 32
SECRET_VARIABLE = "STRATAGEM_SECRET"  # a run's own secret, in place of the machine's (hex)
_sealed = False
_loaded: dict[Path, bytes] = {}  # every reset derives a key: read the file once


def seal() -> None:
    """From now on this process refuses to load the secret: called by the sandbox's zygote, whose memory
    every worker inherits. Code that needs a key there gets it derived, from the parent."""
    global _sealed
    _sealed = True


def cache_root() -> Path:
    return Path(os.environ.get("STRATAGEM_CACHE", Path.home() / ".cache" / "stratagem")).expanduser()


def machine_secret(path: Path | None = None) -> bytes:
    """This machine's secret, made on first use (atomically: two processes racing agree on one)."""
    if _sealed:
        raise RuntimeError("the machine secret is never loaded inside the sandbox; pass derived keys instead")
    if path is None and os.environ.get(SECRET_VARIABLE):
        return _from_variable(os.environ[SECRET_VARIABLE])
    path = path or cache_root() / "secret"
    if path in _loaded:
        return _loaded[path]
    try:
        secret = path.read_bytes()
        if len(secret) == SECRET_BYTES:
            _loaded[path] = secret
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".secret-{os.getpid()}-{secrets.token_hex(4)}")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(secrets.token_bytes(SECRET_BYTES))
    try:
        os.link(fresh, path)  # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        fresh.unlink()
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise OSError(f"{path} is not a stratagem secret ({len(secret)} bytes); delete it to make a new one")
    _loaded[path] = secret
    return secret


def _from_variable(text: str) -> bytes:
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"{SECRET_VARIABLE} must be {SECRET_BYTES} bytes as hex ({2 * SECRET_BYTES} hex digits), "
                         "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`")  # fmt: skip
    return secret


def derive_seed(secret: bytes, purpose: str, seed: int) -> int:
    """A 63-bit seed for ``purpose`` (e.g. "program-random") from an episode seed, under ``secret``."""
    digest = hashlib.blake2b(f"{purpose}:{seed}".encode(), key=secret, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
