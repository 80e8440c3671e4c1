"""bpffs, pins and maps: mount bpffs, open/pin/unpin objects, the Map type (lookups, batch reads)."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os

from . import paths
from .libbpf import (BATCH_TYPES, BPF_F_RDONLY, PERCPU_TYPES, U32, BatchOpts, BpfError, errno_of,
                     fail, get_lib, get_libc, MapInfo, num_possible_cpus, ObjGetOpts)

#: what BPF_MAP_LOOKUP_BATCH fails with where the kernel cannot batch a map: read it key by key
#: (524 is the kernel's ENOTSUPP, which Python's errno does not name)
NO_BATCH_ERRNOS = (_errno.EINVAL, 524, _errno.EOPNOTSUPP)


# ---------------------------------------------------------------- bpffs / pins
def _is_bpffs(path: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == path and parts[2] == "bpf":
                    return True
    except OSError:
        pass
    return False


def ensure_bpffs(path: str = "/sys/fs/bpf") -> None:
    """Mount bpffs at path unless one is mounted there already."""
    if _is_bpffs(path):
        return
    os.makedirs(path, exist_ok=True)
    libc = get_libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(b"bpf", path.encode(), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise BpfError(f"mount bpffs on {path}: {os.strerror(e)}", errno=e)


def obj_get(path, read_only: bool = False) -> int:
    """BPF_OBJ_GET of a pin; read_only opens a map with BPF_F_RDONLY (programs
    always need O_RDWR, i.e. read+write permission on their pin)."""
    path = os.fspath(path)
    if not read_only:
        return obj_get_rw(path)
    lib = get_lib()
    opts = ObjGetOpts(sz=ctypes.sizeof(ObjGetOpts), file_flags=BPF_F_RDONLY)
    fd = lib.bpf_obj_get_opts(os.fsencode(path), ctypes.byref(opts))
    if fd < 0:
        raise fail(f"open pinned {path} (read-only)", fd)
    return fd


def obj_get_rw(path: str) -> int:
    fd = get_lib().bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise fail(f"open pinned {path}", fd)
    return fd


def pin_program(prog, path) -> None:
    """Pin prog at path (replacing an existing pin atomically via rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}_new{os.getpid()}"     # bpffs refuses names with a dot
    if os.path.exists(tmp):
        os.unlink(tmp)
    ret = get_lib().bpf_obj_pin(prog.fd, os.fsencode(tmp))
    if ret < 0:
        raise fail(f"pin {path}", ret)
    os.replace(tmp, path)


def unpin(path) -> None:
    try:
        os.unlink(os.fspath(path))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- maps
def _map_info(fd: int) -> MapInfo:
    info = MapInfo()
    ln = U32(ctypes.sizeof(info))
    ret = get_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln))
    if ret < 0:
        raise fail("map info", ret)
    return info


