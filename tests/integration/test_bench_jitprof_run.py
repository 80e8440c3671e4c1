"""`bench/jitprof.py` end to end: the egress 200 OK case sampled for one second.

The samples on the CPU land in tc_sip_egress and its functions (the parser's bpf_loop callback among
them), each attributed to a line that exists in that function's source file, and what the run
loaded is gone afterwards.  Never speed: the shares are not judged.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import jitprof  # noqa: E402


def _pins() -> set[str]:
    return {p.name for p in Path("/sys/fs/bpf").iterdir() if p.name.startswith("etsf-jitprof-")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root (BPF, perf on a CPU)")
    assert shutil.which("perf"), "perf missing (scripts/setup.sh installs linux-perf)"
    out = tmp_path_factory.mktemp("jitprof")
    before = _pins()
    cpus = os.sched_getaffinity(0)
    assert jitprof.main(["--case", "tc_egress_200_ok", "--seconds", "1", "--freq", "5000",
                         "--out", str(out)]) == 0
    # the run pins itself to --cpu; whoever called it keeps its CPUs (every later test runs here)
    assert os.sched_getaffinity(0) == cpus
    return out, before


def test_samples_land_in_the_program_s_functions_on_real_lines(run):
    out, _before = run
    r = json.loads((out / "jitprof.json").read_text())
    assert r["case"] == "tc_egress_200_ok" and r["program"] == "tc_sip_egress"
    assert r["ns_before"] > 0 and r["ns_after"] > 0
    assert r["samples"] > 0 and r["by_func"].get("tc_sip_egress", 0) > 0
    assert r["by_func"].get("etsf_sip_steps", 0) > 0          # the parser's bpf_loop callback
    lines = [(fn, where, n) for fn, where, n in r["by_line"] if where != "?"]
    assert sum(n for _f, _w, n in lines) > 0.9 * sum(n for _f, _w, n in r["by_line"])
    for _fn, where, _n in lines:
        file, line = where.rsplit(":", 1)
        src = REPO / "bpf" / file
        assert src.is_file(), where
        # line 0: code the compiler made without a source line (a record of its own in BTF)
        assert 0 <= int(line) <= len(src.read_text().splitlines()), where
    steps = {w.rsplit(":", 1)[0] for fn, w, _n in lines if fn == "etsf_sip_steps"}
    assert "etsf_sip_parse.h" in steps, steps
    assert any(not w.endswith(":0") for _f, w, _n in lines)
    report = (out / "report.md").read_text()
    assert "tc_sip_egress" in report and "etsf_sip_parse.h" in report


def test_nothing_is_left_pinned(run):
    _out, before = run
    assert _pins() == before
