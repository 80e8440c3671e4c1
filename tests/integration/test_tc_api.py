"""`etsfctl attach --tc-api tcx` on a real veth: the TC programs run on pinned tcx links instead of
clsact filters, the kernel's own view (BPF_PROG_QUERY at the tcx attach points, `tc filter show`)
says so, SIP traffic is counted at TC ingress and egress as with clsact, switching between the two
APIs under traffic classifies every packet exactly once, and detach leaves neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import NS_PREFIX, UAC_IP, UAS_IP, Lab, etsfctl

#: the kernel's own view of the TC hooks (raw BPF_PROG_QUERY at the tcx points, tc for clsact)
TCVIEW = (Path(__file__).resolve().parents[2] / "lab" / "tcview.py").read_text()

INVITE = ("INVITE sip:bob@198.18.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.1:5060;branch=z9hG4bK{n}\r\n"
          "From: <sip:alice@198.18.2.1>;tag=a{n}\r\nTo: <sip:bob@198.18.2.2>\r\nCall-ID: tcx-{n}@198.18.2.1\r\n"
          "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
OK = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.2.1:5060;branch=z9hG4bK{n}\r\nFrom: <sip:alice@198.18.2.1>;tag=a{n}\r\n"
      "To: <sip:bob@198.18.2.2>;tag=b{n}\r\nCall-ID: tcx-{n}@198.18.2.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")

#: paced sender: COUNT messages from SRC to DST:5060, one every GAP seconds (bounded: COUNT x GAP)
SEND = textwrap.dedent("""
    import socket, sys, time
    src, dst, count, gap, tmpl = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 5060))
    for n in range(count):
        s.sendto(tmpl.replace("{n}", str(n)).encode(), (dst, 5060))
        time.sleep(gap)
    print(count)
