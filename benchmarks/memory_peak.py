"""Who holds the bytes at the peak of a CUDA memory snapshot: the live allocations at the trace's highest point,
summed by the line of our (or transformers', peft's) code that made them.

    python benchmarks/memory_peak.py SNAPSHOT.pickle [--top 25]

A snapshot is what ``torch.cuda.memory._dump_snapshot`` writes after ``_record_memory_history`` (``bench_learner.py
--memory-snapshots DIR`` saves them). pytorch.org/memory_viz draws the same trace; this prints the one moment that
sets ``max_memory_allocated``, as a table, on the machine that recorded it.

The trace starts when recording did, so the blocks alive before it are rebuilt by walking back from the end: a block
freed in the trace but never allocated in it was there from the start ("before recording", labelled by where it was
freed).
"""

from __future__ import annotations

import argparse
import pickle
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Block = tuple[int, str]  # size in bytes, the line that allocated it


def where(frames: Iterable[dict[str, Any]]) -> str:
    """The innermost frame outside torch itself (the code that asked for the memory), else the innermost one."""
    frames = list(frames)
    for frame in frames:
        name = frame.get("filename", "")
        if "/torch/" not in name and not name.startswith("<") and name:
            return f"{shorten(name)}:{frame.get('line')} {frame.get('name')}"
    if not frames:
        return "?"
    return f"{shorten(frames[0].get('filename', '?'))}:{frames[0].get('line')} {frames[0].get('name')}"


def shorten(filename: str) -> str:
    for anchor in ("/stratagem/", "/transformers/", "/peft/", "/trl/", "/torch/", "/benchmarks/"):
        if anchor in filename:
            return anchor.strip("/") + "/" + filename.split(anchor, 1)[1]
    return filename


def live_at_peak(snapshot: dict[str, Any], device: int = 0) -> tuple[int, dict[int, Block], int]:
    """(the peak's bytes, the blocks live then by address, the trace index of the peak)."""
    trace = snapshot["device_traces"][device]
    live: dict[int, Block] = {}
    for segment in snapshot["segments"]:
        if segment.get("device", device) != device:
            continue
        for block in segment["blocks"]:
            if block["state"] != "inactive":
                live[block["address"]] = (block["size"], where(block.get("frames", [])) or "before recording")
    for event in reversed(trace):  # back to the state when recording began
        if event["action"] == "alloc":
            live.pop(event["addr"], None)
        elif event["action"] == "free_requested":
            live[event["addr"]] = (event["size"], f"before recording, freed at {where(event.get('frames', []))}")
    total = sum(size for size, _ in live.values())
    peak, peak_index, peak_live = total, -1, dict(live)
    for index, event in enumerate(trace):
        if event["action"] == "alloc":
            live[event["addr"]] = (event["size"], where(event.get("frames", [])))
            total += event["size"]
            if total > peak:
                peak, peak_index, peak_live = total, index, None  # copied lazily: most maxima are passed at once
        elif event["action"] == "free_requested" and event["addr"] in live:
            if peak_live is None:  # only allocations since the peak, so this is the peak's state
                peak_live = dict(live)
            total -= live.pop(event["addr"])[0]
    return peak, peak_live if peak_live is not None else dict(live), peak_index


def by_line(blocks: dict[int, Block]) -> list[tuple[str, int, int]]:
    """(line, bytes, count), the largest first."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for size, line in blocks.values():
        sums[line][0] += size
        sums[line][1] += 1
    return sorted(((line, b, n) for line, (b, n) in sums.items()), key=lambda row: -row[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("snapshots", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25, help="lines shown (default 25)")
    args = parser.parse_args(argv)
    for path in args.snapshots:
        with path.open("rb") as f:
            snapshot = pickle.load(f)
        peak, blocks, index = live_at_peak(snapshot)
        rows = by_line(blocks)
        print(f"\n{path.name}: peak {peak / 2**30:.2f} GiB in {len(blocks)} blocks (trace event {index} of "
              f"{len(snapshot['device_traces'][0])})")  # fmt: skip
        print(f"{'GiB':>8} {'blocks':>7}  allocated at")
        for line, size, count in rows[: args.top]:
            print(f"{size / 2**30:>8.3f} {count:>7}  {line}")
        rest = rows[args.top :]
        if rest:
            print(f"{sum(r[1] for r in rest) / 2**30:>8.3f} {sum(r[2] for r in rest):>7}  ({len(rest)} more lines)")


if __name__ == "__main__":
    main()
