"""xdp_sip -> TC ingress hand-off in XDP metadata (struct etsf_meta), through BPF_PROG_TEST_RUN.

BPF_PROG_TEST_RUN runs XDP on the loopback device of this netns (ingress_ifindex of lo) and
returns the frame from data_meta on: the metadata xdp_sip leaves in front of a passed packet
comes back as the first bytes of data_out, and ctx_out.data is its length.
"""
import ctypes
import socket

import pytest

from etsf import bpf
from etsf import layout as L

from .helpers import M, R, V, sip_request, sip_response, udp4

LO = socket.if_nametoindex("lo")
META = ctypes.sizeof(L.Meta)


class XdpMd(ctypes.Structure):
    """struct xdp_md (uapi): BPF_PROG_TEST_RUN ctx in/out."""
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index",
                 "egress_ifindex")]


@pytest.fixture
def ifcfg(env):
    m = bpf.open_map("etsf_if_cfg", env.root)
    key = LO.to_bytes(4, "little")

    def set_flags(flags):
        m.update(key, bytes(L.IfCfg(flags=flags)))

    yield set_flags
    if key in m.keys():
        m.delete(key)
    m.close()


def run(env, frame):
    """(retval, metadata bytes, frame bytes) of one xdp_sip run."""
    md = XdpMd(data=0, data_end=len(frame), ingress_ifindex=LO)
    ret, out, _ns, ctx_out = bpf.test_run_ctx(env.progs["xdp_sip"].fd, frame, ctx=bytes(md))
    md_out = XdpMd.from_buffer_copy(ctx_out)
    meta_len = md_out.data - md_out.data_meta
    return ret, out[:meta_len], out[meta_len:]


def test_passed_invite_carries_its_result(env, ifcfg):
    env.set_policy()
    ifcfg(L.IF_F_XDP)
    cid = "meta-1@198.18.1.10"
    frame = udp4(sip_request("INVITE", callid=cid))
    before = env.counter(L.Hook.XDP, M.INVITE, V.PASS, R.OK)
    ret, meta, rest = run(env, frame)
    assert ret == bpf.XDP_PASS
    assert rest == frame
    assert len(meta) == META == 16
    m = L.Meta.from_buffer_copy(meta)
    assert (m.magic, m.method, m.verdict, m.reason, m.flags) == (
        L.META_MAGIC, M.INVITE, V.PASS, R.OK, L.META_F_CALLID)
    assert m.callid_hash == L.fnv1a64(cid.encode()) == env.last().callid_hash
    assert meta[:4] == b"ETSF"
    assert env.counter(L.Hook.XDP, M.INVITE, V.PASS, R.OK) - before == 1


def test_response_and_policy_reason(env, ifcfg):
    """A response passes with its method and the policy's reason (no policy here)."""
    ifcfg(L.IF_F_XDP | L.IF_F_STEER)
    ret, meta, _rest = run(env, udp4(sip_response(180, "Ringing", callid="meta-2@x")))
    assert ret == bpf.XDP_PASS
    m = L.Meta.from_buffer_copy(meta)
    assert (m.magic, m.method, m.verdict, m.reason, m.flags) == (
        L.META_MAGIC, M.RESPONSE, V.PASS, R.NO_POLICY, L.META_F_CALLID)
    assert m.callid_hash == L.fnv1a64(b"meta-2@x")


@pytest.mark.parametrize("flags", [None, L.IF_F_CLASSIFY | L.IF_F_STEER])
def test_no_metadata_without_the_xdp_flag(env, ifcfg, flags):
    env.set_policy()
    if flags is not None:
        ifcfg(flags)
    frame = udp4(sip_request("INVITE", callid="meta-3@x"))
    ret, meta, rest = run(env, frame)
    assert ret == bpf.XDP_PASS
    assert meta == b""
    assert rest == frame


def test_no_metadata_for_what_xdp_did_not_pass_as_sip(env, ifcfg):
    env.set_policy()
    ifcfg(L.IF_F_XDP)
    env.acl("198.18.1.0/24", L.AclAction.DENY)
    ret, meta, _rest = run(env, udp4(sip_request("INVITE", callid="meta-4@x")))
    assert (ret, meta) == (bpf.XDP_DROP, b"")
    env.reset()
    env.set_policy()
    for frame in (udp4(b"hello, not SIP"), udp4(b"hello", sport=40000, dport=40001)):
        ret, meta, rest = run(env, frame)
        assert (ret, meta, rest) == (bpf.XDP_PASS, b"", frame)
