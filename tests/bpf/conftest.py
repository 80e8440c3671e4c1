"""Fixtures for the kernel packet tests (BPF_PROG_TEST_RUN on the real kernel).

One session builds bpf/*.bpf.c into a tmp dir and loads xdp_sip + tc_sip
with a unique pin root; every test starts from cleared control/policy/ACL/
rate-limit maps (counters are compared as deltas).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from etsf import bpf
from etsf.build import build, build_layout_object

from .helpers import Env

REPO = Path(__file__).resolve().parents[2]


def _need_root():
    if os.geteuid() != 0:
        pytest.fail("BPF tests need root")


@pytest.fixture(scope="session")
def objects(tmp_path_factory):
    _need_root()
    out = tmp_path_factory.mktemp("bpf-build")
    res = build(REPO / "bpf", out)
    return {Path(o).name: o for o in res["objects"]}


@pytest.fixture(scope="session")
def layout_object(objects):
    """The test-only BTF anchor object, built next to the programs."""
    return build_layout_object(REPO / "bpf", Path(objects["xdp_sip.bpf.o"]).parent)


@pytest.fixture(scope="session")
def loaded(objects):
    root = f"/sys/fs/bpf/etsf-test-{os.getpid()}"
    progs = {}
    progs.update(bpf.load_object(objects["xdp_sip.bpf.o"], root))
    progs.update(bpf.load_object(objects["tc_sip.bpf.o"], root))
    progs.update(bpf.load_object(objects["xdp_count.bpf.o"], root))
    maps = {n: bpf.open_map(n, root) for n in
            ("etsf_ctl", "etsf_policy", "etsf_acl_v4", "etsf_acl_v6", "etsf_rl",
             "etsf_stats", "etsf_ifstats", "etsf_last", "etsf_admit", "etsf_admit_txn",
             "etsf_ka_cfg", "etsf_ka_id", "etsf_ka_stats", "etsf_tm_txn")}
    yield {"root": root, "progs": progs, "maps": maps}
    for m in maps.values():
        m.close()
    for p in progs.values():
        p.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env(loaded):
    e = Env(loaded["progs"], loaded["maps"], loaded["root"])
    e.reset()
    return e
