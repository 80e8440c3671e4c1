"""The exporter answers bad HTTP with a 4xx -- never a 5xx, never a traceback -- and keeps
serving: malformed request lines, oversized request lines and headers, unknown methods and
paths, each sent over a raw socket to a real exporter (root, 127.0.0.1, unique pin root,
real maps loaded so /healthz is 200)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import SRC

MAXLINE = 65536           # http.server / http.client line limit


@pytest.fixture
def start_exporter(etsf_env, etsf_bpf, build_dir, tmp_path):
    """start(*extra) -> (port, process, log): a root exporter on 127.0.0.1 over real maps."""
    root = etsf_env["ETSF_PIN_ROOT"]
    progs = etsf_bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), root)
    procs = []

    def start(*extra):
        d = tmp_path / f"exp{len(procs)}"
        d.mkdir()
        ready, log = d / "port", d / "log"
        env = dict(os.environ, PYTHONPATH=str(SRC), ETSF_PIN_ROOT=root)
        with open(log, "wb") as fh:
            p = subprocess.Popen([sys.executable, "-m", "etsf", "exporter", "--listen", "127.0.0.1",
                                  "--port", "0", "--sample-interval", "600", "--max-seconds", "240",
                                  "--ready-file", str(ready), *extra],
                                 stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(p)
        for _attempt in range(200):              # bounded wait for the listening socket
            if ready.exists() and ready.read_text().strip() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists() and ready.read_text().strip(), log.read_text()
        return int(ready.read_text()), p, log

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
    for prog in progs.values():
        prog.close()


@pytest.fixture
def exporter(start_exporter):
    return start_exporter()


def _exchange(port: int, data: bytes) -> bytes:
    """Send data, read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def _status(reply: bytes, what: str = "") -> int:
    line = reply.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), (what, reply[:200])
    return int(line.split()[1])


