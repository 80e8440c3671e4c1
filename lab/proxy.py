"""Allow-listing HTTP forward proxy for apt in lab hosts.

The LISTENING socket is created inside the lab switch netns (198.18.0.1:3142), so hosts
reach it on the management bridge; OUTBOUND connections are made from the root netns.
Only GET/HEAD to deb.debian.org / security.debian.org on port 80 are forwarded; everything
else gets 403.  Run as ``python -m lab.proxy --netns etsf-lab --listen 198.18.0.1:3142``.

It is also the lab's SHARED APT ARCHIVE CACHE: every ``.deb`` (immutable: name, version and
architecture are in its file name) is stored once under ``--cache`` and served from there to
every host afterwards, so repeated installs on any host never download again.  Hosts keep
their own /var/cache/apt/archives (apt locks that directory without waiting, so one directory
shared by hosts installing at the same time fails with "Could not get lock").
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import http.client
import http.server
import os
import socket
import socketserver
import sys
import time
import urllib.parse

ALLOWED_HOSTS = {"deb.debian.org", "security.debian.org"}
CLONE_NEWNET = 0x40000000
UPSTREAM_TIMEOUT = 60
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
               "te", "trailers", "transfer-encoding", "upgrade"}


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """Bind a listening socket inside /run/netns/<netns>, then return to our own netns."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return sock


def cache_path(cache_dir: str, host: str, path: str) -> str | None:
    """Where a .deb is cached (None for anything that is not an immutable .deb)."""
    if not path.endswith(".deb") or "?" in path:
        return None
    name = os.path.basename(path)
    digest = hashlib.sha256(f"{host}{path}".encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"{digest}_{name}")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "etsf-lab-apt-proxy/1"
    cache_dir: str | None = None

    def log_message(self, fmt, *args):  # noqa: A003 - stdlib signature
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {fmt % args}\n")

    def _deny(self, why: str) -> None:
        body = f"403 forbidden by etsf lab proxy: {why}\n".encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_CONNECT(self):  # noqa: N802
        self.close_connection = True
        self._deny("CONNECT not allowed")

    def _other(self):
        self.close_connection = True
        self._deny(f"method {self.command} not allowed")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other  # noqa: N815

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        host = (url.hostname or "").lower()
        if url.scheme != "http" or host not in ALLOWED_HOSTS or (url.port or 80) != 80:
            self._deny(f"{url.scheme}://{host}:{url.port or 80} not allow-listed")
            return
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        cached = cache_path(self.cache_dir, host, url.path) if self.cache_dir else None
        if cached and os.path.exists(cached):
            self._serve_cached(cached, url.geturl())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Host"] = host
        if cached:
            headers.pop("Range", None)  # fetch whole files so they can be cached
            headers.pop("If-Range", None)
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} cache miss, fetch {url.geturl()}\n")
        try:
            conn = http.client.HTTPConnection(host, 80, timeout=UPSTREAM_TIMEOUT)
            conn.request(self.command, path, headers=headers)
            resp = conn.getresponse()
        except OSError as exc:
            self.close_connection = True
            self.send_error(502, f"upstream error: {exc}")
            return
        try:
            self.log_request(resp.status)
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in HOP_HEADERS:
                    self.send_header(k, v)
            if self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
                self.end_headers()
                return
            if length is None:
                # unknown length (e.g. chunked upstream): read it all, then send with a length
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.end_headers()
            remaining = int(length)
            tmp = None
            if cached and resp.status == 200:
                tmp = open(f"{cached}.{os.getpid()}.{id(self)}.part", "wb")  # noqa: SIM115
            try:
                while remaining > 0:
                    chunk = resp.read(min(65536, remaining))
                    if not chunk:
                        self.close_connection = True
                        break
                    self.wfile.write(chunk)
                    if tmp:
                        tmp.write(chunk)
                    remaining -= len(chunk)
            finally:
                if tmp:
                    tmp.close()
                    if remaining == 0:
                        os.replace(tmp.name, cached)
                    else:
                        os.unlink(tmp.name)
        finally:
            conn.close()

    def _serve_cached(self, cached: str, url: str) -> None:
        size = os.path.getsize(cached)
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} cache hit {url}\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(cached, "rb") as fh:
            while True:
                chunk = fh.read(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket):
        # bind/activate already done on `sock` (inside the lab netns)
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.proxy")
    ap.add_argument("--netns", required=True)
    ap.add_argument("--listen", required=True, help="ADDR:PORT inside the netns")
    ap.add_argument("--cache", help="shared .deb cache directory")
    args = ap.parse_args(argv)
    if args.cache:
        os.makedirs(args.cache, exist_ok=True)
        Handler.cache_dir = args.cache
    host, port = args.listen.rsplit(":", 1)
    sock = listen_in_netns(args.netns, host, int(port))
    srv = Server(sock)
    sys.stderr.write(f"listening on {args.listen} in netns {args.netns}\n")
    sys.stderr.flush()
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
