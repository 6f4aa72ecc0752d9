#!/usr/bin/env python3
"""A test upstream for the proxy specs: HTTP or HTTPS on 127.0.0.1, one port.

  proxy_upstream.py PORTFILE [CERT KEY]

Writes the port it listens on to PORTFILE. Endpoints:
  /echo           the request as JSON: method, path, query, headers, body
  /echo-auth      the Authorization / x-api-key headers sent back, in a header and the body
  /stream?n=&ms=  n server-sent events, ms apart (chunked)
  /bytes?n=       n bytes
  /status?code=   an empty response with that status
  /ws             an Upgrade: websocket answered with 101, then an echo of raw bytes
  anything else   like /echo
"""
import json, os, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        return self.rfile.read(n) if n else b""

    def send(self, code, data, ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        body = self.body()
        if u.path == "/stream":
            n, ms = int(q.get("n", ["5"])[0]), int(q.get("ms", ["200"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                ev = ("data: token %d\n\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                time.sleep(ms / 1000.0)
            self.wfile.write(b"0\r\n\r\n")
            return
        if u.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            while True:
                data = self.connection.recv(4096)
                if not data:
                    break
                self.connection.sendall(b"echo:" + data)
            return
        if u.path == "/bytes":
            self.send(200, b"x" * int(q.get("n", ["1000"])[0]), "application/octet-stream")
            return
        if u.path == "/status":
            self.send(int(q.get("code", ["200"])[0]), b"")
            return
        if u.path == "/echo-auth":
            auth = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
            self.send(200, json.dumps({"you_sent": auth}).encode(), extra=[("X-Echo", auth)])
            return
        info = {
            "method": self.command, "path": u.path, "query": u.query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("latin-1"),
        }
        self.send(200, json.dumps(info).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, sys.argv[1])
    srv.serve_forever()


if __name__ == "__main__":
    main()
