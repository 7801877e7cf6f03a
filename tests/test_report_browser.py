"""Rendering HTML in headless Chromium, driven through the DevTools protocol over a pipe.

:func:`render` opens a page and returns what the browser made of it: the section headings in the
rendered DOM, every ``<img>`` with its decoded size (``naturalWidth`` 0 = not decoded) and every
console error or uncaught exception. No extra package: ``--remote-debugging-pipe`` speaks
NUL-terminated JSON on file descriptors 3 (commands in) and 4 (replies out).
``tests/test_pipeline_spark.py`` renders the pipeline's report with it; the tests here check the
checker on small pages (a good one, and one with a broken image and script errors).

Chromium is required (``make test`` installs it on Debian as root). Without it these tests fail
with the install command, unless ``MIXWEAVE_SKIP_BROWSER=1`` asks to skip them.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]
INSTALL = "apt-get install -y --no-install-recommends chromium (as root; `make test` does it on Debian)"

#: every image's decoded size, after the browser tried to decode it
IMAGES_JS = ("Promise.all([...document.images].map(i => i.decode().then(() => 0, () => 0)"
             ".then(() => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight}))))")
HEADINGS_JS = "[...document.querySelectorAll('h1, h2')].filter(h => h.getClientRects().length).map(h => h.textContent)"


def chromium_or_fail() -> str:
    """The Chromium binary; fails (or skips when MIXWEAVE_SKIP_BROWSER=1) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("MIXWEAVE_SKIP_BROWSER") == "1":
        pytest.skip("MIXWEAVE_SKIP_BROWSER=1 and Chromium is not installed")
    pytest.fail(f"the report's browser test needs Chromium: {INSTALL}; or set MIXWEAVE_SKIP_BROWSER=1 to skip it")


class DevTools:
    """A Chromium process and its DevTools pipe: ``call`` sends a command and waits for its reply;
    every event is kept in ``events``."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0):
        self.timeout, self.events, self._next = timeout, [], 0
        cmd_read, self._cmd = os.pipe()
        self._replies, reply_write = os.pipe()

        def to_fds_3_and_4():  # runs in the child before exec
            os.dup2(cmd_read, 3)
            os.dup2(reply_write, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=to_fds_3_and_4, close_fds=False)
        os.close(cmd_read)
        os.close(reply_write)
        self._inbox: queue.Queue = queue.Queue()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read_replies(self) -> None:
        buffer = b""
        with os.fdopen(self._replies, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._inbox.put(json.loads(message))
        self._inbox.put(None)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        while True:
            try:
                reply = self._inbox.get(timeout=self.timeout)
            except queue.Empty:
                raise TimeoutError(f"no reply to {method} in {self.timeout}s; stderr: {self.stderr()[-2000:]}") from None
            if reply is None:
                raise RuntimeError(f"Chromium closed the pipe during {method}; stderr: {self.stderr()[-2000:]}")
            if reply.get("id") != self._next:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd)


def _errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and error-level browser log entries among ``events``."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                        for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append("uncaught: " + str(details.get("exception", {}).get("description", details.get("text"))))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append("log: " + params["entry"].get("text", ""))
    return found


def render(page: Path, profile: Path) -> dict:
    """Open ``page`` in headless Chromium; return its visible h1/h2 texts, images (alt, decoded
    width and height) and errors (console errors, uncaught exceptions, error log entries)."""
    tools = DevTools(chromium_or_fail(), profile)
    try:
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable", session)
        tools.call("Page.navigate", session, url=page.resolve().as_uri())

        def evaluate(expression: str):
            reply = tools.call("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                               returnByValue=True)
            if "exceptionDetails" in reply:
                raise RuntimeError(f"evaluating {expression!r}: {reply['exceptionDetails']}")
            return reply["result"]["value"]

        evaluate("new Promise(done => document.readyState === 'complete' ? done(true)"
                 " : addEventListener('load', () => done(true)))")
        result = {"headings": evaluate(HEADINGS_JS), "images": evaluate(IMAGES_JS)}
        tools.call("Runtime.evaluate", session, expression="0")  # flush events queued behind the load
        result["errors"] = _errors(tools.events)
        return result
    finally:
        tools.close()


# -- the checker itself, on small pages ------------------------------------------------------------

def _png() -> bytes:
    from mixweave.pipeline.report import _figure, _png as png_of

    fig = _figure(1, 1)
    fig.subplots().plot([0, 1], [1, 0])
    return png_of(fig)


def test_render_reports_headings_and_decoded_images(tmp_path):
    data = base64.b64encode(_png()).decode()
    page = tmp_path / "good.html"
    page.write_text(f"<!DOCTYPE html><html><body><h1>Title</h1><h2>Part one</h2><img alt='chart' "
                    f"src='data:image/png;base64,{data}'><h2 style='display:none'>hidden</h2></body></html>")
    seen = render(page, tmp_path / "profile")
    assert seen["headings"] == ["Title", "Part one"]
    assert seen["images"] == [{"alt": "chart", "width": 110, "height": 110}]  # 1 inch at the report's 110 dpi
    assert seen["errors"] == []


def test_render_catches_broken_images_and_script_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><h2>Broken</h2>"
                    "<img alt='truncated' src='data:image/png;base64,iVBORw0KGgo='>"
                    "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    seen = render(page, tmp_path / "profile")
    assert seen["images"] == [{"alt": "truncated", "width": 0, "height": 0}]
    assert any("boom" in e for e in seen["errors"]) and any("undefinedFunction" in e for e in seen["errors"])
