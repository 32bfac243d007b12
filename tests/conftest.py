"""Real servers on free loopback ports, started and stopped by fixtures."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from stratagem.server.app import create_app, server_config
from stratagem.server.sessions import Limits

HERE = Path(__file__).parent

# Without a GPU, the Triton kernels run in Triton's CPU interpreter; it must be chosen before the
# kernels are first imported (``@triton.jit`` reads it).
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Episodes are keyed by a secret (envs/rng.py); a fixed one makes every seed's game the same on every machine.
os.environ.setdefault("STRATAGEM_SECRET", "5eed" * 16)
APPS: dict[str, Any] = {}  # base URL -> the app served there, for tests that inspect server state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app: Any, ws_max_size: int = 1 << 20) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a background thread; yield its base URL. Our apps run exactly as
    ``stratagem serve`` runs them (``server_config``: the connection guard included); others plainly."""
    port = free_port()
    if hasattr(getattr(app, "state", None), "manager"):
        config = server_config(app, port=port, log_level="error")
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", ws_max_size=ws_max_size)
    config.lifespan = "on"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    APPS[url] = app
    try:
        yield url
    finally:
        APPS.pop(url, None)
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def cli_server(log_path: Path, *serve_args: str) -> Iterator[tuple[str, Any]]:
    """`stratagem serve ARGS --port P` in a subprocess, as a user runs it; yield (its URL, the process)."""
    import subprocess
    import sys

    port = free_port()
    with open(log_path, "w+") as log:
        command = [sys.executable, "-m", "stratagem.cli", "serve", *serve_args, "--port", str(port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/health", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
                    time.sleep(0.1)
            yield url, server
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.fixture
def serve() -> Callable[..., Any]:
    """``with serve("2048", limits=Limits(...)) as url:`` runs a stratagem server."""

    def start(env: Any = "2048", params: dict[str, Any] | None = None, limits: Limits | None = None):
        limits = limits or Limits()
        return running(create_app(env, params, limits), ws_max_size=limits.max_body_bytes)

    return start


@pytest.fixture(scope="module")
def url_2048() -> Iterator[str]:
    """One shared 2048 server for tests that do not change its limits."""
    with running(create_app("2048")) as url:
        yield url


@pytest.fixture
def toy_manifest() -> Path:
    return HERE / "toy_env" / "openenv.yaml"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def health_ok(url: str) -> bool:
    return httpx.get(url + "/health", timeout=5).json() == {"status": "healthy"}


__all__ = ["asyncio", "free_port", "health_ok", "running", "wait_for"]


# A tiny default-style policy (tokenizer + Llama, SFT-primed on the 2048 part of the program corpus: the tests
# train on 2048), built once per test session from a config by the same code that builds the embedded default.
TINY_POLICY = {"programs": 600, "corpus": "2048", "sft_steps": 250, "hidden_size": 64, "layers": 2, "heads": 2,
               "kv_heads": 1, "intermediate_size": 128, "vocab_size": 1024, "batch_size": 16,
               "learning_rate": 1e-2}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stratagem.rl.default_model import DefaultModelSettings, build_default_model

    return build_default_model(tmp_path_factory.mktemp("policy") / "tiny", DefaultModelSettings(**TINY_POLICY))


def processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, state, session id) of every process on the machine, as /proc shows them."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(name)] = (int(fields[1]), fields[0], int(fields[3]))
    return found


def session_processes(sid: int) -> dict[int, str]:
    """pid -> state of every process of session ``sid`` (zombies included, as "Z")."""
    return {pid: state for pid, (_, state, session) in processes().items() if session == sid}


def alive_in_session(sid: int) -> list[int]:
    """The processes of session ``sid`` still alive (zombies left out: they only wait to be reaped)."""
    return [pid for pid, state in session_processes(sid).items() if state != "Z"]
