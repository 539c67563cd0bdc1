"""A small driver for headless Chromium over the DevTools protocol, for tests of the status page.

It starts Debian's ``/usr/bin/chromium`` (``--headless=new``, a throwaway profile, no
sandbox as root), attaches to its one tab over a WebSocket (the ``websockets`` package),
and offers what a page test needs: open a URL, evaluate JavaScript, wait for a condition
(``poll_until``: no sleeps), take a screenshot, and the page's uncaught exceptions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.conftest import poll_until

CHROMIUM = Path("/usr/bin/chromium")


class DevToolsError(Exception):
    pass


class Chromium:
    """``with Chromium() as browser: browser.open(url); browser.evaluate("document.title")``."""

    def __init__(self, binary: Path = CHROMIUM, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        self.binary = binary
        self.size = (width, height)
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="evac-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.socket: ClientConnection | None = None
        self.errors: list[str] = []  # uncaught exceptions and console errors of the page
        self._next = 0
        self._events: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------ start and stop
    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        width, height = self.size
        args = [
            str(self.binary),
            "--headless=new",
            "--disable-gpu",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--password-store=basic",
            "--mute-audio",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            "about:blank",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = self.profile / "DevToolsActivePort"
        poll_until(
            lambda: self._alive() and active.exists() and active.read_text().count("\n") >= 1,
            self.timeout,
            "Chromium's DevTools port",
        )
        port = int(active.read_text().split("\n")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        page = next(t for t in targets if t.get("type") == "page")
        self.socket = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout)
        )
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain)

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise DevToolsError(f"Chromium exited with {self.process.returncode} before it listened")
        return True

    def close(self) -> None:
        self._stack.close()
        self.socket = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------ the protocol
    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result; events that arrive meanwhile are kept."""
        assert self.socket is not None, "not started"
        self._next += 1
        ident = self._next
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=self.timeout))
            if message.get("id") == ident:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error'].get('message')}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        self._events.append(message)

    def _drain(self) -> None:
        """Take the events already sent, without waiting."""
        assert self.socket is not None
        while True:
            try:
                self._event(json.loads(self.socket.recv(timeout=0)))
            except TimeoutError:
                return

    # ------------------------------------------------------------ what tests use
    def open(self, url: str) -> None:
        """Navigate and wait for the page's load event."""
        self._events.clear()
        self.send("Page.navigate", url=url)
        poll_until(self._loaded, self.timeout, f"{url} to load")

    def _loaded(self) -> bool:
        self._drain()
        return any(e.get("method") == "Page.loadEventFired" for e in self._events)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON: a
        DOM node comes back as nothing, so ask ``!!node`` or for one of its properties."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(
                f"{expression[:80]}: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        found: list[Any] = []

        def truthy() -> bool:
            found[:] = [self.evaluate(expression)]
            return bool(found[0])

        poll_until(truthy, timeout, what, every=0.1)
        return found[0]

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
