"""report.md and plots of a path benchmark run (bench/path.py) from its results.json.

    python bench/path_report.py bench/results/<UTC>-path
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stats  # noqa: E402
import plotting  # noqa: E402

CPU_PARTS = ("sipp (UAC)", "responder", "softirq threads", "kernel threads", "other tasks")
FAMILIES = (("ipt-nft", "A iptables-nft"), ("ipt-legacy", "A iptables-legacy"), ("nft-vmap", "A' nftables vmap"),
            ("C", "C eTSF fast path"))


def runs(res: dict, name: str, tr: str = "un") -> list[dict]:
    return res["configs"].get(name, {}).get("runs", {}).get(tr, [])


def sel(r: dict, view: str) -> dict:
    """A run's transit summary for view: 'request' or 'response' (every datagram that way), or
    'INVITE' (the first datagram of each call: with -t un a new conntrack entry, so the one
    that walks the NAT rules; the later ones of a call hit the conntrack entry)."""
    if view == "INVITE":
        return r["transit"]["request"]["by_message"].get("INVITE") or {"p50": None, "p99": None}
    return r["transit"][view]


def by_round(res: dict, name: str, tr: str, direction: str, q: str) -> dict[int, float]:
    return {r["round"]: sel(r, direction)[q] for r in runs(res, name, tr) if sel(r, direction)[q] is not None}


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def f(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def names(res: dict) -> dict:
    k = res["params"]["key_services"]
    return {"D": "D", "A": f"A-ipt-nft-{k}", "A'": f"A'-nft-vmap-{k}", "C": f"C-{k}", "C-xdp": f"C-xdp-{k}",
            "C0": f"C0-{k}", "E0": "E0", "E0-tc": "E0-tc", "E0-tc-nt": "E0-tc-nt",
            "E": f"E-{k}", "R": "R", "k": k}


KEY_ORDER = ("D", "A", "C", "C-xdp", "C0", "E0", "E0-tc", "E0-tc-nt", "E", "R")


def transit_cell(res, name, tr="un", direction="request"):
    rs = runs(res, name, tr)
    return (med([sel(r, direction)["p50"] for r in rs]), med([sel(r, direction)["p99"] for r in rs]),
            len(rs))


def comparisons(res: dict) -> list[tuple[str, str, str]]:
    n = names(res)
    return [("C − D", n["C"], "D"), ("E0-tc − D", "E0-tc", "D"), ("E0 − D", "E0", "D"),
            ("C − C-xdp", n["C"], n["C-xdp"]), ("C-xdp − D", n["C-xdp"], "D"), ("C0 − D", n["C0"], "D"),
            ("A − D", n["A"], "D"), ("C − A", n["C"], n["A"]), ("E − A", n["E"], n["A"]), ("D − R", "D", "R"),
            ("E0-tc-nt − D", "E0-tc-nt", "D"), ("E0-tc − E0-tc-nt", "E0-tc", "E0-tc-nt")]


def round_trip(res: dict, a: str, b: str, tr: str = "un") -> dict:
    """a − b per request/response round trip: per round, Δ request p50 + Δ response p50 (both
    directions cross the node once each), paired over the rounds both ran."""
    rq = [by_round(res, x, tr, "request", "p50") for x in (a, b)]
    rs = [by_round(res, x, tr, "response", "p50") for x in (a, b)]
    both = sorted(set(rq[0]) & set(rq[1]) & set(rs[0]) & set(rs[1]))
    return stats.paired({r: rq[0][r] + rs[0][r] for r in both}, {r: rq[1][r] + rs[1][r] for r in both})


def paired_table(res: dict, tr: str = "un") -> tuple[list[str], dict]:
    out = ["| difference (µs, -t " + tr + ") | datagrams | rounds | median of per-round Δp50 | bootstrap 95 % CI "
           "| sign test (+/−, p) | smallest detectable |", "|---|---|---|---|---|---|---|"]
    doc = {}
    for label, a, b in comparisons(res):
        for direction in ("INVITE", "request", "response"):
            pr = stats.paired(by_round(res, a, tr, direction, "p50"), by_round(res, b, tr, direction, "p50"))
            doc[f"{label}|{direction}"] = pr
            if not pr["diffs"]:
                continue
            lo, hi = pr["ci95"]
            ci = "–" if lo is None else f"[{lo:+.1f}, {hi:+.1f}]"
            s = pr["sign"]
            out.append(f"| {label} | {direction} | {len(pr['diffs'])} | {pr['median']:+.1f} | {ci} | "
                       f"{s['pos']}/{s['neg']}, {s['p']:.3f} | {f(pr['mde'])} |")
    return out, doc


def cpu_rows(res: dict, cfg_names) -> list[str]:
    out = ["| configuration | " + " | ".join(CPU_PARTS) + " | not in a live task | whole (idle acct.) | "
           "softirq (ticks) | adds up (±10 %) |", "|---|" + "---|" * (len(CPU_PARTS) + 4)]
    for name in cfg_names:
        rs = runs(res, name)
        if not rs:
            continue
        cells = [med([r["cpu"]["ms_per_call"].get(p, 0.0) * 1000 for r in rs]) for p in CPU_PARTS]
        ok = [max(1, r["successful"]) for r in rs]
        resid = med([r["cpu"]["residual_s"] * 1e6 / o for r, o in zip(rs, ok)])
        whole = med([r["cpu"]["ms_per_call"]["whole"] * 1000 for r in rs])
        sirq = med([r["cpu"]["ms_per_call"]["softirq (ticks)"] * 1000 for r in rs])
        good = sum(1 for r in rs if r["cpu"]["adds_up"])
        out.append(f"| {name} | " + " | ".join(f(c, 0) for c in cells) + f" | {f(resid, 0)} | {f(whole, 0)} | "
                   f"{f(sirq, 0)} | {good}/{len(rs)} runs |")
    return out


def headline(res: dict) -> list[str]:
    """The table the README quotes (also written alone as headline.md): node transit per
    configuration, C/A, C − D and E0 − D with their intervals, CPU per call as parts that add
    up to the whole, and the classifier's ns per packet in traffic next to PROG_TEST_RUN."""
    n = names(res)
    k = n["k"]
    L = ["## Headline (node transit, µs, -t un; median over rounds of each run's quantile)", "",
         "INVITE: the first datagram of a call, a new conntrack entry (the one that walks the NAT rules); "
         "requests: INVITE, ACK, BYE; responses: 100, 180, 200 (INVITE), 200 (BYE).", "",
         "| configuration | INVITE p50 | INVITE p99 | requests p50 | requests p99 | responses p50 | responses p99 "
         "| runs | CPU µs per call: sipp + responder + other tasks/threads + not in a task = whole |",
         "|---|---|---|---|---|---|---|---|---|"]
    head = [("D direct", "D"), ("A iptables-nft N=0", "A-ipt-nft-0"), (f"A iptables-nft N={k}", n["A"]),
            ("A iptables-nft N=30000", "A-ipt-nft-30000"), (f"A′ nftables vmap N={k}", n["A'"]),
            ("C as deployed, default hook (N=0)", "C-0"), (f"C as deployed, default hook (N={k})", n["C"]),
            ("C as deployed, default hook (N=30000)", "C-30000"),
            (f"C-xdp: XDP classifier + fast path (N={k})", n["C-xdp"]),
            (f"C0 fast path alone (N={k})", n["C0"]), ("E0 XDP classifier alone, direct path", "E0"),
            ("E0-tc TC classifier alone, direct path", "E0-tc"),
            ("E0-tc-nt TC classifier alone, telemetry off", "E0-tc-nt"), (f"E classifier on A (N={k})", n["E"]),
            ("R raw floor", "R")]
    shown = set()
    for label, name in head:
        rs = runs(res, name)
        if not rs or name in shown:     # with k = 0, C-0 is also the key C
            continue
        shown.add(name)
        i50, i99, _runs = transit_cell(res, name, direction="INVITE")
        q50, q99, cnt = transit_cell(res, name)
        r50, r99, _runs = transit_cell(res, name, direction="response")
        L.append(f"| {label} | {f(i50)} | {f(i99)} | {f(q50)} | {f(q99)} | {f(r50)} | {f(r99)} | {cnt} "
                 f"| {cpu_sum(rs)} |")
    L.append("")
    for nn in sorted({k, 30000}):
        for view in ("INVITE", "request"):
            c = transit_cell(res, f"C-{nn}", direction=view)[0]
            a = transit_cell(res, f"A-ipt-nft-{nn}", direction=view)[0]
            if c is not None and a:
                L.append(f"- C/A {view if view == 'INVITE' else 'all requests'} transit p50 at N={nn}: "
                         f"**{c / a:.2f}** ({f(c)} / {f(a)} µs)")
    for nn in sorted({0, k, 30000}):
        c = transit_cell(res, f"C-{nn}")[0]
        d = transit_cell(res, "D")[0]
        cr, dr = transit_cell(res, f"C-{nn}", direction="response")[0], transit_cell(res, "D", direction="response")[0]
        if c is not None and d is not None:
            L.append(f"- node transit p50 C (N={nn}) vs D: requests {f(c)} vs {f(d)} µs, responses {f(cr)} vs "
                     f"{f(dr)} µs" + (" (C-0 and C-30000: one sweep run each against D's median over rounds)" if nn != k else ""))
    for label, a, b in (("E0-tc − D", "E0-tc", "D"), ("E0 − D", "E0", "D"), ("C − D", n["C"], "D"),
                        ("E0-tc-nt − D", "E0-tc-nt", "D"), ("E0-tc − E0-tc-nt (telemetry)", "E0-tc", "E0-tc-nt")):
        pr = round_trip(res, a, b)
        if pr["diffs"]:
            lo, hi = pr["ci95"]
            ci = "no interval from one round" if lo is None else f"95 % CI [{lo:+.2f}, {hi:+.2f}]"
            L.append(f"- {label} per request/response round trip (per-round Δ of request p50 + response p50, "
                     f"median): {pr['median']:+.2f} µs ({ci}, {len(pr['diffs'])} rounds)")
    for label, a, b in comparisons(res)[:4]:
        cells = []
        for direction in ("INVITE", "request", "response"):
            pr = stats.paired(by_round(res, a, "un", direction, "p50"), by_round(res, b, "un", direction, "p50"))
            if pr["diffs"]:
                lo, hi = pr["ci95"]
                ci = "no interval from one round" if lo is None else f"95 % CI [{lo:+.1f}, {hi:+.1f}]"
                cells.append(f"{direction} {pr['median']:+.1f} µs ({ci}, {len(pr['diffs'])} rounds)")
        if cells:
            L.append(f"- {label} (per-round Δ of transit p50, median): " + "; ".join(cells))
    ns = classifier_ns(res)
    if ns:
        L.append(f"- eTSF programs per run in traffic: {ns}")
    return L


