"""``stratagem dashboard RUN_DIR``: a training run in a browser, live while it trains (``stratagem/dashboard/``)."""

from __future__ import annotations

import argparse
from typing import Any

from stratagem.cli_args import port_number
from stratagem.dashboard import DEFAULT_PORT  # the package itself is light: no FastAPI at `--help`


def add_dashboard_parser(sub: Any) -> None:
    dashboard = sub.add_parser("dashboard", help="a web page of a training run, live while it trains: curves, "
                               "completions, the best program's games, two programs side by side")  # fmt: skip
    dashboard.add_argument("run_dir", metavar="RUN_DIR", help="a training run's directory (what `stratagem train` "
                           "made; it may still be training). It is only read, never written")  # fmt: skip
    dashboard.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine "
                           "only; the page can play the run's programs, in the sandbox)")  # fmt: skip
    dashboard.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    dashboard.add_argument("--allow-weaker-sandbox", action="store_true",
                           help="let the side-by-side comparison play programs even where the kernel lacks a sandbox "
                           "layer (see `stratagem doctor`); without it, a missing layer is an error")  # fmt: skip
    dashboard.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stratagem.dashboard.app import serve

    serve(Path(args.run_dir), args.host, args.port, args.allow_weaker_sandbox, args.log_level)
    return 0
