"""``stratagem train``: its flags, generated from GRPOConfig, and the command."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stratagem.cli_args import add_param_flag
from stratagem.cli_session import Terminated


def add_train_parser(sub: Any, with_fields: bool) -> None:
    """One flag per GRPOConfig field, generated, so the CLI can never fall behind the config."""
    train = sub.add_parser("train", help="train a policy with GRPO to write better strategy programs",
                           description="With no flags: the embedded default run (the built-in model, 2048, CPU, "
                           "a few minutes). Flags override the config field of the same name. The defaults shown "
                           "are the embedded run's; with --config, a field the file leaves out takes GRPOConfig's "
                           "default (TRL's), shown after 'with --config' where it differs.")  # fmt: skip
    train.add_argument("--config", metavar="YAML", help="a config file (fields not in it take GRPOConfig defaults)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run: from its last checkpoint, or from step 0 with its saved config when it "
                       "has none; flags given with it override the saved config")  # fmt: skip
    add_param_flag(train)
    if not with_fields:
        return
    from stratagem.rl.config import DEFAULT_RUN, FLAG_ALIASES, GRPOConfig

    aliases = {field: f"--{short}" for short, field in FLAG_ALIASES.items()}
    fields = train.add_argument_group("config fields")
    for name, field in GRPOConfig.model_fields.items():
        if name == "env_params":  # -p KEY=VALUE, as play and serve take them
            continue
        flags = [f"--{name.replace('_', '-')}", *([aliases[name]] if name in aliases else [])]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = f"default {DEFAULT_RUN.get(name, default)!r}"
        if name in DEFAULT_RUN and DEFAULT_RUN[name] != default:
            shown += f"; {default!r} with --config"
        described = field.description or ""
        help_text = described if "(default" in described and name not in DEFAULT_RUN else f"{described} ({shown})"
        if field.annotation is bool:
            fields.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)  # fmt: skip
        elif name == "url":  # a pool of servers: --url A --url B (or --url A,B), as play takes them
            fields.add_argument(*flags, dest=name, action="append", default=argparse.SUPPRESS, metavar="URL",
                                help=help_text)  # fmt: skip
        else:
            fields.add_argument(*flags, dest=name, default=argparse.SUPPRESS, metavar="VALUE", help=help_text)


def cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from stratagem.rl.config import GRPOConfig, load_config, parse_flag_value
    from stratagem.rl.trainer import Trainer, resume_config

    overrides = {name: (value if isinstance(value, bool) else parse_flag_value(name, _joined(value)))
                 for name, value in vars(args).items() if name in GRPOConfig.model_fields}  # fmt: skip
    if args.resume:
        if args.config:
            raise ValueError("--resume uses the run's own config.yaml (flags given with it override it); drop --config")
        config, run_dir = resume_config(args.resume, overrides, dict(args.param)), Path(args.resume)
    else:
        config = load_config(args.config, overrides)
        if args.param:
            config.env_params = {**config.env_params, **dict(args.param)}
        run_dir = Path(config.output_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        if (run_dir / "config.yaml").exists():
            raise ValueError(f"{run_dir} holds a run already: continue it with --resume {run_dir} or use another --out")
        config.output_dir = str(run_dir)
    config.check_model()  # a missing local model fails here, before anything is built
    trainer = Trainer(config, run_dir, resume=bool(args.resume))  # checks everything else; writes nothing on failure
    if not trainer.dist.is_main:  # torchrun's other ranks: the same work, and rank 0 alone speaks
        return _train_quietly(trainer)
    where = f"from step {trainer.step_done}" if trainer.step_done else "from the start"
    print(f"run directory: {run_dir} ({'resumed ' + where if args.resume else 'new run'})", flush=True)
    try:
        history = trainer.train()
    except KeyboardInterrupt as stop:
        how = "terminated" if isinstance(getattr(stop, "interrupt", stop), Terminated) else "interrupted"
        saved = f"checkpoint at step {trainer.saved_step}; " if trainer.saved_step else ""
        print(f"stratagem train: {how} after {trainer.step_done} of {config.max_steps} steps; {saved}"
              f"continue with: stratagem train --resume {run_dir}", file=sys.stderr)  # fmt: skip
        return 143 if how == "terminated" else 130
    print(f"done: {trainer.step_done} steps in {run_dir}")
    best = trainer.best
    if best.sha is not None:
        print(f"best program: reward {best.reward:+.3f} (step {best.step}), {run_dir / 'best_strategy.py'}")
    else:
        print("no best program yet: no completion held a program that ran")
    if history:
        print(f"mean reward: first step {history[0]['reward']:+.3f}, last step {history[-1]['reward']:+.3f}")
    return 0


def _joined(value: Any) -> Any:
    """A repeated flag's values (``--url A --url B``) as one comma-separated value, as a list field takes it."""
    return ",".join(value) if isinstance(value, list) else value


def _train_quietly(trainer: Any) -> int:
    """A rank other than 0: train, and end with the status rank 0 does (130 on Ctrl-C, 143 on SIGTERM)."""
    try:
        trainer.train()
    except KeyboardInterrupt as stop:
        return 143 if isinstance(getattr(stop, "interrupt", stop), Terminated) else 130
    return 0
