"""``etsf.exporter`` -- Prometheus exporter for the eTSF data path.

Reads the pinned maps (read-only, ``BPF_F_RDONLY``) and the pinned programs
under ``$ETSF_PIN_ROOT`` on every scrape and serves ``/metrics`` and
``/healthz`` (optional TLS and HTTP basic auth).  Every metric is listed in
docs/telemetry.md.

Cost of a scrape is bounded and independent of traffic: every array / hash
map is read with ``BPF_MAP_LOOKUP_BATCH`` (ceil(entries / 4096) + 1 calls per
map), never one syscall per entry; LPM tries (ACLs) are not walked.

Privileges: runs as an unprivileged user with only CAP_BPF (needed because
``kernel.unprivileged_bpf_disabled`` is set); read permission on the map pins
and read+write on the program pins (BPF_OBJ_GET of a program needs O_RDWR)
are granted to the exporter's group by ``etsfctl telemetry grant``.  No
CAP_SYS_ADMIN: programs are opened through their pins, never by id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import socket
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import inputs
from . import kpi as _kpi
from . import layout as L

NS_PER_S = 1e9
#: histogram bucket upper bounds in seconds: 2^b microseconds, b = 0..30 (+Inf = slot 31)
BUCKET_BOUNDS = tuple((1 << b) / 1e6 for b in range(L.TM_BUCKETS - 1))
STAGE_LABEL = {L.TmStage.TRYING: "trying", L.TmStage.RINGING: "ringing",
               L.TmStage.FINAL_2XX: "final_2xx", L.TmStage.FINAL_3XX: "final_3xx",
               L.TmStage.FINAL_4XX: "final_4xx", L.TmStage.FINAL_5XX: "final_5xx",
               L.TmStage.FINAL_6XX: "final_6xx"}
#: maps whose occupancy is exported (read with batch lookups)
OCCUPANCY_MAPS = ("etsf_rl", "etsf_tm_txn", "etsf_ifstats", "etsf_tm_ifcfg")
DEFAULT_PORT = 9761
DEFAULT_WINDOW = 300.0


class ExporterError(ValueError):
    """A user-facing exporter failure (one line; etsfctl reports ValueError as such)."""


def _bpf():
    from . import bpf
    return bpf


def pin_root() -> str:
    return os.environ.get("ETSF_PIN_ROOT") or _bpf().PIN_ROOT


def _enum(cls, v: int) -> str:
    try:
        return cls(v).name
    except ValueError:
        return str(v)


def _u64(b: bytes) -> int:
    return int.from_bytes(b[:8], "little")


# ---------------------------------------------------------------------------
# snapshot: one read of every map (the exporter, `etsfctl top` and the tests use it)
# ---------------------------------------------------------------------------


class Snapshot(dict):
    """Plain dict: t, stats, interfaces, hist, codes, events, ctl, programs, maps, cost."""


def _open(name: str, root: str, cost: dict):
    bpf = _bpf()
    m = bpf.open_map(name, root, read_only=True)
    cost["maps_opened"] += 1
    return m


def _items(m, cost: dict):
    rows = m.items_percpu()
    cost["batch_calls"] += getattr(m, "last_batch_calls", 0) or 0
    cost["entries_read"] += len(rows)
    return rows


def snapshot(root: str | None = None, programs: bool = True) -> Snapshot:
    """Read counters, histograms, response codes, control state, program
    stats and map occupancy.  Missing maps (older objects) are skipped and
    listed in snap['missing']."""
    bpf = _bpf()
    root = root or pin_root()
    t0 = time.perf_counter()
    cost = {"maps_opened": 0, "batch_calls": 0, "entries_read": 0, "lookups": 0}
    snap = Snapshot(t=time.time(), mono=time.monotonic(), missing=[], stats=[], interfaces={},
                    hist={}, codes={}, events={}, ctl=None, programs={}, maps={}, cost=cost)

    def read(name, fn):
        try:
            m = _open(name, root, cost)
        except (OSError, bpf.BpfError):
            snap["missing"].append(name)
            return
        try:
            fn(m)
        finally:
            m.close()

    def stats(m):
        for k, vals in _items(m, cost):
            pk = by = 0
            for v in vals:
                c = L.Counter.from_bytes(v)
                pk += c.packets
                by += c.bytes
            if pk or by:
                h, me, v, r = L.stats_unidx(int.from_bytes(k[:4], "little"))
                snap["stats"].append((_enum(L.Hook, h), _enum(L.Method, me),
                                      _enum(L.Verdict, v), _enum(L.Reason, r), pk, by))

    def ifstats(m):
        for k, vals in _items(m, cost):
            idx = int.from_bytes(k[:4], "little")
            tot = {f[0]: 0 for f in L.IfStat._fields_}
            for v in vals:
                s = L.IfStat.from_bytes(v)
                for f in tot:
                    tot[f] += getattr(s, f)
            try:
                name = socket.if_indextoname(idx)
            except OSError:
                name = f"ifindex{idx}"
            snap["interfaces"][name] = {"ifindex": idx, **tot}

    def hist(m):
        for k, vals in _items(m, cost):
            idx = int.from_bytes(k[:4], "little")
            count = total = 0
            slots = [0] * L.TM_BUCKETS
            for v in vals:
                h = L.TmHist.from_bytes(v)
                count += h.count
                total += h.sum_ns
                for i in range(L.TM_BUCKETS):
                    slots[i] += h.slot[i]
            if count:
                me, st = divmod(idx, L.TM_STAGES)
                snap["hist"][(_enum(L.Method, me), STAGE_LABEL.get(st, str(st)))] = {
                    "count": count, "sum_ns": total, "slots": slots}

    def codes(m):
        for k, vals in _items(m, cost):
            n = sum(_u64(v) for v in vals)
            if n:
                idx = int.from_bytes(k[:4], "little")
                mi, off = divmod(idx, L.TM_CODES)
                snap["codes"][("INVITE" if mi == 0 else "REGISTER", L.TM_CODE_MIN + off)] = n

    def events(m):
        for k, vals in _items(m, cost):
            snap["events"][_enum(L.TmEvent, int.from_bytes(k[:4], "little"))] = sum(
                _u64(v) for v in vals)

    def ctl(m):
        raw = m.lookup(bytes(4))
        cost["lookups"] += 1
        if raw:
            c = L.Ctl.from_bytes(raw)
            now = bpf.monotonic_ns()
            hb = int(c.heartbeat_ns)
            age = (now - hb) / NS_PER_S if hb else None
            snap["ctl"] = {
                "bypass": int(c.bypass), "overload_level": int(c.overload_level),
                "active_slot": int(c.active_slot), "generation": int(c.generation),
                "deadman_s": int(c.deadman_ns) / NS_PER_S, "heartbeat_age_s": age,
                # the kernel's rule (etsf_failsafe): unsigned now - heartbeat > deadman
                "deadman_tripped": int(bool(c.deadman_ns) and
                                       ((now - hb) & ((1 << 64) - 1)) > int(c.deadman_ns)),
            }

    def occupancy(name):
        def fn(m):
            rows = _items(m, cost)
            snap["maps"][name] = {"entries": len(rows), "max_entries": m.max_entries}
        return fn

    read("etsf_stats", stats)
    read("etsf_ifstats", ifstats)
    read("etsf_tm_hist", hist)
    read("etsf_tm_codes", codes)
    read("etsf_tm_events", events)
    read("etsf_ctl", ctl)
    for name in OCCUPANCY_MAPS:
        if name == "etsf_ifstats":
            snap["maps"][name] = {"entries": len(snap["interfaces"]), "max_entries": L.IF_MAX}
            continue
        read(name, occupancy(name))
    if programs:
        pdir = os.path.join(root, "progs")
        try:
            names = sorted(os.listdir(pdir))
        except OSError:
            names = []
        for n in names:
            try:
                snap["programs"][n] = bpf.prog_info_pinned(os.path.join(pdir, n))
            except (OSError, bpf.BpfError) as e:
                snap["programs"][n] = {"error": str(e)}
        snap["bpf_stats_enabled"] = bpf.bpf_stats_enabled()
    cost["seconds"] = time.perf_counter() - t0
    return snap


def invite_codes(snap: Snapshot) -> dict[int, int]:
    return {c: n for (m, c), n in snap["codes"].items() if m == "INVITE"}


def quantile(q: float, slots: list[int]) -> float | None:
    """Quantile (seconds) from log2 slots, linear within a bucket (as PromQL's
    histogram_quantile); the open last bucket reports its lower bound."""
    total = sum(slots)
    if not total:
        return None
    rank = q * total
    cum = 0
    for b, n in enumerate(slots):
        if n and cum + n >= rank:
            lo = 0.0 if b == 0 else (1 << (b - 1)) / 1e6
            if b >= len(BUCKET_BOUNDS):
                return lo
            hi = BUCKET_BOUNDS[b]
            return lo + (hi - lo) * ((rank - cum) / n)
        cum += n
    return None


# ---------------------------------------------------------------------------
# Prometheus collector
# ---------------------------------------------------------------------------


class EtsfCollector:
    """prometheus_client custom collector: one snapshot per scrape (serialised)."""

    def __init__(self, root: str | None = None, window: float = DEFAULT_WINDOW):
        self.root = root or pin_root()
        self.window = _kpi.Window(window)
        self._lock = threading.Lock()
        self.last_cost: dict[str, Any] = {}
        self.scrape_errors = 0

    def sample(self) -> Snapshot:
        """Take a snapshot and feed the KPI window (also called by the sampler)."""
        snap = snapshot(self.root)
        self.window.add(snap["mono"], invite_codes(snap))
        return snap

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        with self._lock:
            try:
                snap = snapshot(self.root)
            except Exception:  # noqa: BLE001 - never fail a scrape completely
                self.scrape_errors += 1
                up = GaugeMetricFamily("etsf_up", "1 when the eTSF maps could be read")
                up.add_metric([], 0)
                yield up
                return
            k = self.window.kpis(snap["mono"], invite_codes(snap))
            self.window.add(snap["mono"], invite_codes(snap))
            self.last_cost = dict(snap["cost"])

        up = GaugeMetricFamily("etsf_up", "1 when the eTSF maps could be read")
        up.add_metric([], 0 if "etsf_stats" in snap["missing"] else 1)
        yield up

        lbl = ["hook", "method", "verdict", "reason"]
        pk = CounterMetricFamily("etsf_sip_packets", "Packets seen by the eTSF programs, by "
                                 "hook, SIP method, verdict and reason", labels=lbl)
        by = CounterMetricFamily("etsf_sip_bytes", "Frame bytes seen by the eTSF programs, by "
                                 "hook, SIP method, verdict and reason", labels=lbl)
        for h, m, v, r, p, b in snap["stats"]:
            pk.add_metric([h.lower(), m, v.lower(), r.lower()], p)
            by.add_metric([h.lower(), m, v.lower(), r.lower()], b)
        yield pk
        yield by

        ifm = {
            "rx_packets": ("etsf_interface_rx_packets", "Packets seen at XDP ingress"),
            "rx_bytes": ("etsf_interface_rx_bytes", "Bytes seen at XDP ingress"),
            "sip_packets": ("etsf_interface_sip_packets", "Packets classified as SIP at XDP"),
            "dropped": ("etsf_interface_dropped_packets", "Packets dropped at XDP by policy"),
            "tx_marked": ("etsf_interface_tx_marked_packets", "Packets marked at TC egress"),
            "tx_bytes": ("etsf_interface_tx_marked_bytes", "Bytes marked at TC egress"),
        }
        # iface: name in the exporter's network namespace ("ifindex<N>" when unknown there)
        fams = {f: CounterMetricFamily(n, h, labels=["iface", "ifindex"])
                for f, (n, h) in ifm.items()}
        for name, row in sorted(snap["interfaces"].items()):
            for f, fam in fams.items():
                fam.add_metric([name, str(row["ifindex"])], row.get(f, 0))
        yield from fams.values()

        hist = HistogramMetricFamily(
            "etsf_sip_transaction_latency_seconds",
            "SIP transaction latency from request to the first response of each stage "
            "(trying = 100, ringing = 180/183, final_Nxx), measured in the kernel",
            labels=["method", "stage"])
        for (m, st), h in sorted(snap["hist"].items()):
            cum, buckets = 0, []
            for b, bound in enumerate(BUCKET_BOUNDS):
                cum += h["slots"][b]
                buckets.append((repr(bound), cum))
            buckets.append(("+Inf", h["count"]))
            hist.add_metric([m, st], buckets, h["sum_ns"] / NS_PER_S)
        yield hist

        resp = CounterMetricFamily("etsf_sip_responses", "SIP responses by request method and "
                                   "code (INVITE, REGISTER; once per transaction)",
                                   labels=["method", "code"])
        for (m, c), n in sorted(snap["codes"].items()):
            resp.add_metric([m, str(c)], n)
        yield resp

        ev = CounterMetricFamily("etsf_sip_transaction_events", "Transaction tracking events "
                                 "(txn_start, req_retrans, resp_matched, resp_retrans, "
                                 "resp_nomatch, txn_full)", labels=["event"])
        for name, n in sorted(snap["events"].items()):
            ev.add_metric([name.lower()], n)
        yield ev

        for key, name, doc in (
                ("ser", "etsf_sip_ser_ratio", "Session Establishment Ratio (RFC 6076 4.6)"),
                ("seer", "etsf_sip_seer_ratio",
                 "Session Establishment Effectiveness Ratio (RFC 6076 4.7)"),
                ("ner", "etsf_sip_ner_ratio", "Network Effectiveness Ratio (ITU-T E.425)"),
                ("asr", "etsf_sip_asr_ratio", "Answer Seizure Ratio (ITU-T E.411)")):
            g = GaugeMetricFamily(name, doc + " over the KPI window; NaN without attempts")
            g.add_metric([], math.nan if k[key] is None else k[key])
            yield g
        g = GaugeMetricFamily("etsf_sip_kpi_attempts", "INVITE transactions with a final "
                              "response in the KPI window")
        g.add_metric([], k["attempts"])
        yield g
        g = GaugeMetricFamily("etsf_sip_kpi_window_seconds", "Time span the KPI gauges cover")
        g.add_metric([], k["window_seconds"])
        yield g

        ctl = snap["ctl"] or {}
        for key, name, doc in (
                ("bypass", "etsf_failsafe_bypass", "1 when the global bypass flag is set"),
                ("deadman_tripped", "etsf_failsafe_deadman_tripped",
                 "1 when the heartbeat is older than the dead-man timeout (programs pass all)"),
                ("deadman_s", "etsf_failsafe_deadman_timeout_seconds",
                 "Dead-man timeout (0 = off)"),
                ("heartbeat_age_s", "etsf_failsafe_heartbeat_age_seconds",
                 "Age of the agent heartbeat"),
                ("overload_level", "etsf_overload_level", "Overload level 0..3"),
                ("generation", "etsf_policy_generation", "Policy generation now live"),
                ("active_slot", "etsf_policy_active_slot", "Active policy slot")):
            if ctl.get(key) is None:
                continue
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], ctl[key])
            yield g

        info = GaugeMetricFamily("etsf_bpf_program_info", "Loaded eTSF program (value 1)",
                                 labels=["program", "id", "tag", "type"])
        runs = CounterMetricFamily("etsf_bpf_program_runs", "Program runs (counted while "
                                   "kernel.bpf_stats_enabled = 1)", labels=["program"])
        rtime = CounterMetricFamily("etsf_bpf_program_run_seconds", "Program run time (counted "
                                    "while kernel.bpf_stats_enabled = 1)", labels=["program"])
        vins = GaugeMetricFamily("etsf_bpf_program_verified_insns", "Instructions the verifier "
                                 "processed (budget 1,000,000)", labels=["program"])
        for n, p in sorted(snap["programs"].items()):
            if "error" in p:
                continue
            info.add_metric([n, str(p["id"]), p["tag"], p["type"]], 1)
            runs.add_metric([n], p["run_cnt"])
            rtime.add_metric([n], p["run_time_ns"] / NS_PER_S)
            vins.add_metric([n], p["verified_insns"])
        yield from (info, runs, rtime, vins)
        g = GaugeMetricFamily("etsf_bpf_stats_enabled", "kernel.bpf_stats_enabled (1 = run "
                              "count / time are collected)")
        g.add_metric([], 1 if snap.get("bpf_stats_enabled") else 0)
        yield g

        ent = GaugeMetricFamily("etsf_bpf_map_entries", "Entries in a map", labels=["map"])
        mx = GaugeMetricFamily("etsf_bpf_map_max_entries", "Capacity of a map", labels=["map"])
        for n, row in sorted(snap["maps"].items()):
            ent.add_metric([n], row["entries"])
            mx.add_metric([n], row["max_entries"])
        yield ent
        yield mx

        cost = snap["cost"]
        g = GaugeMetricFamily("etsf_exporter_scrape_duration_seconds",
                              "Time to read the maps for this scrape")
        g.add_metric([], cost["seconds"])
        yield g
        g = GaugeMetricFamily("etsf_exporter_scrape_bpf_calls",
                              "bpf() map calls of this scrape (batch lookups + single lookups)")
        g.add_metric([], cost["batch_calls"] + cost["lookups"] + cost["maps_opened"])
        yield g
        c = CounterMetricFamily("etsf_exporter_scrape_errors", "Scrapes that failed to read "
                                "the maps")
        c.add_metric([], self.scrape_errors)
        yield c


# ---------------------------------------------------------------------------
# HTTP: /metrics, /healthz; optional TLS and basic auth
# ---------------------------------------------------------------------------

PBKDF2_ITERATIONS = 200_000
PBKDF2_MAX_ITERATIONS = 2_000_000
PASSWORD_MAX = 1024


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """'pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>' for --basic-auth-file."""
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(dk).decode()}")


def check_password(password: str, encoded: str) -> bool:
    try:
        algo, it, salt, want = encoded.split("$")
        if algo != "pbkdf2_sha256":
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(it))
        return hmac.compare_digest(base64.b64encode(dk).decode(), want)
    except (ValueError, TypeError):
        return False


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

    def _authorized(self) -> bool:
        users = self.server.users
        if not users:
            return True
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return False
        try:
            user, _sep, pw = base64.b64decode(h[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        enc = users.get(user)
        return bool(enc) and check_password(pw, enc)

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?", 1)[0]
        if not self._authorized():
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


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, collector: EtsfCollector, users=None, tls=None):
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, _Handler)
        from prometheus_client import CollectorRegistry
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.collector = collector
        self.users = users or {}
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls[0], tls[1])
            # handshake in the per-connection thread (first read), not in accept():
            # a silent client cannot stall the accept loop
            self.socket = ctx.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)

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
    m = _open("etsf_ctl", root or pin_root(), {"maps_opened": 0})
    try:
        if m.lookup(bytes(4)) is None:
            raise ExporterError("etsf_ctl: no entry")
    finally:
        m.close()


def write_heartbeat(path: str) -> None:
    """Atomically replace `path` with {pid, time}; its mtime is the heartbeat."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(json.dumps({"pid": os.getpid(), "time": time.time()}) + "\n")
    os.replace(tmp, path)


