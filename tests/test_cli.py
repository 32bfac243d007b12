"""The `stratagem` command: help, envs, serve's flag checks, and validate against real servers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stratagem.cli import main
from tests.conftest import cli_server, free_port, running


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stratagem.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("envs", "serve", "play", "validate"):
        assert command in result.stdout


def test_envs_lists_each_with_a_description(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2048") and "OpenSpiel" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "2048", "--port", "0"], "a port is 1-65535"),
        (["serve", "2048", "--port", "http"], "expected a port number"),
        (["serve", "2048", "--max-sessions", "0"], "must be > 0"),
        (["serve", "2048", "--step-timeout", "soon"], "expected a float"),
        (["serve", "2048", "-p", "max_tile"], "expected KEY=VALUE"),
        (["serve", "2048", "-p", "max_tile=100"], "max_tile must be a power of two"),
        (["serve", "2048", "-p", "colour=red"], "unknown parameter(s) ['colour']"),
        (["serve", "2O48"], "unknown environment '2O48'. Did you mean '2048'?"),
        (["serve", "missing/openenv.yaml"], "no such manifest file"),
        (["validate", "http://x", "--action", "[1]"], "--action must be a JSON object"),
        (["validate", "gopher://x"], "must start with http://"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(capsys, args, needle):
    with pytest.raises(SystemExit) as info:
        code = main(args)
        raise SystemExit(code)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "validate_args"),
    [("2048", []), ("tests/toy_env/openenv.yaml", ["--action", '{"add": 1}'])],
    ids=["2048", "user-manifest"],
)
def test_serve_then_validate_end_to_end(tmp_path, env, validate_args):
    with cli_server(tmp_path / "server.log", env) as (url, _):
        result = run_cli("validate", url, *validate_args)
        assert result.returncode == 0, result.stdout
        assert re.search(r"\b\d+ passed, 0 failed, 0 skipped", result.stdout), result.stdout
        assert "WS episode" in result.stdout and "done=True" in result.stdout
    assert f"on {url}" in (tmp_path / "server.log").read_text()


def test_validate_an_openenv_server_and_a_dead_one():
    from tests.openenv_twin import make_app

    with running(make_app()) as url:
        result = run_cli("validate", url)
    assert result.returncode == 0, result.stdout
    assert "SKIP" in result.stdout and "stateless" in result.stdout  # OpenEnv 0.3.0 HTTP keeps no session
    dead = run_cli("validate", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert dead.returncode == 1 and "FAIL" in dead.stdout and "0 passed" in dead.stdout


def test_validate_fails_a_server_that_breaks_the_protocol():
    from fastapi import FastAPI

    app = FastAPI(version="1.0.0")

    @app.get("/health")
    def health() -> dict:
        return {"status": "fine"}

    with running(app) as url:
        result = run_cli("validate", url, "--timeout", "5")
    assert result.returncode == 1
    assert "expected status 'healthy'" in result.stdout
