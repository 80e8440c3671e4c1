"""The /metrics and /healthz HTTP server: listen address, TLS, basic auth, heartbeat file."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import inputs
from ..paths import mark_heartbeat_stopped, pin_root, resume_heartbeat, write_heartbeat
from ..sdnotify import sd_notify
from .reader import DEFAULT_PORT, DEFAULT_WINDOW, ExporterError, open_counted
from .collector import EtsfCollector
from .auth import BCRYPT_PASSWORD_MAX, Authenticator, verify
from . import webconfig


def _bpf():
    from .. import bpf
    return bpf


# ---------------------------------------------------------------------------
# HTTP: /metrics, /healthz; optional TLS and basic auth
# ---------------------------------------------------------------------------

PBKDF2_ITERATIONS = 200_000
PBKDF2_MAX_ITERATIONS = 2_000_000
PASSWORD_MAX = 1024
BCRYPT_COST = 10


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """'pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>' for the older --basic-auth-file."""
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(dk).decode()}")


def bcrypt_hash(password: str, cost: int = BCRYPT_COST) -> str:
    """'$2b$<cost>$...' for basic_auth_users of the web configuration."""
    import bcrypt  # pylint: disable=import-outside-toplevel
    pw = password.encode()
    if len(pw) > BCRYPT_PASSWORD_MAX or b"\0" in pw:
        raise ExporterError(f"password: at most {BCRYPT_PASSWORD_MAX} bytes without NUL expected "
                            f"(got {len(pw)} bytes)")
    return bcrypt.hashpw(pw, bcrypt.gensalt(cost, prefix=b"2b")).decode()


def check_password(password: str, encoded: str) -> bool:
    """One hash computation, bcrypt or PBKDF2 (no budget: the server goes through Authenticator)."""
    return verify(password, encoded)


def load_users(path: str) -> dict[str, str]:
    """'user:pbkdf2_sha256$...' lines; '#' comments and blank lines ignored."""
    users = {}
    try:
        text = inputs.read_text(path, "basic auth file")
    except UnicodeDecodeError:
        raise ExporterError(f"{path}: not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, enc = line.partition(":")
        if not sep or not user or not enc.startswith("pbkdf2_sha256$"):
            raise ExporterError(f"{path}:{n}: expected 'user:pbkdf2_sha256$...'")
        parts = enc.split("$")
        # every request pays the iteration count: an absurd one is a denial of service
        if len(parts) != 4 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= PBKDF2_MAX_ITERATIONS:
            raise ExporterError(f"{path}:{n}: expected 'user:pbkdf2_sha256$ITERATIONS$SALT$HASH' "
                                f"with ITERATIONS in 1..{PBKDF2_MAX_ITERATIONS}")
        users[user] = enc
    if not users:
        raise ExporterError(f"{path}: no users")
    return users


class _Handler(BaseHTTPRequestHandler):
    server_version = "etsf-exporter"
    sys_version = ""
    timeout = 15            # seconds per connection (TLS handshake, request line, headers)

    def log_message(self, fmt, *args):  # quiet: journald gets errors only
        pass

    def parse_request(self):
        ok = super().parse_request()
        if ok and self.request_version == "HTTP/0.9":
            # a bare "GET /path" would get a body without status line or headers
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported")
            return False
        return ok

    def send_error(self, code, message=None, explain=None):
        """Every error reply: status line, short text body, connection closed. A bad
        request is the client's mistake, so never a 5xx: an unknown method is 405 with
        Allow (not 501), an HTTP version other than 1.x is 400 (not 505)."""
        extra = [("Connection", "close")]
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code = HTTPStatus.METHOD_NOT_ALLOWED
            extra.append(("Allow", "GET, HEAD"))
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:     # "GET / HTTP/2.0" over HTTP/1
            code = HTTPStatus.BAD_REQUEST
        code = HTTPStatus(code)
        if self.request_version == "HTTP/0.9":      # also the default before a request line parsed
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        text = f"{int(code)} {code.phrase}" + (f": {message}" if message and message != code.phrase else "")
        self._send(code, (text.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace"),
                   extra=extra)

    def _send(self, code, body: bytes, ctype="text/plain; charset=utf-8", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> int:
        """200, or the status refusing the request (401, 429 over the hash budget)."""
        auth = self.server.auth
        if auth is None:
            return 200
        user = pw = None
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic "):
            try:
                user, sep, pw = base64.b64decode(h[6:], validate=True).decode().partition(":")
                if not sep:
                    user = pw = None
            except (ValueError, UnicodeDecodeError):
                user = pw = None
        return auth.check(user, pw, self.client_address[0])

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?", 1)[0]
        status = self._authorized()
        if status == 429:
            # a new password over the hash budget: refused before any hash is computed
            self.close_connection = True
            self._send(429, b"too many authentication attempts\n",
                       extra=[("Retry-After", "2"), ("Connection", "close")])
            return
        if status != 200:
            self._send(401, b"unauthorized\n", extra=[("WWW-Authenticate",
                                                       'Basic realm="etsf-exporter"')])
            return
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            body = generate_latest(self.server.registry)
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, why = self.server.health()
            self._send(200 if ok else 503, (why + "\n").encode())
        elif path == "/":
            self._send(200, b"etsf exporter: /metrics /healthz\n")
        else:
            self._send(404, b"not found\n")

    do_HEAD = do_GET


def parse_listen(text: str, port: int | None = None) -> tuple[str, int]:
    """(address, port) from 'HOST:PORT', '[IPV6]:PORT' or ':PORT' (every address), as every
    Prometheus exporter takes it, or from a bare IP address and `port`."""
    import ipaddress  # pylint: disable=import-outside-toplevel
    want = "HOST:PORT, [IPV6]:PORT, :PORT or an IP address expected"
    if "%" in text:
        raise ValueError(f"{want}, without an IPv6 scope (got {text!r})")
    try:
        return str(ipaddress.ip_address(text)), DEFAULT_PORT if port is None else port
    except ValueError:
        pass
    host, sep, p = text.rpartition(":")
    if not sep or not p.isdigit() or not 0 <= int(p) <= 65535 or len(p) > 5:
        raise ValueError(f"{want} (got {text!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok_family = 6
    else:
        ok_family = 4
    if not host:
        addr = "::" if socket.has_ipv6 else "0.0.0.0"
    else:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{want} (got {text!r})") from None
        if ip.version != ok_family:
            raise ValueError(f"{want}, brackets around IPv6 addresses only (got {text!r})")
        addr = str(ip)
    if port is not None and port != int(p):
        raise ValueError(f"the port of --port {port} expected, or --port left out (got {text!r})")
    return addr, int(p)


class _MetricsOf:  # pylint: disable=too-few-public-methods
    """prometheus_client collector of an object's own metrics() (the authenticator's and the TLS
    reloader's counters)."""

    def __init__(self, obj):
        self.obj = obj

    def describe(self):
        return []

    def collect(self):
        yield from self.obj.metrics()


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, collector: EtsfCollector, auth: Authenticator | None = None,
                 tls: webconfig.ReloadingTls | None = None):
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, _Handler)
        from prometheus_client import CollectorRegistry
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.collector = collector
        self.auth = auth
        if auth is not None:
            self.registry.register(_MetricsOf(auth))
        self.tls = tls
        if tls is not None:
            self.registry.register(_MetricsOf(tls))

    def get_request(self):
        conn, addr = super().get_request()
        if self.tls is not None:
            # the context of the files on disk now (a renewed certificate needs no restart); the
            # handshake happens in the per-connection thread (first read), not in accept(): a
            # silent client cannot stall the accept loop
            try:
                conn = self.tls.current().wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except Exception as e:  # noqa: BLE001 - socketserver drops a connection on OSError only
                conn.close()
                raise OSError(f"TLS wrap: {e}") from e
        return conn, addr

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            # ':PORT' binds '::' for IPv4 and IPv6 alike, whatever net.ipv6.bindv6only says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                   0 if self.server_address[0] == "::" else 1)
        super().server_bind()

    def handle_error(self, request, client_address):
        """A connection that failed (client gone, TLS handshake refused, ...): one line on
        stderr instead of socketserver's traceback; the server keeps serving."""
        exc = sys.exc_info()[1]
        sys.stderr.write(f"etsf-exporter: request from {client_address[0]} failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n")

    def health(self) -> tuple[bool, str]:
        bpf = _bpf()
        try:
            with bpf.open_map("etsf_ctl", self.collector.root, read_only=True) as m:
                m.lookup(bytes(4))
        except (OSError, bpf.BpfError) as e:
            return False, f"maps not readable: {e}"
        return True, "ok"


