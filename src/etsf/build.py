"""Build the eTSF kernel objects (CO-RE) against the host's own BTF.

``build(src_dir, out_dir)`` generates ``vmlinux.h`` from the kernel BTF with
bpftool and compiles every ``bpf/*.bpf.c`` with ``clang -target bpf -O2 -g``.
The build is skipped when a stamp (sha256 over the sources, headers, the BTF,
the target architecture and the clang version) is unchanged.

Beside the objects, ``build.json`` (the manifest) records what they were built
for: the map layout/ABI hash of the agent that built them, the target
architecture and that they need kernel BTF (CO-RE).  Objects may be built on
another machine (the Ansible controller) and pushed; ``check_manifest`` is what
the loader runs before touching anything, and it refuses objects built for
another layout or architecture with one line.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
from enum import IntEnum
from pathlib import Path

from . import __version__, inputs

DEFAULT_OUT_DIR = "/var/lib/etsf/build"
DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
STAMP_FILE = "build.stamp"
MANIFEST_FILE = "build.json"
MANIFEST_FORMAT = 1
# machine (uname -m) -> the __TARGET_ARCH_* name bpf_tracing.h knows it by
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
               "riscv64": "riscv", "loongarch64": "loongarch"}
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


def host_arch() -> str:
    return platform.machine()


def _target_define(arch: str) -> str:
    if arch not in TARGET_ARCH:
        raise BuildError(f"arch: no BPF target for {arch!r} (one of {', '.join(sorted(TARGET_ARCH))})")
    return f"-D__TARGET_ARCH_{TARGET_ARCH[arch]}"


@functools.lru_cache(maxsize=1)
def layout_hash() -> str:
    """Hash of the map layout this agent reads and writes (src/etsf/layout.py: every mirrored
    struct's size and member offsets, every enum, every constant, the ABI version).  The test
    suite proves layout.py equals the headers the objects are compiled from, so objects built
    from the same tree carry the same hash."""
    from . import layout
    parts = [f"abi {layout.ABI_VERSION}"]
    for name, val in sorted(vars(layout).items()):
        if isinstance(val, type) and getattr(val, "__module__", "") == layout.__name__:
            if issubclass(val, (ctypes.Structure, ctypes.Union)):
                members = ",".join(f"{f[0]}@{getattr(val, f[0]).offset}:{getattr(val, f[0]).size}"
                                   for f in val.__dict__.get("_fields_", ()))
                parts.append(f"struct {name} {ctypes.sizeof(val)} {members}")
            elif issubclass(val, IntEnum):
                parts.append(f"enum {name} " + ",".join(f"{m.name}={int(m)}" for m in val))
        elif name.isupper() and isinstance(val, int) and not isinstance(val, bool):
            parts.append(f"{name} {val}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def compute_stamp(src_dir: Path, btf: str, arch: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(tool_versions().encode())
    h.update(f"arch {arch or host_arch()}\0".encode())
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


def compile_object(src: Path, out_dir: Path, include_dir: Path, arch: str | None = None) -> Path:
    clang = _tool("clang", "ETSF_CLANG")
    obj = out_dir / (src.name[: -len(".c")] + ".o")     # x.bpf.c -> x.bpf.o
    tmp = out_dir / (obj.name + ".tmp")
    # fixed paths in the debug info: the same sources give the same bytes wherever they are
    # built (a controller builds in a fresh temporary directory every run)
    cmd = [clang, "-target", "bpf", "-O2", "-g", _target_define(arch or host_arch()),
           f"-ffile-prefix-map={out_dir}=/etsf/build", f"-ffile-prefix-map={src.parent}=/etsf/bpf",
           f"-ffile-prefix-map={include_dir}=/etsf/bpf",
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


def manifest(stamp: str, arch: str, btf: str) -> dict:
    """What build.json records about objects just built."""
    return {"format": MANIFEST_FORMAT, "agent": __version__, "layout": layout_hash(), "arch": arch,
            "btf": "core", "built_against": platform.release() if btf == DEFAULT_BTF else btf,
            "stamp": stamp}


def read_manifest(out_dir) -> dict:
    """build.json of out_dir; BuildError (one line) when missing or not a manifest."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        data = json.loads(inputs.read_text(str(path), "build manifest"))
    except OSError:
        raise BuildError(f"{path} missing: objects of unknown layout, rebuild them (etsfctl build)") from None
    except ValueError as e:
        raise BuildError(f"{path}: not a build manifest ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise BuildError(f"{path}: format: expected {MANIFEST_FORMAT}, got "
                         f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}")
    return data


def check_manifest(out_dir, arch: str | None = None, btf: str = DEFAULT_BTF) -> dict:
    """Refuse (BuildError, one line) objects this agent must not load on this host: built for
    another map layout, another architecture, or needing kernel BTF the host lacks."""
    m = read_manifest(out_dir)
    path = Path(out_dir) / MANIFEST_FILE
    arch = arch or host_arch()
    if m.get("layout") != layout_hash():
        raise BuildError(f"{path}: objects built for map layout {m.get('layout')} (agent {m.get('agent')}), "
                         f"this agent {__version__} uses layout {layout_hash()}: "
                         "rebuild them with this agent's sources, nothing was loaded")
    if m.get("arch") != arch:
        raise BuildError(f"{path}: objects built for {m.get('arch')}, this host is {arch}: "
                         "rebuild them for this architecture, nothing was loaded")
    if m.get("btf") == "core" and not os.path.exists(btf):
        raise BuildError(f"{path}: objects need kernel BTF and {btf} is missing "
                         "(CONFIG_DEBUG_INFO_BTF=y), nothing was loaded")
    return m


def is_current(out_dir, stamp: str) -> bool:
    """Whether out_dir holds a complete build with this stamp that this agent may load."""
    out_dir = Path(out_dir)
    if _read_stamp(out_dir / STAMP_FILE) != stamp:
        return False
    try:
        check_manifest(out_dir)
    except BuildError:
        return False
    return True


def build(src_dir, out_dir=DEFAULT_OUT_DIR, btf: str = DEFAULT_BTF, force: bool = False,
          arch: str | None = None) -> dict:
    """Compile every ``*.bpf.c`` of src_dir into out_dir for arch (default: this machine's);
    skip when unchanged."""
    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    arch = arch or host_arch()
    _target_define(arch)
    if not src_dir.is_dir():
        raise BuildError(f"source dir {src_dir} does not exist")
    if not os.path.exists(btf):
        raise BuildError(f"kernel BTF {btf} not found (CONFIG_DEBUG_INFO_BTF=y required)")
    sources = sorted(src_dir.glob("*.bpf.c"))
    if not sources:
        raise BuildError(f"no *.bpf.c in {src_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = compute_stamp(src_dir, btf, arch)
    stamp_path = out_dir / STAMP_FILE
    objects = [out_dir / (s.name[: -len(".c")] + ".o") for s in sources]
    if (not force and _read_stamp(stamp_path) == stamp and _manifest_matches(out_dir, stamp, arch)
            and all(o.exists() for o in objects)):
        return {"objects": [str(o) for o in objects], "changed": False, "stamp": stamp, "arch": arch}
    generate_vmlinux_h(out_dir, btf)
    built = [compile_object(s, out_dir, src_dir, arch) for s in sources]
    stamp_path.write_text(stamp + "\n")
    tmp = out_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest(stamp, arch, btf), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / MANIFEST_FILE)
    return {"objects": [str(o) for o in built], "changed": True, "stamp": stamp, "arch": arch}


def _manifest_matches(out_dir: Path, stamp: str, arch: str) -> bool:
    try:
        m = read_manifest(out_dir)
    except BuildError:
        return False
    return m.get("stamp") == stamp and m.get("arch") == arch and m.get("layout") == layout_hash()


def build_layout_object(src_dir, out_dir, btf: str = DEFAULT_BTF) -> str:
    """Compile the test-only layout object (LAYOUT_SOURCE) with the programs'
    headers and flags; its BTF is what tests compare src/etsf/layout/ with."""
    return build_test_object(src_dir, out_dir, LAYOUT_SOURCE, btf)


def build_test_object(src_dir, out_dir, source: str, btf: str = DEFAULT_BTF) -> str:
    """Compile one test-only source of src_dir (a ``*.c`` that is not ``*.bpf.c``, so
    ``build`` never compiles or ships it) with the programs' headers and flags."""
    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    src = src_dir / source
    if source.endswith(".bpf.c"):
        raise BuildError(f"test source {source}: a *.bpf.c is a production program")
    if not src.is_file():
        raise BuildError(f"test source {src} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "vmlinux.h").exists():
        generate_vmlinux_h(out_dir, btf)
    return str(compile_object(src, out_dir, src_dir))


def main(argv=None) -> int:  # pragma: no cover - convenience
    import argparse
    ap = argparse.ArgumentParser(description="build eTSF BPF objects")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[2] / "bpf"))
    ap.add_argument("--out", default=DEFAULT_OUT_DIR)
    ap.add_argument("--btf", default=DEFAULT_BTF)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--arch", default=None)
    a = ap.parse_args(argv)
    try:
        print(json.dumps(build(a.src, a.out, a.btf, a.force, a.arch), indent=2))
    except BuildError as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
