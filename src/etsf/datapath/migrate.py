"""Carry pinned maps over an upgrade whose objects define some of them differently.

libbpf re-uses a pinned map only when its definition (type, key and value size, max
entries, flags) equals the object's, so a release that appends fields to a map's value
struct could not be attached over the running one.  ``plan()`` compares every pinned map
with the objects' definition before anything is loaded: equal maps are re-used as always;
a map whose change is migratable gets a temporary pin that the new objects load against
(libbpf creates it with the new definition and its BTF); anything else is refused with one
line naming the map, nothing changed.  After the objects loaded, ``Migration.swap()``
copies every entry old -> new (old value zero-extended; into an LRU with one list per CPU
spread over the CPUs, see ``copy_entries``) and renames the temporary pin over
the old one (rename(2) on bpffs: readers see the old or the new map, never none).  A map
whose kind changed (``CONVERTED``: the transaction and admission tables, LRU hash -> sets of
ways) is carried
over by its converter instead of copied.  The old
programs keep running on the old map until the new ones are attached (and, when the hook
changes, until the old one is detached); ``Migration.settle()``, called once they are gone,
adds what they counted into a counter map after its copy to the new map.  A key the new
programs count into too (TC egress) is read, added to and written back from user space, so an
increment the new program makes in those few µs can be lost; XDP's keys after a change to the
TC hook have no other writer.
"""

from __future__ import annotations

import contextlib
import os

from .. import layout
from .base import DatapathError


def _bpf():
    from .. import bpf
    return bpf


# map types whose entries can be read and written back from user space
_ARRAYS = {2, 6}                       # ARRAY, PERCPU_ARRAY
_HASHES = {1, 5, 9, 10, 11}            # HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH, LPM_TRIE
_DEF_FIELDS = ("type", "key_size", "value_size", "max_entries", "map_flags")
_LRUS = {9, 10}                        # LRU_HASH, LRU_PERCPU_HASH
# flags that change only how the kernel keeps the entries, never what a lookup finds:
# per-CPU LRU lists (BPF_F_NO_COMMON_LRU) on an LRU hash
_BOOKKEEPING_FLAGS = 1 << 1
TMP_SUFFIX = "_upgrade"                # bpffs refuses names with a dot
# maps whose values are u64 counters only: what the old programs count between the copy and
# their detach is added to the new map afterwards (settle)
COUNTER_MAPS = {"etsf_stats", "etsf_parse_stats", "etsf_ifstats"}


def _refuse(name: str, why: str) -> DatapathError:
    return DatapathError(f"cannot upgrade pinned map {name}: {why} (running programs unchanged)")


def _into_sets(old, new, slot, value_set) -> tuple[int, int]:
    """An LRU hash whose values start with a time u64 and a word u32 into a set-associative
    array, oldest first, each entry into its set as the programs place it (a set with more
    entries than ways keeps its newest).  slot(key bytes) -> (set, tag).  Returns (entries
    held, placed)."""
    sets: dict[int, object] = {}
    rows = old.items()
    for k, v in sorted(rows, key=lambda kv: int.from_bytes(kv[1][:8], "little")):
        idx, tag = slot(k)
        layout.way_place(sets.setdefault(idx, value_set()).way, tag, int.from_bytes(v[:8], "little"),
                         int.from_bytes(v[8:12], "little"))
    for idx, s in sets.items():
        new.update(layout.set_key(idx), bytes(s))
    return len(rows), sum(1 for s in sets.values() for w in s.way if w.tag)


def _tm_txn_to_sets(old, new) -> tuple[int, int]:
    """etsf_tm_txn from an LRU hash (TmTxnKey -> start_ns u64, seen u32, pad u32)."""
    return _into_sets(old, new, lambda k: layout.tm_slot(layout.TmTxnKey.from_bytes(k)), layout.TmSet)


def _admit_txn_to_sets(old, new) -> tuple[int, int]:
    """etsf_admit_txn from an LRU hash (admit_key u64 -> ts_ns u64, admitted u32, pad u32)."""
    return _into_sets(old, new, lambda k: layout.admit_slot(int.from_bytes(k, "little")), layout.AdmitSet)


