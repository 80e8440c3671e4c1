"""Where a hot run of an eTSF program goes, by source line: one bench/datapath.py case repeated
with PROG_TEST_RUN on one CPU while `perf record` samples that CPU, each sample inside a BPF
program mapped to the C source line its JIT code came from.

    flock /work/wt/bench.lock .venv/bin/python bench/jitprof.py --case tc_egress_200_ok

The programs are built from --bpf-src and loaded as bench/datapath.py loads them (its policy, its
control block, the interface entry of lo).  The mapping comes from the kernel, not from a
disassembler (Debian 12's bpftool has none built in): BPF_OBJ_GET_INFO_BY_FD gives each function's
JIT address and length and, per line-info record, the JIT address where that source line's code
starts (jited_line_info) with its file and line (line_info, names in the program's BTF).  A sample
belongs to the last line record at or below its address within its function.  `perf script`'s
`sym+off` is relative to the function, so the sampled JIT image only has to be the same code as
the one read here (same program tag), which holds as both are this tree's build, loaded once.

Reported (report.md + jitprof.json in --out): the share of all samples on the CPU per program
function and outside BPF (kernel helpers, the test-run loop), and the --top source lines.  The
shares are of CPU time while the case runs back to back: hot caches, as PROG_TEST_RUN's figures.
The case's ns per run (datapath.py's method, before and after the sampling) is recorded too.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import ctypes
import datetime as _dt
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from etsf.libbpf import INT, U32, ProgInfo, get_lib  # noqa: E402

import datapath  # noqa: E402  (bench/datapath.py: the cases and how they are loaded)

BTF_MAGIC = 0xEB9F
LINE_INFO_REC = struct.Struct("<IIII")      # struct bpf_line_info: insn_off, file, line, line_col


class BtfInfo(ctypes.Structure):
    """struct bpf_btf_info (uapi)."""
    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", U32), ("id", U32), ("name", ctypes.c_uint64),
                ("name_len", U32), ("kernel_btf", U32)]


def _info(fd: int, info) -> None:
    ln = U32(ctypes.sizeof(info))
    rc = get_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln))
    if rc != 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD")


def btf_strings(raw: bytes) -> bytes:
    """The string section of a raw BTF blob (its header says where)."""
    magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from("<HBBIIIII", raw, 0)
    if magic != BTF_MAGIC:
        raise ValueError(f"not BTF (magic {magic:#x})")
    start = hdr_len + str_off
    return raw[start:start + str_len]


def btf_str(strs: bytes, off: int) -> str:
    end = strs.index(b"\0", off)
    return strs[off:end].decode(errors="replace")


def _prog_btf_strings(btf_id: int) -> bytes:
    fn = get_lib().bpf_btf_get_fd_by_id
    fn.argtypes, fn.restype = [U32], INT
    fd = fn(btf_id)
    if fd < 0:
        raise OSError(-fd, f"BTF id {btf_id}")
    try:
        first = BtfInfo()
        _info(fd, first)
        buf = (ctypes.c_uint8 * first.btf_size)()
        second = BtfInfo(btf=ctypes.addressof(buf), btf_size=first.btf_size)
        _info(fd, second)
        return btf_strings(bytes(buf))
    finally:
        os.close(fd)


def jit_map(prog_fd: int) -> dict:
    """{"funcs": [(jit address, length, name)], "lines": [(jit address, file, line)]} of a loaded
    program, every function of it included; names are the kernel's (bpf_prog_<tag>_<func>)."""
    a = ProgInfo()
    _info(prog_fd, a)
    nf, nk, nl, njl = a.nr_jited_func_lens, a.nr_jited_ksyms, a.nr_line_info, a.nr_jited_line_info
    if not (nf and nk and nl and njl):
        raise RuntimeError("the program has no JIT line info (BTF missing, or the JIT off)")
    lens, ksyms = (U32 * nf)(), (ctypes.c_uint64 * nk)()
    li, jl = (ctypes.c_uint8 * (nl * a.line_info_rec_size))(), (ctypes.c_uint64 * njl)()
    b = ProgInfo(nr_jited_func_lens=nf, jited_func_lens=ctypes.addressof(lens),
                 nr_jited_ksyms=nk, jited_ksyms=ctypes.addressof(ksyms),
                 nr_line_info=nl, line_info_rec_size=a.line_info_rec_size, line_info=ctypes.addressof(li),
                 nr_jited_line_info=njl, jited_line_info_rec_size=a.jited_line_info_rec_size,
                 jited_line_info=ctypes.addressof(jl))
    _info(prog_fd, b)
    strs = _prog_btf_strings(a.btf_id)
    names = kallsyms_bpf()
    funcs = [(ksyms[i], lens[i], names.get(ksyms[i], f"func{i}")) for i in range(min(nf, nk))]
    raw = bytes(li)
    lines = []
    for i in range(min(nl, njl)):
        _insn, file_off, _line_off, line_col = LINE_INFO_REC.unpack_from(raw, i * a.line_info_rec_size)
        lines.append((jl[i], btf_str(strs, file_off).rsplit("/", 1)[-1], line_col >> 10))
    lines.sort()
    return {"funcs": funcs, "lines": lines}


