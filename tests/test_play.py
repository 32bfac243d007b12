"""`stratagem play`: the summary table, --json, --record, --url, and what bad input gets."""

from __future__ import annotations

import json

import pytest

from stratagem.agents.baselines import HEURISTIC_2048
from stratagem.cli import main
from stratagem.envs.game2048 import Game2048Action, Game2048Env
from stratagem.viz.recording import read_recording
from tests.test_runner import FIRST_LEGAL


@pytest.fixture
def strategy_file(tmp_path):
    path = tmp_path / "my_strategy.py"
    path.write_text(HEURISTIC_2048)
    return path


def play(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["play", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_summary_table(capsys, strategy_file):
    code, out, _ = play(capsys, "2048", "--strategy", str(strategy_file), "--episodes", "3", "--seed", "5")
    assert code == 0
    for label in ("win rate", "score", "max tile", "errors", "moves/s", "reward"):
        assert label in out, out
    assert "episodes     3" in out and "errors       none" in out


def test_json_is_one_object_with_every_figure(capsys, strategy_file):
    code, out, _ = play(capsys, "2048", "--strategy", str(strategy_file), "--episodes", "2", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["episodes"] == 2 and summary["errors"] == {}
    assert summary["moves"] > 100 and summary["moves_per_s"] > 0 and summary["mean_score"] > 1000
    assert sum(summary["max_tile_histogram"].values()) == 2
    assert set(summary["reward_parts"]) >= {"function_works", "strategy_succeeds", "score_shaped"}


def test_a_completion_in_markdown_plays_too_and_errors_are_counted_by_kind(capsys, tmp_path):
    path = tmp_path / "completion.md"
    path.write_text("Here is my strategy:\n```python\ndef strategy(board):\n    return '0'\n```\nIt goes up.")
    code, out, _ = play(capsys, "2048", "--strategy", str(path), "--episodes", "2", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["errors"] == {"illegal_move": 2} and "does not move any tile" in summary["first_error"]


def test_recordings_replay_to_the_reported_result(capsys, tmp_path):
    path = tmp_path / "first_legal.py"
    path.write_text(FIRST_LEGAL)
    code, out, _ = play(capsys, "2048", "--strategy", str(path), "--episodes", "2", "--seed", "3",
                        "--record", str(tmp_path / "replays"), "--json")  # fmt: skip
    summary = json.loads(out)
    files = sorted((tmp_path / "replays").iterdir())
    assert code == 0 and [f.name for f in files] == [f"{summary['program']}-seed3.jsonl.gz",
                                                     f"{summary['program']}-seed4.jsonl.gz"]  # fmt: skip
    total = 0.0
    for file in files:
        recording = read_recording(file)
        header, steps, end = recording.header, recording.steps, recording.end
        assert header["env"] == "2048" and header["program"] == summary["program"] and header["version"] == 1
        env = Game2048Env()
        obs = env.reset(seed=header["seed"])
        assert steps[0]["action"] is None and steps[0]["observation"]["board"] == obs.board
        for step in steps[1:]:  # every recorded step is what the real game does with that action
            obs = env.step(Game2048Action(**step["action"]))
            assert step["observation"]["board"] == obs.board and step["reward"] == obs.reward
        assert steps[-1]["done"] and end["moves"] == len(steps) - 1 and end["score"] == obs.score
        total += end["score"]
    assert total / 2 == summary["mean_score"]


def test_play_against_a_server_gives_the_in_process_result(capsys, strategy_file, url_2048):
    args = ["2048", "--strategy", str(strategy_file), "--episodes", "2", "--seed", "1", "--json"]
    _, local, _ = play(capsys, *args)
    code, remote, _ = play(capsys, *args, "--url", url_2048)
    assert code == 0
    keys = ("episodes", "mean_score", "max_tile_histogram", "moves", "errors")
    assert {k: json.loads(remote)[k] for k in keys} == {k: json.loads(local)[k] for k in keys}


def test_a_refused_program_says_which_rule_and_exits_1(capsys, tmp_path):
    path = tmp_path / "sneaky.py"
    path.write_text("import os\n\ndef strategy(board):\n    return os.getcwd()\n")
    code, out, _ = play(capsys, "2048", "--strategy", str(path), "--episodes", "3")
    assert code == 1 and "refused" in out and "import of 'os' is not allowed" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "missing.py"], "cannot read --strategy missing.py"),
        (["--strategy", "x.py", "--episodes", "0"], "must be > 0"),
        (["--strategy", "x.py", "--seed", "-1"], "must be >= 0"),
        (["--strategy", "x.py", "--url", "ftp://host"], "expected a server URL"),
        (["--strategy", "x.py", "--move-timeout", "0"], "must be > 0"),
        (["--strategy", "x.py", "-p", "max_tile=3"], "max_tile must be a power of two"),
        (["--strategy", "huge.py"], "--strategy huge.py is over 200,000 characters"),
        (["--strategy", "binary.py"], "--strategy binary.py is not UTF-8 text"),
        ([], "--strategy"),
    ],
)
def test_bad_input_gets_a_clear_error(capsys, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.py").write_text(FIRST_LEGAL)
    (tmp_path / "huge.py").write_text("# " + "x" * 1_000_000)  # read no further than the cap
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00def strategy(board):")
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["play", "2048", *args]))
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_an_unreachable_server_is_a_clear_error(capsys, strategy_file):
    from tests.conftest import free_port

    code, _, err = play(capsys, "2048", "--strategy", str(strategy_file), "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the environment server" in err