def serve(listen: str = "127.0.0.1", port: int = DEFAULT_PORT, window: float = DEFAULT_WINDOW,
          sample_interval: float = 15.0, tls_cert: str | None = None, tls_key: str | None = None,
          basic_auth_file: str | None = None, root: str | None = None,
          max_seconds: float | None = None, ready_file: str | None = None,
          heartbeat_file: str | None = None, heartbeat_interval: float = 5.0) -> None:
    """Run until SIGTERM/SIGINT (or max_seconds).  A sampler thread feeds the KPI
    window every sample_interval seconds (bounded ring, see kpi.Window).  With
    heartbeat_file, a heartbeat thread reads the maps every heartbeat_interval seconds and,
    when that works, rewrites the file: the fail-safe watchdog's heartbeat rule watches its
    age ("exporter not heartbeating")."""
    if bool(tls_cert) != bool(tls_key):
        raise ExporterError("--tls-cert and --tls-key go together")
    if sample_interval <= 0:
        raise ExporterError("--sample-interval must be > 0")
    if heartbeat_interval <= 0:
        raise ExporterError("--heartbeat-interval must be > 0")
    if heartbeat_file and not os.path.isdir(os.path.dirname(os.path.abspath(heartbeat_file))):
        raise ExporterError(f"--heartbeat-file: directory of {heartbeat_file} does not exist")
    users = load_users(basic_auth_file) if basic_auth_file else None
    if tls_cert:
        for f in (tls_cert, tls_key):          # ssl reads them whole: refuse huge files first
            inputs.check_size(f, "TLS file")
    collector = EtsfCollector(root=root, window=window)
    try:
        collector.sample()                      # KPI baseline = exporter start
    except Exception as e:  # noqa: BLE001 - maps may appear later
        sys.stderr.write(f"etsf-exporter: first sample failed: {e}\n")
    try:
        srv = ExporterServer((listen, int(port)), collector, users,
                             (tls_cert, tls_key) if tls_cert else None)
    except (OSError, ssl.SSLError) as e:
        raise ExporterError(f"cannot listen on {listen}:{port}: {e}") from None
    stop = threading.Event()

    def sampler():
        while not stop.wait(sample_interval):
            try:
                with collector._lock:          # noqa: SLF001 - same module
                    collector.sample()
            except Exception:  # noqa: BLE001 - keep sampling
                collector.scrape_errors += 1

    threading.Thread(target=sampler, name="kpi-sampler", daemon=True).start()
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
        threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
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
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        srv.server_close()


