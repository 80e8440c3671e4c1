"""The exporter's web configuration file (``etsfctl exporter --web.config.file``), described once.

The format is the one Prometheus exporters share (exporter-toolkit's web configuration:
``tls_server_config`` and ``basic_auth_users`` with bcrypt hashes), restricted to what the
exporter implements; any other key is refused.  ``SCHEMA`` below is the only description:
the validator walks it, ``markdown()`` prints docs/reference/exporter.md from it
(``etsfctl exporter --web.config.reference``) and ``ROLE_VARS`` ties the telemetry role's
variables to its fields (a unit test compares them with the role's argument_specs).
Errors read ``<file>: <path>: <what was expected> (got <value>)``; secrets are never echoed.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

from .. import inputs
from . import auth
from .reader import ExporterError

#: highest bcrypt cost accepted: every hash within the budget costs 2**cost rounds
#: (cost 10 ~ 60 ms, 12 ~ 250 ms of one core)
BCRYPT_MAX_COST = 12
BCRYPT_MIN_COST = 4
_BCRYPT_RE = re.compile(r"^\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}$")
_USER_RE = re.compile(r"^[^:\x00-\x1f\x7f]{1,256}$")

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class Field:
    """One key of the document; ``path`` is dotted, ``*`` stands for any key of a mapping."""
    path: str
    type: str                  # mapping | path | choice | bcrypt
    description: str
    default: object = None
    choices: tuple = ()
    required: bool = False
    secret: bool = False


SCHEMA = (
    Field("tls_server_config", "mapping", "TLS on the listener (absent: plain HTTP)."),
    Field("tls_server_config.cert_file", "path", "Server certificate chain (PEM).", required=True),
    Field("tls_server_config.key_file", "path", "Private key of the certificate (PEM).", required=True),
    Field("tls_server_config.client_auth_type", "choice",
          "Client certificates: none asked, verified when given, or required and verified "
          "(needs `client_ca_file`).", default="NoClientCert", choices=tuple(CLIENT_AUTH)),
    Field("tls_server_config.client_ca_file", "path",
          "CA certificates (PEM) client certificates are verified against.", default=""),
    Field("tls_server_config.min_version", "choice", "Lowest TLS version accepted.",
          default="TLS12", choices=tuple(TLS_VERSIONS)),
    Field("tls_server_config.max_version", "choice", "Highest TLS version accepted.",
          default="TLS13", choices=tuple(TLS_VERSIONS)),
    Field("basic_auth_users", "mapping",
          "HTTP basic auth: user name (no `:`) to bcrypt hash. Absent or empty: no auth."),
    Field("basic_auth_users.*", "bcrypt",
          f"bcrypt hash (`$2a$`, `$2b$` or `$2y$`, cost {BCRYPT_MIN_COST}..{BCRYPT_MAX_COST}), "
          "e.g. from `etsfctl exporter --hash-password`.", secret=True),
)
_BY_PATH = {f.path: f for f in SCHEMA}

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


def _children(prefix: str) -> list[Field]:
    want = prefix + "." if prefix else ""
    return [f for f in SCHEMA if f.path.startswith(want) and "." not in f.path[len(want):]]


def _got(f: Field | None, v) -> str:
    if f is not None and f.secret:
        return f"a {type(v).__name__} of {len(v) if isinstance(v, str) else '?'} characters"
    return repr(v)


def _check_value(f: Field, path: str, v):
    if f.type == "mapping":
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ExporterError(f"{path}: mapping expected (got {_got(f, v)})")
        return _check_mapping(f.path, path, v)
    if f.type == "path":
        if not isinstance(v, str) or (v and ("\0" in v or len(v) >= 4096)):
            raise ExporterError(f"{path}: file path expected (got {_got(f, v)})")
        return v
    if f.type == "choice":
        if v not in f.choices:
            raise ExporterError(f"{path}: {', '.join(f.choices)} expected (got {_got(f, v)})")
        return v
    m = _BCRYPT_RE.match(v) if isinstance(v, str) else None
    if not m or not BCRYPT_MIN_COST <= int(m.group(1)) <= BCRYPT_MAX_COST:
        raise ExporterError(f"{path}: bcrypt hash '$2b$NN$...' with cost {BCRYPT_MIN_COST}.."
                            f"{BCRYPT_MAX_COST} expected (got {_got(f, v)})")
    return v


def _check_mapping(spath: str, path: str, doc: dict) -> dict:
    kids = _children(spath)
    if len(kids) == 1 and kids[0].path.endswith(".*"):
        out = {}
        for k, v in doc.items():
            if not isinstance(k, str) or not _USER_RE.match(k):
                raise ExporterError(f"{path}: user names of 1..256 characters without ':' or "
                                    f"control characters expected (got {k!r})")
            out[k] = _check_value(kids[0], f"{path}.{k}", v)
        return out
    names = {f.path.rsplit(".", 1)[-1]: f for f in kids}
    for k in doc:
        if k not in names:
            raise ExporterError(f"{path or 'document'}: keys {', '.join(names)} expected (got {k!r})")
    out = {}
    for n, f in names.items():
        sub = f"{path}.{n}" if path else n
        if n in doc:
            out[n] = _check_value(f, sub, doc[n])
        elif f.required:
            raise ExporterError(f"{sub}: required (got nothing)")
        elif f.type != "mapping":
            out[n] = f.default
    return out


def validate(doc) -> WebConfig:
    """The checked document (ExporterError naming the first wrong field)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ExporterError(f"document: mapping expected (got {type(doc).__name__})")
    d = _check_mapping("", "", doc)
    tls = d.get("tls_server_config") if "tls_server_config" in doc else None
    if tls is not None:
        for k in ("cert_file", "key_file"):
            if not tls[k]:
                raise ExporterError(f"tls_server_config.{k}: file path expected (got '')")
        if tls["client_auth_type"] != "NoClientCert" and not tls["client_ca_file"]:
            raise ExporterError("tls_server_config.client_ca_file: a CA file expected with client_auth_type "
                                f"{tls['client_auth_type']} (got nothing)")
        if TLS_VERSIONS[tls["min_version"]] > TLS_VERSIONS[tls["max_version"]]:
            raise ExporterError(f"tls_server_config.min_version: at most max_version {tls['max_version']} "
                                f"expected (got {tls['min_version']!r})")
    return WebConfig(users=d.get("basic_auth_users") or {}, tls=tls)


