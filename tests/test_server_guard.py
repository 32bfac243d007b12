"""Connection-level defences (guard.py) on real uvicorn over loopback: slow headers, slow bodies,
many unfinished connections from one address, and the connection cap with /health exempt.

The misbehaving client connects from 127.0.0.2 (all of 127/8 is loopback on Linux), so the
server sees it as a different address from the honest clients on 127.0.0.1; one test also
plays honest requests from the misbehaving client's own address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from stratagem.client.http import AsyncEnvClient, EnvClient
from stratagem.server.app import create_app, server_config
from stratagem.server.guard import ConnectionGuard
from stratagem.server.sessions import Limits
from tests.conftest import cli_server, free_port, wait_for

ROOT = Path(__file__).parents[1]
HOSTILE = "127.0.0.2"
PARTIAL = {
    "get": b"GET /health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n",  # no blank line: headers never end
    "post": b"POST /step HTTP/1.1\r\nHost: x\r\nContent-Le",
    "upgrade": b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Ver",
}


@contextmanager
def guarded(limits: Limits, http: str = "auto") -> Iterator[tuple[str, ConnectionGuard]]:
    """Serve 2048 with the uvicorn Config that ``serve`` builds, on a thread; yield (URL, its guard)."""
    config = server_config(create_app("2048", None, limits), "127.0.0.1", free_port(), log_level="error", http=http)
    server = uvicorn.Server(config)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 20)
    assert server.started, "the server did not start"
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]  # after uvicorn configured them
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield f"http://127.0.0.1:{config.port}", config.http.guard
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        server.should_exit = True
        thread.join(timeout=10)
    # never a 500 ("Exception in ASGI application"), nor an exception in a protocol callback or timer
    assert not errors, [r.getMessage() for r in errors]


def raw(url: str, data: bytes = b"", source: str = HOSTILE) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if data:
        sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket, timeout_s: float = 15.0) -> bytes:
    """Everything the server sends before closing; fails if it has not closed within the bound."""
    chunks, deadline = [], time.monotonic() + timeout_s
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open after {timeout_s} s; got {b''.join(chunks)!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def answer(data: bytes) -> tuple[int, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def still_open(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0.2)
    return not readable


def test_limits_and_flags_are_checked(capsys):
    from stratagem.cli import main

    for name in ("header_timeout_s", "body_timeout_s", "max_connections_per_client", "max_connections"):
        with pytest.raises(ValueError, match=f"{name} must be > 0"):
            Limits(**{name: 0})
    assert Limits(max_sessions=10).connection_limit == 84 and Limits(max_connections=7).connection_limit == 7
    for flag, value, needle in (
        ("--header-timeout", "0", "must be > 0"),
        ("--body-timeout", "soon", "expected a float"),
        ("--max-connections-per-client", "-1", "must be > 0"),
        ("--max-connections", "1.5", "expected a int"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["serve", "2048", flag, value])
        assert info.value.code == 2
        assert needle in capsys.readouterr().err


def test_refusing_the_oldest_slow_connection_always_ends():
    """One already closing (uvicorn closed it, its connection_lost still to come) once made this spin
    for ever, the whole server with it, when another from its address became slow."""

    class Closing:  # what add_slow uses of a connection: its address, and refuse (a no-op when closing)
        peer = "10.0.0.1"

        def refuse(self, *args: object, **kwargs: object) -> None:
            pass

    guard = ConnectionGuard(Limits(max_connections_per_client=1))
    first, second = Closing(), Closing()
    guard.add_slow(first)
    guard.add_slow(second)
    assert list(guard.slow["10.0.0.1"]) == [second]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_headers_past_their_deadline_are_answered_408_and_closed(http):
    with guarded(Limits(header_timeout_s=0.5), http) as (url, guard):
        socks = {kind: raw(url, data) for kind, data in PARTIAL.items()}
        silent = raw(url)
        # a kept-alive connection: one whole request, then the next one's headers trickle
        kept = raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\n")
        for kind, sock in [*socks.items(), ("kept-alive", kept)]:
            status, body = answer(read_until_closed(sock))
            assert status == 408, kind
            assert "request headers did not arrive within 0.5 s" in body["detail"], kind
            sock.close()
        assert read_until_closed(silent) == b""  # opened and never spoke: closed without an answer
        assert guard.refused["header_timeout"] == 5
        huge = raw(url)
        try:
            huge.sendall(b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 70_000)
        except OSError:  # h11 gives up at 16 KiB, and may close before all of it is sent
            pass
        reply = read_until_closed(huge)
        huge.close()
        if http == "httptools":  # which has no limit of its own
            assert answer(reply)[0] == 431 and guard.refused["header_size"] == 1
        assert httpx.get(url + "/health").json() == {"status": "healthy"}
        wait_for(lambda: not guard.unfinished and not guard.closing)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("path", ["/reset", "/mcp"])  # the ASGI hot path, and a FastAPI route
def test_a_trickled_body_is_cut_off_at_the_body_deadline(http, path):
    with guarded(Limits(body_timeout_s=1.0, header_timeout_s=1.0), http) as (url, guard):
        sock = raw(url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        sent, deadline = 0, time.monotonic() + 20
        while still_open(sock):  # one byte every 0.2 s would take 200 s; each byte renews nothing
            assert time.monotonic() < deadline, "the trickle was never cut off"
            sock.sendall(b" ")
            sent += 1
        status, body = answer(read_until_closed(sock))
        assert status == 408 and "request body did not arrive within 1 s of its headers" in body["detail"]
        assert sent < 1000 and guard.refused["body_timeout"] == 1
        with httpx.Client(base_url=url) as http_client:  # the server carries on
            assert http_client.post(path, content=b"{}").status_code == 200


async def burst(url: str, n: int) -> list[bool]:
    """``n`` WebSocket sessions opened at once from the misbehaving client's address, each one reset."""

    async def one(seed: int) -> bool:
        async with connect(url.replace("http://", "ws://") + "/ws", local_addr=(HOSTILE, 0)) as ws:
            await ws.send(json.dumps({"type": "reset", "data": {"seed": seed}}))
            return json.loads(await ws.recv())["type"] == "observation"

    return await asyncio.gather(*(one(seed) for seed in range(n)))


