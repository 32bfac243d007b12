"""Does a run learn? The policy before and after, and the best program, on the same held-out seeds.

    python benchmarks/learning_curve.py                                  # the default run (2048), then measure it
    python benchmarks/learning_curve.py -- --env pong --max-steps 12     # any `stratagem train` arguments after --
    python benchmarks/learning_curve.py --run RUN_DIR                    # measure a finished run

Three tables. The first reads the run's own metrics.jsonl: mean reward and score of the programs sampled in the
first and the last steps (a window of steps at each end). The second is the fair measurement: ``--samples``
programs sampled from the starting policy (the adapter switched off) and as many from the trained one, with the
same sampling seed and the run's prompt and sampling settings, each played on the same ``--episodes`` held-out
seeds (never used in training: training seeds are drawn below 2**31 and a best program's confirmation seeds
below 2**31 + 2**30; these start at 2**32), in the sandbox, scored
by the run's rubric. Each cell is a mean over programs ± its standard error; ``z`` is the trained-minus-start
difference in standard errors (above 2: clearly above where it started). The third plays the run's best program
(``best_strategy.py``) and, where the environment has one, a hand-written reference program on
``--best-episodes`` held-out seeds: win rate ± standard error and mean score.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from stratagem.agents.policy import encode_prompts, load_model, sample
from stratagem.agents.prompts import task_prompt
from stratagem.agents.results import ProgramResult
from stratagem.agents.runner import Runner
from stratagem.envs.spec import resolve
from stratagem.rl.config import make_config, read_yaml

HELD_OUT_SEEDS = 2**32  # above every training seed (below 2**31) and best-confirmation seed (below 2**31 + 2**30)
REFERENCES = {"2048": "stratagem.agents.baselines:HEURISTIC_2048"}  # env -> a strong hand-written program


def mean_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.mean(values), se


def curve_table(run: Path, width: int) -> str:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    first, last = rows[:width], rows[-width:]
    lines = [f"run {run}: {len(rows)} steps; the first and last {min(width, len(rows))} steps (mean ± spread)",
             f"{'':>12} | {'reward':>16} | {'score':>16} | {'built':>6} | {'win rate':>8}", "-" * 70]  # fmt: skip
    for name, part in (("first steps", first), ("last steps", last)):
        r, rs = mean_se([row["reward"] for row in part])
        s, ss = mean_se([row["score"] for row in part])
        built = statistics.mean(row["frac_programs_built"] for row in part)
        lines.append(f"{name:>12} | {r:+8.3f} ± {rs:5.3f} | {s:8.2f} ± {ss:5.2f} | {built:6.2f} | "
                     f"{statistics.mean(row['win_rate'] for row in part):8.3f}")  # fmt: skip
    return "\n".join(lines)


def policy_table(run: Path, samples: int, episodes: int) -> str:
    from peft import PeftModel

    config = make_config(read_yaml(run / "config.yaml"))
    base, tokenizer = load_model(config.model_path(), config.dtype)
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    spec = resolve(config.env)
    prompt = task_prompt(spec, config.env_params)
    ids, mask = encode_prompts(tokenizer, [prompt] * samples, config.max_prompt_length)
    seeds = list(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + episodes))
    rubric = config.rubric()
    lines = [f"{samples} programs per policy, each on held-out seeds {seeds[0]}..{seeds[-1]} (± standard error)",
             f"{'policy':>10} | {'reward':>16} | {'score':>16} | {'win rate':>15} | {'built':>5} | {'sec':>5}",
             "-" * 84]  # fmt: skip
    measured: dict[str, dict[str, tuple[float, float]]] = {}
    with Runner(
        spec, config.env_params, workers=config.workers, allow_weaker_sandbox=config.allow_weaker_sandbox
    ) as runner:
        for name in ("start", "trained"):
            started = time.perf_counter()
            with model.disable_adapter() if name == "start" else contextlib.nullcontext():
                out = sample(model, tokenizer, ids, mask, config.sampling_params(), torch.Generator().manual_seed(0))
            results = runner.evaluate(out.texts, seeds)
            row = {"reward": mean_se([s.total for s in rubric.score_all(results, spec.reward)]),
                   "score": mean_se([r.mean_score for r in results]),
                   "win": mean_se([r.win_rate for r in results])}  # fmt: skip
            measured[name] = row
            built = sum(r.error is None for r in results) / len(results)
            (r, rs), (s, ss), (w, ws) = row["reward"], row["score"], row["win"]
            lines.append(f"{name:>10} | {r:+8.3f} ± {rs:5.3f} | {s:8.2f} ± {ss:5.2f} | {w:7.3f} ± {ws:5.3f} | "
                         f"{built:5.2f} | {time.perf_counter() - started:5.1f}")  # fmt: skip
    z = {key: z_score(measured["start"][key], measured["trained"][key]) for key in ("reward", "score", "win")}
    lines.append(
        f"{'z':>10} | {z['reward']:>16.1f} | {z['score']:>16.1f} | {z['win']:>15.1f} |  (trained - start, in SE)"
    )
    return "\n".join(lines)


def z_score(start: tuple[float, float], trained: tuple[float, float]) -> float:
    spread = math.hypot(start[1], trained[1])
    difference = trained[0] - start[0]
    return difference / spread if spread > 0 else (0.0 if difference == 0 else math.copysign(math.inf, difference))


def best_table(run: Path, episodes: int) -> str:
    config = make_config(read_yaml(run / "config.yaml"))
    spec = resolve(config.env)
    programs: dict[str, str] = {}
    if (run / "best_strategy.py").is_file():
        info = json.loads((run / "best.json").read_text()) if (run / "best.json").is_file() else {}
        programs[f"best (step {info.get('step', '?')})"] = (run / "best_strategy.py").read_text()
    if (reference := REFERENCES.get(spec.name)) is not None:
        module, name = reference.split(":")
        programs["reference"] = getattr(__import__(module, fromlist=[name]), name)
    if not programs:
        return "no best program in the run, and no reference program for this environment"
    seeds = list(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + episodes))
    lines = [f"programs on {episodes} held-out seeds", f"{'program':>16} | {'win rate':>15} | {'mean score':>10}"]
    with Runner(
        spec, config.env_params, workers=config.workers, allow_weaker_sandbox=config.allow_weaker_sandbox
    ) as runner:
        for name, source in programs.items():
            result: ProgramResult = runner.evaluate([f"```python\n{source}\n```"], seeds)[0]
            if result.error is not None:
                lines.append(f"{name:>16} | failed: {result.error}")
                continue
            wins = [1.0 if e.won else 0.0 for e in result.episodes]
            win, se = mean_se(wins)
            lines.append(f"{name:>16} | {win:7.3f} ± {se:5.3f} | {result.mean_score:10.1f}")
    return "\n".join(lines)


def train(arguments: list[str]) -> Path:
    """``stratagem train`` with ``arguments`` into a fresh run directory under runs/ (unless they name one)."""
    from stratagem.cli import main as cli

    if "--output-dir" not in arguments:
        arguments = [*arguments, "--output-dir", time.strftime("runs/learning-curve-%Y%m%d-%H%M%S")]
    run = Path(arguments[arguments.index("--output-dir") + 1])
    started = time.perf_counter()
    status = cli(["train", *arguments])
    if status:
        raise SystemExit(status)
    print(f"trained in {time.perf_counter() - started:.0f} s: {run}\n")
    return run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--run", type=Path, help="an existing run directory (default: train one first)")
    parser.add_argument("--samples", type=int, default=64, help="programs sampled from each policy")
    parser.add_argument("--episodes", type=int, default=8, help="held-out episodes per sampled program")
    parser.add_argument("--best-episodes", type=int, default=100, help="held-out episodes for the best program")
    parser.add_argument("--window", type=int, default=5, help="steps averaged at each end of the run's curve")
    args = parser.parse_args(ours)
    if args.run is not None and train_args:
        parser.error("give either --run RUN_DIR or training arguments after --, not both")
    run = args.run or train(train_args)
    if not (run / "adapter").is_dir():
        print(f"{run} has no final adapter/ (did the run finish?)", file=sys.stderr)
        return 2
    for table in (curve_table(run, args.window), policy_table(run, args.samples, args.episodes),
                  best_table(run, args.best_episodes)):  # fmt: skip
        print(table, end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