BAD = [
    # malformed request lines
    ("garbage line", b"GARBAGE\r\n\r\n", 400),
    ("binary method", b"\x00\xff\xfe\x16\x03\x01 / HTTP/1.1\r\n\r\n", 405),
    ("four words", b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
    ("bad version", b"GET /metrics HTTP/x.y\r\n\r\n", 400),
    ("version 2", b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    ("version 9.9", b"GET /metrics HTTP/9.9\r\n\r\n", 400),
    ("HTTP/0.9 style", b"GET /metrics\r\n\r\n", 400),
    ("unknown method on HTTP/0.9", b"POST /metrics\r\n", 400),
    ("TLS hello to the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    # oversized: exactly the bytes the server reads before it refuses (no unread data -> no RST)
    ("request line too long", b"GET /" + b"a" * (MAXLINE + 1 - 5), 414),
    ("header line too long", b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (MAXLINE + 1 - 7), 431),
    ("too many headers", b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101)), 431),
    # unknown methods
    ("POST", b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    ("PUT", b"PUT /metrics HTTP/1.1\r\n\r\n", 405),
    ("DELETE", b"DELETE / HTTP/1.1\r\n\r\n", 405),
    ("OPTIONS", b"OPTIONS * HTTP/1.1\r\n\r\n", 405),
    ("made-up method", b"BREW /pot HTTP/1.1\r\n\r\n", 405),
    ("CONNECT", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 405),
    # unknown paths
    ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n", 404),
    ("path traversal", b"GET /metrics/../../etc/passwd HTTP/1.1\r\n\r\n", 404),
    ("absolute URI", b"GET http://127.0.0.1/x HTTP/1.1\r\n\r\n", 404),
    ("percent junk", b"GET /%ff%00%zz HTTP/1.1\r\n\r\n", 404),
    ("asterisk", b"GET * HTTP/1.1\r\n\r\n", 404),
    ("HEAD unknown path", b"HEAD /nope HTTP/1.0\r\n\r\n", 404),
]


def test_bad_requests_get_4xx_and_the_exporter_keeps_serving(exporter):
    port, proc, log = exporter
    seen = {}
    for name, data, want in BAD:
        reply = _exchange(port, data)
        code = _status(reply, name)
        seen[name] = code
        assert code == want, (name, reply[:300])
        head = reply.split(b"\r\n\r\n", 1)[0]
        if code == 405:
            assert b"\r\nAllow: GET, HEAD" in head, (name, head)
        assert b"Traceback" not in reply
    assert all(400 <= c < 500 for c in seen.values()), seen
    # still serving, and healthy
    assert _status(_exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200
    reply = _exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert _status(reply) == 200 and b"etsf_" in reply
    assert proc.poll() is None
    text = log.read_text()
    assert "Traceback" not in text, text


def test_client_gone_mid_request_is_one_log_line(exporter):
    """A client that resets the connection: no traceback in the log, the server serves on."""
    port, proc, log = exporter
    for _i in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert _status(_exchange(port, b"GET / HTTP/1.0\r\n\r\n")) == 200
    assert proc.poll() is None
    assert "Traceback" not in log.read_text()


def test_malformed_authorization_is_401(start_exporter, tmp_path):
    from etsf.exporter import hash_password
    users = tmp_path / "users"
    users.write_text("ops:" + hash_password("s3cret", iterations=1000) + "\n")
    port, proc, log = start_exporter("--basic-auth-file", str(users))
    good = base64.b64encode(b"ops:s3cret")
    cases = [b"", b"Authorization: Basic\r\n", b"Authorization: Basic !!!!\r\n",
             b"Authorization: Basic " + base64.b64encode(b"nocolon") + b"\r\n",
             b"Authorization: Basic " + base64.b64encode(b"ops:wrong") + b"\r\n",
             b"Authorization: Basic " + base64.b64encode(b"\xff\xfe:\x00") + b"\r\n",
             b"Authorization: Basic \xe9\xe9\xe9\r\n",
             b"Authorization: Bearer " + good + b"\r\n",
             b"Authorization: basic " + good + b"\r\n",
             b"Authorization: Basic " + b"A" * 60000 + b"\r\n"]
    for hdr in cases:
        reply = _exchange(port, b"GET /metrics HTTP/1.1\r\n" + hdr + b"\r\n")
        assert _status(reply, repr(hdr[:40])) == 401, hdr[:60]
        assert b'WWW-Authenticate: Basic realm="etsf-exporter"' in reply
    reply = _exchange(port, b"GET /metrics HTTP/1.1\r\nAuthorization: Basic " + good + b"\r\n\r\n")
    assert _status(reply) == 200
    assert proc.poll() is None and "Traceback" not in log.read_text()


def _get(port: int, cred: bytes | None, source: str = "127.0.0.1", path: str = "/metrics") -> tuple[int, bytes]:
    """One GET over a new connection from `source` (any 127/8 address is local)."""
    auth = b"" if cred is None else b"Authorization: Basic " + base64.b64encode(cred) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0)) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n" + auth + b"\r\n")
        chunks = []
        while b := s.recv(65536):
            chunks.append(b)
    reply = b"".join(chunks)
    return _status(reply), reply.split(b"\r\n\r\n", 1)[-1]


def _counter(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_wrong_password_flood_costs_a_bounded_number_of_hashes(start_exporter, tmp_path):
    """500 requests, each with a new wrong password, from one source: the exporter computes
    at most the budget's hashes (counted by etsf_exporter_auth_hashes_total), refuses the rest
    with 429 before hashing, and a correct scrape succeeds throughout -- from the cache for a
    client verified before, and with a first hash for a client from another source."""
    from etsf.exporter import bcrypt_hash
    from etsf.telemetry import auth
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n"
                   f"  ops: '{bcrypt_hash('s3cret', 10)}'\n"
                   f"  prom: '{bcrypt_hash('other', 10)}'\n")
    t0 = time.monotonic()                    # before the exporter's buckets exist
    port, proc, log = start_exporter("--web.config.file", str(web))
    assert _get(port, b"ops:s3cret")[0] == 200          # first login: one hash
    assert _get(port, None)[0] == 401
    codes = {401: 0, 429: 0}
    for i in range(500):
        code = _get(port, b"ops:wrong-%d" % i)[0]
        codes[code] += 1
        if i % 100 == 99:                              # during the attack: served from the cache
            assert _get(port, b"ops:s3cret")[0] == 200
    assert codes[401] + codes[429] == 500, codes
    # a client never seen before, from another address, still gets its first hash
    assert _get(port, b"prom:other", source="127.0.0.2")[0] == 200
    # the same wrong password again is answered from the cache of refused pairs: no hash
    body = _get(port, b"ops:s3cret")[1]
    hashes = _counter(body, "etsf_exporter_auth_hashes_total")
    assert _get(port, b"ops:wrong-0")[0] in (401, 429)
    body = _get(port, b"ops:s3cret")[1]
    elapsed = time.monotonic() - t0
    assert _counter(body, "etsf_exporter_auth_hashes_total") == hashes
    # by count: every request over the budget was refused without a hash ...
    assert _counter(body, 'etsf_exporter_auth_rejected_without_hash_total{reason="budget"}') >= codes[429]
    assert hashes == 2 + codes[401]                     # the two logins + each 401 of the flood
    # ... and the hashes stay within the design bound: per source, and globally
    assert hashes - 1 <= auth.SOURCE_BURST + auth.SOURCE_RATE * elapsed, (hashes, elapsed)
    assert hashes <= auth.GLOBAL_BURST + auth.GLOBAL_RATE * elapsed, (hashes, elapsed)
    assert codes[429] >= 500 - (auth.SOURCE_BURST + auth.SOURCE_RATE * elapsed)
    print(f"flood: {codes[401]} x 401, {codes[429]} x 429; hashes {hashes:g} over {elapsed:.1f} s "
          f"(bound {auth.GLOBAL_BURST} + {auth.GLOBAL_RATE:g}/s = {auth.GLOBAL_BURST + auth.GLOBAL_RATE * elapsed:.1f})")
    assert proc.poll() is None and "Traceback" not in log.read_text()
