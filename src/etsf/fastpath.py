"""eTSF fast path (issue 5): in-kernel steering of SIP to local proxy backends.

Kernel side: ``bpf/tc_fastpath.bpf.c`` (TC clsact ingress, program
``tc_fastpath``) + ``bpf/etsf_fastpath.h``.  This module is the host side:

* services of the policy (validated by :mod:`etsf.policy`, the only owner of the
  schema) are compiled here into per-slot map entries -- service keys carry
  the policy slot byte, every service gets a Maglev table per slot, backends
  carry per-slot membership bits -- written into the INACTIVE slot by
  ``policy.apply`` before its single ``etsf_ctl`` flip (:func:`plan_slot`,
  :func:`write_slot`, :func:`release_slot`), so services swap atomically with
  the rest of the policy and a rejected policy changes nothing;
* each backend's egress is resolved (route -> bridge FDB port -> host end of
  its veth, MACs) so the kernel can ``bpf_redirect_peer`` straight into the
  backend's namespace; unresolved backends use ``bpf_fib_lookup`` /
  ``bpf_redirect_neigh`` in the kernel;
* health: SIP OPTIONS probe per backend (interval, threshold) sets
  ``etsf_fp_backends[id].up``; down backends get no new dialogs;
* attach/detach of the TC ingress program, counters.

Every BPF operation goes through :mod:`etsf.bpf`.
"""
from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import time
import uuid
from typing import Any

from . import inputs
from . import layout as L

PROG = "tc_fastpath"
OBJ = "tc_fastpath.bpf.o"
TC_HANDLE = 0xE75E          # tc_sip_egress uses 0xE75F
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
    from . import bpf
    return bpf


def _u32(v: int) -> bytes:
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


def pin_root() -> str:
    from . import policy
    return policy.resolve_pin_root(None)


def maps_present(root: str | None = None) -> bool:
    root = root or pin_root()
    return all(os.path.exists(os.path.join(root, "maps", n)) for n in (MAP_SVC, MAP_RING, MAP_BACKENDS))


def _addr_bytes(addr: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(addr)
    raw = ip.packed
    return ip.version, raw + b"\0" * (16 - len(raw))


def _addr_str(family: int, raw) -> str:
    raw = bytes(raw)
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw[:16]))


def svc_key(slot: int, vip: str, port: int, protocol: str) -> bytes:
    fam, raw = _addr_bytes(vip)
    k = L.FpSvcKey(slot=slot, family=fam, proto=IPPROTO[protocol], port=port)
    k.addr[:] = list(raw)
    return bytes(k)


def _read_backends(maps) -> dict[int, L.FpBackend]:
    m = maps[MAP_BACKENDS]
    out = {}
    for i in range(L.FP_BACKENDS_MAX):
        raw = m.lookup(_u32(i))
        if raw is None:
            continue
        b = L.FpBackend.from_bytes(raw)
        if b.family:
            out[i] = b
    return out


def _ident(b: L.FpBackend) -> tuple[int, bytes, int]:
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
    from .policy import PolicyError
    present = maps_present(maps.pin_root)
    if not present:
        if services:
            raise PolicyError("policy.services", f"fast-path maps not found under {maps.pin_root} "
                                                 "(run 'etsfctl fastpath attach' first)")
        return {"noop": True}
    cur = _read_backends(maps)
    by_ident = {_ident(b): i for i, b in cur.items()}
    live_bit, tbit = L.fp_b_slot(active), L.fp_b_slot(target)
    new_entries: dict[int, L.FpBackend] = {}
    used = {i for i, b in cur.items() if b.flags & live_bit}
    svc_entries, rings = [], []
    for n, sv in enumerate(services):
        ids = []
        for b in sv["backends"]:
            fam, raw = _addr_bytes(b["address"])
            ident = (fam, raw, b["port"])
            bid = by_ident.get(ident)
            if bid is None or bid in new_entries:
                bid = next((i for i in range(L.FP_BACKENDS_MAX)
                            if i not in used and i not in new_entries
                            and (i not in cur or _ident(cur[i]) == ident or not cur[i].flags & live_bit)),
                           None)
                if bid is None:
                    raise PolicyError("policy.services", "no free fast-path backend id")
            e = L.FpBackend.from_buffer_copy(bytes(cur[bid])) if (
                bid in cur and _ident(cur[bid]) == ident) else L.FpBackend(up=1)
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


