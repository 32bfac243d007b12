"""Atari steps/s: ale-py's own rates, our environment in-process, over WebSocket, and programs in the sandbox.

    python benchmarks/bench_atari.py [--game Pong] [--seconds 3] [--episode-steps 1000]

Every cell plays random actions at frameskip 4 with sticky actions 0.25 (ALE v5's settings):

- the baselines: gymnasium's ``ALE/<Game>-v5`` with ``obs_type="ram"`` stepped directly (one
  process, no observation beyond the 128 bytes), and ale-py's C++ ``AtariVectorEnv`` with one
  environment per CPU and its smallest frame pipeline (84x84 grey, no stack), summed over envs;
- ``AtariEnv.step`` in-process (a pydantic observation per step: RAM, objects, legal actions);
- ``AtariEnv.play`` in-process, a random strategy program choosing each action (the worker's loop);
- one WebSocket client against ``stratagem serve`` (a real uvicorn server on loopback), without
  and with a PNG frame per step;
- the sandbox: ``Runner.evaluate`` with the random program on episodes of ``--episode-steps``
  steps, one worker per CPU (the worker plays, the parent replays: two emulations per step).

Ratios are to the first row. A shared machine drifts: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_server import start  # noqa: E402
from stratagem.agents.programs import build, load  # noqa: E402
from stratagem.agents.runner import Runner  # noqa: E402
from stratagem.client.http import EnvClient  # noqa: E402
from stratagem.envs.atari import AtariEnv, resolve_game  # noqa: E402
from stratagem.envs.spec import resolve  # noqa: E402

RANDOM_PROGRAM = "import random\n\ndef strategy(obs):\n    return random.choice(obs['actions'])\n"


def timed(seconds: float, run: Callable[[], int]) -> float:
    """Steps per second of ``run`` (one batch of steps per call), over at least ``seconds``."""
    steps, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        steps += run()
    return steps / elapsed


def gymnasium_ram(game: str, seconds: float) -> float:
    env = gym.make(f"ALE/{game}-v5", obs_type="ram")
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def run() -> int:
        for _ in range(100):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
        return 100

    return timed(seconds, run)


def vector_env(game: str, seconds: float, envs: int) -> float:
    from ale_py.vector_env import AtariVectorEnv

    rom = gym.make(f"ALE/{game}-v5").unwrapped._game
    env = AtariVectorEnv(rom, num_envs=envs, repeat_action_probability=0.25, stack_num=1, noop_max=0,
                         reward_clipping=False, use_fire_reset=False)  # fmt: skip
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def run() -> int:
        for _ in range(100):
            env.step(rng.integers(env.single_action_space.n, size=envs))
        return 100 * envs

    try:
        return timed(seconds, run)
    finally:
        env.close()


def our_step(game: str, seconds: float) -> float:
    env = AtariEnv(game)
    obs, rng = env.reset(seed=0), random.Random(0)

    def run() -> int:
        nonlocal obs
        for _ in range(100):
            obs = env.step({"action": rng.choice(obs.action_names)})
            if obs.done:
                obs = env.reset()
        return 100

    return timed(seconds, run)


def our_play(game: str, seconds: float, episode_steps: int) -> float:
    strategy = resolve("atari").strategy
    fn = build(load(RANDOM_PROGRAM, strategy), strategy)
    env, seeds = AtariEnv(game, max_episode_steps=episode_steps), iter(range(10**9))

    def run() -> int:
        actions: list = []
        env.play(next(seeds), fn, actions)
        return len(actions)

    return timed(seconds, run)


def websocket(url: str, seconds: float, frames: str) -> float:
    rng = random.Random(0)
    with EnvClient.connect(url) as client:
        result = client.reset(seed=0, frames=frames)
        names = result.observation["action_names"]

        def run() -> int:
            nonlocal result
            for _ in range(50):
                result = client.step({"action": rng.choice(names)})
                if result.done:
                    result = client.reset(frames=frames)
            return 50

        return timed(seconds, run)


def sandbox(game: str, episodes: int, episode_steps: int) -> tuple[float, float]:
    """(steps/s, episodes/s) of the random program through the sandboxed runner."""
    with Runner("atari", params={"game": game, "max_episode_steps": episode_steps}) as runner:
        runner.evaluate([RANDOM_PROGRAM], seeds=[0])  # start the pool and its first workers
        started = time.perf_counter()
        [result] = runner.evaluate([RANDOM_PROGRAM], seeds=list(range(1, episodes + 1)))
        elapsed = time.perf_counter() - started
    assert all(e.error is None for e in result.episodes), [e.message for e in result.episodes if e.error]
    return result.moves / elapsed, len(result.episodes) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument("--episode-steps", type=int, default=1000, help="episode length for play and the sandbox")
    parser.add_argument("--episodes", type=int, default=8, help="episodes through the sandbox")
    args = parser.parse_args()
    game, cpus = resolve_game(args.game), os.cpu_count() or 1
    rows: list[tuple[str, float, str]] = [
        (f"gymnasium ALE/{game}-v5, obs_type=ram, 1 env", gymnasium_ram(game, args.seconds), ""),
        (f"ale-py AtariVectorEnv, {cpus} envs (84x84 grey)", vector_env(game, args.seconds, cpus), ""),
        ("AtariEnv.step in-process (pydantic observation)", our_step(game, args.seconds), ""),
        ("AtariEnv.play in-process, random program", our_play(game, args.seconds, args.episode_steps), ""),
    ]
    proc, url = start([sys.executable, "-m", "stratagem.cli", "serve", "atari", "-p", f"game={game}", "--port"])
    try:
        rows.append(("WebSocket, 1 client, no frames", websocket(url, args.seconds, "none"), ""))
        rows.append(("WebSocket, 1 client, PNG frame every step", websocket(url, args.seconds, "png"), ""))
    finally:
        proc.terminate()
        proc.wait()
    steps_s, episodes_s = sandbox(game, args.episodes, args.episode_steps)
    rows.append((f"sandbox Runner, random program, {cpus} workers", steps_s,
                 f"{episodes_s:.2f} episodes/s of {args.episode_steps} steps"))  # fmt: skip
    base = rows[0][1]
    width = max(len(label) for label, *_ in rows)
    print(f"{game}, frameskip 4, sticky actions 0.25, {cpus} CPUs")
    print(f"{'':<{width}}  {'steps/s':>9}  {'ratio':>6}")
    for label, rate, note in rows:
        print(f"{label:<{width}}  {rate:>9.0f}  {rate / base:>6.2f}  {note}")


if __name__ == "__main__":
    main()
