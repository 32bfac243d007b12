"""`stratagem new-env NAME`: the skeleton serves, passes `stratagem validate`, plays, and its own tests pass."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stratagem.cli import main
from stratagem.client.check_results import format_table
from stratagem.client.validate import Validator
from stratagem.envs import load_spec
from stratagem.envs.skeleton import names, new_env
from stratagem.server.app import create_app
from tests.conftest import HERE, running
from tests.openenv_typed import validate_package

# Each test makes its own NAME: the manifest's directory joins sys.path and Python caches modules by name.


def test_new_env_writes_class_manifest_and_tests(tmp_path: Path, capsys):
    assert main(["new-env", "tic-nim", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "tic-nim"
    assert sorted(p.name for p in folder.iterdir()) == ["Dockerfile", "openenv.yaml", "test_tic_nim_env.py",
                                                        "tic_nim_env.py", "validation"]  # fmt: skip
    assert [p.name for p in (folder / "validation").iterdir()] == ["runtime.json"]
    assert f"stratagem serve {folder}/openenv.yaml" in capsys.readouterr().out
    spec = load_spec(folder / "openenv.yaml")
    assert spec.name == "tic-nim" and spec.entry_point == "tic_nim_env:TicNimEnv"
    assert spec.env_class().__name__ == "TicNimEnv" and spec.strategy.args == ["pile"]


def test_the_skeleton_serves_and_validate_passes_untouched(tmp_path: Path):
    [manifest, *_] = new_env("served-nim", tmp_path)
    with running(create_app(load_spec(manifest))) as url:
        results = Validator(url).run()
    table = format_table(results)
    assert all(r.outcome == "PASS" for r in results), table
    assert re.search(r"\n\d+ passed, 0 failed, 0 skipped", table) and "done=True" in table


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")  # OpenEnv's
def test_openenv_validate_passes_static_and_runtime_untouched(tmp_path: Path, monkeypatch):
    """OpenEnv 0.10's runner and graders: the manifest's validation: block, and validation/runtime.json played
    over /ws (a Nim game taking one stone a move) in the server its Dockerfile would run."""
    [manifest, *_] = new_env("checked-nim", tmp_path)
    report = validate_package(manifest.parent, env=monkeypatch)
    status = {r.check_id: r.status.value for r in report.results}
    assert {k: v for k, v in status.items() if v not in ("pass", "skip")} == {}, report.results
    assert all(status[c] == "pass" for c in ("static.manifest", "runtime.startup", "runtime.reward_well_formed",
                                             "runtime.observation_schema", "runtime.state_contract"))  # fmt: skip
    assert "STRATAGEM_SECRET" not in (manifest.parent / "Dockerfile").read_text()  # a user's image: no fixed secret
    from openenv.cli.__main__ import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(manifest.parent), "--level", "static"])
    assert result.exit_code == 0 and "Verdict: PASS" in result.output


def test_a_strategy_plays_it_in_the_sandbox(tmp_path: Path, capsys):
    [manifest, *_] = new_env("played-nim", tmp_path)
    program = tmp_path / "multiple_of_four.py"
    program.write_text("def strategy(pile):\n    return pile % 4 or 1\n")
    argv = ["play", str(manifest), "--strategy", str(program), "--episodes", "12", "--workers", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["win_rate"] == 1.0 and summary["episodes"] == 12


def test_the_skeletons_own_tests_pass(tmp_path: Path):
    new_env("tested-nim", tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tested-nim"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.mark.parametrize(
    ("name", "module", "cls"),
    [
        ("nim", "nim_env", "NimEnv"),
        ("my-game", "my_game_env", "MyGameEnv"),
        ("Grid_Walk2", "grid_walk2_env", "GridWalk2Env"),
    ],
)
def test_names_become_a_module_and_a_class(name: str, module: str, cls: str):
    assert (names(name)["module"], names(name)["cls"]) == (module, cls)


@pytest.mark.parametrize("name", ["9lives", "my game", "../escape", "", "x" * 65])
def test_bad_names_are_refused_with_the_rule(name: str, tmp_path: Path, capsys):
    assert main(["new-env", name, "--dir", str(tmp_path)]) == 2
    assert "NAME must start with a letter and hold only letters, digits, '-' and '_'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_existing_directory_is_kept_unless_forced(tmp_path: Path, capsys):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    assert main(["new-env", "kept", "--dir", str(tmp_path)]) == 2
    assert "exists and is not empty; choose another NAME or --dir, or pass --force" in capsys.readouterr().err
    assert main(["new-env", "kept", "--dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "kept" / "notes.txt").read_text() == "mine" and (tmp_path / "kept" / "kept_env.py").exists()
