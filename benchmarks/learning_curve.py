"""Proof that the default run learns: the policy before and after, on the same held-out seeds.

    python benchmarks/learning_curve.py                 # runs `stratagem train`'s default run first
    python benchmarks/learning_curve.py --run RUN_DIR   # measures an existing run

Two tables. The first reads the run's own metrics.jsonl: mean reward and mean 2048 score of the
programs sampled at the first and the last steps (mean over a window of steps, and the spread
between steps in that window). The second is a fresh, fairer measurement: ``--samples``
programs sampled from the starting policy (the adapter switched off) and as many from the
trained one, with the same sampling seed, each played on the same ``--episodes`` held-out
seeds (never used in training), in the sandbox, and scored with the same rubric.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from stratagem.agents.policy import encode_prompts, load_model, sample
from stratagem.agents.prompts import task_prompt
from stratagem.agents.runner import Runner
from stratagem.envs.spec import resolve
from stratagem.rl.config import load_config, make_config, read_yaml

HELD_OUT_SEEDS = 1_000_000_000  # training seeds are drawn below 2**31 from (seed, step); these are fixed and apart


def window(rows: list[dict], key: str) -> tuple[float, float]:
    values = [row[key] for row in rows]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curve_table(run: Path, width: int) -> str:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[:width], rows[-width:]
    lines = [f"run {run}: {len(rows)} steps; windows of {width} steps (mean ± spread between steps)",
             f"{'':>12} | {'reward':>16} | {'2048 score':>16} | {'built':>6} | {'win rate':>8}",
             "-" * 70]  # fmt: skip
    built = "frac_programs_built" if "frac_programs_built" in rows[0] else "valid_programs"  # its name before
    for name, part in (("first steps", first), ("last steps", last)):
        (r, rs), (s, ss) = window(part, "reward"), window(part, "score")
        lines.append(f"{name:>12} | {r:+8.3f} ± {rs:5.3f} | {s:8.0f} ± {ss:5.0f} | "
                     f"{window(part, built)[0]:6.2f} | {window(part, 'win_rate')[0]:8.3f}")  # fmt: skip
    (r0, _), (r1, _) = window(first, "reward"), window(last, "reward")
    (s0, _), (s1, _) = window(first, "score"), window(last, "score")
    lines.append(f"{'gain':>12} | {r1 - r0:+8.3f}         | {s1 / max(s0, 1e-9):7.2f}x         |")
    return "\n".join(lines)


def evaluate_policies(run: Path, samples: int, episodes: int) -> str:
    from peft import PeftModel

    config = make_config(read_yaml(run / "config.yaml"))
    base, tokenizer = load_model(config.model_path(), config.dtype)
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    spec = resolve(config.env)
    ids, mask = encode_prompts(tokenizer, [task_prompt(spec)] * samples, config.max_prompt_length)
    seeds = list(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + episodes))
    rubric = config.rubric()
    lines = [f"{samples} programs per policy, each on held-out seeds {seeds[0]}..{seeds[-1]}",
             f"{'policy':>10} | {'reward':>16} | {'2048 score':>16} | {'built':>6} | {'win rate':>8} | {'sec':>5}",
             "-" * 78]  # fmt: skip
    means = {}
    with Runner(spec, config.env_params, workers=config.workers) as runner:
        for name in ("start", "trained"):
            started = time.perf_counter()
            with model.disable_adapter() if name == "start" else contextlib.nullcontext():
                out = sample(model, tokenizer, ids, mask, config.sampling_params(), torch.Generator().manual_seed(0))
            results = runner.evaluate(out.texts, seeds)
            rewards = [s.total for s in rubric.score_all(results, spec.reward)]
            scores = [r.mean_score for r in results]
            sem_r = statistics.stdev(rewards) / len(rewards) ** 0.5
            sem_s = statistics.stdev(scores) / len(scores) ** 0.5
            means[name] = (statistics.mean(rewards), statistics.mean(scores))
            lines.append(f"{name:>10} | {means[name][0]:+8.3f} ± {sem_r:5.3f} | {means[name][1]:8.0f} ± {sem_s:5.0f} | "
                         f"{sum(r.error is None for r in results) / len(results):6.2f} | "
                         f"{statistics.mean(r.win_rate for r in results):8.3f} | "
                         f"{time.perf_counter() - started:5.1f}")  # fmt: skip
    reward_gain = means["trained"][0] - means["start"][0]
    score_ratio = means["trained"][1] / max(means["start"][1], 1e-9)
    lines.append(f"{'gain':>10} | {reward_gain:+8.3f}         | {score_ratio:7.2f}x         |  (± = standard error)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="an existing run directory (default: run the default training)")
    parser.add_argument("--samples", type=int, default=128, help="programs sampled from each policy")
    parser.add_argument("--episodes", type=int, default=4, help="held-out episodes per program")
    parser.add_argument("--window", type=int, default=5, help="steps averaged at each end of the curve")
    args = parser.parse_args()
    run = args.run
    if run is None:
        from stratagem.rl.trainer import Trainer

        run = Path("runs") / time.strftime("learning-curve-%Y%m%d-%H%M%S")
        config = load_config(None, {"output_dir": str(run)})
        started = time.perf_counter()
        Trainer(config, run).train()
        print(f"default run: {time.perf_counter() - started:.0f} s of training (model build excluded if cached)")
    if not (run / "adapter").is_dir():
        print(f"{run} has no final adapter/ (did the run finish?)", file=sys.stderr)
        return 2
    print(curve_table(run, args.window))
    print()
    print(evaluate_policies(run, args.samples, args.episodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