def cpu_sum(rs: list[dict]) -> str:
    """'a + b + c + d = whole' in µs per call (medians over runs), the parts as measured."""
    def per_call(r, secs):
        return secs * 1e6 / max(1, r["successful"])
    sipp = med([per_call(r, r["cpu"]["parts_s"].get("sipp (UAC)", 0.0)) for r in rs])
    resp = med([per_call(r, r["cpu"]["parts_s"].get("responder", 0.0)) for r in rs])
    rest = med([per_call(r, sum(v for p, v in r["cpu"]["parts_s"].items() if p not in ("sipp (UAC)", "responder")))
                for r in rs])
    resid = med([per_call(r, r["cpu"]["residual_s"]) for r in rs])
    whole = med([per_call(r, r["cpu"]["whole_s"]) for r in rs])
    good = sum(1 for r in rs if r["cpu"]["adds_up"])
    return (f"{f(sipp, 0)} + {f(resp, 0)} + {f(rest, 0)} + {f(resid, 0)} = {f(whole, 0)} "
            f"(±10 % in {good}/{len(rs)} runs)")


PROGS = ("xdp_sip", "tc_fastpath", "tc_sip_egress")


def classifier_ns(res: dict) -> str:
    """eTSF's programs' ns per run in traffic (bpf_stats pass) next to PROG_TEST_RUN's INVITE pass."""
    bs = (res.get("bpf_stats") or {}).get("in_traffic") or {}
    parts = [f"{c} " + " + ".join(f"{prog} {f(doc['programs'][prog]['ns_per_run'], 0)}" for prog in PROGS
                                  if (doc["programs"].get(prog) or {}).get("run_cnt")) + " ns"
             for c, doc in bs.items() if any((doc["programs"].get(prog) or {}).get("run_cnt") for prog in PROGS)]
    ptr = (res.get("prog_test_run") or {}).get("invite_1k_pass")
    if ptr is not None:
        parts.append(f"PROG_TEST_RUN (INVITE, hot, back to back) {f(ptr, 0)} ns")
    return ", ".join(parts)


