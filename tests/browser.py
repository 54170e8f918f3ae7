"""Drive Debian's headless chromium through the DevTools protocol over a pipe (stdlib only).

``--remote-debugging-pipe`` makes chromium read protocol commands from fd 3 and write
replies and events to fd 4, each a JSON object ended by a NUL byte; no websocket
client (and no new dependency) is needed. ``load_page`` opens a file and returns what a
test asserts on: console errors, every network request, the images with their page
rectangles, any JSON a script computes, and a full-page screenshot.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--hide-scrollbars", "--mute-audio",
]


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    console_errors: List[str] = field(default_factory=list)
    requests: List[str] = field(default_factory=list)
    evaluated: Dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""
    size: tuple = (0, 0)


class DevTools:
    """A chromium process and the protocol pipe to it."""

    def __init__(self, binary: str, user_data_dir: str, timeout: float = 60.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def wire():  # in the child: fd 3 reads our commands, fd 4 carries chromium's replies
            a, b = os.dup(cmd_r), os.dup(res_w)  # high copies first, so neither target clobbers the other
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire, close_fds=False,  # Python's own fds are non-inheritable; 3 and 4 are set up by wire()
        )
        os.close(cmd_r)
        os.close(res_w)
        self._next = 0
        self._replies: Dict[int, Dict[str, Any]] = {}
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._replies[-1] = {"closed": True}
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()
                else:
                    self.events.put(msg)

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, session: Optional[str] = None) -> Dict[str, Any]:
        self._next += 1
        mid = self._next
        msg: Dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while mid not in self._replies:
                if -1 in self._replies:
                    raise RuntimeError(f"chromium closed the pipe during {method}: {self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} within {self.timeout} s")
                self._cv.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    def stderr_tail(self) -> str:
        try:
            self.proc.kill()
            return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:]
        except Exception:  # noqa: BLE001
            return ""

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass


def load_page(binary: str, url: str, scripts: Dict[str, str], width: int = 1280, max_height: int = 16000,
              timeout: float = 60.0) -> PageResult:
    """Open ``url`` in a fresh profile, wait for load and image decoding, run ``scripts``
    (name -> JS expression whose JSON value is returned) and take a full-page screenshot."""
    import base64

    out = PageResult()
    with tempfile.TemporaryDirectory(prefix="infovae-chromium-") as profile:
        dt = DevTools(binary, profile, timeout=timeout)
        try:
            target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                dt.send(f"{domain}.enable", session=session)
            dt.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            dt.send("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            loaded = False
            pending: List[Dict[str, Any]] = []
            while not loaded:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{url} did not finish loading within {timeout} s")
                ev = dt.events.get(timeout=left)
                pending.append(ev)
                loaded = ev.get("method") == "Page.loadEventFired"
            dt.send("Runtime.evaluate", {"expression": "Promise.all([...document.images].map(i => i.decode().catch(() => null)))",
                                         "awaitPromise": True}, session=session)
            for name, expr in scripts.items():
                res = dt.send("Runtime.evaluate", {"expression": f"JSON.stringify({expr})", "returnByValue": True}, session=session)
                if "exceptionDetails" in res:
                    raise RuntimeError(f"script {name!r} failed: {res['exceptionDetails']}")
                out.evaluated[name] = json.loads(res["result"]["value"])
            height = dt.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight", "returnByValue": True},
                             session=session)["result"]["value"]
            height = int(min(max_height, height))
            dt.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            shot = dt.send("Page.captureScreenshot", {"format": "png"}, session=session)
            out.screenshot = base64.b64decode(shot["data"])
            out.size = (width, height)
            time.sleep(0.2)  # late console messages and requests
            while True:
                try:
                    pending.append(dt.events.get_nowait())
                except queue.Empty:
                    break
        finally:
            dt.close()
    for ev in pending:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Network.requestWillBeSent":
            out.requests.append(p["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            out.console_errors.append(json.dumps(p.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.console_errors.append(p["entry"].get("text", ""))
    return out
