"""Data-path state, build, ctl map and counters: what the attach code and the fast path build on."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .. import inputs, layout, paths
from ..paths import pin_root, state_dir

XDP_OBJ = "xdp_sip.bpf.o"
TC_OBJ = "tc_sip.bpf.o"
XDP_PROG = "xdp_sip"
TC_PROG = "tc_sip_egress"
OUR_PROGS = (XDP_PROG, TC_PROG)
MODES = ("native", "generic")

MAP_CTL = "etsf_ctl"
MAP_STATS = "etsf_stats"
MAP_IFSTATS = "etsf_ifstats"


class DatapathError(Exception):
    """A user-facing datapath failure (one line)."""


def _bpf():
    from .. import bpf
    return bpf


def default_build_dir() -> str:
    return os.environ.get("ETSF_BUILD_DIR") or os.path.join(state_dir(), "build")


def default_src_dir() -> str:
    env = os.environ.get("ETSF_BPF_SRC")
    if env:
        return env
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "bpf", Path("/usr/share/etsf/bpf")):
        if (cand / "etsf.h").exists():
            return str(cand)
    return str(here.parents[3] / "bpf")


# ---------------------------------------------------------------------------
# state.json
# ---------------------------------------------------------------------------


def _state_path() -> str:
    return os.path.join(state_dir(), "state.json")


def load_state() -> dict[str, Any]:
    try:
        st = json.loads(inputs.read_text(_state_path(), "state"))
        if isinstance(st, dict):
            st.setdefault("interfaces", {})
            return st
    except (OSError, ValueError):
        pass
    return {"interfaces": {}}


def save_state(st: dict[str, Any]) -> None:
    paths.write_json(_state_path(), st, indent=2)


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------


def build(out_dir: str | None = None, force: bool = False, src_dir: str | None = None,
          arch: str | None = None) -> dict:
    from .. import build as _build
    out = out_dir or default_build_dir()
    try:
        res = _build.build(src_dir or default_src_dir(), out, force=force, arch=arch)
    except _build.BuildError as e:
        raise DatapathError(f"build failed: {str(e).splitlines()[0] if str(e) else e}") from None
    res = dict(res)
    res["out_dir"] = str(out)
    res["objects"] = [str(o) for o in res.get("objects", [])]
    st = load_state()
    st["build"] = {"out_dir": str(out), "stamp": res.get("stamp"), "objects": res["objects"],
                   "built_at": time.time()}
    save_state(st)
    return res


def object_path(build_dir: str | None, name: str) -> str:
    d = build_dir or load_state().get("build", {}).get("out_dir") or default_build_dir()
    p = os.path.join(d, name)
    if not os.path.exists(p):
        raise DatapathError(f"{p} not found (run 'etsfctl build' first)")
    check_objects(d)
    return p


def check_objects(build_dir: str) -> dict:
    """The objects' manifest, after refusing (one line) objects built for another map layout,
    architecture or a host without BTF: they may have been built elsewhere and pushed."""
    from .. import build as _build
    try:
        return _build.check_manifest(build_dir)
    except _build.BuildError as e:
        raise DatapathError(f"refusing the objects: {e}") from None


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def ifindex(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise DatapathError(f"interface {iface!r} does not exist") from None


def _key0() -> bytes:
    return (0).to_bytes(4, "little")


def _open_map(name: str):
    bpf = _bpf()
    try:
        return bpf.open_map(name, pin_root())
    except (OSError, bpf.BpfError) as e:
        raise DatapathError(f"map {name} not pinned under {pin_root()} "
                            f"(run 'etsfctl attach' first): {e}") from None


def prog_name(prog_id: int) -> str | None:
    if not prog_id:
        return None
    try:
        return _bpf().prog_info(prog_id).get("name")
    except Exception:  # noqa: BLE001 - program vanished meanwhile
        return None


def repin(prog, path: str) -> None:
    """Pin prog at path, replacing an older pin and keeping its owner, group and mode
    (the exporter reads pins through group permissions granted once)."""
    bpf = _bpf()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        old = os.stat(path)
    except OSError:
        old = None
    bpf.pin_program(prog, path)      # atomic rename over an existing pin
    if old is not None:
        try:
            os.chown(path, old.st_uid, old.st_gid)
            os.chmod(path, old.st_mode & 0o7777)
        except PermissionError as exc:   # no CAP_CHOWN/CAP_FOWNER: the exporter's grant re-applies them
            sys.stderr.write(f"etsf: warning: could not keep owner/mode of {path}: {exc.strerror}\n")


def read_ctl():
    m = _open_map(MAP_CTL)
    try:
        raw = m.lookup(_key0())
        return layout.Ctl.from_buffer_copy(raw) if raw else layout.Ctl()
    finally:
        m.close()


def _update_ctl(mutate) -> Any:
    """Read-modify-write etsf_ctl under the shared policy/ctl lock."""
    with paths.lock():
        m = _open_map(MAP_CTL)
        try:
            raw = m.lookup(_key0())
            ctl = layout.Ctl.from_buffer_copy(raw) if raw else layout.Ctl()
            mutate(ctl)
            m.update(_key0(), bytes(ctl))
            return ctl
        finally:
            m.close()


def ctl_dict(ctl) -> dict[str, Any]:
    now = _bpf().monotonic_ns()
    hb = int(ctl.heartbeat_ns)
    return {
        "bypass": bool(ctl.bypass),
        "overload_level": int(ctl.overload_level),
        "active_slot": int(ctl.active_slot),
        "flags": int(ctl.flags),
        "generation": int(ctl.generation),
        "deadman_ms": int(ctl.deadman_ns) // 1_000_000,
        "heartbeat_age_ms": (now - hb) // 1_000_000 if hb else None,
        "admission": {
            "rate": int(ctl.invite_admit_rate),
            "burst": int(ctl.invite_admit_burst),
            "retry_after_s": int(ctl.retry_after_s),
            "reply_503": not ctl.flags & layout.CTL_F_ADMIT_SILENT,
        },
        "rfc7339": oc_dict(ctl),
        "keepalive": keepalive_gate(ctl, now),
    }


def oc_dict(ctl) -> dict[str, Any]:
    """The RFC 7339 advertisement etsf_ctl holds (TC egress writes it into responses while on)."""
    return {"enabled": bool(ctl.flags & layout.CTL_F_OC), "reduction_pct": int(ctl.oc_reduction_pct),
            "validity_ms": int(ctl.oc_validity_ms), "seq": int(ctl.oc_seq)}


def keepalive_gate(ctl, now: int) -> dict[str, Any]:
    """The keep-alive answer gate of etsf_ctl: the kernel answers OPTIONS while now < until."""
    until = int(ctl.proxy_alive_until_ns)
    return {"proxy_alive": bool(until) and now < until, "proxy_alive_until_ns": until,
            "proxy_alive_left_ms": max(0, until - now) // 1_000_000 if until else 0,
            "sample_every": int(ctl.ka_sample_every)}


def init_ctl() -> None:
    """First attach: make sure etsf_ctl has sane values (heartbeat = now)."""
    def mut(ctl):
        if not ctl.heartbeat_ns:
            ctl.heartbeat_ns = _bpf().monotonic_ns()
    _update_ctl(mut)


def _enum_name(enum_cls, v: int) -> str:
    try:
        return enum_cls(v).name
    except ValueError:
        return str(v)


def _stats_dims():
    hooks = int(getattr(layout, "HOOKS", getattr(layout, "ETSF_HOOKS", 2)))
    methods = int(getattr(layout, "METHODS", getattr(layout, "ETSF_METHODS", 17)))
    verdicts = int(getattr(layout, "VERDICTS", getattr(layout, "ETSF_VERDICTS", 4)))
    reasons = int(getattr(layout, "REASONS", getattr(layout, "ETSF_REASONS", 32)))
    return hooks, methods, verdicts, reasons


def _sum_counters(vals) -> tuple[int, int]:
    pk = by = 0
    for v in vals:
        c = layout.Counter.from_buffer_copy(v[:__import__("ctypes").sizeof(layout.Counter)])
        pk += c.packets
        by += c.bytes
    return pk, by


def stats() -> dict[str, Any]:
    """Per-CPU counters summed: nonzero (hook, method, verdict, reason) rows + per-interface."""
    import ctypes
    hooks, methods, verdicts, reasons = _stats_dims()
    m = _open_map(MAP_STATS)
    rows = []
    try:
        # one BPF_MAP_LOOKUP_BATCH call per 4096 slots (2 syscalls), not one per slot
        for key, vals in sorted(m.items_percpu(), key=lambda kv: int.from_bytes(kv[0][:4], "little")):
            h, me, v, r = layout.stats_unidx(int.from_bytes(key[:4], "little"))
            if h >= hooks or me >= methods or v >= verdicts or r >= reasons:
                continue
            pk, by = _sum_counters(vals)
            if pk or by:
                rows.append({"hook": _enum_name(layout.Hook, h),
                             "method": _enum_name(layout.Method, me),
                             "verdict": _enum_name(layout.Verdict, v),
                             "reason": _enum_name(layout.Reason, r),
                             "packets": pk, "bytes": by})
    finally:
        m.close()
    ifrows = {}
    try:
        im = _open_map(MAP_IFSTATS)
    except DatapathError:
        im = None
    if im is not None:
        known = {int(r.get("ifindex") or 0): n for n, r in load_state().get("interfaces", {}).items()}
        try:
            names = {}
            for k in list(im.keys()):
                idx = int.from_bytes(bytes(k)[:4], "little")
                tot = {f[0]: 0 for f in layout.IfStat._fields_}
                for v in im.lookup_percpu(k) or []:
                    s = layout.IfStat.from_buffer_copy(v[:ctypes.sizeof(layout.IfStat)])
                    for f in tot:
                        tot[f] += getattr(s, f)
                name = known.get(idx)
                if name is None:             # attached elsewhere: best effort, this netns
                    try:
                        name = socket.if_indextoname(idx)
                    except OSError:
                        name = f"ifindex{idx}"
                names[name] = {"ifindex": idx, **{k2: v2 for k2, v2 in tot.items() if not k2.startswith("_")}}
            ifrows = dict(sorted(names.items()))
        finally:
            im.close()
    return {"counters": rows, "interfaces": ifrows}


def method_totals(st: dict[str, Any], hook: str = "XDP") -> dict[str, dict[str, int]]:
    """{method: {verdict: packets}} for one hook, from stats()."""
    out: dict[str, dict[str, int]] = {}
    for r in st["counters"]:
        if r["hook"] != hook:
            continue
        d = out.setdefault(r["method"], {})
        d[r["verdict"]] = d.get(r["verdict"], 0) + r["packets"]
    return out


# ---------------------------------------------------------------------------
# run-time control
# ---------------------------------------------------------------------------


def set_overload(level: int) -> dict[str, Any]:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 3:
        raise DatapathError(f"overload level must be an integer in 0..3 (got {level!r})")
    old = {}

    def mut(ctl):
        old["v"] = int(ctl.overload_level)
        ctl.overload_level = level
    _update_ctl(mut)
    return {"changed": old["v"] != level, "overload_level": level, "previous": old["v"]}


ADMIT_MAX = 10_000_000          # tokens/s and burst per CPU
RETRY_AFTER_MAX = 86400


def _admit_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise DatapathError(f"admission {name} must be an integer in {lo}..{hi} (got {v!r})")
    return v


def set_admission(rate: int, burst: int | None = None, retry_after: int | None = None,
                  reply: bool | None = None) -> dict[str, Any]:
    """Admission of new INVITEs: rate tokens/s and burst per CPU (rate 0 = off, burst 0 =
    admit none); retry_after = Retry-After of the in-kernel 503 (0 = header left out),
    reply = answer refused INVITEs with a 503 (else drop them).  None keeps the current
    value.  The To-tag secret of the 503 is drawn once, on first use."""
    rate = _admit_int("rate", rate, 0, ADMIT_MAX)
    burst = rate if burst is None else _admit_int("burst", burst, 0, ADMIT_MAX)
    if retry_after is not None:
        retry_after = _admit_int("retry-after", retry_after, 0, RETRY_AFTER_MAX)
    old = {}

    def mut(ctl):
        old["v"] = ctl_dict(ctl)["admission"]
        ctl.invite_admit_rate = rate
        ctl.invite_admit_burst = burst if rate else 0
        if retry_after is not None:
            ctl.retry_after_s = retry_after
        if reply is not None:
            ctl.flags = (ctl.flags & ~layout.CTL_F_ADMIT_SILENT) | (0 if reply else layout.CTL_F_ADMIT_SILENT)
        if not ctl.node_secret:
            ctl.node_secret = int.from_bytes(os.urandom(8), "little") or 1
    new = ctl_dict(_update_ctl(mut))["admission"]
    return {"changed": new != old["v"], "admission": new, "previous": old["v"]}


OC_VALIDITY_MAX = 86_400_000     # ms; the policy schema's bound of overload.auto.rfc7339.validity_ms


def set_oc(enabled: bool, reduction: int = 0, validity_ms: int = 0, now_ms: int | None = None) -> dict[str, Any]:
    """RFC 7339 advertisement: on, the reduction (percent of requests the clients should drop)
    and oc-validity; off clears the flag (values kept, so oc-seq keeps growing).  oc-seq moves
    to max(previous + 1, wall-clock ms) whenever what is advertised changes: it only grows,
    across restarts too (RFC 7339 section 5.2)."""
    for name, v, hi in (("reduction", reduction, 100), ("validity_ms", validity_ms, OC_VALIDITY_MAX)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise DatapathError(f"rfc7339 {name} must be an integer in 0..{hi} (got {v!r})")
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    old = {}

    def mut(ctl):
        old["v"] = oc_dict(ctl)
        if not enabled:
            ctl.flags &= ~layout.CTL_F_OC
            return
        if old["v"] == dict(old["v"], enabled=True, reduction_pct=reduction, validity_ms=validity_ms):
            return
        ctl.flags |= layout.CTL_F_OC
        ctl.oc_reduction_pct = reduction
        ctl.oc_validity_ms = validity_ms
        ctl.oc_seq = max(int(ctl.oc_seq) + 1, now_ms)
    new = oc_dict(_update_ctl(mut))
    return {"changed": new != old["v"], "rfc7339": new, "previous": old["v"]}


def _percpu_totals(name: str, struct, skip: str) -> dict[str, int]:
    """The one entry of the per-CPU array *name*, each counter of *struct* summed over CPUs
    (the field *skip* is per-CPU state, not a counter)."""
    m = _open_map(name)
    try:
        vals = m.lookup_percpu(_key0()) or []
    finally:
        m.close()
    tot = {n: 0 for n, *_unused in struct._fields_ if n != skip}  # noqa: SLF001
    for v in vals:
        a = struct.from_bytes(v)
        for n in tot:
            tot[n] += int(getattr(a, n))
    return tot


def admission_counters() -> dict[str, int]:
    """etsf_admit summed over CPUs."""
    return _percpu_totals("etsf_admit", layout.Admit, "tat_ns")


def set_keepalive_gate(until_ns: int, sample_every: int | None = None) -> dict[str, Any]:
    """Write the keep-alive answer gate: proxy_alive_until_ns (CLOCK_MONOTONIC ns, 0 = the
    kernel passes every OPTIONS to the proxy) and, unless None, ka_sample_every."""
    if isinstance(until_ns, bool) or not isinstance(until_ns, int) or not 0 <= until_ns < 1 << 64:
        raise DatapathError(f"proxy_alive_until_ns must be an unsigned 64-bit integer (got {until_ns!r})")
    if sample_every is not None and (isinstance(sample_every, bool) or not isinstance(sample_every, int)
                                     or not 0 <= sample_every < 1 << 32):
        raise DatapathError(f"ka_sample_every must be an unsigned 32-bit integer (got {sample_every!r})")
    old = {}

    def mut(ctl):
        old["v"] = (int(ctl.proxy_alive_until_ns), int(ctl.ka_sample_every))
        ctl.proxy_alive_until_ns = until_ns
        if sample_every is not None:
            ctl.ka_sample_every = sample_every
    ctl = _update_ctl(mut)
    return {"proxy_alive_until_ns": int(ctl.proxy_alive_until_ns), "sample_every": int(ctl.ka_sample_every),
            "previous_until_ns": old["v"][0], "previous_sample_every": old["v"][1]}


def keepalive_counters() -> dict[str, int]:
    """etsf_ka_stats summed over CPUs: OPTIONS answered in the kernel, passed to the proxy (stale
    probe, sampled, not for the node / not answerable) and NAT keep-alives seen / dropped."""
    return _percpu_totals("etsf_ka_stats", layout.KaStats, "sample_seq")


def set_bypass(on: bool) -> dict[str, Any]:
    old = {}

    def mut(ctl):
        old["v"] = bool(ctl.bypass)
        ctl.bypass = 1 if on else 0
    _update_ctl(mut)
    return {"changed": old["v"] != bool(on), "bypass": bool(on), "previous": old["v"]}


def heartbeat() -> dict[str, Any]:
    now = _bpf().monotonic_ns()

    def mut(ctl):
        ctl.heartbeat_ns = now
    _update_ctl(mut)
    return {"heartbeat_ns": now}
