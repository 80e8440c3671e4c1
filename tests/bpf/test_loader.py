"""etsf.bpf / etsf.build: load, pinned-map reuse, failure logs, attach/replace/detach."""
import os
import subprocess
import uuid

import pytest

from etsf import bpf
from etsf import layout as L
from etsf.build import BuildError, build, compile_object

from .helpers import M, R, V, sip_request, udp4


def test_build_is_stamped(objects, tmp_path_factory):
    from pathlib import Path
    out = Path(next(iter(objects.values()))).parent
    res = build(Path(__file__).resolve().parents[2] / "bpf", out)
    assert res["changed"] is False
    assert sorted(Path(o).name for o in res["objects"]) == sorted(objects)


def test_build_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.bpf.c").write_text("int x = ;\n")
    with pytest.raises(BuildError) as ei:
        build(src, tmp_path / "out")
    assert "broken.bpf.c" in str(ei.value) and "error" in str(ei.value)


BAD_PROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("xdp")
int bad(struct xdp_md *ctx)
{
    unsigned char *p = (void *)(long)ctx->data;
    return p[100];          /* no bounds check: verifier must reject */
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_verifier_rejection_has_log(objects, tmp_path):
    from pathlib import Path
    out = Path(next(iter(objects.values()))).parent      # has vmlinux.h
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROG)
    obj = compile_object(src, tmp_path, out)
    root = f"/sys/fs/bpf/etsf-bad-{os.getpid()}"
    try:
        with pytest.raises(bpf.BpfError) as ei:
            bpf.load_object(obj, root)
        assert "\n" not in str(ei.value)
        assert "invalid access to packet" in ei.value.log or "R" in ei.value.log
    finally:
        subprocess.run(["rm", "-rf", root], check=False)


def test_reload_reuses_pinned_maps(loaded, objects):
    root = loaded["root"]
    ctl = loaded["maps"]["etsf_ctl"]
    c = L.Ctl(generation=4242, flags=L.CTL_F_RECORD)
    ctl.update(bytes(4), bytes(c))
    old_ids = {n: m.id for n, m in loaded["maps"].items()}
    progs = bpf.load_object(objects["xdp_sip.bpf.o"], root)    # "upgrade"
    try:
        info = bpf.prog_info(progs["xdp_sip"].id)
        for n in ("etsf_ctl", "etsf_stats", "etsf_rl"):
            assert old_ids[n] in info["map_ids"]
        assert L.Ctl.from_bytes(bpf.open_map("etsf_ctl", root).lookup(bytes(4))).generation == 4242
        assert progs["xdp_sip"].id != loaded["progs"]["xdp_sip"].id
    finally:
        for p in progs.values():
            p.close()


def test_pin_and_unpin(loaded):
    path = os.path.join(loaded["root"], "progs", "xdp_sip")
    bpf.pin_program(loaded["progs"]["xdp_sip"], path)
    p = bpf.Program.open_pinned(path)
    assert p.id == loaded["progs"]["xdp_sip"].id and p.name == "xdp_sip"
    p.close()
    bpf.pin_program(loaded["progs"]["xdp_sip"], path)       # re-pin replaces
    bpf.unpin(path)
    assert not os.path.exists(path)
    bpf.unpin(path)                                          # idempotent


def test_map_api(env):
    m = env.maps["etsf_rl"]
    k = L.RlKey(family=4, rl_class=1, prefix=32)
    k.addr[:4] = [198, 18, 9, 9]
    assert m.lookup(bytes(k)) is None
    m.update(bytes(k), bytes(L.RlState(tat_ns=1, passed=2, dropped=3)))
    assert L.RlState.from_bytes(m.lookup(bytes(k))).dropped == 3
    assert bytes(k) in m.keys()
    assert dict(m.items())[bytes(k)][:24] == bytes(L.RlState(tat_ns=1, passed=2, dropped=3))
    assert m.delete(bytes(k)) is True
    assert m.delete(bytes(k)) is False
    with pytest.raises(bpf.BpfError):
        m.update(b"short", b"x")


