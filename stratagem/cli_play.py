"""``stratagem play``: one program over many episodes in the sandbox, summarised; Ctrl-C keeps what finished."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from stratagem.cli_session import Terminated


def cmd_play(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from stratagem.agents.extraction import MAX_COMPLETION_CHARS
    from stratagem.agents.runner import Interrupted, Limits, Runner
    from stratagem.agents.summary import format_summary, summarize
    from stratagem.envs.spec import resolve

    path = Path(args.strategy)
    limit = 4 * MAX_COMPLETION_CHARS  # bytes: a character is at most 4 in UTF-8
    too_long = f"--strategy {path} is over {MAX_COMPLETION_CHARS:,} characters; a program is a short Python file"
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"cannot read --strategy {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ValueError(too_long)
    try:
        completion = data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"--strategy {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(completion) > MAX_COMPLETION_CHARS:
        raise ValueError(too_long)
    spec = resolve(args.env)
    limits = Limits(move_s=args.move_timeout, episode_s=args.episode_timeout, memory_mb=args.memory_mb,
                    cpu_s=args.cpu_seconds)  # fmt: skip
    seeds = list(range(args.seed, args.seed + args.episodes))
    interrupted: BaseException | None = None
    with Runner(spec, dict(args.param), workers=args.workers, limits=limits, url=args.url,
                allow_weaker_sandbox=args.allow_weaker_sandbox, ray=args.ray) as runner, \
            play_progress(args.episodes, f"play {spec.name}") as progress:  # fmt: skip
        started = time.perf_counter()
        try:
            [result] = runner.evaluate([completion], seeds, record=args.record, on_episode=progress)
        except Interrupted as stop:
            [result], interrupted = stop.results, stop.interrupt
        seconds = time.perf_counter() - started
        sandbox = runner.sandbox
    summary = {**summarize(result, spec, seconds), "sandbox": sandbox}
    if interrupted is not None:
        summary.update(interrupted=True, episodes_requested=args.episodes)
    if args.json:
        print(json.dumps(summary))
    else:
        if interrupted is not None:
            print(f"interrupted: the {len(result.episodes)} of {args.episodes} episodes that finished")
        print(format_summary(summary))
        if args.record and result.episodes:
            print(f"replays: {Path(args.record) / f'{result.sha}-seed<N>.jsonl.gz'}")
    if interrupted is not None:
        how = "terminated" if isinstance(interrupted, Terminated) else "interrupted"
        print(f"stratagem play: {how} after {len(result.episodes)} of {args.episodes} episodes", file=sys.stderr)
        return 143 if how == "terminated" else 130
    return 1 if result.error in ("syntax", "policy") else 0


@contextlib.contextmanager
def play_progress(total: int, label: str) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar (episodes done, wins so far, rate) on a terminal; nothing when output is piped."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        yield None
        return
    from stratagem.viz.progress import terminal_bar

    bar = terminal_bar(total, label, "episode", leave=False)
    wins = 0

    def episode_done(episode: Any) -> None:
        nonlocal wins
        wins += bool(episode.won)
        bar.update(1)
        bar.set_postfix_str(f"wins {wins}", refresh=False)

    try:
        yield episode_done
    finally:
        bar.close()
