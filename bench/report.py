"""Render report.md and PNG plots from a bench run's results.json.

    python bench/report.py bench/results/<timestamp>

Every comparison is a ratio against the baseline configuration of the same run
(kube-proxy iptables mode, iptables-nft, the largest N); medians over repeats
with [min, max] spread.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import plotting

# The paper's claims (Tables 2-4), eTSF vs standard Kubernetes networking.
PAPER = [
    ("SIP INVITE transaction latency", "-40..-60 %", "invite_p50"),
    ("Maximum sustainable call rate", "+70..+100 %", "max_rate"),
    ("CPU utilisation per call", "-40..-55 %", "cpu_per_call"),
    ("Context switches per transaction", "-70..-85 %", "ctxt"),
    ("Call setup success under load", "Excellent vs Moderate", "flood_success"),
    ("Post-dial delay (PDD)", "significant reduction", "pdd_p50"),
    ("ASR / NER / SEER", "moderate / moderate / significant improvement", "kpi"),
    ("Degradation pattern", "near-linear vs exponential", "degradation"),
]


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def _get(run, path):
    cur = run
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def metric(cfg, workload, path):
    w = (cfg.get("workloads") or {}).get(workload) or {}
    return med([_get(r, path) for r in w.get("runs", [])])


def summarize(cfg) -> dict:
    s = {"name": cfg["name"], "kind": cfg["kind"], "services": cfg.get("services", 0), "error": cfg.get("error")}
    lat_key = "first_response_ms" if cfg["kind"] == "raw" else "invite_200_ms"
    for tr in ("un", "u1"):
        s[f"invite200_p50_{tr}"] = metric(cfg, f"latency_{tr}", ["latency", lat_key, "p50"])
        s[f"invite200_p99_{tr}"] = metric(cfg, f"latency_{tr}", ["latency", lat_key, "p99"])
        s[f"invite200_p999_{tr}"] = metric(cfg, f"latency_{tr}", ["latency", lat_key, "p999"])
        s[f"invite180_p50_{tr}"] = metric(cfg, f"latency_{tr}", ["latency", "invite_180_ms", "p50"])
        s[f"invite180_p99_{tr}"] = metric(cfg, f"latency_{tr}", ["latency", "invite_180_ms", "p99"])
        s[f"cpu_ms_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "ms_per_call", "busy"])
        s[f"cpu_raw_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "raw_ms_per_call", "busy"])
        s[f"ctxt_raw_{tr}"] = metric(cfg, f"latency_{tr}", ["ctxt", "raw_per_transaction"])
        s[f"cpu_user_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "ms_per_call", "user"])
        s[f"cpu_sys_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "ms_per_call", "system"])
        s[f"cpu_softirq_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "ms_per_call", "softirq"])
        s[f"proxy_cpu_ms_{tr}"] = metric(cfg, f"latency_{tr}", ["cpu", "proxy_ms_per_call"])
        s[f"ctxt_{tr}"] = metric(cfg, f"latency_{tr}", ["ctxt", "per_transaction"])
        s[f"success_{tr}"] = metric(cfg, f"latency_{tr}", ["successful"])
        s[f"created_{tr}"] = metric(cfg, f"latency_{tr}", ["created"])
    s["register_p50"] = metric(cfg, "register", ["latency", "first_response_ms", "p50"])
    s["register_p99"] = metric(cfg, "register", ["latency", "first_response_ms", "p99"])
    s["register_ok"] = metric(cfg, "register", ["successful"])
    s["register_created"] = metric(cfg, "register", ["created"])
    fl = (cfg.get("workloads") or {}).get("flood") or {}
    runs = fl.get("runs", [])
    s["flood_success"] = med([r["successful"] / r["created"] if r.get("created") else 0.0 for r in runs])
    s["flood_p50"] = metric(cfg, "flood", ["latency", "invite_200_ms", "p50"])
    s["flood_p99"] = metric(cfg, "flood", ["latency", "invite_200_ms", "p99"])
    s["flood_sent_pps"] = metric(cfg, "flood", ["flood", "pps"])
    s["flood_pod_drops"] = metric(cfg, "flood", ["udp_rcvbuf_errors", "pod"])
    s["flood_uac_drops"] = metric(cfg, "flood", ["udp_rcvbuf_errors", "uac"])
    mr = (cfg.get("workloads") or {}).get("max_rate_un") or {}
    s["max_rate"] = mr.get("max_rate")
    s["max_rate_zero"] = mr.get("max_rate_zero_failure")
    s["max_rate_wire"] = mr.get("max_rate_wire_tried")
    s["max_rate_capped"] = mr.get("capped_at_max")
    s["curve"] = [(st["offered_rate"], _get(st, ["latency", lat_key, "p50"]), _get(st, ["latency", lat_key, "p99"]),
                   st["fail_ratio"]) for st in mr.get("steps", [])]
    # eTSF in-kernel telemetry (latency run, -t un)
    et = [r.get("etsf") for r in ((cfg.get("workloads") or {}).get("latency_un") or {}).get("runs", [])
          if r.get("etsf")]
    if et:
        s["etsf_pdd_p50"] = med([_get(e, ["latency", "INVITE/ringing", "p50_ms"]) for e in et])
        s["etsf_kpi"] = {k: med([_get(e, ["kpi", k]) for e in et])[0] for k in ("asr", "ner", "seer", "ser")}
    etf = [r.get("etsf") for r in runs if r.get("etsf")]
    if etf:
        s["etsf_flood_kpi"] = {k: med([_get(e, ["kpi", k]) for e in etf])[0] for k in ("asr", "ner", "seer", "ser")}
        s["etsf_flood_drops"] = etf[0].get("xdp_drops")
    return s


def f(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def fm(t, nd=3):
    """median [min–max]"""
    m, lo, hi = t if isinstance(t, tuple) else (t, None, None)
    if m is None:
        return "–"
    if lo is None or lo == hi:
        return f(m, nd)
    return f"{f(m, nd)} [{f(lo, nd)}–{f(hi, nd)}]"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b - 1.0


def pctf(r):
    return "–" if r is None else f"{r * 100:+.0f} %"


def verdict(r, sign, mag, b, e, key):
    if key == "flood_success":
        if b is None or e is None:
            return "–"
        return "yes" if e >= 0.99 and b < 0.95 else ("partly" if e > b + 0.02 else "no (equal)")
    if r is None or mag is None:
        return "–"
    r = r * sign
    if r >= mag:
        return "yes"
    if r > 0.05:
        return "partly"
    if r >= -0.05:
        return "no (±5 %)"
    return "no (opposite)"


def sipp_kpi(cfg, workload="latency_un"):
    """ASR/NER/SEER from sipp's own counts: every created call is a seizure; a call
    that got its 200 is answered; sipp's UAS never answers busy, so NER = SEER = ASR
    unless calls time out (network failure)."""
    runs = ((cfg.get("workloads") or {}).get(workload) or {}).get("runs", [])
    c = sum(r.get("created", 0) for r in runs)
    ok = sum(r.get("successful", 0) for r in runs)
    return None if not c else ok / c


def _merge_causes(dicts) -> dict:
    """Sum sipp error causes over runs; one key per kind (a call id in a free-text cause, as in
    "Aborting call on an unexpected BYE for call: 1042-...", is dropped); dead_call_msg is not a failure."""
    out: dict = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if k == "dead_call_msg":
                continue
            k = re.sub(r"\s+for call:.*$", "", k)
            out[k] = out.get(k, 0) + v
    return out


def failure_table(cfgs) -> list[str]:
    """Every failed call of every run, by sipp's reported cause (never hidden in a tolerance)."""
    L = ["## Failed calls by cause (all runs)\n",
         "sipp `-trace_err` events per workload, summed over runs: `recv_timeout@N` = no expected message "
         "within `-recv_timeout` at scenario message N (uac.xml: 1–3 provisionals, 4 the INVITE's 200, 8 the "
         "BYE's 200); `unexpected 408 INVITE@2` = the proxy answered 408 (the UAS's reply did not reach it). "
         "*Late 1xx* = provisional responses that reached the UAC after the final one (re-ordered by the "
         "proxy's parallel workers; absorbed by the scenario, not failures). UAS = the sipp UAS's own failed "
         "calls over the whole configuration.\n",
         "| config | workload | calls | failed + unfinished | causes | late 1xx |", "|---|---|---|---|---|---|"]
    rows = 0
    for c in cfgs:
        for name, w in (c.get("workloads") or {}).items():
            runs = w.get("runs") if "runs" in w else w.get("steps", [])
            if not runs:
                continue
            created = sum(r.get("created", 0) for r in runs)
            failed = sum(r.get("failed_or_unfinished", 0) for r in runs)
            late = sum(r.get("late_provisional_responses", 0) for r in runs)
            causes = _merge_causes(r.get("error_causes") for r in runs)
            if failed or late or causes:
                rows += 1
                L.append(f"| {c['name']} | {name} | {created} | {failed} | "
                         f"{', '.join(f'{k} ×{v}' for k, v in sorted(causes.items())) or '–'} | {late} |")
        uas = c.get("uas") or {}
        if uas.get("failed"):
            rows += 1
            ec = _merge_causes([uas.get("error_causes")])
            L.append(f"| {c['name']} | UAS (whole config) | {uas.get('created')} | {uas['failed']} | "
                     f"{', '.join(f'{k} ×{v}' for k, v in sorted(ec.items())) or uas.get('fail_causes')} | |")
    if not rows:
        L.append("| (none) | | | 0 | | 0 |")
    L.append("")
    return L


