"""Node transit time for the path benchmark: load bench/bpf/transit.bpf.c, attach its four
TC programs at the node's edges (the UAC's veth, the pod's interface), read and clear the
sightings, and match them.

A sighting is (payload hash, point) -> (kernel time, times seen, payload length, first 16
payload bytes).  Points: 0 UAC egress, 1 pod ingress (requests: 0 -> 1), 2 pod egress, 3 UAC
ingress (responses: 2 -> 3).  The node rewrites headers only, so the payload hash names one
datagram at both ends; a key seen more than once at a point (a retransmission, or two
identical datagrams) is ambiguous and dropped from the samples, and counted.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path

POINTS = {"uac_egress": 0, "pod_ingress": 1, "pod_egress": 2, "uac_ingress": 3}
DIRECTIONS = {"request": (0, 1), "response": (2, 3)}
_KEY = struct.Struct("<QII")
_VAL = struct.Struct("<QII16s")
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name: str):
    """Run the block in network namespace /run/netns/<name> (this thread), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        if _libc.setns(own, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(target)
        os.close(own)


def label(head: bytes) -> str:
    """'INVITE', 'ACK', 'BYE', ... for a request, '100', '180', '200', ... for a response."""
    text = head.split(b"\0", 1)[0].decode("latin-1")
    if text.startswith("SIP/2.0 "):
        return text[8:11]
    return text.split(" ", 1)[0] or "?"


def decode(items) -> list[dict]:
    """Map items (key bytes, value bytes) -> [{hash, point, ts, seen, len, what}]."""
    out = []
    for k, v in items:
        h, point, _pad = _KEY.unpack(k[:_KEY.size])
        ts, seen, ln, head = _VAL.unpack(v[:_VAL.size])
        out.append({"hash": h, "point": point, "ts": ts, "seen": seen, "len": ln, "what": label(head)})
    return out


def match(events: list[dict]) -> dict:
    """Transit samples (ns) per direction and per message kind, with the counts that show
    how complete the matching was: {"request": {"ns": [...], "by_what": {"INVITE": [...]},
    "unmatched_departures": n, "unmatched_arrivals": n, "ambiguous": n, "negative": n}, ...}."""
    by = {}
    for e in events:
        by.setdefault(e["hash"], {})[e["point"]] = e
    out = {}
    for dname, (a, b) in DIRECTIONS.items():
        d = {"ns": [], "by_what": {}, "unmatched_departures": 0, "unmatched_arrivals": 0, "ambiguous": 0,
             "negative": 0}
        for pts in by.values():
            ea, eb = pts.get(a), pts.get(b)
            if ea is None and eb is None:
                continue
            if ea is None:
                d["unmatched_arrivals"] += 1
                continue
            if eb is None:
                d["unmatched_departures"] += 1
                continue
            if ea["seen"] != 1 or eb["seen"] != 1:
                d["ambiguous"] += 1
                continue
            dt = eb["ts"] - ea["ts"]
            if dt < 0:
                d["negative"] += 1
                continue
            d["ns"].append(dt)
            d["by_what"].setdefault(ea["what"], []).append(dt)
        out[dname] = d
    return out


class Transit:
    """The loaded programs and their maps (one set per benchmark run)."""

    def __init__(self, build_dir: Path, pin_root: str):
        from etsf import bpf
        from etsf.build import build
        self.bpf = bpf
        obj = Path(build(Path(__file__).resolve().parent / "bpf", build_dir)["objects"][0])
        self.pin_root = pin_root
        self.progs = bpf.load_object(obj, pin_root)
        # maps without a pin: reach them through the programs' map ids
        ids = bpf.prog_info(self.progs["transit_uac_egress"].id)["map_ids"]
        self.events = self.counts = None
        for mid in ids:
            m = bpf.Map.from_id(mid)
            if m.name == "transit_events":
                self.events = m
            elif m.name == "transit_counts":
                self.counts = m
            else:
                m.close()
        if self.events is None or self.counts is None:
            raise RuntimeError("transit maps not found")
        self.attached: list[tuple[str, int, str]] = []

    def attach(self, ns: str, ifname: str, side: str):
        """side 'uac' or 'pod': the two programs of that edge on ifname in netns ns."""
        progs = {"uac": (("egress", "transit_uac_egress"), ("ingress", "transit_uac_ingress")),
                 "pod": (("ingress", "transit_pod_ingress"), ("egress", "transit_pod_egress"))}[side]
        with in_netns(ns):
            idx = _if_index(ifname)
            for direction, prog in progs:
                # priority 1 so it runs before anything eTSF puts on the same hook
                self.bpf.tc_attach(idx, self.progs[prog].fd, direction, handle=0xB7, priority=1)
                self.attached.append((ns, idx, direction))

    def detach_all(self):
        for ns, idx, direction in self.attached:
            with contextlib.suppress(Exception), in_netns(ns):
                self.bpf.tc_detach(idx, direction, handle=0xB7, priority=1)
        self.attached.clear()

    def take(self) -> tuple[list[dict], dict]:
        """Read every sighting and empty the map; return (events, counters)."""
        items = self.events.items()
        for k, _v in items:
            self.events.delete(k)
        per = self.counts.items_percpu()
        tot = {}
        for k, vals in per:
            i = struct.unpack("<I", k[:4])[0]
            tot[("recorded", "map_full", "sip_seen")[i]] = sum(struct.unpack("<Q", v[:8])[0] for v in vals)
        return decode(items), tot

    def close(self):
        self.detach_all()
        for m in (self.events, self.counts):
            with contextlib.suppress(Exception):
                m.close()
        for p in self.progs.values():
            p.close()


def _if_index(name: str) -> int:
    idx = _libc.if_nametoindex(name.encode())
    if not idx:
        raise OSError(f"no interface {name} in this namespace")
    return idx
