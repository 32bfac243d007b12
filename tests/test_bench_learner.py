"""``benchmarks/bench_learner.py --device cpu``: the GPU benchmark's code path (our sampler and learner, the
stand-in reward, the longest-fit search) stays alive where there is no GPU. TRL is not a dependency: where it
is missing the table says so and measures ours alone."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_the_learner_benchmark_runs_its_quick_form_and_prints_both_tables(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("bench_learner", None)
    import bench_learner

    bench_learner.main(["--device", "cpu", "--variants", "ours", "ours-sdpa"])
    steps, fits = capsys.readouterr().out.split("longest completion that fits")
    rows = {line.split()[0]: line.split() for line in steps.splitlines() if line.startswith("ours")}
    longest = {line.split()[0]: line.split()[1] for line in fits.splitlines() if line.startswith("ours")}
    assert set(rows) == set(longest) == {"ours", "ours-sdpa"}
    sample, update, step = (float(rows["ours"][i]) for i in (1, 3, 4))
    assert sample > 0 and update > 0 and step >= sample + update - 0.011  # (each printed to 2 decimals)
    assert longest == {"ours": "32", "ours-sdpa": "32"}, "the tiny model fits the longest quick length"
    assert bench_learner.stand_in_reward(["a a b", ""]) == [2 / 3, 0.0]