""")


@pytest.fixture(scope="module")
def veth():
    with Lab(f"{os.getpid() % 100000}", ns_prefix=f"{NS_PREFIX}tx", if_prefix="etsftx") as lab:
        lab.setup()
        yield lab


def _ctl(lab, env, *args, check=True):
    return etsfctl(*args, env=env, netns=lab.srv_ns, check=check)


def _kernel(lab) -> dict:
    """{"tcx": {direction: [prog ids]}, "tc": {direction: [filter prog names]}} on the server end."""
    r = subprocess.run(["ip", "netns", "exec", lab.srv_ns, sys.executable, "-c", TCVIEW, lab.srv_if],
                       capture_output=True, text=True, timeout=20, check=True)
    v = json.loads(r.stdout)
    return {"tcx": {d: [p["id"] for p in v["tcx"][d]] for d in ("ingress", "egress")},
            "tc": {d: sorted(p["name"] for p in v["clsact"][d]) for d in ("ingress", "egress")}}


def _count(lab, env, hook: str, method: str) -> int:
    st = json.loads(_ctl(lab, env, "stats", "--json").stdout)
    return sum(r["packets"] for r in st["counters"]
               if r["hook"].upper() == hook and r["method"].upper() == method)


def _send(ns: str, src: str, dst: str, tmpl: str, count: int, gap: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, "timeout", str(int(count * gap) + 30), sys.executable,
                             "-c", SEND, src, dst, str(count), str(gap), tmpl],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sent(p: subprocess.Popen) -> int:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return int(out)


def test_tcx_links_carry_the_tc_programs(veth, etsf_env, etsf_bpf):
    if not etsf_bpf.tcx_supported():
        r = _ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcx", check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "kernel 6.6" in r.stderr, r.stderr
        assert _kernel(veth)["tc"] == {"ingress": [], "egress": []}
        return
    r = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcx", "--json").stdout)
    assert r["hook"] == "tc" and r["tc_api"] == "tcx", r
    k = _kernel(veth)
    assert k["tcx"] == {"ingress": [r["tc_ingress_prog_id"]], "egress": [r["tc_prog_id"]]}, (k, r)
    assert k["tc"] == {"ingress": [], "egress": []}, k
    row = json.loads(_ctl(veth, etsf_env, "status", "--json").stdout)["interfaces"][veth.srv_if]
    assert row["attached"] and row["hook"] == "tc" and row["tc_api"] == "tcx" and row["tc_ingress_api"] == "tcx", row
    text = _ctl(veth, etsf_env, "status").stdout
    assert f"tc egress {r['tc_prog_id']} (tcx links)" in text, text
    links = os.path.join(etsf_env["ETSF_PIN_ROOT"], "links")
    assert sorted(n.split("-")[1] for n in os.listdir(links)) == ["egress", "ingress"], os.listdir(links)

    # requests in, answers out: counted by the programs on the links
    inv0, ok0 = _count(veth, etsf_env, "TC_INGRESS", "INVITE"), _count(veth, etsf_env, "TC_EGRESS", "RESPONSE")
    assert _sent(_send(veth.cli_ns, UAC_IP, UAS_IP, INVITE, 20, 0.001)) == 20
    assert _sent(_send(veth.srv_ns, UAS_IP, UAC_IP, OK, 20, 0.001)) == 20
    assert _count(veth, etsf_env, "TC_INGRESS", "INVITE") - inv0 == 20
    assert _count(veth, etsf_env, "TC_EGRESS", "RESPONSE") - ok0 == 20

    # attach again (an upgrade): the links take the new programs, one program per direction
    r2 = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcx", "--json").stdout)
    k = _kernel(veth)
    assert k["tcx"] == {"ingress": [r2["tc_ingress_prog_id"]], "egress": [r2["tc_prog_id"]]}, (k, r2)
    assert r2["tc_ingress_prog_id"] != r["tc_ingress_prog_id"]

    # clsact and back under traffic: every INVITE is counted once at TC ingress, none twice
    inv0 = _count(veth, etsf_env, "TC_INGRESS", "INVITE")
    p = _send(veth.cli_ns, UAC_IP, UAS_IP, INVITE, 1500, 0.002)
    r3 = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "clsact", "--json").stdout)
    assert r3["tc_api"] == "clsact" and r3["tc_api_reason"].endswith("forced (--tc-api clsact)"), r3
    k = _kernel(veth)
    assert k["tcx"] == {"ingress": [], "egress": []} and k["tc"] == {"ingress": ["tc_fastpath"],
                                                                     "egress": ["tc_sip_egress"]}, k
    assert not os.listdir(links)
    _ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcx")
    sent = _sent(p)
    assert _count(veth, etsf_env, "TC_INGRESS", "INVITE") - inv0 == sent == 1500
    k = _kernel(veth)
    assert len(k["tcx"]["ingress"]) == 1 and k["tc"] == {"ingress": [], "egress": []}, k

    r = json.loads(_ctl(veth, etsf_env, "detach", "--iface", veth.srv_if, "--json").stdout)
    assert r["changed"], r
    assert _kernel(veth) == {"tcx": {"ingress": [], "egress": []}, "tc": {"ingress": [], "egress": []}}
    assert not os.listdir(links)


def test_xdp_hook_with_tcx_egress(veth, etsf_env, etsf_bpf):
    if not etsf_bpf.tcx_supported():
        return                          # refused as in test_tcx_links_carry_the_tc_programs
    r = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--hook", "xdp", "--tc-api", "tcx",
                        "--json").stdout)
    assert r["hook"] == "xdp" and r["tc_api"] == "tcx" and r["tc_ingress_prog_id"] is None, r
    k = _kernel(veth)
    assert k["tcx"] == {"ingress": [], "egress": [r["tc_prog_id"]]} and k["tc"] == {"ingress": [], "egress": []}, k
    _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    assert _kernel(veth) == {"tcx": {"ingress": [], "egress": []}, "tc": {"ingress": [], "egress": []}}


def test_bad_tc_api_changes_nothing(veth, etsf_env):
    before = _kernel(veth)
    r = _ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcp", check=False)
    assert r.returncode != 0 and "--tc-api" in r.stderr and "tcp" in r.stderr, r.stderr
    assert _kernel(veth) == before


def test_restore_config_tc_api(tmp_path, etsf_env):
    cfg = tmp_path / "datapath.yml"
    cfg.write_text("version: 1\ninterfaces: [x]\ntc_api: tcp\n")
    r = etsfctl("restore", "--config", str(cfg), env=etsf_env, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "tc_api" in r.stderr, r.stderr


#: a foreign program (not eTSF's), bench/bpf's count-only program, at TC ingress: on a tcx link pinned at argv[2]
#: or in a clsact filter (argv[5]: tcx-on, tcx-off, clsact-on, clsact-off)
FOREIGN = textwrap.dedent("""
    import socket, sys
    from pathlib import Path
    from etsf import bpf
    from etsf.build import build_test_object
    root = Path(sys.argv[3])
    progs = bpf.load_object(build_test_object(root / "bench" / "bpf", Path(sys.argv[4]), "progcost_ref.c"))
    idx = socket.if_nametoindex(sys.argv[1])
    api, on = sys.argv[5].split("-")
    if api == "tcx" and on == "on":
        bpf.tcx_attach(sys.argv[2], idx, progs["pc_ref_ingress"].fd, "ingress")
    elif api == "tcx":
        bpf.tcx_detach(sys.argv[2], idx, "ingress")
    elif on == "on":
        bpf.tc_attach(idx, progs["pc_ref_ingress"].fd, direction="ingress", handle=0xB8, priority=1)
    else:
        bpf.tc_detach(idx, direction="ingress", handle=0xB8, priority=1)
