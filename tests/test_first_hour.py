"""What a new user meets first, through the real `stratagem` command: flags taken only as spelt, names
that stay names, help that shows what applies, and Ctrl-C that ends `play`, `train`, `serve` and
`replay` with status 130, one line on stderr, no traceback, no process left behind, and for `play`
the summary of the episodes that finished."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stratagem.cli import build_parser, main
from stratagem.rl.config import DEFAULT_RUN, GRPOConfig, load_config
from tests.conftest import alive_in_session

ROOT = Path(__file__).resolve().parent.parent
CORNER = str(ROOT / "examples" / "strategies" / "corner_2048.py")


def test_no_parser_takes_a_prefix_for_a_flag():
    parser = build_parser()
    assert parser.allow_abbrev is False and all(sub.allow_abbrev is False for sub in parser.commands.values())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--learning-rat", "1e-5"], "unknown flag --learning-rat; did you mean --learning-rate?"),
        (["play", "2048", "--strat", "x.py"], "unknown flag --strat; did you mean --strategy?"),
        (["serve", "2048", "--por", "8001"], "unknown flag --por; did you mean --port?"),
        (["replay", "x", "--side-by-sid"], "unknown flag --side-by-sid; did you mean --side-by-side?"),
        (["play", "2048", "--strategy", "x.py", "--zzz"], "unknown flag --zzz (see `stratagem play --help`)"),
    ],
)
def test_a_misspelt_flag_exits_2_naming_it(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_names_are_strings_however_yaml_types_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: 2048\nmodel: default\nenv_params: {game: 2048}\n")
    config = load_config(path)
    assert config.env == "2048" and config.env_params == {"game": "2048"}


def test_train_help_shows_the_values_that_will_apply():
    train = build_parser().commands["train"]
    help_of = {action.dest: action.help for action in train._actions}
    for name, value in DEFAULT_RUN.items():
        assert f"(default {value!r}" in help_of[name], (name, help_of[name])
        trl = GRPOConfig.model_fields[name].default
        if trl != value:
            assert f"{trl!r} with --config" in help_of[name]


def test_play_and_train_take_environment_parameters_the_same_way():
    parser = build_parser()
    for command in ("play", "train", "serve"):
        flags = {flag for action in parser.commands[command]._actions for flag in action.option_strings}
        assert {"-p", "--param"} <= flags, command
    assert "--env-params" not in {f for a in parser.commands["train"]._actions for f in a.option_strings}


# -- Ctrl-C -----------------------------------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stratagem.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)  # fmt: skip


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _ctrl_c(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGINT to the whole process group, as a terminal sends it; then the output and no survivor."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # leave nothing running behind a failed test
        proc.communicate()
        pytest.fail("Ctrl-C did not stop the command within 30 s")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.monotonic() + 5
    while alive_in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive_in_session(proc.pid), "processes outlived the command"
    return out, err


def test_ctrl_c_during_play_prints_the_partial_summary(tmp_path):
    record = tmp_path / "replays"
    proc = _cli("play", "2048", "--strategy", CORNER, "--episodes", "100000", "--record", str(record))
    _wait_for(lambda: record.is_dir() and len(list(record.iterdir())) >= 5, proc)
    out, err = _ctrl_c(proc)
    [line] = err.strip().splitlines()
    done = int(re.fullmatch(r"stratagem play: interrupted after (\d+) of 100000 episodes", line).group(1))
    assert 0 < done < 100000
    assert out.startswith(f"interrupted: the {done} of 100000 episodes that finished\n")
    assert re.search(rf"^episodes +{done}$", out, re.M), out


def test_ctrl_c_during_play_json_marks_the_summary_interrupted(tmp_path):
    record = tmp_path / "replays"
    proc = _cli("play", "2048", "--strategy", CORNER, "--episodes", "100000", "--json", "--record", str(record))
    _wait_for(lambda: record.is_dir() and len(list(record.iterdir())) >= 5, proc)
    out, _ = _ctrl_c(proc)
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["episodes_requested"] == 100000
    assert 0 < summary["episodes"] < 100000 and summary["errors"] == {}


def test_ctrl_c_during_serve():
    proc = _cli("serve", "2048", "--port", str(_free_port()))
    _wait_for(lambda: proc.stderr.readline().startswith("serving"), proc)
    _, err = _ctrl_c(proc)
    assert err.strip().splitlines()[-1] == "stratagem serve: interrupted"


def test_ctrl_c_during_replay_export(tmp_path):
    subprocess.run([sys.executable, "-m", "stratagem.cli", "play", "2048", "--strategy", CORNER, "--episodes", "12",
                    "--record", str(tmp_path / "rec")], check=True, capture_output=True)  # fmt: skip
    out = tmp_path / "long.gif"
    proc = _cli("replay", str(tmp_path / "rec"), "--export", str(out))
    time.sleep(1.5)  # importing pygame and decoding, then drawing frames
    assert proc.poll() is None, proc.communicate()
    _, err = _ctrl_c(proc)
    assert err.strip().splitlines()[-1] == "stratagem replay: interrupted"
    assert not out.exists(), "a half-written export was left behind"


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()


# -- play's progress bar -------------------------------------------------------------------------------


def test_play_shows_progress_on_a_terminal_and_nothing_extra_when_piped():
    args = [sys.executable, "-m", "stratagem.cli", "play", "2048", "--strategy", CORNER, "--episodes", "60"]
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == "" and "\r" not in piped.stdout
    assert "episode" not in piped.stdout.split("\n", 1)[0]  # the summary table starts at once

    code, text = _on_a_terminal(args)
    assert code == 0, text
    assert re.search(r"play 2048: +\d+%.*\d+/60 .*wins \d+", text), text


def test_replay_export_shows_progress_on_a_terminal(tmp_path):
    subprocess.run([sys.executable, "-m", "stratagem.cli", "play", "2048", "--strategy", CORNER, "--episodes", "2",
                    "--record", str(tmp_path / "rec")], check=True, capture_output=True)  # fmt: skip
    args = [sys.executable, "-m", "stratagem.cli", "replay", str(tmp_path / "rec"), "--export", str(tmp_path / "a.gif"),
            "--end", "60"]  # fmt: skip
    code, text = _on_a_terminal(args)
    assert code == 0, text
    assert re.search(r"export a\.gif: +\d+%.*frame", text), text


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``args`` with a fresh pty (0 x 0, as some are) as its terminal; its exit status and all it wrote."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(args, stdin=child_fd, stdout=child_fd, stderr=child_fd, close_fds=True)
    os.close(child_fd)
    seen = b""
    while True:
        ready, _, _ = select.select([main_fd], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=30)
    os.close(main_fd)
    return proc.returncode, seen.decode(errors="replace")


def test_our_warnings_read_as_one_line_of_ours(capsys, monkeypatch):
    import warnings

    from stratagem.agents.policy import PromptTruncatedWarning
    from stratagem.cli_session import our_warnings_as_lines

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # put back after the test
    our_warnings_as_lines("stratagem train")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(PromptTruncatedWarning("the prompt is 551 tokens, more than max_prompt_length 512"), stacklevel=1)
        with pytest.warns(DeprecationWarning):  # someone else's: left to Python's (here pytest's) handling
            warnings.warn(DeprecationWarning("someone else's"), stacklevel=1)
    err = capsys.readouterr().err
    assert "stratagem train: warning: the prompt is 551 tokens, more than max_prompt_length 512\n" in err
    assert "warning: someone else's" not in err


def test_ctrl_z_then_fg_is_not_the_programs_timeout(tmp_path):
    """Ctrl-Z stops the whole group (SIGTSTP), `fg` continues it (SIGCONT): the parent's wall clocks jump by
    the stop, which must not be charged to the moves in flight."""
    slow = tmp_path / "slow.py"  # ~10 ms a move, so that a stop lands mid-move
    corner = Path(CORNER).read_text().replace("def strategy(", "def corner(")
    slow.write_text(corner + "\n\ndef strategy(board):\n    n = 0\n    for i in range(200000):\n        n += i\n"
                    "    return corner(board)\n")  # fmt: skip
    record = tmp_path / "replays"
    proc = _cli("play", "2048", "--strategy", str(slow), "--episodes", "4", "--json", "--move-timeout", "0.5",
                "-p", "max_tile=512", "--record", str(record))  # fmt: skip
    _wait_for(lambda: record.is_dir() and len(list(record.iterdir())) >= 2, proc)
    for _ in range(2):
        os.killpg(proc.pid, signal.SIGSTOP)  # as Ctrl-Z stops it (SIGTSTP is not acted on in an orphaned group)
        time.sleep(1.0)  # twice the move timeout
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.3)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["episodes"] == 4 and summary["errors"] == {}, summary["first_error"]
