"""Manifests: loading, validation errors that name the field and the fix, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.envs import ManifestError, load_spec, make, registry, resolve
from stratagem.envs.skeleton import DOCKERFILE, FIXED_SECRET
from stratagem.envs.spec import MANIFEST_DIR, EnvSpec, manifest_paths
from tests.openenv_typed import validate_package

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


# --- OpenEnv 0.10 packages: validation: block, Dockerfile, runtime plan ------------------------------------
def test_each_builtin_manifest_is_an_openenv_package():
    packages = [p.parent for p in manifest_paths()]
    assert [p.name for p in packages] == sorted(registry()) and len(packages) == 7
    for package in packages:
        assert list(package.rglob("openenv.yaml")) == [package / "openenv.yaml"]  # openenv validate: exactly one
        assert (package / "Dockerfile").read_text() == DOCKERFILE.substitute(secret=FIXED_SECRET)
        spec = load_spec(package)
        assert spec.validation.execution.probe_path == "validation/runtime.json" and spec.validation.types.tags
        assert spec.validation.capabilities.verifier.kind == "reward_channel"
    assert sorted(p.name for p in MANIFEST_DIR.iterdir() if p.is_file()) == ["stratagem.Dockerfile"]


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")  # OpenEnv's
@pytest.mark.parametrize("name", sorted(p.parent.name for p in manifest_paths()))
def test_openenv_validate_passes_static_and_runtime(name: str, monkeypatch):
    """OpenEnv's own runner and graders; the runtime level plays validation/runtime.json in a server of ours."""
    report = validate_package(MANIFEST_DIR / name, env=monkeypatch)
    status = {r.check_id: r.status.value for r in report.results}
    evidence = {r.check_id: r.evidence for r in report.results if r.status.value not in ("pass", "skip")}
    assert not evidence, evidence
    for check in ("static.manifest", "runtime.startup", "runtime.reward_well_formed", "runtime.observation_schema",
                  "runtime.state_contract"):  # fmt: skip
        assert status[check] == "pass", (check, report.results)
    # WARN, not PASS: 0.10 skips the graders it has not implemented (seed_control, determinism, ...), and
    # network_policy needs Docker's provider
    assert report.verdict.value in ("pass", "warn")
    assert report.manifest.reward.range == load_spec(MANIFEST_DIR / name).validation.reward.range


def test_openenv_validate_cli_static_level():
    from openenv.cli.__main__ import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(MANIFEST_DIR / "2048"), "--level", "static"])
    assert result.exit_code == 0 and "PASS  static.manifest" in result.output and "Verdict: PASS" in result.output
    result = CliRunner().invoke(app, ["validate", str(MANIFEST_DIR), "--level", "static"])
    assert result.exit_code == 2  # the folder of packages is none itself: one openenv.yaml a directory


def test_a_manifest_without_validation_block_serves_but_openenv_validate_fails_it(tmp_path: Path):
    path = write(tmp_path, GOOD)
    assert load_spec(path).validation is None
    report = validate_package(tmp_path, level="static")
    [manifest] = [r for r in report.results if r.check_id == "static.manifest"]
    assert manifest.status.value == "fail" and "no `validation:` block" in " ".join(manifest.evidence)
