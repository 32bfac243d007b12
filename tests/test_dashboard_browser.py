"""The dashboard's page in headless Chromium (``tests/browser.py``): what a person sees, not only the API.

One server and one browser for the module, on a run directory from ``dashboard_run.make_run``. With
``STRATAGEM_SCREENSHOTS=DIR`` set, the page is also saved as DIR/dashboard.png (README's picture:
``STRATAGEM_SCREENSHOTS=docs python -m pytest tests/test_dashboard_browser.py``); otherwise nothing is
written outside the test's temporary directories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stratagem.dashboard.app import create_app
from tests.browser import Browser, Page, require_chromium
from tests.conftest import running
from tests.dashboard_run import STEPS, make_run

ROOT = Path(__file__).resolve().parent.parent
ROWS = "#completions tbody tr"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_run(tmp_path_factory.mktemp("dashboard-browser") / "run")


@pytest.fixture(scope="module")
def url(run: Any) -> Iterator[str]:
    with running(create_app(run.path)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(require_chromium(), width=1280, height=1000) as browser:
        yield browser


@pytest.fixture(scope="module")
def page(browser: Browser, url: str) -> Page:
    page = browser.open(url + "/")
    page.wait_for(f"document.querySelectorAll('{ROWS}').length > 0 && document.querySelector('#curves svg')"
                  " && !document.querySelector('#best-source').hidden"
                  " && (document.querySelector('#replay-player img') || {}).complete", timeout_s=15)  # fmt: skip
    return page  # every section filled: nothing moves under a click any more


def test_the_curves_are_drawn_from_the_metrics(page):
    assert page.wait_for("document.querySelectorAll('#curves svg').length") >= 5
    titles = page.eval("[...document.querySelectorAll('#curves svg')].map(s => s.getAttribute('aria-label'))")
    assert titles[0] == "reward (mean ± std)" and "score" in titles
    reward = page.eval("document.querySelector('#curves svg path.curve[data-key=reward]').getAttribute('d')")
    assert reward.startswith("M") and reward.count("L") == STEPS - 1  # one point a step, joined
    assert page.eval("document.querySelector('#curves svg path.band') !== null")  # the ± std band
    assert page.errors == []


def test_the_completions_table_sorts_by_reward_when_its_header_is_clicked(page):
    def rewards() -> list[float]:
        return page.eval(f"[...document.querySelectorAll('{ROWS}')].map(tr => Number(tr.children[1].textContent))")

    assert page.text("#completions thead th:nth-child(2)").startswith("reward")
    shown = rewards()
    assert len(shown) == 8 and shown != sorted(shown, reverse=True)  # file order first: not already sorted
    page.click("#completions th[data-key=reward]")
    page.wait_for("document.querySelector('#completions th[data-key=reward]').getAttribute('aria-sort')")
    assert rewards() == sorted(shown, reverse=True)
    page.click("#completions th[data-key=reward]")
    page.wait_for("document.querySelector('#completions th[data-key=reward]').ariaSort === 'ascending'")
    assert rewards() == sorted(shown)


def test_search_filters_and_a_row_shows_its_program(page, run):
    rows = [json.loads(line) for line in (run.run.completions / f"step-{STEPS:06d}.jsonl").read_text().splitlines()]
    rarest = min(rows, key=lambda row: sum(r["text"] == row["text"] for r in rows))  # a program not every row has
    page.fill("#search", rarest["sha"])
    count = page.eval(f"document.querySelectorAll('{ROWS}').length")
    assert count == sum(r["sha"] == rarest["sha"] for r in rows) < 8
    assert page.text("#count") == f"{count} of 8 completions"
    page.click(f"{ROWS}:first-child")
    page.wait_for("!document.querySelector('#program-box').hidden")
    assert page.text("#program").strip() == rarest["text"].strip()
    page.fill("#search", "")


def test_a_replay_of_the_best_program_shows_the_servers_frames(page):
    loaded = "(() => { const i = document.querySelector('#replay-player img'); return i && i.complete && i.naturalWidth; })()"  # noqa: E501
    assert page.wait_for(loaded) == 400  # render.py's 2048 panel
    src = page.eval("document.querySelector('#replay-player img').src")
    assert "/api/replays/" in src and src.endswith("/frames/0")
    page.eval("(() => { const s = document.querySelector('#replay-player input[type=range]'); s.value = 30;"
              " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
    page.wait_for(loaded.replace("i.naturalWidth", "i.src.endsWith('/frames/30') && i.naturalWidth"))
    assert "step 30 /" in page.text("#replay-player")
    assert page.eval("document.querySelectorAll('#replay-list button').length") == 2


def test_a_bad_request_shows_the_servers_message(browser, url):
    page = browser.open(url + "/?step=999")
    page.wait_for("!document.querySelector('#message').hidden")
    assert f"404: no completions for step 999 in this run; it has steps 1..{STEPS}" in page.text("#message-text")
    page.wait_for(f"document.querySelectorAll('{ROWS}').length > 0")  # the newest step is shown instead
    page.click("#message-close")
    page.fill("#compare-b", "1:0")
    page.fill("#compare-seed", "-3")
    page.click("#compare-run")
    page.wait_for("!document.querySelector('#message').hidden")
    assert "422: seed: should be greater than or equal to 0 (got -3)" in page.text("#message-text")
    assert page.errors == []


def test_the_page_follows_a_run_being_written(browser, page, run):
    browser.send("Page.bringToFront", session=page.session)  # a tab out of sight does not poll
    run.finish_step()  # the step being written when the page opened: its metrics line is whole, its completions land
    page.wait_for(f"document.querySelector('#step').value === '{STEPS + 1}'", timeout_s=8)  # the next poll
    page.wait_for(
        "document.querySelector('#curves svg path.curve[data-key=reward]').getAttribute('d')"
        f".split('L').length === {STEPS + 1}"
    )  # the curves, fetched beside the step: one point more
    assert f"step {STEPS + 1} of 40" in page.text("#status")
    assert page.errors == []
    shots = os.environ.get("STRATAGEM_SCREENSHOTS")
    if shots:
        screenshot(browser, page, run, Path(shots) if Path(shots).is_absolute() else ROOT / shots)


def screenshot(browser: Browser, page: Page, made: Any, folder: Path) -> None:
    """README's picture, the whole page as a person sees it: completions sorted by reward, the best program's
    game, and the end of its game beside the best other program of the run on seed 0."""
    best = json.loads((made.path / "best.json").read_text())["completion_sha"]
    rows = [(row["reward"], int(path.stem.split("-")[1]), i) for path in made.run.completions.glob("step-*.jsonl")
            for i, row in enumerate(map(json.loads, path.read_text().splitlines())) if row["sha"] != best]  # fmt: skip
    other = max(rows)
    page.click("#completions th[data-key=reward]")
    page.fill("#compare-b", f"{other[1]}:{other[2]}")
    page.fill("#compare-seed", "0")
    page.click("#compare-run")
    last = "(() => { const s = document.querySelector('#compare-player input[type=range]'); return s && s.max; })()"
    end = page.wait_for(last, timeout_s=30)
    page.eval(f"(() => {{ const s = document.querySelector('#compare-player input[type=range]'); s.value = {end};"
              " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
    page.wait_for(f"document.querySelector('#compare-player img').src.endsWith('/frames/{end}')"
                  " && document.querySelector('#compare-player img').complete")  # fmt: skip
    page.eval("document.querySelector('#program-box').hidden = true")
    height = page.eval("Math.min(document.documentElement.scrollHeight, 2600)")
    browser.send("Emulation.setDeviceMetricsOverride", {"width": browser.width, "height": height,
                 "deviceScaleFactor": 1, "mobile": False}, session=page.session)  # fmt: skip
    page.eval("window.scrollTo(0, 0)")
    page.screenshot(folder / "dashboard.png")
