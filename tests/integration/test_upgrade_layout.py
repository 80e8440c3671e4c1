"""Upgrade in place from the release before in-kernel admission (etsf_ctl 40 -> 64 bytes,
two new pinned maps): the old agent attaches its own objects, the new agent's attach carries
the control block and the counters over; a pinned map that cannot be carried is refused.
And from the release whose LRU maps keep one common list: the admission, affinity and flow
LRUs change flags (one list per CPU) and size, and keep every entry; the transaction LRU
becomes the set-associative table, every transaction in its set."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO, etsfctl, loaded

from test_datapath_lifecycle import _send_sip, _xdp_count

# the last release whose struct etsf_ctl is 40 bytes (no etsf_admit / etsf_admit_txn maps)
OLD_RELEASE = "551dd4645058a1e05fb1930d85d003e8892e86ed"
# the last release whose LRU maps (transactions, affinity, flows) keep one common LRU list
COMMON_LRU_RELEASE = "4f140826adc8cde2bf5d2fbfdac5ff14fde2a55e"
KEY0 = (0).to_bytes(4, "little")


def _tree(tmp_path_factory, commit: str) -> Path:
    """bpf/ and src/ of release `commit`, its objects built by its own agent."""
    d = tmp_path_factory.mktemp("etsf-old")
    arch = subprocess.run(["git", "-C", str(REPO), "archive", commit, "bpf", "src"],
                          capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=arch, check=True, timeout=60)
    env = {**os.environ, "PYTHONPATH": str(d / "src"), "ETSF_BPF_SRC": str(d / "bpf")}
    subprocess.run([sys.executable, "-m", "etsf", "build", "--out", str(d / "build")],
                   env=env, check=True, capture_output=True, timeout=600)
    return d


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    return _tree(tmp_path_factory, OLD_RELEASE)


@pytest.fixture(scope="module")
def common_lru_tree(tmp_path_factory):
    return _tree(tmp_path_factory, COMMON_LRU_RELEASE)


def old_etsfctl(old_tree: Path, env: dict, *args, netns=None):
    e = dict(os.environ)
    e.update(env)
    e["PYTHONPATH"] = str(old_tree / "src")
    e["ETSF_BUILD_DIR"] = str(old_tree / "build")
    cmd = [sys.executable, "-m", "etsf", *args]
    if netns:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=60, check=False)
    assert r.returncode == 0, f"old etsfctl {' '.join(args)}: {r.stderr.strip()}"
    return r


def _maps(root):
    return sorted(os.listdir(os.path.join(root, "maps")))


def _ctl_raw(bpf, root):
    with bpf.open_map("etsf_ctl", root) as m:
        return m.value_size, m.lookup(KEY0)


def _old_host(lab, etsf_env, old_tree, tmp_path):
    """Old programs attached with overload 1, bypass off, policy generation 1, counters > 0."""
    old_etsfctl(old_tree, etsf_env, "attach", "--iface", lab.srv_if, netns=lab.srv_ns)
    pol = tmp_path / "p.yml"
    pol.write_text("version: 1\noverload: {level: 1}\n")
    old_etsfctl(old_tree, etsf_env, "policy", "apply", str(pol))
    old_etsfctl(old_tree, etsf_env, "bypass", "off")
    _send_sip(lab, 6)


def test_upgrade_carries_ctl_and_counters(lab, etsf_env, etsf_bpf, old_tree, tmp_path):
    from etsf import layout
    root = etsf_env["ETSF_PIN_ROOT"]
    _old_host(lab, etsf_env, old_tree, tmp_path)
    size, raw = _ctl_raw(etsf_bpf, root)
    assert size == 40                            # really the old layout
    old_ctl = layout.Ctl.from_buffer_copy(raw.ljust(ctypes.sizeof(layout.Ctl), b"\0"))
    assert old_ctl.overload_level == 1 and old_ctl.generation == 1 and old_ctl.bypass == 0
    assert old_ctl.heartbeat_ns > 0
    before = _xdp_count("OPTIONS")
    assert before == 6
    maps_old = _maps(root)
    assert "etsf_admit" not in maps_old

    # the fast path shares etsf_ctl with XDP/TC: it leaves the carrying over to `attach`
    r = etsfctl("fastpath", "attach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(err) == 1 and "etsf_ctl, etsf_stats, etsf_tm_txn have an older layout" in err[0], r.stderr
    assert _maps(root) == maps_old and _ctl_raw(etsf_bpf, root) == (size, raw)

    r = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json", env=etsf_env,
                           netns=lab.srv_ns).stdout)
    # etsf_tm_txn: one LRU list per CPU since (map flags changed); etsf_stats: a third hook
    # (TC ingress) appended, the old counters copied by index
    assert sorted(r["migrated_maps"]) == ["etsf_ctl", "etsf_stats", "etsf_tm_txn"] and r["replaced_prog_id"]
    size, raw = _ctl_raw(etsf_bpf, root)
    assert size == ctypes.sizeof(layout.Ctl) == 96
    ctl = layout.Ctl.from_buffer_copy(raw)
    assert (ctl.overload_level, ctl.bypass, ctl.generation, ctl.heartbeat_ns, ctl.active_slot,
            ctl.flags, ctl.deadman_ns) == (1, 0, 1, old_ctl.heartbeat_ns, old_ctl.active_slot,
                                           old_ctl.flags, old_ctl.deadman_ns)
    assert (ctl.invite_admit_rate, ctl.invite_admit_burst, ctl.retry_after_s, ctl.node_secret) == (0, 0, 0, 0)
    assert (ctl.oc_reduction_pct, ctl.oc_validity_ms, ctl.oc_seq, ctl.proxy_alive_until_ns,
            ctl.ka_sample_every) == (0, 0, 0, 0, 0)
    assert _xdp_count("OPTIONS") == before       # etsf_stats carried over, counters kept
    maps = _maps(root)
    assert "etsf_admit" in maps and "etsf_admit_txn" in maps
    assert not [m for m in maps if m.endswith("_upgrade")]
    # the new programs run on the carried-over maps
    _send_sip(lab, 3)
    assert _xdp_count("OPTIONS") == before + 3
    from etsf import datapath
    assert datapath.read_ctl().overload_level == 1

    # a second attach re-uses everything (nothing left to migrate)
    r2 = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json", env=etsf_env,
                            netns=lab.srv_ns).stdout)
    assert r2["migrated_maps"] == []


@pytest.mark.parametrize("pin,holds,reason", [
    ("etsf_rl", "etsf_ctl", "map type changed (2 -> 9)"),                 # LRU hash <- array
    ("etsf_acl_v4", "etsf_acl_v6", "key size changed (24 -> 12 bytes)"),  # LPM trie <- LPM trie
    ("etsf_policy", "etsf_last", "value size changed"),                   # array, not append-only
])
def test_upgrade_refuses_what_cannot_be_copied(lab, etsf_env, etsf_bpf, old_tree, tmp_path,
                                               pin, holds, reason):
    root = etsf_env["ETSF_PIN_ROOT"]
    _old_host(lab, etsf_env, old_tree, tmp_path)
    # the pin `pin` now holds the map `holds` (another definition than the objects'); the
    # old programs keep their own map
    path = os.path.join(root, "maps", pin)
    fd = etsf_bpf.obj_get(os.path.join(root, "maps", holds))
    try:
        etsf_bpf.unpin(path)
        assert etsf_bpf.get_lib().bpf_obj_pin(fd, path.encode()) == 0
    finally:
        os.close(fd)
    prog_before = _xdp_prog(lab)
    maps_before = _maps(root)
    ctl_before = _ctl_raw(etsf_bpf, root)
    before = _xdp_count("OPTIONS")

    r = etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and f"cannot upgrade pinned map {pin}: {reason}" in err[0], r.stderr
    assert _xdp_prog(lab) == prog_before
    assert _maps(root) == maps_before
    assert _ctl_raw(etsf_bpf, root) == ctl_before     # etsf_ctl not migrated either
    _send_sip(lab, 2)
    assert _xdp_count("OPTIONS") == before + 2        # the old programs still count


def _xdp_prog(lab) -> int:
    """Id of the XDP program on the server end of the veth (it lives in the lab netns)."""
    out = subprocess.run(["ip", "-n", lab.srv_ns, "-j", "-d", "link", "show", lab.srv_if],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(json.loads(out)[0]["xdp"]["prog"]["id"])


def test_copy_keeps_every_cpu_and_hash_entry(etsf_bpf, build_dir):
    """The copy under an upgrade: per-CPU values land on their own CPU, hash entries all
    arrive (two pin roots with the same objects: one written, one empty)."""
    from etsf.datapath import migrate
    roots = [f"/sys/fs/bpf/etsf-it-{os.getpid()}-{uuid.uuid4().hex[:8]}" for _i in range(2)]
    try:
        with loaded(etsf_bpf, build_dir, "xdp_sip.bpf.o", roots[0]), \
                loaded(etsf_bpf, build_dir, "xdp_sip.bpf.o", roots[1]):
            with etsf_bpf.open_map("etsf_stats", roots[0]) as a, \
                    etsf_bpf.open_map("etsf_stats", roots[1]) as b:
                stride = (a.value_size + 7) & ~7
                vals = [bytes([cpu + 1]) * a.value_size for cpu in range(a.ncpus)]
                a.update((7).to_bytes(4, "little"), b"".join(v.ljust(stride, b"\0") for v in vals))
                assert migrate.copy_entries(a, b) == a.max_entries
                assert b.lookup_percpu((7).to_bytes(4, "little")) == vals
                assert b.lookup_percpu((6).to_bytes(4, "little")) == [b"\0" * a.value_size] * a.ncpus
            with etsf_bpf.open_map("etsf_rl", roots[0]) as a, \
                    etsf_bpf.open_map("etsf_rl", roots[1]) as b:
                want = {bytes([i]) * a.key_size: bytes([i + 100]) * a.value_size for i in range(5)}
                for k, v in want.items():
                    a.update(k, v)
                assert migrate.copy_entries(a, b) == 5
                assert dict(b.items()) == want
    finally:
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)


# map -> the command that carries it over (the XDP/TC objects' maps: attach; the fast path's own: fastpath attach)
LRU_MAPS = {"etsf_fp_aff": "fastpath", "etsf_fp_flow": "fastpath"}
TM_CARRIED = 1000       # transactions / decisions written into the old LRUs: far fewer than a set overflows at


def _lru_entries(m, n: int) -> dict:
    return {i.to_bytes(4, "little").ljust(m.key_size, b"\x5a"): bytes([i % 251 + 1]) * m.value_size
            for i in range(n)}


def test_upgrade_to_per_cpu_lru_lists_keeps_entries_and_counters(lab, etsf_env, etsf_bpf, common_lru_tree):
    from etsf import layout
    root = etsf_env["ETSF_PIN_ROOT"]
    old_etsfctl(common_lru_tree, etsf_env, "attach", "--iface", lab.srv_if, netns=lab.srv_ns)
    old_etsfctl(common_lru_tree, etsf_env, "fastpath", "attach", "--iface", lab.srv_if, netns=lab.srv_ns)
    _send_sip(lab, 5)
    before = _xdp_count("OPTIONS")
    assert before == 5
    want, old_max = {}, {}
    for name in LRU_MAPS:
        with etsf_bpf.open_map(name, root) as m:
            assert (m.map_type, m.map_flags) == (etsf_bpf.MAP_TYPE_LRU_HASH, 0), name   # the common list
            old_max[name] = m.max_entries
            # more entries than one CPU's share of the new map: written from one CPU they would
            # not all survive the copy
            add = _lru_entries(m, m.max_entries * 3 // 4)
            for k, v in add.items():
                m.update(k, v)
            want[name] = {**dict(m.items()), **add}             # with what the old programs wrote
            assert len(want[name]) >= len(add), name
    assert old_max["etsf_fp_aff"] == old_max["etsf_fp_flow"] == 65536
    with etsf_bpf.open_map("etsf_tm_txn", root) as m:
        assert (m.map_type, m.map_flags) == (etsf_bpf.MAP_TYPE_LRU_HASH, 0)
        for i in range(TM_CARRIED):
            k = layout.TmTxnKey(callid_hash=0x5A00_0000_0000 + i, cseq=i, ifindex=7, method=layout.Method.INVITE)
            m.update(bytes(k), (10_000 + i).to_bytes(8, "little") + (i & 0xFF).to_bytes(4, "little") + bytes(4))
        # with what the old programs wrote
        tm_want = {k: (int.from_bytes(v[:8], "little"), int.from_bytes(v[8:12], "little"))
                   for k, v in m.items()}
    assert len(tm_want) >= TM_CARRIED
    with etsf_bpf.open_map("etsf_admit_txn", root) as m:
        assert (m.map_type, m.map_flags, m.max_entries) == (etsf_bpf.MAP_TYPE_LRU_HASH, 0, 65536)
        calls = [(0x7B00_0000_0000 + i, i + 1) for i in range(TM_CARRIED)]
        for j, (h, cseq) in enumerate(calls):
            m.update(layout.admit_key(h, cseq).to_bytes(8, "little"),
                     (20_000 + j).to_bytes(8, "little") + (j & 1).to_bytes(4, "little") + bytes(4))
        admit_want = {c: (20_000 + j, j & 1) for j, c in enumerate(calls)}

    r = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json",
                           env=etsf_env, netns=lab.srv_ns).stdout)
    assert sorted(r["migrated_maps"]) == ["etsf_admit_txn", "etsf_stats", "etsf_tm_txn"] and r["replaced_prog_id"]
    assert r["migration_not_carried"] == {}                     # every transaction found room
    r = json.loads(etsfctl("fastpath", "attach", "--iface", lab.srv_if, "--json", env=etsf_env,
                           netns=lab.srv_ns).stdout)
    assert sorted(r["migrated_maps"]) == ["etsf_fp_aff", "etsf_fp_flow"]
    assert not [m for m in _maps(root) if m.endswith("_upgrade")]
    new_max = {"etsf_fp_aff": layout.FP_AFF_MAX, "etsf_fp_flow": layout.FP_FLOW_MAX}
    for name in LRU_MAPS:
        with etsf_bpf.open_map(name, root) as m:
            assert m.map_flags == etsf_bpf.BPF_F_NO_COMMON_LRU, name
            assert m.max_entries == etsf_bpf.lru_max_entries(m.map_type, new_max[name], m.map_flags,
                                                             etsf_bpf.num_possible_cpus())
            assert dict(m.items()) == want[name], name          # every entry, none evicted
    with etsf_bpf.open_map("etsf_tm_txn", root) as m:
        assert (m.map_type, m.max_entries) == (etsf_bpf.MAP_TYPE_ARRAY, layout.TM_SETS)
        got = {}
        for kb in tm_want:
            w = layout.tm_get(m.lookup, layout.TmTxnKey.from_bytes(kb))
            got[kb] = (w.start_ns, w.seen) if w else None
        assert got == tm_want                                   # every transaction, in its set
    with etsf_bpf.open_map("etsf_admit_txn", root) as m:
        assert (m.map_type, m.max_entries) == (etsf_bpf.MAP_TYPE_ARRAY, layout.ADMIT_SETS)
        got = {c: layout.admit_get(m.lookup, *c) for c in admit_want}
        assert {c: (w.ts_ns, w.admitted) if w else None for c, w in got.items()} == admit_want
    assert _xdp_count("OPTIONS") == before                      # counters kept
    _send_sip(lab, 2)
    assert _xdp_count("OPTIONS") == before + 2                  # the new programs count on them

    # the next attach of either re-uses every pinned map as it is
    r = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json",
                           env=etsf_env, netns=lab.srv_ns).stdout)
    assert r["migrated_maps"] == []
    r = json.loads(etsfctl("fastpath", "attach", "--iface", lab.srv_if, "--json", env=etsf_env,
                           netns=lab.srv_ns).stdout)
    assert r["migrated_maps"] == []


def test_copy_into_per_cpu_lists_spreads_over_the_cpus(etsf_bpf, build_dir):
    """A per-CPU-list LRU evicts from the writing CPU's list only: the copy writes from every
    CPU it may run on, so a map filled to 3/4 keeps every entry, where writing all of it from
    one CPU (that CPU's list holds max_entries / CPUs) loses some."""
    from etsf.datapath import migrate
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "needs 2 CPUs"
    roots = [f"/sys/fs/bpf/etsf-it-{os.getpid()}-{uuid.uuid4().hex[:8]}" for _i in range(3)]
    allowed = os.sched_getaffinity(0)
    try:
        with loaded(etsf_bpf, build_dir, "tc_fastpath.bpf.o", roots[0]), \
                loaded(etsf_bpf, build_dir, "tc_fastpath.bpf.o", roots[1]), \
                loaded(etsf_bpf, build_dir, "tc_fastpath.bpf.o", roots[2]):
            with etsf_bpf.open_map("etsf_fp_aff", roots[0]) as a, \
                    etsf_bpf.open_map("etsf_fp_aff", roots[1]) as b, \
                    etsf_bpf.open_map("etsf_fp_aff", roots[2]) as c:
                assert b.map_flags & etsf_bpf.BPF_F_NO_COMMON_LRU
                want = _lru_entries(a, a.max_entries * 3 // 4)
                items = list(want.items())
                for i, cpu in enumerate(cpus):                  # the source filled from every CPU
                    os.sched_setaffinity(0, {cpu})
                    for k, v in items[i::len(cpus)]:
                        a.update(k, v)
                os.sched_setaffinity(0, set(cpus))
                assert dict(a.items()) == want
                assert migrate.copy_entries(a, b) == len(want)
                assert dict(b.items()) == want
                assert os.sched_getaffinity(0) == set(cpus)     # the copy gave the CPUs back
                # the same entries written from one CPU: its list runs out, the oldest go
                os.sched_setaffinity(0, {cpus[0]})
                for k, v in want.items():
                    c.update(k, v)
                assert len(c.keys()) < len(want)
    finally:
        os.sched_setaffinity(0, allowed)
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)


def _old_lru(etsf_bpf, path: str, name: str, key_size: int, entries: dict):
    """A table as releases before the set-associative ones made it (LRU hash, value time u64 +
    word u32 + pad), pinned at path, holding entries {key bytes: (time, word)}."""
    lib = etsf_bpf.get_lib()
    fn = lib.bpf_map_create
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                   ctypes.c_void_p]
    fd = fn(etsf_bpf.MAP_TYPE_LRU_HASH, name.encode(), key_size, 16, 1024, None)
    assert fd >= 0, fd
    try:
        assert lib.bpf_obj_pin(fd, path.encode()) == 0
    finally:
        os.close(fd)
    m = etsf_bpf.Map.open_pinned(path)
    for k, (ts, word) in entries.items():
        m.update(k, ts.to_bytes(8, "little") + word.to_bytes(4, "little") + bytes(4))
    return m


