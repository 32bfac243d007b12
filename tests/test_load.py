"""A bounded load test on loopback: 64 WebSocket sessions play whole episodes while a hostile
client misbehaves in every way the protocol allows; good sessions must be unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from stratagem.client.http import AsyncEnvClient, EnvClient
from tests.conftest import free_port

SESSIONS = 64
MAX_SESSIONS = 80
BODY_LIMIT = 65536


def expected_trace(seed: int) -> list:
    env = EnvClient.local("2048")
    r = env.reset(seed=seed)
    trace = [r.observation["board"]]
    while not r.done:
        r = env.step({"action_id": r.observation["legal_actions"][-1]})
        trace.append(r.observation["board"])
    return [trace, r.observation["score"]]


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+b")  # a file: a full pipe would stall it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stratagem.cli",
            "serve",
            "2048",
            "--port",
            str(port),
            "--max-sessions",
            str(MAX_SESSIONS),
            "--max-body-bytes",
            str(BODY_LIMIT),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            log.seek(0)
            raise RuntimeError(f"server did not start: {log.read().decode()[-2000:]}")
        time.sleep(0.1)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=10)
    log.seek(0)
    assert b"Traceback" not in log.read(), "the server logged an unhandled exception"


async def good_session(url: str, seed: int) -> list:
    async with await AsyncEnvClient.connect(url, timeout_s=60) as env:
        r = await env.reset(seed=seed)
        trace = [r.observation["board"]]
        while not r.done:
            r = await env.step({"action_id": r.observation["legal_actions"][-1]})
            trace.append(r.observation["board"])
        return [trace, r.observation["score"]]


async def hostile(url: str, stop: asyncio.Event, counts: dict) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            async with connect(ws_url, max_size=None) as ws:
                for bad in (
                    "{oops",
                    json.dumps({"type": "warp"}),
                    json.dumps({"type": "step", "data": {"action_id": 99}}),
                    json.dumps({"type": "step", "data": {"action_id": 0}}),
                    json.dumps([1]),
                ):
                    await ws.send(bad)
                    frame = json.loads(await ws.recv())
                    assert frame["type"] == "error", frame
                    counts["error_frames"] += 1
                await ws.send(json.dumps({"type": "reset", "data": {"seed": 1}}))
                await ws.recv()
                await ws.send(json.dumps({"type": "step", "data": {"action_id": 0}}))
                ws.transport.abort()  # vanish mid-episode, with a reply in flight
                counts["aborts"] += 1
            async with connect(ws_url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "reset", "data": {"episode_id": "x" * (BODY_LIMIT * 2)}}))
                try:
                    await ws.recv()
                except Exception:  # closed with 1009: message too big
                    counts["oversized_ws"] += 1
            for body, status in (
                (b"{bad json", 422),
                (b"x" * (BODY_LIMIT + 1), 413),
                (b'{"action": {"action_id": 0}}', 409),
                (b'{"action": 5}', 422),
            ):
                response = await http.post("/step", content=body, headers={"content-type": "application/json"})
                assert response.status_code == status, (body[:30], response.status_code, response.text[:200])
                counts["http_errors"] += 1
            _, writer = await asyncio.open_connection(host, int(port))  # a request cut off half-way
            writer.write(b'POST /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"seed":')
            await writer.drain()
            writer.close()
            counts["cut_requests"] += 1


async def health_monitor(url: str, stop: asyncio.Event, latencies: list) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            response = await http.get("/health")
            assert response.json() == {"status": "healthy"}
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)


def test_64_sessions_survive_a_hostile_client(server_process):
    url, proc = server_process
    expected = [expected_trace(seed) for seed in range(SESSIONS)]
    counts = dict.fromkeys(("error_frames", "aborts", "oversized_ws", "http_errors", "cut_requests"), 0)
    latencies: list[float] = []

    async def main() -> list:
        stop = asyncio.Event()
        background = [
            asyncio.create_task(hostile(url, stop, counts)),
            asyncio.create_task(health_monitor(url, stop, latencies)),
        ]
        try:
            return await asyncio.wait_for(asyncio.gather(*(good_session(url, s) for s in range(SESSIONS))), 240)
        finally:
            stop.set()
            await asyncio.gather(*background)

    results = asyncio.run(main())
    assert results == expected
    assert proc.poll() is None, "the server died"
    assert all(counts[k] > 0 for k in counts), counts
    assert len(latencies) > 5

    async def fill_to_capacity() -> list:  # every session the hostile client opened was released
        clients = [await AsyncEnvClient.connect(url) for _ in range(MAX_SESSIONS)]
        try:
            return [(await c.reset(seed=i)).done for i, c in enumerate(clients)]
        finally:
            for c in clients:
                await c.close()

    time.sleep(0.5)
    assert asyncio.run(fill_to_capacity()) == [False] * MAX_SESSIONS
    assert httpx.get(url + "/health").json() == {"status": "healthy"}
