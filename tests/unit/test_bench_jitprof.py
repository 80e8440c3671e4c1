"""bench/jitprof.py's pure parts: perf script lines, BTF strings, samples to source lines."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import jitprof  # noqa: E402

MAIN = "bpf_prog_0123456789abcdef_tc_sip_egress"
SUB = "bpf_prog_fedcba9876543210_etsf_sip_steps"
JM = {"funcs": [(0x1000, 0x100, MAIN), (0x2000, 0x80, SUB)],
      "lines": [(0x1000, "tc_sip.bpf.c", 100), (0x1040, "etsf_classify.h", 85),
                (0x2000, "etsf_sip_parse.h", 858), (0x2010, "etsf_sip_parse.h", 491)]}


def test_parse_perf_script_splits_symbol_and_offset():
    text = (" ffffffffc00206d4 bpf_prog_38f10793c2e09cfa_etsf_sip_steps+0x1248\n"
            " ffffffff82260fa8 __pi_memcpy+0x8\n"
            "\n"
            " ffffffff81000000 [unknown]\n")
    assert jitprof.parse_perf_script(text) == [
        ("bpf_prog_38f10793c2e09cfa_etsf_sip_steps", 0x1248), ("__pi_memcpy", 8), ("[unknown]", None)]


def test_attribute_takes_the_last_line_record_at_or_below_the_sample():
    samples = [(MAIN, 0x0), (MAIN, 0x3f), (MAIN, 0x40), (MAIN, 0xff), (SUB, 0x0f), (SUB, 0x10),
               (SUB, 0x7f), ("__pi_memcpy", 8), ("bpf_test_run", None)]
    r = jitprof.attribute(samples, JM)
    assert r["total"] == 9
    assert r["by_func"] == {"tc_sip_egress": 4, "etsf_sip_steps": 3, "__pi_memcpy": 1, "bpf_test_run": 1}
    assert r["by_line"] == {("tc_sip_egress", "tc_sip.bpf.c:100"): 2,
                            ("tc_sip_egress", "etsf_classify.h:85"): 2,
                            ("etsf_sip_steps", "etsf_sip_parse.h:858"): 1,
                            ("etsf_sip_steps", "etsf_sip_parse.h:491"): 2}


def test_attribute_never_borrows_another_function_s_lines():
    """A sample past its function's end, or before its first record, is '?', not a neighbour's line."""
    jm = {"funcs": JM["funcs"], "lines": [(0x1010, "tc_sip.bpf.c", 100), (0x2000, "etsf_sip_parse.h", 858)]}
    r = jitprof.attribute([(MAIN, 0x5), (MAIN, 0x100), (SUB, 0x10), ("bpf_prog_x_other", 0x10)], jm)
    assert r["by_line"] == {("tc_sip_egress", "?"): 2, ("etsf_sip_steps", "etsf_sip_parse.h:858"): 1}
    assert r["by_func"]["other"] == 1


def test_btf_strings_reads_the_string_section_the_header_names():
    strs = b"\0tc_sip.bpf.c\0/src/bpf/etsf_sip_parse.h\0"
    types = b"\x00" * 12
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    got = jitprof.btf_strings(hdr + types + strs)
    assert got == strs
    assert jitprof.btf_str(got, 1) == "tc_sip.bpf.c" and jitprof.btf_str(got, 14).endswith("parse.h")
    with pytest.raises(ValueError, match="not BTF"):
        jitprof.btf_strings(b"\0" * 24)


@pytest.mark.parametrize("args, field", [(["--seconds", "0"], "--seconds"), (["--freq", "50"], "--freq"),
                                         (["--case", "nope"], "--case")])
def test_bad_arguments_are_usage_errors(args, field, capsys):
    with pytest.raises(SystemExit) as e:
        jitprof.main(args)
    assert e.value.code == 2
    assert field in capsys.readouterr().err


def test_bpf_src_without_programs_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        jitprof.main(["--bpf-src", str(tmp_path)])
    assert e.value.code == 2 and "--bpf-src" in capsys.readouterr().err