def _slot_keys(m, slot: int) -> list[bytes]:
    return [bytes(k) for k in m.keys() if L.FpSvcKey.from_bytes(k).slot == slot]


def write_slot(plan: dict[str, Any], maps) -> None:
    """Write the inactive slot's services, rings and backend entries (not live yet)."""
    if plan.get("noop"):
        return
    sm = maps[MAP_SVC]
    for k in _slot_keys(sm, plan["target"]):
        sm.delete(k)
    for i, e in sorted(plan["backends"].items()):
        maps[MAP_BACKENDS].update(_u32(i), bytes(e))
    for idx, raw in plan["rings"]:
        maps[MAP_RING].update(_u32(idx), raw)
    for k, v in plan["services"]:
        sm.update(k, v)


def release_slot(old: int, maps, plan: dict[str, Any] | None = None) -> None:
    """After the flip: the old slot's services and backend membership are garbage."""
    if plan is not None and plan.get("noop"):
        return
    if not maps_present(maps.pin_root):
        return
    sm = maps[MAP_SVC]
    for k in _slot_keys(sm, old):
        sm.delete(k)
    obit = L.fp_b_slot(old)
    for i, b in _read_backends(maps).items():
        if b.flags & obit:
            e = L.FpBackend.from_buffer_copy(bytes(b))
            e.flags &= ~obit
            if not e.flags & SLOT_BITS:
                e = L.FpBackend()
            maps[MAP_BACKENDS].update(_u32(i), bytes(e))


def decode_slot(slot: int, maps) -> list[dict[str, Any]]:
    """The services of one slot, in the policy's canonical form."""
    if not maps_present(maps.pin_root):
        return []
    backends = _read_backends(maps)
    sbit = L.fp_b_slot(slot)
    out = []
    sm = maps[MAP_SVC]
    for k in _slot_keys(sm, slot):
        key = L.FpSvcKey.from_bytes(k)
        v = L.FpSvc.from_bytes(sm.lookup(k))
        n = v.ring % L.FP_SVC_MAX
        bl = [{"address": _addr_str(b.family, b.addr), "port": int(b.port),
               "weight": int(b.weight[slot])}
              for _bid, b in sorted(backends.items()) if b.flags & sbit and b.svc[slot] == n]
        out.append({"name": v.name.decode(errors="replace"), "vip": _addr_str(key.family, key.addr),
                    "port": int(key.port), "protocol": PROTO_NAME.get(key.proto, str(key.proto)),
                    "affinity": "call-id", "backends": bl})
    return out


# ---------------------------------------------------------------------------
# live maps (agent side)
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _maps():
    from . import policy
    with policy._Maps(None) as m:  # noqa: SLF001 - same pinned-map opener as policy apply
        if not maps_present(m.pin_root):
            raise FastpathError(f"fast-path maps not found under {m.pin_root} "
                                "(run 'etsfctl fastpath attach' first)")
        yield m


def _live_slot(maps) -> int:
    raw = maps["etsf_ctl"].lookup(_u32(0))
    return int(L.Ctl.from_bytes(raw).active_slot) & 1 if raw else 0


def backends() -> list[dict[str, Any]]:
    """Backends of the live slot with health and counters."""
    with _maps() as m:
        slot = _live_slot(m)
        sbit = L.fp_b_slot(slot)
        names = {}
        for k in _slot_keys(m[MAP_SVC], slot):
            v = L.FpSvc.from_bytes(m[MAP_SVC].lookup(k))
            names[v.ring % L.FP_SVC_MAX] = v.name.decode(errors="replace")
        out = []
        for i, b in sorted(_read_backends(m).items()):
            if not b.flags & sbit:
                continue
            tot = dict.fromkeys(("packets", "bytes", "dialogs", "ret_packets", "ret_bytes"), 0)
            for v in m[MAP_BSTATS].lookup_percpu(_u32(i)) or []:
                s = L.FpBstat.from_bytes(v)
                for f in tot:
                    tot[f] += getattr(s, f)
            out.append({"id": i, "service": names.get(int(b.svc[slot]), "?"),
                        "address": _addr_str(b.family, b.addr), "port": int(b.port),
                        "weight": int(b.weight[slot]), "up": bool(b.up),
                        "redirect": ("peer" if b.flags & L.FP_B_PEER else "direct")
                        if b.flags & L.FP_B_L2 else "fib",
                        "ifindex": int(b.ifindex) or None, **tot})
        return out


