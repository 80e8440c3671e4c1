"""Fast-path constants, Maglev tables, and compiling services into one policy slot (plan, write, release, decode)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import socket
import subprocess
import time
from typing import Any

from .. import layout as L
from .. import paths
from ..errors import PolicyError


PROG = "tc_fastpath"
OBJ = "tc_fastpath.bpf.o"
TC_HANDLE = 0xE75E
TC_EGRESS_HANDLE = 0xE75F   # tc_sip_egress's filter (priority 1)
TC_PRIO = 1

MAP_SVC = "etsf_fp_svc"
MAP_RING = "etsf_fp_ring"
MAP_BACKENDS = "etsf_fp_backends"
MAP_BSTATS = "etsf_fp_bstats"
MAP_AFF = "etsf_fp_aff"
MAP_FLOW = "etsf_fp_flow"
MAP_STATS = "etsf_fp_stats"
FP_MAPS = (MAP_SVC, MAP_RING, MAP_BACKENDS, MAP_BSTATS, MAP_AFF, MAP_FLOW, MAP_STATS)

SLOT_BITS = L.fp_b_slot(0) | L.fp_b_slot(1)
IPPROTO = {"udp": 17, "tcp": 6}
PROTO_NAME = {17: "udp", 6: "tcp"}


class FastpathError(ValueError):
    """A user-facing fast-path failure (one line)."""


def _bpf():
    from .. import bpf
    return bpf


def u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little")


# ---------------------------------------------------------------------------
# Maglev
# ---------------------------------------------------------------------------


def _h(text: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.sha256(salt + text.encode()).digest()[:8], "little")


def maglev(backends: list[tuple[str, int]], m: int = L.FP_RING) -> list[int]:
    """Maglev lookup table (Eisenbud et al., NSDI'16) of size m (prime).

    backends: [(stable name, weight)].  Returns m entries, each an index into
    backends.  Every backend walks its own permutation (offset, skip from two
    hashes of its name); in each round backend i claims ``weight_i`` buckets.
    Removing a backend leaves the others' permutations unchanged, so almost
    only the removed backend's buckets move.
    """
    n = len(backends)
    if n == 0:
        return [L.FP_NONE] * m
    perm = []
    for name, _weight in backends:
        off = _h(name, b"offset") % m
        skip = _h(name, b"skip") % (m - 1) + 1
        perm.append((off, skip))
    nxt = [0] * n
    table = [-1] * m
    filled = 0
    while True:
        for i, (_name, w) in enumerate(backends):
            for _turn in range(w):
                off, skip = perm[i]
                c = (off + nxt[i] * skip) % m
                while table[c] >= 0:
                    nxt[i] += 1
                    c = (off + nxt[i] * skip) % m
                table[c] = i
                nxt[i] += 1
                filled += 1
                if filled == m:
                    return table


# ---------------------------------------------------------------------------
# map helpers
# ---------------------------------------------------------------------------


def maps_present(root: str | None = None) -> bool:
    return paths.maps_present(root, (MAP_SVC, MAP_RING, MAP_BACKENDS))


def addr_bytes(addr: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(addr)
    raw = ip.packed
    return ip.version, raw + b"\0" * (16 - len(raw))


def addr_str(family: int, raw) -> str:
    raw = bytes(raw)
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw[:16]))


def svc_key(slot: int, vip: str, port: int, protocol: str) -> bytes:
    fam, raw = addr_bytes(vip)
    k = L.FpSvcKey(slot=slot, family=fam, proto=IPPROTO[protocol], port=port)
    k.addr[:] = list(raw)
    return bytes(k)


def read_backends(maps) -> dict[int, L.FpBackend]:
    m = maps[MAP_BACKENDS]
    out = {}
    for i in range(L.FP_BACKENDS_MAX):
        raw = m.lookup(u32(i))
        if raw is None:
            continue
        b = L.FpBackend.from_bytes(raw)
        if b.family:
            out[i] = b
    return out


def backend_ident(b: L.FpBackend) -> tuple[int, bytes, int]:
    return int(b.family), bytes(b.addr), int(b.port)


# ---------------------------------------------------------------------------
# egress resolution (host end of the backend's veth, MACs)
# ---------------------------------------------------------------------------


def _ipj(*args) -> Any:
    r = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    try:
        return json.loads(r.stdout)
    except ValueError:
        return []


def _neigh_mac(addr: str, dev: str) -> str | None:
    for n in _ipj("neigh", "show", "to", addr, "dev", dev):
        if n.get("lladdr") and "FAILED" not in n.get("state", []) and "INCOMPLETE" not in n.get("state", []):
            return n["lladdr"]
    return None


def _kick_neigh(addr: str, port: int) -> None:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.sendto(b"\r\n\r\n", (addr, port))      # SIP keep-alive: resolves the neighbour


def resolve_egress(addr: str, port: int, wait: float = 1.0) -> dict[str, Any] | None:
    """{ifindex, ifname, mac, smac, peer} for the backend, or None (kernel then uses the FIB)."""
    rt = _ipj("route", "get", addr)
    if not rt or not rt[0].get("dev"):
        return None
    dev = rt[0]["dev"]
    if rt[0].get("gateway"):
        return None                               # not on-link: FIB + redirect_neigh in the kernel
    mac = _neigh_mac(addr, dev)
    deadline = time.monotonic() + wait
    while mac is None and time.monotonic() < deadline:
        _kick_neigh(addr, port)
        time.sleep(0.05)
        mac = _neigh_mac(addr, dev)
    if mac is None:
        return None
    port_if = dev
    # (not /sys/class/net: under `nsenter --net` /sys still shows the old namespace)
    dlink = _ipj("-d", "link", "show", "dev", dev)
    if dlink and (dlink[0].get("linkinfo") or {}).get("info_kind") == "bridge":
        port_if = None
        r = subprocess.run(["bridge", "-j", "fdb", "show", "br", dev], capture_output=True,
                           text=True, timeout=10, check=False)
        try:
            fdb = json.loads(r.stdout or "[]")
        except ValueError:
            fdb = []
        for e in fdb:
            if e.get("mac", "").lower() == mac.lower() and e.get("ifname") and e.get("ifname") != dev:
                port_if = e["ifname"]
                break
        if port_if is None:
            return None
    link = _ipj("-d", "link", "show", "dev", port_if)
    if not link:
        return None
    kind = (link[0].get("linkinfo") or {}).get("info_kind")
    return {"ifindex": int(link[0]["ifindex"]), "ifname": port_if, "mac": mac,
            "smac": link[0].get("address", "00:00:00:00:00:00"), "peer": kind == "veth"}


def _mac(text: str) -> list[int]:
    return [int(x, 16) for x in text.split(":")]


# ---------------------------------------------------------------------------
# policy slot: plan -> write -> (flip by etsf.policy) -> release
# ---------------------------------------------------------------------------


def plan_slot(services: list[dict[str, Any]], target: int, active: int, maps,
              resolve: bool = True) -> dict[str, Any]:
    """Compile services into map entries for slot `target` WITHOUT writing.
    Raises PolicyError (nothing written) when services need maps that are absent."""
    present = maps_present(maps.pin_root)
    if not present:
        if services:
            raise PolicyError("policy.services", f"fast-path maps not found under {maps.pin_root} "
                                                 "(run 'etsfctl fastpath attach' first)")
        return {"noop": True}
    cur = read_backends(maps)
    by_ident = {backend_ident(b): i for i, b in cur.items()}
    live_bit, tbit = L.fp_b_slot(active), L.fp_b_slot(target)
    new_entries: dict[int, L.FpBackend] = {}
    used = {i for i, b in cur.items() if b.flags & live_bit}
    svc_entries, rings = [], []
    for n, sv in enumerate(services):
        ids = []
        for b in sv["backends"]:
            fam, raw = addr_bytes(b["address"])
            ident = (fam, raw, b["port"])
            bid = by_ident.get(ident)
            if bid is None or bid in new_entries:
                bid = next((i for i in range(L.FP_BACKENDS_MAX)
                            if i not in used and i not in new_entries
                            and (i not in cur or backend_ident(cur[i]) == ident or not cur[i].flags & live_bit)),
                           None)
                if bid is None:
                    raise PolicyError("policy.services", "no free fast-path backend id")
            e = L.FpBackend.from_buffer_copy(bytes(cur[bid])) if (
                bid in cur and backend_ident(cur[bid]) == ident) else L.FpBackend(up=1)
            e.addr[:] = list(raw)
            e.port = b["port"]
            e.family = fam
            flags = (int(e.flags) & live_bit) | tbit
            eg = resolve_egress(b["address"], b["port"]) if resolve else None
            if eg:
                flags |= L.FP_B_L2 | (L.FP_B_PEER if eg["peer"] else 0)
                e.ifindex = eg["ifindex"]
                e.mac[:] = _mac(eg["mac"])
                e.smac[:] = _mac(eg["smac"])
            elif e.flags & L.FP_B_L2 and e.flags & live_bit:
                flags |= int(e.flags) & (L.FP_B_L2 | L.FP_B_PEER)   # keep the live resolution
            else:
                e.ifindex = 0
            e.flags = flags
            e.weight[target] = b["weight"]
            e.svc[target] = n
            new_entries[bid] = e
            ids.append((bid, b))
        table = maglev([(f"{b['address']}|{b['port']}", b["weight"]) for _bid, b in ids])
        ring = L.FpRing()
        for j, t in enumerate(table):
            ring.backend[j] = ids[t][0] if t != L.FP_NONE else L.FP_NONE
        ridx = target * L.FP_SVC_MAX + n
        rings.append((ridx, bytes(ring)))
        v = L.FpSvc(ring=ridx, flags=L.FP_S_CALLID, n_backends=len(ids))
        v.name = sv["name"].encode()[: L.FP_NAME_LEN - 1]
        svc_entries.append((svc_key(target, sv["vip"], sv["port"], sv["protocol"]), bytes(v)))
    # target-slot membership of backends not in the new set is cleared
    for i, b in cur.items():
        if i not in new_entries and b.flags & tbit:
            e = L.FpBackend.from_buffer_copy(bytes(b))
            e.flags &= ~tbit
            if not e.flags & SLOT_BITS:
                e = L.FpBackend()
            new_entries[i] = e
    return {"noop": False, "target": target, "active": active, "backends": new_entries,
            "rings": rings, "services": svc_entries}


def slot_keys(m, slot: int) -> list[bytes]:
    return [bytes(k) for k in m.keys() if L.FpSvcKey.from_bytes(k).slot == slot]


def write_slot(plan: dict[str, Any], maps) -> None:
    """Write the inactive slot's services, rings and backend entries (not live yet)."""
    if plan.get("noop"):
        return
    sm = maps[MAP_SVC]
    for k in slot_keys(sm, plan["target"]):
        sm.delete(k)
    for i, e in sorted(plan["backends"].items()):
        maps[MAP_BACKENDS].update(u32(i), bytes(e))
    for idx, raw in plan["rings"]:
        maps[MAP_RING].update(u32(idx), raw)
    for k, v in plan["services"]:
        sm.update(k, v)


def release_slot(old: int, maps, plan: dict[str, Any] | None = None) -> None:
    """After the flip: the old slot's services and backend membership are garbage."""
    if plan is not None and plan.get("noop"):
        return
    if not maps_present(maps.pin_root):
        return
    sm = maps[MAP_SVC]
    for k in slot_keys(sm, old):
        sm.delete(k)
    obit = L.fp_b_slot(old)
    for i, b in read_backends(maps).items():
        if b.flags & obit:
            e = L.FpBackend.from_buffer_copy(bytes(b))
            e.flags &= ~obit
            if not e.flags & SLOT_BITS:
                e = L.FpBackend()
            maps[MAP_BACKENDS].update(u32(i), bytes(e))


def decode_slot(slot: int, maps) -> list[dict[str, Any]]:
    """The services of one slot, in the policy's canonical form."""
    if not maps_present(maps.pin_root):
        return []
    backends = read_backends(maps)
    sbit = L.fp_b_slot(slot)
    out = []
    sm = maps[MAP_SVC]
    for k in slot_keys(sm, slot):
        key = L.FpSvcKey.from_bytes(k)
        v = L.FpSvc.from_bytes(sm.lookup(k))
        n = v.ring % L.FP_SVC_MAX
        bl = [{"address": addr_str(b.family, b.addr), "port": int(b.port),
               "weight": int(b.weight[slot])}
              for _bid, b in sorted(backends.items()) if b.flags & sbit and b.svc[slot] == n]
        out.append({"name": v.name.decode(errors="replace"), "vip": addr_str(key.family, key.addr),
                    "port": int(key.port), "protocol": PROTO_NAME.get(key.proto, str(key.proto)),
                    "affinity": "call-id", "backends": bl})
    return out
