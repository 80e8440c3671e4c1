"""The SIP parser's work per message, counted: bpf_loop steps (etsf_parse_state.iters).

A step of the parser is a bpf_loop callback call, the unit its cost in traffic grows with. A
header line of up to twelve words costs one step (the rest of the line and the next line's name in
one step), a wanted header starts its value in the step that names it, a Call-ID of up to 48 bytes
is hashed in one step and "CSeq: <digits> <known method>" is read in one.
"""
import ctypes
import sys
from pathlib import Path

import pytest

from etsf import bpf
from etsf import layout as L
from etsf.bpfmaps import Map

from .helpers import M, R, V, sip_request, sip_response, udp4

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import datapath  # noqa: E402  (the benchmark's 1 KB INVITE)


SCRATCH_SLACK = 128     # ETSF_SCRATCH_SLACK: the word reads' tail after the copied bytes


@pytest.fixture(scope="module")
def scratch(loaded):
    info = bpf.prog_info(loaded["progs"]["xdp_sip"].id)
    for mid in info["map_ids"]:
        m = Map.from_id(mid)
        if m.name == "etsf_scratch":
            assert m.value_size == ctypes.sizeof(L.ParseState) + L.PARSE_BYTES + SCRATCH_SLACK
            yield m
            m.close()
            return
        m.close()
    pytest.fail("xdp_sip has no etsf_scratch map")


def steps(env, scratch, payload, method, reason=R.OK):
    """Parser steps for one run of xdp_sip on payload (the parse state is zeroed first)."""
    scratch.update_percpu(bytes(4), [bytes(scratch.value_size)] * scratch.ncpus)
    env.xdp(udp4(payload), V.PASS, method, reason)
    ran = [L.ParseState.from_buffer_copy(v) for v in scratch.lookup_percpu(bytes(4))]
    ran = [st for st in ran if st.iters]
    assert len(ran) == 1, ran
    return ran[0].iters


def test_invite_1k_steps(env, scratch):
    env.set_policy()
    msg = datapath.invite_1k()
    li_steps = steps(env, scratch, msg, M.INVITE)
    # the parse stops at CSeq with all three headers found; the rules per line are the tests
    # below (29 steps when a step was one state, 10 with eight-word line scans and 32 bytes of
    # Call-ID a step: the 70-byte Via and the 39-byte Call-ID took two each; 8 while the To value
    # took a step for each of '<', '>' and its LF; 6 while the From after it took a step of its own
    # to be named)
    assert li_steps == 5, li_steps
    li = env.last()
    assert (li.cseq, li.cseq_method, li.has_callid) == (314159, M.INVITE, 1)


@pytest.mark.parametrize("line", [b"X-A: 1\r\n", b"X-Long: " + b"y" * 53 + b"\r\n",
                                  b"X-Long: " + b"y" * 86 + b"\r\n"])
def test_one_step_per_skipped_line(env, scratch, line):
    """Each header line the parser does not want, up to 96 bytes, costs exactly one step."""
    assert len(line) <= 96
    env.set_policy()
    base = steps(env, scratch, sip_request("OPTIONS"), M.OPTIONS)
    for k in (1, 4, 16):
        msg = sip_request("OPTIONS").replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + line * k)
        assert steps(env, scratch, msg, M.OPTIONS) == base + k, k


def test_long_line_steps(env, scratch):
    """A skipped line longer than twelve words takes a step per 97 bytes, not per byte."""
    env.set_policy()
    base = steps(env, scratch, sip_request("OPTIONS"), M.OPTIONS)
    for n in (100, 300, 600):
        line = b"X-Long: " + b"y" * (n - 10) + b"\r\n"
        msg = sip_request("OPTIONS").replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + line)
        assert steps(env, scratch, msg, M.OPTIONS) == base + (n - 1) // 97 + 1, n


@pytest.mark.parametrize("n", [8, 31, 32, 33, 47, 48, 49, 64, 96, 97, 120])
def test_callid_steps(env, scratch, n):
    """A Call-ID takes one step more for each 48 bytes the step that names it hashed whole."""
    env.set_policy()
    base = steps(env, scratch, sip_request("BYE", callid="c" * 7), M.BYE)
    assert steps(env, scratch, sip_request("BYE", callid="c" * n), M.BYE) == base + n // 48


@pytest.mark.parametrize("cseq_line,cseq,method,extra_steps", [
    (b"CSeq: 9 INVITE\r\n", 9, M.INVITE, 0),
    (b"CSeq: 4294967295 REGISTER\r\n", 4294967295, M.REGISTER, 0),    # eight bytes, no terminator in the word
    (b"CSeq: 9 BYE \r\n", 9, M.BYE, 0),
    (b"CSeq: 9 ACK\t\r\n", 9, M.ACK, 0),
    # the state path, a byte or a token a step: nine bytes, two spaces, an unknown method
    (b"CSeq: 9 SUBSCRIBE\r\n", 9, M.SUBSCRIBE, 5),
    (b"CSeq: 9  INVITE\r\n", 9, M.INVITE, 6),
    (b"CSeq: 9 FOO\r\n", 9, M.OTHER, 5),
])
def test_cseq_in_one_step(env, scratch, cseq_line, cseq, method, extra_steps):
    env.set_policy()
    msg = sip_request("INVITE").replace(b"CSeq: 314159 INVITE\r\n", cseq_line)
    assert cseq_line in msg
    base = steps(env, scratch, sip_request("INVITE"), M.INVITE)
    assert steps(env, scratch, msg, M.INVITE) == base + extra_steps
    li = env.last()
    assert (li.cseq, li.cseq_method) == (cseq, method)


