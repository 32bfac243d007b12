"""Steps per second for 2048: in-process, stateful HTTP (httpx keep-alive), WebSocket.

    python benchmarks/bench_server.py [--seconds 3] [--repeats 5]

Each server runs in its own process (``stratagem serve``); clients play whole episodes with
the first legal move. Baselines in the same run: OpenEnv 0.10's own server serving the same
rules (tests/openenv_twin.py), driven by our client and by OpenEnv 0.10's own client
(GenericEnvClient, sync); OpenEnv 0.3.0's server too when its interpreter is there
(STRATAGEM_OPENENV_LEGACY_PYTHON, or the environment .ci/run builds); and two ceilings:
uvicorn echoing WebSocket messages with no environment, and httpx alone against an endpoint
that does nothing. The target: our WebSocket path (our server and client) at least 1.5x
OpenEnv 0.10's (its server and its client). Concurrent clients run on uvloop, as the servers
do. Each cell is the median of ``--repeats`` rounds, each round measuring every cell once, so
that the slow and fast spells of a shared machine fall on all cells alike: compare ratios, not
absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stratagem.client.http import AsyncEnvClient, EnvClient  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.openenv_twin import openenv_version  # noqa: E402
from tests.test_openenv_legacy import legacy_python  # noqa: E402


def start(command: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [*command, str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server {command} did not start") from None
            time.sleep(0.1)


STRATAGEM = [sys.executable, "-m", "stratagem.cli", "serve", "2048", "--max-sessions", "64", "--port"]
ECHO = [
    sys.executable,
    "-c",
    """
