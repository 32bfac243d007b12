"""`stratagem dashboard`: its HTTP API on a real run directory, served by uvicorn, as the page uses it.

One server for the module, on a run directory made by ``dashboard_run.make_run`` (real programs played in
the sandbox, the trainer's file formats, a torn last metrics line); the page itself is driven in a real
browser by ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stratagem.cli import main
from stratagem.dashboard.app import create_app
from stratagem.viz.plots import panels
from tests.conftest import running
from tests.dashboard_run import SEEDS, STEPS, TORN_AT, make_run, snapshot


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_run(tmp_path_factory.mktemp("dashboard") / "run")


@pytest.fixture(scope="module")
def run(made: Any) -> Any:
    return made.run


@pytest.fixture(scope="module")
def app(run: Any) -> Any:
    return create_app(run.path)


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[httpx.Client]:
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_the_run_at_a_glance(client, run):
    body = client.get("/api/run").json()
    best = json.loads((run.path / "best.json").read_text())
    assert body["name"] == "run" and body["env"] == "2048" and body["max_steps"] == 40
    assert body["steps"] == list(range(1, STEPS + 1))
    assert body["metrics"] == {"count": STEPS, "last_step": STEPS}  # the torn line of step STEPS + 1 is skipped
    assert body["best"]["sha"] == best["sha"] and body["best"]["step"] == best["step"]
    assert [r["seed"] for r in body["replays"]] == SEEDS
    assert {r["program"] for r in body["replays"]} == {best["sha"]}  # `play` recorded best_strategy.py itself
    assert all(r["finished"] and r["steps"] > 1 for r in body["replays"])


def test_the_page_and_its_scripts_are_served_and_fetch_nothing_from_the_network(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ('id="curves"', 'id="completions"', 'id="replay-player"', 'id="compare-run"', 'id="message"'):
        assert needle in page.text
    for name in ("dashboard.js", "curves.js", "dashboard.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and "//cdn" not in asset.text and "https://" not in asset.text
    assert "https://" not in page.text and "http://" not in page.text


def test_metrics_come_with_the_panels_curves_png_draws(client, run):
    body = client.get("/api/metrics").json()
    assert [row["step"] for row in body["rows"]] == list(range(1, STEPS + 1))
    assert [p["title"] for p in body["panels"]] == [p.title for p in panels(body["rows"])]
    assert body["panels"][0]["title"] == "reward (mean ± std)" and body["panels"][0]["band"] == "reward_std"


def test_a_steps_completions_hold_reward_parts_outcome_and_program(client, run):
    rows = client.get("/api/completions/3").json()["rows"]
    written = [json.loads(line) for line in (run.completions / "step-000003.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(written)))
    assert [{k: v for k, v in r.items() if k != "index"} for r in rows] == written
    assert set(rows[0]["parts"]) >= {"function_works", "no_cheating", "score_shaped"}
    assert all(r["text"].startswith("```python") and r["outcomes"] for r in rows)


def test_the_best_program_is_best_strategy_py(client, run):
    body = client.get("/api/best").json()
    assert body["source"] == (run.path / "best_strategy.py").read_text()
    assert body["info"]["sha"] == json.loads((run.path / "best.json").read_text())["sha"]


def test_a_replay_frame_is_the_viewers_picture_as_png(client, run):
    import imageio.v3 as iio
    import numpy as np

    from stratagem.viz._pygame import start
    from stratagem.viz.episodes import Episode
    from stratagem.viz.recording import read_recording
    from stratagem.viz.render import render_step, to_array

    name = client.get("/api/run").json()["replays"][1]["name"]
    response = client.get(f"/api/replays/{name}/frames/7", params={"size": 240})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    episode = Episode(read_recording(run.replays / name))
    start(headless=True)
    expected = to_array(render_step(episode.step(7), episode.header, 240))
    assert np.array_equal(iio.imread(io.BytesIO(response.content)), expected)  # render.py's pixels, exactly


def test_two_programs_side_by_side_on_one_seed_leave_the_run_directory_untouched(client, run, app):
    before = snapshot(run.path)
    good = next(r["index"] for r in client.get("/api/completions/8").json()["rows"] if r["outcomes"][0] == "loss")
    response = client.post("/api/compare", json={"a": "best", "b": f"8:{good}", "seed": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"] == 5 and [s["program"] for s in body["sides"]] == ["best", f"8:{good}"]
    assert all(s["played"] and s["score"] > 0 and s["error"] is None for s in body["sides"])
    assert body["frames"] == max(s["moves"] for s in body["sides"]) + 1  # the reset, then one frame a move
    frame = client.get(f"/api/compare/{body['id']}/frames/{body['frames'] - 1}")
    assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
    assert int.from_bytes(frame.content[16:20], "big") == 2 * 400 + 8  # two panels and the separator
    recorded = list(app.state.comparisons.folder.rglob("*.jsonl.gz"))
    assert len(recorded) == 2 and all(p.name.endswith("-seed5.jsonl.gz") for p in recorded)
    for path in ("/api/run", "/api/metrics", "/api/completions/1", "/api/best"):
        assert client.get(path).status_code == 200
    assert snapshot(run.path) == before  # read, never written: the comparison recorded into a temp dir


BAD = [  # (method, path, JSON body, status, what the message must say)
    ("GET", "/api/completions/abc", None, 422, "step: should be a valid integer"),
    ("GET", "/api/completions/999", None, 404, f"no completions for step 999 in this run; it has steps 1..{STEPS}"),
    ("GET", "/api/completions/-1", None, 404, "no completions for step -1"),
    ("GET", "/api/replays/nope.jsonl.gz/frames/0", None, 404, "no replay 'nope.jsonl.gz' in this run; it has"),
    ("GET", "/api/replays/..%2Fbest.json/frames/0", None, 404, "Not Found"),
    ("GET", "/api/replays/{replay}/frames/100000", None, 422, "step 100000 is not in this episode: its steps are 0.."),
    ("GET", "/api/replays/{replay}/frames/-1", None, 422, "step -1 is not in this episode"),
    ("GET", "/api/replays/{replay}/frames/0?size=20", None, 422, "size 20 is out of range"),
    ("GET", "/api/compare/feedbeef/frames/0", None, 404, "no comparison 'feedbeef'"),
    ("POST", "/api/compare", {"a": "best", "b": "1:0", "seed": -1}, 422, "seed: should be greater than or equal to 0"),
    ("POST", "/api/compare", {"a": "best", "b": "1:0", "seed": "x"}, 422, "seed: should be a valid integer"),
    ("POST", "/api/compare", {"a": "best", "b": "1:0", "seed": 2**60}, 422, "seed: should be less than or equal"),
    ("POST", "/api/compare", {"a": "best", "b": "first", "seed": 1}, 422, "a program is 'best' or STEP:INDEX"),
    ("POST", "/api/compare", {"a": "best", "b": "99:0", "seed": 1}, 404, "no completions for step 99"),
    ("POST", "/api/compare", {"a": "best", "b": "1:99", "seed": 1}, 404, "step 1 has completions 0..7, not 99"),
    ("POST", "/api/compare", {"a": "best", "seed": 1}, 422, "b: missing"),
    ("POST", "/api/compare", {"a": "best", "b": "1:0", "seed": 1, "c": 2}, 422, "c: Extra inputs are not permitted"),
    ("POST", "/api/compare", "not json", 422, "the request body is not JSON"),
    ("POST", "/api/compare", "[1, 2]", 422, "body: should be a valid dictionary"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), BAD, ids=[f"{m} {p}" for m, p, *_ in BAD])
def test_bad_requests_get_a_4xx_with_a_readable_message(client, method, path, body, status, needle):
    path = path.format(replay=client.get("/api/run").json()["replays"][0]["name"])
    content = body if isinstance(body, str) else None
    response = client.request(method, path, json=None if content else body, content=content,
                              headers={"Content-Type": "application/json"} if content else None)  # fmt: skip
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and needle in detail and "Traceback" not in response.text


def test_a_run_being_written_shows_each_step_once_it_is_whole(client, made):
    assert (made.run.metrics.read_bytes()[-TORN_AT:]) == made.next_line[:TORN_AT]  # torn: skipped so far
    made.finish_step()  # the writer finishes its line and writes the step's completions
    body = client.get("/api/run").json()
    assert body["steps"][-1] == STEPS + 1 and body["metrics"] == {"count": STEPS + 1, "last_step": STEPS + 1}
    assert client.get("/api/metrics").json()["rows"][-1] == json.loads(made.next_line)
    assert len(client.get(f"/api/completions/{STEPS + 1}").json()["rows"]) == len(made.next_rows)
    with open(made.run.metrics, "ab") as handle:  # ...and starts the next one
        handle.write(made.next_line[:TORN_AT].replace(b'"step":9', b'"step":10'))
    assert client.get("/api/run").json()["metrics"]["count"] == STEPS + 1


def test_a_run_with_only_its_config_is_a_page_of_empty_sections(tmp_path):
    from fastapi.testclient import TestClient

    (tmp_path / "config.yaml").write_text("env: 2048\n")  # as YAML types it: a number, still the name '2048'
    with TestClient(create_app(tmp_path)) as client:
        body = client.get("/api/run").json()
        assert body["env"] == "2048" and body["steps"] == [] and body["replays"] == [] and body["best"] is None
        assert body["metrics"] == {"count": 0, "last_step": None}
        assert client.get("/api/metrics").json() == {"rows": [], "panels": []}
        assert client.get("/api/best").json() == {"info": None, "source": None}
        missing = client.get("/api/completions/1")
        assert missing.status_code == 404 and missing.json()["detail"].endswith("it has none yet")
        no_best = client.post("/api/compare", json={"a": "best", "b": "best", "seed": 0})
        assert no_best.status_code == 404 and "no best program yet" in no_best.json()["detail"]


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_an_unknown_run_directory_is_one_line_and_status_2(tmp_path, capsys, kind):
    path = tmp_path / "nope"
    if kind == "file":
        path.write_text("")
    elif kind == "empty":
        path.mkdir()
    assert main(["dashboard", str(path), "--port", "1"]) == 2  # refused before any port is bound
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"stratagem dashboard: error: {path}")
    assert {"missing": "no such directory", "file": "is not a directory", "empty": "not a stratagem run"}[kind] in err


def test_dashboard_flags_are_checked(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["dashboard", "runs/x", "--port", "99999"])
    assert stop.value.code == 2 and "a port is 1-65535" in capsys.readouterr().err


def test_the_package_ships_the_page():
    """pyproject's package data names every file of the page, so an installed stratagem serves it too."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parent.parent
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    static = root / "stratagem" / "dashboard" / "static"
    patterns = shipped["stratagem.dashboard"]
    assert all(any(path.match(p) for p in patterns) for path in static.iterdir())