# ---------------------------------------------------------------------------
# telemetry control (root): direction per interface, pin permissions
# ---------------------------------------------------------------------------


def set_direction(iface: str | None, direction: str, root: str | None = None) -> dict:
    """Where requests are seen on iface (None = the default for every interface)."""
    bpf = _bpf()
    try:
        d = L.TmDir[direction.upper()]
    except KeyError:
        raise ExporterError(f"direction must be toward, from or off (got {direction!r})") from None
    if iface is None:
        idx = 0
    else:
        try:
            idx = socket.if_nametoindex(iface)
        except OSError:
            raise ExporterError(f"interface {iface!r} does not exist") from None
    key = idx.to_bytes(4, "little")
    try:
        m = bpf.open_map("etsf_tm_ifcfg", root or pin_root())
    except (OSError, bpf.BpfError) as e:
        raise ExporterError(f"etsf_tm_ifcfg not pinned (attach first): {e}") from None
    with m:
        old = m.lookup(key)
        oldd = L.TmIfCfg.from_bytes(old).dir if old else None
        m.update(key, bytes(L.TmIfCfg(dir=int(d))))
    return {"changed": oldd != int(d), "iface": iface or "default", "ifindex": idx,
            "direction": d.name.lower(),
            "previous": None if oldd is None else _enum(L.TmDir, oldd).lower()}