# maps whose definition changed in kind, carried over entry by entry by a converter:
# name -> (old type, old key size, old value size, new type, converter(old, new))
CONVERTED = {
    "etsf_tm_txn": (9, 24, 16, 2, _tm_txn_to_sets),     # LRU hash -> ARRAY of sets
    "etsf_admit_txn": (9, 8, 16, 2, _admit_txn_to_sets),  # the same
}


def _check(name: str, old, new: dict) -> None:
    """Raise unless the pinned map `old` (a bpf.Map) can be copied into `new`'s definition."""
    conv = CONVERTED.get(name)
    if conv and old.map_type != new["type"]:
        if (old.map_type, old.key_size, old.value_size, new["type"]) != conv[:4]:
            raise _refuse(name, f"map type changed ({old.map_type} -> {new['type']}) from a "
                          f"definition no converter knows ({old.key_size}/{old.value_size}-byte key/value)")
        return
    if old.map_type != new["type"]:
        raise _refuse(name, f"map type changed ({old.map_type} -> {new['type']})")
    if old.map_type not in _ARRAYS | _HASHES:
        raise _refuse(name, f"map type {old.map_type} cannot be copied")
    if old.key_size != new["key_size"]:
        raise _refuse(name, f"key size changed ({old.key_size} -> {new['key_size']} bytes)")
    changed = old.map_flags ^ new["map_flags"]
    if changed and (old.map_type not in _LRUS or changed & ~_BOOKKEEPING_FLAGS):
        raise _refuse(name, f"map flags changed ({old.map_flags:#x} -> {new['map_flags']:#x})")
    if old.value_size != new["value_size"]:
        sizes = layout.APPEND_ONLY.get(name, ())
        if (old.value_size not in sizes or new["value_size"] not in sizes
                or new["value_size"] < old.value_size):
            raise _refuse(name, f"value size changed ({old.value_size} -> {new['value_size']} "
                          "bytes) and its struct is not known to grow by appending")
    if new["max_entries"] < old.max_entries:
        if old.map_type in _ARRAYS:
            raise _refuse(name, f"array shrinks ({old.max_entries} -> {new['max_entries']} entries)")
        held = len(old.keys())
        if held > new["max_entries"]:
            raise _refuse(name, f"{held} entries do not fit in {new['max_entries']}")


class Migration:
    """Maps to carry over: name -> (old pin path, temporary pin path, old Map)."""

    def __init__(self):
        self.maps: dict[str, tuple[str, str, object]] = {}
        self.swapped: list[str] = []
        self.copied: dict[str, dict] = {}     # counter map -> {key: per-CPU values at the copy}
        self.not_carried: dict[str, int] = {}  # converted map -> entries its new form had no room for

    def pin_paths(self) -> dict[str, str]:
        """{map name: temporary pin} for bpf.load_object(pin_paths=...)."""
        return {n: tmp for n, (_p, tmp, _m) in self.maps.items()}

    def swap(self) -> list[str]:
        """Copy every entry into the new maps and rename their pins over the old ones."""
        bpf = _bpf()
        for name, (path, tmp, old) in self.maps.items():
            try:
                with bpf.Map.open_pinned(tmp) as new:
                    if name in COUNTER_MAPS and old.percpu:
                        self.copied[name] = dict(old.items_percpu())
                    if name in CONVERTED and old.map_type != new.map_type:
                        held, placed = CONVERTED[name][4](old, new)
                        if held > placed:
                            self.not_carried[name] = held - placed
                    else:
                        copy_entries(old, new)
                _keep_mode(path, tmp)
                os.replace(tmp, path)
            except (OSError, bpf.BpfError) as e:
                raise DatapathError(f"carrying pinned map {name} over failed: {e}") from None
            self.swapped.append(name)
        return list(self.swapped)

    def settle(self, root: str) -> int:
        """Once the old programs are detached: add to each new counter map what they counted
        into the old one after its copy.  Returns the keys topped up."""
        bpf = _bpf()
        n = 0
        for name, before in self.copied.items():
            path, _tmp, old = self.maps[name]
            with bpf.Map.open_pinned(path) as new:
                for key, vals in old.items_percpu():
                    was = before.get(key) or [b""] * len(vals)
                    deltas = [_u64_delta(v, w) for v, w in zip(vals, was)]
                    if not any(any(d) for d in deltas):
                        continue
                    cur = new.lookup_percpu(key) or [bytes(new.value_size)] * new.ncpus
                    out = [_u64_add(c, d) for c, d in zip(cur, deltas)]
                    new.update_percpu(key, out)
                    n += 1
        self.copied.clear()
        return n

    def undo(self) -> None:
        """Put the old maps back under their pins (the new objects were not attached)."""
        bpf = _bpf()
        for name in self.swapped:
            path, tmp, old = self.maps[name]
            with contextlib.suppress(OSError, bpf.BpfError):
                bpf.unpin(tmp)
                ret = bpf.get_lib().bpf_obj_pin(old.fd, os.fsencode(tmp))
                if ret >= 0:
                    os.replace(tmp, path)
        self.swapped.clear()

    def drop_tmp(self) -> None:
        for _path, tmp, _old in self.maps.values():
            _bpf().unpin(tmp)

    def close(self) -> None:
        for _path, _tmp, old in self.maps.values():
            old.close()


