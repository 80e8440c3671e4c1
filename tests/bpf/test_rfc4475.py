"""RFC 4475 torture messages over UDP to 5060 from an unlimited source: none is
dropped; valid requests are classified with their start-line method."""
import csv
import os
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, Raw, fragment

from etsf import bpf
from etsf import layout as L

from .helpers import DST4, SRC4, M, R, V, udp4

# The corpus ships in the project's shared reference folder beside the checkout.
# ETSF_RFC4475_DIR names it; a relative path (and the default) is taken from the checkout's
# root, as `make test` does when it checks the corpus before pytest starts.
REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.path.normpath(
    REPO / os.environ.get("ETSF_RFC4475_DIR", "../shared/reference/rfc4475")))
KNOWN = {m.name for m in M if m not in (M.UNKNOWN, M.OTHER, M.RESPONSE)}


def _rows():
    # Without the corpus the module fails to collect: an empty parametrization would
    # otherwise turn every torture case into a skip.
    if not (CORPUS / "INDEX.tsv").is_file():
        pytest.fail(f"ETSF_RFC4475_DIR: no RFC 4475 corpus at {CORPUS} (INDEX.tsv missing)",
                    pytrace=False)
    with open(CORPUS / "INDEX.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()


def test_corpus_present():
    assert len(ROWS) == 49, f"ETSF_RFC4475_DIR: {CORPUS}/INDEX.tsv lists {len(ROWS)} messages, not 49"


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_torture_message(env, row):
    env.set_policy()            # valid policy, no limits, no ACL
    msg = (CORPUS / f"{row['name']}.dat").read_bytes()
    first = row["first_line_method_or_status"]
    pkt = IP(src=SRC4, dst=DST4) / UDP(sport=5060, dport=5060) / Raw(msg)
    if len(bytes(pkt)) + 14 > 1514:
        # larger than one Ethernet frame: arrives as IP fragments, all pass
        for f in fragment(pkt, fragsize=1480):
            env.xdp(bytes(Ether() / f), V.PASS, M.UNKNOWN, R.FRAGMENT)
        return
    ret, li = env.xdp_raw(udp4(msg))
    assert ret == bpf.XDP_PASS
    assert li.verdict == V.PASS
    if row["kind"] == "valid":
        if first in KNOWN:
            assert li.method == M[first], li
            assert li.reason == R.OK, li
        elif first.isdigit():
            assert (li.method, li.status, li.reason) == (M.RESPONSE, int(first), R.OK), li
        else:
            assert (li.method, li.reason) == (M.OTHER, R.OK), li
    else:
        # invalid / application messages: never dropped; when classified, the
        # method is the start-line method
        if li.method not in (M.UNKNOWN,) and first in KNOWN:
            assert li.method == M[first], li


def test_torture_all_counted_once(env):
    env.set_policy()
    b = env.counters_total()
    n = 0
    for row in ROWS:
        msg = (CORPUS / f"{row['name']}.dat").read_bytes()
        if len(msg) > 1400:
            continue
        ret, _unused = env.xdp_raw(udp4(msg))
        assert ret == bpf.XDP_PASS
        n += 1
    a = env.counters_total()
    delta = sum(a.values()) - sum(b.values())
    assert delta == n
    drops = sum(a.get(k, 0) - b.get(k, 0) for k in a if L.stats_unidx(k)[2] == V.DROP)
    assert drops == 0