def kallsyms_bpf() -> dict:
    out = {}
    with open("/proc/kallsyms", encoding="ascii", errors="replace") as f:
        for ln in f:
            p = ln.split()
            if len(p) >= 3 and p[2].startswith("bpf_prog_"):
                out[int(p[0], 16)] = p[2]
    return out


def short(sym: str) -> str:
    """bpf_prog_<tag>_<func> -> <func>; other symbols as they are."""
    parts = sym.split("_", 3)
    return parts[3] if sym.startswith("bpf_prog_") and len(parts) == 4 else sym


def attribute(samples: list, jm: dict) -> dict:
    """samples: [(symbol, offset or None)] as perf script prints them.  Returns {"total",
    "by_func": Counter(func or symbol), "by_line": Counter((func, "file:line"))}; a sample in a
    program function without a line record at or below it counts as "<func>:?"."""
    funcs = {n: (addr, ln) for addr, ln, n in jm["funcs"]}
    addrs = [x[0] for x in jm["lines"]]
    by_func, by_line = collections.Counter(), collections.Counter()
    for sym, off in samples:
        fn = short(sym)
        by_func[fn] += 1
        if sym not in funcs or off is None:
            continue
        start, length = funcs[sym]
        if off >= length:
            by_line[(fn, "?")] += 1
            continue
        i = bisect.bisect_right(addrs, start + off) - 1
        if i < 0 or addrs[i] < start:
            by_line[(fn, "?")] += 1
        else:
            _a, file, line = jm["lines"][i]
            by_line[(fn, f"{file}:{line}")] += 1
    return {"total": len(samples), "by_func": by_func, "by_line": by_line}


def parse_perf_script(text: str) -> list:
    """`perf script -F ip,sym,symoff` lines -> [(symbol, offset or None)]."""
    out = []
    for ln in text.splitlines():
        p = ln.split()
        if len(p) < 2:
            continue
        sym = p[1]
        if "+0x" in sym:
            name, off = sym.rsplit("+0x", 1)
            try:
                out.append((name, int(off, 16)))
                continue
            except ValueError:
                pass
        out.append((sym, None))
    return out


