"""``stratagem replay``: recordings in a window, or exported to GIF, MP4 or PNG."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stratagem.cli_args import non_negative_int, positive


def add_replay_parser(sub: Any) -> None:
    replay = sub.add_parser("replay", help="watch recorded episodes in a window, or export them (GIF, MP4, PNG)",
                            description="Keys: space pause/play, left/right step, up/down speed, home/end, "
                            "n/p next/previous episode, o objects, q quit.")  # fmt: skip
    replay.add_argument("paths", nargs="+", metavar="PATH",
                        help="a recording (.jsonl.gz, from stratagem play --record) or a directory of them; "
                        "two with --side-by-side")  # fmt: skip
    replay.add_argument("--export", metavar="OUT", help="write OUT.gif, OUT.mp4 (H.264) or OUT.png (key frames) "
                        "instead of opening a window")  # fmt: skip
    replay.add_argument("--fps", type=positive(int), default=10, help="steps per second (default 10)")
    replay.add_argument(
        "--size",
        type=positive(int),
        default=None,
        metavar="PX",
        help="width of one episode's picture in pixels (default: 400 for 2048, 320 for Atari)",
    )
    replay.add_argument(
        "--side-by-side",
        action="store_true",
        help="two recordings (or directories) of two programs on one seed, next to each other",
    )
    replay.add_argument("--no-objects", action="store_true", help="Atari: do not mark the decoded objects")
    replay.add_argument("--start", type=non_negative_int, default=0, metavar="STEP", help="first step to show")
    replay.add_argument("--end", type=non_negative_int, default=None, metavar="STEP", help="last step to show")


def cmd_replay(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    paths = [Path(p) for p in args.paths]
    if len(paths) > 2:
        raise ValueError(f"give one recording or directory (two with --side-by-side), got {len(paths)}; "
                         "to replay many episodes, put them in one directory")  # fmt: skip
    if len(paths) == 2 and not args.side_by_side:
        raise ValueError("two paths compare two programs: add --side-by-side (or give one directory of recordings)")
    if args.side_by_side and len(paths) != 2:
        raise ValueError("--side-by-side needs two recordings (or two directories) of the same seed")
    options = {"fps": args.fps, "size": args.size, "side_by_side": args.side_by_side, "objects": not args.no_objects,
               "start_step": args.start, "end_step": args.end}  # fmt: skip
    if args.export is None:
        from stratagem.viz.viewer import view

        view(paths, **options)
        return 0
    from stratagem.viz.export import ReplayWarning, export

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReplayWarning)
        out = export(paths, Path(args.export), **options)
    for warning in caught:
        print(f"stratagem replay: warning: {warning.message}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    return 0