def grant(group: str, root: str | None = None, programs: bool = True) -> dict:
    """Let members of group read the pins: directories 0750, map pins 0640 (read
    is enough with BPF_F_RDONLY), program pins 0660 (BPF_OBJ_GET of a program
    requires O_RDWR).  Owner stays root.  Idempotent; reports what changed."""
    import grp
    try:
        gid = grp.getgrnam(group).gr_gid if not str(group).isdigit() else int(group)
    except KeyError:
        raise ExporterError(f"group {group!r} does not exist") from None
    root = root or pin_root()
    if not os.path.isdir(root):
        raise ExporterError(f"{root} does not exist (attach first)")
    changed = []

    def fix(path, mode):
        st = os.lstat(path)
        if st.st_gid != gid or (st.st_mode & 0o7777) != mode:
            os.chown(path, -1, gid)
            os.chmod(path, mode)
            changed.append(path)

    fix(root, 0o750)
    for sub, mode in (("maps", 0o640), ("progs", 0o660)):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        fix(d, 0o750)
        if sub == "progs" and not programs:
            continue
        for n in sorted(os.listdir(d)):
            fix(os.path.join(d, n), mode)
    return {"changed": bool(changed), "group": group, "gid": gid, "paths": changed}


# ---------------------------------------------------------------------------
# CLI (wired into etsfctl by cli.build_parser)
# ---------------------------------------------------------------------------


