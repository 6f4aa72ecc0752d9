#!/usr/bin/env python3
"""A raw WebSocket client (RFC 6455) in the standard library, for the web console's tests.

    ws_client.py URL STEPS_JSON [--origin O] [--cookie C] [--host H] [--header "K: V"]...

Connects, does the opening handshake (checking Sec-WebSocket-Accept), then runs the steps:
  {"send_binary": "text"}   a masked binary frame (UTF-8 of the text)
  {"send_text": "text"}     a masked text frame
  {"send_raw_hex": "81.."}  bytes as given (to send broken frames)
  {"expect": "regex", "timeout": 20}   read until the output (binary and text messages,
                            decoded as UTF-8) matches
  {"sleep": 0.5}
  {"close": 1000}           send a close frame and wait for the server's
Prints one JSON object: {"status": N, "headers": {...}, "ok": bool, "output": "...",
"texts": [...], "close_code": N|null, "error": "..."}. A refused handshake is not an error
of the client: "status" says what the server answered.
"""
import base64
import hashlib
import json
import os
import re
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(op, payload, mask=True, fin=True):
    head = bytearray([(0x80 if fin else 0) | op])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Conn:
    def __init__(self, sock, rest):
        self.sock = sock
        self.buf = rest
        self.output = ""
        self.texts = []
        self.close_code = None
        self.closed = False
        self.decoder_bytes = b""

    def read_frame(self, deadline):
        while True:
            f = self.parse()
            if f:
                return f
            left = deadline - time.time()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not d:
                self.closed = True
                return None
            self.buf += d

    def parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        op, n = b[0] & 0x0F, b[1] & 0x7F
        if b[1] & 0x80:
            raise ValueError("server frame is masked")
        i = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < i + n:
            return None
        payload = b[i:i + n]
        self.buf = b[i + n:]
        return op, payload

    def pump(self, deadline):
        f = self.read_frame(deadline)
        if not f:
            return False
        op, payload = f
        if op == 2:
            self.decoder_bytes += payload
            text = self.decoder_bytes.decode("utf-8", errors="ignore")
            self.output += text
            self.decoder_bytes = b""
        elif op == 1:
            self.texts.append(payload.decode("utf-8"))
        elif op == 8:
            self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.closed = True
        elif op == 9:
            self.sock.sendall(frame(10, payload))
        return True


def main():
    args = sys.argv[1:]
    url, steps = args[0], json.loads(args[1])
    opts = {"origin": None, "cookie": None, "host": None, "header": []}
    i = 2
    while i < len(args):
        k = args[i].lstrip("-")
        if k == "header":
            opts["header"].append(args[i + 1])
        else:
            opts[k] = args[i + 1]
        i += 2
    u = urlsplit(url)
    port = u.port or 80
    path = u.path + ("?" + u.query if u.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: %s" % (opts["host"] or "%s:%d" % (u.hostname, port)),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key,
        "Sec-WebSocket-Version: 13",
    ]
    if opts["origin"]:
        lines.append("Origin: " + opts["origin"])
    if opts["cookie"]:
        lines.append("Cookie: " + opts["cookie"])
    lines += opts["header"]
    result = {"status": None, "headers": {}, "ok": True, "output": "", "texts": [], "close_code": None}
    sock = socket.create_connection((u.hostname, port), timeout=10)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = sock.recv(65536)
        if not d:
            break
        head += d
    head, _, rest = head.partition(b"\r\n\r\n")
    status_line, *hdrs = head.decode("latin-1").split("\r\n")
    result["status"] = int(status_line.split(" ")[1]) if status_line.startswith("HTTP/") else None
    for h in hdrs:
        k, _, v = h.partition(":")
        result["headers"][k.strip().lower()] = v.strip()
    if result["status"] != 101:
        result["body"] = rest.decode("utf-8", errors="replace")
        print(json.dumps(result))
        return 0
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if result["headers"].get("sec-websocket-accept") != want:
        result["ok"] = False
        result["error"] = "bad Sec-WebSocket-Accept"
        print(json.dumps(result))
        return 1
    c = Conn(sock, rest)
    for s in steps:
        if "send_binary" in s:
            sock.sendall(frame(2, s["send_binary"].encode()))
        if "send_text" in s:
            sock.sendall(frame(1, s["send_text"].encode()))
        if "send_raw_hex" in s:
            sock.sendall(bytes.fromhex(s["send_raw_hex"]))
        if "sleep" in s:
            time.sleep(s["sleep"])
        if "expect" in s:
            deadline = time.time() + s.get("timeout", 20)
            pat = re.compile(s["expect"])
            while not pat.search(c.output) and time.time() < deadline:
                if not c.pump(deadline) and c.closed:
                    break
            if not pat.search(c.output):
                result["ok"] = False
                result["error"] = "did not see %r" % s["expect"]
                break
        if "close" in s:
            try:
                sock.sendall(frame(8, struct.pack(">H", s["close"])))
            except OSError:
                pass
            deadline = time.time() + 5
            while not c.closed and time.time() < deadline:
                c.pump(deadline)
        if "wait_close" in s:
            deadline = time.time() + s["wait_close"]
            while not c.closed and time.time() < deadline:
                c.pump(deadline)
    result["output"] = c.output
    result["texts"] = c.texts
    result["close_code"] = c.close_code
    print(json.dumps(result))
    sock.close()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
