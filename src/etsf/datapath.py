"""eTSF datapath orchestration (the paper's "eBPF Program Loader").

Everything kernel-facing goes through :mod:`etsf.bpf`; this module decides
what to load, where to pin it, how to replace it atomically and what to
record in ``$ETSF_STATE_DIR/state.json``.

Pins (``PIN_ROOT`` = ``$ETSF_PIN_ROOT`` or ``/sys/fs/bpf/etsf``)::

    PIN_ROOT/maps/<map>            pinned by bpf.load_object (re-used on reload)
    PIN_ROOT/progs/xdp_sip         last loaded XDP ingress program
    PIN_ROOT/progs/tc_sip_egress   last loaded TC egress program
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import inputs, layout
from . import policy as _policy

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
    from . import bpf
    return bpf


def pin_root() -> str:
    return os.environ.get("ETSF_PIN_ROOT") or _bpf().PIN_ROOT


def state_dir() -> str:
    return os.environ.get("ETSF_STATE_DIR", "/var/lib/etsf")


def default_build_dir() -> str:
    return os.environ.get("ETSF_BUILD_DIR") or os.path.join(state_dir(), "build")


def default_src_dir() -> str:
    env = os.environ.get("ETSF_BPF_SRC")
    if env:
        return env
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "bpf", Path("/usr/share/etsf/bpf")):
        if (cand / "etsf.h").exists():
            return str(cand)
    return str(here.parents[2] / "bpf")


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
    d = state_dir()
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".state.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(st, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, _state_path())


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------


def build(out_dir: str | None = None, force: bool = False, src_dir: str | None = None) -> dict:
    from . import build as _build
    out = out_dir or default_build_dir()
    try:
        res = _build.build(src_dir or default_src_dir(), out, force=force)
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


def _object_path(build_dir: str | None, name: str) -> str:
    d = build_dir or load_state().get("build", {}).get("out_dir") or default_build_dir()
    p = os.path.join(d, name)
    if not os.path.exists(p):
        raise DatapathError(f"{p} not found (run 'etsfctl build' first)")
    return p


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


def _prog_name(prog_id: int) -> str | None:
    if not prog_id:
        return None
    try:
        return _bpf().prog_info(prog_id).get("name")
    except Exception:  # noqa: BLE001 - program vanished meanwhile
        return None


def _repin(prog, path: str) -> None:
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
    with _policy.lock():
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
    }


# ---------------------------------------------------------------------------
# attach / detach
# ---------------------------------------------------------------------------


def attach(iface: str, mode: str = "native", build_dir: str | None = None,
           force: bool = False) -> dict[str, Any]:
    """Load (maps pinned & re-used), pin and attach XDP ingress + TC egress.

    If our programs are already attached they are replaced atomically
    (XDP: expected-prog replace; TC: same handle/priority replace); pinned
    maps and their state (counters, rate-limit buckets, policy) survive.
    A foreign XDP program is never replaced unless force=True.
    """
    if mode not in MODES:
        raise DatapathError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
    idx = ifindex(iface)
    bpf = _bpf()
    xdp_obj = _object_path(build_dir, XDP_OBJ)
    tc_obj = _object_path(build_dir, TC_OBJ)
    root = pin_root()

    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    cur_mode = cur.get("mode")
    if cur_id:
        name = _prog_name(cur_id)
        if name != XDP_PROG and not force:
            raise DatapathError(f"{iface} already has a foreign XDP program "
                                f"(id {cur_id}, name {name!r}); detach it first")
        if cur_mode and cur_mode != mode:
            raise DatapathError(f"{iface} has XDP attached in {cur_mode} mode; "
                                f"detach before switching to {mode}")

    xprogs: dict = {}
    pins_before: set | None = None
    try:
        bpf.ensure_bpffs()
        os.makedirs(os.path.join(root, "maps"), exist_ok=True)
        os.makedirs(os.path.join(root, "progs"), exist_ok=True)
        pins_before = set(os.listdir(os.path.join(root, "maps")))
        xprogs = bpf.load_object(xdp_obj, root)
        tprogs = bpf.load_object(tc_obj, root)
    except bpf.BpfError as e:
        # nothing was attached or re-pinned: the running programs and maps are untouched;
        # drop only map pins this failed load created (never a pre-existing one)
        for p in xprogs.values():
            with contextlib.suppress(Exception):
                p.close()
        with contextlib.suppress(OSError):
            for name in set(os.listdir(os.path.join(root, "maps"))) - (pins_before or set()):
                if pins_before is None:
                    break
                bpf.unpin(os.path.join(root, "maps", name))
        first = str(e).splitlines()[0] if str(e) else repr(e)
        excerpt = _verifier_excerpt(getattr(e, "log", ""))
        err = DatapathError(f"loading programs failed (running programs unchanged): {first}"
                            + (f"; verifier: {excerpt}" if excerpt else ""))
        err.log = getattr(e, "log", "")  # type: ignore[attr-defined]
        raise err from None
    if XDP_PROG not in xprogs or TC_PROG not in tprogs:
        raise DatapathError(f"objects do not contain {XDP_PROG}/{TC_PROG}")
    xprog, tprog = xprogs[XDP_PROG], tprogs[TC_PROG]
    try:
        _init_ctl()
        try:
            bpf.xdp_attach(idx, xprog.fd, mode=mode, replace_prog_id=cur_id or None)
        except bpf.BpfError as e:
            hint = " (try --mode generic)" if mode == "native" else ""
            raise DatapathError(f"XDP attach ({mode}) on {iface} failed: "
                                f"{str(e).splitlines()[0] if str(e) else e}{hint}") from None
        try:
            bpf.tc_attach(idx, tprog.fd, direction="egress")
        except bpf.BpfError as e:
            raise DatapathError(f"TC egress attach on {iface} failed: "
                                f"{str(e).splitlines()[0] if str(e) else e}") from None
        _repin(xprog, os.path.join(root, "progs", XDP_PROG))
        _repin(tprog, os.path.join(root, "progs", TC_PROG))
        xq = bpf.xdp_query(idx) or {}
        info = {
            "iface": iface, "ifindex": idx, "mode": mode,
            "xdp_prog_id": int(xq.get("prog_id") or xprog.id),
            "tc_prog_id": int(bpf.tc_query(idx, direction="egress") or tprog.id),
            "replaced_prog_id": cur_id or None,
            "attached_at": time.time(),
            "stamp": _object_stamp(xdp_obj),
        }
    finally:
        for p in list(xprogs.values()) + list(tprogs.values()):
            with contextlib.suppress(Exception):
                p.close()
    st = load_state()
    st["interfaces"][iface] = info
    st["pin_root"] = root
    save_state(st)
    return {"changed": True, **info}


def _verifier_excerpt(log: str, lines: int = 3) -> str:
    """The verifier's last meaningful lines (the rejection reason), joined on one line."""
    keep = [ln.strip() for ln in (log or "").splitlines()
            if ln.strip() and not ln.lstrip().startswith(";") and "BEGIN PROG LOAD LOG" not in ln
            and "END PROG LOAD LOG" not in ln]
    return " | ".join(keep[-lines:])[:400]


def _object_stamp(obj_path: str) -> str | None:
    """Build stamp of the objects next to obj_path (None when built by hand)."""
    from . import build as _build
    try:
        return inputs.read_text(os.path.join(os.path.dirname(obj_path), _build.STAMP_FILE),
                                "build stamp").strip() or None
    except (OSError, ValueError):
        return None


def _init_ctl() -> None:
    """First attach: make sure etsf_ctl has sane values (heartbeat = now)."""
    def mut(ctl):
        if not ctl.heartbeat_ns:
            ctl.heartbeat_ns = _bpf().monotonic_ns()
    _update_ctl(mut)


def detach(iface: str) -> dict[str, Any]:
    """Detach our XDP and TC programs from iface (maps and pins stay)."""
    idx = ifindex(iface)
    bpf = _bpf()
    changed = False
    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    if cur_id:
        name = _prog_name(cur_id)
        if name != XDP_PROG:
            raise DatapathError(f"{iface} XDP program id {cur_id} ({name!r}) is not ours; not detaching")
        bpf.xdp_detach(idx, mode=cur.get("mode") or "native", expected_prog_id=cur_id)
        changed = True
    tc_id = int(bpf.tc_query(idx, direction="egress") or 0)
    if tc_id and _prog_name(tc_id) == TC_PROG:
        bpf.tc_detach(idx, direction="egress")
        changed = True
    st = load_state()
    st["interfaces"].pop(iface, None)
    save_state(st)
    return {"changed": changed, "iface": iface, "ifindex": idx, "xdp_prog_id": cur_id or None,
            "tc_prog_id": tc_id or None}


# ---------------------------------------------------------------------------
# status / stats
# ---------------------------------------------------------------------------


def _pins() -> dict[str, list[str]]:
    root = pin_root()
    out = {}
    for sub in ("maps", "progs"):
        d = os.path.join(root, sub)
        out[sub] = sorted(os.listdir(d)) if os.path.isdir(d) else []
    return out


def interface_status(names) -> dict[str, dict[str, Any]]:
    """What is attached to each named interface (managed by eTSF or not)."""
    bpf = _bpf()
    managed = load_state().get("interfaces", {})
    ifaces = {}
    for name in sorted(set(names)):
        rec = managed.get(name, {})
        row = {"ifindex": rec.get("ifindex"), "mode": rec.get("mode"), "present": True,
               "managed": name in managed, "stamp": rec.get("stamp"), "attached": False}
        try:
            idx = socket.if_nametoindex(name)
        except OSError:
            row["present"] = False
            ifaces[name] = row
            continue
        q = bpf.xdp_query(idx) or {}
        xid = int(q.get("prog_id") or 0)
        tid = int(bpf.tc_query(idx, direction="egress") or 0)
        row.update(ifindex=idx, xdp_prog_id=xid or None, xdp_prog_name=_prog_name(xid),
                   xdp_mode=q.get("mode") if xid else None,
                   tc_prog_id=tid or None, tc_prog_name=_prog_name(tid))
        row["attached"] = bool(xid and row["xdp_prog_name"] == XDP_PROG)
        ifaces[name] = row
    return ifaces


def forget(iface: str) -> dict[str, Any]:
    """Stop managing an interface that no longer carries our programs (or no longer exists)."""
    st = load_state()
    changed = st["interfaces"].pop(iface, None) is not None
    save_state(st)
    return {"changed": changed, "iface": iface}


def status() -> dict[str, Any]:
    st = load_state()
    ifaces = interface_status(st.get("interfaces", {}))
    out: dict[str, Any] = {"pin_root": pin_root(), "pins": _pins(), "interfaces": ifaces,
                           "build": st.get("build")}
    if _policy.maps_present(pin_root()):
        ctl = read_ctl()
        out["ctl"] = ctl_dict(ctl)
        out["policy_generation"] = int(ctl.generation)
        out["bypass"] = bool(ctl.bypass)
        out["overload_level"] = int(ctl.overload_level)
        out["heartbeat_age_ms"] = out["ctl"]["heartbeat_age_ms"]
        try:
            live = _policy.read_live(pin_root())
        except _policy.PolicyError:
            live = None
        out["policy_applied"] = live is not None
    else:
        out.update(ctl=None, policy_generation=None, bypass=None, overload_level=None,
                   heartbeat_age_ms=None, policy_applied=False)
    return out


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


# ---------------------------------------------------------------------------
# revert and restore (fleet revert, etsf-restore.service)
# ---------------------------------------------------------------------------


REVERT_MODES = ("bypass", "detach")


