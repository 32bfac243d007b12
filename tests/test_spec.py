"""Manifests: loading, validation errors that name the field and the fix, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.envs import ManifestError, load_spec, make, registry, resolve
from stratagem.envs.spec import EnvSpec

GOOD = """spec_version: 1
name: toy
type: space
runtime: fastapi
app: stratagem.server.app:app
port: 8000
entry_point: toy_env_module:ToyEnv
"""


def write(tmp_path: Path, text: str, name: str = "openenv.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_registry_lists_2048_with_a_description():
    specs = registry()
    assert "2048" in specs
    assert "OpenSpiel" in specs["2048"].description
    assert specs["2048"].strategy.args == ["board"]


def test_resolve_by_name_path_and_directory(toy_manifest: Path):
    assert resolve("2048").name == "2048"
    assert resolve(str(toy_manifest)).name == "toy"
    assert resolve(toy_manifest.parent).name == "toy"


def test_user_environment_from_a_manifest(toy_manifest: Path):
    env = make(toy_manifest, target=2)
    obs = env.reset()
    assert obs.count == 0 and obs.target == 2


def test_openenv_only_keys_stay_valid(tmp_path: Path):
    spec = load_spec(write(tmp_path, GOOD + "variables: {OPENSPIEL_GAME: '2048'}\n"))
    assert spec.variables == {"OPENSPIEL_GAME": "2048"} and spec.app == "stratagem.server.app:app"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("entry_piont: x:Y\n", "unknown key 'entry_piont'; did you mean 'entry_point'?"),
        ("port: 70000\n", "port: Input should be less than or equal to 65535"),
        ("spec_version: 2\n", "spec_version"),
        ("max_episode_steps: 0\n", "max_episode_steps"),
        ("strategy: {function: 'not valid'}\n", "'not valid' is not a Python identifier"),
        ("strategy: {fucntion: strategy}\n", "unknown key 'strategy.fucntion'; did you mean 'function'?"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, extra: str, message: str):
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith(extra.split(":")[0] + ":"))
    with pytest.raises(ManifestError, match="openenv.yaml") as info:
        load_spec(write(tmp_path, text + "\n" + extra))
    assert message in str(info.value)


def test_missing_entry_point_says_how_to_write_one(tmp_path: Path):
    text = GOOD.replace("entry_point: toy_env_module:ToyEnv\n", "")
    with pytest.raises(ManifestError, match="missing required key 'entry_point' \\(e.g. entry_point: my_package"):
        load_spec(write(tmp_path, text))


def test_file_level_errors(tmp_path: Path):
    with pytest.raises(ManifestError, match="no such manifest file"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ManifestError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- a\n- b\n"))


def test_entry_point_problems_are_reported(tmp_path: Path):
    spec = load_spec(write(tmp_path, GOOD.replace("toy_env_module:ToyEnv", "no_such_module_xyz:Env")))
    with pytest.raises(ManifestError, match="'no_such_module_xyz' cannot be imported"):
        spec.env_class()
    spec = load_spec(write(tmp_path, GOOD.replace("toy_env_module:ToyEnv", "pathlib:Path")))
    with pytest.raises(ManifestError, match="must name a subclass of stratagem.envs.core.Environment"):
        spec.env_class()


def test_unknown_parameters_are_refused_before_any_work(toy_manifest: Path):
    with pytest.raises(ManifestError, match=r"unknown parameter\(s\) \['tagret'\] for ToyEnv; it accepts"):
        make(toy_manifest, tagret=3)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ManifestError, match="unknown environment '248'. Did you mean '2048'?"):
        resolve("248")


def test_name_must_be_sane():
    with pytest.raises(ValueError, match="name"):
        EnvSpec(name="has space", entry_point="a:B")
