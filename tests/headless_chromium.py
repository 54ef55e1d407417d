"""Open a local page in headless Chromium with the network off; report errors and broken pictures.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so no WebDriver or websocket library is
needed and the browser reports events, not log lines to scrape: console errors, uncaught
exceptions, browser log errors, and every request that is neither `file:` nor `data:` (a page
that tries to reach the network is broken offline, which is how TFDV's Facets page fails).
The network is off twice: DevTools' offline emulation, and a resolver that resolves nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOCAL_SCHEMES = ("file:", "data:", "about:")

# Every <img>, decoded: [alt, naturalWidth, naturalHeight, decode error or ""].
_IMAGES_SCRIPT = """
Promise.all(Array.from(document.images).map(img => img.decode().then(
    () => [img.alt, img.naturalWidth, img.naturalHeight, ""],
    error => [img.alt, img.naturalWidth, img.naturalHeight, String(error)])))
"""


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def browser_or_skip() -> str:
    """The Chromium binary, or skip the calling test saying how to get one."""
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no Chromium binary ({', '.join(BROWSERS)}) on PATH; apt-get install chromium")
    return browser


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)  # console, exceptions, log, network attempts
    images: list[list] = field(default_factory=list)  # [alt, width, height, decode error]
    text: str = ""  # document.body.innerText

    def broken_images(self) -> list[list]:
        return [image for image in self.images if image[1] <= 0 or image[3]]


class _Pipe:
    """The DevTools protocol over the two pipes Chromium opens on fds 3 (in) and 4 (out)."""

    def __init__(self, to_browser: int, from_browser: int, timeout: float) -> None:
        self._out, self._in, self._timeout = to_browser, from_browser, timeout
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self) -> dict:
        deadline = time.monotonic() + self._timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(
                f"exception: {details.get('exception', {}).get('description', details['text'])}"
            )
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(
                "console: "
                + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(LOCAL_SCHEMES):
                errors.append(f"network request: {url}")
    return errors


def _dup_to(fd: int, target: int) -> None:
    os.dup2(os.dup(fd), target)
    os.set_inheritable(target, True)


def open_page(browser: str, path: str, timeout: float = 60.0) -> PageReport:
    """Load `path` (a local file) offline, let it settle, and report what went wrong in it."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def map_pipes() -> None:  # in the child: its fd 3 reads commands, fd 4 writes answers
        read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
        _dup_to(read_end, 3)
        _dup_to(write_end, 4)

    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        open(pathlib.Path(profile, "browser.log"), "w+b") as log,
    ):
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "about:blank",
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=False,
            preexec_fn=map_pipes,
        )
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        pipe = _Pipe(to_browser_w, from_browser_r, timeout)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session)
            pipe.call(
                "Network.emulateNetworkConditions",
                session,
                offline=True,
                latency=0,
                downloadThroughput=-1,
                uploadThroughput=-1,
            )
            pipe.call("Page.navigate", session, url=pathlib.Path(path).resolve().as_uri())
            pipe.wait_for("Page.loadEventFired")
            images = pipe.call(
                "Runtime.evaluate",
                session,
                expression=_IMAGES_SCRIPT,
                awaitPromise=True,
                returnByValue=True,
            )["result"]["value"]
            text = pipe.call(
                "Runtime.evaluate",
                session,
                expression="document.body.innerText",
                returnByValue=True,
            )["result"]["value"]
            pipe.call("Browser.close")
        except (RuntimeError, TimeoutError) as error:
            log.seek(0)
            raise RuntimeError(f"{error}; Chromium said: {log.read()[-2000:].decode()}") from error
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return PageReport(errors=_errors(pipe.events), images=images, text=text)


def assert_renders_offline(
    browser: str, path: str, expected_text: tuple[str, ...] = ()
) -> PageReport:
    """The page loads offline with no errors, every picture decodes, and it shows expected_text."""
    report = open_page(browser, path)
    assert report.errors == [], report.errors
    assert report.images and report.broken_images() == [], report.images
    missing = [text for text in expected_text if text not in report.text]
    assert not missing, f"not on the rendered page: {missing}"
    return report
