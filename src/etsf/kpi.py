"""Carrier KPIs from the in-kernel SIP response counters.

Input: the number of INVITE transactions that ended with each final response
code during a window (``{code: count}``, deltas of ``etsf_tm_codes``; the
kernel counts each code once per transaction, so retransmissions are not
double-counted).  Only final responses (200..699) are used: a transaction
still pending at the end of the window is counted in the window in which its
final response arrives (the usual practice for windowed KPIs, which keeps
every ratio within [0, 1]).

Formulas (results are ratios in [0, 1]; the RFC / ITU texts multiply by 100
to get percent).  ``A`` = all INVITE transactions with a final response,
``R3`` = those answered with a 3xx redirection:

* **SER**, Session Establishment Ratio -- RFC 6076 section 4.6::

      SER = #(INVITE -> 200 OK) / (A - R3)

  (any 2xx counts as "200 OK": INVITE has no other success code in practice.)

* **SEER**, Session Establishment Effectiveness Ratio -- RFC 6076 section 4.7:
  like SER, but responses that show the network did its job although no
  session was set up (480, 486, 600, 603: the called user was reached) count
  as effective::

      SEER = #(INVITE -> 200, 480, 486, 600, 603) / (A - R3)

* **NER**, Network Effectiveness Ratio -- ITU-T E.425 (mapped to SIP codes
  with the ITU-T Q.1912.5 cause mapping): the share of attempts not lost
  to a network failure.  Answer, user busy (486, 600), no answer (480), call
  rejected by the user (603) and caller abandoned before answer (487, a
  CANCEL) are network successes::

      NER = #(INVITE -> 2xx, 480, 486, 487, 600, 603) / (A - R3)

* **ASR**, Answer Seizure Ratio -- ITU-T E.411 ("seizures that result in an
  answer signal / total seizures"); every attempt with a final
  response is a seizure, redirections included::

      ASR = #(INVITE -> 2xx) / A

A ratio with a zero denominator is undefined: ``None`` here, NaN in the
exporter (Prometheus' convention for "no data").
"""

from __future__ import annotations

from typing import Iterable, Mapping

SEER_CODES = frozenset({200, 480, 486, 600, 603})
NER_USER_CODES = frozenset({480, 486, 487, 600, 603})
KPIS = ("ser", "seer", "ner", "asr")


def _finals(codes: Mapping[int, int]) -> dict[int, int]:
    return {int(c): int(n) for c, n in codes.items() if 200 <= int(c) <= 699 and n > 0}


def _sum(codes: Mapping[int, int], pred) -> int:
    return sum(n for c, n in codes.items() if pred(c))


def _ratio(num: int, den: int) -> float | None:
    return None if den <= 0 else num / den


def attempts(codes: Mapping[int, int]) -> int:
    """A: INVITE transactions with a final response."""
    return sum(_finals(codes).values())


def ser(codes: Mapping[int, int]) -> float | None:
    f = _finals(codes)
    return _ratio(_sum(f, lambda c: 200 <= c < 300),
                  sum(f.values()) - _sum(f, lambda c: 300 <= c < 400))


def seer(codes: Mapping[int, int]) -> float | None:
    f = _finals(codes)
    return _ratio(_sum(f, lambda c: 200 <= c < 300 or c in SEER_CODES),
                  sum(f.values()) - _sum(f, lambda c: 300 <= c < 400))


def ner(codes: Mapping[int, int]) -> float | None:
    f = _finals(codes)
    return _ratio(_sum(f, lambda c: 200 <= c < 300 or c in NER_USER_CODES),
                  sum(f.values()) - _sum(f, lambda c: 300 <= c < 400))


def asr(codes: Mapping[int, int]) -> float | None:
    f = _finals(codes)
    return _ratio(_sum(f, lambda c: 200 <= c < 300), sum(f.values()))


def compute(codes: Mapping[int, int]) -> dict[str, float | None]:
    """{'ser': .., 'seer': .., 'ner': .., 'asr': .., 'attempts': A}."""
    return {"ser": ser(codes), "seer": seer(codes), "ner": ner(codes), "asr": asr(codes),
            "attempts": attempts(codes)}


def delta(new: Mapping[int, int], old: Mapping[int, int]) -> dict[int, int]:
    """Per-code increase; a counter that went down (maps recreated) restarts from 0."""
    out = {}
    for c, n in new.items():
        d = int(n) - int(old.get(c, 0))
        if d < 0:
            d = int(n)
        if d:
            out[int(c)] = d
    return out


class Window:
    """Cumulative-counter samples over a sliding window (bounded: at most
    ``max_samples`` kept, oldest dropped first)."""

    def __init__(self, seconds: float, max_samples: int = 720):
        if seconds <= 0:
            raise ValueError("KPI window must be > 0 seconds")
        self.seconds = float(seconds)
        self.max_samples = max(2, int(max_samples))
        self._samples: list[tuple[float, dict[int, int]]] = []

    def add(self, t: float, codes: Mapping[int, int]) -> None:
        self._samples.append((float(t), {int(c): int(n) for c, n in codes.items()}))
        # keep exactly one sample at or before t - window (the baseline)
        cutoff = t - self.seconds
        while len(self._samples) >= 2 and self._samples[1][0] <= cutoff:
            self._samples.pop(0)
        del self._samples[:-self.max_samples]

    def span(self, now: float) -> float:
        return 0.0 if not self._samples else max(0.0, now - self._samples[0][0])

    def kpis(self, now: float, current: Mapping[int, int]) -> dict[str, float | None]:
        """KPIs of current minus the baseline: the newest sample at or before
        now - window (else the oldest sample: the window is not full yet)."""
        if not self._samples:
            res = compute({})
            res["window_seconds"] = 0.0
            return res
        bt, base = self._samples[0]
        for t, codes in self._samples:
            if t <= now - self.seconds:
                bt, base = t, codes
        res = compute(delta(current, base))
        res["window_seconds"] = max(0.0, now - bt)
        return res


def codes_of(rows: Iterable[tuple[str, int, int]], method: str = "INVITE") -> dict[int, int]:
    """{code: count} for one method from (method, code, count) rows."""
    return {int(c): int(n) for m, c, n in rows if m == method}