@pytest.mark.timeout(60)
def test_per_client_limit_answers_the_oldest_slow_connection_429():
    with guarded(Limits(max_connections_per_client=4, header_timeout_s=30)) as (url, guard):
        socks = [raw(url, PARTIAL["get"]) for _ in range(6)]
        for sock in socks[:2]:  # the two oldest, once six are slow
            status, body = answer(read_until_closed(sock))
            assert status == 429, body
            assert f"too many slow requests from {HOSTILE}: at most 4 connections" in body["detail"]
            assert "send each request whole and promptly" in body["detail"]
        assert all(still_open(sock) for sock in socks[2:])
        assert guard.refused["per_client"] == 2 and len(guard.slow[HOSTILE]) == 4
        # whole requests from that same address, new connections included, are still served
        transport = httpx.HTTPTransport(local_address=HOSTILE)
        with httpx.Client(base_url=url, transport=transport) as client:
            assert client.get("/health").json() == {"status": "healthy"}
            assert client.post("/reset", json={"seed": 1}).status_code == 200
        assert asyncio.run(burst(url, 16)) == [True] * 16  # many at once from there: not "slow"
        assert guard.refused["per_client"] == 2
        for sock in socks:
            sock.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_health_is_answered_at_the_connection_cap(http):
    with guarded(Limits(max_sessions=10, max_connections=4), http) as (url, guard):
        sessions = [EnvClient.connect(url) for _ in range(3)]
        for env in sessions:
            env.reset(seed=0)
        with httpx.Client(base_url=url) as idle:  # a 4th connection, left idle after its request
            assert idle.get("/metadata").status_code == 200
            with httpx.Client(base_url=url) as client:  # past the cap: the idle one makes room
                assert client.get("/metadata").status_code == 200
            wait_for(lambda: guard.refused["idle"] == 1)
        sessions.append(EnvClient.connect(url))  # four sessions hold the cap
        with httpx.Client(base_url=url) as client:
            for method, path in (("GET", "/metadata"), ("POST", "/reset")):
                response = client.request(method, path)
                assert response.status_code == 503, response.text
                assert "server at its connection limit" in response.json()["detail"]
                assert "GET /health is answered even now" in response.json()["detail"]
                assert response.headers["retry-after"] == "1"
            assert client.get("/health").json() == {"status": "healthy"}
        sessions.pop().close()
        wait_for(lambda: httpx.get(url + "/metadata").status_code == 200)
        for env in sessions:
            env.close()


# --- one client misbehaves in every slow way while 64 honest sessions play -------------------

SESSIONS, STEPS = 64, 25
HALF_SENT, TRICKLES = 300, 20
DEADLINE = 4  # s, for headers and bodies: short for the test, long enough for a busy honest client


async def play(env: AsyncEnvClient, seed: int) -> list:
    r = await env.reset(seed=seed)
    boards = [r.observation["board"]]
    for _ in range(STEPS):
        if r.done:
            break
        r = await env.step({"action_id": r.observation["legal_actions"][-1]})
        boards.append(r.observation["board"])
        await asyncio.sleep(0.02)
    return boards


