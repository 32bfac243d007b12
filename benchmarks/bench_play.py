"""Moves/s of a 2048 strategy program: sandboxed runner vs. in-process vs. move by move over WebSocket.

    python benchmarks/bench_play.py [--episodes 8] [--repeats 3]

All cells play the heuristic baseline (``HEURISTIC_2048``) on the same seeds, in one run:

- in-process, no sandbox: the built function called directly by ``Game2048Env.play`` (the ceiling:
  the worker's own loop, without the process, the limits and the parent's replay);
- the sandboxed runner (``Runner.evaluate``): 1 worker, and 2 workers (the program's seeds split);
  and 1 worker with the kernel's layers off (``layers=()``), which prices the layers themselves;
- a GRPO group, 8 programs x 16 episodes, 2 workers: episodes/s and moves/s;
- move by move over a WebSocket, the program unsandboxed in the client (the public notebooks'
  way): OpenEnv's server (0.10, the installed one) driven by OpenEnv's own client (the baseline of the 20x target),
  and stratagem's server and client;
- the sandboxed runner against stratagem's server (``stratagem play --url``).

Each cell is the median of ``--repeats`` rounds; every round measures every cell once, so a slow
spell of this shared machine falls on all cells alike. Compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_server import OPENENV, STRATAGEM, openenv_client, start  # noqa: E402
from stratagem.agents.baselines import HEURISTIC_2048  # noqa: E402
from stratagem.agents.programs import build, load  # noqa: E402
from stratagem.agents.runner import Runner  # noqa: E402
from stratagem.client.http import EnvClient  # noqa: E402
from stratagem.envs.game2048 import Game2048Env  # noqa: E402
from stratagem.envs.spec import resolve  # noqa: E402

STRATEGY = resolve("2048").strategy


def in_process(seeds: list[int]) -> tuple[int, int]:
    """(moves, episodes) of the function called directly, through the same ``env.play`` the worker uses."""
    fn = build(load(HEURISTIC_2048, STRATEGY), STRATEGY)
    env, moves = Game2048Env(), 0
    for seed in seeds:
        actions: list = []
        env.play(seed, fn, actions)
        moves += len(actions)
    return moves, len(seeds)


def sandboxed(runner: Runner, programs: list[str], seeds: list[int]) -> tuple[int, int]:
    results = runner.evaluate(programs, seeds)
    assert all(e.error is None for r in results for e in r.episodes), "the baseline must play every game out"
    return sum(r.moves for r in results), sum(len(r.episodes) for r in results)


def over_websocket(connect: Callable[[], object], seeds: list[int]) -> tuple[int, int]:
    """Move by move: the client calls the program in its own process and sends each move."""
    fn = build(load(HEURISTIC_2048, STRATEGY), STRATEGY)
    moves = 0
    with connect() as env:
        for seed in seeds:
            result = env.reset(seed=seed)
            while not result.done:
                move = int(fn([row[:] for row in result.observation["board"]]))
                result = env.step({"action_id": move, "game_name": "2048", "game_params": {}})
                moves += 1
    return moves, len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes per cell (the group cell plays 8 x 16)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each cell reports its median")
    args = parser.parse_args()
    seeds = list(range(args.episodes))
    group = [f"# variant {i}\n{HEURISTIC_2048}" for i in range(8)]  # 8 distinct programs of equal cost

    servers = {name: start(command) for name, command in (("ours", STRATAGEM), ("openenv", OPENENV))}
    url = {name: server[1] for name, server in servers.items()}
    one, two = Runner("2048", workers=1), Runner("2048", workers=2)
    bare = Runner("2048", workers=1, layers=(), allow_weaker_sandbox=True)  # processes and replay, no kernel layer
    remote = Runner("2048", workers=2, url=url["ours"])
    for runner in (one, bare, two, remote):
        runner.evaluate([HEURISTIC_2048], [0])  # start the pools: their start-up is not a move

    cells: list[tuple[str, Callable[[], tuple[int, int]]]] = [
        ("in-process, no sandbox (ceiling)", lambda: in_process(seeds)),
        ("sandbox, 1 worker", lambda: sandboxed(one, [HEURISTIC_2048], seeds)),
        ("sandbox, 1 worker, kernel layers off", lambda: sandboxed(bare, [HEURISTIC_2048], seeds)),
        ("sandbox, 2 workers (seeds split)", lambda: sandboxed(two, [HEURISTIC_2048], seeds)),
        ("sandbox, group of 8 programs x 16 episodes, 2 workers", lambda: sandboxed(two, group, list(range(16)))),
        ("move by move: OpenEnv server + OpenEnv client, WS", lambda: over_websocket(
            lambda: openenv_client(url["openenv"]), seeds)),
        ("move by move: stratagem server + client, WS", lambda: over_websocket(
            lambda: EnvClient.connect(url["ours"]), seeds)),
        ("sandbox on stratagem server (play --url), 2 workers", lambda: sandboxed(remote, [HEURISTIC_2048], seeds)),
    ]  # fmt: skip
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in cells}
    try:
        for _ in range(args.repeats):
            for label, measure in cells:
                started = time.perf_counter()
                moves, episodes = measure()
                seconds = time.perf_counter() - started
                samples[label].append((moves / seconds, episodes / seconds))
    finally:
        for runner in (one, bare, two, remote):
            runner.close()
        for proc, _ in servers.values():
            proc.terminate()

    rates = {
        label: (statistics.median(m for m, _ in s), statistics.median(e for _, e in s)) for label, s in samples.items()
    }
    baseline = rates["move by move: OpenEnv server + OpenEnv client, WS"][0]
    ceiling = rates["in-process, no sandbox (ceiling)"][0]
    print(f"2048, HEURISTIC_2048, {args.episodes} episodes a cell, median of {args.repeats} rounds, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'cell':<56} {'moves/s':>9} {'episodes/s':>10} {'vs OpenEnv WS':>13} {'vs ceiling':>10}")
    for label, (moves_s, episodes_s) in rates.items():
        print(
            f"{label:<56} {moves_s:>9.0f} {episodes_s:>10.2f} {moves_s / baseline:>12.1f}x {moves_s / ceiling:>9.2f}x"
        )
    single = rates["sandbox, 1 worker"][0]
    group = "sandbox, group of 8 programs x 16 episodes, 2 workers"
    best = max(rates["sandbox, 2 workers (seeds split)"][0], rates[group][0])
    overhead = ceiling / single
    print(f"targets: sandbox overhead <= 1.5x: {overhead:.2f}x ({'met' if overhead <= 1.5 else 'NOT met'})")
    print(f"         sandbox >= 20x move by move over OpenEnv WS: {best / baseline:.1f}x "
          f"({'met' if best / baseline >= 20 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
