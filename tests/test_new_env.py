"""`stratagem new-env NAME`: the skeleton serves, passes `stratagem validate`, plays, and its own tests pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stratagem.cli import main
from stratagem.client.validate import Validator, format_table
from stratagem.envs import load_spec
from stratagem.envs.skeleton import names, new_env
from stratagem.server.app import create_app
from tests.conftest import HERE, running

# Each test makes its own NAME: the manifest's directory joins sys.path and Python caches modules by name.


def test_new_env_writes_class_manifest_and_tests(tmp_path: Path, capsys):
    assert main(["new-env", "tic-nim", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "tic-nim"
    assert sorted(p.name for p in folder.iterdir()) == ["openenv.yaml", "test_tic_nim_env.py", "tic_nim_env.py"]
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
    assert "11 passed, 0 failed, 0 skipped" in table and "done=True" in table


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
