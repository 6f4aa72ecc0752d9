#!/usr/bin/env python3
"""A TLS front for the local Docker socket, for the foundry.docker TLS tests.

    docker_tls_proxy.py CERT KEY CA UPSTREAM_SOCKET

Listens on 127.0.0.1 (a free port, printed as the first line of stdout), requires a
client certificate signed by CA, and forwards each connection to UPSTREAM_SOCKET with
half-closes: a client's close_notify becomes a shutdown of the upstream's write side,
as a TLS dockerd treats it (hijacked exec streams). asyncio's TLS cannot half-close, so
this is a thread per connection, each using its TLS socket from that thread only.
"""
import select
import socket
import ssl
import sys
import threading


def serve(ctx, conn, upstream):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()
        return
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(upstream)
        client_open = True
        while True:
            watch = [up] + ([tls] if client_open else [])
            ready = [tls] if client_open and tls.pending() else select.select(watch, [], [])[0]
            if tls in ready:
                try:
                    data = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if data:
                    up.sendall(data)
                else:
                    client_open = False
                    up.shutdown(socket.SHUT_WR)
            if up in ready:
                data = up.recv(65536)
                if not data:
                    break
                tls.sendall(data)
    except (ssl.SSLError, OSError):
        pass
    finally:
        up.close()
        tls.close()


def main():
    cert, key, ca, upstream = sys.argv[1:5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(ctx, conn, upstream), daemon=True).start()


main()
