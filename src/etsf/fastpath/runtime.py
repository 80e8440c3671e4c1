"""The fast path at run time: backends of the live slot, health marks, counters, the SIP OPTIONS prober."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from typing import Any

from .. import layout as L
from .. import paths
from ..errors import policy_maps_missing
from ..pinmaps import PinnedMaps
from .slots import (MAP_BACKENDS, MAP_BSTATS, MAP_STATS, MAP_SVC, FastpathError, addr_bytes, addr_str,
                    backend_ident, maps_present, read_backends, slot_keys, u32)


# ---------------------------------------------------------------------------
# live maps (agent side)
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _maps():
    with PinnedMaps(None, missing=policy_maps_missing) as m:
        if not maps_present(m.pin_root):
            raise FastpathError(f"fast-path maps not found under {m.pin_root} "
                                "(run 'etsfctl fastpath attach' first)")
        yield m


def _live_slot(maps) -> int:
    raw = maps["etsf_ctl"].lookup(u32(0))
    return int(L.Ctl.from_bytes(raw).active_slot) & 1 if raw else 0


def backends() -> list[dict[str, Any]]:
    """Backends of the live slot with health and counters."""
    with _maps() as m:
        slot = _live_slot(m)
        sbit = L.fp_b_slot(slot)
        names = {}
        for k in slot_keys(m[MAP_SVC], slot):
            v = L.FpSvc.from_bytes(m[MAP_SVC].lookup(k))
            names[v.ring % L.FP_SVC_MAX] = v.name.decode(errors="replace")
        out = []
        for i, b in sorted(read_backends(m).items()):
            if not b.flags & sbit:
                continue
            tot = dict.fromkeys(("packets", "bytes", "dialogs", "ret_packets", "ret_bytes"), 0)
            for v in m[MAP_BSTATS].lookup_percpu(u32(i)) or []:
                s = L.FpBstat.from_bytes(v)
                for f in tot:
                    tot[f] += getattr(s, f)
            out.append({"id": i, "service": names.get(int(b.svc[slot]), "?"),
                        "address": addr_str(b.family, b.addr), "port": int(b.port),
                        "weight": int(b.weight[slot]), "up": bool(b.up),
                        "redirect": ("peer" if b.flags & L.FP_B_PEER else "direct")
                        if b.flags & L.FP_B_L2 else "fib",
                        "ifindex": int(b.ifindex) or None, **tot})
        return out


def set_health(address: str, port: int, up: bool) -> dict[str, Any]:
    """Mark a backend up/down (every slot's entry: ids are global)."""
    fam, raw = addr_bytes(address)
    with paths.lock(), _maps() as m:
        for i, b in read_backends(m).items():
            if backend_ident(b) == (fam, raw, int(port)):
                prev = bool(b.up)
                b.up = 1 if up else 0
                m[MAP_BACKENDS].update(u32(i), bytes(b))
                return {"id": i, "address": address, "port": int(port), "up": bool(up),
                        "changed": prev != bool(up)}
    raise FastpathError(f"backend {address}:{port} is not in any fast-path service")


def reasons() -> dict[str, dict[str, int]]:
    """Fast-path packets and bytes per reason (FWD, RET and each fallback), summed over the
    CPUs: the counters alone, without the per-backend reads of stats()."""
    out = {}
    with _maps() as m:
        for r in L.FpReason:
            pk = by = 0
            for v in m[MAP_STATS].lookup_percpu(u32(int(r))) or []:
                c = L.Counter.from_bytes(v)
                pk += c.packets
                by += c.bytes
            out[r.name] = {"packets": pk, "bytes": by}
    return out


def stats() -> dict[str, Any]:
    reasons_ = reasons()
    fwd, ret = reasons_["FWD"], reasons_["RET"]
    fallback = {k: v["packets"] for k, v in reasons_.items() if k not in ("FWD", "RET") and v["packets"]}
    return {"forward": fwd, "return": ret, "fallback": fallback, "reasons": reasons_,
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