def revert(mode: str = "bypass") -> dict[str, Any]:
    """Send SIP back to the normal stack: bypass (instant, programs stay) or detach (all interfaces)."""
    if mode not in REVERT_MODES:
        raise DatapathError(f"--mode must be one of {', '.join(REVERT_MODES)} (got {mode!r})")
    if mode == "bypass":
        if not _policy.maps_present(pin_root()):
            return {"changed": False, "mode": mode, "detail": "eTSF maps not loaded: nothing to bypass"}
        res = set_bypass(True)
        return {"changed": res["changed"], "mode": mode, "bypass": True}
    detached = {}
    fp_ifaces = sorted(load_state().get("fastpath", {}).get("interfaces", {}))
    if fp_ifaces:
        from . import fastpath
        present = [i for i in fp_ifaces if os.path.exists(f"/sys/class/net/{i}")]
        res = fastpath.detach(present) if present else {"detached": {}}
        for iface in fp_ifaces:
            detached[f"{iface} (fast path)"] = bool(res["detached"].get(iface))
    for iface in sorted(load_state().get("interfaces", {})):
        try:
            detached[iface] = detach(iface)["changed"]
        except (DatapathError, OSError) as exc:
            if isinstance(exc, OSError) or "does not exist" in str(exc) or "no such" in str(exc).lower():
                forget(iface)
                detached[iface] = False
            else:
                raise
    return {"changed": any(detached.values()), "mode": mode, "interfaces": detached}


def _read_restore_config(path: str) -> dict[str, Any]:
    import yaml
    try:
        cfg = inputs.load_yaml(inputs.read_text(path, "datapath config")) or {}
    except OSError as exc:
        raise DatapathError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatapathError(f"{path}: not UTF-8 text") from None
    except inputs.InputTooLarge as exc:
        raise DatapathError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise DatapathError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or cfg.get("version") != 1:
        raise DatapathError(f"{path}: version: expected 1")
    ifaces = cfg.get("interfaces")
    if not isinstance(ifaces, list) or not ifaces or not all(isinstance(i, str) for i in ifaces):
        raise DatapathError(f"{path}: interfaces: expected a non-empty list of interface names")
    if cfg.get("mode", "native") not in MODES:
        raise DatapathError(f"{path}: mode: must be one of {', '.join(MODES)}")
    fp = cfg.get("fastpath_interfaces")
    if fp is not None and (not isinstance(fp, list) or not all(isinstance(i, str) for i in fp)):
        raise DatapathError(f"{path}: fastpath_interfaces: expected a list of interface names")
    for key in ("policy", "build_dir", "src_dir"):
        # a number here would be taken for a file descriptor by os.path/open
        if cfg.get(key) is not None and (not isinstance(cfg[key], str) or not cfg[key] or "\0" in cfg[key]):
            raise DatapathError(f"{path}: {key}: expected a path")
    return cfg


def restore(config: str = "/etc/etsf/datapath.yml") -> dict[str, Any]:
    """Boot-time restore: build if needed, (re)attach every configured interface, re-apply the policy."""
    cfg = _read_restore_config(config)
    built = build(out_dir=cfg.get("build_dir"), src_dir=cfg.get("src_dir"))
    attached = {}
    for iface in cfg["interfaces"]:
        attached[iface] = attach(iface, mode=cfg.get("mode", "native"), build_dir=built["out_dir"])["xdp_prog_id"]
    fp_ifaces = cfg.get("fastpath_interfaces") or []
    if fp_ifaces:
        from . import fastpath
        fastpath.attach(list(fp_ifaces), build_dir=built["out_dir"])
    policy_file = cfg.get("policy")
    applied = None
    if policy_file and os.path.exists(policy_file):
        pol, text = _policy.load_file(policy_file)
        # after a reboot the maps are new: force the write even if an old decode matched
        applied = _policy.apply(pol, source_text=text, force=True)["generation"]
    return {"changed": True, "built": built["changed"], "attached": attached, "fastpath": list(fp_ifaces),
            "policy_generation": applied}
