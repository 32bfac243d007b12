"""How good is the SFT corpus? Its programs played in the real sandbox, scored by the default rubric.

    python benchmarks/corpus_quality.py [--n 200] [--seed 0] [--episodes 4] [--workers 2]

Generates ``--n`` programs with ``stratagem.rl.corpus.generate_samples(n, seed)``, plays each
over episodes on seeds ``0..episodes-1`` with ``Runner("2048")`` (each wrapped in a
```` ```python ```` fence, as the model will write it) and prints, per family, per variant
and overall:

- n, mean reward (``Rubric()`` total) and its standard deviation over programs;
- mean and best score, the fraction of episodes ended by an illegal move, the win rate;
- speed: the slowest program's seconds for its episodes in the sandbox (``max s``, on a busy
  machine mostly waiting for a core), moves per second through the sandbox (the game, the
  worker and the parent's replay included), and the program's own cost, ``us/move``: the
  slowest program's mean time per call, timed in this process over one game (seed 0).

Then the mean and median program length in characters and lines. A corpus fit for GRPO is
mostly mediocre: rewards spread inside a family and across them, and no program is slow.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stratagem.agents.programs import build, load  # noqa: E402
from stratagem.agents.rewards import Rubric, outcomes  # noqa: E402
from stratagem.agents.runner import Runner  # noqa: E402
from stratagem.envs.core import InvalidAction  # noqa: E402
from stratagem.envs.game2048 import Game2048Env  # noqa: E402
from stratagem.envs.spec import resolve  # noqa: E402
from stratagem.rl.corpus import Sample, generate_samples, program_families  # noqa: E402


@dataclass
class Measured:
    """One program's numbers."""

    reward: float
    score: float
    illegal: float  # fraction of its episodes ended by an illegal move
    win_rate: float
    seconds: float  # in the sandbox, all its episodes
    moves: int
    us_per_move: float  # its own time per call, in process


def call_cost(sample: Sample) -> float:
    """Microseconds per call of the program, over one game on seed 0, without the sandbox."""
    strategy = resolve("2048").strategy
    fn = build(load(sample.source, strategy), strategy)
    spent, calls = 0.0, 0

    def timed(board: list[list[int]]) -> object:
        nonlocal spent, calls
        start = time.perf_counter()
        move = fn(board)
        spent += time.perf_counter() - start
        calls += 1
        return move

    try:
        Game2048Env().play(0, timed, [])
    except InvalidAction:  # an illegal move ends the game: the calls so far are what it cost
        pass
    return 1e6 * spent / max(calls, 1)


def line(name: str, rows: list[Measured], width: int = 12) -> str:
    if not rows:
        return f"{name:<{width}} {0:>5}"
    rewards = [r.reward for r in rows]
    spread = statistics.stdev(rewards) if len(rows) > 1 else 0.0
    rate = sum(r.moves for r in rows) / max(sum(r.seconds for r in rows), 1e-9)
    return (f"{name:<{width}} {len(rows):>5} {statistics.mean(rewards):>8.3f} {spread:>7.3f}"
            f" {statistics.mean(r.score for r in rows):>8.0f} {max(r.score for r in rows):>8.0f}"
            f" {statistics.mean(r.illegal for r in rows):>8.2f} {statistics.mean(r.win_rate for r in rows):>6.3f}"
            f" {max(r.seconds for r in rows):>7.2f} {rate:>9.0f} {max(r.us_per_move for r in rows):>8.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="programs to generate")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per program (game seeds 0..episodes-1)")
    parser.add_argument("--workers", type=int, default=2, help="sandbox worker processes")
    args = parser.parse_args()

    samples = generate_samples(args.n, args.seed)
    completions = ["```python\n" + s.source + "```" for s in samples]
    start = time.perf_counter()
    with Runner("2048", workers=args.workers) as runner:
        results = runner.evaluate(completions, seeds=list(range(args.episodes)))
        scored = Rubric().score_all(results, runner.spec.reward)
    elapsed = time.perf_counter() - start

    per_family: dict[str, list[Measured]] = {family: [] for family in program_families()}
    per_variant: dict[str, list[Measured]] = {}
    failures = 0
    for sample, result, score in zip(samples, results, scored, strict=True):
        kinds = outcomes(result)
        failures += result.error is not None or any(k in ("cheat", "crash", "timeout") for k in kinds)
        measured = Measured(score.total, result.mean_score, kinds.count("illegal") / len(kinds), result.win_rate,
                            result.seconds, result.moves, call_cost(sample))  # fmt: skip
        per_family[sample.family].append(measured)
        per_variant.setdefault(f"{sample.family}/{sample.variant}", []).append(measured)

    print(f"{args.n} programs (seed {args.seed}) x {args.episodes} episodes in the sandbox in {elapsed:.1f} s; "
          f"family weights {program_families()}")  # fmt: skip
    print(f"{'family':<12} {'n':>5} {'reward':>8} {'sd':>7} {'score':>8} {'max':>8} {'illegal':>8} {'wins':>6}"
          f" {'max s':>7} {'moves/s':>9} {'us/move':>8}")  # fmt: skip
    for family, rows in per_family.items():
        print(line(family, rows))
    print(line("overall", [m for rows in per_family.values() for m in rows]))
    print("\nby variant")
    for variant, rows in sorted(per_variant.items()):
        print(line(variant, rows, width=28))
    print(f"\nprograms that crashed, timed out or broke a rule: {failures}")
    chars = [len(s.source) for s in samples]
    lines = [s.source.count("\n") for s in samples]
    print(f"length: chars mean {statistics.mean(chars):.0f} median {statistics.median(chars):.0f} "
          f"(min {min(chars)}, max {max(chars)}); lines mean {statistics.mean(lines):.1f} "
          f"median {statistics.median(lines):.0f} (min {min(lines)}, max {max(lines)})")  # fmt: skip


if __name__ == "__main__":
    main()