def plan(objects: list[str], root: str) -> Migration:
    """Compare the objects' pinned maps with the pins under root; raise DatapathError (one
    line, nothing changed) when one cannot be carried over."""
    bpf = _bpf()
    mig = Migration()
    seen: set[str] = set()
    try:
        for obj in objects:
            for new in bpf.object_maps(obj, root):
                name, path = new["name"], new["pin_path"]
                if name in seen or not os.path.exists(path):
                    continue
                seen.add(name)
                old = bpf.Map.open_pinned(path)
                if all(getattr(old, "map_type" if f == "type" else f) == new[f] for f in _DEF_FIELDS):
                    old.close()
                    continue
                try:
                    _check(name, old, new)
                except DatapathError:
                    old.close()
                    raise
                tmp = path + TMP_SUFFIX
                bpf.unpin(tmp)          # a crashed upgrade's leftover holds stale entries
                mig.maps[name] = (path, tmp, old)
    except bpf.BpfError as e:
        mig.close()
        raise DatapathError(f"comparing pinned maps failed (running programs unchanged): {e}") from None
    except DatapathError:
        mig.close()
        raise
    return mig


def _spread_cpus(new) -> list[int]:
    """CPUs to spread the copy over: an LRU with one list per CPU takes a new entry from the
    free list of the CPU that writes it and evicts from that list only, so written from one
    CPU it would hold max_entries / CPUs before evicting what was just copied."""
    if new.map_type not in _LRUS or not new.map_flags & _BOOKKEEPING_FLAGS:
        return []
    return sorted(os.sched_getaffinity(0))


def copy_entries(old, new) -> int:
    """Every entry of old into new, each value zero-extended to the new size."""
    pad = new.value_size - old.value_size

    def put(key, vals):
        if new.percpu:
            stride = new._stride        # pylint: disable=protected-access
            value = b"".join((v + b"\0" * pad).ljust(stride, b"\0") for v in vals)
        else:
            value = vals[0] + b"\0" * pad
        new.update(key, value)

    cpus = _spread_cpus(new)
    if len(cpus) < 2:
        n = 0
        for key, vals in old.items_percpu():
            put(key, vals)
            n += 1
        return n
    items = list(old.items_percpu())
    allowed = os.sched_getaffinity(0)
    try:
        for i, cpu in enumerate(cpus):
            os.sched_setaffinity(0, {cpu})      # this thread writes from `cpu` only
            for key, vals in items[i::len(cpus)]:
                put(key, vals)
    finally:
        os.sched_setaffinity(0, allowed)
    return len(items)


def _u64_delta(now: bytes, was: bytes) -> list[int]:
    """Per u64 field: now - was (was may be shorter or empty: zeros)."""
    was = was.ljust(len(now), b"\0")
    return [int.from_bytes(now[i:i + 8], "little") - int.from_bytes(was[i:i + 8], "little")
            for i in range(0, len(now) - len(now) % 8, 8)]


def _u64_add(cur: bytes, delta: list[int]) -> bytes:
    out = bytearray(cur)
    for j, d in enumerate(delta):
        v = (int.from_bytes(cur[8 * j:8 * j + 8], "little") + d) % (1 << 64)
        out[8 * j:8 * j + 8] = v.to_bytes(8, "little")
    return bytes(out)


def _keep_mode(path: str, tmp: str) -> None:
    """The new pin gets the old pin's owner, group and mode (read grants to the exporter)."""
    try:
        st = os.stat(path)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
    except OSError:
        pass
