"""attach / re-attach (atomic replace, state kept) / detach / status / stats on a real veth."""

from __future__ import annotations

import json
import os
import socket
import time

from conftest import UAC_IP, UAS_IP, etsfctl, loaded

from test_policy_maps import XDP_DROP, XDP_PASS, sip_register


def _ctl(bpf, root):
    from etsf import layout
    with bpf.open_map("etsf_ctl", root) as m:
        return layout.Ctl.from_buffer_copy(m.lookup((0).to_bytes(4, "little")))


def _send_sip(lab, n: int, method: str = "OPTIONS"):
    """n SIP requests UDP UAC_IP -> UAS_IP:5060 (bounded), sent from the client netns."""
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('{UAC_IP}', 5071))\n"
        f"for i in range({n}):\n"
        f"    msg = ('{method} sip:{UAS_IP} SIP/2.0\\r\\nVia: SIP/2.0/UDP {UAC_IP}:5071;branch=z9hG4bK%d\\r\\n'\n"
        f"           'From: <sip:a@{UAC_IP}>;tag=1\\r\\nTo: <sip:b@{UAS_IP}>\\r\\nCall-ID: lc%d@{UAC_IP}\\r\\n'\n"
        f"           'CSeq: 1 {method}\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n') % (i, i)\n"
        f"    s.sendto(msg.encode(), ('{UAS_IP}', 5060))\n"
    )
    import subprocess
    import sys
    subprocess.run(["ip", "netns", "exec", lab.cli_ns, sys.executable, "-c", code], check=True, timeout=30)
    time.sleep(0.3)


def _xdp_count(method, verdict=None, reason=None):
    from etsf import datapath
    n = 0
    for r in datapath.stats()["counters"]:
        if r["hook"] == "XDP" and r["method"] == method and (verdict is None or r["verdict"] == verdict) \
                and (reason is None or r["reason"] == reason):
            n += r["packets"]
    return n


