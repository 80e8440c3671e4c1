"""`make demo`, the part that shows eTSF at work: one lab SBC host and its Kamailio under a
REGISTER/OPTIONS flood, once with eTSF in bypass and once enforcing.

Each run (bounded by counts: sipp -m, sampler iterations; and by sipp -timeout):
  t = 0 s                 legitimate calls from the UAC peer (sipp, bench/templates/uac.xml)
                          through the SBC's Kamailio to the UAS peer (sipp -sn uas);
  t = FLOOD_AT s          the attacker peer floods REGISTER + OPTIONS (lab/scenarios/flood.xml)
                          on top, for FLOOD_S s, then stops;
  calls go on until every one of them has ended.
Numbers come from the parts themselves: sipp's statistics (calls, INVITE -> 200), `etsfctl
stats` on the host (packets shed in the kernel, counted at the hook that classifies on the host:
XDP, or TC ingress for the tc hook, the default on the lab's veth sip0), Kamailio's own counters (`kamcmd
stats.get_statistics`), the host's UDP counters, and the eTSF exporter (scraped over HTTP on the
host) for SER/NER and the shed-per-second curve.

Output: the table on stdout; OUT/summary.txt, OUT/summary.json, OUT/demo.png; raw sipp files in
OUT/work/.  Run as root from the repository root with the lab up and eTSF rolled out.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from lab import hosts as lab_hosts  # noqa: E402
from lab.common import PEERS, SIP_NET, STATE_FILE  # noqa: E402
from etsf import kpi  # noqa: E402

MODES = ("bypass", "enforcing")
CALL_RATE = 20          # legitimate calls per second
CALLS = 400             # per run: 20 s of calls
CALL_HOLD_MS = 500      # pause between the 200/ACK and the BYE
FLOOD_AT = 5.0          # s after the calls start
FLOOD_RATE = 2500       # flood "calls" per second, 2 messages each (REGISTER + OPTIONS)
FLOOD_S = 10            # s of flood
SIPP_TIMEOUT = "60s"    # hard bound on every sipp process
EXPORTER = "http://127.0.0.1:9761/metrics"
SAMPLE_S = 0.5
FLOOD_METHODS = ("REGISTER", "OPTIONS")
# datapath hook (etsfctl status) -> the hook its classification counts under (etsfctl stats)
COUNTER_HOOK = {"xdp": "XDP", "tc": "TC_INGRESS"}

# Runs on the SBC host: scrape the exporter every SAMPLE_S (bounded by a count) and print the
# sum of the drop counters of the classifying hook per scrape, one JSON line each.
SAMPLER = r"""
import json, sys, time, urllib.request
url, n, step, hook = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
for _ in range(n):
    t = time.time()
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError as exc:
        print(json.dumps({"t": t, "error": str(exc)}), flush=True)
    else:
        shed = sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
                   if l.startswith("etsf_sip_packets_total{") and f'hook="{hook}"' in l
                   and 'verdict="drop"' in l)
        print(json.dumps({"t": t, "shed": shed}), flush=True)
    time.sleep(max(0.0, step - (time.time() - t)))