def test_percpu_items_batch(env):
    env.set_policy()
    env.xdp(udp4(sip_request("INFO")), V.PASS, M.INFO, R.OK)
    st = env.maps["etsf_stats"]
    items = dict(st.items())
    assert len(items) == L.STATS_SLOTS
    idx = L.stats_idx(0, M.INFO, V.PASS, R.OK).to_bytes(4, "little")
    assert items[idx] == st.lookup(idx)
    assert len(st.lookup_percpu(idx)) == st.ncpus


def test_prog_info(loaded):
    p = loaded["progs"]["xdp_sip"]
    info = bpf.prog_info(p.id)
    assert (info["id"], info["name"], info["type"], info["tag"]) == (p.id, "xdp_sip", "xdp", p.tag)
    assert len(info["map_ids"]) >= 8


def test_test_run_repeat(loaded):
    ret, out, ns = bpf.test_run(loaded["progs"]["xdp_count"].fd, udp4(b"x"), repeat=1000)
    assert ret == bpf.XDP_PASS and out == udp4(b"x") and ns >= 0


@pytest.fixture
def veth():
    a = f"et{uuid.uuid4().hex[:8]}"
    b = a + "p"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    subprocess.run(["ip", "link", "set", a, "up"], check=True)
    subprocess.run(["ip", "link", "set", b, "up"], check=True)
    try:
        yield int(open(f"/sys/class/net/{a}/ifindex").read()), a
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_xdp_attach_replace_detach(loaded, objects, veth, mode):
    ifindex, _unused = veth
    p1 = loaded["progs"]["xdp_sip"]
    assert bpf.xdp_query(ifindex)["prog_id"] == 0
    bpf.xdp_attach(ifindex, p1.fd, mode=mode)
    q = bpf.xdp_query(ifindex)
    assert q == {**q, "prog_id": p1.id, "mode": mode}
    p2 = loaded["progs"]["xdp_count"]
    bpf.xdp_attach(ifindex, p2.fd, mode=mode, replace_prog_id=p1.id)     # atomic swap
    assert bpf.xdp_query(ifindex)["prog_id"] == p2.id
    with pytest.raises(bpf.BpfError):       # stale expectation refused
        bpf.xdp_attach(ifindex, p1.fd, mode=mode, replace_prog_id=p1.id)
    assert bpf.xdp_query(ifindex)["prog_id"] == p2.id
    bpf.xdp_detach(ifindex, mode=mode, expected_prog_id=p2.id)
    assert bpf.xdp_query(ifindex)["prog_id"] == 0


def test_tc_attach_query_detach(loaded, veth):
    ifindex, _unused = veth
    p = loaded["progs"]["tc_sip_egress"]
    assert bpf.tc_query(ifindex) == 0
    bpf.tc_attach(ifindex, p.fd)
    assert bpf.tc_query(ifindex) == p.id
    bpf.tc_attach(ifindex, p.fd)             # replace in place, no error
    assert bpf.tc_query(ifindex) == p.id
    bpf.tc_detach(ifindex)
    assert bpf.tc_query(ifindex) == 0
    bpf.tc_detach(ifindex)                   # idempotent


def test_open_missing_map(loaded):
    with pytest.raises(bpf.BpfError):
        bpf.open_map("nope", loaded["root"])


def test_monotonic_clock_matches_ktime(env):
    # fresh heartbeat from monotonic_ns() with a 5 s dead-man: not dead
    env.set_policy()
    env.set_ctl(deadman_ns=5 * 10 ** 9, heartbeat_ns=bpf.monotonic_ns())
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    env.set_ctl(deadman_ns=5 * 10 ** 9, heartbeat_ns=bpf.monotonic_ns() - 6 * 10 ** 9)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.UNKNOWN, R.DEADMAN)
