"""Build the eTSF kernel objects (CO-RE) against the host's own BTF.

``build(src_dir, out_dir)`` generates ``vmlinux.h`` from the kernel BTF with
bpftool and compiles every ``bpf/*.bpf.c`` with ``clang -target bpf -O2 -g``.
The build is skipped when a stamp (sha256 over the sources, headers, the BTF
and the clang version) is unchanged.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import inputs

DEFAULT_OUT_DIR = "/var/lib/etsf/build"
DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
STAMP_FILE = "build.stamp"
# test-only object holding every mirrored struct/enum in its BTF (never loaded)
LAYOUT_SOURCE = "etsf_alignchecker.c"


class BuildError(Exception):
    """Compilation or BTF generation failed; message holds the first error lines."""


def _tool(name: str, env: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        for d in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
            if os.access(os.path.join(d, name), os.X_OK):
                path = os.path.join(d, name)
                break
    if not path:
        raise BuildError(f"{name} not found in PATH (set {env})")
    return path


def _first_errors(text: str, limit: int = 8) -> str:
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    if not lines:
        lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:limit])


def tool_versions() -> str:
    clang = _tool("clang", "ETSF_CLANG")
    out = subprocess.run([clang, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "clang ?"


def compute_stamp(src_dir: Path, btf: str) -> str:
    h = hashlib.sha256()
    h.update(tool_versions().encode())
    for p in sorted(list(src_dir.glob("*.bpf.c")) + list(src_dir.glob("*.h"))):
        if p.name == "vmlinux.h":
            continue
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
    with open(btf, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generate_vmlinux_h(out_dir: Path, btf: str) -> Path:
    bpftool = _tool("bpftool", "ETSF_BPFTOOL")
    res = subprocess.run([bpftool, "btf", "dump", "file", btf, "format", "c"],
                         capture_output=True, check=False)
    if res.returncode != 0:
        raise BuildError("bpftool btf dump failed: "
                         + _first_errors(res.stderr.decode(errors="replace")))
    dst = out_dir / "vmlinux.h"
    tmp = dst.with_suffix(".h.tmp")
    tmp.write_bytes(res.stdout)
    os.replace(tmp, dst)
    return dst


def compile_object(src: Path, out_dir: Path, include_dir: Path) -> Path:
    clang = _tool("clang", "ETSF_CLANG")
    obj = out_dir / (src.name[: -len(".c")] + ".o")     # x.bpf.c -> x.bpf.o
    tmp = out_dir / (obj.name + ".tmp")
    cmd = [clang, "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86",
           "-Wall", "-Wno-unused-function", "-Werror=implicit-function-declaration",
           "-I", str(out_dir), "-I", str(include_dir), "-I", str(src.parent),
           "-c", str(src), "-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"clang failed for {src.name}: " + _first_errors(res.stderr))
    os.replace(tmp, obj)
    return obj


def _read_stamp(path: Path) -> str | None:
    """The stamp of the last build; None (rebuild) when missing, oversized or not text."""
    try:
        return inputs.read_text(str(path), "build stamp").strip()
    except (OSError, ValueError):
        return None


def build(src_dir, out_dir=DEFAULT_OUT_DIR, btf: str = DEFAULT_BTF, force: bool = False) -> dict:
    """Compile every ``*.bpf.c`` of src_dir into out_dir; skip when unchanged."""
    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    if not src_dir.is_dir():
        raise BuildError(f"source dir {src_dir} does not exist")
    if not os.path.exists(btf):
        raise BuildError(f"kernel BTF {btf} not found (CONFIG_DEBUG_INFO_BTF=y required)")
    sources = sorted(src_dir.glob("*.bpf.c"))
    if not sources:
        raise BuildError(f"no *.bpf.c in {src_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = compute_stamp(src_dir, btf)
    stamp_path = out_dir / STAMP_FILE
    objects = [out_dir / (s.name[: -len(".c")] + ".o") for s in sources]
    if (not force and _read_stamp(stamp_path) == stamp
            and all(o.exists() for o in objects)):
        return {"objects": [str(o) for o in objects], "changed": False, "stamp": stamp}
    generate_vmlinux_h(out_dir, btf)
    built = [compile_object(s, out_dir, src_dir) for s in sources]
    stamp_path.write_text(stamp + "\n")
    return {"objects": [str(o) for o in built], "changed": True, "stamp": stamp}


def build_layout_object(src_dir, out_dir, btf: str = DEFAULT_BTF) -> str:
    """Compile the test-only layout object (LAYOUT_SOURCE) with the programs'
    headers and flags; its BTF is what tests compare src/etsf/layout/ with."""
    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    src = src_dir / LAYOUT_SOURCE
    if not src.is_file():
        raise BuildError(f"layout source {src} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "vmlinux.h").exists():
        generate_vmlinux_h(out_dir, btf)
    return str(compile_object(src, out_dir, src_dir))


def main(argv=None) -> int:  # pragma: no cover - convenience
    import argparse
    import json
    ap = argparse.ArgumentParser(description="build eTSF BPF objects")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[2] / "bpf"))
    ap.add_argument("--out", default=DEFAULT_OUT_DIR)
    ap.add_argument("--btf", default=DEFAULT_BTF)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    try:
        print(json.dumps(build(a.src, a.out, a.btf, a.force), indent=2))
    except BuildError as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
