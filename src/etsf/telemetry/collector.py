"""The Prometheus collector: one snapshot per scrape turned into metric families (docs/telemetry.md)."""

from __future__ import annotations

import math
import threading
from typing import Any

from .. import kpi as _kpi
from ..datapath import held as _held
from ..failsafe.audit import read_state as failsafe_state, running as failsafe_running
from ..keepalive.state import read_state as keepalive_state
from ..overload.state import read_state as overload_auto_state
from ..paths import pin_root
from .reader import BUCKET_BOUNDS, DEFAULT_WINDOW, NS_PER_S, Snapshot, invite_codes, snapshot


# ---------------------------------------------------------------------------
# Prometheus collector
# ---------------------------------------------------------------------------


class EtsfCollector:
    """prometheus_client custom collector: one snapshot per scrape (serialised)."""

    def __init__(self, root: str | None = None, window: float = DEFAULT_WINDOW):
        self.root = root or pin_root()
        self.window = _kpi.Window(window)
        self._lock = threading.Lock()
        self.last_cost: dict[str, Any] = {}
        self.scrape_errors = 0

    def sample(self) -> Snapshot:
        """Take a snapshot and feed the KPI window (also called by the sampler)."""
        snap = snapshot(self.root)
        self.window.add(snap["mono"], invite_codes(snap))
        return snap

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        with self._lock:
            try:
                snap = snapshot(self.root)
            except Exception:  # noqa: BLE001 - never fail a scrape completely
                self.scrape_errors += 1
                up = GaugeMetricFamily("etsf_up", "1 when the eTSF maps could be read")
                up.add_metric([], 0)
                yield up
                yield from revert_held_metrics(_held.read())
                yield from failsafe_watchdog_metrics(failsafe_state())
                return
            k = self.window.kpis(snap["mono"], invite_codes(snap))
            self.window.add(snap["mono"], invite_codes(snap))
            self.last_cost = dict(snap["cost"])

        up = GaugeMetricFamily("etsf_up", "1 when the eTSF maps could be read")
        up.add_metric([], 0 if "etsf_stats" in snap["missing"] else 1)
        yield up
        yield from revert_held_metrics(_held.read())
        yield from failsafe_watchdog_metrics(failsafe_state())

        lbl = ["hook", "method", "verdict", "reason"]
        pk = CounterMetricFamily("etsf_sip_packets", "Packets seen by the eTSF programs, by "
                                 "hook, SIP method, verdict and reason", labels=lbl)
        by = CounterMetricFamily("etsf_sip_bytes", "Frame bytes seen by the eTSF programs, by "
                                 "hook, SIP method, verdict and reason", labels=lbl)
        for h, m, v, r, p, b in snap["stats"]:
            pk.add_metric([h.lower(), m, v.lower(), r.lower()], p)
            by.add_metric([h.lower(), m, v.lower(), r.lower()], b)
        yield pk
        yield by

        ifm = {
            "rx_packets": ("etsf_interface_rx_packets", "Packets seen at XDP ingress"),
            "rx_bytes": ("etsf_interface_rx_bytes", "Bytes seen at XDP ingress"),
            "sip_packets": ("etsf_interface_sip_packets", "Packets classified as SIP at XDP"),
            "dropped": ("etsf_interface_dropped_packets", "Packets dropped at XDP by policy"),
            "tx_marked": ("etsf_interface_tx_marked_packets", "Packets marked at TC egress"),
            "tx_bytes": ("etsf_interface_tx_marked_bytes", "Bytes marked at TC egress"),
        }
        # iface: name in the exporter's network namespace ("ifindex<N>" when unknown there)
        fams = {f: CounterMetricFamily(n, h, labels=["iface", "ifindex"])
                for f, (n, h) in ifm.items()}
        for name, row in sorted(snap["interfaces"].items()):
            for f, fam in fams.items():
                fam.add_metric([name, str(row["ifindex"])], row.get(f, 0))
        yield from fams.values()

        hk = GaugeMetricFamily("etsf_interface_hook", "1 for the hook that classifies SIP on the interface "
                               "(xdp or tc); steer=1 where the fast path steers",
                               labels=["iface", "ifindex", "hook", "steer"])
        for name, row in sorted(snap.get("hooks", {}).items()):
            hk.add_metric([name, str(row["ifindex"]), row["hook"] or "none", str(int("steer" in row["flags"]))], 1)
        yield hk

        hist = HistogramMetricFamily(
            "etsf_sip_transaction_latency_seconds",
            "SIP transaction latency from request to the first response of each stage "
            "(trying = 100, ringing = 180/183, final_Nxx), measured in the kernel",
            labels=["method", "stage"])
        for (m, st), h in sorted(snap["hist"].items()):
            cum, buckets = 0, []
            for b, bound in enumerate(BUCKET_BOUNDS):
                cum += h["slots"][b]
                buckets.append((repr(bound), cum))
            buckets.append(("+Inf", h["count"]))
            hist.add_metric([m, st], buckets, h["sum_ns"] / NS_PER_S)
        yield hist

        resp = CounterMetricFamily("etsf_sip_responses", "SIP responses by request method and "
                                   "code (INVITE, REGISTER; once per transaction)",
                                   labels=["method", "code"])
        for (m, c), n in sorted(snap["codes"].items()):
            resp.add_metric([m, str(c)], n)
        yield resp

        ev = CounterMetricFamily("etsf_sip_transaction_events", "Transaction tracking events "
                                 "(txn_start, req_retrans, resp_matched, resp_retrans, "
                                 "resp_nomatch, txn_full)", labels=["event"])
        for name, n in sorted(snap["events"].items()):
            ev.add_metric([name.lower()], n)
        yield ev

        for key, name, doc in (
                ("ser", "etsf_sip_ser_ratio", "Session Establishment Ratio (RFC 6076 4.6)"),
                ("seer", "etsf_sip_seer_ratio",
                 "Session Establishment Effectiveness Ratio (RFC 6076 4.7)"),
                ("ner", "etsf_sip_ner_ratio", "Network Effectiveness Ratio (ITU-T E.425)"),
                ("asr", "etsf_sip_asr_ratio", "Answer Seizure Ratio (ITU-T E.411)")):
            g = GaugeMetricFamily(name, doc + " over the KPI window; NaN without attempts")
            g.add_metric([], math.nan if k[key] is None else k[key])
            yield g
        g = GaugeMetricFamily("etsf_sip_kpi_attempts", "INVITE transactions with a final "
                              "response in the KPI window")
        g.add_metric([], k["attempts"])
        yield g
        g = GaugeMetricFamily("etsf_sip_kpi_window_seconds", "Time span the KPI gauges cover")
        g.add_metric([], k["window_seconds"])
        yield g

        ctl = snap["ctl"] or {}
        for key, name, doc in (
                ("bypass", "etsf_failsafe_bypass", "1 when the global bypass flag is set"),
                ("deadman_tripped", "etsf_failsafe_deadman_tripped",
                 "1 when the heartbeat is older than the dead-man timeout (programs pass all)"),
                ("deadman_s", "etsf_failsafe_deadman_timeout_seconds",
                 "Dead-man timeout (0 = off)"),
                ("heartbeat_age_s", "etsf_failsafe_heartbeat_age_seconds",
                 "Age of the agent heartbeat"),
                ("overload_level", "etsf_overload_level", "Overload level 0..3"),
                ("generation", "etsf_policy_generation", "Policy generation now live"),
                ("active_slot", "etsf_policy_active_slot", "Active policy slot")):
            if ctl.get(key) is None:
                continue
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], ctl[key])
            yield g

        if snap.get("oc"):
            c = CounterMetricFamily("etsf_rfc7339_responses", "UDP responses to RFC 7339 `oc` clients at TC "
                                    "egress by outcome: rewritten, or passed unchanged (too_long, "
                                    "unsupported, error)", labels=["result"])
            for r, n in sorted(snap["oc"].items()):
                c.add_metric([r.lower()], n)
            yield c

        yield from overload_auto_metrics(overload_auto_state())
        yield from keepalive_metrics(snap, keepalive_state())

        info = GaugeMetricFamily("etsf_bpf_program_info", "Loaded eTSF program (value 1)",
                                 labels=["program", "id", "tag", "type"])
        runs = CounterMetricFamily("etsf_bpf_program_runs", "Program runs (exported only while "
                                   "kernel.bpf_stats_enabled = 1)", labels=["program"])
        rtime = CounterMetricFamily("etsf_bpf_program_run_seconds", "Program run time (exported "
                                    "only while kernel.bpf_stats_enabled = 1)", labels=["program"])
        vins = GaugeMetricFamily("etsf_bpf_program_verified_insns", "Instructions the verifier "
                                 "processed (budget 1,000,000)", labels=["program"])
        # the kernel counts runs only while the sysctl is on: with it off the counters would
        # freeze at a stale value and rate() would read as an idle program
        stats_on = bool(snap.get("bpf_stats_enabled"))
        for n, p in sorted(snap["programs"].items()):
            if "error" in p:
                continue
            info.add_metric([n, str(p["id"]), p["tag"], p["type"]], 1)
            runs.add_metric([n], p["run_cnt"])
            rtime.add_metric([n], p["run_time_ns"] / NS_PER_S)
            vins.add_metric([n], p["verified_insns"])
        yield from ((info, runs, rtime, vins) if stats_on else (info, vins))
        g = GaugeMetricFamily("etsf_bpf_stats_enabled", "kernel.bpf_stats_enabled (1 = program "
                              "run count / time are counted and exported)")
        g.add_metric([], 1 if stats_on else 0)
        yield g

        ent = GaugeMetricFamily("etsf_bpf_map_entries", "Entries in a map", labels=["map"])
        mx = GaugeMetricFamily("etsf_bpf_map_max_entries", "Capacity of a map", labels=["map"])
        for n, row in sorted(snap["maps"].items()):
            ent.add_metric([n], row["entries"])
            mx.add_metric([n], row["max_entries"])
        yield ent
        yield mx

        cost = snap["cost"]
        g = GaugeMetricFamily("etsf_exporter_scrape_duration_seconds",
                              "Time to read the maps for this scrape")
        g.add_metric([], cost["seconds"])
        yield g
        g = GaugeMetricFamily("etsf_exporter_scrape_bpf_calls",
                              "bpf() map calls of this scrape (batch lookups + single lookups)")
        g.add_metric([], cost["batch_calls"] + cost["lookups"] + cost["maps_opened"])
        yield g
        c = CounterMetricFamily("etsf_exporter_scrape_errors", "Scrapes that failed to read "
                                "the maps")
        c.add_metric([], self.scrape_errors)
        yield c


