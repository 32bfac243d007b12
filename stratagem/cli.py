"""``stratagem``: one command, thin sub-commands that parse, check, and call the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a parameter name, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"cannot parse the value of {key}: {exc}") from None


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://", "ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"expected a server URL such as http://127.0.0.1:8000, got {text!r}")
    return text


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {port}")
    return port


def _action(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--action must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--action must be a JSON object, e.g. '{\"action_id\": 0}'")
    return value


def _add_param_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                        help="override an environment parameter, e.g. -p max_tile=1024 (repeatable)")  # fmt: skip


def _add_limit_flags(parser: argparse.ArgumentParser, rows: list[tuple[str, type, Any, str, str]]) -> None:
    """One positive-number flag per (flag, type, default, metavar, help) row; defaults come from the limits class."""
    for flag, kind, default, metavar, text in rows:
        parser.add_argument(
            flag, type=_positive(kind), default=default, metavar=metavar, help=f"{text} (default {default})"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratagem",
        description="LLMs learn, by RL, to write programs that "
        "play games well. Environments speak OpenEnv's wire protocol.",
    )
    from stratagem import __version__
    from stratagem.agents.runner import Limits as RunnerLimits
    from stratagem.envs.sessions import Limits

    parser.add_argument("--version", action="version", version=f"stratagem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("envs", help="list the registered environments")

    serve = sub.add_parser("serve", help="serve an environment over HTTP + WebSocket (OpenEnv wire protocol)")
    serve.add_argument("env", help="a registered name (see `stratagem envs`) or a path to an openenv.yaml")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (default: the manifest's, usually 8000)")
    _add_param_flag(serve)
    limits = Limits()  # the defaults live there, once
    _add_limit_flags(serve, [
        ("--max-sessions", int, limits.max_sessions, "N", "concurrent sessions, WebSocket and HTTP together"),
        ("--session-timeout", float, limits.session_timeout_s, "S", "close sessions idle this many seconds"),
        ("--step-timeout", float, limits.step_timeout_s, "S", "longest a reset/step may take; requests may ask less"),
        ("--max-body-bytes", int, limits.max_body_bytes, "N", "largest request body or WebSocket message"),
    ])  # fmt: skip
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])

    play = sub.add_parser("play", help="play a strategy program over many episodes in the sandbox; print a summary")
    play.add_argument("env", help="a registered name (see `stratagem envs`) or a path to an openenv.yaml")
    play.add_argument(
        "--strategy",
        required=True,
        metavar="FILE",
        help="a .py file, or an LLM completion, defining the manifest's function (e.g. strategy(board))",
    )
    play.add_argument("--episodes", type=_positive(int), default=100, help="episodes to play (default 100)")
    play.add_argument(
        "--seed", type=_non_negative_int, default=0, help="first seed; episode i plays seed+i (default 0)"
    )
    play.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    play.add_argument("--record", metavar="DIR", help="write one replay file per episode into DIR")
    play.add_argument("--url", type=_url, help="play on this environment server instead of in-process")
    play.add_argument(
        "--workers", type=_positive(int), default=None, help="sandboxed processes at once (default: cores)"
    )
    _add_param_flag(play)
    sandbox = RunnerLimits()
    _add_limit_flags(play, [
        ("--move-timeout", float, sandbox.move_s, "S", "wall-clock limit per call of the program"),
        ("--episode-timeout", float, sandbox.episode_s, "S", "wall-clock limit per episode"),
        ("--memory-mb", int, sandbox.memory_mb, "MB", "memory the program may allocate"),
        ("--cpu-seconds", float, sandbox.cpu_s, "S", "CPU time for the program over all its episodes"),
    ])  # fmt: skip

    _add_train_parser(sub)

    validate = sub.add_parser("validate", help="check a running server against the wire protocol")
    validate.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    validate.add_argument(
        "--action",
        type=_action,
        default=None,
        help="a JSON action to play (default: the first of the observation's legal_actions)",
    )
    validate.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds per request")
    return parser


def _add_train_parser(sub: Any) -> None:
    """One flag per GRPOConfig field, generated, so the CLI can never fall behind the config."""
    from stratagem.rl.config import FLAG_ALIASES, GRPOConfig

    aliases = {field: f"--{short}" for short, field in FLAG_ALIASES.items()}
    train = sub.add_parser("train", help="train a policy with GRPO to write better strategy programs",
                           description="With no flags: the embedded default run (the built-in model, 2048, CPU, "
                           "a few minutes). Flags override the config field of the same name.")  # fmt: skip
    train.add_argument("--config", metavar="YAML", help="a config file (fields not in it take GRPOConfig defaults)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    fields = train.add_argument_group("config fields")
    for name, field in GRPOConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}", *([aliases[name]] if name in aliases else [])]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        help_text = f"{field.description or ''} (default {default!r})".strip()
        if field.annotation is bool:
            fields.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)  # fmt: skip
        else:
            fields.add_argument(*flags, dest=name, default=argparse.SUPPRESS, metavar="VALUE", help=help_text)


def cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from stratagem.rl.config import GRPOConfig, load_config, parse_flag_value
    from stratagem.rl.trainer import Trainer, resume_config

    overrides = {name: (value if isinstance(value, bool) else parse_flag_value(name, value))
                 for name, value in vars(args).items() if name in GRPOConfig.model_fields}  # fmt: skip
    if args.resume:
        if args.config:
            raise ValueError("--resume uses the run's own config.yaml; drop --config")
        config, run_dir = resume_config(args.resume, overrides), Path(args.resume)
    else:
        config = load_config(args.config, overrides)
        run_dir = Path(config.output_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        if (run_dir / "config.yaml").exists():
            raise ValueError(f"{run_dir} holds a run already: continue it with --resume {run_dir} or use another --out")
        config.output_dir = str(run_dir)
    print(f"run directory: {run_dir}", flush=True)
    trainer = Trainer(config, run_dir, resume=bool(args.resume))
    history = trainer.train()
    best = trainer.best
    print(f"done: {trainer.step_done} steps in {run_dir}; best reward {best.reward:+.3f} (step {best.step}): "
          f"{run_dir / 'best_strategy.py'}")  # fmt: skip
    if history:
        print(f"mean reward: first step {history[0]['reward']:+.3f}, last step {history[-1]['reward']:+.3f}")
    return 0


def cmd_envs(_: argparse.Namespace) -> int:
    from stratagem.envs.spec import registry

    specs = registry()
    width = max(len(name) for name in specs)
    for name, spec in sorted(specs.items()):
        print(f"{name:<{width}}  {spec.description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from stratagem.envs.server import serve
    from stratagem.envs.sessions import Limits
    from stratagem.envs.spec import resolve

    spec = resolve(args.env)
    limits = Limits(
        max_sessions=args.max_sessions,
        session_timeout_s=args.session_timeout,
        step_timeout_s=args.step_timeout,
        max_body_bytes=args.max_body_bytes,
    )
    serve(spec, args.host, args.port or spec.port, dict(args.param), limits, args.log_level)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from stratagem.agents.runner import Limits, Runner
    from stratagem.agents.summary import format_summary, summarize
    from stratagem.envs.spec import resolve

    path = Path(args.strategy)
    try:
        completion = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read --strategy {path}: {exc.strerror or exc}") from None
    spec = resolve(args.env)
    limits = Limits(move_s=args.move_timeout, episode_s=args.episode_timeout, memory_mb=args.memory_mb,
                    cpu_s=args.cpu_seconds)  # fmt: skip
    seeds = list(range(args.seed, args.seed + args.episodes))
    with Runner(spec, dict(args.param), workers=args.workers, limits=limits, url=args.url) as runner:
        started = time.perf_counter()
        [result] = runner.evaluate([completion], seeds, record=args.record)
        seconds = time.perf_counter() - started
    summary = summarize(result, spec, seconds)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
        if args.record and result.episodes:
            print(f"replays: {args.record}/{result.sha}-seed<N>.jsonl.gz")
    return 1 if result.error in ("syntax", "policy") else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from stratagem.envs.validate import Validator, format_table

    results = Validator(args.url, action=args.action, timeout_s=args.timeout).run()
    print(format_table(results))
    return 1 if any(r.outcome == "FAIL" for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    from stratagem.envs.sessions import FactoryFailed
    from stratagem.envs.spec import ManifestError

    args = build_parser().parse_args(argv)
    from stratagem.agents.pool import PoolError
    from stratagem.agents.runner import ServerFailed

    handler = {"envs": cmd_envs, "serve": cmd_serve, "play": cmd_play, "train": cmd_train,
               "validate": cmd_validate}[args.command]  # fmt: skip
    try:
        return handler(args)
    except (ManifestError, FactoryFailed, ValueError, PoolError, ServerFailed) as exc:
        print(f"stratagem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
