#!/usr/bin/env python3
"""A local stand-in for github.com and api.github.com, for the git safety tests.

  git_http_server.py ROOT PORTFILE LOGFILE [CERT KEY]

Listens on 127.0.0.1 (a free port, written to PORTFILE), over TLS when CERT and KEY are
given. Every request is appended to LOGFILE as one JSON line, before it is answered, so a
test can prove what did (and did not) reach the "upstream".

- Requests whose Host is api.github.com (or whose path starts with /api/) are a small fake
  of the GitHub REST and GraphQL API: reads answer {"ok": true}; creating a pull request or
  an issue answers a number and a node id; POST /graphql answers {"data": {...}}.
- Everything else is git smart HTTP: `git http-backend` run as a CGI program over the bare
  repositories under ROOT (owner/name.git; the ".git" may be left out of URLs, as on
  GitHub), with pushes enabled.
"""
import json, os, ssl, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ROOT, PORTFILE, LOGFILE = sys.argv[1], sys.argv[2], sys.argv[3]
CERT = sys.argv[4] if len(sys.argv) > 5 else None
KEY = sys.argv[5] if len(sys.argv) > 5 else None
log_lock = threading.Lock()
counter = {"n": 0}


def record(entry):
    with log_lock:
        with open(LOGFILE, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, data, ctype, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        body = self.read_body()
        u = urlsplit(self.path)
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        api = host == "api.github.com" or u.path.startswith("/api/")
        entry = {
            "kind": "api" if api else "git",
            "method": self.command,
            "host": host,
            "path": u.path,
            "query": u.query,
            "authorization": self.headers.get("Authorization"),
            "git_protocol": self.headers.get("Git-Protocol"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "body_len": len(body),
        }
        if api:
            entry["body"] = body[:65536].decode("utf-8", "replace")
        record(entry)
        if api:
            return self.api(u, body)
        return self.git(u, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    # ---- the fake GitHub API

    def api(self, u, body):
        path = u.path[4:] if u.path.startswith("/api/") else u.path
        parts = [p for p in path.split("/") if p]
        counter["n"] += 1
        n = counter["n"]
        data = {"ok": True, "path": path, "method": self.command}
        code = 200
        if self.command == "POST" and len(parts) == 4 and parts[0] == "repos" and parts[3] in ("pulls", "issues"):
            kind = "PR" if parts[3] == "pulls" else "I"
            data = {"number": n, "node_id": "%s_kw%d" % (kind, n), "user": {"login": "foundry-agent"}}
            code = 201
        elif path == "/graphql":
            try:
                q = json.loads(body or b"{}").get("query", "")
            except ValueError:
                q = ""
            data = {"data": {}}
            if "createPullRequest" in q:
                data["data"]["createPullRequest"] = {"pullRequest": {"id": "PR_kw%d" % n, "number": n}}
            if "createIssue" in q:
                data["data"]["createIssue"] = {"issue": {"id": "I_kw%d" % n, "number": n}}
        self.send(code, json.dumps(data).encode(), "application/json")

    # ---- git smart HTTP through git http-backend

    def git(self, u, body):
        path = u.path
        segs = path.split("/")
        # /owner/name/... -> /owner/name.git/... when only the .git directory exists
        if len(segs) > 3 and not segs[2].endswith(".git") and os.path.isdir(os.path.join(ROOT, segs[1], segs[2] + ".git")):
            segs[2] += ".git"
            path = "/".join(segs)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "GIT_CONFIG_KEY_1": "safe.directory",
            "GIT_CONFIG_VALUE_1": "*",
            "PATH_INFO": path,
            "REQUEST_METHOD": self.command,
            "QUERY_STRING": u.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "agent",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        out = p.stdout
        sep = out.find(b"\r\n\r\n")
        seplen = 4
        if sep < 0:
            sep = out.find(b"\n\n")
            seplen = 2
        if sep < 0:
            return self.send(500, p.stderr or b"http-backend failed", "text/plain")
        head, data = out[:sep].decode("latin-1"), out[sep + seplen:]
        code, ctype, extra = 200, "text/plain", []
        for line in head.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k.lower() == "status":
                code = int(v.split()[0])
            elif k.lower() == "content-type":
                ctype = v
            elif k.lower() not in ("content-length",):
                extra.append((k, v))
        self.send(code, data, ctype, extra)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if CERT:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = PORTFILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, PORTFILE)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
