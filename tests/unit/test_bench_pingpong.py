"""The pinned ping-pong's pure parts (bench/pingpong.py): its messages, its policy and how it
pairs each filter's run with the D run just before it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import pingpong  # noqa: E402


def test_request_and_answer_share_the_call_id_field():
    req, roff, ans, aoff = pingpong.messages()
    assert len(req) == 1024 and len(ans) == pingpong.ANSWER_SIZE == 350
    assert req.startswith(b"INVITE ") and ans.startswith(b"SIP/2.0 200 OK\r\n")
    assert req[roff:roff + 14] == ans[aoff:aoff + 14] == pingpong.FIELD
    for msg, off in ((req, roff), (ans, aoff)):
        line = msg[msg.rindex(b"\r\n", 0, off) + 2:msg.index(b"\r\n", off)]
        assert line.startswith(b"Call-ID: "), line
    # the answer's CSeq names the request's method: telemetry closes the INVITE's transaction
    assert b"CSeq: 314159 INVITE\r\n" in req and b"CSeq: 314159 INVITE\r\n" in ans
    assert ans.endswith(b"Content-Length: 0\r\n\r\n")


def test_policy_lets_every_invite_through_and_telemetry_off_only_when_asked():
    on, off = pingpong.policy(), pingpong.policy(telemetry=False)
    assert "invite: {rate: 0}" in on and "telemetry" not in on
    assert off.startswith(on) and off.endswith("telemetry:\n  transactions: false\n")


def _run(rnd, p50, ref=None, **kw):
    rec = {"round": rnd, "timed": 100, "lost": 0, "stale": 0, "counts_add_up": True, "min_ns": p50 - 500,
           "p50_ns": p50, "p90_ns": p50 + 500, "p99_ns": p50 + 900, "mean_ns": p50 + 100, **kw}
    if ref is not None:
        rec["ref_p50_ns"], rec["ref_mean_ns"] = ref, ref + 100
    return rec


def test_each_filter_is_paired_with_the_d_run_before_it():
    # D moves between phases (13 and 16 µs); T is always 1 µs above the D run made just before it
    res = {"configs": {
        "D": {"runs": [_run(1, 13000), _run(1, 16000), _run(2, 16000), _run(2, 13000)]},
        "T": {"runs": [_run(1, 14000, ref=13000), _run(2, 17000, ref=16000)]},
        "F": {"runs": [_run(1, 16500, ref=16000), _run(2, 13500, ref=13000)]}}}
    s = pingpong.summarize(res)
    td, fd, tf = s["paired"]["T - D"], s["paired"]["F - D"], s["paired"]["T - F"]
    assert td["p50"]["diffs"] == pytest.approx([1.0, 1.0]) and td["p50"]["median"] == pytest.approx(1.0)
    assert fd["p50"]["diffs"] == pytest.approx([0.5, 0.5])
    # two filters: the difference of their differences to their own D, round by round
    assert tf["p50"]["diffs"] == pytest.approx([0.5, 0.5])
    assert td["mean"]["median"] == pytest.approx(1.0)
    assert s["configs"]["D"]["runs"] == 4 and s["configs"]["T"]["p50_us"] == pytest.approx(15.5)
    assert "T - T0" not in s["paired"]                 # no T0 in this run


def test_a_run_without_timed_exchanges_is_left_out():
    res = {"configs": {"D": {"runs": [_run(1, 13000)]},
                       "T": {"runs": [_run(1, 14000, ref=13000), {"round": 2, "timed": 0, "error": "x"}]}}}
    s = pingpong.summarize(res)
    assert s["configs"]["T"]["runs"] == 1 and s["paired"]["T - D"]["p50"]["rounds"] == [1]


@pytest.mark.parametrize("args, field", [(["--rounds", "0"], "--rounds"), (["--count", "5"], "--count"),
                                         (["--cpu", "999"], "--cpu"), (["--budget-min", "0.1"], "--budget-min"),
                                         (["--base", "no-such-ref-xyz"], "--base"),
                                         (["--base-src", "/nonexistent-etsf-src"], "--base-src"),
                                         (["--base", "HEAD", "--base-src", "bpf"], "--base-src"),
                                         (["--configs", "T,Q"], "--configs"), (["--configs", ","], "--configs"),
                                         (["--configs", "D"], "--configs")])
def test_bad_arguments_are_usage_errors_naming_the_option(args, field, capsys):
    with pytest.raises(SystemExit) as e:
        pingpong.main(args)
    assert e.value.code == 2
    assert field in capsys.readouterr().err


def test_t0_attaches_the_base_objects_and_t_its_own(tmp_path):
    """attach without --build-dir takes the state directory's last build, which T and T0 share:
    T0 would run T's programs and a before/after pair would compare a tree with itself."""
    import trees  # pylint: disable=import-outside-toplevel
    t = trees.Trees(tmp_path, "/sys/fs/bpf/etsf-test-trees", "HEAD")
    own, base = t.attach_args("qpn", ["--hook", "tc"]), t.attach_args("qpn", ["--hook", "tc"], base=True)
    assert own[:4] == base[:4] == ["attach", "--iface", "qpn", "--hook"]
    assert own[own.index("--build-dir") + 1] == t.env["ETSF_BUILD_DIR"] == str(tmp_path / "etsf-state" / "build")
    assert base[base.index("--build-dir") + 1] == str(tmp_path / "base-build") != t.env["ETSF_BUILD_DIR"]
    # both variants share the pin root and the state directory: the same counters, the same detach
    assert dict(t.env, **t.base_env)["ETSF_STATE_DIR"] == t.env["ETSF_STATE_DIR"]
    assert dict(t.env, **t.base_env)["ETSF_PIN_ROOT"] == t.env["ETSF_PIN_ROOT"]