def expected(seed: int) -> list:
    env = EnvClient.local("2048")
    r = env.reset(seed=seed)
    boards = [r.observation["board"]]
    for _ in range(STEPS):
        if r.done:
            break
        r = env.step({"action_id": r.observation["legal_actions"][-1]})
        boards.append(r.observation["board"])
    return boards


async def half_sent(port: int, data: bytes, stop: asyncio.Event, seen: Counter) -> None:
    """Open, send part of a request (or nothing), wait for the server to give up; again, until stopped."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(HOSTILE, 0))
        try:
            writer.write(data)
            reply = await reader.read()
        except ConnectionResetError:
            reply = b""
        finally:
            writer.close()
        seen[reply.split(b" ", 2)[1].decode() if reply else "closed"] += 1


async def trickle(port: int, stop: asyncio.Event, seen: Counter) -> None:
    """Whole headers, then a body one byte at a time, on and on."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(HOSTILE, 0))
        read = asyncio.ensure_future(reader.read())
        try:
            writer.write(b"POST /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            while not read.done():
                writer.write(b"{")
                await asyncio.wait([read], timeout=0.1)
            reply = b"" if read.exception() else read.result()
        finally:
            read.cancel()
            writer.close()
        seen[reply.split(b" ", 2)[1].decode() if reply else "closed"] += 1


def attacker(port: int) -> None:
    """The misbehaving client, in a process of its own as on a machine of its own: 300 connections
    sending half a request (or nothing) and 20 trickling a body, each replaced when the server gives
    up on it. Says "attacking" once under way; stops when its stdin closes, printing what it got."""

    async def main() -> None:
        stop, seen = asyncio.Event(), Counter()
        kinds = [*PARTIAL.values(), b""]
        tasks = [asyncio.create_task(half_sent(port, kinds[i % 4], stop, seen)) for i in range(HALF_SENT)]
        tasks += [asyncio.create_task(trickle(port, stop, seen)) for _ in range(TRICKLES)]
        await asyncio.sleep(1.5)  # slow by now, the oldest being refused
        print("attacking", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps(seen), flush=True)

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_64_sessions_play_on_while_one_client_holds_hundreds_of_slow_requests(tmp_path):
    """Without the guard, 300 half-sent requests fill uvicorn's limit_concurrency (here 2 x 80 + 64
    = 224) and every request, /health included, gets 503."""
    args = ["2048", "--max-sessions", "80", "--header-timeout", str(DEADLINE), "--body-timeout", str(DEADLINE)]
    traces = [expected(seed) for seed in range(SESSIONS)]
    health: Counter = Counter()

    async def monitor(url: str, stop: asyncio.Event) -> None:
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection each time
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=fresh) as http:
            while not stop.is_set():
                response = await http.get("/health")
                health[response.status_code] += 1
                assert response.json() == {"status": "healthy"}, response.text
                await asyncio.sleep(0.05)

    async def honest(url: str) -> list:
        # Each HTTP client builds an SSL context, blocking the loop for a while (seconds on a busy
        # machine, a stall in which this process would seem a slow client): build them first.
        envs = [await AsyncEnvClient.connect(url, transport="http", timeout_s=30) for _ in range(SESSIONS // 2)]
        envs += await asyncio.gather(*(AsyncEnvClient.connect(url, timeout_s=30) for _ in range(SESSIONS // 2)))
        stop = asyncio.Event()
        watch = asyncio.create_task(monitor(url, stop))
        try:
            return await asyncio.wait_for(asyncio.gather(*(play(env, s) for s, env in enumerate(envs))), 60)
        finally:
            stop.set()
            await watch
            await asyncio.gather(*(env.close() for env in envs))

    with cli_server(tmp_path / "server.log", *args) as (url, proc):
        command = f"from tests.test_server_guard import attacker; attacker({url.rsplit(':', 1)[1]})"
        hostile = subprocess.Popen([sys.executable, "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, cwd=ROOT)  # fmt: skip
        try:
            assert hostile.stdout.readline() == "attacking\n"
            results = asyncio.run(honest(url))
            hostile.stdin.close()
            seen = json.loads(hostile.stdout.read().splitlines()[-1])
            assert hostile.wait(timeout=30) == 0
        finally:
            hostile.kill()
        assert results == traces  # every honest step succeeded, with the right board
        assert proc.poll() is None, "the server died"
        assert set(health) == {200} and health[200] > 10, health
        # each of the misbehaving client's connections was answered 429 (too many slow ones from one
        # address; 408 at a deadline, a rarer fate here) or closed (those that sent nothing)
        assert seen["429"] > HALF_SENT and set(seen) <= {"429", "408", "closed"}, seen
        assert httpx.get(url + "/health").json() == {"status": "healthy"}
    assert "Traceback" not in (tmp_path / "server.log").read_text()