KA_ROWS = (("context switches per keep-alive: node (/proc/stat ctxt, the whole machine)", "ctx_per_ka_node", 3),
           ("context switches per keep-alive: the tasks that answer or forward them (responder, prober, "
            "ksoftirqd)", "ctx_per_ka_node_tasks", 3),
           ("context switches per keep-alive: the benchmark's tasks (those + sipp and kagen; no other tenants)",
            "ctx_per_ka_bench", 3),
           ("context switches per keep-alive: the pod's responder (/proc/<pid>/status)", "ctx_per_ka_responder", 3),
           ("node CPU per keep-alive, µs (busy time by idle accounting, the whole machine)", "cpu_us_per_ka_node", 2),
           ("CPU per keep-alive, µs: the tasks that answer or forward them (responder, prober, ksoftirqd)",
            "cpu_us_per_ka_node_tasks", 2),
           ("CPU per keep-alive, µs: the benchmark's tasks (those + sipp and kagen, whose softirq carries the "
            "node's veth forwarding; no other tenants)", "cpu_us_per_ka_bench", 2),
           ("responder CPU per keep-alive, µs (schedstat)", "cpu_us_per_ka_responder", 2),
           ("call requests (INVITE, ACK, BYE) node transit p50 in the mix, µs", "call_request_p50_us", 1),
           ("call requests node transit p99 in the mix, µs", "call_request_p99_us", 1),
           ("call responses (100, 180) node transit p50 in the mix, µs", "call_response_p50_us", 1),
           ("call responses node transit p99 in the mix, µs", "call_response_p99_us", 1))


