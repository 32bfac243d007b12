"""`play --url` asks the server what it serves before playing: another environment, or another game of
the same one, is named in one sentence (not pydantic's list of what does not fit); every server whose
replies fit is played, OpenEnv's included."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from stratagem.agents.runner import Limits, Runner
from stratagem.cli import main
from stratagem.client.identify import WrongServer, check_serves
from stratagem.envs.spec import make
from tests.conftest import running
from tests.openenv_twin import make_app as openenv_2048_app

STRATEGIES = Path(__file__).parents[1] / "examples" / "strategies"
LIMITS = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)


def test_play_2048_on_an_openspiel_server_says_what_the_server_serves(capsys, serve):
    with serve("openspiel", {"game": "tic_tac_toe"}) as url:
        code = main(["play", "2048", "--strategy", str(STRATEGIES / "corner_2048.py"), "--episodes", "2", "--url", url])
    err = capsys.readouterr().err
    assert code == 2
    assert f"the server at {url} serves 'openspiel' (tic_tac_toe), not '2048': its observations have no board" in err
    assert "start `stratagem serve 2048` and pass its URL" in err
    assert f"stratagem play openspiel --strategy FILE --url {url}" in err
    assert "validation error" not in err and len(err.strip().splitlines()) == 1, err


def test_another_game_of_the_same_environment_is_named(serve):
    program = (STRATEGIES / "tictactoe_heuristic.py").read_text()
    with (
        serve("openspiel", {"game": "tic_tac_toe"}) as url,
        Runner("openspiel", {"game": "connect_four"}, workers=1, limits=LIMITS, url=url) as runner,
    ):
        with pytest.raises(WrongServer) as caught:
            runner.evaluate([program], seeds=[0])
    assert str(caught.value).startswith(
        f"the server at {url} serves 'openspiel' (tic_tac_toe), not 'openspiel' (connect_four). To fix: start "
        "`stratagem serve openspiel -p game=connect_four` and pass its URL; or play tic_tac_toe on it "
        f"(stratagem play openspiel --strategy FILE --url {url})"
    ), caught.value


def test_a_pong_program_on_a_breakout_server(serve):
    with serve("breakout", {"max_episode_steps": 20}) as url, pytest.raises(WrongServer) as caught:
        check_serves(url, make("pong"))
    assert str(caught.value).startswith(f"the server at {url} serves 'breakout', not 'pong'. To fix: "), caught.value


def test_servers_that_fit_are_played(serve, url_2048):
    check_serves(url_2048, make("2048"))
    with serve("openspiel", {"game": "tic_tac_toe"}) as url:
        check_serves(url, make("openspiel", game="tic_tac_toe"))
    # OpenEnv 0.10's own server (its /metadata names its class, not '2048'): its observations fit, so it is played.
    with running(openenv_2048_app()) as url, Runner("2048", workers=1, limits=LIMITS, url=url) as runner:
        check_serves(url, make("2048"))
        [result] = runner.evaluate([(STRATEGIES / "corner_2048.py").read_text()], seeds=[1])
    assert result.error is None and [e.error for e in result.episodes] == [None]


def test_a_server_that_does_not_say_is_given_the_benefit_of_the_doubt():
    app = FastAPI()

    @app.get("/metadata")
    def metadata() -> dict[str, str]:
        return {"name": "something-else"}  # no /schema, no /state: nothing sure, so no refusal

    with running(app) as url:
        check_serves(url, make("2048"))
