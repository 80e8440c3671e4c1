"""The exporter's web configuration: its schema's errors (one style, no secret echoed), the
reference command, the role's rendered file passes the validator and is stable, and the hash
budget of basic auth holds by count.  The reference file and the role's argument_specs are
checked with the other documents' (test_schema_docs.py, test_schema_argument_specs.py)."""
import json
import subprocess
import sys
from pathlib import Path

import bcrypt
import jinja2
import pytest
import yaml

from etsf.exporter import ExporterError, bcrypt_hash
from etsf.telemetry import auth, webconfig

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "telemetry"
H = bcrypt_hash("s3cret", 4)


def test_reference_command_prints_the_shared_reference():
    """`etsfctl exporter --web.config.reference` prints what `python -m etsf.schema_docs exporter` does
    (tests/unit/test_schema_docs.py keeps docs/reference/exporter.md current)."""
    r = subprocess.run([sys.executable, "-m", "etsf", "exporter", "--web.config.reference"],
                       capture_output=True, text=True, timeout=60, check=True,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert r.stdout == (REPO / "docs/reference/exporter.md").read_text()
    assert "| `basic_auth_users.<USER>` | bcrypt hash |" in r.stdout and "`telemetry_tls_cert_file`" in r.stdout


BAD = [
    ([], "document: a mapping or null expected (got a list of 0)"),
    ({"basic_auth_user": {}}, "basic_auth_user: one of the keys tls_server_config, basic_auth_users expected "
                              "(got 'basic_auth_user')"),
    ({"basic_auth_users": ["a"]}, "basic_auth_users: a mapping or null expected (got a list of 1)"),
    ({"basic_auth_users": {"a:b": H}}, "basic_auth_users: a user name of 1..256 characters without ':' "
                                       "or control characters expected (got 'a:b')"),
    ({"basic_auth_users": {"ops": "hunter2"}}, "basic_auth_users.ops: a bcrypt hash '$2b$NN$...' with cost 4..12 expected (got a string of 7 characters)"),
    ({"basic_auth_users": {"ops": "$2b$13$" + H[7:]}}, "basic_auth_users.ops: a bcrypt hash '$2b$NN$...' with "
                                                       "cost 4..12 expected (got a string of 60 characters)"),
    ({"basic_auth_users": {"ops": H + "\n"}}, "basic_auth_users.ops: a bcrypt hash '$2b$NN$...' with cost 4..12 expected (got a string of 61 characters)"),
    ({"basic_auth_users": {"ops\n": H}}, "basic_auth_users: a user name of 1..256 characters without ':' "
                                         "or control characters expected (got 'ops\\n')"),
    ({"basic_auth_users": {"ops": 5}}, "basic_auth_users.ops: a bcrypt hash '$2b$NN$...' with cost 4..12 expected (got 5)"),
    ({"tls_server_config": {"cert_file": "/c"}}, "tls_server_config.key_file: a file path expected (got nothing)"),
    ({"tls_server_config": None}, "tls_server_config: a mapping expected (got null)"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k", "cipher_suites": []}},
     "tls_server_config.cipher_suites: one of the keys cert_file, key_file, client_auth_type, client_ca_file, "
     "min_version, max_version expected (got 'cipher_suites')"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k", "min_version": "TLS10"}},
     "tls_server_config.min_version: one of TLS12, TLS13 expected (got 'TLS10')"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k", "client_auth_type": "RequireAnyClientCert"}},
     "tls_server_config.client_auth_type: one of NoClientCert, VerifyClientCertIfGiven, "
     "RequireAndVerifyClientCert expected (got 'RequireAnyClientCert')"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file: a CA file with client_auth_type RequireAndVerifyClientCert "
     "expected (got '')"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k", "min_version": "TLS13",
                            "max_version": "TLS12"}},
     "tls_server_config.min_version: at most max_version TLS12 expected (got 'TLS13')"),
    ({"tls_server_config": {"cert_file": 5, "key_file": "/k"}},
     "tls_server_config.cert_file: a file path expected (got 5)"),
    ({"tls_server_config": {"cert_file": "", "key_file": "/k"}},
     "tls_server_config.cert_file: a file path expected (got '')"),
    ({"tls_server_config": {"cert_file": "/c", "key_file": "/k", "client_ca_file": "/a\0b"}},
     "tls_server_config.client_ca_file: a file path or empty expected (got '/a\\x00b')"),
]


