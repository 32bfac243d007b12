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


def test_the_memory_peak_reader_names_what_is_live_at_the_highest_point_of_a_trace(tmp_path, monkeypatch, capsys):
    """A hand-made allocator history: a block from before recording (freed in the trace), two allocations that
    make the peak, one freed before a smaller later allocation. The peak is the 3 blocks live at once."""
    import pickle

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import memory_peak

    def frames(line: int) -> list[dict]:
        return [{"filename": "/x/torch/nn/functional.py", "line": 1, "name": "linear"},
                {"filename": "/x/stratagem/rl/learner.py", "line": line, "name": "update"}]  # fmt: skip

    trace = [
        {"action": "alloc", "addr": 200, "size": 300, "frames": frames(10)},
        {"action": "alloc", "addr": 300, "size": 500, "frames": frames(20)},
        {"action": "free_requested", "addr": 300, "size": 500, "frames": frames(21)},
        {"action": "free_completed", "addr": 300, "size": 500, "frames": frames(21)},
        {"action": "free_requested", "addr": 100, "size": 100, "frames": frames(30)},
        {"action": "free_completed", "addr": 100, "size": 100, "frames": frames(30)},
        {"action": "alloc", "addr": 400, "size": 50, "frames": frames(40)},
    ]
    live_at_end = [{"address": 200, "size": 300, "state": "active_allocated", "frames": frames(10)},
                   {"address": 400, "size": 50, "state": "active_allocated", "frames": frames(40)},
                   {"address": 500, "size": 999, "state": "inactive", "frames": []}]  # fmt: skip
    snapshot = {"segments": [{"device": 0, "blocks": live_at_end}], "device_traces": [trace]}
    peak, blocks, index = memory_peak.live_at_peak(snapshot)
    assert (peak, index) == (900, 1)
    assert sorted(blocks) == [100, 200, 300]
    assert blocks[100] == (100, "before recording, freed at stratagem/rl/learner.py:30 update")
    assert blocks[300] == (500, "stratagem/rl/learner.py:20 update")

    (tmp_path / "s.pickle").write_bytes(pickle.dumps(snapshot))
    memory_peak.main([str(tmp_path / "s.pickle"), "--top", "2"])
    out = capsys.readouterr().out
    assert "peak 0.00 GiB in 3 blocks" in out and "stratagem/rl/learner.py:20 update" in out
    assert "(1 more lines)" in out
