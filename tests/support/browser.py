"""A real browser for the tests: headless Chromium driven over the Chrome DevTools Protocol.

Chromium runs with ``--remote-debugging-pipe``: it reads commands from its fd 3 and writes
answers and events to its fd 4, each message JSON ended by a NUL byte. A reader thread
files the answers by id and keeps the events; ``Browser.open`` attaches to a page
(``Target.attachToTarget`` with ``flatten``) and records what its console shows:
``console.error`` calls, uncaught exceptions, and the browser's own error entries (a
refused load, a Content-Security-Policy violation, a failed fetch).

Chromium is the Debian package ``chromium`` (tests/run.sh installs it). Missing, the
tests that need it fail, saying so: they must not pass by skipping in CI. As root it
needs ``--no-sandbox``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 20.0
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
TRAMPOLINE = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_path() -> str:
    """The Chromium executable, or the test fails naming the package to install."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is needed for this test: apt-get install chromium (tests/run.sh does)")


class Browser:
    """One headless Chromium process and the CDP session of one page."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        # The pipe's ends become the browser's fds 3 and 4 in a small Python trampoline (no
        # preexec_fn, unsafe in a process that runs threads; dash takes one-digit fds only).
        self._log = (profile.parent / "chromium.log").open("wb")
        fds = [str(to_browser_r), str(from_browser_w)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, *fds, chromium_path(), *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = iter(range(1, 1 << 30))
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session = ""

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._changed:
                    self._changed.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Send one command (to the page's session once one is open); its result, or the
        test fails with the browser's error."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        session = kw.get("session", self.session)
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while number not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    pytest.fail(f"no answer from Chromium to {method}: {self.log_tail()}")
                self._changed.wait(min(left, 0.5))
            answer = self._answers.pop(number)
        if "error" in answer:
            pytest.fail(f"Chromium refused {method}: {answer['error']}")
        return answer.get("result", {})

    def open(self, url: str) -> None:
        """Attach to the page, record its console, go to ``url`` and wait for its load."""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.send(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + TIMEOUT
        loaded = "location.href + ' ' + document.readyState"
        while self.evaluate(loaded) != f"{url} complete":
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not load: {self.evaluate(loaded)}")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            pytest.fail(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """What the page's console showed as an error so far, one line each."""
        found = []
        with self._changed:
            events = list(self.events)
        for event in events:
            params = event.get("params", {})
            match event.get("method"):
                case "Runtime.consoleAPICalled" if params.get("type") in ("error", "assert"):
                    args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                    found.append("console." + params["type"] + ": " + " ".join(args))
                case "Runtime.exceptionThrown":
                    details = params.get("exceptionDetails", {})
                    exception = details.get("exception", {}).get("description")
                    found.append("uncaught: " + str(exception or details.get("text")))
                case "Log.entryAdded" if params.get("entry", {}).get("level") == "error":
                    entry = params["entry"]
                    found.append(
                        f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
                    )
        return found

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(Exception):
                self.send("Browser.close", session="")
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            with suppress(OSError):
                os.close(fd)
        self._reader.join(timeout=5)
        self._log.close()


@contextmanager
def browser(workdir: Path) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile under ``workdir``, closed afterwards."""
    profile = workdir / "chromium-profile"
    profile.mkdir(exist_ok=True)
    started = Browser(profile)
    try:
        yield started
    finally:
        started.close()
