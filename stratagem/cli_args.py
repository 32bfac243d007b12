"""Argument types and shared flags for the CLI: each says what was wrong and what it expects."""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any, NoReturn

import yaml


class Parser(argparse.ArgumentParser):
    """argparse with prefixes off (``--learning-rat`` is a mistake, not ``--learning-rate``) and a
    "did you mean" for flags it does not know. Sub-commands made with ``add_parser`` are Parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}  # the sub-commands' parsers, by name (set by the CLI)

    def refuse_unknown_flags(self, argv: list[str]) -> None:
        """Exit 2 on a flag this parser does not know, before argparse's own checks: a misspelt ``--strat``
        should be named as such, not reported as a missing ``--strategy``."""
        unknown = []
        for word in argv:
            if word == "--":
                break
            if word.startswith("-") and not _is_number(word):
                flag = word.split("=", 1)[0]
                if flag not in self._option_string_actions:
                    unknown.append(word)
        if unknown:
            self.unknown_flags(unknown)

    def unknown_flags(self, extras: list[str]) -> NoReturn:
        """Exit 2 naming each unknown flag, with the closest real one where there is one."""
        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        flags = [word.split("=", 1)[0] for word in extras if word.startswith("-")]
        if not flags:
            self.error(f"unexpected argument(s): {' '.join(extras)} (see `{self.prog} --help`)")
        lines = []
        for flag in flags:
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            lines.append(f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close else ""))
        self.error("; ".join(lines) + f" (see `{self.prog} --help`)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def server_urls(text: str) -> list[str]:
    """One server URL or several, comma-separated (``--url A,B``; with ``action="extend"``, ``--url A --url B``)."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise argparse.ArgumentTypeError(f"expected a server URL such as http://127.0.0.1:8000, got {text!r}")
    return [server_url(url) for url in urls]


def ray_address(text: str) -> str:
    """``--ray``'s value: auto, local, HOST:PORT or ray://HOST:PORT (Ray itself is checked when it is used)."""
    from stratagem.agents.ray_backend import check_address

    try:
        return check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--ray ")) from None


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
