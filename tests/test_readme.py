"""README.md stays true: every `stratagem` command in it parses with today's flags, every file it
names exists, its cheap commands run (in README order, in a scratch directory) and succeed, and the
outputs it shows are what the commands print.

The expensive commands (training, Atari, servers left running in the background) are parsed and
their files checked, not run; their code paths have their own tests.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stratagem.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# Words README uses for "your own": a user's files and runs, not ours.
PLACEHOLDERS = {"URL": "http://127.0.0.1:8000", "<run>": "mine"}
CHEAP = {"envs", "doctor", "play", "replay", "new-env", "plot"}  # run when their inputs are ours (below)
SLOW_ENVS = {"pong", "breakout", "atari"}  # minutes of emulation: parsed and checked, not run


def _blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of every line in README's fenced blocks of ``language``."""
    found = []
    for match in re.finditer(rf"```{language}\n(.*?)```", README, re.S):
        first = README.count("\n", 0, match.start(1)) + 1
        found += [(first + i, line) for i, line in enumerate(match.group(1).splitlines())]
    return found


def readme_commands() -> list[tuple[int, list[str]]]:
    """Each `stratagem ...` command of README's bash blocks as argv (comments, `&` and `&& ...` dropped)."""
    commands = []
    for number, line in _blocks("bash"):
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[-1] == "&":
                words = words[:-1]
            if words[:1] == ["stratagem"]:
                commands.append((number, [PLACEHOLDERS.get(w, w) for w in words[1:]]))
    return commands


COMMANDS = readme_commands()


def _ours(word: str) -> bool:
    """A path into this repository (examples, manifests), which must exist, not a user's own file."""
    return word.startswith(("examples/", "./examples/", "stratagem/", "benchmarks/", "docs/"))


def test_readme_has_commands():
    names = {argv[0] for _, argv in COMMANDS}
    assert {"train", "play", "serve", "replay", "validate", "envs", "new-env", "plot", "doctor"} <= names


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_every_readme_command_parses_and_names_real_files(line, argv):
    parser = build_parser()
    try:
        parser.commands[argv[0]].refuse_unknown_flags(argv[1:])  # as the command line does, before argparse
        _, extras = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"README line {line}: `stratagem {shlex.join(argv)}` does not parse")
    assert not extras, f"README line {line}: unknown arguments {extras}"
    for word in argv:
        for piece in (word, word.split("=", 1)[-1]):
            if _ours(piece):
                assert (ROOT / piece).exists(), f"README line {line} names {piece}, which does not exist"


def test_files_readme_links_and_shows_exist():
    for target in re.findall(r"\]\(([^)#:]+)\)", README):  # links and images, not URLs or anchors
        assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"
    for path in re.findall(r"`((?:examples|benchmarks|stratagem|tests|docs)/[\w./-]+)`", README):
        assert (ROOT / path.rstrip("/")).exists(), f"README names {path}, which does not exist"
    assert "../" not in re.sub(r"```.*?```", "", README, flags=re.S), "README points outside the repository"


def _cheap(argv: list[str]) -> bool:
    if argv[0] not in CHEAP or "--url" in argv:
        return False
    if argv[0] == "play":
        strategy = argv[argv.index("--strategy") + 1]
        return _ours(strategy) and argv[1] not in SLOW_ENVS
    if argv[0] in ("replay", "plot"):  # only inputs an earlier README command made, and never a window
        return "--export" in argv and not any(p.startswith("pong") for p in argv)
    return True


def _capped(argv: list[str]) -> list[str]:
    """A `play` of at most 2 episodes (given or not; the sandbox's matmul cells take seconds each): its code path
    is what is checked, not its length."""
    if argv[0] != "play":
        return argv
    if "--episodes" not in argv:
        return [*argv, "--episodes", "2"]
    at = argv.index("--episodes") + 1
    return [*argv[:at], str(min(int(argv[at]), 2)), *argv[at + 1 :]]


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stratagem.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_readme_cheap_commands_run_in_order(tmp_path, monkeypatch, capsys):
    """In README order, so that `replay` finds what `play --record` wrote; in a scratch directory that sees
    the repository's examples and manifests, so nothing lands in the checkout. In this process, through
    ``main`` as the `stratagem` script calls it (the subprocess tests below cover the script itself)."""
    monkeypatch.chdir(tmp_path)
    for name in ("examples", "stratagem"):
        (tmp_path / name).symlink_to(ROOT / name)
    ran = []
    for line, argv in COMMANDS:
        if not _cheap(argv):
            continue
        if argv[0] == "replay" and not all((tmp_path / p).exists() for p in argv[1:] if not p.startswith("-")
                                           and p.endswith("/")):  # fmt: skip
            continue  # its input is a user's run (runs/<run>/...), not made by README's commands
        code = main(_capped(argv))
        err = capsys.readouterr().err
        expected = (0, 1) if argv[0] == "doctor" else (0,)  # doctor exits 1 where a layer is missing
        assert code in expected, f"README line {line}: `stratagem {shlex.join(argv)}`\n{err}"
        ran.append(argv[0])
    assert {"envs", "play", "replay", "new-env"} <= set(ran)


def _shown_sessions() -> list[tuple[int, list[str], list[str]]]:
    """README's shown terminal sessions: ``$ stratagem ...`` then the lines it prints."""
    sessions = []
    for match in re.finditer(r"```\n\$ (stratagem [^\n]*)\n(.*?)```", README, re.S):
        line = README.count("\n", 0, match.start()) + 2
        sessions.append((line, shlex.split(match.group(1))[1:], match.group(2).rstrip("\n").splitlines()))
    return sessions


@pytest.mark.parametrize(("line", "argv", "shown"), _shown_sessions())
def test_readme_shows_what_the_command_prints(line, argv, shown, tmp_path):
    result = _run(argv, tmp_path)
    printed = (result.stdout + result.stderr).splitlines()
    assert printed == shown, f"README line {line} shows {shown}, the command prints {printed}"


def test_readme_validate_count_for_a_new_env_is_what_validate_prints(tmp_path):
    """README's `new-env` walk-through shows validate's tally as a comment; it is the real one."""
    from tests.conftest import cli_server

    [claim] = re.findall(r"stratagem validate http://127.0.0.1:8000 +# (\d+ passed, \d+ failed, \d+ skipped)", README)
    assert _run(["new-env", "my-game"], tmp_path).returncode == 0
    with cli_server(tmp_path / "serve.log", str(tmp_path / "my-game" / "openenv.yaml")) as (url, _):
        result = _run(["validate", url], tmp_path)
    assert result.stdout.strip().splitlines()[-1] == claim