class Map:
    """A BPF map opened by fd.  Per-CPU maps: lookup() returns every CPU's value
    concatenated (each rounded up to 8 bytes); lookup_percpu() splits them."""

    def __init__(self, fd: int, path: str | None = None):
        self.fd = fd
        self.path = path
        info = _map_info(fd)
        self.name = info.name.decode()
        self.map_type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.map_flags = info.map_flags
        self.id = info.id
        self.percpu = self.map_type in PERCPU_TYPES
        self.ncpus = num_possible_cpus() if self.percpu else 1
        self._stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        self._vbuf_size = self._stride * self.ncpus
        self.last_batch_calls = 0      # BPF_MAP_LOOKUP_BATCH calls of the last items()

    @classmethod
    def open_pinned(cls, path, read_only: bool = False) -> "Map":
        """read_only: BPF_OBJ_GET with BPF_F_RDONLY (needs only read permission on
        the pin; lookups work, updates fail with EPERM)."""
        path = os.fspath(path)
        return cls(obj_get(path, read_only=read_only), path)

    @classmethod
    def from_id(cls, map_id: int) -> "Map":
        fd = get_lib().bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            raise fail(f"map id {map_id}", fd)
        return cls(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Map({self.name!r}, id={self.id}, type={self.map_type})"

    def _key(self, key: bytes):
        key = bytes(key)
        if len(key) != self.key_size:
            raise BpfError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def lookup(self, key: bytes) -> bytes | None:
        k = self._key(key)
        v = ctypes.create_string_buffer(self._vbuf_size)
        ret = get_lib().bpf_map_lookup_elem(self.fd, k, v)
        if ret < 0:
            if errno_of(ret) == _errno.ENOENT:
                return None
            raise fail(f"lookup in {self.name}", ret)
        return v.raw

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        raw = self.lookup(key)
        if raw is None:
            return None
        return [raw[i * self._stride: i * self._stride + self.value_size]
                for i in range(self.ncpus)]

    def update_percpu(self, key: bytes, values: list[bytes], flags: int = 0) -> None:
        """One value per possible CPU (each value_size bytes), as lookup_percpu returns them."""
        if len(values) != self.ncpus:
            raise BpfError(f"map {self.name}: {len(values)} per-CPU values, expected {self.ncpus}")
        self.update(key, b"".join(bytes(v).ljust(self._stride, b"\0") for v in values), flags)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        k = self._key(key)
        value = bytes(value)
        if self.percpu:
            if len(value) == self.value_size:      # same value on every CPU
                one = value + b"\0" * (self._stride - self.value_size)
                value = one * self.ncpus
            elif len(value) != self._vbuf_size:
                raise BpfError(f"map {self.name}: per-CPU value must be {self.value_size} "
                               f"or {self._vbuf_size} bytes")
        elif len(value) != self.value_size:
            raise BpfError(f"map {self.name}: value is {len(value)} bytes, "
                           f"expected {self.value_size}")
        v = ctypes.create_string_buffer(value, len(value))
        ret = get_lib().bpf_map_update_elem(self.fd, k, v, flags)
        if ret < 0:
            raise fail(f"update in {self.name}", ret)

    def delete(self, key: bytes) -> bool:
        k = self._key(key)
        ret = get_lib().bpf_map_delete_elem(self.fd, k)
        if ret < 0:
            if errno_of(ret) == _errno.ENOENT:
                return False
            raise fail(f"delete in {self.name}", ret)
        return True

    def keys(self) -> list[bytes]:
        lib = get_lib()
        out = []
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        for _unused in range(self.max_entries + 1):
            ret = lib.bpf_map_get_next_key(self.fd, cur, nxt)
            if ret < 0:
                if errno_of(ret) == _errno.ENOENT:
                    break
                raise fail(f"next key in {self.name}", ret)
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
        return out

    def items(self) -> list[tuple[bytes, bytes]]:
        ks, vs = self.key_size, self._vbuf_size
        return [(kr[i * ks:(i + 1) * ks], vr[i * vs:(i + 1) * vs])
                for n, kr, vr in self._chunks_or_items() for i in range(n)]

    def items_percpu(self) -> list[tuple[bytes, list[bytes]]]:
        """items() with per-CPU values split (one value per CPU; non-per-CPU maps: one).
        Arrays and hash maps use BPF_MAP_LOOKUP_BATCH: ceil(entries / 4096) + 1
        syscalls, not one per entry."""
        out = []
        stride, vs = self._stride, self.value_size
        for k, raw in self.items():
            out.append((k, [raw[i * stride: i * stride + vs] for i in range(self.ncpus)]))
        return out

    def _batch_chunks(self, limit: int | None = None):
        """Yield (count, keys, values) per BPF_MAP_LOOKUP_BATCH call: the raw buffers, of which
        the first count keys and values are filled.  limit: stop after that many keys (an
        array's first `limit` indices)."""
        lib = get_lib()
        chunk = max(1, min(self.max_entries, 4096, limit or 4096))
        left = limit
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        vals = ctypes.create_string_buffer(self._vbuf_size * chunk)
        opts = BatchOpts(sz=ctypes.sizeof(BatchOpts))
        # hash maps need a batch token the size of a key (arrays: 4 bytes)
        tok_size = max(self.key_size, 8)
        in_b = ctypes.create_string_buffer(tok_size)
        out_b = ctypes.create_string_buffer(tok_size)
        first = True
        self.last_batch_calls = 0
        while True:
            self.last_batch_calls += 1
            count = U32(chunk)
            if left is not None:
                count.value = min(chunk, left)
            ret = lib.bpf_map_lookup_batch(self.fd, None if first else in_b, out_b, keys, vals,
                                           ctypes.byref(count), ctypes.byref(opts))
            yield count.value, keys.raw, vals.raw
            if left is not None:
                left -= count.value
                if left <= 0 and ret >= 0:
                    break
            if ret < 0:
                if errno_of(ret) == _errno.ENOENT:
                    break
                raise fail(f"batch lookup in {self.name}", ret)
            ctypes.memmove(in_b, out_b, tok_size)
            first = False

    def _chunks_or_items(self, limit: int | None = None):
        """_batch_chunks() where the kernel has batch lookups for this map, else the map read one
        key at a time (get_next_key + lookup), as one chunk."""
        if self.map_type in BATCH_TYPES:
            try:
                return list(self._batch_chunks(limit))
            except BpfError as e:
                if e.errno not in NO_BATCH_ERRNOS:
                    raise
        rows = []
        for k in self.keys():
            if limit is not None and len(rows) >= limit:
                break
            v = self.lookup(k)
            if v is not None:
                rows.append((k, v))
        return [(len(rows), b"".join(k for k, _v in rows), b"".join(v for _k, v in rows))]

    def count(self) -> int:
        """Entries present (an array: max_entries), read in batches, without a row per entry."""
        return sum(n for n, _k, _v in self._chunks_or_items())

    def values_raw(self) -> bytes:
        """Every value laid end to end in key order (per-CPU maps: each key's CPUs in a row)."""
        return b"".join(vr[:n * self._vbuf_size] for n, _k, vr in self._chunks_or_items())

    def percpu_sums(self, words: int | None = None, nonzero_only: bool = True,
                    limit: int | None = None) -> list[tuple[bytes, tuple[int, ...]]]:
        """For a value made of u64 fields: each key with its first `words` fields (default: all)
        summed over the CPUs, without a Python object per CPU.  nonzero_only leaves out the keys
        whose value is zero on every CPU (one memcmp each), which is most of a sparse counter
        array.  limit: read only the first `limit` keys (an array's leading indices).
        self.last_entries counts the keys read, zero or not."""
        if self.value_size % 8:
            raise BpfError(f"map {self.name}: value of {self.value_size} bytes is not whole u64 fields")
        per_key = self._vbuf_size // 8          # u64 words per key, all CPUs
        stride = self._stride // 8
        words = words or stride
        if words > stride:
            raise BpfError(f"map {self.name}: {words} fields asked, the value has {stride}")
        ks, vs = self.key_size, self._vbuf_size
        zero = bytes(vs)
        out: list[tuple[bytes, tuple[int, ...]]] = []
        self.last_entries = 0
        chunks = self._chunks_or_items(limit)
        for n, kr, vr in chunks:
            self.last_entries += n
            q = memoryview(vr).cast("Q")
            for i in range(n):
                if nonzero_only and vr[i * vs:(i + 1) * vs] == zero:
                    continue
                b = i * per_key
                out.append((kr[i * ks:(i + 1) * ks],
                            tuple(sum(q[b + f:b + per_key:stride]) for f in range(words))))
        return out

    def close(self):
        if self.fd is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def open_map(name: str, pin_root=None, read_only: bool = False) -> Map:
    root = paths.pin_root(pin_root)
    return Map.open_pinned(os.path.join(root, "maps", name), read_only=read_only)