def _cmd_exporter(args):
    if args.hash_password:
        line = sys.stdin.readline(PASSWORD_MAX + 2)         # bounded: stdin may be anything
        pw = line.rstrip("\n")
        if not pw:
            raise ExporterError("empty password on stdin")
        if len(pw) > PASSWORD_MAX:
            raise ExporterError(f"password on stdin longer than {PASSWORD_MAX} characters")
        print(hash_password(pw))
        return
    serve(listen=args.listen, port=args.port, window=args.window,
          sample_interval=args.sample_interval, tls_cert=args.tls_cert, tls_key=args.tls_key,
          basic_auth_file=args.basic_auth_file, root=args.pin_root,
          max_seconds=args.max_seconds, ready_file=args.ready_file,
          heartbeat_file=args.heartbeat_file, heartbeat_interval=args.heartbeat_interval)


def _cmd_direction(args):
    from .cli import _out
    res = set_direction(None if args.default else args.iface, args.direction)
    _out(args, res, f"telemetry on {res['iface']}: requests {res['direction']}")


def _cmd_grant(args):
    from .cli import _out
    res = grant(args.group, programs=not args.maps_only)
    _out(args, res, f"{len(res['paths'])} pin(s) changed for group {args.group}")


def _cmd_show(args):
    from .cli import _out
    snap = snapshot()
    out = {"latency": {f"{m}/{st}": {"count": h["count"],
                                     "p50_ms": _ms(quantile(0.5, h["slots"])),
                                     "p90_ms": _ms(quantile(0.9, h["slots"])),
                                     "p99_ms": _ms(quantile(0.99, h["slots"]))}
                       for (m, st), h in sorted(snap["hist"].items())},
           "responses": {f"{m}/{c}": n for (m, c), n in sorted(snap["codes"].items())},
           "events": snap["events"],
           "kpi": _kpi.compute(invite_codes(snap)),
           "maps": snap["maps"], "cost": snap["cost"]}
    _out(args, out)