def set_health(address: str, port: int, up: bool) -> dict[str, Any]:
    """Mark a backend up/down (every slot's entry: ids are global)."""
    from . import policy
    fam, raw = _addr_bytes(address)
    with policy.lock(), _maps() as m:
        for i, b in _read_backends(m).items():
            if _ident(b) == (fam, raw, int(port)):
                prev = bool(b.up)
                b.up = 1 if up else 0
                m[MAP_BACKENDS].update(_u32(i), bytes(b))
                return {"id": i, "address": address, "port": int(port), "up": bool(up),
                        "changed": prev != bool(up)}
    raise FastpathError(f"backend {address}:{port} is not in any fast-path service")


def stats() -> dict[str, Any]:
    with _maps() as m:
        reasons = {}
        for r in L.FpReason:
            pk = by = 0
            for v in m[MAP_STATS].lookup_percpu(_u32(int(r))) or []:
                c = L.Counter.from_bytes(v)
                pk += c.packets
                by += c.bytes
            reasons[r.name] = {"packets": pk, "bytes": by}
    fwd, ret = reasons["FWD"], reasons["RET"]
    fallback = {k: v["packets"] for k, v in reasons.items() if k not in ("FWD", "RET") and v["packets"]}
    return {"forward": fwd, "return": ret, "fallback": fallback, "reasons": reasons,
            "backends": backends()}


# ---------------------------------------------------------------------------
# health probe: SIP OPTIONS per backend
# ---------------------------------------------------------------------------