def _path(key: str) -> list[str]:
    """'invite_180_ms' -> its p50 in a run; 'cpu' -> the run's whole-system busy CPU ms per call,
    raw: the paired runs start on a quiet machine and are compared within a round, so no
    background estimate is subtracted (that estimate, from 2 s before the run, only adds noise)."""
    return ["cpu", "raw_ms_per_call", "busy"] if key == "cpu" else ["latency", key, "p50"]


def round_p50(cfg: dict, tr: str, key: str) -> dict[int, float]:
    """{round: value in ms} of one configuration's latency runs (paired mode): the run's p50 of
    `key`, or its CPU ms per call for key 'cpu'."""
    runs = ((cfg.get("workloads") or {}).get(f"latency_{tr}") or {}).get("runs", [])
    out = {}
    for r in runs:
        v = _get(r, _path(key))
        if v is not None and "round" in r:
            out[r["round"]] = v
    return out


def paired_diffs(a: dict, b: dict, tr: str, key: str) -> list[float]:
    """Per round, a's value minus b's in µs, for the rounds where both have a run."""
    ra, rb = round_p50(a, tr, key), round_p50(b, tr, key)
    return [round(1000 * (ra[k] - rb[k]), 1) for k in sorted(set(ra) & set(rb))]


def paired_verdict(diffs: list[float]) -> str:
    """'a higher' / 'a lower' only when every round agrees (a sign test: with 5 rounds the chance
    of that for two equal configurations is 2/32); otherwise not distinguishable."""
    if len(diffs) < 3:
        return "too few rounds"
    if all(d > 0 for d in diffs):
        return "higher in every round"
    if all(d < 0 for d in diffs):
        return "lower in every round"
    return "not distinguishable (signs differ between rounds)"