def _ms(v):
    return None if v is None else round(v * 1000, 3)


def add_cli(sub, common) -> None:
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("exporter", parents=[common],
                       help="Prometheus exporter: /metrics and /healthz (daemon)")
    s.add_argument("--listen", type=T.ip_address, default="127.0.0.1", metavar="ADDR")
    s.add_argument("--port", type=T.listen_port, default=DEFAULT_PORT,
                   help="TCP port 1..65535 (0: any free port, see --ready-file)")
    s.add_argument("--window", type=T.long_seconds, default=DEFAULT_WINDOW, metavar="S",
                   help="KPI window in seconds (SER/SEER/NER/ASR)")
    s.add_argument("--sample-interval", type=T.seconds, default=15.0, metavar="S")
    s.add_argument("--tls-cert", type=T.path, metavar="FILE")
    s.add_argument("--tls-key", type=T.path, metavar="FILE")
    s.add_argument("--basic-auth-file", type=T.path, metavar="FILE",
                   help="'user:pbkdf2_sha256$...' lines (see --hash-password)")
    s.add_argument("--pin-root", type=T.path, metavar="DIR", help="default $ETSF_PIN_ROOT or /sys/fs/bpf/etsf")
    s.add_argument("--heartbeat-file", type=T.path, metavar="FILE",
                   help="rewrite FILE every --heartbeat-interval seconds while the maps are readable "
                        "(watched by the fail-safe heartbeat rule)")
    s.add_argument("--heartbeat-interval", type=T.seconds, default=5.0, metavar="S")
    s.add_argument("--max-seconds", type=T.long_seconds, metavar="S", help=argparse_suppress())
    s.add_argument("--ready-file", type=T.path, metavar="FILE", help=argparse_suppress())
    s.add_argument("--hash-password", action="store_true",
                   help="read a password on stdin, print its hash for --basic-auth-file")
    s.set_defaults(func=_cmd_exporter)

    s = sub.add_parser("top", parents=[common],
                       help="live view: rates per method, drops by reason, latency quantiles")
    s.add_argument("--interval", type=T.seconds, default=2.0, metavar="S")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="one sample over --interval, then exit")
    g.add_argument("--iterations", type=T.count, metavar="N", help="refresh N times, then exit")
    s.set_defaults(func=lambda a: __import__("etsf.top", fromlist=["main"]).main(a))

    s = sub.add_parser("telemetry", help="latency tracking direction, pin permissions, summary")
    tsub = s.add_subparsers(dest="tcmd", metavar="ACTION", parser_class=sub._parser_class)
    tsub.required = True
    a = tsub.add_parser("direction", parents=[common],
                        help="where requests are seen: toward (XDP in), from (TC out), off")
    grp_ = a.add_mutually_exclusive_group(required=True)
    grp_.add_argument("--iface", type=T.iface, metavar="IF")
    grp_.add_argument("--default", action="store_true", help="every interface without its own entry")
    a.add_argument("direction", choices=("toward", "from", "off"))
    a.set_defaults(func=_cmd_direction)
    a = tsub.add_parser("grant", parents=[common],
                        help="let a group read the pins (for the unprivileged exporter)")
    a.add_argument("--group", type=T.group, default="etsf")
    a.add_argument("--maps-only", action="store_true",
                   help="leave program pins root-only (no per-program metrics)")
    a.set_defaults(func=_cmd_grant)
    a = tsub.add_parser("show", parents=[common], help="latency quantiles, response codes, KPIs")
    a.set_defaults(func=_cmd_show)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS
