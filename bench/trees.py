"""This tree's eTSF programs and, with --base REF, those of another git ref (or, with a base source
directory, those built from it), side by side in one
benchmark run (T and T0): their build directories, the environment etsfctl runs with for each,
and the attach command that names each one's objects.

Both variants share the run's pin root and state directory, so that the same counters are read
and the same detach cleans up; the objects are the only difference.  `etsfctl attach` without
--build-dir would take the last build recorded in that state directory (this tree's): T0 would
run T's programs, so every attach here names its variant's build directory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import progcost

ROOT = Path(__file__).resolve().parent.parent


class Trees:
    def __init__(self, work: Path, pin_root: str, base: str | None, base_src: str | None = None):
        self.work, self.base, self.base_src = Path(work), base, base_src
        st = self.work / "etsf-state"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), ETSF_PIN_ROOT=pin_root,
                        ETSF_STATE_DIR=str(st / "state"), ETSF_RUN_DIR=str(st / "run"),
                        ETSF_BUILD_DIR=str(st / "build"))
        self.base_env = {"ETSF_BPF_SRC": str(self.work / "base-src" / "bpf"),
                         "ETSF_BUILD_DIR": str(self.work / "base-build")}

    def build_dir(self, base: bool = False) -> str:
        return self.base_env["ETSF_BUILD_DIR"] if base else self.env["ETSF_BUILD_DIR"]

    def build(self) -> None:
        """This tree's objects (bpf/, or $ETSF_BPF_SRC) and, with a base, the base ref's bpf/ or a
        copy of the base source directory (copied so edits made during the run do not leak in)."""
        r = subprocess.run([sys.executable, "-m", "etsf", "build", "--out", self.build_dir(), "--json"],
                           env=self.env, capture_output=True, text=True, timeout=600, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"etsfctl build: {r.stderr.strip()}")
        if self.base or self.base_src:
            from etsf.build import build  # pylint: disable=import-outside-toplevel
            dest = self.work / "base-src"
            # a --work directory given again holds the last run's base: start from nothing, so a
            # file the base no longer has is not built with it
            if self.base_src and Path(self.base_src).resolve().is_relative_to(dest.resolve()):
                raise RuntimeError(f"--base-src {self.base_src} lies in the run's own copy {dest}: give the source")
            shutil.rmtree(dest, ignore_errors=True)
            src = (progcost.snapshot_bpf(dest, Path(self.base_src)) if self.base_src
                   else progcost.export_bpf(self.base, dest))
            build(src, self.build_dir(base=True))

    def attach_args(self, iface: str, hook_args: list[str], base: bool = False) -> list[str]:
        return ["attach", "--iface", iface, *hook_args, "--build-dir", self.build_dir(base)]

    def etsfctl(self, netns: str, *args, check: bool = True, base: bool = False):
        """etsfctl in network namespace `netns`, with this tree's or the base's environment."""
        cmd = ["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-m", "etsf", *args]
        env = dict(self.env, **self.base_env) if base else self.env
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
        if check and r.returncode != 0:
            raise RuntimeError(f"etsfctl {' '.join(args)}: {r.stderr.strip()}")
        return r