def render_paired(out: Path, res: dict) -> Path:
    cfgs = list(res["configs"])
    by = {c["name"]: c for c in cfgs}
    base = next((c for c in cfgs if c.get("baseline")), None)
    h = res.get("host", {})
    L = [f"# eTSF benchmark — paired latency run, {res.get('started', '')[:19]} UTC\n",
         f"Host: kernel {h.get('kernel')}, {h.get('cpus')} CPUs, load average at start "
         f"{' '.join(h.get('loadavg_at_start') or [])}.  Pinning: {h.get('pinning')}.  "
         f"Wall time {res.get('wall_seconds')} s.\n",
         f"Design: {res.get('rounds')} round(s); each round runs every configuration once, back to back, on a "
         "fresh topology, "
         + ("in the orders of a Williams design (each configuration follows every other one equally often), "
            "each started only once the machine is quiet again; " if res.get("orders") else
            "in an order rotated by one per round (the first paired runs: no quiet wait, predecessors not "
            "balanced); ")
         + "INVITE–BYE calls at a fixed "
         f"**{res.get('fixed_rate')} calls/s** for {res.get('profile_params', {}).get('latency_seconds', '?')} s per "
         "transport.  Differences are taken WITHIN a round, so a slow drift of the host affects both sides "
         "alike.\n"]
    if res.get("orders"):
        L.append("Orders: " + "; ".join(f"round {i + 1}: {', '.join(o)}" for i, o in enumerate(res["orders"])) + ".\n")
    for c in cfgs:
        for t in c.get("truncated", []) + c.get("round_errors", []):
            L.append(f"- {c['name']}: {t}")
    L.append("## Per configuration (median [min–max] over rounds of each run's p50, ms)\n")
    L.append("| config | INVITE→180 (un) | INVITE→200 (un) | INVITE→180 (u1) | INVITE→200 (u1) | "
             "CPU ms/call, whole system, raw (un) | calls | failed |")
    L.append("|---|---|---|---|---|---|---|---|")
    for c in cfgs:
        cells = []
        for tr in ("un", "u1"):
            for key in ("invite_180_ms", "invite_200_ms"):
                cells.append(fm(med(list(round_p50(c, tr, key).values()))))
        cells.append(fm(med(list(round_p50(c, "un", "cpu").values()))))
        runs = [r for tr in ("un", "u1") for r in ((c.get("workloads") or {}).get(f"latency_{tr}") or {}).get("runs", [])]
        calls = sum(r.get("created", 0) for r in runs)
        failed = sum(r.get("failed_or_unfinished", 0) for r in runs)
        L.append(f"| {c['name']} | {' | '.join(cells)} | {calls} | {failed} |")
    L.append("")
    pairs = [("C-etsf-fastpath", "D-direct"), ("E-etsf-classifier", "D-direct"),
             ("C-etsf-fastpath", "E-etsf-classifier")]
    if base:
        pairs += [(base["name"], "D-direct"), ("C-etsf-fastpath", base["name"]), ("E-etsf-classifier", base["name"])]
    pairs += [(c["name"], c["name"].removesuffix("-xdpgeneric")) for c in cfgs if c["name"].endswith("-xdpgeneric")]
    L.append("## Paired differences (first minus second, µs, one value per round, rounds in run order)\n")
    L.append("| pair | metric | per-round differences | median | verdict |")
    L.append("|---|---|---|---|---|")
    for a, b in pairs:
        if a not in by or b not in by:
            continue
        for tr in ("un", "u1"):
            for key, label in (("invite_180_ms", "INVITE→180 p50"), ("invite_200_ms", "INVITE→200 p50"),
                               ("cpu", "CPU per call")):
                d = paired_diffs(by[a], by[b], tr, key)
                m = med(d)[0]
                L.append(f"| {a} − {b} | {label} ({tr}) | {', '.join(f'{x:+.0f}' for x in d) or '–'} | "
                         f"{'–' if m is None else f'{m:+.0f}'} | {paired_verdict(d)} |")
    L.append("")
    (out / "report.md").write_text("\n".join(L) + "\n")
    return out / "report.md"