@pytest.mark.parametrize(("doc", "msg"), BAD, ids=[m.split(":")[0] + str(i) for i, (_d, m) in enumerate(BAD)])
def test_bad_documents_one_line_naming_the_field(doc, msg):
    with pytest.raises(ExporterError) as ei:
        webconfig.validate(doc)
    assert str(ei.value) == msg


def test_file_errors_name_the_file_and_never_echo_a_hash(tmp_path):
    f = tmp_path / "web.yml"
    f.write_text("basic_auth_users:\n  ops: $2b$99$secretsecretsecretsecretsecretsecretsecretsecretsecret12\n")
    with pytest.raises(ExporterError) as ei:
        webconfig.load(str(f))
    assert str(ei.value) == (f"{f}: basic_auth_users.ops: a bcrypt hash '$2b$NN$...' with cost 4..12 "
                             "expected (got a string of 63 characters)")
    assert "secret" not in str(ei.value)
    f.write_text("a: [")
    with pytest.raises(ExporterError, match=r"web.yml: not valid YAML"):
        webconfig.load(str(f))


def test_valid_document_defaults_filled():
    wc = webconfig.validate({"basic_auth_users": {"ops": H},
                             "tls_server_config": {"cert_file": "/c", "key_file": "/k"}})
    assert wc.users == {"ops": H}
    assert wc.tls == {"cert_file": "/c", "key_file": "/k", "client_auth_type": "NoClientCert",
                      "client_ca_file": "", "min_version": "TLS12", "max_version": "TLS13"}
    assert webconfig.validate(None).users == {} and webconfig.validate({}).tls is None
    assert webconfig.validate({"basic_auth_users": None}).users == {}


def _render_role(template: str, **over) -> str:
    """Render a role template as Ansible would: defaults, vars (templated), the collection's filter."""
    sys.path.insert(0, str(REPO / "plugins" / "filter"))
    try:
        import bcrypt_hash as plugin  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters.update({"comment": lambda s: "# " + s, "to_json": json.dumps,
                        "bool": lambda v: str(v).strip().lower() in ("true", "1", "yes"),
                        "etsf.sip.bcrypt_hash": plugin.bcrypt_hash})
    ctx = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    ctx.update({"ansible_managed": "Ansible managed", "inventory_hostname": "sbc1", **over})
    for k, v in yaml.safe_load((ROLE / "vars/main.yml").read_text()).items():
        if k not in ("__telemetry_cap_bpf", "__telemetry_offline"):
            ctx[k] = env.from_string(v).render(**ctx) if isinstance(v, str) else v
    return env.from_string((ROLE / "templates" / template).read_text()).render(**ctx)


def test_role_web_config_passes_the_validator_and_is_stable(tmp_path):
    over = {"telemetry_basic_auth_users": {"prometheus": "vaulted-pw", "grafana": "other"},
            "telemetry_tls_cert_file": "/etc/etsf/tls.crt", "telemetry_tls_key_file": "/etc/etsf/tls.key",
            "telemetry_tls_client_auth_type": "RequireAndVerifyClientCert",
            "telemetry_tls_client_ca_file": "/etc/etsf/ca.pem", "telemetry_basic_auth_bcrypt_cost": 4}
    text = _render_role("exporter-web.yml.j2", **over)
    assert "vaulted-pw" not in text
    wc = webconfig.validate(yaml.safe_load(text))
    assert set(wc.users) == {"prometheus", "grafana"}
    assert bcrypt.checkpw(b"vaulted-pw", wc.users["prometheus"].encode())
    assert not bcrypt.checkpw(b"other", wc.users["prometheus"].encode())
    assert wc.tls["client_ca_file"] == "/etc/etsf/ca.pem"
    # the same inputs give the same file (the task stays unchanged); another host, another salt
    assert _render_role("exporter-web.yml.j2", **over) == text
    assert _render_role("exporter-web.yml.j2", **over, inventory_hostname="sbc2") != text
    only_auth = _render_role("exporter-web.yml.j2", telemetry_basic_auth_users={"p": "x"})
    assert webconfig.validate(yaml.safe_load(only_auth)).tls is None


def test_bcrypt_filter_refuses_bad_input():
    sys.path.insert(0, str(REPO / "plugins" / "filter"))
    try:
        import bcrypt_hash as plugin  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    from ansible.errors import AnsibleFilterError
    for pw, cost, msg in (("", 10, "non-empty password"), ("a" * 73, 10, "at most 72 bytes"),
                          ("x", 13, r"cost 4\.\.12 expected \(got 13\)"), ("x", "ten", "cost 4..12")):
        with pytest.raises(AnsibleFilterError, match=msg):
            plugin.bcrypt_hash(pw, "seed", cost)


