"""Episodes/s of a GRPO group on Ray against the local sandbox pool, at equal workers, on this machine.

    python benchmarks/bench_scale.py [--workers 1 2 4] [--programs 8] [--episodes 4] [--repeats 3]

Every cell plays the same group (``--programs`` copies of the heuristic baseline, each with its own
sha, on ``--episodes`` shared seeds) and must give the same results, field for field (checked):

- local: ``Runner(workers=N)``, the sandbox pool in this process (the baseline);
- ray, N x 1: ``Runner(ray=RayCluster(actors=N, workers=1))``, N actors of one sandbox worker each, as N
  single-core nodes would run it;
- ray, 1 x N: one actor of N workers, as one node of N cores runs it (``--ray``'s default: an actor a node).

The cluster is a local one (``ray.init``) with as many logical CPUs as the cells need at once, so with
more workers than cores both sides share the cores alike. Pools and actors are started before the clock
(a run starts them once). Each cell is the median of ``--repeats`` rounds, every round measuring every cell
of a row once, so a slow spell of this shared machine falls on all alike: compare the ratios (Ray's time
over the local pool's at equal workers; the target is <= 1.2x).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stratagem.agents.baselines import HEURISTIC_2048  # noqa: E402
from stratagem.agents.ray_backend import RayCluster, require_ray  # noqa: E402
from stratagem.agents.runner import Limits, Runner  # noqa: E402

TARGET = 1.2
# Generous wall-clock limits: with more workers than cores on a busy machine, a heuristic's call can wait for a
# core past the default second, and a timed-out episode is another result (for the local pool as for Ray).
LIMITS = Limits(move_s=10.0, episode_s=300.0)


def same(results: list, expected: list) -> bool:
    strip = [dataclasses.replace(result, seconds=0.0) for result in results]
    return strip == [dataclasses.replace(result, seconds=0.0) for result in expected]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="sandbox workers per row")
    parser.add_argument("--programs", type=int, default=8, help="programs in the group (a GRPO group: 8)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per program, on shared seeds")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each cell reports its median")
    args = parser.parse_args()
    ray = require_ray()
    group = [f"# variant {i}\n{HEURISTIC_2048}" for i in range(args.programs)]  # distinct programs, equal cost
    seeds = list(range(args.episodes))
    episodes = args.programs * args.episodes

    started = time.perf_counter()
    ray.init(num_cpus=2 * max(args.workers), include_dashboard=False, log_to_driver=False, logging_level="error")
    ray_start = time.perf_counter() - started
    rows = []
    try:
        for n in args.workers:
            runners = {
                "local": Runner("2048", workers=n, limits=LIMITS),
                "ray, N x 1": Runner("2048", limits=LIMITS, ray=RayCluster("auto", actors=n, workers=1)),
                "ray, 1 x N": Runner("2048", limits=LIMITS, ray=RayCluster("auto", actors=1, workers=n)),
            }
            try:
                started = time.perf_counter()
                for runner in runners.values():
                    runner.sandbox  # noqa: B018 (starts the pool or the actors)
                actors_start = time.perf_counter() - started
                expected = runners["local"].evaluate(group, seeds)  # warm: first games import lazily
                samples: dict[str, list[float]] = {label: [] for label in runners}
                for _ in range(args.repeats):
                    for label, runner in runners.items():
                        started = time.perf_counter()
                        results = runner.evaluate(group, seeds)
                        samples[label].append(episodes / (time.perf_counter() - started))
                        assert same(results, expected), f"{label} with {n} workers gave other results"
            finally:
                for runner in runners.values():
                    runner.close()
            rows.append((n, {label: statistics.median(rates) for label, rates in samples.items()}, actors_start))
    finally:
        ray.shutdown()

    print(f"2048, HEURISTIC_2048, {args.programs} programs x {args.episodes} episodes a cell, median of "
          f"{args.repeats} rounds, {os.cpu_count()} cores; ray.init {ray_start:.1f} s (once a run)")  # fmt: skip
    print(f"{'workers':>7} {'local ep/s':>10} {'ray Nx1 ep/s':>12} {'time vs local':>13} {'ray 1xN ep/s':>12} "
          f"{'time vs local':>13} {'start s':>7}")  # fmt: skip
    worst = 0.0
    for n, rates, start in rows:
        local = rates["local"]
        spread, single = local / rates["ray, N x 1"], local / rates["ray, 1 x N"]
        worst = max(worst, spread, single)
        print(f"{n:>7} {local:>10.2f} {rates['ray, N x 1']:>12.2f} {spread:>12.2f}x {rates['ray, 1 x N']:>12.2f} "
              f"{single:>12.2f}x {start:>7.1f}")  # fmt: skip
    print("results: identical to the local pool's in every cell (seconds aside)")
    print(f"target: Ray's time <= {TARGET}x the local pool's at equal workers: worst {worst:.2f}x "
          f"({'met' if worst <= TARGET else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
