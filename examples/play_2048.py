"""Serve 2048 and play it over the wire: an end-to-end demo of the server and both clients.

    python examples/play_2048.py                 # starts `stratagem serve 2048` on a free port, plays, stops it
    python examples/play_2048.py --url URL       # plays against a server you started yourself

Plays one episode over WebSocket and one over stateful HTTP with a simple corner strategy,
then checks both against the same episode played in-process (same seed, same moves).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import httpx

from stratagem.client.http import EnvClient

UP, RIGHT, DOWN, LEFT = range(4)


def corner_strategy(observation: dict) -> int:
    """Keep big tiles in the bottom-left corner: prefer down, left, right; up only if forced."""
    for action in (DOWN, LEFT, RIGHT, UP):
        if action in observation["legal_actions"]:
            return action
    raise ValueError("no legal action")


def play(env: EnvClient, seed: int) -> tuple[int, int, int]:
    r = env.reset(seed=seed)
    moves = 0
    while not r.done:
        r = env.step({"action_id": corner_strategy(r.observation)})
        moves += 1
    print(r.observation["text"])
    return r.observation["score"], r.observation["max_tile"], moves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one on a free port)")
    parser.add_argument("--seed", type=int, default=2048)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "stratagem.cli", "serve", "2048", "--port", str(port)])
        for _ in range(100):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
    try:
        results = {}
        for transport in ("ws", "http"):
            t0 = time.perf_counter()
            with EnvClient.connect(url, transport=transport) as env:
                results[transport] = play(env, args.seed)
            score, tile, moves = results[transport]
            rate = moves / (time.perf_counter() - t0)
            print(f"[{transport}] score {score}, max tile {tile}, {moves} moves, {rate:.0f} moves/s\n")
        results["local"] = play(EnvClient.local("2048"), args.seed)
        same = results["ws"] == results["http"] == results["local"]
        print(f"same episode over WebSocket, HTTP and in-process: {same}")
        sys.exit(0 if same else 1)
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