@pytest.mark.parametrize("tail,tagged", [
    (b"\r\n", False),
    (b";tag=x1\r\n", True),
    (b"\r\n ;tag=x2\r\n", True),        # folded: the next line continues the value
    (b"\r\n\t;tag=x3\r\n", True),
])
def test_to_end_and_folding(env, scratch, tail, tagged):
    """The byte after the To line's LF says folding or end in the same step."""
    env.set_policy()
    msg = sip_response(to_tag=None).replace(b"To: Bob <sip:bob@example.com>\r\n",
                                            b"To: Bob <sip:bob@example.com>" + tail)
    steps(env, scratch, msg, M.RESPONSE)
    li = env.last()
    assert li.has_to_tag == int(tagged)
    assert li.status == 200 and li.has_callid == 1


def test_to_last_copied_byte(env, scratch):
    """A To line whose LF is the message's last byte: no byte says whether it folds, so the
    message is cut short (SIP_TRUNC), as without the shortcut; what was read is kept."""
    env.set_policy()
    msg = (b"SIP/2.0 180 Ringing\r\nCall-ID: t1@x\r\nCSeq: 5 INVITE\r\n"
           b"To: <sip:b@x>;tag=9\r\n")
    steps(env, scratch, msg, M.RESPONSE, R.SIP_TRUNC)
    li = env.last()
    assert (li.has_to_tag, li.cseq, li.status) == (1, 5, 180)


@pytest.mark.parametrize("to_line,tagged,extra_steps", [
    (b"To: Bob <sip:bob@example.com>\r\n", False, 0),                   # '<' to the line's end: one step
    (b"To: <sip:bob@example.com>\r\n", False, 0),
    (b"To: <sip:bob@example.com;transport=udp>\r\n", False, 0),        # ';' inside <...> is no parameter
    (b"To: <sip:bob@example.com>;tag=a1\r\n", True, 1),                 # ";tag" in the same step, the LF in one
    (b"To: <sip:bob@example.com>;x=1;tag=a5\r\n", True, 3),             # another parameter first
    (b"To: <sip:bob@example.com>; tag=a6\r\n", True, 4),                # LWS after ';': the state path
    (b"To: <sip:bob@example.com>;tagx=1\r\n", False, 1),
    (b"To: <sip:bob@example.com>\r\n ;tag=a2\r\n", True, 5),           # folded after '>'
    (b"To: <sip:bob@example.com>\n", False, 1),                          # a bare LF: the state path
    (b"To: <sip:b\"ob@example.com>;tag=a3\r\n", False, 25),             # a quote inside <...>: a byte a step
    (b"To: <sip:" + b"b" * 60 + b"@example.com>\r\n", False, 2),          # '>' past the six words
    (b"To: <sip:bob@example.com;tag=no>\r\n", False, 0),                # a tag inside the URI is none
    (b"To: \"B<o>b\" <sip:bob@example.com>;tag=a4\r\n", True, 8),       # '<' and '>' quoted in the name
])
def test_to_angle_in_one_step(env, scratch, to_line, tagged, extra_steps):
    """After the To value's '<', its '>' and the end of the line, or a ";tag" right after '>', are
    found in the same step; what is not (another parameter, folding, a bare LF, a quote, a long URI)
    goes on a delimiter a step."""
    env.set_policy()
    base = steps(env, scratch, sip_request("OPTIONS"), M.OPTIONS)
    msg = sip_request("OPTIONS").replace(b"To: Bob <sip:bob@example.com>\r\n", to_line)
    assert to_line in msg
    assert steps(env, scratch, msg, M.OPTIONS) == base + extra_steps
    assert env.last().has_to_tag == int(tagged)


@pytest.mark.parametrize("after_to,callid,steps_more", [
    (b"", b"a84b4c76e66710@pc33.example.com", 0),              # From: skipped from the step that ends To
    (b"X-A: 1\r\n", b"a84b4c76e66710@pc33.example.com", 1),    # one more unwanted line, one more step
    (b"i: zz1@x\r\n", b"zz1@x", 1),                            # a Call-ID right after To: named in the next
    (b"Call-ID: zz2@x\r\n", b"zz2@x", 1),                      # step, then From takes a step to be named
    (b"c: x\r\n", b"a84b4c76e66710@pc33.example.com", 2),      # a 'c' line is named, then skipped
])
def test_line_after_to(env, scratch, after_to, callid, steps_more):
    """The step that ends the To header decides the next line as the header-name state would: an
    unwanted name is skipped from that step on, a wanted or possibly wanted one is named in the next;
    the message's first Call-ID is the one hashed."""
    env.set_policy()
    base = steps(env, scratch, sip_request("OPTIONS"), M.OPTIONS)
    msg = sip_request("OPTIONS").replace(b"To: Bob <sip:bob@example.com>\r\n",
                                         b"To: Bob <sip:bob@example.com>\r\n" + after_to)
    if after_to.lower().startswith((b"i:", b"call-id:")):
        msg = msg.replace(b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b"")
    assert steps(env, scratch, msg, M.OPTIONS) == base + steps_more
    assert env.last().callid_hash == L.fnv1a64(callid)
