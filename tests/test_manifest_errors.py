"""The common manifest mistakes: each message names the field and says how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.cli import main
from stratagem.envs import ManifestError, load_spec

GOOD = {
    "spec_version": "1",
    "name": "mistakes",
    "entry_point": "mistakes_game:MistakesEnv",
}
MODULES = {
    # A small but real environment, a class that is not one, and two modules that fail to import.
    "mistakes_game.py": """
from stratagem.envs.core import Action, Environment, Observation, State


class MoveAction(Action):
    n: int = 1


class MistakesEnv(Environment):
    action_type = MoveAction

    def __init__(self, size: int = 3, label: str = "x") -> None:
        self.size = size

    def reset(self, seed=None, episode_id=None):
        return Observation()

    @property
    def state(self):
        return State()


def helper():
    return 1
""",
    "mistakes_needs_dep.py": "import no_such_dependency_xyz\n",
    "mistakes_broken.py": "def broken(:\n",
}


@pytest.fixture
def write(tmp_path: Path):
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)

    def write_manifest(**changes: str) -> Path:
        lines = {**GOOD, **changes}
        path = tmp_path / "openenv.yaml"
        path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None))
        return path

    return write_manifest


def error_of(path: Path, **params) -> str:
    with pytest.raises(ManifestError) as info:
        load_spec(path).make(**params)
    return str(info.value)


def test_the_good_manifest_builds(write):
    env = load_spec(write()).make(size=4)
    assert env.size == 4


def test_missing_entry_point(write):
    assert "missing required key 'entry_point' (e.g. entry_point: my_package.my_module:MyEnv)" in error_of(
        write(entry_point=None)
    )


def test_entry_point_written_with_a_dot_suggests_the_colon(write):
    message = error_of(write(entry_point="mistakes_game.MistakesEnv"))
    assert "entry_point must be 'module:Class', got 'mistakes_game.MistakesEnv'" in message
    assert "did you mean 'mistakes_game:MistakesEnv'?" in message


def test_entry_point_module_not_importable_points_at_the_directory(write, tmp_path: Path):
    message = error_of(write(entry_point="mistakes_gmae:MistakesEnv"))
    assert "entry_point module 'mistakes_gmae' cannot be imported" in message
    assert f"importable from the manifest's directory ({tmp_path})" in message
    assert "did you mean 'mistakes_game'?" in message


def test_entry_point_module_whose_own_import_fails(write):
    message = error_of(write(entry_point="mistakes_needs_dep:Env"))
    assert "'mistakes_needs_dep' was found but importing it failed: No module named 'no_such_dependency_xyz'" in message
    assert "raised SyntaxError" in error_of(write(entry_point="mistakes_broken:Env"))


def test_entry_point_class_misspelt(write):
    message = error_of(write(entry_point="mistakes_game:MistakeEnv"))
    assert "must name a subclass of stratagem.envs.core.Environment" in message
    assert "module 'mistakes_game' has no 'MistakeEnv'; did you mean mistakes_game:MistakesEnv?" in message


def test_entry_point_not_an_environment_subclass(write):
    message = error_of(write(entry_point="mistakes_game:MoveAction"))
    assert "MoveAction is a class based on Action (write `class MoveAction(Environment)`" in message
    assert "Environment subclasses in mistakes_game: MistakesEnv" in message
    assert "helper is a function" in error_of(write(entry_point="mistakes_game:helper"))


def test_unknown_top_level_key(write):
    assert "unknown key 'entrypoint'; did you mean 'entry_point'?" in error_of(write(entrypoint="x"))
    message = error_of(write(colour="red"))
    assert "unknown key 'colour'; known keys: spec_version, name," in message and "source" not in message


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("[3, 4]", "params: Input should be a valid dictionary (got [3, 4]); write e.g. params: {size: 5}"),
        ("{size: three}", "parameter 'size' of MistakesEnv must be int, got 'three' (str)"),
        ("{label: [1, 2]}", "parameter 'label' of MistakesEnv must be str, got [1, 2] (list)"),
        ("{sise: 3}", "unknown parameter(s) ['sise'] for MistakesEnv; it accepts: ['label', 'size']"),
    ],
)
def test_bad_params(write, params: str, needle: str):
    assert needle in error_of(write(params=params))


def test_bad_params_from_the_command_line_say_the_same(write, capsys):
    assert main(["serve", str(write()), "-p", "size=big"]) == 2
    assert "parameter 'size' of MistakesEnv must be int, got 'big' (str)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("strategy", "needle"),
    [
        ("", "strategy: Input should be a valid dictionary"),
        ("play", "or leave it out for the defaults"),
        ("{args: board}", "strategy.args: Input should be a valid list (got 'board'); write e.g. args: [board]"),
        ("{fucntion: strategy}", "unknown key 'strategy.fucntion'; did you mean 'function'?"),
        ("{zzz: 1}", "unknown key 'strategy.zzz'; known keys: function, args, goal, inputs, returns, imports"),
        ("{imports: [os]}", "['os'] cannot be offered to programs; choose from ['bisect',"),
        ("{args: [my board]}", "'my board' is not a Python identifier"),
    ],
)
def test_bad_strategy_block(write, strategy: str, needle: str):
    message = error_of(write(strategy=strategy))
    assert needle in message and "Value error," not in message


def test_no_strategy_block_means_the_defaults(write):
    spec = load_spec(write())
    assert (spec.strategy.function, spec.strategy.args) == ("strategy", ["observation"])


VALIDATION = (
    "{reward: {range: [0, 1], floor_margin: 0.1}, resources: {cpu: 1, memory_mb: 512, disk_mb: 256, "
    "episode_timeout_s: 60}, capabilities: {verifier: {kind: reward_channel}}, types: {tags: [game]}}"
)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("floor_margin", "floor_margni", "unknown key 'validation.reward.floor_margni'; did you mean 'floor_margin'?"),
        ("types:", "tpyes:", "unknown key 'validation.tpyes'; did you mean 'types'?"),
        (", floor_margin: 0.1", "", "missing required key 'validation.reward.floor_margin'"),
        ("[0, 1]", "[1, 0]", "validation.reward: range must be [low, high] with low < high, both finite, got [1.0, 0."),
        ("[game]", "[]", "validation.types.tags: List should have at least 1 item"),
        ("reward_channel", "script", "verifier.entry is required when kind is 'script' and only then"),
        ("}}, types", "}, oracle: {form: injected_state, location: o.json}}, types",
         "oracle.form 'injected_state' needs set_state: true"),
        ("types: {tags: [game]}", "types: {tags: [game]}, execution: {dockerfile: ../Dockerfile}",
         "validation.execution.dockerfile: must be a relative path inside the manifest's directory, without '..'"),
        ("types: {tags: [game]}", "types: {tags: [game]}, execution: {probe: x.json}",
         "unknown key 'validation.execution.probe'; did you mean 'probe_path'?"),
    ],
)  # fmt: skip
def test_bad_validation_block(write, old: str, new: str, needle: str):
    """OpenEnv 0.10's block, checked as `openenv validate` checks it, so serve and validate agree on the file."""
    assert old in VALIDATION
    message = error_of(write(validation=VALIDATION.replace(old, new)))
    assert needle in message and "Value error," not in message


def test_a_good_validation_block_is_kept(write):
    spec = load_spec(write(validation=VALIDATION))
    assert spec.validation.reward.range == (0.0, 1.0) and spec.validation.execution is None
    assert spec.validation.network.mode == "public" and spec.validation.resources.gpus == 0
