"""How good is the SFT corpus? Each task's programs played in the real sandbox, scored by the default rubric.

    python benchmarks/corpus_quality.py [--tasks 2048 atari openspiel matmul manifest] [--n 60] [--seed 0]
                                        [--episodes 4] [--workers 2]

For each task, ``--n`` programs from ``stratagem.rl.corpus.generate_samples(n, seed, task)``, each wrapped in a
```` ```python ```` fence as the model writes it, played on seeds ``0..episodes-1`` in the environment its prompt
names (``sample.env`` with ``sample.params``: Pong, Freeway, connect_four, ...). The ``manifest`` task's programs
answer synthetic manifests that no server runs, so it is measured on the held-out example environment instead
(``examples/custom_env``: programs derived from that manifest by the same rules, ``manifests.programs_for``).
Printed per task, per family and per environment:

- n, mean reward (``Rubric()`` total) and its standard deviation over programs;
- mean and best score, the win rate, the fraction of episodes that ended in an illegal answer;
- the fraction of programs that failed outright (crash, timeout, a rule broken), and episodes/s in the sandbox.

A corpus fit for GRPO is mostly mediocre, with rewards spread inside a family and across them, ordered from the
bad families to the good ones, and no program slow.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stratagem.agents.rewards import Rubric, outcomes  # noqa: E402
from stratagem.agents.runner import Runner  # noqa: E402
from stratagem.rl.corpus import TASKS, Sample, generate_samples, program_families  # noqa: E402

HELD_OUT_MANIFEST = ROOT / "examples" / "custom_env" / "openenv.yaml"


@dataclass
class Measured:
    """One program's numbers."""

    reward: float
    score: float
    win_rate: float
    illegal: float  # fraction of its episodes ended by an illegal answer
    failed: bool  # crashed, timed out or broke a rule
    episodes: int
    seconds: float


def samples_of(task: str, n: int, seed: int) -> list[Sample]:
    if task == "manifest":  # synthetic manifests have no environment to play: the held-out example's programs
        from stratagem.envs.spec import resolve
        from stratagem.rl.corpus import manifests

        return manifests.programs_for(resolve(HELD_OUT_MANIFEST), random.Random(seed), n)
    return generate_samples(n, seed, task)


def measure(samples: list[Sample], episodes: int, workers: int) -> list[Measured]:
    """Every sample played in its own environment (one sandbox runner per environment and parameters)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        groups[(sample.env, repr(sorted(sample.params.items())))].append(i)
    measured: list[Measured | None] = [None] * len(samples)
    for indices in groups.values():
        first = samples[indices[0]]
        completions = ["```python\n" + samples[i].source + "```" for i in indices]
        with Runner(first.env, first.params, workers=workers) as runner:
            results = runner.evaluate(completions, seeds=list(range(episodes)))
            scored = Rubric().score_all(results, runner.spec.reward)
        for i, result, score in zip(indices, results, scored, strict=True):
            kinds = outcomes(result)
            failed = result.error is not None or any(k in ("cheat", "crash", "timeout") for k in kinds)
            measured[i] = Measured(score.total, result.mean_score, result.win_rate,
                                   kinds.count("illegal") / max(len(kinds), 1), failed, len(result.episodes),
                                   result.seconds)  # fmt: skip
    return [m for m in measured if m is not None]


def line(name: str, rows: list[Measured], width: int) -> str:
    if not rows:
        return f"{name:<{width}} {0:>4}"
    rewards = [r.reward for r in rows]
    spread = statistics.stdev(rewards) if len(rows) > 1 else 0.0
    rate = sum(r.episodes for r in rows) / max(sum(r.seconds for r in rows), 1e-9)
    return (f"{name:<{width}} {len(rows):>4} {statistics.mean(rewards):>8.3f} {spread:>7.3f}"
            f" {statistics.mean(r.score for r in rows):>9.2f} {max(r.score for r in rows):>9.2f}"
            f" {statistics.mean(r.win_rate for r in rows):>6.3f} {statistics.mean(r.illegal for r in rows):>8.2f}"
            f" {statistics.mean(r.failed for r in rows):>7.2f} {rate:>7.1f}")  # fmt: skip


def report(task: str, samples: list[Sample], rows: list[Measured], seconds: float) -> None:
    width = 34
    print(f"\n## {task}: {len(samples)} programs in {seconds:.0f} s; families {program_families(task)}")
    print(f"{'':<{width}} {'n':>4} {'reward':>8} {'sd':>7} {'score':>9} {'max':>9} {'wins':>6} {'illegal':>8}"
          f" {'failed':>7} {'ep/s':>7}")  # fmt: skip
    for key in ("family", "env"):
        groups: dict[str, list[Measured]] = defaultdict(list)
        for sample, row in zip(samples, rows, strict=True):
            label = sample.family if key == "family" else " ".join([sample.env, *map(str, sample.params.values())])
            groups[label].append(row)
        for label in program_families(task) if key == "family" else sorted(groups):
            print(line(f"{key} {label}", groups.get(label, []), width))
    print(line("all", rows, width))
    lines = [s.source.count("\n") for s in samples]
    print(f"lines: mean {statistics.mean(lines):.1f}, median {statistics.median(lines):.0f}, max {max(lines)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--n", type=int, default=60, help="programs per task")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per program (seeds 0..episodes-1)")
    parser.add_argument("--workers", type=int, default=2, help="sandbox worker processes")
    args = parser.parse_args()
    for task in args.tasks:
        started = time.perf_counter()
        samples = samples_of(task, args.n, args.seed)
        rows = measure(samples, args.episodes, args.workers)
        report(task, samples, rows, time.perf_counter() - started)


if __name__ == "__main__":
    main()