def render(out: Path, plots: bool = True) -> Path:
    res = json.loads((out / "results.json").read_text())
    if res.get("mode") == "paired":
        return render_paired(out, res)
    cfgs = list(res["configs"])
    S = [summarize(c) for c in cfgs]
    by = {s["name"]: s for s in S}
    base = next((by[c["name"]] for c in cfgs if c.get("baseline")), None)
    etsf = by.get("C-etsf-fastpath")
    L = []
    L.append(f"# eTSF benchmark — {res.get('profile')} run, {res.get('started', '')[:19]} UTC\n")
    h = res.get("host", {})
    L.append(f"Host: kernel {h.get('kernel')}, {h.get('cpus')} CPUs, load average at start "
             f"{' '.join(h.get('loadavg_at_start') or [])}; sipp {''.join(h.get('sipp') or [])}; "
             f"{''.join(h.get('kamailio') or [])}; {h.get('iptables')}; {h.get('nft')}.  "
             f"Pinning: {h.get('pinning')}.  Wall time {res.get('wall_seconds')} s.\n")
    L.append(f"Fixed 50 % load: **{res.get('fixed_rate')} calls/s** (half of {res.get('fixed_rate_from')}'s "
             f"max sustainable rate); flood: **{res.get('flood_pps')} requests/s** offered "
             f"(REGISTER/OPTIONS, many sources).\n")
    for n in res.get("notes", []):
        L.append(f"- {n}")
    for sk in res.get("skipped", []):
        L.append(f"- skipped {sk['name']}: {sk['why']}")
    for c in cfgs:
        if c.get("error"):
            L.append(f"- **{c['name']} failed**: {c['error']}")
        for t in c.get("truncated", []):
            L.append(f"- {c['name']}: truncated {t}")
    L.append("")
    headline: list[str] = []
    if base and etsf:
        ap = next((by[c["name"]] for c in cfgs if c["kind"] == "nft-vmap"), {})
        ecl = by.get("E-etsf-classifier", {})
        dd = by.get("D-direct", {})

        def g(s, key):
            v = s.get(key) if s else None
            return v[0] if isinstance(v, tuple) else v

        rows = [
            # name, claim, key, direction(-1 lower is better/+1 higher), claimed magnitude (fraction)
            ("INVITE→180 p50 ms (PDD at UAC, -t un)", "PDD: significant reduction", "invite180_p50_un", -1, 0.40),
            ("INVITE→200 p50 ms (-t un)", "latency −40..−60 %", "invite200_p50_un", -1, 0.40),
            ("INVITE→200 p99 ms (-t un)", "latency −40..−60 %", "invite200_p99_un", -1, 0.40),
            ("INVITE→200 p50 ms (-t u1)", "latency −40..−60 %", "invite200_p50_u1", -1, 0.40),
            ("max sustainable call rate /s (<0.1 % fail, -t un)", "+70..+100 %", "max_rate", +1, 0.70),
            ("highest tried rate with final responses on the wire for ≥ 99.9 %", "(diagnostic)", "max_rate_wire",
             +1, None),
            ("CPU ms per call, whole system (-t un, raw)", "−40..−55 %", "cpu_raw_un", -1, 0.40),
            ("CPU ms per call, net of background", "−40..−55 %", "cpu_ms_un", -1, 0.40),
            ("Kamailio CPU ms per call", "(not claimed)", "proxy_cpu_ms_un", -1, None),
            ("context switches per transaction (raw)", "−70..−85 %", "ctxt_raw_un", -1, 0.70),
            ("legit call success under flood", "Excellent vs Moderate", "flood_success", +1, None),
            ("legit INVITE→200 p50 ms under flood", "(Table 2 row 3)", "flood_p50", -1, None),
        ]
        hdr = ("| metric | paper claim (eTSF vs kube-proxy iptables) | **measured C vs A** | reproduced? | "
               f"A {base['name']} | A′ nft vmap | C eTSF fast path | E classifier only | D direct |")
        sep = "|---|---|---|---|---|---|---|---|---|"
        table = [hdr, sep]
        for name, claim, key, sign, mag in rows:
            b, e = g(base, key), g(etsf, key)
            r = ratio(e, b)
            table.append(f"| {name} | {claim} | **{pctf(r)}** | {verdict(r, sign, mag, b, e, key)} | {f(b)} | "
                         f"{f(g(ap, key))} | {f(e)} | {f(g(ecl, key))} | {f(g(dd, key))} |")
        L.append(f"## Paper claims vs this run (eTSF fast path `C` vs baseline `{base['name']}`)\n")
        L += table
        L.append("")
        L.append("Measured = C / baseline − 1 (negative = lower). Medians over repeats (spreads in the next "
                 "table). \"reproduced?\": yes = at least the paper's magnitude in the paper's direction; "
                 "partly = same direction, smaller (> 5 %); no = within ±5 % or the other way.\n")
        obs = []
        bm, cm, dm = g(base, "max_rate"), g(etsf, "max_rate"), g(dd, "max_rate")
        if bm and dm is not None and dm <= bm * 1.05:
            obs.append(f"D (no NAT at all) sustains {f(dm, 0)} calls/s vs A's {f(bm, 0)}: the call rate is limited "
                       "by Kamailio/sipp on this 2-core host, not by the node's network path, so no network-path "
                       "change (eTSF's included) can raise it here.")
        elif bm and cm:
            obs.append(f"Max call rate: A {f(bm, 0)}, C {f(cm, 0)}, D {f(dm, 0)} calls/s.")
        for key, label in (("invite180_p50_un", "INVITE→180 p50 (-t un)"), ("invite180_p50_u1", "INVITE→180 p50 (-t u1)")):
            b, e, d0 = g(base, key), g(etsf, key), g(dd, key)
            if None not in (b, e, d0):
                obs.append(f"{label}: the NAT path costs {1000 * (b - d0):+.0f} µs over D; C is {1000 * (e - b):+.0f} µs "
                           f"vs A and {1000 * (e - d0):+.0f} µs vs D (per transaction of ~{b:.2f} ms).")
        fb, fe = g(base, "flood_success"), g(etsf, "flood_success")
        if fb is not None and fe is not None:
            obs.append(f"Under the flood, {100 * fb:.1f} % of legitimate calls completed on A and {100 * fe:.1f} % on C "
                       "(eTSF drops the over-limit REGISTER/OPTIONS at its ingress hook, before they reach netfilter "
                       "or Kamailio).")
        if obs:
            L.append("Observations (computed from this run):\n")
            L += [f"- {o}" for o in obs]
            L.append("")
        headline = [f"Headline ({res.get('profile')} run {res.get('started', '')[:16]} UTC, "
                    f"fixed load {res.get('fixed_rate')} calls/s, flood {res.get('flood_pps')} req/s; "
                    "full report: `report.md`)\n", *table, ""]
    L.append("## All configurations (medians [min–max] over repeats)\n")
    L.append("| config | N | INVITE→200 p50 / p99 / p99.9 ms (un) | INVITE→200 p50 / p99 ms (u1) | "
             "INVITE→180 p50 ms (un) | REGISTER p50 ms | max rate (<0.1 %) | zero-fail rate | "
             "CPU ms/call (un, net of bg) user/sys/softirq | CPU ms/call raw | proxy CPU ms/call | "
             "ctx sw/txn (un) net / raw |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in S:
        if s.get("error"):
            L.append(f"| {s['name']} | {s['services']} | error: {s['error'][:80]} ||||||||||")
            continue
        cap = " (cap)" if s.get("max_rate_capped") else ""
        L.append(
            f"| {s['name']} | {s['services']} | {fm(s['invite200_p50_un'])} / {f(s['invite200_p99_un'][0])} / "
            f"{f(s['invite200_p999_un'][0])} | {fm(s['invite200_p50_u1'])} / {f(s['invite200_p99_u1'][0])} | "
            f"{fm(s['invite180_p50_un'])} | {f(s['register_p50'][0])} | {f(s['max_rate'])}{cap} | "
            f"{f(s['max_rate_zero'])} | {fm(s['cpu_ms_un'])} ({f(s['cpu_user_un'][0])}/{f(s['cpu_sys_un'][0])}/"
            f"{f(s['cpu_softirq_un'][0])}) | {fm(s['cpu_raw_un'])} | {f(s['proxy_cpu_ms_un'][0])} | "
            f"{fm(s['ctxt_un'], 1)} / {fm(s['ctxt_raw_un'], 1)} |")
    L.append("")
    L += failure_table(cfgs)
    L.append("## Flood mix (legitimate calls at the fixed rate + REGISTER/OPTIONS flood)\n")
    L.append("| config | flood sent pps | legit success | legit INVITE→200 p50 / p99 ms | eTSF drops (ingress hook) | "
             "UDP rcvbuf drops pod (Kamailio) / UAC | eTSF KPIs under flood (ASR/NER/SEER) |")
    L.append("|---|---|---|---|---|---|---|")
    for s in S:
        if s["flood_success"][0] is None:
            continue
        k = s.get("etsf_flood_kpi") or {}
        L.append(f"| {s['name']} | {f(s['flood_sent_pps'][0], 0)} | {fm(s['flood_success'])} | "
                 f"{f(s['flood_p50'][0])} / {f(s['flood_p99'][0])} | {s.get('etsf_flood_drops') or '–'} | "
                 f"{f(s['flood_pod_drops'][0], 0)} / {f(s['flood_uac_drops'][0], 0)} | "
                 f"{f(k.get('asr'))} / {f(k.get('ner'))} / {f(k.get('seer'))} |")
    L.append("")
    L.append("## Carrier KPIs (Table 4): eTSF's in-kernel counters vs sipp, 50 % load, -t un\n")
    L.append("| config | PDD p50 ms (eTSF kernel, INVITE→180 at node, log2 buckets) | PDD p50 ms (INVITE→180, capture at UAC) | "
             "ASR / NER / SEER (eTSF) | answered / attempted (sipp) |")
    L.append("|---|---|---|---|---|")
    for c, s in zip(cfgs, S):
        if s.get("etsf_kpi") is None and s["kind"] == "raw":
            continue
        k = s.get("etsf_kpi") or {}
        L.append(f"| {s['name']} | {fm(s.get('etsf_pdd_p50', (None, None, None)))} | {fm(s['invite180_p50_un'])} | "
                 f"{f(k.get('asr'))} / {f(k.get('ner'))} / {f(k.get('seer'))} | {f(sipp_kpi(c))} |")
    L.append("")
    L.append("eTSF's PDD is measured inside the node (request in at XDP → 180 out at TC egress), so it "
             "excludes the UAC↔node hop; sipp's includes it. Only the eTSF configurations have kernel "
             "counters. sipp's UAS answers every call, so ASR = NER = SEER in these runs unless calls fail.\n")
    if plots:
        L += make_plots(out, S, base)
    (out / "report.md").write_text("\n".join(L) + "\n")
    if headline:
        (out / "headline.md").write_text("\n".join(headline) + "\n")
    return out / "report.md"


def make_plots(out: Path, S, base) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(matplotlib not installed: no plots)"]
    lines = ["## Plots\n"]
    good = [s for s in S if not s.get("error")]
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in good:
        pts = sorted((pt[0], pt[1]) for pt in s["curve"] if pt[1] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s["name"])
    ax.set_yscale("log")
    plotting.label(ax, "offered call rate (calls/s, -t un)", "INVITE→200 p50 (ms)",
                   "Latency vs offered rate (bisection steps)", legend=7)
    plotting.save(fig, out / "latency_vs_rate.png")
    lines.append("![latency vs offered rate](latency_vs_rate.png)\n")
    fig, ax = plt.subplots(figsize=(8, 5))
    names = [s["name"] for s in good]
    parts = [("user", "cpu_user_un"), ("system", "cpu_sys_un"), ("softirq", "cpu_softirq_un")]
    bottom = [0.0] * len(good)
    for label, key in parts:
        vals = [s[key][0] or 0.0 for s in good]
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_ylabel("CPU ms per call (whole system, net of background)")
    ax.set_title("CPU per call at the fixed 50 % load (-t un)")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend()
    plotting.save(fig, out / "cpu_per_call.png")
    lines.append("![CPU per call](cpu_per_call.png)\n")
    fl = [s for s in good if s["flood_success"][0] is not None]
    if fl:
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.bar([s["name"] for s in fl], [100 * s["flood_success"][0] for s in fl])
        ax.set_ylabel("legitimate calls completed (%)")
        ax.set_ylim(0, 105)
        ax.set_title("Legitimate call success under REGISTER/OPTIONS flood")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        plotting.save(fig, out / "flood_success.png")
        lines.append("![flood success](flood_success.png)\n")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: report.py RESULT_DIR", file=sys.stderr)
        sys.exit(2)
    print(render(Path(sys.argv[1])))