def revert_held_metrics(rec: dict[str, Any] | None):
    """An operator's revert that outlives reboots ($ETSF_STATE_DIR/revert.json): a held detach leaves
    the maps unreadable on purpose, a held bypass sets the flag again at every boot; both series are
    always there (0 when nothing is held) so an alert can tell a revert from a fault."""
    from prometheus_client.core import GaugeMetricFamily
    g = GaugeMetricFamily("etsf_revert_held", "1 while an operator's revert of this mode outlives "
                          "reboots (etsfctl revert / bypass on; ended by bypass off, failsafe ack, attach)",
                          labels=["mode"])
    for mode in _held.MODES:
        g.add_metric([mode], 1 if rec and rec["mode"] == mode else 0)
    yield g
    if rec:
        g = GaugeMetricFamily("etsf_revert_held_since_timestamp_seconds", "When the held revert was made "
                              "(Unix time)", labels=["mode"])
        g.add_metric([rec["mode"]], rec["time"])
        yield g


def failsafe_watchdog_metrics(doc: dict[str, Any] | None):
    """Whether the fail-safe watchdog runs, from its state file ($ETSF_STATE_DIR/failsafe.json): a
    watchdog that died (or that systemd gave up on) reverts nothing, and nothing else says so.
    Nothing while it never ran on this host; also when the maps cannot be read."""
    from prometheus_client.core import GaugeMetricFamily
    if not doc:
        return
    stopped = bool(doc.get("stopped"))
    g = GaugeMetricFamily("etsf_failsafe_watchdog_up", "1 while the fail-safe watchdog runs (its state "
                          "file written within the last few ticks)")
    g.add_metric([], 1 if not stopped and failsafe_running(doc) else 0)
    yield g
    g = GaugeMetricFamily("etsf_failsafe_watchdog_stopped", "1 when the watchdog was stopped on purpose "
                          "(SIGTERM: systemctl stop, the failsafe role turning it off), not dead")
    g.add_metric([], 1 if stopped else 0)
    yield g


