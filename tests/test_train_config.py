"""GRPOConfig and `stratagem train`'s flags: bad input fails before any work, with a message that helps."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.cli import build_parser, main
from stratagem.rl.config import DEFAULT_RUN, ConfigError, GRPOConfig, load_config, make_config, parse_flag_value

HERE = Path(__file__).parent


def test_defaults_are_trls_where_trl_has_the_field():
    config = GRPOConfig()
    assert (config.learning_rate, config.loss_type, config.beta, config.epsilon) == (1e-6, "dapo", 0.0, 0.2)
    assert (config.num_generations, config.scale_rewards, config.num_iterations) == (8, "group", 1)
    assert (config.temperature, config.top_p, config.max_completion_length) == (1.0, 1.0, 256)
    assert config.importance_sampling_level == "token" and config.mask_truncated_completions is False


def test_no_config_file_means_the_embedded_default_run_and_a_file_means_trl_defaults(tmp_path):
    assert load_config().learning_rate == DEFAULT_RUN["learning_rate"]
    path = tmp_path / "my.yaml"
    path.write_text("max_steps: 3\nloss_type: grpo\n")
    config = load_config(path, {"learning_rate": "5e-4"})
    assert (config.max_steps, config.loss_type, config.learning_rate) == (3, "grpo", 5e-4)


def test_a_manifests_training_block_sits_between_the_embedded_run_and_the_file_and_flags(tmp_path):
    """Layers, lowest first: the embedded run, the manifest's training block, a config file, the flags;
    env_params merge key by key across them."""
    manifest = tmp_path / "openenv.yaml"
    source = (HERE / "toy_env" / "openenv.yaml").read_text()
    manifest.write_text(source + "training: {num_episodes: 9, max_steps: 7, env_params: {target: 5}}\n")
    (tmp_path / "toy_env_module.py").write_text((HERE / "toy_env" / "toy_env_module.py").read_text())
    config = load_config(None, {"env": str(manifest)})
    assert (config.num_episodes, config.max_steps, config.env_params) == (9, 7, {"target": 5})
    assert config.learning_rate == DEFAULT_RUN["learning_rate"]  # the embedded run below it
    path = tmp_path / "my.yaml"
    path.write_text(f"env: {manifest}\nmax_steps: 3\nenv_params: {{other: 1}}\n")
    config = load_config(path, {"num_episodes": 2})
    assert (config.num_episodes, config.max_steps, config.env_params) == (2, 3, {"target": 5, "other": 1})
    manifest.write_text(source + "training: {num_episode: 9}\n")
    with pytest.raises(ConfigError, match="training block: 'num_episode' is not a training setting"):
        load_config(None, {"env": str(manifest)})


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"lr": 1e-3}, ["unknown field 'lr'", "learning_rate"]),
        ({"loss_type": "ppo"}, ["loss_type", "'grpo'", "'cispo'", "'ppo'"]),
        ({"importance_sampling_level": "seq"}, ["importance_sampling_level", "'sequence'"]),
        ({"scale_rewards": True}, ["scale_rewards"]),
        ({"learning_rate": -1}, ["learning_rate", "greater than 0"]),
        ({"learning_rate": float("nan")}, ["learning_rate"]),
        ({"num_generations": 3}, ["multiple of num_generations = 3"]),
        ({"per_device_train_batch_size": 0}, ["per_device_train_batch_size"]),
        ({"delta": 1.1, "epsilon_high": 0.28}, ["delta"]),
        ({"top_p": 1.5}, ["top_p", "less than or equal to 1"]),
        ({"dtype": "int8"}, ["dtype", "'bfloat16'"]),
        ({"reward_weights": {"speed": 1.0}}, ["unknown reward function", "speed"]),
        ({"lora_r": 0, "max_steps": 0}, ["lora_r", "max_steps"]),  # every problem at once
    ],
)
def test_bad_values_name_the_field_and_what_it_accepts(values, needles):
    with pytest.raises(ConfigError) as info:
        make_config(values)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_config_files_that_are_not_configs(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_every_config_field_has_a_flag():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    train = sub.choices["train"]
    dests = {action.dest for action in train._actions}
    assert set(GRPOConfig.model_fields) - {"env_params"} <= dests and "param" in dests  # env_params: -p KEY=VALUE
    flags = {flag for action in train._actions for flag in action.option_strings}
    assert {"--steps", "--lr", "--out", "--model", "--env", "--num-generations", "--loss-type"} <= flags


def test_flag_values_parse_lists_mappings_and_none():
    assert parse_flag_value("lora_target_modules", "q_proj, v_proj") == ["q_proj", "v_proj"]
    assert parse_flag_value("env_params", '{"max_tile": 256}') == {"max_tile": 256}
    assert parse_flag_value("top_k", "none") is None
    with pytest.raises(ConfigError, match="JSON object"):
        parse_flag_value("env_params", "max_tile=256")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--lr", "-1"], "learning_rate"),
        (["--loss-type", "ppo"], "loss_type"),
        (["--steps", "ten"], "max_steps"),
        (["--num-generations", "3"], "multiple of num_generations"),
        (["--model", "/no/such/model/dir"], "no such directory"),
        (["--model", "./nonexistent"], "no such directory"),
        (["--env", "no-such-env"], "no-such-env"),
        (["-p", "max_tile=big"], "max_tile"),
        (["--resume", "/no/such/run"], "no such directory"),
    ],
)
def test_train_refuses_bad_flags_before_any_work(tmp_path, capsys, argv, needle):
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 2
    out, err = capsys.readouterr()
    assert "stratagem train: error:" in err and needle in err, err
    assert "run directory" not in out  # no announcing of work that will not be done
    assert not (tmp_path / "run").exists()  # and nothing left behind


def test_unknown_flags_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--learning_rate", "1"])
    assert info.value.code == 2
    assert "unknown flag --learning_rate; did you mean --learning-rate?" in capsys.readouterr().err


def test_the_gpu_2048_preset_is_the_embedded_run_longer_on_more_seeds():
    """examples/gpu_2048.yaml is the measured GPU run (README, its header): the embedded default run with only
    the fields it names changed, so a change to the default run cannot leave the preset behind unnoticed."""
    preset = load_config(str(Path(__file__).parents[1] / "examples" / "gpu_2048.yaml"))
    changed = {"device": "cuda", "max_steps": 150, "num_episodes": 8, "best_episodes": 32, "save_steps": 50}
    assert preset == load_config(None, changed)
    assert all(getattr(load_config(None), name) != value for name, value in changed.items())
