"""The prober loop: probe the local proxy, write the keep-alive answer gate into etsf_ctl,
audit alive/dead transitions, publish the state file and a heartbeat.

What each probe outcome writes (``now`` = CLOCK_MONOTONIC when the answer arrived, the clock
of the kernel's bpf_ktime_get_ns()):

* ``ok`` (2xx)                   proxy_alive_until_ns = now + alive_ms;
* ``timeout``                    nothing: the gate runs out by itself alive_ms after the last
                                 2xx (a lost datagram is not a dead proxy);
* ``rejected``, ``refused``,
  ``unreachable``, ``error``     proxy_alive_until_ns = 0 at once: the proxy said no, or is
                                 certainly not there.

A clean stop (SIGTERM) writes 0 as well: nothing vouches for the proxy any more.  The sampling
rate (ka_sample_every) is the policy's, written with the policy slot swap, never by the prober.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .. import datapath
from ..failsafe.audit import audit
from ..paths import mark_heartbeat_stopped, write_heartbeat
from . import probe as P
from .state import update_state

#: ticks of --count / tests are bounded; a service runs until stopped
MAX_TICKS = 10 ** 9


class Prober:
    """One prober: ``tick()`` does one probe -> decide -> write -> publish step."""

    def __init__(self, cfg: dict[str, Any], heartbeat_file: str | None = None,
                 probe: Callable[..., P.Result] = P.probe,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        self.cfg = cfg
        self.heartbeat_file = heartbeat_file
        self.probe = probe
        self.clock_ns = clock_ns
        self.ticks = 0
        self.alive = False                   # the gate as last written or seen

    def _write(self, until_ns: int) -> None:
        datapath.set_keepalive_gate(until_ns)

    def tick(self) -> dict[str, Any]:
        cfg = self.cfg
        self.ticks += 1
        try:
            before = datapath.read_ctl()
        except datapath.DatapathError:
            before = None                    # programs not loaded yet: no gate to write, keep probing
        t0 = self.clock_ns()
        # the gate as the kernel saw it until now (a restarted prober continues from there)
        prev = before is not None and t0 < int(before.proxy_alive_until_ns)
        res = self.probe(cfg["address"], cfg["port"], cfg["timeout_ms"] / 1000, cseq=self.ticks)
        now = self.clock_ns()
        until = 0
        if before is not None:
            until = int(datapath.read_ctl().proxy_alive_until_ns)
            if res.outcome == "ok":
                until = now + cfg["alive_ms"] * 1_000_000
                self._write(until)
            elif res.outcome in P.CLEAR_FAILURES:
                until = 0
                self._write(0)
        alive = bool(until) and now < until
        out: dict[str, Any] = {"tick": self.ticks, "probe": res.as_dict(), "alive": alive,
                               "alive_until_ns": until, "maps": before is not None,
                               "alive_left_ms": max(0, until - now) // 1_000_000 if until else 0}
        changed = alive != prev
        if changed:
            why = "expired" if res.outcome == "timeout" else res.outcome
            audit("keepalive_proxy_alive" if alive else "keepalive_proxy_dead", rule=why,
                  state="alive" if alive else "dead",
                  numbers={"status": res.status, "rtt_ms": out["probe"]["rtt_ms"], "sent": res.sent,
                           "alive_until_ns": until, "target": f"{cfg['address']}:{cfg['port']}"})
        self.alive = alive
        out["transition"] = changed

        def mut(doc):
            outcomes = doc.get("outcomes") or {}
            outcomes[res.outcome] = outcomes.get(res.outcome, 0) + 1
            doc.pop("stopped", None)
            doc.update(enabled=True, target=f"{cfg['address']}:{cfg['port']}", interval_ms=cfg["interval_ms"],
                       timeout_ms=cfg["timeout_ms"], alive_ms=cfg["alive_ms"], alive=alive, alive_until_ns=until,
                       probes_total=doc.get("probes_total", 0) + 1, outcomes=outcomes,
                       last_probe={"time": time.time(), **out["probe"]})
            if changed:
                doc["transitions_total"] = doc.get("transitions_total", 0) + 1
                doc["last_transition"] = {"time": time.time(), "alive": alive, "outcome": res.outcome}
        doc = update_state(mut)
        out["transitions_total"] = doc.get("transitions_total", 0)
        if self.heartbeat_file:
            write_heartbeat(self.heartbeat_file)
        return out

    def stop(self) -> None:
        """A clean stop: the kernel passes OPTIONS to the proxy from now on."""
        try:
            self._write(0)
        except datapath.DatapathError:
            pass                             # no programs loaded: no gate to shut
        if self.alive:
            audit("keepalive_proxy_dead", rule="prober_stopped", state="dead",
                  numbers={"target": f"{self.cfg['address']}:{self.cfg['port']}"})

        def mut(doc):
            doc.update(alive=False, alive_until_ns=0, stopped=time.time())
        update_state(mut)
        self.alive = False
        mark_heartbeat_stopped(self.heartbeat_file)     # on purpose: not stale to the fail-safe

    def run(self, count: int | None = None, stop: threading.Event | None = None,
            ready: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
        """Tick *count* times (None: until *stop* is set), one tick per interval_ms; the last
        results.  *stop* ends the loop between ticks (a signal handler sets it: a tick is never
        cut in the middle of its writes).  *ready* is called once, after the first probe has
        written its state and heartbeat, whatever the proxy answered (a prober that cannot
        complete a tick never reports ready)."""
        stop = stop or threading.Event()
        interval_s = self.cfg["interval_ms"] / 1000
        last: list[dict[str, Any]] = []
        n = count if count is not None else MAX_TICKS
        for i in range(n):
            if stop.is_set():
                break
            t0 = time.monotonic()
            last = (last + [self.tick()])[-16:]
            if i == 0 and ready is not None:
                ready()
            if i + 1 < n and stop.wait(max(0.0, interval_s - (time.monotonic() - t0))):
                break
        return last