import sys, uvicorn
async def app(scope, receive, send):  # WebSocket echo + /health: the transport with no environment behind it
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        return await send({"type": "http.response.body", "body": b"{}"})
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": message.get("text") or ""})
uvicorn.run(app, port=int(sys.argv[1]), log_level="error")
""",
]
OPENENV = [sys.executable, "-m", "tests.openenv_twin"]  # OpenEnv 0.10's server (this environment's openenv)
LEGACY = legacy_python()  # OpenEnv 0.3.0's interpreter, if built
VERSION = openenv_version()

BASELINE = f"OpenEnv {VERSION} server, WebSocket (baseline)"
THEIRS = f"OpenEnv {VERSION} server + OpenEnv {VERSION} client, WS"
OURS = "stratagem server, WebSocket"


def sync_rate(connect: Callable[[], Any], seconds: float) -> float:
    """Steps/s of one client (ours or OpenEnv's: the same reset/step/observation shape)."""
    with connect() as env:
        steps, seed, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            r = env.reset(seed=seed)
            seed += 1
            while not r.done:
                r = env.step({"action_id": r.observation["legal_actions"][0]})
                steps += 1
        return steps / (time.perf_counter() - t0)


def echo_rate(url: str, seconds: float) -> float:
    """Round trips/s of a step-sized message through uvicorn with nothing behind it."""
    from stratagem.client.ws import BlockingWebSocket

    ws = BlockingWebSocket(url.replace("http://", "ws://") + "/ws")
    message, n, t0 = '{"type":"step","data":{"action_id":1}}', 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ws.send(message)
        ws.recv()
        n += 1
    ws.close()
    return n / (time.perf_counter() - t0)


def httpx_rate(url: str, seconds: float) -> float:
    """Requests/s of httpx alone (keep-alive, tiny body) against a server that does nothing."""
    with httpx.Client() as client:
        target, n, t0 = httpx.URL(url + "/health"), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            client.post(target, content=b'{"action":{"action_id":1}}')
            n += 1
    return n / (time.perf_counter() - t0)


def openenv_client(url: str) -> Any:
    from openenv.core.generic_client import GenericEnvClient

    return GenericEnvClient(base_url=url).sync()


def concurrent_rate(url: str, transport: str, clients: int, seconds: float) -> float:
    async def one(index: int, stop_at: float) -> int:
        async with await AsyncEnvClient.connect(url, transport=transport) as env:
            steps, seed = 0, index * 1_000_000
            while time.perf_counter() < stop_at:
                r = await env.reset(seed=seed)
                seed += 1
                while not r.done and time.perf_counter() < stop_at:
                    r = await env.step({"action_id": r.observation["legal_actions"][0]})
                    steps += 1
            return steps

    async def main() -> float:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(i, t0 + seconds) for i in range(clients)))
        return sum(counts) / (time.perf_counter() - t0)

    return uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (the median of each cell is reported)")
    args = parser.parse_args()
    s, r = args.seconds, args.repeats

    commands = [("ours", STRATAGEM), ("openenv", OPENENV), ("echo", ECHO)]
    if LEGACY:
        commands.append(("legacy", [LEGACY, "-m", "tests.openenv_twin"]))
    servers = {name: start(command) for name, command in commands}
    url = {name: server[1] for name, server in servers.items()}

    def episodes(name: str, transport: str, clients: int) -> Callable[[], float]:
        """One measurement: ``clients`` of our clients playing on server ``name``."""
        if clients == 1:
            return lambda: sync_rate(lambda: EnvClient.connect(url[name], transport=transport), s)
        return lambda: concurrent_rate(url[name], transport, clients, s)

    cells: list[tuple[str, int, Callable[[], float]]] = [  # (what, clients, one measurement)
        ("in-process (EnvClient.local)", 1, lambda: sync_rate(lambda: EnvClient.local("2048"), s)),
        ("ceiling: uvicorn WS echo, no environment", 1, lambda: echo_rate(url["echo"], s)),
        ("ceiling: httpx alone, no environment", 1, lambda: httpx_rate(url["echo"], s)),
    ]
    for clients in (1, 16):
        cells.append((BASELINE, clients, episodes("openenv", "ws", clients)))
        if clients == 1:
            cells.append((THEIRS, 1, lambda: sync_rate(lambda: openenv_client(url["openenv"]), s)))
        if LEGACY:
            cells.append(("OpenEnv 0.3.0 server, WebSocket", clients, episodes("legacy", "ws", clients)))
        cells.append((OURS, clients, episodes("ours", "ws", clients)))
        if clients == 1:
            cells.append(
                (
                    f"stratagem server + OpenEnv {VERSION} client, WS",
                    1,
                    lambda: sync_rate(lambda: openenv_client(url["ours"]), s),
                )
            )
        cells.append(("stratagem server, HTTP session", clients, episodes("ours", "http", clients)))
    samples: list[list[float]] = [[] for _ in cells]
    try:
        for _ in range(r):  # rounds of every cell, so a slow spell of the machine hits all cells alike
            for cell, sample in zip(cells, samples, strict=True):
                sample.append(cell[2]())
    finally:
        for proc, _ in servers.values():
            proc.terminate()
    rows = [
        (label, clients, statistics.median(sample)) for (label, clients, _), sample in zip(cells, samples, strict=True)
    ]

    baseline = {clients: rate for label, clients, rate in rows if label == BASELINE}
    print(
        f"2048 steps/s on {os.cpu_count()} cores, median of {r} rounds of {s:g} s "
        f"(ratio: vs the baseline, OpenEnv {VERSION}'s server driven by our client, with as many clients)"
    )
    print(f"{'transport':<52} {'clients':>7} {'steps/s':>9} {'ratio':>7}")
    for label, clients, rate in rows:
        ratio = "" if label.startswith("in-process") else f"{rate / baseline[clients]:.2f}x"
        print(f"{label:<52} {clients:>7} {rate:>9.0f} {ratio:>7}")
    ws1 = next(rate for label, clients, rate in rows if label == OURS and clients == 1)
    theirs = next(rate for label, _, rate in rows if label == THEIRS)
    print(
        f"target: our WebSocket path (our server + our client) >= 1.5x OpenEnv {VERSION}'s (its server + its "
        f"client), 1 client: {ws1:.0f} vs {theirs:.0f} steps/s = {ws1 / theirs:.2f}x "
        f"({'met' if ws1 >= 1.5 * theirs else 'NOT met'})"
    )
    http_best = max(rate for label, _, rate in rows if label == "stratagem server, HTTP session")
    echo = next(rate for label, _, rate in rows if label.startswith("ceiling: uvicorn"))
    httpx_alone = next(rate for label, _, rate in rows if label.startswith("ceiling: httpx"))
    print(
        f"        WebSocket 1 client >= 3000: {ws1:.0f} ({'met' if ws1 >= 3000 else 'NOT met'}; "
        f"{ws1 / echo:.0%} of the echo ceiling measured in this run)"
    )
    print(
        f"        HTTP sessions >= 1500: {http_best:.0f} ({'met' if http_best >= 1500 else 'NOT met'}; "
        f"httpx alone against a server that does nothing reached {httpx_alone:.0f} req/s here)"
    )


if __name__ == "__main__":
    main()