def _tm_case(layout, i: int):
    """(old key bytes, set index, find(lookup) -> (start, seen) or None) of transaction i."""
    k = layout.TmTxnKey(callid_hash=layout.fnv1a64(f"conv-{i}".encode()), cseq=1, ifindex=9,
                        method=layout.Method.INVITE)

    def find(lookup):
        t = layout.tm_get(lookup, k)
        return (t.start_ns, t.seen) if t else None
    return bytes(k), layout.tm_slot(k)[0], find


def _admit_case(layout, i: int):
    """(old key bytes, set index, find(lookup) -> (time, admitted) or None) of decision i."""
    h = layout.fnv1a64(f"conv-{i}".encode())
    key = layout.admit_key(h, 1)

    def find(lookup):
        t = layout.admit_get(lookup, h, 1)
        return (t.ts_ns, t.admitted) if t else None
    return key.to_bytes(8, "little"), layout.admit_slot(key)[0], find


@pytest.mark.parametrize("name,key_size,case", [("etsf_tm_txn", 24, _tm_case), ("etsf_admit_txn", 8, _admit_case)],
                         ids=["transactions", "admission"])
def test_tables_converted_into_their_sets_and_the_overflow_counted(etsf_bpf, build_dir, name, key_size, case):
    """The converter an upgrade uses for each set-associative table: each old entry lands in
    the set the programs look in (found by etsf.layout, time and word kept); a set given six
    keeps its newest four and the two it had no room for are counted."""
    from etsf import layout
    from etsf.datapath import migrate
    by_set: dict[int, list] = {}
    i = 0
    while not any(len(v) == 6 for v in by_set.values()):
        c = case(layout, i)
        by_set.setdefault(c[1], []).append(c)
        i += 1
    crowded = next(v for v in by_set.values() if len(v) == 6)
    alone = [v[0] for v in by_set.values() if len(v) == 1][:2]
    cases = crowded + alone
    entries = {c[0]: (1_000 + 10 * j, j & 1) for j, c in enumerate(cases)}
    roots = [f"/sys/fs/bpf/etsf-it-{os.getpid()}-{uuid.uuid4().hex[:8]}" for _i in range(2)]
    try:
        os.makedirs(roots[1])
        old = _old_lru(etsf_bpf, os.path.join(roots[1], "old"), name, key_size, entries)
        with loaded(etsf_bpf, build_dir, "xdp_sip.bpf.o", roots[0]), old, \
                etsf_bpf.open_map(name, roots[0]) as new:
            assert migrate.CONVERTED[name][4](old, new) == (8, 6)
            got = {c[0]: c[2](new.lookup) for c in cases}
        want = dict(entries)
        for c in crowded[:2]:                   # the set's two oldest had no way left
            want[c[0]] = None
        assert got == want
    finally:
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
