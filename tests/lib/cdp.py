#!/usr/bin/env python3
"""Drive headless Chromium through the DevTools protocol (standard library only), for the
web console's browser test.

    cdp.py CHROMIUM STEPS_JSON

Starts Chromium (headless, no sandbox, a fresh profile), then runs the steps on one page:
  {"goto": URL}                       navigate and wait for the load event
  {"wait": "js expression", "timeout": 20}   poll until the expression is truthy
  {"eval": "js expression"}           its value goes into "results"
  {"type": "text"}                    type text into the focused element
  {"key": "Enter"}                    press a key
  {"shot": PATH}                      a PNG screenshot of the page
  {"sleep": 0.5}
Prints one JSON object: {"ok": bool, "error": "...", "results": [...], "console": [...]}
where "console" holds the page's console errors, uncaught exceptions and CSP reports.
"""
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ws_client import frame  # noqa: E402


class WS:
    def __init__(self, url):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           % (u.path, u.hostname, u.port, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("DevTools refused the WebSocket: %r" % head[:200])
        self.msg = b""

    def send(self, obj):
        self.sock.sendall(frame(1, json.dumps(obj).encode()))

    def recv(self, deadline):
        while True:
            b = self.buf
            if len(b) >= 2:
                fin, op, n, i = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x7F, 2
                if n == 126 and len(b) >= 4:
                    n, i = struct.unpack(">H", b[2:4])[0], 4
                elif n == 127 and len(b) >= 10:
                    n, i = struct.unpack(">Q", b[2:10])[0], 10
                if n < 126 or i > 2:
                    if len(b) >= i + n:
                        payload, self.buf = b[i:i + n], b[i + n:]
                        self.msg += payload
                        if op in (0, 1, 2) and fin:
                            m, self.msg = self.msg, b""
                            return json.loads(m.decode())
                        if op == 8:
                            raise RuntimeError("DevTools closed the connection")
                        if op >= 8:
                            self.msg = b""
                        continue
            left = deadline - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(1 << 20)
            except socket.timeout:
                return None
            if not d:
                raise RuntimeError("DevTools went away")
            self.buf += d


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.console = []
        self.events = []

    def on_event(self, m):
        meth, p = m.get("method"), m.get("params", {})
        if meth == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
        elif meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            self.console.append("console.%s: %s" % (p["type"], " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
        elif meth == "Log.entryAdded":
            e = p.get("entry", {})
            if e.get("level") in ("error", "warning") or e.get("source") == "security":
                self.console.append("log.%s: %s %s" % (e.get("level"), e.get("text", ""), e.get("url", "")))
        self.events.append(meth)

    def call(self, method, params=None, timeout=30):
        self.next_id += 1
        mid = self.next_id
        self.ws.send({"id": mid, "method": method, "params": params or {}})
        deadline = time.time() + timeout
        while True:
            m = self.ws.recv(deadline)
            if m is None:
                raise RuntimeError("no answer to " + method)
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"].get("message")))
                return m.get("result", {})
            if "method" in m:
                self.on_event(m)

    def pump(self, seconds):
        deadline = time.time() + seconds
        while True:
            m = self.ws.recv(deadline)
            if m is None:
                return
            if "method" in m:
                self.on_event(m)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate %r: %s" % (expr, r["exceptionDetails"].get("text")))
        return r.get("result", {}).get("value")


def main():
    chromium, steps = sys.argv[1], json.loads(sys.argv[2])
    profile = tempfile.mkdtemp(prefix="foundry-cdp-")
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--user-data-dir=" + profile, "--window-size=1400,900", "--remote-debugging-port=0",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = {"ok": True, "results": [], "console": []}
    page = None
    try:
        url, deadline = None, time.time() + 60
        while time.time() < deadline and url is None:
            line = proc.stderr.readline().decode(errors="replace")
            if not line and proc.poll() is not None:
                raise RuntimeError("chromium exited (%s)" % proc.returncode)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                url = m.group(1)
        if not url:
            raise RuntimeError("chromium did not open DevTools")
        hostport = urlsplit(url).netloc
        targets = json.load(urllib.request.urlopen("http://%s/json/list" % hostport, timeout=10))
        target = next(t for t in targets if t.get("type") == "page")
        page = Page(WS(target["webSocketDebuggerUrl"]))
        for d in ("Page.enable", "Runtime.enable", "Log.enable"):
            page.call(d)
        for s in steps:
            if "goto" in s:
                page.call("Page.navigate", {"url": s["goto"]})
                end = time.time() + s.get("timeout", 20)
                while "Page.loadEventFired" not in page.events and time.time() < end:
                    page.pump(0.2)
                page.events = []
            if "wait" in s:
                end, v = time.time() + s.get("timeout", 20), None
                while time.time() < end:
                    v = page.evaluate(s["wait"])
                    if v:
                        break
                    page.pump(0.2)
                if not v:
                    raise RuntimeError("timed out waiting for: " + s["wait"])
            if "eval" in s:
                out["results"].append(page.evaluate(s["eval"]))
            if "type" in s:
                # key events with text, one a character: what a keyboard sends (xterm.js
                # 3 reads keypress, not input events)
                for ch in s["type"]:
                    page.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": ch, "text": ch})
                    page.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": ch})
            if "key" in s:
                k = s["key"]
                codes = {"Enter": 13}
                for t in ("keyDown", "keyUp"):
                    ev = {"type": t, "key": k, "code": k, "windowsVirtualKeyCode": codes.get(k, 0)}
                    if k == "Enter" and t == "keyDown":
                        ev["text"] = "\r"
                    page.call("Input.dispatchKeyEvent", ev)
            if "sleep" in s:
                page.pump(s["sleep"])
            if "shot" in s:
                r = page.call("Page.captureScreenshot", {"format": "png"})
                with open(s["shot"], "wb") as f:
                    f.write(base64.b64decode(r["data"]))
        page.pump(0.3)
    except Exception as e:  # noqa: BLE001 - reported to the caller as JSON
        out["ok"] = False
        out["error"] = str(e)
    finally:
        if page:
            out["console"] = page.console
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
