"""``stratagem``: one command, thin sub-commands that parse, check, and call the library."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stratagem.cli_args import (
    Parser,
    add_limit_flags,
    add_param_flag,
    json_action,
    non_negative_int,
    port_number,
    positive,
    ray_address,
    server_urls,
)
from stratagem.cli_dashboard import add_dashboard_parser, cmd_dashboard
from stratagem.cli_play import cmd_play
from stratagem.cli_replay import add_replay_parser, cmd_replay
from stratagem.cli_session import Terminated, our_warnings_as_lines, terminated
from stratagem.cli_train import add_train_parser, cmd_train


def build_parser(train_fields: bool = True) -> Parser:
    """The whole CLI; ``train_fields=False`` leaves out train's generated flags, whose config imports torch
    (seconds), for the commands that never need them."""
    parser = Parser(
        prog="stratagem",
        description="LLMs learn, by RL, to write programs that "
        "play games well. Environments speak OpenEnv's wire protocol.",
    )
    from stratagem import __version__
    from stratagem.agents.runner import Limits as RunnerLimits
    from stratagem.server.sessions import Limits

    parser.add_argument("--version", action="version", version=f"stratagem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub.choices  # for "unknown flag" messages from the right sub-command

    sub.add_parser("envs", help="list the registered environments")

    serve = sub.add_parser("serve", help="serve an environment over HTTP + WebSocket (OpenEnv wire protocol)")
    serve.add_argument("env", help="a registered name (see `stratagem envs`) or a path to an openenv.yaml")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=None, help="port (default: the manifest's, usually 8000)")
    add_param_flag(serve)
    serve.add_argument("--game", metavar="NAME", help="the game, for environments with a 'game' parameter "
                       "(openspiel): short for -p game=NAME, e.g. --game 'goofspiel(num_cards=4)'")  # fmt: skip
    limits = Limits()  # the defaults live there, once
    add_limit_flags(serve, [
        ("--max-sessions", int, limits.max_sessions, "N", "concurrent sessions, WebSocket and HTTP together"),
        ("--session-timeout", float, limits.session_timeout_s, "S", "close sessions idle this many seconds"),
        ("--step-timeout", float, limits.step_timeout_s, "S", "longest a reset/step may take; requests may ask less"),
        ("--max-body-bytes", int, limits.max_body_bytes, "N", "largest request body or WebSocket message"),
        ("--header-timeout", float, limits.header_timeout_s, "S", "a request's headers must arrive within this (408)"),
        ("--body-timeout", float, limits.body_timeout_s, "S", "a request's whole body must arrive within this (408)"),
        ("--max-connections-per-client", int, limits.max_connections_per_client, "N",
         "connections one address may have still sending a request after 1 s; past it the oldest gets 429"),
    ])  # fmt: skip
    serve.add_argument("--max-connections", type=positive(int), default=None, metavar="N",
                       help="connections held at once; past it requests other than GET /health get 503 "
                       "(default 2 x max-sessions + 64)")  # fmt: skip
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-web", action="store_true",
                       help="leave out the browser page (/web: play the game, or watch a program play it)")  # fmt: skip
    _add_weaker_flag(serve, "environments that run code (sandbox)")

    play = sub.add_parser("play", help="play a strategy program over many episodes in the sandbox; print a summary")
    play.add_argument("env", help="a registered name (see `stratagem envs`) or a path to an openenv.yaml")
    play.add_argument(
        "--strategy",
        required=True,
        metavar="FILE",
        help="a .py file, or an LLM completion, defining the manifest's function (e.g. strategy(board))",
    )
    play.add_argument("--episodes", type=positive(int), default=100, help="episodes to play (default 100)")
    play.add_argument("--seed", type=non_negative_int, default=0, help="first seed; episode i plays seed+i (default 0)")
    play.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    play.add_argument("--record", metavar="DIR", help="write one replay file per episode into DIR")
    play.add_argument("--url", type=server_urls, action="extend", metavar="URL",
                      help="play on this environment server instead of in-process; repeat the flag (or separate "
                      "URLs by commas) for a pool of servers, with failover")  # fmt: skip
    play.add_argument("--ray", type=ray_address, metavar="ADDRESS",
                      help="play on a Ray cluster, one sandbox pool per node: auto (a running cluster), local (start "
                      "one here), HOST:PORT or ray://HOST:PORT; --workers is then per node. Needs pip install -e "
                      "'.[ray]'")  # fmt: skip
    play.add_argument(
        "--workers", type=positive(int), default=None, help="sandboxed processes at once (default: cores)"
    )
    add_param_flag(play)
    sandbox = RunnerLimits()
    add_limit_flags(play, [
        ("--move-timeout", float, sandbox.move_s, "S", "wall-clock limit per call of the program"),
        ("--episode-timeout", float, sandbox.episode_s, "S", "wall-clock limit per episode"),
        ("--memory-mb", int, sandbox.memory_mb, "MB", "memory the program may allocate"),
        ("--cpu-seconds", float, sandbox.cpu_s, "S", "CPU time for the program over all its episodes"),
    ])  # fmt: skip

    _add_weaker_flag(play, "the program")

    sub.add_parser("doctor", help="show which layers of the sandbox (seccomp, Landlock, namespaces...) this machine "
                   "enforces")  # fmt: skip

    add_train_parser(sub, train_fields)

    plot = sub.add_parser("plot", help="draw a training run's curves from its metrics.jsonl to RUN_DIR/curves.png")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a training run's directory (what `stratagem train` made)")
    plot.add_argument("--out", metavar="FILE", help="write the PNG here instead of RUN_DIR/curves.png")

    validate = sub.add_parser("validate", help="check a running server against the wire protocol")
    validate.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    validate.add_argument(
        "--action",
        type=json_action,
        default=None,
        help="a JSON action to play (default: the first of the observation's legal_actions)",
    )
    validate.add_argument("--timeout", type=positive(float), default=10.0, help="seconds per request")
    validate.add_argument("--max-steps", type=positive(int), default=5000,
                          help="stop the WebSocket episode after this many steps (default 5000)")  # fmt: skip
    validate.add_argument("--reward-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                          help="every step reward must lie in [LO, HI] (default: the range /schema declares, "
                          "if any)")  # fmt: skip
    validate.add_argument("--manifest", metavar="FILE", default=None,
                          help="take the reward range from this openenv.yaml's validation.reward.range, as "
                          "`openenv validate` does")  # fmt: skip

    new_env = sub.add_parser("new-env", help="write a working environment to start from: class, manifest, tests")
    new_env.add_argument("name", help="the environment's name, e.g. my-game (letters, digits, '-', '_')")
    new_env.add_argument("--dir", default=".", help="where to create the NAME directory (default: here)")
    new_env.add_argument("--force", action="store_true", help="overwrite the files in an existing NAME directory")
    add_replay_parser(sub)
    add_dashboard_parser(sub)
    return parser


def _add_weaker_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--allow-weaker-sandbox", action="store_true",
                        help=f"run {what} even where the kernel lacks a sandbox layer (see `stratagem doctor`); "
                        "without it, a missing layer is an error")  # fmt: skip


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stratagem.viz.plots import plot_run

    print(plot_run(Path(args.run_dir), Path(args.out) if args.out else None))
    return 0


def cmd_envs(_: argparse.Namespace) -> int:
    from stratagem.envs.spec import registry

    specs = registry()
    width = max(len(name) for name in specs)
    for name, spec in sorted(specs.items()):
        print(f"{name:<{width}}  {spec.description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from stratagem.envs.spec import resolve
    from stratagem.server.app import serve
    from stratagem.server.sessions import Limits

    spec = resolve(args.env)
    limits = Limits(
        max_sessions=args.max_sessions,
        session_timeout_s=args.session_timeout,
        step_timeout_s=args.step_timeout,
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections_per_client=args.max_connections_per_client,
        max_connections=args.max_connections,
    )
    params = _with_game(spec, dict(args.param), args.game)
    if _runs_code(spec):  # check the sandbox now, not at the first client's reset
        from stratagem.sandbox.doctor import diagnose
        from stratagem.sandbox.failures import SandboxUnavailable, unavailable_message

        missing = diagnose()["missing"]
        if missing and not args.allow_weaker_sandbox:
            raise SandboxUnavailable(unavailable_message(missing))
        params = {**params, "allow_weaker_sandbox": args.allow_weaker_sandbox}
    serve(spec, args.host, args.port or spec.port, params, limits, args.log_level, web=not args.no_web)
    return 0


def _runs_code(spec: Any) -> bool:
    """Environments whose actions are code run in the sandbox (those that take ``allow_weaker_sandbox``)."""
    import inspect

    return "allow_weaker_sandbox" in inspect.signature(spec.env_class().__init__).parameters


def cmd_doctor(_: argparse.Namespace) -> int:
    from stratagem.sandbox.doctor import diagnose, format_report

    report = diagnose()
    print(format_report(report))
    return 1 if report["missing"] else 0


def _with_game(spec: Any, params: dict[str, Any], game: str | None) -> dict[str, Any]:
    """``--game NAME`` as ``-p game=NAME``, for environments that take a game and only those."""
    if game is None:
        return params
    if "game" in params:
        raise ValueError("give the game once: --game NAME or -p game=NAME, not both")
    import inspect

    if "game" not in spec.params and "game" not in inspect.signature(spec.env_class().__init__).parameters:
        raise ValueError(f"--game is for environments with a 'game' parameter, such as openspiel; {spec.name!r} "
                         "has none (set its parameters with -p KEY=VALUE)")  # fmt: skip
    return {**params, "game": game}


def cmd_validate(args: argparse.Namespace) -> int:
    from stratagem.client.check_results import format_table
    from stratagem.client.runtime_graders import manifest_reward_range
    from stratagem.client.validate import Validator

    reward_range, source = None, "--reward-range"
    if args.reward_range is not None:
        low, high = args.reward_range
        if not low < high:
            print(f"error: --reward-range LO HI needs LO < HI, got {low:g} {high:g}", file=sys.stderr)
            return 2
        reward_range = (low, high)
    elif args.manifest is not None:
        try:
            reward_range, source = manifest_reward_range(args.manifest), args.manifest
        except (ValueError, OSError) as exc:
            print(f"error: --manifest: {exc}", file=sys.stderr)
            return 2
    validator = Validator(args.url, args.action, args.timeout, args.max_steps, reward_range, source)
    results = validator.run()
    print(format_table(results))
    return 1 if any(r.outcome == "FAIL" for r in results) else 0


def cmd_new_env(args: argparse.Namespace) -> int:
    from stratagem.envs.skeleton import new_env

    paths = new_env(args.name, args.dir, force=args.force)
    folder = paths[0].parent
    print(f"created {folder}/: {', '.join(str(p.relative_to(folder)) for p in paths)}")
    print(f"next:\n  stratagem serve {folder}/openenv.yaml     (then: stratagem validate http://127.0.0.1:8000)")
    print(f"  python -m pytest {folder}\n  stratagem train --env {folder}/openenv.yaml")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; Ctrl-C (or SIGTERM) ends it with one line on stderr and status 130 (143), no traceback."""
    import signal

    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminated)
    our_warnings_as_lines(f"stratagem {command}" if command else "stratagem")
    try:
        return _run(argv, command)
    except Terminated:
        print(f"stratagem {command or ''}: terminated".replace("  ", " "), file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"stratagem {command or ''}: interrupted".replace("  ", " "), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `stratagem envs | head -1`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 1


def _run(argv: list[str], command: str | None) -> int:
    parser = build_parser(train_fields=command in (None, "train"))
    if command in parser.commands:
        parser.commands[command].refuse_unknown_flags(argv[argv.index(command) + 1 :])
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands[args.command].unknown_flags(extras)
    from stratagem.agents.runner import ServerFailed
    from stratagem.envs.spec import ManifestError
    from stratagem.sandbox.failures import PoolError
    from stratagem.server.listen import ServeError
    from stratagem.server.sessions import FactoryFailed

    handler = {"envs": cmd_envs, "serve": cmd_serve, "play": cmd_play, "train": cmd_train, "plot": cmd_plot,
               "validate": cmd_validate, "new-env": cmd_new_env, "replay": cmd_replay,
               "doctor": cmd_doctor, "dashboard": cmd_dashboard}[args.command]  # fmt: skip
    try:
        return handler(args)
    except ServeError as exc:  # the command was right; the machine said no (port taken, no permission)
        print(f"stratagem {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (ManifestError, FactoryFailed, ValueError, PoolError, ServerFailed) as exc:
        print(f"stratagem {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