def _ci(lohi, nd=3):
    lo, hi = lohi or (None, None)
    return "–" if lo is None else f"[{lo:.{nd}f}, {hi:.{nd}f}]"


def keepalive_section(res: dict) -> list[str]:
    """The keep-alive pass (R: the pod's responder answers the OPTIONS, E: eTSF answers them
    in the kernel): per keep-alive costs and the calls' transit, E against R."""
    ka = res.get("keepalive")
    L = ["## Keep-alive mix: the pod answers OPTIONS (R) vs eTSF answers them in the kernel (E)", ""]
    if not ka:
        return L + ["keep-alive pass: not run", ""]
    if not ka.get("phases"):
        return L + [f"keep-alive pass: not run ({ka.get('params', {}).get('rounds', 0)} rounds asked for)", ""]
    if ka.get("phases"):
        import path as P  # noqa: PLC0415  pylint: disable=import-outside-toplevel
        ka["visits"] = P.ka_visits(ka["phases"])         # re-analysed, so a results file re-renders the same
        ka["analysis"] = P.ka_analyse(ka["visits"])
    p, an = ka["params"], ka.get("analysis") or {}
    rounds = sorted({v["round"] for v in ka.get("visits", [])})
    L += [f"eTSF as deployed ({p['config']}: the classifier on its default hook + the fast path steering the VIP "
          "to the pod), one "
          f"topology, the policy switched between visits (`keepalive.enabled` false for R, true for E with the "
          f"agent's prober holding the proxy-alive gate open and 1 in {p['sample_every']} OPTIONS still sent to "
          f"the pod). {len(rounds)} paired round(s) in alternating order, phases of {p['phase_s']} s: calls only "
          f"({p['call_rate']} calls/s) and calls + {p['ka_rate']} OPTIONS/s ({p['ka_per_call']} per call) from "
          f"{p['sources']} source addresses (bench/kagen.c, every answer matched). Per keep-alive = (mix − calls "
          "only of the same visit) ÷ keep-alives sent. E / R: median of the per-round ratios with a seeded "
          "bootstrap 95 % interval (a target is met when the whole interval is under it); Δ: paired "
          "difference E − R with its interval and the smallest effect the rounds can detect (MDE).", "",
          "| metric (median over rounds) | R: pod answers | E: eTSF answers | E / R [95 % CI] | Δ E − R [95 % CI], "
          "MDE | target | verdict |", "|---|---|---|---|---|---|---|"]
    for label, key, nd in KA_ROWS:
        s = an.get(key) or {}
        d = s.get("diff") or {}
        tgt = s.get("target")
        goal = f"≤ {tgt:g}×" if tgt else ("unchanged or lower" if key.startswith("call_") else "")
        L.append(f"| {label} | {f(s.get('k_median'), nd)} | {f(s.get('e_median'), nd)} | {f(s.get('median'), 3)} "
                 f"{_ci(s.get('ci95'))} | {f(d.get('median'), nd)} {_ci(d.get('ci95'), nd)}, MDE "
                 f"{f(d.get('mde'), nd)} | {goal} | {s.get('verdict') or ''} |")
    L.append("")
    L += ["| round | config | phase | calls ok / planned | OPTIONS sent / answered 200 | eTSF answered / sampled "
          "| OPTIONS into the pod | node ctxt | responder ctx | node busy CPU s | busy time adds up |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ph in ka.get("phases", []):
        g = ph.get("gen") or {}
        et = ph.get("etsf_keepalive") or {}
        resp = (ph.get("groups") or {}).get("responder") or {}
        L.append(f"| {ph['round'] + 1} | {ph['config']} | {ph['phase']} | {ph['calls']['successful']} / "
                 f"{ph['calls']['planned']} | {g.get('sent', '–')} / {g.get('answered_200', '–')} | "
                 f"{et.get('answered', '–')} / {et.get('passed_sampled', '–')} | "
                 f"{ph['call_transit']['options_to_pod']} | {ph['ctxt']} | {resp.get('ctx', '–')} | "
                 f"{ph['busy_s']:.3f} | {'yes' if ph.get('adds_up') else 'no'} "
                 f"({f(100 * ph['residual_ratio'] if ph.get('residual_ratio') is not None else None)} % residual) |")
    bad = [f"{ph['config']} r{ph['round'] + 1} {ph['phase']}: {c}" for ph in ka.get("phases", [])
           for c in (ph.get("gen") or {}).get("consistency", [])]
    gen = "consistent (every answer matched to its request)" if not bad else "INCONSISTENT: " + "; ".join(bad[:5])
    L += ["", "Generator counts " + gen, ""]
    return L


def render(out: Path, plots: bool = True) -> Path:
    out = Path(out)
    res = json.loads((out / "results.json").read_text())
    n = names(res)
    p = res["params"]
    L = [f"# eTSF path benchmark ({res['profile']})", "",
         f"Started {res.get('started')}, wall {res.get('wall_seconds')} s (path passes {res.get('path_seconds')} s). "
         f"Host: kernel {res['host'].get('kernel')}, {res['host'].get('cpus')} CPUs, load at start "
         f"{' '.join(res['host'].get('loadavg_at_start') or [])}. Pinning: sipp UAC on "
         f"{res['host']['pinning']['sipp_uac']}, responder on {res['host']['pinning']['responder']}, softirq: "
         f"{res['host']['pinning']['softirq']}.", "",
         f"Load: sipp UAC, {p['rate']} calls/s (INVITE/100/180/200/ACK/BYE/200), `-t un` {p['seconds']} s per run "
         f"from 64 source addresses (a new conntrack entry per call), `-t u1` {p['u1_seconds']} s; the pod runs the "
         f"light C responder (bench/responder/responder.c). Key configurations: {p['rounds']} paired round(s) "
         f"in Williams order with a quiet-machine start; the service sweep (A′ nftables vmap included, up to "
         f"N = {p.get('vmap_max_services')}: nft 1.0.x loads that ruleset in a time growing with N²): one run per "
         f"point (fewer rounds than the key configurations: its points are read as a trend, not as paired "
         f"differences).", ""]
    if res.get("errors"):
        L += ["**Errors:** " + "; ".join(res["errors"]), ""]
    if res.get("skipped"):
        L += ["**Skipped (time budget or tools):** " + "; ".join(res["skipped"]), ""]
    if res.get("only") == "keepalive":
        L += keepalive_section(res)
        (out / "report.md").write_text("\n".join(L) + "\n")
        return out / "report.md"

    hl = headline(res)
    (out / "headline.md").write_text("\n".join(hl) + "\n")
    L += hl + [""]
    ptab, pdoc = paired_table(res)
    mdes = [v["mde"] for v in pdoc.values() if v.get("mde") is not None]
    L += ["## Paired differences (per-round request/response transit p50)", "", *ptab, ""]
    if mdes:
        L.append(f"Smallest effect this run can detect (80 % power, α = 0.05, from the spread of the per-round "
                 f"differences): {min(mdes):.1f}–{max(mdes):.1f} µs depending on the comparison. The sign test needs "
                 f"at least {stats.sign_rounds_needed()} rounds to reach p < 0.05 at all; this run has {p['rounds']}.")
    else:
        L.append("One round only: no paired statistics (use --full, >= 10 rounds).")
    L.append("")

    # classifier cost
    L += ["## eTSF in traffic vs PROG_TEST_RUN (ns per program run)", ""]
    bs = (res.get("bpf_stats") or {}).get("in_traffic") or {}
    ptr = res.get("prog_test_run") or {}
    if bs:
        L += ["| configuration | program | runs | ns per run (in traffic, bpf_stats) |", "|---|---|---|---|"]
        for cname, doc in bs.items():
            for prog, v in doc["programs"].items():
                if v["run_cnt"]:
                    L.append(f"| {cname} | {prog} | {v['run_cnt']} | {f(v['ns_per_run'], 0)} |")
        L.append("")
        L += ["SIP payload parses in that pass (etsf_parse_stats, by hook: parses / XDP metadata used / "
              "metadata missing):", "", "| configuration | hook chosen | XDP | TC_INGRESS | TC_EGRESS |",
              "|---|---|---|---|---|"]
        for cname, doc in bs.items():
            ps = doc.get("parses") or {}
            cells = [" / ".join(str((ps.get(h) or {}).get(k2, "–"))
                                for k2 in ("sip_parses", "meta_used", "meta_missing"))
                     for h in ("XDP", "TC_INGRESS", "TC_EGRESS")]
            L.append(f"| {cname} | {doc.get('hook') or '–'} | " + " | ".join(cells) + " |")
        L.append("")
        st0 = res["host"].get("bpf_stats_enabled_at_start")
        L.append(f"kernel.bpf_stats_enabled was set to 1 for that pass only and restored to "
                 f"{res['bpf_stats'].get('sysctl_restored_to')}"
                 + (" (it was already 1 machine-wide when the run started, so the timed passes also carried "
                    "its two clock reads per program run)." if st0 == "1" else "."))
        L.append("The in-traffic figures are per run at this call rate: each packet finds the program's code "
                 "and maps cold, unlike PROG_TEST_RUN's back-to-back repetitions of one packet. '(bench)' rows are "
                 "the benchmark's own transit stamps.")
    if ptr:
        L.append("PROG_TEST_RUN (bench/datapath.py, same run): " + ", ".join(
            f"{k2} {f(v, 0)} ns" for k2, v in ptr.items()) + ".")
    L.append("")

    # CPU
    keyn = [n[x] for x in KEY_ORDER]
    L += ["## CPU per call (µs, -t un): every task on the machine + what no live task holds = the whole", "",
          *cpu_rows(res, keyn), "",
          "The whole is (elapsed × CPUs) − idle − iowait from /proc/stat; the parts are each task's schedstat "
          "(sipp's from wait4()). Without IRQ time accounting in this kernel, the node's forwarding work "
          "(veth delivery runs in the sending task's softirq) is inside sipp's and the responder's figures; "
          "'other tasks' are other tenants of the machine; 'not in a live task' is tasks that exited in the window "
          "and interrupt work on idle CPUs.", ""]
    bad = [(c, r["cpu"]["adds_up_why"]) for c in res["configs"] for r in runs(res, c) if not r["cpu"]["adds_up"]]
    if bad:
        L.append(f"Runs where the parts do not add up within 10 %: {len(bad)}; e.g. {bad[0][0]}: {bad[0][1]}.")
        L.append("")
    L += ["## Context switches per transaction (-t un, voluntary + involuntary)", "",
          "| configuration | sipp (UAC) | responder |", "|---|---|---|"]
    for name in keyn:
        rs = runs(res, name)
        if rs:
            cs = [med([r["ctx_switches"].get(role, {}).get("per_transaction") for r in rs])
                  for role in ("sipp (UAC)", "responder")]
            L.append(f"| {name} | {f(cs[0], 2)} | {f(cs[1], 2)} |")
    L.append("")

    # sweep
    sweep_n = sorted({c["services"] for c in res["configs"].values() if c["kind"] in dict(FAMILIES)})
    L += ["## Service sweep (INVITE transit p50 / p99 µs, -t un: every call a new conntrack entry)", "",
          "| N | " + " | ".join(lbl for _k, lbl in FAMILIES) + " |", "|---|" + "---|" * len(FAMILIES)]
    for nn in sweep_n:
        cells = []
        for fam, _lbl in FAMILIES:
            name = {"ipt-nft": f"A-ipt-nft-{nn}", "ipt-legacy": f"A-ipt-legacy-{nn}", "nft-vmap": f"A'-nft-vmap-{nn}",
                    "C": f"C-{nn}"}[fam]
            q50, q99, _c = transit_cell(res, name, direction="INVITE")
            cells.append("–" if q50 is None else f"{f(q50)} / {f(q99)}")
        L.append(f"| {nn} | " + " | ".join(cells) + " |")
    L.append("")

    # matching completeness
    tot = {"n": 0, "unmatched_departures": 0, "unmatched_arrivals": 0, "ambiguous": 0}
    fails = 0
    for c in res["configs"]:
        for tr in ("un", "u1"):
            for r in runs(res, c, tr):
                fails += r["failed_or_unfinished"]
                for d in ("request", "response"):
                    for k2 in tot:
                        tot[k2] += r["transit"][d][k2]
    L += ["## Measurement completeness", "",
          f"Transit samples matched: {tot['n']}; unmatched departures {tot['unmatched_departures']}, unmatched "
          f"arrivals {tot['unmatched_arrivals']}, ambiguous (seen twice) {tot['ambiguous']}. Failed or "
          f"unfinished calls over all runs: {fails}.", ""]

    L += keepalive_section(res)

    ov = res.get("overload") or {}
    L += ["## Overload sweep (full Kamailio stack)", ""]
    if not ov.get("available"):
        L.append(ov.get("note", "overload sweep: not available"))
    elif ov.get("error"):
        L.append(f"overload sweep failed: {ov['error']}")
    else:
        L.append(ov.get("table_md", ""))
        if ov.get("skipped"):
            L.append("")
            L.append("Skipped: " + "; ".join(map(str, ov["skipped"])))
    L.append("")
    if plots:
        L += ["## Plots", ""] + [f"![{pl}]({pl})" for pl in make_plots(out, res)]
    (out / "report.md").write_text("\n".join(L) + "\n")
    return out / "report.md"


def make_plots(out: Path, res: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    n = names(res)
    # transit vs N per family (p50 with min-max over runs as the interval)
    fig, ax = plt.subplots(figsize=(7, 4))
    for fam, lbl in FAMILIES:
        pts = []
        for c, doc in res["configs"].items():
            if doc["kind"] == fam and runs(res, c):
                vals = [sel(r, "INVITE")["p50"] for r in runs(res, c)]
                vals = [v for v in vals if v is not None]
                if not vals:
                    continue
                pts.append((doc["services"], med(vals), min(vals), max(vals)))
        if pts:
            pts.sort()
            xs, ys = [x[0] for x in pts], [x[1] for x in pts]
            ax.errorbar(xs, ys, yerr=[[y - x[2] for y, x in zip(ys, pts)], [x[3] - y for y, x in zip(ys, pts)]],
                        marker="o", capsize=3, label=lbl)
    for c, lbl, col in (("D", "D direct", "grey"), ("E0", "E0 XDP classifier, direct", "tab:purple"),
                        ("E0-tc", "E0-tc TC classifier, direct", "tab:olive")):
        if runs(res, c):
            ax.axhline(transit_cell(res, c, direction="INVITE")[0], linestyle="--", linewidth=1, label=lbl,
                       color=col)
    plotting.label(ax, "services N", "node transit, INVITE p50 (µs)",
                   "INVITE (new flow) node transit vs services (-t un; bars: min–max over runs)", legend=8)
    plotting.save(fig, out / "transit_vs_services.png")
    made.append("transit_vs_services.png")
    # CDF at the key N
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for ax, direction in zip(axs, ("request", "response")):
        for key in ("A'", *KEY_ORDER):
            cdf = (res.get("transit_cdf_us") or {}).get(f"{n[key]}|un|{direction}")
            if cdf and cdf[0]:
                ax.plot(cdf[0], cdf[1], label=n[key])
        ax.set_xscale("log")
        plotting.label(ax, f"node transit, {direction} (µs)", "CDF", f"{direction}s, N = {n['k']} (all rounds pooled)",
                       legend=7)
    plotting.save(fig, out / f"transit_cdf_{n['k']}.png")
    made.append(f"transit_cdf_{n['k']}.png")
    # stacked CPU per call
    keyn = [n[x] for x in KEY_ORDER if runs(res, n[x])]
    if keyn:
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = [0.0] * len(keyn)
        for part in (*CPU_PARTS, "not in a live task"):
            if part == "not in a live task":
                vals = [max(0.0, med([r["cpu"]["residual_s"] * 1e6 / max(1, r["successful"]) for r in runs(res, c)]))
                        for c in keyn]
            else:
                vals = [med([r["cpu"]["ms_per_call"].get(part, 0.0) * 1000 for r in runs(res, c)]) for c in keyn]
            ax.bar(keyn, vals, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, vals)]
        whole = [med([r["cpu"]["ms_per_call"]["whole"] * 1000 for r in runs(res, c)]) for c in keyn]
        ax.plot(keyn, whole, "k_", markersize=25, label="whole (idle accounting)")
        ax.set_ylabel("CPU µs per call")
        ax.set_title("CPU per call by task (-t un)")
        ax.legend(fontsize=7)
        plt.setp(ax.get_xticklabels(), rotation=20)
        plotting.save(fig, out / "cpu_per_call_stacked.png")
        made.append("cpu_per_call_stacked.png")
    return made


if __name__ == "__main__":
    print(render(Path(sys.argv[1])))