def render(res: dict, meta: dict, top: int) -> str:
    tot = res["total"] or 1
    rows = [f"# Hot profile of `{meta['case']}` ({meta['timestamp']})", "",
            f"`{meta['program']}` from `{meta['bpf_src']}`, PROG_TEST_RUN repeats of {meta['repeat']:,} "
            f"back to back on CPU {meta['cpu']} for {meta['seconds']} s, `perf record -C {meta['cpu']} -F "
            f"{meta['freq']}`: {res['total']:,} samples on that CPU.  ns per run: {meta['ns_before']} before, "
            f"{meta['ns_after']} after the sampling.  Kernel {meta['kernel']}.", "",
            "## By function (share of all samples on the CPU)", "", "| function | share |", "|---|--:|"]
    for fn, n in res["by_func"].most_common(20):
        rows.append(f"| `{fn}` | {100 * n / tot:.1f} % |")
    rows += ["", f"## By source line (top {top})", "", "| function | line | share |", "|---|---|--:|"]
    for (fn, where), n in res["by_line"].most_common(top):
        rows.append(f"| `{fn}` | `{where}` | {100 * n / tot:.1f} % |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    cases = {c[0]: c for c in datapath.hot_cases()}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="tc_ingress_invite_1k_pass", choices=sorted(cases))
    ap.add_argument("--seconds", type=float, default=8.0, help="sampling time (1..60)")
    ap.add_argument("--freq", type=int, default=15000, help="perf sampling frequency (Hz)")
    ap.add_argument("--repeat", type=int, default=200000, help="runs per PROG_TEST_RUN call")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--bpf-src", default=str(ROOT / "bpf"))
    ap.add_argument("--out", default=None, help="result directory (default bench/results/<UTC>-jitprof)")
    args = ap.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        ap.error("--seconds must be 1..60")
    if not 100 <= args.freq <= 50000:
        ap.error("--freq must be 100..50000")
    if args.cpu not in os.sched_getaffinity(0):
        ap.error(f"--cpu {args.cpu}: not a CPU this process may run on")
    if not (Path(args.bpf_src) / "xdp_sip.bpf.c").is_file():
        ap.error(f"--bpf-src {args.bpf_src}: no xdp_sip.bpf.c there")
    perf = shutil.which("perf")
    if not perf:
        ap.error("perf not found (Debian: apt install linux-perf)")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.cpu})
    try:
        return _run(args, perf)
    finally:
        # main() also runs inside other processes (the tests): they get their CPUs back
        os.sched_setaffinity(0, affinity)


def _run(args, perf: str) -> int:
    cases = {c[0]: c for c in datapath.hot_cases()}
    ts = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or ROOT / "bench" / "results" / f"{ts}-jitprof")
    case = cases[args.case]
    tmp = Path(tempfile.mkdtemp(prefix="etsf-jitprof-"))
    root = f"/sys/fs/bpf/etsf-jitprof-{os.getpid()}"
    tree = None
    try:
        tree = datapath.load_tree(Path(args.bpf_src), tmp, root)
        prog = tree["progs"][case[1]]
        jm = jit_map(prog.fd)
        ns_before = datapath.run_once(tree, case, args.repeat)
        data = tmp / "perf.data"
        rec = subprocess.Popen([perf, "record", "-q", "-C", str(args.cpu), "-F", str(args.freq),
                                "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)                       # perf's buffers mapped before the first run
        calls, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < args.seconds and calls < 100000:
            datapath.run_once(tree, case, args.repeat)
            calls += 1
        rec.send_signal(signal.SIGINT)
        _unused, err = rec.communicate(timeout=60)
        if rec.returncode not in (0, -signal.SIGINT) or not data.exists():
            raise SystemExit(f"perf record failed: {err.decode(errors='replace').strip()[:300]}")
        ns_after = datapath.run_once(tree, case, args.repeat)
        script = subprocess.run([perf, "script", "-i", str(data), "-F", "ip,sym,symoff"],
                                capture_output=True, text=True, timeout=300, check=True).stdout
        res = attribute(parse_perf_script(script), jm)
    finally:
        datapath.close_tree(tree)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"case": args.case, "program": case[1], "bpf_src": args.bpf_src, "repeat": args.repeat,
            "cpu": args.cpu, "seconds": args.seconds, "freq": args.freq, "calls": calls,
            "ns_before": ns_before, "ns_after": ns_after, "timestamp": ts, "kernel": os.uname().release}
    out.mkdir(parents=True, exist_ok=True)
    (out / "jitprof.json").write_text(json.dumps({
        **meta, "samples": res["total"],
        "by_func": dict(res["by_func"].most_common()),
        "by_line": [[fn, where, n] for (fn, where), n in res["by_line"].most_common()]}, indent=1) + "\n")
    (out / "report.md").write_text(render(res, meta, args.top))
    print(f"{res['total']} samples, {sum(n for (f, _w), n in res['by_line'].items())} in {case[1]}'s "
          f"functions; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
