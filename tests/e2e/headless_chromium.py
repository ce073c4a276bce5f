"""Debian's Chromium, headless, driven over the DevTools protocol: enough to log in, click and look.

The protocol is spoken directly over ``websockets`` (already pinned for uvicorn), so driving a real
browser needs no extra Python package and no driver binary, only ``apt-get install chromium``, which
:func:`ensure_chromium` does when it is missing. Clicks and typing are real input events at the
element's position, as a person's would be, so menus built on pointer events open as they do for one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = Path("/usr/bin/chromium")
# Quiet, offline, reproducible: nothing phones home, no first-run UI, no GPU in a container.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,1000",
)


class ChromiumError(RuntimeError):
    """The browser could not be installed or started, or a page did not do what was expected."""


def ensure_chromium() -> Path:
    """Install Debian's chromium package when it is absent (the machine's registry is reachable)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ChromiumError(f"{CHROMIUM} is missing and apt-get cannot install it here (need root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise ChromiumError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    if not CHROMIUM.exists():
        raise ChromiumError(f"chromium installed but {CHROMIUM} is still missing")
    return CHROMIUM


class Chromium:
    """One headless browser with one tab. Use as a context manager: it never outlives the block."""

    def __init__(self, profile_dir: Path, binary: Path = CHROMIUM, timeout: float = 30.0) -> None:
        self.profile_dir = Path(profile_dir)
        self.binary = binary
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._next_id = 0

    # -- life ------------------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        log = open(self.profile_dir.parent / "chromium.log", "wb")  # the child keeps its own descriptor
        self._process = subprocess.Popen(
            [str(self.binary), *FLAGS, f"--user-data-dir={self.profile_dir}", "--remote-debugging-port=0",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        try:
            port = self._wait_for_port(port_file)
            self._socket = connect(self._page_socket_url(port), max_size=None, open_timeout=self.timeout)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and end the browser's process group (our child and its helpers only)."""
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:  # the browser may be gone already
                pass
            self._socket = None
        process, self._process = self._process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        process.poll()

    def _wait_for_port(self, port_file: Path) -> int:
        """Chromium writes the port it chose into the profile once DevTools listens."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ChromiumError(f"chromium exited with {self._process.returncode}")
            try:
                first_line = port_file.read_text().splitlines()[0]
                return int(first_line)
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.1)
        raise ChromiumError(f"chromium did not open its DevTools port within {self.timeout:g} s")

    def _page_socket_url(self, port: int) -> str:
        import requests

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise ChromiumError("chromium has no page target")

    # -- protocol --------------------------------------------------------------------------------
    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; waits for its answer and skips the events in between."""
        if self._socket is None:
            raise ChromiumError("browser is not running")
        self._next_id += 1
        wanted = self._next_id
        self._socket.send(json.dumps({"id": wanted, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChromiumError(f"no answer to {method} within {self.timeout:g} s")
            message = json.loads(self._socket.recv(timeout=remaining))
            if message.get("id") != wanted:
                continue
            if "error" in message:
                raise ChromiumError(f"{method}: {message['error']}")
            return dict(message.get("result") or {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise ChromiumError(f"JavaScript error: {text}")
        return (result.get("result") or {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except ChromiumError as error:  # e.g. the page is between two documents
                last_error = str(error)
            if time.monotonic() >= deadline:
                url = self.evaluate("location.href")
                raise ChromiumError(f"timed out after {timeout:g} s waiting for {what or expression} "
                                    f"(at {url}) {last_error}")
            time.sleep(0.25)

    # -- what a person does ----------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'",
                      what=f"{url} to load")

    def click(self, element_js: str, what: str = "", timeout: float = 30.0) -> None:
        """Click the middle of the element an expression finds (waits for it to be visible)."""
        box = self.wait_for(
            f"(() => {{ const e = {element_js}; if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); if (!r.width || !r.height) return null;"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()",
            timeout=timeout, what=what or element_js,
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def type_into(self, element_js: str, text: str, what: str = "") -> None:
        """Focus a field and type into it as a keyboard would (frameworks see real input events)."""
        self.click(element_js, what=what)
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