""")


def _foreign(lab, env, pin, tmp, on, api="tcx"):
    """Put bench/bpf's count-only program at lab's TC ingress (on) or take it off, on a tcx link
    pinned at pin or in a clsact filter."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    e = dict(os.environ, PYTHONPATH=os.path.join(root, "src"), **env)
    subprocess.run(["nsenter", f"--net=/run/netns/{lab.srv_ns}", sys.executable, "-c", FOREIGN, lab.srv_if, pin,
                    root, str(tmp), f"{api}-{'on' if on else 'off'}"], env=e, check=True, timeout=120, capture_output=True)


def _iface_check(lab, env) -> dict:
    r = _ctl(lab, env, "preflight", "--iface", lab.srv_if, "--json", check=False)
    return next(c for c in json.loads(r.stdout)["checks"] if c["name"] == f"interface:{lab.srv_if}")


def test_preflight_names_foreign_tcx_programs(veth, etsf_env, etsf_bpf, tmp_path):
    if not etsf_bpf.tcx_supported():
        assert _iface_check(veth, etsf_env)["ok"]
        return
    _ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--tc-api", "tcx")
    assert _iface_check(veth, etsf_env)["ok"]                  # eTSF's own links are not foreign
    pin = os.path.join(etsf_env["ETSF_PIN_ROOT"], "foreign-link")
    _foreign(veth, etsf_env, pin, tmp_path, True)
    try:
        c = _iface_check(veth, etsf_env)
        assert not c["ok"] and [(f["hook"], f["name"]) for f in c["foreign_programs"]] == \
            [("tc/ingress", "pc_ref_ingress")], c
        assert "foreign programs attached: tc/ingress pc_ref_ingress" in c["detail"], c
    finally:
        _foreign(veth, etsf_env, pin, tmp_path, False)
        _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    assert _iface_check(veth, etsf_env)["ok"]


def test_auto_takes_tcx_links_unless_a_clsact_program_would_be_cut_off(veth, etsf_env, etsf_bpf, tmp_path):
    """The default (--tc-api auto): tcx links where the kernel has them; clsact filters where
    another program sits in a clsact filter, which a tcx program's verdict would skip."""
    r = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--json").stdout)
    want = "tcx" if etsf_bpf.tcx_supported() else "clsact"
    assert r["tc_api_requested"] == "auto" and r["tc_api"] == want, r
    k = _kernel(veth)
    if want == "tcx":
        assert "no other clsact program -> tcx" in r["tc_api_reason"], r
        assert k == {"tcx": {"ingress": [r["tc_ingress_prog_id"]], "egress": [r["tc_prog_id"]]},
                     "tc": {"ingress": [], "egress": []}}, (k, r)
    else:
        assert "has no tcx links -> clsact" in r["tc_api_reason"], r
    row = json.loads(_ctl(veth, etsf_env, "status", "--json").stdout)["interfaces"][veth.srv_if]
    assert (row["tc_api"], row["tc_api_requested"], row["tc_api_reason"]) == (want, "auto", r["tc_api_reason"]), row
    _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    if want == "clsact":
        return

    # an operator's own program in a clsact filter: auto keeps eTSF in clsact and says why
    _foreign(veth, etsf_env, "", tmp_path, True, api="clsact")
    try:
        r = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--json").stdout)
        assert r["tc_api"] == "clsact" and "ingress pc_ref_ingress" in r["tc_api_reason"], r
        assert r["tc_api_reason"].endswith("-> clsact"), r
        k = _kernel(veth)
        assert k == {"tcx": {"ingress": [], "egress": []},
                     "tc": {"ingress": ["pc_ref_ingress", "tc_fastpath"], "egress": ["tc_sip_egress"]}}, k
        # the same attach again changes nothing about that choice (eTSF's own filters do not count)
        r = json.loads(_ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, "--json").stdout)
        assert r["tc_api"] == "clsact", r
    finally:
        _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
        _foreign(veth, etsf_env, "", tmp_path, False, api="clsact")
    assert _kernel(veth) == {"tcx": {"ingress": [], "egress": []}, "tc": {"ingress": [], "egress": []}}
