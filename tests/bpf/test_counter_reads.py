"""Reading counter maps without a Python object per entry and CPU: Map.percpu_sums, count and
values_raw, the telemetry snapshot's parts, and the fail-safe watchdog's per-tick read.

Every figure is checked against the map read the slow way (items_percpu, one struct per CPU),
on the session's loaded objects.
"""
from __future__ import annotations

import ctypes

import pytest

from etsf import bpf
from etsf import layout as L
from etsf.failsafe import rules
from etsf.telemetry import reader

from .helpers import M, R, V

XDP_ROWS = L.stats_idx(L.Hook.XDP + 1, 0, 0, 0)     # the XDP hook's leading block of etsf_stats


def _slow_sums(m, words: int) -> dict[bytes, tuple[int, ...]]:
    """The reference: every key's per-CPU values parsed one by one and summed."""
    out = {}
    for k, vals in m.items_percpu():
        tot = [0] * words
        for v in vals:
            w = (ctypes.c_uint64 * words).from_buffer_copy(v[:8 * words])
            for i in range(words):
                tot[i] += w[i]
        out[k] = tuple(tot)
    return out


@pytest.fixture
def counted(env):
    """Distinct per-CPU values in five etsf_stats slots, one in each hook's block and two at the
    ends, so the sums differ from any single CPU's value."""
    st = env.maps["etsf_stats"]
    slots = [L.stats_idx(L.Hook.XDP, M.INVITE, V.PASS, R.OK), L.stats_idx(L.Hook.XDP, M.BYE, V.DROP, R.DENY),
             L.stats_idx(L.Hook.TC_EGRESS, M.OPTIONS, V.MARK, R.OK),
             L.stats_idx(L.Hook.TC_INGRESS, M.REGISTER, V.PASS, R.OK), L.STATS_SLOTS - 1]
    for n, idx in enumerate(slots):
        st.update_percpu(idx.to_bytes(4, "little"),
                         [bytes(L.Counter(packets=1000 * n + 10 * cpu + 1, bytes=7 * (cpu + 1) + n))
                          for cpu in range(st.ncpus)])
    return st, slots


def test_percpu_sums_equal_the_per_cpu_reads(counted):
    st, slots = counted
    slow = _slow_sums(st, 2)
    fast = dict(st.percpu_sums(2))
    assert st.last_entries == L.STATS_SLOTS
    assert fast == {k: v for k, v in slow.items() if any(v)}        # zero slots left out
    for n, idx in enumerate(slots):
        want = (sum(1000 * n + 10 * c + 1 for c in range(st.ncpus)), sum(7 * (c + 1) + n for c in range(st.ncpus)))
        assert fast[idx.to_bytes(4, "little")] == want
    every = st.percpu_sums(2, nonzero_only=False)
    assert [k for k, _v in every] == [i.to_bytes(4, "little") for i in range(L.STATS_SLOTS)]
    assert dict(every) == slow
    assert dict(st.percpu_sums(1)) == {k: v[:1] for k, v in fast.items() if v[0]}


def test_percpu_sums_limit_reads_only_the_leading_keys(counted):
    st, slots = counted
    head = st.percpu_sums(2, limit=XDP_ROWS)
    assert st.last_entries == XDP_ROWS
    assert all(int.from_bytes(k, "little") < XDP_ROWS for k, _v in head)
    assert {int.from_bytes(k, "little") for k, _v in head} >= set(slots[:2])
    assert dict(head) == {k: v for k, v in st.percpu_sums(2) if int.from_bytes(k, "little") < XDP_ROWS}


def test_percpu_sums_refuses_more_fields_than_the_value_has(env):
    with pytest.raises(bpf.BpfError, match="etsf_stats: 3 fields asked, the value has 2"):
        env.maps["etsf_stats"].percpu_sums(3)


def test_count_and_values_raw(env):
    rl = env.maps["etsf_rl"]
    assert rl.count() == 0
    for i in range(3):
        k = L.RlKey(family=4, rl_class=1, prefix=32)
        k.addr[:4] = [198, 18, 9, i]
        rl.update(bytes(k), bytes(L.RlState(tat_ns=1, passed=i, dropped=0)))
    assert rl.count() == 3
    txn = env.maps["etsf_tm_txn"]
    raw = txn.values_raw()
    assert len(raw) == txn.max_entries * txn.value_size
    assert raw == b"".join(v for _k, v in txn.items())


def test_snapshot_parts_read_only_what_is_named(env, loaded, counted):
    root = loaded["root"]
    full = reader.snapshot(root, programs=False)
    xdp = reader.snapshot(root, programs=False, parts=("stats_xdp",))
    assert xdp["stats"] == [r for r in full["stats"] if r[0] == "XDP"] and len(xdp["stats"]) >= 2
    assert (xdp["cost"]["maps_opened"], xdp["cost"]["entries_read"]) == (1, XDP_ROWS)
    assert (xdp["hist"], xdp["codes"], xdp["maps"], xdp["ctl"]) == ({}, {}, {}, None)
    both = reader.snapshot(root, programs=False, parts=("stats", "stats_xdp"))
    assert both["stats"] == full["stats"]                       # "stats" wins: every hook, once
    some = reader.snapshot(root, programs=False, parts=("ctl", "maps"))
    assert some["ctl"] == full["ctl"] and some["stats"] == []
    assert some["maps"] == {k: v for k, v in full["maps"].items() if k != "etsf_ifstats"}
    with pytest.raises(ValueError, match=r"unknown \['stat'\]"):
        reader.snapshot(root, programs=False, parts=("stat",))


def test_watchdog_tick_reads_its_rules_data_and_no_more(env, loaded, counted, monkeypatch):
    """take_snapshot (every tick of `etsfctl failsafe`) reads the XDP counters, the response
    codes, the control word and map occupancy: the same numbers a full snapshot has."""
    monkeypatch.setenv("ETSF_PIN_ROOT", loaded["root"])
    full = reader.snapshot(loaded["root"], programs=False)
    snap = rules.take_snapshot()
    assert snap["stats"] == [tuple(r[:5]) for r in full["stats"] if r[0] == "XDP"]
    assert snap["maps"] == {k: v for k, v in full["maps"].items() if k != "etsf_ifstats"}
    assert snap["ctl"] == full["ctl"]
    calls = []
    real = reader.snapshot
    monkeypatch.setattr(reader, "snapshot", lambda *a, **kw: calls.append(kw.get("parts")) or real(*a, **kw))
    rules.take_snapshot()
    assert calls == [rules.SNAPSHOT_PARTS] and set(rules.SNAPSHOT_PARTS) < set(reader.PARTS)