def test_attach_replace_detach(lab, etsf_env, etsf_bpf, tmp_path):
    root = etsf_env["ETSF_PIN_ROOT"]
    r = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json",
                           env=etsf_env, netns=lab.srv_ns).stdout)
    first_xdp, first_tc = r["xdp_prog_id"], r["tc_prog_id"]
    assert r["replaced_prog_id"] is None and r["mode"] == "native"
    assert sorted(os.listdir(os.path.join(root, "progs"))) == ["tc_sip_egress", "xdp_sip"]
    ctl = _ctl(etsf_bpf, root)
    assert ctl.heartbeat_ns > 0                  # initialised on first attach

    # no policy: everything passes (NO_POLICY), and it is counted
    _send_sip(lab, 5)
    from etsf import datapath
    assert _xdp_count("OPTIONS", "PASS", "NO_POLICY") == 5, datapath.stats()

    pol = tmp_path / "p.yml"
    pol.write_text("version: 1\nrate_limits: {options: {rate: 1, burst: 2}}\noverload: {level: 0}\n")
    etsfctl("policy", "apply", str(pol), env=etsf_env)
    _send_sip(lab, 10)
    assert _xdp_count("OPTIONS", "DROP", "RATE_LIMIT") >= 7
    before_total = _xdp_count("OPTIONS")
    with etsf_bpf.open_map("etsf_rl", root) as m:
        rl_before = len(m.keys())
    assert rl_before >= 1

    # re-attach = atomic replace: new program ids, same maps, counters/policy/rl state kept
    r2 = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json",
                            env=etsf_env, netns=lab.srv_ns).stdout)
    assert r2["replaced_prog_id"] == first_xdp
    assert r2["xdp_prog_id"] != first_xdp and r2["tc_prog_id"] != first_tc
    assert _xdp_count("OPTIONS") == before_total
    assert _ctl(etsf_bpf, root).generation == 1
    with etsf_bpf.open_map("etsf_rl", root) as m:
        assert len(m.keys()) == rl_before
    pinned = etsf_bpf.prog_info(r2["xdp_prog_id"])
    assert pinned["name"] == "xdp_sip"
    info_maps = set(pinned["map_ids"])
    with etsf_bpf.open_map("etsf_stats", root) as m:
        assert m.id in info_maps                 # the new program uses the pinned map
    _send_sip(lab, 3)
    assert _xdp_count("OPTIONS") == before_total + 3
    assert _xdp_count("OPTIONS", "DROP", "RATE_LIMIT") >= 7 + 2   # bucket state survived

    st = json.loads(etsfctl("status", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    row = st["interfaces"][lab.srv_if]
    assert row["xdp_prog_id"] == r2["xdp_prog_id"] and row["tc_prog_id"] == r2["tc_prog_id"]
    assert st["policy_generation"] == 1 and st["bypass"] is False

    s = json.loads(etsfctl("stats", "--json", env=etsf_env).stdout)
    rows = [x for x in s["counters"] if x["method"] == "OPTIONS" and x["reason"] == "RATE_LIMIT"]
    assert rows and rows[0]["verdict"] == "DROP" and rows[0]["bytes"] > 0
    text = etsfctl("stats", env=etsf_env).stdout
    assert "RATE_LIMIT" in text

    # bypass: everything passes, counted as BYPASS
    etsfctl("bypass", "on", env=etsf_env)
    _send_sip(lab, 4)
    assert _xdp_count("UNKNOWN", "PASS", "BYPASS") + _xdp_count("OPTIONS", "PASS", "BYPASS") >= 4
    etsfctl("bypass", "off", env=etsf_env)

    # detach: nothing of ours left on the interface; maps stay pinned
    r3 = json.loads(etsfctl("detach", "--iface", lab.srv_if, "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert r3["changed"] is True
    st = json.loads(etsfctl("status", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert lab.srv_if not in st["interfaces"]
    assert "etsf_stats" in st["pins"]["maps"]
    r4 = json.loads(etsfctl("detach", "--iface", lab.srv_if, "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert r4["changed"] is False


def test_deadman_fails_open(etsf_env, etsf_bpf, build_dir, tmp_path):
    root = etsf_env["ETSF_PIN_ROOT"]
    with loaded(etsf_bpf, build_dir, "xdp_sip.bpf.o", root) as progs:
        pol = tmp_path / "p.yml"
        pol.write_text("version: 1\ndeny: [198.18.66.0/24]\ndeadman: {timeout_ms: 1000}\n")
        etsfctl("policy", "apply", str(pol), env=etsf_env)
        from etsf import datapath
        pkt = sip_register("198.18.66.1")
        datapath.heartbeat()
        assert etsf_bpf.test_run(progs["xdp_sip"].fd, pkt)[0] == XDP_DROP
        time.sleep(1.3)                               # heartbeat now older than 1000 ms
        assert etsf_bpf.test_run(progs["xdp_sip"].fd, pkt)[0] == XDP_PASS
        etsfctl("heartbeat", "--interval", "0.05", "--count", "2", env=etsf_env)
        assert _ctl(etsf_bpf, root).heartbeat_ns > 0
        datapath.heartbeat()
        assert etsf_bpf.test_run(progs["xdp_sip"].fd, pkt)[0] == XDP_DROP
        st = json.loads(etsfctl("status", "--json", env=etsf_env).stdout)
        assert st["ctl"]["deadman_ms"] == 1000


def test_attach_errors_are_one_line(etsf_env):
    r = etsfctl("attach", "--iface", "etsf-nope0", env=etsf_env, check=False)
    assert r.returncode == 1 and r.stderr.strip() == "etsfctl: error: interface 'etsf-nope0' does not exist"
    r = etsfctl("attach", "--iface", "lo", "--build-dir", "/nonexistent", env=etsf_env, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "not found (run 'etsfctl build' first)" in r.stderr
    assert socket.if_nametoindex("lo") == 1


_RECV_TOS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind(('{uac}', 5072))
s.settimeout(5)
tos = []
try:
    for _ in range({n}):
        data, anc, _f, _a = s.recvmsg(4096, 64)
        tos += [c[2][0] for c in anc if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS]
except socket.timeout:
    pass
print(' '.join(str(t) for t in tos))
"""

_SEND_RESP = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('{uas}', 5060))
for i in range({n}):
    s.sendto(('SIP/2.0 200 OK\\r\\nVia: SIP/2.0/UDP {uac}:5072;branch=z9hG4bK%d\\r\\n'
              'From: <sip:a@{uac}>;tag=1\\r\\nTo: <sip:b@{uas}>;tag=2\\r\\nCall-ID: tos%d@{uac}\\r\\n'
              'CSeq: 1 OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n' % (i, i)).encode(), ('{uac}', 5072))
"""


def _egress_tos(lab, n=3):
    import subprocess
    import sys
    recv = subprocess.Popen(["ip", "netns", "exec", lab.cli_ns, sys.executable, "-c",
                             _RECV_TOS.format(uac=UAC_IP, n=n)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    subprocess.run(["ip", "netns", "exec", lab.srv_ns, sys.executable, "-c",
                    _SEND_RESP.format(uac=UAC_IP, uas=UAS_IP, n=n)], check=True, timeout=30)
    out, _unused = recv.communicate(timeout=30)
    return [int(t) for t in out.split()]


def test_egress_marking_dscp_on_the_wire(lab, etsf_env, tmp_path):
    etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns)
    try:
        pol = tmp_path / "p.yml"
        pol.write_text("version: 1\nmarking: {dscp: EF}\n")
        etsfctl("policy", "apply", str(pol), env=etsf_env)
        assert [t >> 2 for t in _egress_tos(lab)] == [46, 46, 46]
        pol.write_text("version: 1\nmarking: {dscp: AF31}\n")
        etsfctl("policy", "apply", str(pol), env=etsf_env)
        assert [t >> 2 for t in _egress_tos(lab)] == [26, 26, 26]
        pol.write_text("version: 1\nmarking: {enabled: false}\n")
        etsfctl("policy", "apply", str(pol), env=etsf_env)
        assert [t >> 2 for t in _egress_tos(lab)] == [0, 0, 0]
    finally:
        etsfctl("detach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)
