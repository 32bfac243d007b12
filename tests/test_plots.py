"""Training curves (``viz/plots.py``), ``stratagem plot``, and the run directory's end-of-run pictures:
curves.png and best_episode.gif (``rl/rundir.py``). The trainer calling them is checked in test_train.py."""

from __future__ import annotations

import json
import logging
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from stratagem.cli import main
from stratagem.envs.game2048 import Game2048Action, Game2048Env
from stratagem.rl.rundir import BEST_EPISODE_GIF, RunDir
from stratagem.viz.plots import PlotError, draw, figure_size, panels, plot_run, read_metrics
from stratagem.viz.recording import RecordingWriter, read_recording

RUBRIC = ("function_works", "no_cheating", "strategy_succeeds", "failure_penalty", "score_shaped")


def metrics_row(step: int, kl: bool = True) -> dict:
    """A metrics.jsonl line with the keys and magnitudes the trainer logs on 2048."""
    rng = random.Random(step)
    row = {"step": step, "reward": 0.5 + 0.02 * step, "reward_std": 1.1, "reward_max": 1.3, "frac_reward_zero_std": 0.0,
           "win_rate": 0.0, "score": 1800.0 + rng.uniform(-100, 100), "frac_programs_built": 0.95,
           "frac_played_clean": 0.9, "draw_rate": 0.0, "loss_rate": 1.0,
           "completion_length": 30.0 + rng.uniform(-2, 2), "truncated": 0.0, "loss": -0.07, "grad_norm": 0.04,
           "learning_rate": 1e-3, "time/sample_s": 10.1, "time/reward_s": 7.0, "time/update_s": 15.0}  # fmt: skip
    row.update({f"rewards/{name}": rng.uniform(-1, 1) for name in RUBRIC})
    if kl:
        row["kl"] = 0.001 * step
    return row


def write_metrics(run: Path, rows: list[dict], tail: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)
    return run


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def coloured_pixels(image: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Pixels in a figure-fraction box (x0, y0, x1, y1) that are not grey: drawn curves, not frames or grid."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    region = image[round((1 - y1) * height) : round((1 - y0) * height), round(x0 * width) : round(x1 * width), :3]
    return int((np.ptp(region, axis=2) > 0.15).sum())


def test_every_logged_metric_gets_a_panel_with_its_curve(tmp_path):
    run = write_metrics(tmp_path / "run", [metrics_row(step) for step in range(1, 6)])
    out = plot_run(run)
    assert out == run / "curves.png"
    rows = read_metrics(run / "metrics.jsonl")
    chosen = panels(rows)
    assert [p.title for p in chosen] == ["reward (mean ± std)", "episodes won, drawn, lost", "score",
                                         "KL to the reference", "completion length (tokens)",
                                         "reward functions (mean)", "programs built, played clean"]  # fmt: skip
    assert [key for key, _ in chosen[1].lines] == ["win_rate", "draw_rate", "loss_rate"]
    assert [key for key, _ in chosen[6].lines] == ["frac_programs_built", "frac_played_clean"]
    assert chosen[0].band == "reward_std"
    assert [label for _, label in chosen[5].lines] == sorted(RUBRIC)
    assert png_size(out) == figure_size(7) == (1200, 800)
    # Every panel has coloured pixels (its curves) and the two empty cells of the 3x3 grid have none.
    from matplotlib.image import imread

    image = imread(out)
    figure = draw(rows, chosen, "same layout")
    for axes, panel in zip(figure.axes, chosen, strict=True):
        assert coloured_pixels(image, axes.get_position().extents) > 50, panel.title
    bottom = figure.axes[6].get_position()
    for column in (1, 2):  # the cells right of the last panel: x of that column, y of the bottom row
        top = figure.axes[column].get_position()
        assert coloured_pixels(image, (top.x0, bottom.y0, top.x1, bottom.y1)) == 0
    assert not list(run.glob(".*tmp*")), "the staging file was left behind"


def test_one_step_of_an_env_without_wins_or_kl(tmp_path):
    row = {k: v for k, v in metrics_row(1, kl=False).items() if k not in ("win_rate", "reward_std")}
    run = write_metrics(tmp_path / "run", [row])
    chosen = panels(read_metrics(run / "metrics.jsonl"))
    assert [p.title for p in chosen] == ["reward", "score", "completion length (tokens)", "reward functions (mean)",
                                         "programs built, played clean"]  # fmt: skip
    assert chosen[0].band is None and [key for key, _ in chosen[0].lines] == ["reward", "reward_max"]
    assert png_size(plot_run(run, tmp_path / "elsewhere.png")) == figure_size(5) == (1200, 550)
    assert not (run / "curves.png").exists()


def test_a_torn_last_line_is_skipped_and_a_nan_is_a_gap(tmp_path):
    rows = [metrics_row(1), {**metrics_row(2), "kl": float("nan")}, metrics_row(3)]
    run = write_metrics(tmp_path / "run", rows, tail='{"step": 4, "reward": 0.7, "sco')  # killed mid-write
    read = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in read] == [1, 2, 3]
    assert png_size(plot_run(run)) == figure_size(7)