def probe(address: str, port: int, timeout: float = 0.5) -> bool:
    """One SIP OPTIONS to address:port; True when any SIP response with our Call-ID arrives."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    call_id = f"etsf-fp-probe-{uuid.uuid4().hex}"
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            lhost, lport = s.getsockname()[:2]
            host = f"[{address}]" if fam == socket.AF_INET6 else address
            lh = f"[{lhost}]" if fam == socket.AF_INET6 else lhost
            msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {lh}:{lport};branch=z9hG4bK-{uuid.uuid4().hex[:16]};rport\r\n"
                   "Max-Forwards: 70\r\n"
                   f"From: <sip:etsf-probe@{lh}>;tag={uuid.uuid4().hex[:8]}\r\n"
                   f"To: <sip:{host}:{port}>\r\n"
                   f"Call-ID: {call_id}\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
            s.send(msg)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(65535)
                if data.startswith(b"SIP/2.0 ") and call_id.encode() in data:
                    return True
        except OSError:
            return False
    return False


def run_prober(interval: float = 1.0, threshold: int = 3, rounds: int = 10,
               timeout: float = 0.5) -> dict[str, Any]:
    """Bounded prober: `rounds` probe rounds, `interval` s apart.  A backend goes
    down after `threshold` consecutive failed probes and up again after
    `threshold` consecutive successes.  Returns final states and transitions."""
    if threshold < 1 or rounds < 1 or interval < 0 or timeout <= 0:
        raise FastpathError("probe: threshold and rounds must be >= 1, interval >= 0, timeout > 0")
    streak: dict[tuple[str, int], int] = {}
    transitions = []
    for rnd in range(rounds):
        t0 = time.monotonic()
        for b in backends():
            key = (b["address"], b["port"])
            ok = probe(b["address"], b["port"], timeout)
            s = streak.get(key, 0)
            s = (max(s, 0) + 1) if ok else (min(s, 0) - 1)
            streak[key] = s
            if ok and not b["up"] and s >= threshold:
                set_health(b["address"], b["port"], True)
                transitions.append({"round": rnd, "backend": f"{key[0]}:{key[1]}", "up": True})
            elif not ok and b["up"] and -s >= threshold:
                set_health(b["address"], b["port"], False)
                transitions.append({"round": rnd, "backend": f"{key[0]}:{key[1]}", "up": False})
        if rnd + 1 < rounds:
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    return {"rounds": rounds, "transitions": transitions,
            "backends": {f"{b['address']}:{b['port']}": b["up"] for b in backends()}}


# ---------------------------------------------------------------------------
# attach / detach (TC ingress on the uplink and on the backends' host-end veths)
# ---------------------------------------------------------------------------


def load(build_dir: str | None = None):
    """Load tc_fastpath (pins/re-uses every map); returns the Program."""
    from . import datapath
    bpf = _bpf()
    obj = datapath._object_path(build_dir, OBJ)   # noqa: SLF001 - same build lookup
    root = pin_root()
    try:
        bpf.ensure_bpffs()
        progs = bpf.load_object(obj, root)
    except bpf.BpfError as e:
        raise FastpathError(f"loading {OBJ} failed: {str(e).splitlines()[0] if str(e) else e}") from None
    if PROG not in progs:
        raise FastpathError(f"{OBJ} does not contain {PROG}")
    for n, p in progs.items():
        if n != PROG:
            p.close()
    return progs[PROG]


def attach(ifaces: list[str], build_dir: str | None = None) -> dict[str, Any]:
    from . import datapath
    bpf = _bpf()
    idx = {i: datapath.ifindex(i) for i in ifaces}
    prog = load(build_dir)
    try:
        datapath._init_ctl()                              # noqa: SLF001 - heartbeat = now
        for name, ix in idx.items():
            try:
                bpf.tc_attach(ix, prog.fd, direction="ingress", handle=TC_HANDLE, priority=TC_PRIO)
            except bpf.BpfError as e:
                raise FastpathError(f"TC ingress attach on {name} failed: {e}") from None
        datapath._repin(prog, os.path.join(pin_root(), "progs", PROG))   # noqa: SLF001
        pid = prog.id
    finally:
        prog.close()
    st = datapath.load_state()
    fp = st.setdefault("fastpath", {"interfaces": {}})
    for name, ix in idx.items():
        fp["interfaces"][name] = {"ifindex": ix, "prog_id": pid, "attached_at": time.time()}
    datapath.save_state(st)
    return {"changed": True, "interfaces": {n: {"ifindex": ix, "prog_id": pid} for n, ix in idx.items()}}


def detach(ifaces: list[str]) -> dict[str, Any]:
    from . import datapath
    bpf = _bpf()
    out = {}
    for name in ifaces:
        ix = datapath.ifindex(name)
        pid = bpf.tc_query(ix, direction="ingress", handle=TC_HANDLE, priority=TC_PRIO)
        if pid and datapath._prog_name(pid) == PROG:      # noqa: SLF001
            bpf.tc_detach(ix, direction="ingress", handle=TC_HANDLE, priority=TC_PRIO)
            out[name] = True
        else:
            out[name] = False
    st = datapath.load_state()
    for name in ifaces:
        st.get("fastpath", {}).get("interfaces", {}).pop(name, None)
    datapath.save_state(st)
    return {"changed": any(out.values()), "detached": out}


def status() -> dict[str, Any]:
    from . import datapath
    bpf = _bpf()
    rows = {}
    for name, rec in sorted(datapath.load_state().get("fastpath", {}).get("interfaces", {}).items()):
        try:
            ix = socket.if_nametoindex(name)
            pid = bpf.tc_query(ix, direction="ingress", handle=TC_HANDLE, priority=TC_PRIO)
            rows[name] = {"ifindex": ix, "prog_id": pid or None,
                          "attached": bool(pid) and datapath._prog_name(pid) == PROG}  # noqa: SLF001
        except OSError:
            rows[name] = {"ifindex": rec.get("ifindex"), "present": False, "attached": False}
    return {"interfaces": rows, "maps": maps_present()}


# ---------------------------------------------------------------------------
# etsfctl fastpath ...
# ---------------------------------------------------------------------------


def _parse_backend(text: str) -> tuple[str, int]:
    host, _sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if "%" in host:          # a scope cannot be expressed in the backend map
            raise ValueError
        ipaddress.ip_address(host)
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError
    except ValueError:
        raise FastpathError(f"expected ADDRESS:PORT (IPv6 as [ADDR]:PORT), got {text!r}") from None
    return host, p


def add_cli(sub, common, out) -> None:
    """Register ``etsfctl fastpath ...`` (called from etsf.cli.build_parser)."""
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("fastpath", help="in-kernel fast path to local proxy backends")
    fsub = s.add_subparsers(dest="fcmd", metavar="ACTION",
                            parser_class=sub._parser_class)  # noqa: SLF001 - etsfctl's one-line-error parser
    fsub.required = True

    def _attach(a):
        res = attach(a.iface, a.build_dir)
        out(a, res, "fast path attached (tc ingress) on " + ", ".join(a.iface))

    def _detach(a):
        res = detach(a.iface)
        out(a, res, "detached from " + ", ".join(k for k, v in res["detached"].items() if v)
            if res["changed"] else "nothing attached")

    def _stats(a):
        res = stats()
        lines = [f"forward: {res['forward']['packets']} packets, return: {res['return']['packets']} packets",
                 "fallback: " + (", ".join(f"{k}={v}" for k, v in res["fallback"].items()) or "none")]
        for b in res["backends"]:
            lines.append(f"  {b['service']} {b['address']}:{b['port']} {'up' if b['up'] else 'DOWN'} "
                         f"dialogs={b['dialogs']} packets={b['packets']} return={b['ret_packets']}")
        out(a, res, "\n".join(lines))

    def _status(a):
        out(a, status())

    def _health(a):
        if a.backend is None:
            res = backends()
            out(a, res, "\n".join(f"{b['address']}:{b['port']} {'up' if b['up'] else 'DOWN'}"
                                  for b in res) or "no backends")
            return
        if a.state is None:
            raise FastpathError("health: give the state (up|down) after ADDRESS:PORT")
        host, port = _parse_backend(a.backend)
        res = set_health(host, port, a.state == "up")
        out(a, res, f"{a.backend} {a.state}")

    def _probe(a):
        res = run_prober(a.interval, a.threshold, a.rounds, a.timeout)
        out(a, res)

    a = fsub.add_parser("attach", parents=[common], help="attach tc_fastpath (TC ingress) on interfaces")
    a.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF",
                   help="uplink and every backend's host-end veth (repeatable)")
    a.add_argument("--build-dir", type=T.path, metavar="DIR")
    a.set_defaults(func=_attach)
    a = fsub.add_parser("detach", parents=[common], help="detach tc_fastpath from interfaces")
    a.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF")
    a.set_defaults(func=_detach)
    a = fsub.add_parser("stats", parents=[common], help="fast-path packets, fallbacks by reason, per backend")
    a.set_defaults(func=_stats)
    a = fsub.add_parser("status", parents=[common], help="fast-path attachments")
    a.set_defaults(func=_status)
    a = fsub.add_parser("health", parents=[common], help="show backends' health, or set ADDRESS:PORT up|down")
    a.add_argument("backend", nargs="?", type=T.parsed_by(_parse_backend, "ADDRESS:PORT", "127.0.0.1:5060"),
                   metavar="ADDRESS:PORT")
    a.add_argument("state", nargs="?", choices=("up", "down"))
    a.set_defaults(func=_health)
    a = fsub.add_parser("probe", parents=[common], help="SIP OPTIONS health prober (bounded)")
    a.add_argument("--interval", type=T.float_range(0, 3600, lo_open=False), default=1.0, metavar="S")
    a.add_argument("--threshold", type=T.int_range(1, 1000), default=3, metavar="N")
    a.add_argument("--rounds", type=T.count, default=10, metavar="N")
    a.add_argument("--timeout", type=T.float_range(0, 60), default=0.5, metavar="S")
    a.set_defaults(func=_probe)
