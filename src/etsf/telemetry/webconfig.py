"""The exporter's web configuration file (``etsfctl exporter --web.config.file``), described once.

The format is the one Prometheus exporters share (exporter-toolkit's web configuration:
``tls_server_config`` and ``basic_auth_users`` with bcrypt hashes), restricted to what the
exporter implements; any other key is refused.  ``SCHEMA`` below is the only description, in
the nodes of :mod:`etsf.schema`: its ``check`` is the validator, ``python -m etsf.schema_docs``
prints docs/reference/exporter.md from it (so does ``etsfctl exporter --web.config.reference``)
and ``ROLE_VARS`` ties the telemetry role's variables to its keys (a unit test compares them
with the role's argument_specs).  Errors read ``<file>: <path>: <what was expected> expected
(got <value>)``; secrets are never echoed.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field

from .. import inputs
from .. import schema as S
from . import auth
from .reader import ExporterError

#: highest bcrypt cost accepted: every hash within the budget costs 2**cost rounds
#: (cost 10 ~ 60 ms, 12 ~ 250 ms of one core)
BCRYPT_MAX_COST = 12
BCRYPT_MIN_COST = 4
# \Z, not $: "$" would also match before a trailing newline
_BCRYPT_RE = re.compile(r"^\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}\Z")
_USER_RE = re.compile(r"^[^:\x00-\x1f\x7f]{1,256}\Z")

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def _path(v: str) -> bool:
    return "\0" not in v and len(v) < 4096


def _bcrypt(v: str) -> bool:
    m = _BCRYPT_RE.match(v)
    return bool(m) and BCRYPT_MIN_COST <= int(m.group(1)) <= BCRYPT_MAX_COST


def _file(doc: str) -> S.Node:
    return S.Text("a file path", lambda v: bool(v) and _path(v), doc, required=True)


SCHEMA = S.Map({
    "tls_server_config": S.Map({
        "cert_file": _file("Server certificate chain (PEM)."),
        "key_file": _file("Private key of the certificate (PEM)."),
        "client_auth_type": S.Choice(
            tuple(CLIENT_AUTH), "Client certificates: none asked, verified when given, or required and "
            "verified (needs `client_ca_file`).", default="NoClientCert"),
        "client_ca_file": S.Text("a file path or empty", _path,
                                 "CA certificates (PEM) client certificates are verified against.", default="",
                                 default_text='`""` (none)'),
        "min_version": S.Choice(tuple(TLS_VERSIONS), "Lowest TLS version accepted.", default="TLS12"),
        "max_version": S.Choice(tuple(TLS_VERSIONS), "Highest TLS version accepted.", default="TLS13"),
    }, "TLS on the listener (absent: plain HTTP).", default_text="— (plain HTTP)"),
    "basic_auth_users": S.MapOf(
        S.Text("a user name of 1..256 characters without ':' or control characters", _USER_RE),
        S.Text(f"a bcrypt hash '$2b$NN$...' with cost {BCRYPT_MIN_COST}..{BCRYPT_MAX_COST}", _bcrypt,
               f"bcrypt hash (`$2a$`, `$2b$` or `$2y$`, cost {BCRYPT_MIN_COST}..{BCRYPT_MAX_COST}), "
               "e.g. from `etsfctl exporter --hash-password`.", label="bcrypt hash", secret=True),
        "HTTP basic auth: user name (no `:`) to bcrypt hash. Absent, null or empty: no auth.",
        key_what="user names", key_label="USER", default={}, nullable=True),
}, nullable=True)

#: rules that span keys (the reference lists them; :func:`validate` checks them)
CROSS_RULES = (
    "`tls_server_config.client_ca_file` is set when `client_auth_type` verifies client certificates.",
    "`tls_server_config.min_version` is at most `max_version`.",
)

#: telemetry role variable -> schema path it fills (the role writes the file from them)
ROLE_VARS = {
    "telemetry_tls_cert_file": "tls_server_config.cert_file",
    "telemetry_tls_key_file": "tls_server_config.key_file",
    "telemetry_tls_client_auth_type": "tls_server_config.client_auth_type",
    "telemetry_tls_client_ca_file": "tls_server_config.client_ca_file",
    "telemetry_tls_min_version": "tls_server_config.min_version",
    "telemetry_basic_auth_users": "basic_auth_users",
}


@dataclass
class WebConfig:
    users: dict = field(default_factory=dict)
    tls: dict | None = None          # every tls_server_config field, defaults filled in


def validate(doc) -> WebConfig:
    """The checked document (ExporterError naming the first wrong field)."""
    try:
        d = SCHEMA.check(doc, "")
        tls = d.get("tls_server_config")
        if tls is not None:
            if tls["client_auth_type"] != "NoClientCert" and not tls["client_ca_file"]:
                raise S.Invalid("tls_server_config.client_ca_file",
                                f"a CA file with client_auth_type {tls['client_auth_type']}", tls["client_ca_file"])
            if TLS_VERSIONS[tls["min_version"]] > TLS_VERSIONS[tls["max_version"]]:
                raise S.Invalid("tls_server_config.min_version", f"at most max_version {tls['max_version']}",
                                tls["min_version"])
        return WebConfig(users=d["basic_auth_users"], tls=tls)
    except S.Invalid as e:
        raise ExporterError(str(e)) from None


def load(path: str) -> WebConfig:
    """Read (size-capped) and validate a web configuration file."""
    return inputs.load_checked(path, "web config", validate, ExporterError)


def tls_context(tls: dict) -> ssl.SSLContext:
    """The server context a validated tls_server_config describes (ExporterError naming the
    field whose file is missing or unusable)."""
    for k in ("cert_file", "key_file", "client_ca_file"):
        if tls.get(k):
            try:
                inputs.check_size(tls[k], "TLS file")      # ssl reads them whole
            except OSError as e:
                raise ExporterError(f"tls_server_config.{k}: a readable file expected "
                                    f"(got {tls[k]!r}: {e.strerror})") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls["min_version"]]
    ctx.maximum_version = TLS_VERSIONS[tls["max_version"]]
    try:
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as e:
        raise ExporterError("tls_server_config.cert_file: a PEM certificate matching key_file expected "
                            f"(got {tls['cert_file']!r}: {getattr(e, 'reason', None) or e})") from None
    if tls["client_auth_type"] != "NoClientCert":
        try:
            ctx.load_verify_locations(cafile=tls["client_ca_file"])
        except (OSError, ssl.SSLError) as e:
            raise ExporterError("tls_server_config.client_ca_file: PEM CA certificates expected "
                                f"(got {tls['client_ca_file']!r}: {getattr(e, 'reason', None) or e})") from None
    ctx.verify_mode = CLIENT_AUTH[tls["client_auth_type"]]
    return ctx


class ReloadingTls:
    """The server's TLS context, built again when its files change.

    Certificates are renewed in place (a PKI agent rewrites or re-links the same paths); a context
    loaded once would keep serving the old certificate until it expires and every scrape fails.
    Prometheus' own exporters read the files at each handshake; here the files are looked at (one
    stat each) at most once per ``check_every`` seconds, whatever the clients do, and read only when
    their identity, size or mtime changed.  Files that do not load together (a new certificate
    before its key is written) keep the old context and are tried again at their next change."""

    FILES = ("cert_file", "key_file", "client_ca_file")

    def __init__(self, tls: dict, check_every: float = 1.0, clock=time.monotonic):
        self.tls = tls
        self.check_every = check_every
        self.clock = clock
        self.ctx = tls_context(tls)
        self._sig = self._signature()
        self._refused: tuple | None = None
        self._next = clock() + check_every
        self._lock = threading.Lock()
        self.reloads = {"ok": 0, "error": 0}

    def _signature(self) -> tuple:
        sig = []
        for k in self.FILES:
            if self.tls.get(k):
                try:
                    st = os.stat(self.tls[k])
                    sig.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
                except OSError:
                    sig.append(None)
        return tuple(sig)

    def current(self) -> ssl.SSLContext:
        now = self.clock()
        if now < self._next:
            return self.ctx
        with self._lock:
            if now < self._next:
                return self.ctx
            self._next = now + self.check_every
            sig = self._signature()
            if sig in (self._sig, self._refused):
                return self.ctx
            try:
                ctx = tls_context(self.tls)
            except ExporterError as e:
                self._refused = sig
                self.reloads["error"] += 1
                sys.stderr.write(f"etsf-exporter: TLS files changed, not reloaded (the loaded certificate stays): {e}\n")
                return self.ctx
            self.ctx, self._sig, self._refused = ctx, sig, None
            self.reloads["ok"] += 1
            sys.stderr.write(f"etsf-exporter: TLS files changed: reloaded {self.tls['cert_file']}\n")
            return self.ctx

    def metrics(self):
        from prometheus_client.core import CounterMetricFamily  # pylint: disable=import-outside-toplevel
        c = CounterMetricFamily("etsf_exporter_tls_reloads", "TLS files that changed on disk: loaded "
                                "(ok) or refused, the loaded certificate kept (error)", labels=["result"])
        for result, n in sorted(self.reloads.items()):
            c.add_metric([result], n)
        yield c


def reference_notes() -> str:
    """What docs/reference/exporter.md says after the table: the role variables, the hash budget."""
    rows = ["", "The role `etsf.sip.telemetry` writes this file from its variables:", "",
            "| role variable | key |", "|---|---|"]
    rows += [f"| `{var}` | `{path}` |" for var, path in ROLE_VARS.items()]
    rows += ["", "The role takes plaintext passwords (vault them) in `telemetry_basic_auth_users` and "
             "writes their bcrypt hashes, computed on the controller.", "",
             "## What a failing client can cost", "",
             "A (user, password) pair checked once is remembered (verified pairs: up to "
             f"{auth.OK_CACHE_MAX}, refused pairs: up to {auth.FAIL_CACHE_MAX}, keyed by HMAC-SHA256 "
             "under a per-process key): asking again costs no hash. A new pair costs one bcrypt hash "
             "only while both budgets have a token: globally "
             f"{auth.GLOBAL_BURST} + {auth.GLOBAL_RATE:g} per second, per source address (IPv6: per /64) "
             f"{auth.SOURCE_BURST} + {auth.SOURCE_RATE:g} per second; otherwise the request gets 429 "
             "without a hash. An unknown user is checked against a dummy hash inside the same budget. "
             "Passwords longer than 72 bytes (bcrypt reads no further) are refused without a hash. "
             f"So over T seconds at most {auth.GLOBAL_BURST} + {auth.GLOBAL_RATE:g}·T hashes are "
             "computed whatever the clients send (cost 10: about 60 ms of one core each), and one "
             "source can never use up the global budget: another client still gets its first login "
             "checked. Counters: `etsf_exporter_auth_hashes_total`, "
             "`etsf_exporter_auth_cache_hits_total`, `etsf_exporter_auth_rejected_without_hash_total{reason}`.",
             ""]
    return "\n".join(rows)