def check_ctl_readable(root: str | None = None) -> None:
    """One open + one lookup of the control map: the heartbeat's liveness probe (a full
    snapshot would cost every map's batch reads every heartbeat interval)."""
    m = open_counted("etsf_ctl", root or pin_root(), {"maps_opened": 0})
    try:
        if m.lookup(bytes(4)) is None:
            raise ExporterError("etsf_ctl: no entry")
    finally:
        m.close()


def _auth_and_tls(web_config_file, basic_auth_file, tls_cert, tls_key):
    """(Authenticator or None, SSLContext or None) from the web configuration or the
    older --basic-auth-file / --tls-cert / --tls-key (not both ways at once)."""
    if bool(tls_cert) != bool(tls_key):
        raise ExporterError("--tls-cert and --tls-key go together")
    if web_config_file and (basic_auth_file or tls_cert):
        raise ExporterError("--web.config.file replaces --basic-auth-file, --tls-cert and --tls-key: "
                            "give one or the other")
    if web_config_file:
        wc = webconfig.load(web_config_file)
        users, tls = wc.users, wc.tls
    else:
        users = load_users(basic_auth_file) if basic_auth_file else {}
        tls = {"cert_file": tls_cert, "key_file": tls_key, "client_auth_type": "NoClientCert",
               "client_ca_file": "", "min_version": "TLS12", "max_version": "TLS13"} if tls_cert else None
    if users:
        try:
            import bcrypt  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            if any(not h.startswith("pbkdf2_sha256$") for h in users.values()):
                raise ExporterError("basic_auth_users: the bcrypt module expected (got none; "
                                    "install python3-bcrypt)") from None
    ctx = webconfig.ReloadingTls(tls) if tls else None
    return (Authenticator(users) if users else None), ctx


def check_config(listen: str = "127.0.0.1", port: int | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, basic_auth_file: str | None = None,
                 web_config_file: str | None = None) -> None:
    """What serve() checks before it listens (ExporterError naming the first problem)."""
    try:
        parse_listen(listen, port)
    except ValueError as e:
        raise ExporterError(f"--listen: {e}") from None
    _auth_and_tls(web_config_file, basic_auth_file, tls_cert, tls_key)


def serve(listen: str = "127.0.0.1", port: int | None = None, window: float = DEFAULT_WINDOW,
          sample_interval: float = 15.0, tls_cert: str | None = None, tls_key: str | None = None,
          basic_auth_file: str | None = None, root: str | None = None,
          max_seconds: float | None = None, ready_file: str | None = None,
          heartbeat_file: str | None = None, heartbeat_interval: float = 5.0,
          web_config_file: str | None = None) -> None:
    """Run until SIGTERM/SIGINT (or max_seconds).  A sampler thread feeds the KPI
    window every sample_interval seconds (bounded ring, see kpi.Window).  With
    heartbeat_file, a heartbeat thread reads the maps every heartbeat_interval seconds and,
    when that works, rewrites the file: the fail-safe watchdog's heartbeat rule watches its
    age ("exporter not heartbeating")."""
    # first of all, before anything that can fail: a start that dies lets the heartbeat age
    resume_heartbeat(heartbeat_file)
    try:
        addr = parse_listen(listen, port)
    except ValueError as e:
        raise ExporterError(f"--listen: {e}") from None
    if sample_interval <= 0:
        raise ExporterError("--sample-interval must be > 0")
    if heartbeat_interval <= 0:
        raise ExporterError("--heartbeat-interval must be > 0")
    if heartbeat_file and not os.path.isdir(os.path.dirname(os.path.abspath(heartbeat_file))):
        raise ExporterError(f"--heartbeat-file: directory of {heartbeat_file} does not exist")
    auth, tls = _auth_and_tls(web_config_file, basic_auth_file, tls_cert, tls_key)
    collector = EtsfCollector(root=root, window=window)
    try:
        collector.sample()                      # KPI baseline = exporter start
    except Exception as e:  # noqa: BLE001 - maps may appear later
        sys.stderr.write(f"etsf-exporter: first sample failed: {e}\n")
    try:
        srv = ExporterServer(addr, collector, auth, tls)
    except OSError as e:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        raise ExporterError(f"cannot listen on {host}:{addr[1]}: {e.strerror or e}") from None
    stop = threading.Event()

    def sampler():
        while not stop.wait(sample_interval):
            try:
                with collector._lock:          # noqa: SLF001 - same module
                    collector.sample()
            except Exception:  # noqa: BLE001 - keep sampling
                collector.scrape_errors += 1

    threading.Thread(target=sampler, name="kpi-sampler", daemon=True).start()
    hb_thread = None
    if heartbeat_file:
        def heartbeat():
            while True:
                try:
                    check_ctl_readable(root)           # the maps are readable: alive
                    write_heartbeat(heartbeat_file)
                except Exception as e:  # noqa: BLE001 - a stale heartbeat is the signal
                    sys.stderr.write(f"etsf-exporter: heartbeat skipped: {e}\n")
                if stop.wait(heartbeat_interval):
                    return
        hb_thread = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
        hb_thread.start()
    import signal
    signal.signal(signal.SIGTERM, lambda *_args: threading.Thread(target=srv.shutdown).start())
    timer = None
    if max_seconds:
        timer = threading.Timer(float(max_seconds), srv.shutdown)
        timer.daemon = True                  # SIGTERM must not wait for it
        timer.start()
    if ready_file:
        with open(ready_file, "w", encoding="ascii") as f:
            f.write(f"{srv.server_address[1]}\n")
    sd_notify("READY=1", "etsf-exporter")    # Type=notify: `systemctl start` returns now, not before
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        srv.server_close()
    if hb_thread is not None:
        # a clean shutdown (SIGTERM, --max-seconds): stopped on purpose, which the fail-safe's
        # heartbeat rule does not call stale; the last live write must not come after this one
        hb_thread.join(timeout=10)
        mark_heartbeat_stopped(heartbeat_file)
