"""`python bench/lrubench.py` (the LRU list microbenchmark) works end to end: both maps are what
they claim (one common LRU list, one list per CPU, 65,536 entries), every insert succeeded and
every lookup found its key, on one CPU and on all at once, and the report has both rows.
Never speed: the ns of a run on a shared machine are not judged."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_lrubench_runs_and_counts_no_failure(tmp_path):
    assert os.geteuid() == 0, "needs root (BPF)"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    # 2 rounds x 2 maps x (1 + CPUs) threads x 50,000 runs: more inserts than either map holds
    r = subprocess.run([sys.executable, str(REPO / "bench" / "lrubench.py"), "--rounds", "2", "--repeat", "50000",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["failed_inserts"] == 0 and res["missed_lookups"] == 0
    assert res["maps"]["lru_common"]["map_flags"] == 0
    assert res["maps"]["lru_percpu"]["map_flags"] == 2                  # BPF_F_NO_COMMON_LRU
    for m in res["maps"].values():
        assert m["max_entries"] == 65536
        # full and evicting: 2 x 50,000 inserts on CPU 0 alone already exceed its share
        assert 0 < m["entries_at_end"] <= 65536
    for v in ("common", "per-cpu"):
        for mode in ("one CPU", "all CPUs"):
            assert len(res["runs"][v][mode]) == 2 and all(ns > 0 for ns in res["runs"][v][mode]), (v, mode)
    text = (tmp_path / "report.md").read_text()
    assert "| one CPU |" in text and "| all CPUs |" in text
