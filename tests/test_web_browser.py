"""``/web`` in a real browser: headless Chromium (``tests/browser.py``) on a real ``stratagem serve 2048``.

One server and one browser for the module (each costs a second or two). The screenshots are checked
against what the server says the board is: every tile's pixels must be that tile's colour in the render
path's palette, so the page shows the frames the server drew, not a blank or stale image.

``STRATAGEM_SCREENSHOTS=DIR`` also saves the page, a program being watched, as ``DIR/web.png`` (README's
picture: ``STRATAGEM_SCREENSHOTS=docs python -m pytest tests/test_web_browser.py``); a normal run writes
nothing into the repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from stratagem.viz.render import board_geometry, tile_colour
from tests.browser import Browser, Page, require_chromium
from tests.conftest import cli_server

ROOT = Path(__file__).resolve().parents[1]
CORNER = (ROOT / "examples" / "strategies" / "corner_2048.py").read_text()
FRAME_BOX = "(() => { const r = document.querySelector('#frame').getBoundingClientRect(); return [r.x, r.y]; })()"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    require_chromium()
    log = tmp_path_factory.mktemp("web") / "serve.log"
    with cli_server(log, "2048") as (url, _server), Browser() as browser:
        page = browser.open(url + "/web")
        page.wait_for("document.body.dataset.ready === '1'", timeout_s=30)
        yield page
        assert page.errors == [], page.errors  # no uncaught JavaScript error all along


def idle(page: Page) -> None:
    page.wait_for("document.body.dataset.busy === '0'")


def board_pixels(page: Page, shot: Path) -> tuple[Image.Image, list[tuple[int, int, int]], list[int]]:
    """The frame's board area in the screenshot, the colour at each tile, and the tile values the server sent."""
    x, y = (round(v) for v in page.eval(FRAME_BOX))
    image = Image.open(shot).convert("RGB")
    board, tiles = board_geometry(400)
    values = [v for row in page.eval("state.live.observation.board") for v in row]
    colours = [image.getpixel((x + t.x + 4, y + t.centery)) for t in tiles]
    return image.crop((x + board.x, y + board.y, x + board.right, y + board.bottom)), colours, values


def assert_tiles_drawn(colours: list[tuple[int, int, int]], values: list[int]) -> None:
    for colour, value in zip(colours, values, strict=True):
        assert all(abs(a - b) <= 3 for a, b in zip(colour, tile_colour(value), strict=True)), (colour, value)
    assert any(values) and len(set(colours)) > 1  # tiles, not one flat colour


def test_play_by_clicking_the_buttons(page: Page, tmp_path: Path) -> None:
    page.fill("#seed", "7")
    page.click("#reset")
    page.wait_for("state.live && state.live.seed === 7 && document.querySelector('#frame').dataset.step === '0'")
    idle(page)
    before, colours, values = board_pixels(page, page.screenshot(tmp_path / "before.png"))
    assert_tiles_drawn(colours, values)
    assert page.eval("[...document.querySelectorAll('#actions button')].map(b => b.dataset.label)") == [
        "up", "right", "down", "left"]  # fmt: skip
    for move in range(1, 4):
        page.click("#actions button:not(:disabled)")
        page.wait_for(f"document.querySelector('#frame').dataset.step === '{move}'")
        idle(page)
    assert page.eval("document.querySelectorAll('#log li').length") == 4
    assert "seed 7 · step 3" in page.text("#status")
    page.wait_for("document.querySelector('#frame').complete")
    after, colours, values = board_pixels(page, page.screenshot(tmp_path / "after.png"))
    assert_tiles_drawn(colours, values)
    assert before.tobytes() != after.tobytes()


def test_a_bad_seed_shows_the_servers_message(page: Page) -> None:
    page.fill("#seed", "-4")
    page.click("#reset")
    message = page.wait_for("document.querySelector('#message.error') && document.querySelector('#message').innerText")
    assert message == "body.seed: Input should be greater than or equal to 0 (got -4)"
    page.fill("#seed", "7")
    page.click("#reset")
    page.wait_for("document.querySelector('#message').innerText === '' && state.live.seed === 7")


def test_watch_a_pasted_program_play(page: Page) -> None:
    page.fill("#seed", "3")
    page.fill("#program", CORNER)
    page.click("#run")
    page.wait_for("document.querySelector('#frame').dataset.mode === 'run' && "
                  "Number(document.querySelector('#frame').dataset.step) >= 3", timeout_s=30)  # fmt: skip
    assert page.text("#message").startswith("program ") and "seed 3: score" in page.text("#message")
    assert page.eval("document.querySelectorAll('#log li').length") == page.eval("state.run.shown") > 10
    assert page.eval("document.querySelector('#log li.current').textContent").split(" · ")[1] in (
        "up", "right", "down", "left")  # fmt: skip
    folder = os.environ.get("STRATAGEM_SCREENSHOTS")
    if folder:  # README's picture: the program a while into its game, paused
        page.wait_for("Number(document.querySelector('#frame').dataset.step) >= Math.min(80, state.run.shown - 1)",
                      timeout_s=60)  # fmt: skip
        page.click("#pause")
        page.wait_for("document.querySelector('#frame').complete")
        page.eval("document.querySelector('#program').scrollTop = 10000")  # its strategy(), not its docstring
        page.screenshot(Path(folder) / "web.png")
    page.click("#pause" if page.eval("state.playing") else "#next")
    assert page.eval("state.playing") is False