def test_a_step_logged_twice_keeps_the_later_line(tmp_path):
    run = write_metrics(tmp_path / "run", [metrics_row(1), metrics_row(2), {**metrics_row(2), "reward": 9.0}])
    assert [(r["step"], r["reward"]) for r in read_metrics(run / "metrics.jsonl")][1:] == [(2, 9.0)]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: None, "no such directory"),
        (lambda d: d.write_text("x"), "is not a directory"),
        (lambda d: d.mkdir(), "no metrics.jsonl; is it a stratagem run directory"),
        (lambda d: write_metrics(d, []), "no metrics yet (empty file)"),
        (
            lambda d: write_metrics(d, [metrics_row(1)], tail="garbage\n" + json.dumps(metrics_row(3)) + "\n"),
            "metrics.jsonl, line 2: not JSON",
        ),
        (lambda d: write_metrics(d, [metrics_row(1), [1, 2]]), 'line 2: expected a JSON object with a numeric "step"'),
        (lambda d: write_metrics(d, [{"step": "one", "reward": 1}]), "line 1: expected a JSON object with a numeric"),
        (lambda d: write_metrics(d, [{"step": 1, "accuracy": 0.5}]), "none of its keys is a training metric"),
    ],
)
def test_bad_run_directories_get_a_clear_error(tmp_path, setup, expected):
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(PlotError) as error:
        plot_run(run)
    assert expected in str(error.value)
    assert str(run) in str(error.value)
    assert not (run / "curves.png").exists()


def test_bad_out_paths(tmp_path):
    run = write_metrics(tmp_path / "run", [metrics_row(1)])
    with pytest.raises(PlotError, match=r"written as PNG; give a file name ending in \.png"):
        plot_run(run, tmp_path / "curves.jpg")
    with pytest.raises(PlotError, match="does not exist; create it first"):
        plot_run(run, tmp_path / "missing" / "curves.png")


def test_cli_plot(tmp_path, capsys):
    run = write_metrics(tmp_path / "run", [metrics_row(step) for step in (1, 2)])
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "curves.png")
    assert png_size(run / "curves.png") == figure_size(7)
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "stratagem plot: error:" in capsys.readouterr().err


def test_the_run_directory_logs_a_plot_failure_instead_of_raising(tmp_path, caplog):
    run = write_metrics(tmp_path / "run", [metrics_row(1)], tail="{oops\n" + json.dumps(metrics_row(2)) + "\n")
    with caplog.at_level(logging.WARNING, logger="stratagem.rl.rundir"):
        assert RunDir(run).plot_curves() is None
    assert "training curves not drawn" in caplog.text and "line 2: not JSON" in caplog.text
    assert not (run / "curves.png").exists()


# -- best_episode.gif --------------------------------------------------------------------------


def record_2048(directory: Path, seed: int, moves: int | None = None, end: bool = True) -> Path:
    """A real 2048 episode of random legal moves, recorded as the runner records (job_modes._record)."""
    env, rng = Game2048Env(), random.Random(seed)
    path = directory / f"3f2a9c01b6de-seed{seed}.jsonl.gz"
    writer = RecordingWriter(path, env="2048", seed=seed, program="3f2a9c01b6de")
    obs, action, count = env.reset(seed=seed), None, 0
    while True:
        writer.step(action, obs.reward, obs.done, obs.model_dump(mode="json", exclude={"reward", "done", "metadata"}))
        if obs.done or (moves is not None and count == moves):
            break
        action = {"action_id": rng.choice(obs.legal_actions)}
        obs, count = env.step(Game2048Action(**action)), count + 1
    writer.close({"score": obs.score, "moves": count, "won": False, "max_tile": obs.max_tile, "error": None,
                  "message": ""} if end else None)  # fmt: skip
    return path


def test_the_best_replay_is_the_highest_scoring_readable_one(tmp_path, caplog):
    run = RunDir(tmp_path / "run")
    assert run.best_replay() is None  # no replays/ at all
    paths = [record_2048(run.replays, seed) for seed in (1, 2, 3)]
    cut = record_2048(run.replays, 4, moves=30, end=False)  # a killed run's: scored by its last position
    (run.replays / "0000-seed9.jsonl.gz").write_bytes(b"not gzip")
    scores = {p: read_recording(p).end["score"] for p in paths}
    with caplog.at_level(logging.WARNING, logger="stratagem.rl.rundir"):
        best = run.best_replay()
    assert best is not None and best.path == max(scores, key=scores.get)
    assert "skipping a replay" in caplog.text and "not a gzip file" in caplog.text
    for path in paths:
        path.unlink()
    assert run.best_replay().path == cut


def test_best_episode_gif_holds_the_last_moves(tmp_path):
    pytest.importorskip("stratagem.viz.export")
    from PIL import Image

    run = RunDir(tmp_path / "run")
    assert run.export_best_episode() is None and not (run.path / BEST_EPISODE_GIF).exists()  # nothing recorded
    replay = record_2048(run.replays, 5)
    assert len(read_recording(replay).steps) > 12
    gif = run.export_best_episode(max_frames=12)
    assert gif == run.path / BEST_EPISODE_GIF
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 12 and image.size[0] == 240
    assert sorted(p.name for p in run.path.iterdir()) == [BEST_EPISODE_GIF, "replays"]  # no staging left


def test_a_run_logged_before_the_rename_still_draws_its_programs_panel(tmp_path):
    """``valid_programs`` (programs that passed the checks and built) is ``frac_programs_built`` now."""
    old = [{k: v for k, v in metrics_row(step).items() if k not in ("frac_programs_built", "frac_played_clean",
                                                                   "draw_rate", "loss_rate")} | {"valid_programs": 0.9}
           for step in (1, 2)]  # fmt: skip
    chosen = panels(read_metrics(write_metrics(tmp_path / "run", old) / "metrics.jsonl"))
    assert chosen[-1].title == "programs built" and chosen[-1].lines == (("valid_programs", "built"),)
    assert [key for key, _ in chosen[1].lines] == ["win_rate"]
