"""Rewards and summaries that mean what they say (issue 22).

- A wrong result is an error of the episode, never a loss and never "works": matmul's wrong product
  (in-process, through the sandbox, over the wire and in the code sandbox's task), and in every
  built-in environment a program that answers wrongly pays -1 in ``function_works``.
- Wins, draws and losses are counted apart (``play --json``, the text summary, training metrics); a
  draw is what the environment calls a tie (OpenSpiel's equal returns).
- Environment-specific fields appear only for their environment (2048's max-tile histogram).
- The training metrics say what they count: ``frac_programs_built``, ``frac_played_clean``.
- ``best_strategy.py`` and ``best.json`` describe the same program: ``play`` prints best.json's hash.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch

from stratagem.agents.baselines import MATMUL_TEXTBOOK
from stratagem.agents.remote import RemoteGame
from stratagem.agents.results import ERROR_KINDS, EpisodeResult, ProgramResult
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.agents.summary import format_summary, summarize
from stratagem.cli import main
from stratagem.envs.core import StepResult
from stratagem.envs.matmul import MatmulEnv
from stratagem.envs.outcome import ERROR_OUTCOMES
from stratagem.envs.spec import load_spec, resolve
from stratagem.rl.distributed import Distributed
from stratagem.server.protocol import SESSION_HEADER
from stratagem.viz.recording import read_recording
from tests.honest_corpus import EXAMPLES

LIMITS = Limits(move_s=2.0, episode_s=30, memory_mb=256, cpu_s=30)
SMALL_MATMUL = {"size": 12, "trials": 2}
ZEROS = "def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]\n"
HIGHER_LOWER = EXAMPLES / "custom_env" / "openenv.yaml"
CORNER_2048 = (EXAMPLES / "strategies" / "corner_2048.py").read_text()


def test_every_error_an_environment_can_declare_is_an_error_kind_the_runner_scores():
    assert ERROR_OUTCOMES <= set(ERROR_KINDS)


# --- a wrong result is an error, in every environment and on every path ---------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("env", "params", "program", "kind"),
    [
        ("matmul", SMALL_MATMUL, ZEROS, "wrong_answer"),
        ("2048", {}, "def strategy(board):\n    return '7'\n", "illegal_move"),
        ("openspiel", {"game": "tic_tac_toe"}, "def strategy(observation):\n    return 9\n", "illegal_move"),
        ("pong", {"max_episode_steps": 20}, "def strategy(observation):\n    return 99\n", "illegal_move"),
        (HIGHER_LOWER, {}, "def strategy(high, history):\n    return high + 1\n", "illegal_move"),
    ],
    ids=["matmul", "2048", "openspiel", "atari", "custom_env"],
)
def test_a_wrong_result_never_pays_as_working_or_winning(env, params, program, kind):
    spec = load_spec(env) if isinstance(env, Path) else resolve(env)
    with Runner(spec, params, workers=1, limits=LIMITS) as runner:
        [result] = runner.evaluate([program], seeds=[0, 1])
    assert result.error is None and [e.error for e in result.episodes] == [kind, kind], result.episodes
    parts = Rubric().score(result, spec.reward).parts
    assert parts["function_works"] == -1.0 and parts["strategy_succeeds"] == spec.reward.loss
    assert parts["failure_penalty"] == -1.0 and not result.played_clean and result.wins == result.losses == 0


def test_a_zero_matrix_is_no_longer_a_working_program_in_the_play_summary(capsys):
    """``play matmul`` on an all-zeros program: errors say wrong_answer and where, function_works is -1."""
    summary, text = _play_both(capsys, "matmul", ZEROS, ["-p", "size=12", "-p", "trials=2", "--episodes", "2"])
    assert summary["errors"] == {"wrong_answer": 2} and summary["wins"] == summary["losses"] == 0
    assert "wrong product: C[0][0] = 0.0, expected " in summary["first_error"]
    assert summary["reward_parts"]["function_works"] == -1.0 and summary["reward_parts"]["strategy_succeeds"] == 0.0
    assert "max_tile_histogram" not in summary  # matmul has no tiles
    assert "errors       wrong_answer 2" in text and "max tile" not in text and "errors       none" not in text


def _play_both(capsys, env: str, program: str, extra: list[str]) -> tuple[dict, str]:
    """``stratagem play`` as a user runs it (in this process): the --json summary and the text table."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "strategy.py"
        path.write_text(program)
        capsys.readouterr()
        assert main(["play", env, "--strategy", str(path), *extra, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert main(["play", env, "--strategy", str(path), *extra]) == 0
        text = capsys.readouterr().out
    return summary, text


def test_a_wrong_product_over_http_ends_the_episode_with_an_observation_that_says_so(serve):
    """The wire stays OpenEnv's: a 200 with done, reward 0 and correct=False, not a 4xx; the verdict rides in
    metadata, where any client (and our runner) reads it."""
    with serve("matmul", params=SMALL_MATMUL) as url, httpx.Client(base_url=url, timeout=30) as http:
        reset = http.post("/reset", json={"seed": 5})
        assert reset.status_code == 200
        sid, obs = reset.headers[SESSION_HEADER], reset.json()["observation"]
        n, m = len(obs["A"]), len(obs["B"][0])
        step = http.post("/step", json={"action": {"C": [[0.0] * m] * n, "elapsed_s": 0.01}},
                         headers={SESSION_HEADER: sid})  # fmt: skip
    assert step.status_code == 200
    body = step.json()
    assert body["done"] is True and body["reward"] == 0.0 and body["observation"]["correct"] is False
    for metadata in (body["metadata"], body["observation"]["metadata"]):  # top level and nested, as OpenEnv has it
        assert metadata["outcome"] == "wrong_answer" and metadata["message"].startswith("wrong product: C[0][0]")


def test_a_server_that_sends_its_verdict_only_at_the_top_level_is_read_the_same():
    """OpenEnv 0.10's servers leave ``metadata`` out of the observation: the remote game takes the client's."""
    game = RemoteGame.__new__(RemoteGame)  # no server needed to read one reply
    game.env = MatmulEnv(size=4, trials=1)
    verdict = {"outcome": "wrong_answer", "message": "wrong product: C[0][1] = 0.0, expected 0.5"}
    fields = {"A": [], "B": [], "trial": 1, "trials": 1, "correct": False, "won": False, "metadata": None}
    obs = game._observation(StepResult(observation=fields, reward=0.0, done=True, metadata=dict(verdict)))
    assert obs.done and obs.metadata == verdict


@pytest.mark.timeout(120)
def test_the_code_sandbox_task_scores_a_wrong_product_as_an_error_and_a_slow_right_one_as_lost():
    from stratagem.envs.sandbox import SandboxEnv

    slow = MATMUL_TEXTBOOK.replace("def matmul(", "def once(") + (
        "\n\ndef matmul(A, B):\n    once(A, B)\n    once(A, B)\n    return once(A, B)\n"
    )
    env = SandboxEnv(timeout_s=20, memory_mb=256, cpu_s=60, task="matmul", task_params=SMALL_MATMUL)
    try:
        env.reset(seed=3)
        wrong = env.step({"code": ZEROS}).task_outcome
        right = env.step({"code": slow}).task_outcome
    finally:
        env.close()
    assert wrong.error == "wrong_answer" and wrong.message.startswith("wrong product: C[0][0] = 0.0, expected ")
    assert wrong.score == 0.0 and not wrong.won
    assert right.error is None and right.moves == 2 and 0 < right.score < 1 and not right.won and not right.draw


# --- wins, draws and losses ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_openspiel_draws_are_counted_apart_and_are_what_the_game_calls_a_tie(tmp_path, capsys):
    """Rock-paper-scissors against a random opponent: always rock wins, ties and loses about a third each."""
    rock = "def strategy(observation):\n    return observation['legal_actions'][0]['id']\n"
    seeds = list(range(24))
    with Runner("openspiel", {"game": "matrix_rps"}, workers=2, limits=LIMITS) as runner:
        [result] = runner.evaluate([rock], seeds, record=tmp_path)
    assert result.played_clean and result.wins >= 1 and result.draws >= 1 and result.losses >= 1
    assert result.wins + result.draws + result.losses == len(seeds)
    assert outcomes(result).count("loss") == result.draws + result.losses  # a draw pays as not won
    for episode in result.episodes:  # each one classified by the game's own returns, recorded with it
        [path] = tmp_path.glob(f"*-seed{episode.seed}.jsonl*")
        recording = read_recording(path)
        returns = recording.steps[-1]["observation"]["returns"]
        assert episode.draw == (returns[0] == returns[1]) and episode.won == (returns[0] > returns[1])
        assert recording.end.get("draw", False) == episode.draw and "max_tile" not in recording.end
    summary = summarize(result, resolve("openspiel"), seconds=1.0)
    assert (summary["wins"], summary["draws"], summary["losses"]) == (result.wins, result.draws, result.losses)
    assert "max_tile_histogram" not in summary
    text = format_summary(summary)
    assert f"({result.wins} won, {result.draws} drawn, {result.losses} lost)" in text and "max tile" not in text


def test_play_json_has_wins_draws_and_losses_and_the_tile_histogram_only_for_2048(capsys):
    first_legal = "def strategy(observation):\n    return observation['legal_actions'][0]['id']\n"
    ttt, ttt_text = _play_both(capsys, "openspiel", first_legal, ["-p", "game=tic_tac_toe", "--episodes", "6"])
    assert ttt["wins"] + ttt["draws"] + ttt["losses"] == 6 and "max_tile_histogram" not in ttt
    assert "drawn" in ttt_text and "max tile" not in ttt_text
    game, game_text = _play_both(capsys, "2048", CORNER_2048, ["--episodes", "2", "-p", "max_tile=64"])
    assert sum(game["max_tile_histogram"].values()) == 2 and "max tile" in game_text
    assert game["draws"] == 0 and game["wins"] + game["losses"] == 2  # 2048 never calls a game drawn
    refused = ProgramResult(sha=None, error="policy", rule="import", message="import of 'os' is not allowed")
    assert summarize(refused, resolve("2048"), 0.0)["max_tile_histogram"] == {}  # 2048's field, even with no episode
    assert "max_tile_histogram" not in summarize(refused, resolve("matmul"), 0.0)


# --- training metrics ----------------------------------------------------------------------------------


def test_training_metrics_count_built_and_clean_programs_and_each_outcome():
    from stratagem.rl.step_metrics import live_line, step_metrics

    results = [
        ProgramResult(sha="a", episodes=[EpisodeResult(seed=0, won=True), EpisodeResult(seed=1, draw=True)]),
        ProgramResult(sha="b", episodes=[EpisodeResult(seed=0), EpisodeResult(seed=1, error="wrong_answer")]),
        ProgramResult(sha=None, error="policy", rule="import"),  # refused: never built, never ran
        ProgramResult(sha="d", episodes=[EpisodeResult(seed=s, error="timeout") for s in (0, 1)]),
    ]  # fmt: skip
    scored = Rubric().score_all(results, resolve("2048").reward)
    rewards = torch.tensor([s.total for s in scored])
    completions = SimpleNamespace(completion_mask=torch.ones(4, 3), truncated=[False] * 4)
    metrics = step_metrics(1, completions, results, scored, rewards, {"loss": 0.5}, num_generations=2)
    assert metrics["win_rate"] == metrics["draw_rate"] == metrics["loss_rate"] == pytest.approx(0.5 / 4)
    assert metrics["frac_programs_built"] == 0.75  # it built; "valid" said the same and meant more
    assert metrics["frac_played_clean"] == 0.25  # only the first played every episode without an error
    assert "valid_programs" not in metrics
    assert metrics["rewards/function_works"] == pytest.approx((1.0 + 0.0 - 1.0 - 1.0) / 4)
    line = live_line(metrics)
    assert "w/d/l 0.12/0.12/0.12" in line and "built 0.75" in line and "clean 0.25" in line and "valid" not in line


# --- the best program ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_best_json_names_the_program_that_play_prints_for_best_strategy_py(tmp_path, capsys):
    from stratagem.rl.rundir import RunDir
    from stratagem.rl.trainer import Best, Trainer

    completion = ("Here is a strategy that prefers up, then left.\n```python\ndef strategy(board):\n"
                  "    return '0'\n```\nIt stops when up does nothing.")  # fmt: skip
    spec = resolve("2048")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with Runner(spec, {}, workers=1, limits=LIMITS) as runner:
        results = runner.evaluate([completion], seeds=[4, 5])
        owner = Trainer.__new__(Trainer)  # the trainer's bookkeeping alone, without a model
        owner.__dict__.update(
            best=Best(),
            run=run,
            spec=spec,
            runner=runner,
            _to_record=None,
            _candidate=None,
            dist=Distributed(),
            config=SimpleNamespace(env="2048", record_best=True, best_episodes=0),
        )
        Trainer._keep_best(owner, 3, results, Rubric().score_all(results, spec.reward))
        Trainer._record_best(owner)  # the replays, played after the step's uninterruptible part
    best = json.loads((run.path / "best.json").read_text())
    assert best["completion_sha"] == results[0].sha != best["sha"]  # the file has a header: another text
    assert owner.best.sha == best["sha"] and best["step"] == 3
    capsys.readouterr()
    assert main(["play", "2048", "--strategy", str(run.path / "best_strategy.py"), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["program"] == best["sha"]
    replays = sorted(run.replays.glob("*.jsonl.gz"))
    assert len(replays) == 2 and all(read_recording(p).header["program"] == best["sha"] for p in replays)
    assert all(p.name.startswith(best["sha"]) for p in replays)
    with gzip.open(replays[0], "rt") as handle:  # the replays are of the file as written
        assert json.loads(handle.readline())["program"] == best["sha"]