def overload_auto_metrics(doc: dict[str, Any] | None):
    """The adaptive controller's state file as metrics (nothing while it never ran)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    if not doc or "level" not in doc:
        return
    for name, doc_, v in (
            ("etsf_overload_auto_level", "Overload level the adaptive controller last wrote", doc["level"]),
            ("etsf_overload_auto_admit_rate", "New-INVITE admission rate the controller last wrote "
             "(tokens/s per CPU; 0 = admission off)", doc.get("admit_rate", 0)),
            ("etsf_overload_auto_pinned", "1 while a manual `etsfctl overload set` pins the level",
             1 if doc.get("pinned") else 0),
            ("etsf_overload_auto_pressure", "Largest signal/target ratio of the last tick", doc.get("pressure", 0))):
        g = GaugeMetricFamily(name, doc_)
        g.add_metric([], v)
        yield g
    if doc.get("rfc7339"):
        g = GaugeMetricFamily("etsf_overload_auto_oc_reduction_pct", "RFC 7339 reduction (percent) the "
                              "controller advertises to `oc` clients")
        g.add_metric([], doc["rfc7339"]["reduction_pct"])
        yield g
    c = CounterMetricFamily("etsf_overload_auto_changes", "Level or admission rate changes the controller "
                            "made")
    c.add_metric([], doc.get("changes_total", 0))
    yield c


def keepalive_metrics(snap: Snapshot, doc: dict[str, Any] | None):
    """Keep-alive answers: the kernel's counters and answer gate, the prober's state file."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    ka = snap.get("keepalive")
    if ka is not None:
        c = CounterMetricFamily("etsf_keepalive_answered", "Keep-alive OPTIONS answered with a 200 in the "
                                "kernel (the proxy never saw them)")
        c.add_metric([], ka["answered"])
        yield c
        c = CounterMetricFamily("etsf_keepalive_passed", "Answerable keep-alive OPTIONS passed to the proxy: "
                                "proxy_stale = the prober's gate was shut, sampled = the 1-in-N share; "
                                "not_matching = OPTIONS the kernel may not answer", labels=["reason"])
        for reason, key in (("proxy_stale", "passed_proxy_stale"), ("sampled", "passed_sampled"),
                            ("not_matching", "passed_not_matching")):
            c.add_metric([reason], ka[key])
        yield c
        c = CounterMetricFamily("etsf_nat_keepalives", "NAT keep-alives over UDP on a SIP port (CRLF, CRLFCRLF, "
                                "4 zero bytes), by what the policy did with them", labels=["action"])
        c.add_metric(["passed"], max(0, ka["nat_keepalive_seen"] - ka["nat_keepalive_dropped"]))
        c.add_metric(["dropped"], ka["nat_keepalive_dropped"])
        yield c
    ctl = snap.get("ctl") or {}
    if "keepalive_proxy_alive" in ctl:
        for key, name, help_ in (
                ("keepalive_proxy_alive", "etsf_keepalive_proxy_alive",
                 "1 while the kernel answers keep-alive OPTIONS (the prober's last 2xx is younger than alive_ms)"),
                ("keepalive_alive_left_s", "etsf_keepalive_proxy_alive_remaining_seconds",
                 "Seconds the kernel keeps answering without another 2xx from the proxy"),
                ("keepalive_sample_every", "etsf_keepalive_sample_every",
                 "1 in N answerable OPTIONS still goes to the proxy (0 = none)")):
            g = GaugeMetricFamily(name, help_)
            g.add_metric([], ctl[key])
            yield g
    if not doc or "probes_total" not in doc:
        return
    g = GaugeMetricFamily("etsf_keepalive_prober_running", "1 while the keep-alive prober runs (state file "
                          "written, not stopped)")
    g.add_metric([], 0 if doc.get("stopped") else 1)
    yield g
    c = CounterMetricFamily("etsf_keepalive_probes", "OPTIONS probes of the local proxy by outcome (ok, "
                            "rejected, refused, unreachable, error, timeout)", labels=["outcome"])
    for outcome, n in sorted((doc.get("outcomes") or {}).items()):
        c.add_metric([outcome], n)
    yield c
    c = CounterMetricFamily("etsf_keepalive_transitions", "Changes of the proxy between alive and not alive, "
                            "as the prober wrote them")
    c.add_metric([], doc.get("transitions_total", 0))
    yield c
    rtt = (doc.get("last_probe") or {}).get("rtt_ms")
    if rtt is not None:
        g = GaugeMetricFamily("etsf_keepalive_probe_rtt_seconds", "Round-trip time of the last answered probe")
        g.add_metric([], rtt / 1000)
        yield g
