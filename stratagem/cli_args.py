"""Argument types and shared flags for the CLI: each says what was wrong and what it expects."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml


def param_pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a parameter name, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"cannot parse the value of {key}: {exc}") from None


def _convert(text: str, kind: type, expected: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = _convert(text, kind, f"a {kind.__name__}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    value = _convert(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def server_url(text: str) -> str:
    if not text.startswith(("http://", "https://", "ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"expected a server URL such as http://127.0.0.1:8000, got {text!r}")
    return text


def port_number(text: str) -> int:
    port = _convert(text, int, "a port number")
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {port}")
    return port


def json_action(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--action must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--action must be a JSON object, e.g. '{\"action_id\": 0}'")
    return value


def add_param_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--param", type=param_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="override an environment parameter, e.g. -p max_tile=1024 (repeatable)")  # fmt: skip


def add_limit_flags(parser: argparse.ArgumentParser, rows: list[tuple[str, type, Any, str, str]]) -> None:
    """One positive-number flag per (flag, type, default, metavar, help) row; defaults come from the limits class."""
    for flag, kind, default, metavar, text in rows:
        parser.add_argument(
            flag, type=positive(kind), default=default, metavar=metavar, help=f"{text} (default {default})"
        )
