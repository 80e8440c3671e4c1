"""The keep-alive prober's pieces that need no kernel: the probe's OPTIONS, the reading of answers
(compact and folded headers, stray and provisional answers), the settings taken from the policy,
the CLI, and the hardened unit the policy role installs (systemd-analyze security --offline)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from etsf.cli import build_parser, main
from etsf.keepalive import sip
from etsf.keepalive.commands import load_config

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _answer(req: sip.Request, first: str = "SIP/2.0 200 OK", **over) -> bytes:
    hdr = {"Via": f"SIP/2.0/UDP 198.18.0.2:40000;branch={req.branch};rport=40000;received=198.18.0.2",
           "From": f"<sip:etsf-keepalive@198.18.0.2>;tag={req.from_tag}", "To": "<sip:198.18.0.1:5060>;tag=x",
           "Call-ID": req.call_id, "CSeq": f"{req.cseq} OPTIONS", "Content-Length": "0"}
    hdr.update(over)
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdr.items() if v is not None) + "\r\n").encode()


def test_options_is_a_well_formed_out_of_dialog_request():
    r = sip.options("198.18.0.1", 5060, "198.18.0.2", 40000, cseq=3)
    text = r.data.decode()
    head, body = text.split("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "OPTIONS sip:198.18.0.1:5060 SIP/2.0" and body == ""
    hdr = dict(ln.split(": ", 1) for ln in lines[1:])
    assert hdr["Via"] == f"SIP/2.0/UDP 198.18.0.2:40000;branch={r.branch};rport"
    assert r.branch.startswith("z9hG4bK") and hdr["Max-Forwards"] == "70" and hdr["CSeq"] == "3 OPTIONS"
    assert hdr["To"] == "<sip:198.18.0.1:5060>" and ";tag=" not in hdr["To"]
    assert hdr["From"].endswith(f";tag={r.from_tag}") and hdr["Call-ID"] == r.call_id
    assert hdr["Content-Length"] == "0" and hdr["User-Agent"].startswith("etsf-keepalive/")
    # every probe is a new transaction
    assert sip.options("198.18.0.1", 5060, "198.18.0.2", 40000).branch != r.branch


def test_options_ipv6_uses_brackets():
    r = sip.options("2001:db8::1", 5060, "2001:db8::2", 40000)
    assert r.data.startswith(b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::2]:40000;")


def test_answer_matches_its_transaction():
    r = sip.options("198.18.0.1", 5060, "198.18.0.2", 40000)
    a = sip.parse(_answer(r))
    assert (a.status, a.reason) == (200, "OK") and sip.answers(a, r)
    for over in ({"Via": "SIP/2.0/UDP 198.18.0.2:40000;branch=z9hG4bK-other"}, {"Call-ID": "other@x"},
                 {"CSeq": "2 OPTIONS"}, {"CSeq": "1 INVITE"}, {"Via": None}, {"CSeq": None}):
        assert not sip.answers(sip.parse(_answer(r, **over)), r), over


def test_compact_folded_and_comma_separated_headers():
    r = sip.options("198.18.0.1", 5060, "198.18.0.2", 40000)
    data = (f"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 198.18.0.2:40000;branch={r.branch}, SIP/2.0/UDP 198.18.9.9\r\n"
            f"i: {r.call_id}\r\nCSeq:\r\n  1 OPTIONS\r\nl: 0\r\n\r\n").encode()
    a = sip.parse(data)
    assert a.headers["via"][1] == "SIP/2.0/UDP 198.18.9.9" and a.first("cseq") == "1 OPTIONS"
    assert a.first("content-length") == "0" and sip.answers(a, r)


@pytest.mark.parametrize("data", [b"OPTIONS sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 2000 OK\r\n\r\n", b"\xff\xfe",
                                  b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n",
                                  b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 12000])
def test_not_an_answer(data):
    assert sip.parse(data) is None


def _policy(tmp_path, **ka):
    p = tmp_path / "policy.yml"
    p.write_text(yaml.safe_dump({"version": 1, "keepalive": ka}))
    return str(p)


def test_config_from_the_policy(tmp_path):
    cfg = load_config(_policy(tmp_path, enabled=True, identities=["198.18.0.1"], sample_every=100,
                              probe={"address": "198.18.0.1", "port": 5070, "interval_ms": 500,
                                     "timeout_ms": 200, "alive_ms": 1500}))
    assert cfg == {"address": "198.18.0.1", "port": 5070, "interval_ms": 500, "timeout_ms": 200,
                   "alive_ms": 1500}
    # --interval overrides the policy's and bounds the timeout
    cfg = load_config(_policy(tmp_path, enabled=True, identities=["sbc.example.net"]), interval_s=0.1)
    assert (cfg["address"], cfg["port"], cfg["interval_ms"], cfg["timeout_ms"], cfg["alive_ms"]) == \
        ("127.0.0.1", 5060, 100, 100, 3000)


def test_disabled_policy_is_refused(tmp_path, capsys):
    pol = _policy(tmp_path, enabled=False)
    assert main(["keepalive", "probe", "--once", "--policy", pol]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keepalive.enabled is false" in err


def test_invalid_policy_is_one_line(tmp_path, capsys):
    pol = _policy(tmp_path, enabled=True, identities=["198.18.0.1"], probe={"timeout_ms": 5})
    assert main(["keepalive", "probe", "--once", "--policy", pol]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keepalive.probe.timeout_ms" in err


def test_cli_parses_keepalive_commands():
    p = build_parser()
    a = p.parse_args(["keepalive", "probe", "--count", "3", "--interval", "0.2", "--heartbeat-file", "/run/x"])
    assert (a.count, a.interval, a.heartbeat_file, a.once) == (3, 0.2, "/run/x", False)
    a = p.parse_args(["keepalive", "status", "--json"])
    assert a.json
    with pytest.raises(SystemExit):
        p.parse_args(["keepalive", "probe", "--once", "--count", "2"])


def render_unit(**over) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda s: "# " + s
    ctx = yaml.safe_load((ROLES / "policy/defaults/main.yml").read_text())
    ctx.update(ansible_managed="Ansible managed", **over)
    return env.from_string((ROLES / "policy/templates/etsf-keepalive.service.j2").read_text()).render(**ctx)


def test_unit_runs_the_prober_with_cap_bpf_only():
    u = render_unit()
    assert u.startswith("# Ansible managed\n")
    assert ("ExecStart=/usr/local/bin/etsfctl keepalive probe --policy /etc/etsf/policy.yml "
            "--heartbeat-file /run/etsf-keepalive/heartbeat\n") in u
    assert re.search(r"^CapabilityBoundingSet=CAP_BPF$", u, re.M) and re.search(r"^AmbientCapabilities=CAP_BPF$",
                                                                                u, re.M)
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in u and "PrivateNetwork" not in u
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "RuntimeDirectory=etsf-keepalive", "ReadWritePaths=/sys/fs/bpf/etsf /var/lib/etsf /run/etsf"):
        assert line in u


def test_unit_security_score(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not installed")
    p = tmp_path / "etsf-keepalive.service"
    p.write_text(render_unit())
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(p)], capture_output=True,
                       text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    if not m:
        pytest.fail(f"systemd-analyze security --offline unsupported: {r.stderr.strip()[:200]}")
    print("keepalive unit exposure", m.group(1))
    assert float(m.group(1)) <= 3.0, r.stdout[-2000:]


def test_policy_role_installs_the_unit_only_when_enabled():
    main_tasks = yaml.safe_load((ROLES / "policy/tasks/main.yml").read_text())
    task = [t for t in main_tasks if t.get("ansible.builtin.import_tasks") == "keepalive.yml"][0]
    expr = task["vars"]["__policy_keepalive"]
    env = jinja2.Environment()
    for doc, want in (({"version": 1}, "False"), ({"version": 1, "keepalive": None}, "False"),
                      ({"version": 1, "keepalive": {"enabled": True}}, "True")):
        assert env.from_string(expr).render(policy_document=doc) == want
    tasks = {t["name"]: t for t in yaml.safe_load((ROLES / "policy/tasks/keepalive.yml").read_text())}
    assert tasks["Install etsf-keepalive.service"]["when"] == "__policy_keepalive | bool"
    stop = tasks["Stop etsf-keepalive.service when keep-alive answers are off"]["ansible.builtin.systemd_service"]
    assert {k: v for k, v in stop.items() if k != "state"} == {"name": "etsf-keepalive.service", "enabled": False}
    # stopped on a running host; offline (an appliance tree) only disabled
    for offline, want in ((False, "stopped"), (True, "OMIT")):
        assert env.from_string(stop["state"]).render(__etsf_offline=offline, omit="OMIT") == want