"""

SCRAPE = ("import urllib.request,sys;"
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")


class DemoError(RuntimeError):
    """One line for the user."""


# ---------------------------------------------------------------- the SBC host
class Host:
    def __init__(self, name: str):
        try:
            state = json.loads(STATE_FILE.read_text())
        except (OSError, ValueError) as exc:
            raise DemoError(f"the lab is not up ({STATE_FILE}: {exc}); run `make demo`") from exc
        rec = state.get("hosts", {}).get(name)
        if rec is None:
            raise DemoError(f"lab host {name} is not running (known: "
                            f"{', '.join(sorted(state.get('hosts', {}))) or 'none'})")
        self.name = name
        self.mgmt = rec["mgmt_address"]
        self.sip = rec["sip_address"]

    def argv(self, cmd: str) -> list[str]:
        return lab_hosts.ssh_argv(self.mgmt, [cmd])

    def run(self, cmd: str, timeout: float = 30, stdin: str | None = None) -> str:
        cp = subprocess.run(self.argv(cmd), input=stdin, capture_output=True, text=True,
                            timeout=timeout, check=False)
        if cp.returncode != 0:
            raise DemoError(f"{self.name}: `{cmd}` failed ({cp.returncode}): "
                            f"{(cp.stderr or cp.stdout).strip().splitlines()[-1:]}")
        return cp.stdout

    def etsf_status(self) -> dict:
        return json.loads(self.run("/usr/local/bin/etsfctl status --json"))

    def counter_hook(self, st: dict) -> str:
        """The stats hook (XDP or TC_INGRESS) of the one datapath hook every interface has."""
        got = {name: row.get("hook") for name, row in st["interfaces"].items()}
        hooks = set(got.values())
        if len(hooks) != 1 or not hooks <= set(COUNTER_HOOK):
            raise DemoError(f"{self.name}: want one datapath hook (xdp or tc) on every interface, got "
                            + ", ".join(f"{name}: {hook}" for name, hook in sorted(got.items())))
        return COUNTER_HOOK[hooks.pop()]

    def set_bypass(self, on: bool) -> None:
        self.run(f"/usr/local/bin/etsfctl bypass {'on' if on else 'off'} --json")

    def snapshot(self) -> dict:
        """Every counter the table is made of, read on the host in one go (one connection)."""
        sep = "\n=== etsf-demo ===\n"
        out = self.run(f"/usr/local/bin/etsfctl stats --json; echo '{sep.strip()}'; "
                       f"kamcmd stats.get_statistics all; echo '{sep.strip()}'; "
                       f"cat /proc/net/snmp; echo '{sep.strip()}'; "
                       f"python3 -c '{SCRAPE}' {EXPORTER}")
        parts = ("\n" + out).split(sep)
        if len(parts) != 4:
            raise DemoError(f"{self.name}: could not read the counters ({len(parts)} parts)")
        return {"etsf": json.loads(parts[0]), "kamailio": parse_kamcmd(parts[1]),
                "udp": parse_snmp_udp(parts[2]), "exporter": parse_prom(parts[3])}


def parse_kamcmd(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, sep, val = line.partition(" = ")
        if sep and val.strip().lstrip("-").isdigit():
            out[name.strip()] = int(val)
    return out


def parse_snmp_udp(text: str) -> dict[str, int]:
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1])} if len(rows) >= 2 else {}


def parse_prom(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _sep, val = line.rpartition(" ")
            try:
                out[name] = float(val)
            except ValueError:
                continue
    return out


def etsf_packets(snap: dict, hook: str, methods, verdict: str | None = None,
                 reason: str | None = None) -> int:
    return sum(r["packets"] for r in snap["etsf"]["counters"]
               if r["hook"].upper() == hook and r["method"] in methods
               and (verdict is None or r["verdict"].upper() == verdict)
               and (reason is None or r["reason"].upper() == reason))


def invite_codes(prom: dict[str, float]) -> dict[int, int]:
    out = {}
    for key, val in prom.items():
        if key.startswith("etsf_sip_responses_total{") and 'method="INVITE"' in key:
            code = key.split('code="', 1)[1].split('"', 1)[0]
            out[int(code)] = int(val)
    return out


def deltas(before: dict, after: dict, hook: str) -> dict:
    """The numbers of one run, all as differences of the host's own counters; eTSF's at `hook`
    (XDP or TC_INGRESS), where the host classifies."""
    def etsf_d(*a, **kw):
        return etsf_packets(after, *a, **kw) - etsf_packets(before, *a, **kw)

    def kam_d(name):
        return after["kamailio"].get(name, 0) - before["kamailio"].get(name, 0)

    cb, ca = invite_codes(before["exporter"]), invite_codes(after["exporter"])
    codes = {c: ca.get(c, 0) - cb.get(c, 0) for c in set(ca) | set(cb)}
    codes = {c: n for c, n in codes.items() if n > 0}
    return {
        "hook": hook,
        "shed_flood": etsf_d(hook, FLOOD_METHODS, verdict="DROP"),
        "flood_seen": etsf_d(hook, FLOOD_METHODS),
        "flood_passed": etsf_d(hook, FLOOD_METHODS, verdict="PASS"),
        "bypass_seen": etsf_d(hook, {r["method"] for r in after["etsf"]["counters"]},
                              reason="BYPASS"),
        "invite_seen": etsf_d(hook, ("INVITE",)),
        "kam_register": kam_d("core:rcv_requests_register"),
        "kam_options": kam_d("core:rcv_requests_options"),
        "kam_invite": kam_d("core:rcv_requests_invite"),
        "kam_requests": kam_d("core:rcv_requests"),
        "kam_5xx_replies": sum(v - before["kamailio"].get(k, 0) for k, v in after["kamailio"].items()
                               if k.startswith("sl:5") and k.endswith("_replies")),
        "udp_rcvbuf_errors": after["udp"].get("RcvbufErrors", 0) - before["udp"].get("RcvbufErrors", 0),
        "invite_codes": {str(c): n for c, n in sorted(codes.items())},
        "ser": kpi.ser(codes),
        "ner": kpi.ner(codes),
    }


# ---------------------------------------------------------------- peers (sipp)
def in_peer(peer: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", f"etsf-{peer}", *argv]


def sipp(peer: str, args: list[str], cwd: Path, name: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    # error logs only for the UAC: the UAS and the attacker see the flood (megabytes of them)
    errors = ["-trace_err", "-error_file", f"{name}_err.log"] if peer == "uac" else []
    argv = in_peer(peer, ["sipp", *args, "-i", f"{SIP_NET}.{PEERS[peer]}", "-nostdin",
                          "-timeout", SIPP_TIMEOUT, "-trace_stat", "-stf", f"{name}_stat.csv",
                          "-fd", "1", *errors])
    log = open(cwd / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def stop(p: subprocess.Popen, timeout: float) -> int:
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            return p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(10)


def sipp_final(stat: Path) -> dict[str, str]:
    with stat.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows:
        raise DemoError(f"sipp wrote no statistics ({stat})")
    return rows[-1]


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def rtt_samples(path: Path) -> list[tuple[float, float, int]]:
    """sipp -trace_rtt rows: (s since sipp started, response time in ms, rtd number)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines()[1:]:
        parts = line.strip().split(";")
        if len(parts) >= 3:
            try:
                out.append((float(parts[0]) / 1000.0, float(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return out


# ---------------------------------------------------------------- one run
def one_run(host: Host, mode: str, work: Path, hook: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        if old.is_file():
            old.unlink()
    host.set_bypass(mode == "bypass")
    st = host.etsf_status()
    if bool(st["ctl"]["bypass"]) != (mode == "bypass"):
        raise DemoError(f"{host.name}: bypass flag is {st['ctl']['bypass']} for the {mode} run")
    before = host.snapshot()
    procs: list[subprocess.Popen] = []
    try:
        return _traffic(host, mode, work, before, procs, hook)
    finally:
        for p in procs:             # after an error: nothing of ours keeps running
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _traffic(host: Host, mode: str, work: Path, before: dict,
             procs: list[subprocess.Popen], hook: str) -> dict:
    uas = sipp("uas", ["-sn", "uas", "-p", "5060"], work, "uas")
    procs.append(uas)
    time.sleep(0.5)   # the UAS socket is bound before the first INVITE is relayed to it
    n_samples = int((CALLS / CALL_RATE + 60) / SAMPLE_S)
    sampler = subprocess.Popen(host.argv(f"python3 - {EXPORTER} {n_samples} {SAMPLE_S} {hook.lower()}"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.append(sampler)
    sampler.stdin.write(SAMPLER)
    sampler.stdin.close()
    t0 = time.time()
    uac = sipp("uac", ["-sf", str(REPO / "bench/templates/uac.xml"), f"{host.sip}:5060",
                       "-p", "5070", "-m", str(CALLS), "-r", str(CALL_RATE),
                       "-d", str(CALL_HOLD_MS), "-recv_timeout", "8000", "-max_retrans", "4",
                       "-trace_rtt", "-rtt_freq", "1"], work, "uac")
    procs.append(uac)
    time.sleep(FLOOD_AT)
    t_flood = time.time() - t0
    atk = sipp("atk", ["-sf", str(REPO / "lab/scenarios/flood.xml"), f"{host.sip}:5060",
                       "-p", "5080", "-m", str(FLOOD_RATE * FLOOD_S), "-r", str(FLOOD_RATE),
                       "-rp", "1000"], work, "atk")
    procs.append(atk)
    stop(atk, FLOOD_S + 60)
    t_flood_end = time.time() - t0
    rc_uac = stop(uac, 90)
    stop(uas, 0.1)
    t_end = time.time() - t0
    samples = []
    # the sampler's count is a bound only: it stops with the calls (its output, a few kB, fits
    # the pipe); the remote python dies on its next write to the closed connection
    sampler.terminate()
    out = sampler.stdout.read()
    sampler.wait(10)
    for line in out.splitlines():
        try:
            samples.append(json.loads(line))
        except ValueError:
            continue
    after = host.snapshot()

    uac_f, atk_f = sipp_final(work / "uac_stat.csv"), sipp_final(work / "atk_stat.csv")
    rtt = [x for f in sorted(work.glob("uac_*_rtt.csv")) for x in rtt_samples(f)]
    inv200 = [ms for _t, ms, rtd in rtt if rtd == 1]
    # sipp's rtt clock starts with the UAC process, i.e. at t0
    done = [t for t, _ms, rtd in rtt if rtd == 2]
    d = deltas(before, after, hook)
    return {
        "mode": mode, "uac_rc": rc_uac, "t_flood": [round(t_flood, 2), round(t_flood_end, 2)],
        "seconds": round(t_end, 1),
        "calls_attempted": int(uac_f["OutgoingCall(C)"]),
        "calls_completed": int(uac_f["SuccessfulCall(C)"]),
        "calls_failed": int(uac_f["FailedCall(C)"]),
        "invite_200_p50_ms": statistics.median(inv200) if inv200 else None,
        "invite_200_p95_ms": percentile(inv200, 95),
        "invite_200_samples": len(inv200),
        "flood_sent": 2 * int(atk_f["OutgoingCall(C)"]),
        **d,
        "completions": done,
        "shed_samples": [(s["t"] - t0, s["shed"]) for s in samples if "shed" in s],
    }


# ---------------------------------------------------------------- output
ROWS = [
    ("calls attempted (UAC sipp)", "calls_attempted", "{}"),
    ("calls completed", "calls_completed", "{}"),
    ("calls failed", "calls_failed", "{}"),
    ("INVITE->200 p50 (ms; sipp ticks 1 ms)", "invite_200_p50_ms", "ms"),
    ("INVITE->200 p95 (ms)", "invite_200_p95_ms", "ms"),
    ("flood messages sent (REGISTER+OPTIONS)", "flood_sent", "{}"),
    ("flood packets shed in the kernel (eTSF)", "shed_flood", "{}"),
    ("REGISTER reaching Kamailio (kamcmd)", "kam_register", "{}"),
    ("OPTIONS reaching Kamailio (kamcmd)", "kam_options", "{}"),
    ("all requests reaching Kamailio (kamcmd)", "kam_requests", "{}"),
    ("5xx replies sent by Kamailio (kamcmd sl:)", "kam_5xx_replies", "{}"),
    ("UDP receive-buffer drops on the host", "udp_rcvbuf_errors", "{}"),
    ("SER (exporter)", "ser", "{:.3f}"),
    ("NER (exporter)", "ner", "{:.3f}"),
]


def fmt(val, spec: str) -> str:
    if val is None or (isinstance(val, float) and math.isnan(val)):
        return "n/a"
    if spec == "ms":
        return "<1" if val < 1 else f"{val:.0f}"
    return spec.format(val)


def table(runs: dict[str, dict]) -> str:
    modes = [m for m in MODES if m in runs]
    w = max(len(r[0]) for r in ROWS)
    lines = [f"{'':<{w}}" + "".join(f"{m:>14}" for m in modes),
             "-" * (w + 14 * len(modes))]
    for label, key, spec in ROWS:
        lines.append(f"{label:<{w}}" + "".join(f"{fmt(runs[m][key], spec):>14}" for m in modes))
    if "bypass" in runs:
        lines.append("(bypass: the programs pass every packet unparsed, so the exporter sees no "
                     "INVITE outcome: SER/NER n/a)")
    return "\n".join(lines)


def per_second(times: list[float], horizon: float) -> tuple[list[float], list[float]]:
    n = int(math.ceil(horizon)) + 1
    counts = [0] * n
    for t in times:
        if 0 <= t < n:
            counts[int(t)] += 1
    return [i + 0.5 for i in range(n)], counts


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"bypass": "tab:red", "enforcing": "tab:blue"}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    horizon = max(r["seconds"] for r in runs.values())
    styles = {"bypass": {"ls": "--", "lw": 1.8}, "enforcing": {"ls": "-", "lw": 2.6}}
    for mode in sorted(runs, key=lambda m: m != "enforcing"):   # bypass drawn on top
        r = runs[mode]
        x, y = per_second(r["completions"], horizon)
        ax1.step(x, y, where="mid", color=colours[mode], label=f"eTSF {mode}", **styles[mode])
        s = r["shed_samples"]
        xs = [(a[0] + b[0]) / 2 for a, b in zip(s, s[1:])]
        ys = [max(0.0, (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(s, s[1:])]
        ax2.plot(xs, ys, color=colours[mode], label=f"eTSF {mode}", **styles[mode])
    f0, f1 = next(iter(runs.values()))["t_flood"]
    for ax in (ax1, ax2):
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)    # head room for the legend above the curves
        ax.axvspan(f0, f1, color="0.85", zorder=0, label="REGISTER/OPTIONS flood")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    ax1.set_ylabel("calls completed / s")
    ax1.set_title(f"eTSF demo: {CALL_RATE} calls/s through Kamailio, "
                  f"{2 * FLOOD_RATE} flood msg/s for {FLOOD_S} s")
    ax2.set_ylabel("flood packets shed in the kernel / s")
    ax2.set_xlabel("seconds since the calls started")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--host", default="sbc1", help="lab SBC host (default sbc1)")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated runs, in order (default bypass,enforcing)")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        print(f"demo: error: --modes: unknown run {bad[0] if bad else '(none)'!r} "
              f"(choose from {', '.join(MODES)})", file=sys.stderr)
        return 2
    try:
        host = Host(args.host)
        st = host.etsf_status()
        if not st.get("interfaces") or not st.get("policy_applied"):
            raise DemoError(f"{host.name}: eTSF is not attached with a policy; run `make demo`")
        host.run("kamcmd core.uptime")
        was_bypass = bool(st["ctl"]["bypass"])
        hook = host.counter_hook(st)
        print(f"demo: {host.name} ({host.sip}), Kamailio relaying to the UAS "
              f"{SIP_NET}.{PEERS['uas']}; UAC {SIP_NET}.{PEERS['uac']}, attacker "
              f"{SIP_NET}.{PEERS['atk']}; eTSF classifies at {hook}", flush=True)
        print(f"demo: live view meanwhile: .venv/bin/python -m lab ssh {host.name} -- "
              "etsfctl top", flush=True)
        runs = {}
        try:
            for mode in modes:
                print(f"demo: run '{mode}': {CALLS} calls at {CALL_RATE}/s, flood of "
                      f"{2 * FLOOD_RATE} msg/s from t={FLOOD_AT:.0f}s for {FLOOD_S}s ...", flush=True)
                runs[mode] = one_run(host, mode, args.out / "work" / mode, hook)
                r = runs[mode]
                print(f"demo: run '{mode}' done in {r['seconds']}s: {r['calls_completed']}/"
                      f"{r['calls_attempted']} calls completed, {r['shed_flood']} packets shed",
                      flush=True)
        finally:
            host.set_bypass(was_bypass)
    except (DemoError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    png = args.out / "demo.png"
    plot(runs, png)
    summary = (f"eTSF demo on lab host {host.name} ({host.sip}): {CALLS} calls at "
               f"{CALL_RATE}/s from the UAC peer, a REGISTER+OPTIONS flood of "
               f"{2 * FLOOD_RATE} msg/s for {FLOOD_S}s from the attacker peer on top; eTSF "
               f"classifies at {hook}.\n\n"
               f"{text}\n\nPlot: {png}\nRaw sipp files: {args.out / 'work'}\n")
    (args.out / "summary.txt").write_text(summary)
    (args.out / "summary.json").write_text(json.dumps(
        {"host": host.name, "hook": hook, "calls": CALLS, "call_rate": CALL_RATE, "flood_rate": 2 * FLOOD_RATE,
         "flood_s": FLOOD_S, "runs": runs}, indent=1) + "\n")
    print("\n" + text + "\n")
    print(f"demo: summary {args.out / 'summary.txt'} (numbers: summary.json), "
          f"plot {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
