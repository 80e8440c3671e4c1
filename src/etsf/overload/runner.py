"""The controller loop: sample the signals, step the control law, write the level and the
admission rate to etsf_ctl through the agent API (the code path of ``etsfctl overload set`` /
``admit``), audit every change like a fail-safe transition, publish the state file and a
heartbeat.  A manual pin (``etsfctl overload set``) stops the writes until resumed.  With
``rfc7339.enabled`` the RFC 7339 advertisement follows the admission rate (law.oc_advert);
without it, or when the controller stops, the advertisement flag is cleared."""

from __future__ import annotations

import time
from typing import Any, Callable

from .. import datapath
from ..failsafe.audit import audit
from .law import State, oc_advert, step
from ..paths import mark_heartbeat_stopped, write_heartbeat
from .state import read_state, update_state

#: ticks of --once / tests are bounded; a service runs until stopped
MAX_TICKS = 10 ** 9


#: longest run of new INVITEs admitted back to back, in ms of the rate
BURST_MS = 100


def burst_for(rate: int, interval_ms: int) -> int:
    """Bucket depth per CPU: one tick's worth of tokens, at most BURST_MS of them (at least 1).
    A full bucket is what a surge gets at once on top of the rate (recorded: a bucket of one
    500 ms tick at 437/s let 400 INVITEs through in the first half second of a 3x surge,
    349 KB queued in the proxy's socket, 78 drops, INVITE->200 p99 212 ms)."""
    return max(1, rate * min(interval_ms, BURST_MS) // 1000)


class Controller:
    """One controller: ``tick()`` does one full sample -> decide -> write -> publish step."""

    def __init__(self, cfg: dict[str, Any], sampler, heartbeat_file: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.sampler = sampler
        self.heartbeat_file = heartbeat_file
        self.clock = clock
        self.law: State | None = None
        self.ticks = 0
        self.oc: dict[str, Any] | None = None  # the advertisement last written (None: not yet)

    def _seed(self) -> State:
        """Start from what etsf_ctl holds now (a restart or a resume continues from there)."""
        ctl = datapath.read_ctl()
        return State(level=int(ctl.overload_level), rate=int(ctl.invite_admit_rate))

    def _apply(self, dec, prev_level: int, prev_rate: int) -> None:
        if dec.level != prev_level:
            datapath.set_overload(dec.level)
        if dec.rate != prev_rate:
            datapath.set_admission(dec.rate, burst_for(dec.rate, self.cfg["interval_ms"]) if dec.rate else None,
                                   retry_after=self.cfg["retry_after_s"])

    def _advertise(self, rate: int) -> dict[str, Any] | None:
        """Write the RFC 7339 advertisement for *rate* (or clear it when disabled, once)."""
        on, red, validity = oc_advert(self.cfg, rate)
        if not on and self.oc is not None and not self.oc["enabled"]:
            return None
        if on and self.oc is not None and (self.oc["enabled"], self.oc["reduction_pct"],
                                           self.oc["validity_ms"]) == (True, red, validity):
            return {"changed": False, "rfc7339": self.oc}
        res = datapath.set_oc(on, red, validity) if on else datapath.set_oc(False)
        self.oc = res["rfc7339"]
        return res

    def stop(self) -> None:
        """The controller stops: clients are no longer told to reduce (the flag is cleared), and
        its heartbeat says it was stopped on purpose (the fail-safe does not call it stale)."""
        if (self.cfg.get("rfc7339") or {}).get("enabled"):
            datapath.set_oc(False)
            self.oc = None
        mark_heartbeat_stopped(self.heartbeat_file)

    def tick(self) -> dict[str, Any]:
        sig = self.sampler.sample(self.clock())
        self.ticks += 1
        pinned = bool((read_state() or {}).get("pinned"))
        out: dict[str, Any] = {"tick": self.ticks, "pinned": pinned, "signals": sig.as_dict()}
        if pinned:
            self.law = None                    # re-seeded from etsf_ctl on resume
        else:
            if self.law is None:
                self.law = self._seed()
            prev_level, prev_rate = self.law.level, self.law.rate
            dec = step(self.cfg, self.law, sig)
            out.update(level=dec.level, rate=dec.rate, pressure=dec.pressure, signal=dec.signal,
                       changed=dec.changed)
            if dec.changed:
                self._apply(dec, prev_level, prev_rate)
            oc = self._advertise(dec.rate)
            if oc is not None and oc["rfc7339"]["enabled"]:
                out["rfc7339"] = oc["rfc7339"]
            if dec.changed:
                extra = {"oc_reduction_pct": oc["rfc7339"]["reduction_pct"]} if "rfc7339" in out else {}
                audit("overload_level" if dec.level_changed else "overload_rate", rule=dec.signal,
                      state=f"level {dec.level}",
                      numbers={"level": dec.level, "previous_level": prev_level, "admit_rate": dec.rate,
                               "previous_admit_rate": prev_rate, "pressure": dec.pressure, **extra,
                               **dec.signals})

        def mut(doc):
            doc.update(signals=out["signals"], ticks=doc.get("ticks", 0) + 1, enabled=True)
            if "level" in out:
                doc.update(level=out["level"], admit_rate=out["rate"], pressure=out["pressure"],
                           signal=out["signal"])
                if "rfc7339" in out:
                    doc["rfc7339"] = out["rfc7339"]
                else:
                    doc.pop("rfc7339", None)
                if out["changed"]:
                    doc["changes_total"] = doc.get("changes_total", 0) + 1
                    doc["last_change"] = {"time": time.time(), "level": out["level"], "admit_rate": out["rate"],
                                          "signal": out["signal"], "pressure": out["pressure"]}
        doc = update_state(mut)
        out["changes_total"] = doc.get("changes_total", 0)
        if self.heartbeat_file:
            write_heartbeat(self.heartbeat_file)
        return out

    def run(self, count: int | None = None, interval_s: float | None = None,
            sleep: Callable[[float], None] = time.sleep,
            ready: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
        """Tick *count* times (None: until stopped), *interval_s* apart; the last results.
        *ready* is called once, after the first tick has written its state and heartbeat (a
        controller that cannot tick never reports ready)."""
        interval_s = self.cfg["interval_ms"] / 1000 if interval_s is None else interval_s
        last: list[dict[str, Any]] = []
        n = count if count is not None else MAX_TICKS
        for i in range(n):
            last = (last + [self.tick()])[-16:]
            if i == 0 and ready is not None:
                ready()
            if i + 1 < n:
                sleep(interval_s)
        return last