def load(path: str) -> WebConfig:
    """Read (size-capped) and validate a web configuration file."""
    try:
        doc = inputs.load_yaml_file(path, "web config")
    except inputs.InputError as e:
        raise ExporterError(str(e)) from None
    try:
        return validate(doc)
    except ExporterError as e:
        raise ExporterError(f"{path}: {e}") from None


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


def markdown() -> str:
    """docs/reference/exporter.md (generated; a unit test keeps the committed copy current)."""
    rows = ["# Exporter web configuration (`etsfctl exporter --web.config.file`)", "",
            "Generated from `src/etsf/telemetry/webconfig.py` (`etsfctl exporter --web.config.reference`); "
            "do not edit. The format is the web configuration Prometheus exporters share "
            "(exporter-toolkit), limited to the keys below; any other key is refused. The role "
            "`etsf.sip.telemetry` writes this file from its variables (last column).", "",
            "| key | type | default | role variable | meaning |", "|---|---|---|---|---|"]
    by_field = {p: v for v, p in ROLE_VARS.items()}
    for f in SCHEMA:
        t = f.type + (f" ({', '.join(f.choices)})" if f.choices else "")
        d = "required" if f.required else ("" if f.default is None else f"`{f.default!r}`")
        var = f"`{by_field[f.path]}`" if f.path in by_field else ""
        rows.append(f"| `{f.path}` | {t} | {d} | {var} | {f.description} |")
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
