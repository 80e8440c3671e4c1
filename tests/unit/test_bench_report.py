"""The paired benchmark (bench/run.py --paired): bench/report.py's arithmetic (differences are
taken within a round, only rounds both configurations ran count, a difference is called only
when every round agrees), the Williams orders, and one-line errors for bad paired inputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402  pylint: disable=wrong-import-position
import run  # noqa: E402  pylint: disable=wrong-import-position


def _cfg(name, p50_by_round, kind="direct", **extra):
    runs = [{"round": r, "created": 100, "failed_or_unfinished": 0, "cpu": {"raw_ms_per_call": {"busy": v / 2}, "ms_per_call": {"busy": 0.0}},
             "latency": {"invite_180_ms": {"p50": v}, "invite_200_ms": {"p50": v + 0.3}}}
            for r, v in p50_by_round.items()]
    return {"name": name, "kind": kind, "workloads": {"latency_un": {"runs": runs}, "latency_u1": {"runs": runs}},
            **extra}


def test_paired_diffs_per_round_in_microseconds_only_common_rounds():
    c = _cfg("C-etsf-fastpath", {0: 0.700, 1: 0.650, 2: 0.610, 4: 0.9})
    d = _cfg("D-direct", {0: 0.600, 1: 0.660, 2: 0.600, 3: 0.5})
    assert report.paired_diffs(c, d, "un", "invite_180_ms") == [100.0, -10.0, 10.0]
    assert report.paired_diffs(c, d, "un", "invite_200_ms") == [100.0, -10.0, 10.0]
    assert report.paired_diffs(c, d, "un", "cpu") == [50.0, -5.0, 5.0]


def test_paired_verdict_needs_every_round_to_agree():
    assert report.paired_verdict([5.0, 1.0, 30.0]) == "higher in every round"
    assert report.paired_verdict([-5.0, -1.0, -30.0, -2.0]) == "lower in every round"
    assert report.paired_verdict([5.0, -1.0, 30.0]).startswith("not distinguishable")
    assert report.paired_verdict([5.0, 0.0, 30.0]).startswith("not distinguishable")
    assert report.paired_verdict([5.0, 6.0]) == "too few rounds"


def test_render_paired_report(tmp_path):
    res = {"mode": "paired", "rounds": 3, "fixed_rate": 400, "started": "2026-11-26T11:00:00",
           "profile_params": {"latency_seconds": 10}, "host": {"kernel": "k", "cpus": 2},
           "configs": [_cfg("A-ipt-nft-10000", {0: 0.70, 1: 0.71, 2: 0.69}, kind="iptables-nft", baseline=True),
                       _cfg("C-etsf-fastpath", {0: 0.62, 1: 0.60, 2: 0.61}, kind="etsf-fastpath"),
                       _cfg("E-etsf-classifier", {0: 0.60, 1: 0.63, 2: 0.60}, kind="etsf-classifier"),
                       _cfg("D-direct", {0: 0.61, 1: 0.61, 2: 0.62})]}
    (tmp_path / "results.json").write_text(json.dumps(res))
    text = report.render(tmp_path, plots=False).read_text()
    assert "| C-etsf-fastpath − A-ipt-nft-10000 | INVITE→180 p50 (un) | -80, -110, -80 | -80 | lower in every round |" \
        in text
    assert "| C-etsf-fastpath − D-direct | INVITE→180 p50 (un) | +10, -10, -10 | -10 | not distinguishable" in text
    assert "| D-direct | 0.610 [0.610–0.620] |" in text
    assert "rotated by one per round" in text and "Williams" not in text
    res["orders"] = [["A-ipt-nft-10000", "C-etsf-fastpath", "D-direct", "E-etsf-classifier"]] * 3
    (tmp_path / "results.json").write_text(json.dumps(res))
    text = report.render(tmp_path, plots=False).read_text()
    assert "Williams design" in text and "round 1: A-ipt-nft-10000, C-etsf-fastpath, D-direct, E-etsf-classifier" in text
    assert "| C-etsf-fastpath − D-direct | CPU per call (un) | +5, -5, -5 | -5 | not distinguishable" in text


def test_williams_orders_balance_position_and_predecessor():
    for n, rows_expected in ((2, 2), (3, 6), (4, 4), (5, 10)):
        rows = run.williams_orders(n)
        assert len(rows) == rows_expected and all(sorted(r) == list(range(n)) for r in rows)
        per_pos = {(x, i) for r in rows for i, x in enumerate(r)}
        assert len(per_pos) == n * n                      # every config in every position
        pairs = [(r[i - 1], r[i]) for r in rows for i in range(1, n)]
        counts = {pair: pairs.count(pair) for pair in pairs}
        assert len(counts) == n * (n - 1) and len(set(counts.values())) == 1   # each follows each equally
    assert run.williams_orders(4)[0] == [0, 1, 3, 2]


@pytest.mark.parametrize("value", ['["A","X"]', '["A"]', '["C","C"]', '"AC"', '[["A"],"C"]'])
def test_paired_configs_bad_value_is_one_line_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(["--paired", "--set", f"paired_configs={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: paired_configs: a list of 2 or more distinct letters of A, C, E, D, Cg, Eg (got " in err


def test_rounds_only_with_paired(capsys):
    with pytest.raises(SystemExit):
        run.main(["--full", "--rounds", "3"])
    assert "--rounds: only with --paired, 1..12" in capsys.readouterr().err