def test_base_ref_exports_that_commits_bpf_tree(tmp_path):
    """T0 of --base REF builds from `git archive REF bpf`: every tracked file, byte for byte."""
    import progcost  # pylint: disable=import-outside-toplevel
    src = progcost.export_bpf("HEAD", tmp_path)
    listed = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", "HEAD", "bpf"],
                            capture_output=True, text=True, check=True).stdout.split()
    got = sorted(str(f.relative_to(tmp_path)) for f in src.rglob("*") if f.is_file())
    assert got == sorted(listed) and "bpf/etsf_parse.h" in got
    for name in listed:
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"HEAD:{name}"], capture_output=True, check=True).stdout
        assert (tmp_path / name).read_bytes() == blob, name


def test_base_src_copy_starts_fresh_and_never_removes_its_source(tmp_path, monkeypatch):
    """T0's copy of --base-src: a --work directory given again loses the last run's files (a file
    the base no longer has is not built), and a source inside that copy is refused, not deleted."""
    import trees  # pylint: disable=import-outside-toplevel
    from etsf import build as etsf_build  # pylint: disable=import-outside-toplevel
    built = []
    monkeypatch.setattr(trees.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(etsf_build, "build", lambda src, out: built.append(sorted(f.name for f in Path(src).iterdir())))
    src = tmp_path / "src" / "bpf"
    src.mkdir(parents=True)
    (src / "etsf_parse.h").write_text("/* base */\n")
    work = tmp_path / "work"
    stale = work / "base-src" / "bpf" / "gone.bpf.c"
    stale.parent.mkdir(parents=True)
    stale.write_text("/* the last run's */\n")
    trees.Trees(work, "/sys/fs/bpf/etsf-test-trees", None, str(src)).build()
    assert built == [["etsf_parse.h"]] and not stale.exists()
    with pytest.raises(RuntimeError, match="--base-src"):
        trees.Trees(work, "/sys/fs/bpf/etsf-test-trees", None, str(work / "base-src" / "bpf")).build()
    assert (work / "base-src" / "bpf" / "etsf_parse.h").read_text() == "/* base */\n"


def test_runs_delta_per_program():
    import etsfread  # pylint: disable=import-outside-toplevel
    before = {"tc_fastpath": {"run_cnt": 10, "run_time_ns": 5000}}
    after = {"tc_fastpath": {"run_cnt": 110, "run_time_ns": 105000},
             "pc_ref_ingress": {"run_cnt": 0, "run_time_ns": 0}}
    d = etsfread.runs_delta(before, after)
    assert d["tc_fastpath"] == {"run_cnt": 100, "run_time_ns": 100000, "ns_per_run": 1000.0}
    assert d["pc_ref_ingress"]["ns_per_run"] is None           # no runs: no figure, not 0
