"""A small headless-Chromium driver for tests, over the Chrome DevTools Protocol (CDP).

Why not selenium or playwright: both pull a second browser or a driver binary from the network. Debian's
``chromium`` speaks CDP itself, and the ``websockets`` package (already a dependency) is all a test needs
to talk to it. The API is small on purpose (other test modules import it)::

    with Browser() as browser:
        page = browser.open(url)          # waits for the load event
        page.eval("document.title")       # -> the value (promises awaited)
        page.fill("#seed", "7")           # set an input's value, as typing would (input + change events)
        page.click("button.move")         # a real mouse click at the element's centre
        page.wait_for("document.querySelector('#log').children.length > 2", timeout_s=5)
        page.screenshot(tmp_path / "page.png")   # -> the PNG's Path
        page.errors                       # uncaught JavaScript exceptions, as text

``require_chromium()`` skips the calling test (``pytest.skip``) with a clear reason when no Chromium is
installed; ``.ci/run`` installs Debian's.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """The browser failed: it did not start, a command failed, or JavaScript threw."""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, ``$STRATAGEM_CHROMIUM`` first; None when there is none."""
    for name in (os.environ.get("STRATAGEM_CHROMIUM"), *NAMES):
        if name and (path := shutil.which(name)):
            return path
    return None


def require_chromium() -> str:
    """The Chromium executable, or skip the calling test saying why (the browser tests need a real one)."""
    import pytest

    path = find_chromium()
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return path


class Browser:
    """One headless Chromium process with a private, throw-away profile; ``open`` gives pages (tabs)."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900,
                 start_timeout_s: float = 30.0) -> None:  # fmt: skip
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no chromium on PATH")
        self.width, self.height, self.start_timeout_s = width, height, start_timeout_s
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()  # websockets wants its connection entered as a context manager
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self._pages: list[Page] = []

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start Chromium on a free DevTools port (``--remote-debugging-port=0``: the browser picks one and
        writes it to ``DevToolsActivePort`` in its profile, so no port race) and connect to it."""
        self._profile = tempfile.TemporaryDirectory(prefix="stratagem-chromium-")
        profile = Path(self._profile.name)
        args = [self.executable, "--headless=new", "--no-sandbox", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                "--metrics-recording-only", "--mute-audio", "--hide-scrollbars", "--password-store=basic",
                f"--window-size={self.width},{self.height}", "about:blank"]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                break
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        self._ws = self._stack.enter_context(connect(url, max_size=64 << 20, open_timeout=self.start_timeout_s))

    def close(self) -> None:
        """Close the connection, stop the browser (its process group) and delete the profile."""
        if self._ws is not None:
            try:
                self.send("Browser.close", timeout_s=5)
            except Exception:  # closing anyway
                pass
            self._ws = None
            self._stack.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait(timeout=5)
            self._process = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
        """Send one CDP command and return its result; events that arrive meanwhile are kept for ``event``."""
        if self._ws is None:
            raise BrowserError("browser is not running")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self._record(reply)

    def event(self, method: str, session: str | None, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for (and consume) the next CDP event ``method`` of page ``session``; return its params."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == session:
                    del self._events[i]
                    return event.get("params", {})
            reply = self._receive(deadline, method)
            if "method" in reply:
                self._record(reply)

    def open(self, url: str, timeout_s: float = 30.0) -> Page:
        """A new tab at ``url``, once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
                  session=session)  # fmt: skip
        self._pages.append(page)
        page.goto(url, timeout_s)
        return page

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        assert self._ws is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError(f"timed out waiting for {waiting_for}")
        try:
            return json.loads(self._ws.recv(timeout=remaining))
        except TimeoutError:
            raise BrowserError(f"timed out waiting for {waiting_for}") from None

    def _record(self, event: dict[str, Any]) -> None:
        if event["method"] == "Runtime.exceptionThrown":
            for page in self._pages:
                if page.session == event.get("sessionId"):
                    details = event["params"]["exceptionDetails"]
                    page.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            return
        if event["method"] in ("Page.loadEventFired", "Page.frameStoppedLoading"):
            self._events.append(event)
            del self._events[:-50]  # only recent load events matter


class Page:
    """One tab. Every method waits for its effect (or raises ``BrowserError``), so tests need no sleeps."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session
        self.errors: list[str] = []  # uncaught JavaScript exceptions on this page

    def _send(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout_s=timeout_s)

    def goto(self, url: str, timeout_s: float = 30.0) -> None:
        """Navigate to ``url`` and wait for its load event."""
        self.browser._events[:] = [e for e in self.browser._events if e.get("sessionId") != self.session]
        result = self._send("Page.navigate", {"url": url}, timeout_s)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.browser.event("Page.loadEventFired", self.session, timeout_s)

    def eval(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Evaluate JavaScript in the page and return its value (JSON-able; a promise is awaited)."""
        result = self._send("Runtime.evaluate",
                            {"expression": expression, "returnByValue": True, "awaitPromise": True},
                            timeout_s)  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout_s: float = 10.0) -> Any:
        """Poll the JavaScript ``condition`` until it is truthy; return its value (``BrowserError`` on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.eval(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s} s waiting for {condition!r}; errors: {self.errors}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real left click (mouse down and up through the input pipeline) at the centre of ``selector``."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height}; })()"
        )
        if not box or not box["w"] or not box["h"]:
            raise BrowserError(f"nothing visible to click at {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self._send("Input.dispatchMouseEvent",
                       {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1})  # fmt: skip

    def fill(self, selector: str, value: str) -> None:
        """Set an input's or textarea's value and fire ``input`` and ``change``, as typing would."""
        found = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            f" e.focus(); e.value = {json.dumps(value)};"
            " e.dispatchEvent(new Event('input', {bubbles: true}));"
            " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
        )
        if not found:
            raise BrowserError(f"no element {selector!r} to fill")

    def text(self, selector: str) -> str:
        """The visible text of ``selector`` ('' when absent)."""
        return self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the viewport to ``path`` and return it."""
        data = self._send("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


__all__ = ["Browser", "BrowserError", "Page", "find_chromium", "require_chromium"]