class _Clock:
    """A clock the test advances: the budget's refill is then counted, not timed."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_hash_budget_by_count():
    clock = _Clock()
    a = auth.Authenticator({"ops": H}, clock=clock)
    assert a.check("ops", "s3cret", "198.18.0.1") == 200
    codes = [a.check("ops", f"wrong-{i}", "198.18.0.1") for i in range(500)]
    # one source: its burst (one token went to the good login), then nothing without time
    assert codes.count(401) == auth.SOURCE_BURST - 1 and codes.count(429) == 500 - codes.count(401)
    assert a.hashes == auth.SOURCE_BURST and a.rejected["budget"] == codes.count(429)
    # verified and refused pairs come from the cache: no hash, even over the budget
    assert a.check("ops", "s3cret", "198.18.0.1") == 200 and a.cache_hits == 1
    assert a.check("ops", "wrong-0", "198.18.0.1") == 401 and a.rejected["cached"] == 1
    # another source still finds global tokens (GLOBAL_BURST > SOURCE_BURST)
    assert a.check("ops", "s3cret-2", "198.18.0.2") == 401
    # many sources: the global bucket bounds the total
    codes = [a.check("nobody", f"x{i}", f"198.18.1.{i}") for i in range(200)]
    assert a.hashes == auth.GLOBAL_BURST and codes.count(429) == 200 - (auth.GLOBAL_BURST - auth.SOURCE_BURST - 1)
    # time refills: 10 s give the global bucket 10 * GLOBAL_RATE tokens, capped at its burst
    clock.t += 10
    before = a.hashes
    codes = [a.check("ops", f"late-{i}", f"198.18.2.{i}") for i in range(100)]
    assert a.hashes - before == min(auth.GLOBAL_BURST, 10 * auth.GLOBAL_RATE)
    assert a.rejected["malformed"] == 0
    assert a.check(None, None, "198.18.0.3") == 401 and a.check("ops", "x" * 73, "198.18.0.3") == 401
    assert a.rejected["malformed"] == 2 and a.hashes - before == min(auth.GLOBAL_BURST, 10 * auth.GLOBAL_RATE)


def test_source_key_groups_ipv6_by_64():
    assert auth.source_key("2001:db8:1:2:aaaa::1") == auth.source_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert auth.source_key("::ffff:198.18.0.1") == "198.18.0.1"
    assert auth.source_key("198.18.0.1") == "198.18.0.1"


def test_sources_table_bounded():
    clock = _Clock()
    a = auth.Authenticator({"ops": H}, clock=clock)
    for i in range(auth.SOURCES_MAX + 50):
        a.check("u", f"p{i}", f"2001:db8:{i // 65536:x}:{i % 65536:x}::1")
    assert len(a._sources) <= auth.SOURCES_MAX  # noqa: SLF001
    assert a.hashes == auth.GLOBAL_BURST


@pytest.mark.parametrize(("text", "port", "want"), [
    ("127.0.0.1:9761", None, ("127.0.0.1", 9761)), ("[::1]:9761", None, ("::1", 9761)),
    (":9761", None, ("::", 9761)), ("127.0.0.1", None, ("127.0.0.1", 9761)), ("::1", 8080, ("::1", 8080)),
    ("0.0.0.0:0", None, ("0.0.0.0", 0)), ("198.18.0.1:9761", 9761, ("198.18.0.1", 9761)),
])
def test_listen_host_port(text, port, want):
    from etsf.exporter import parse_listen
    assert parse_listen(text, port) == want


@pytest.mark.parametrize("text", ["127.0.0.1:99999", "host:9761", "[127.0.0.1]:9761", "::1:", "1.2.3.4:x",
                                  "fe80::1%eth0", "[fe80::1%eth0]:9761", "", ":", "127.0.0.1:+80", "[::1]9761"])
def test_listen_refused_one_line(text):
    from etsf.exporter import parse_listen
    with pytest.raises(ValueError) as ei:
        parse_listen(text)
    assert "\n" not in str(ei.value) and "expected" in str(ei.value) and f"(got {text!r})" in str(ei.value)


def test_listen_port_conflict():
    r = subprocess.run([sys.executable, "-m", "etsf", "exporter", "--listen", "127.0.0.1:9761", "--port", "80",
                        "--check-config"], capture_output=True, text=True, timeout=60, check=False,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    assert r.stderr == ("etsfctl: error: --listen: the port of --port 80 expected, or --port left out "
                        "(got '127.0.0.1:9761')\n")
