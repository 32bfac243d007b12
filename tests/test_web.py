"""``/web`` over HTTP: the page's routes are the API's routes plus frames, and never a way around the server.

Real servers on loopback (``conftest.running``), real programs in the real sandbox (``stratagem play`` in a
child process). The browser itself is driven in ``test_web_browser.py``.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import httpx
import pytest

from stratagem.envs.spec import make
from stratagem.server.app import create_app
from stratagem.server.sessions import Limits
from tests.conftest import APPS, running, wait_for

ROOT = Path(__file__).resolve().parents[1]
CORNER = (ROOT / "examples" / "strategies" / "corner_2048.py").read_text()
SID = "X-Session-Id"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def web() -> httpx.Client:
    with running(create_app("2048")) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def png_of(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.split(",", 1)[1])


def test_the_page_and_its_files_are_served(web: httpx.Client) -> None:
    page = web.get("/web")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/web/static/web.js">' in page.text and "http" not in page.text.replace("http-equiv", "")
    for name, kind in (("web.js", "text/javascript"), ("web.css", "text/css")):
        answer = web.get(f"/web/static/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert "http://" not in answer.text and "https://" not in answer.text  # nothing fetched from elsewhere
    missing = web.get("/web/static/app.py")
    assert missing.status_code == 404 and "web.js" in missing.json()["detail"]
    info = web.get("/web/info").json()
    assert info["env"] == "2048" and info["strategy"]["function"] == "strategy"
    assert [f["name"] for f in info["fields"]] == ["action_id", "game_name", "game_params"]  # no OpenEnv metadata
    assert "/web" not in str(web.get("/openapi.json").json()["paths"])  # the wire protocol's routes only


def test_a_web_reset_with_a_seed_is_the_api_reset_with_that_seed(web: httpx.Client) -> None:
    page = web.post("/web/reset", json={"seed": 7})
    api = web.post("/reset", json={"seed": 7})
    assert page.status_code == api.status_code == 200
    body = page.json()
    assert body["observation"] == api.json()["observation"] and body["done"] is False
    assert page.headers[SID] == body["session_id"] and body["seed"] == 7 and body["step"] == 0
    assert png_of(body["frame"]).startswith(PNG)
    assert [(b["label"], b["action"]) for b in body["buttons"]] == [
        (name, {"action_id": i}) for i, name in enumerate(("up", "right", "down", "left"))
    ]
    # The session is the API's: the API steps it too, and the web sees the same episode.
    assert web.get("/state", headers={SID: body["session_id"]}).json()["step_count"] == 0


def test_legal_and_illegal_actions(web: httpx.Client) -> None:
    env = make("2048")
    seed = next(s for s in range(200) if len(env.reset(seed=s).legal_actions) < 4)
    legal = env.reset(seed=seed).legal_actions
    reset = web.post("/web/reset", json={"seed": seed}).json()
    sid = reset["session_id"]
    assert [b["legal"] for b in reset["buttons"]] == [i in legal for i in range(4)]  # illegal arrows disabled
    illegal = next(i for i in range(4) if i not in legal)
    refused = web.post("/web/step", json={"action": {"action_id": illegal}}, headers={SID: sid})
    assert refused.status_code == 422 and "does not move any tile" in refused.json()["detail"]
    moved = web.post("/web/step", json={"action": {"action_id": legal[0]}}, headers={SID: sid})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["step"] == 1 and body["log"]["action"] == ["up", "right", "down", "left"][legal[0]]
    expected = env.step(env.action_type(action_id=legal[0]))
    assert body["observation"] == expected.model_dump(exclude={"reward", "done"})
    assert png_of(body["frame"]) != png_of(reset["frame"])


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, [3]])
def test_a_bad_seed_is_a_clear_422(web: httpx.Client, seed: object) -> None:
    answer = web.post("/web/reset", json={"seed": seed})
    assert answer.status_code == 422 and answer.json()["detail"].startswith("body.seed: Input should be")


def test_bad_requests_get_4xx_with_a_message(web: httpx.Client) -> None:
    no_session = web.post("/web/step", json={"action": {"action_id": 0}})
    assert no_session.status_code == 422 and "press Reset first" in no_session.json()["detail"]
    unknown = web.post("/web/step", json={"action": {"action_id": 0}}, headers={SID: "nope"})
    assert unknown.status_code == 404 and "unknown session 'nope'" in unknown.json()["detail"]
    assert web.post("/web/reset", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 422
    not_json = web.post("/web/run", content=b'{"program": "x"}', headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415 and "Content-Type: application/json" in not_json.json()["detail"]
    sid = web.post("/web/reset", json={}).json()["session_id"]
    wrong = web.post("/web/step", json={"action": {"action_id": 9}}, headers={SID: sid})
    assert wrong.status_code == 422 and "action.action_id" in wrong.json()["detail"]
    assert web.post("/web/close", headers={SID: sid}).json() == {"session_id": sid, "closed": True}
    gone = web.post("/web/step", json={"action": {"action_id": 0}}, headers={SID: sid})
    assert gone.status_code == 404 and "it was closed" in gone.json()["detail"]
    assert web.get("/web/runs/nope/frames/0").status_code == 404


def test_a_pasted_program_plays_in_the_sandbox_and_is_watched_frame_by_frame(web: httpx.Client) -> None:
    runs = APPS[str(web.base_url).rstrip("/")].state.web.runs
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(web.post("/web/run", json={"program": CORNER, "seed": 7})))
    thread.start()
    wait_for(runs.busy.locked)
    second = web.post("/web/run", json={"program": CORNER})  # one program at a time
    thread.join()
    assert second.status_code == 429 and "already running" in second.json()["detail"]
    assert first[0].status_code == 200, first[0].text
    body = first[0].json()
    assert body["result"]["error"] is None and body["result"]["moves"] == len(body["steps"]) - 1 > 10
    assert body["steps"][0]["action"] is None and body["steps"][1]["action"] in ("up", "right", "down", "left")
    frame, later = (web.get(body["frames"] + str(i)) for i in (0, 5))
    assert frame.headers["content-type"] == "image/png" and frame.content.startswith(PNG)
    assert frame.content != later.content
    past = web.get(body["frames"] + str(len(body["steps"])))
    assert past.status_code == 404 and "has steps 0.." in past.json()["detail"]
    refused = web.post("/web/run", json={"program": "def strategy(board):\n    import os\n    return '0'\n"})
    assert refused.status_code == 422 and "refused before it ran (policy)" in refused.json()["detail"]
    for bad in ({"program": ""}, {"program": CORNER, "seed": -3}, {"program": CORNER, "episodes": 100}):
        assert web.post("/web/run", json=bad).status_code == 422


def test_the_servers_limits_apply_to_the_web_routes() -> None:
    limits = Limits(max_sessions=1, max_body_bytes=4096)
    with running(create_app("2048", limits=limits)) as url, httpx.Client(base_url=url, timeout=60) as web:
        sid = web.post("/web/reset", json={"seed": 1}).json()["session_id"]
        full = web.post("/web/reset", json={"seed": 2})  # a new page: a second session
        assert full.status_code == 503 and "server at capacity: 1 of 1 sessions" in full.json()["detail"]
        busy = web.post("/web/run", json={"program": CORNER})  # a run holds a session too
        assert busy.status_code == 503 and "at capacity" in busy.json()["detail"]
        again = web.post("/web/reset", json={"seed": 2}, headers={SID: sid})  # the page's own session: reused
        assert again.status_code == 200 and again.json()["session_id"] == sid
        big = web.post("/web/run", json={"program": "#" * 5000})
        assert big.status_code == 413 and "limit of 4096" in big.json()["detail"]
        web.post("/web/close", headers={SID: sid})
        assert web.post("/web/reset", json={}).status_code == 200


def test_no_web_leaves_the_page_out() -> None:
    from stratagem.cli import build_parser

    assert build_parser(train_fields=False).parse_args(["serve", "2048", "--no-web"]).no_web is True
    with running(create_app("2048", web=False)) as url:
        for path in ("/web", "/web/info", "/web/static/web.js"):
            assert httpx.get(url + path).status_code == 404
        assert httpx.post(url + "/web/reset", json={}).status_code == 404
        assert httpx.post(url + "/reset", json={"seed": 1}).status_code == 200  # the API is unchanged
