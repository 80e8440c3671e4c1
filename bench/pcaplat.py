"""Microsecond SIP transaction latencies from a pcap taken at the UAC.

sipp's RTD timers tick in milliseconds, too coarse for veth round trips of a few
hundred microseconds, so the harness also captures the UAC's SIP packets
(``tcpdump -s 700`` in the UAC namespace, filtered to the legitimate UAC address)
and matches them here: per (Call-ID, CSeq number, CSeq method) the first request
sent by the UAC and the first 180 / first final response received.  It also counts
provisional responses that arrive *after* the transaction's final response
(``late_1xx``): UDP gives no ordering, and Kamailio's several UDP workers can relay a
UAS's 200 before the 180 that arrived just before it (see templates/uac.xml).  Plain pcap
(libpcap format, Ethernet link type, IPv4/UDP); no dependencies.
"""
from __future__ import annotations

import struct
from pathlib import Path


def _headers(payload: bytes):
    try:
        text = payload.decode("latin-1")
    except UnicodeDecodeError:
        return None
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    if not lines:
        return None
    first = lines[0]
    cid = cseq = None
    for ln in lines[1:]:
        name, sep, val = ln.partition(":")
        if not sep:
            continue
        n = name.strip().lower()
        if n in ("call-id", "i") and cid is None:
            cid = val.strip()
        elif n == "cseq" and cseq is None:
            cseq = val.strip()
        if cid and cseq:
            break
    if not cid or not cseq:
        return None
    return first, cid, cseq


def transactions(pcap: Path, uac_ip: str) -> dict[str, dict[str, list[float]]]:
    """{method: {"first_180_183": [ms...], "final_2xx": [ms...], "final_error": [...], "late_1xx": [...],
    "no_final": [...]}} for requests sent by uac_ip."""
    uac = bytes(int(x) for x in uac_ip.split("."))
    data = pcap.read_bytes() if pcap.exists() else b""
    if len(data) < 24:
        return {}
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack(">I", data[:4])[0]
    nano = magic == 0xA1B23C4D
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    start: dict[tuple, float] = {}
    got: dict[tuple, set] = {}
    out: dict[str, dict[str, list[float]]] = {}
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 113:                     # Linux cooked (any)
            if len(pkt) < 16 or pkt[14:16] != b"\x08\x00":
                continue
            ip = pkt[16:]
        else:
            return {}
        if len(ip) < 28 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src, dst = ip[12:16], ip[16:20]
        payload = ip[ihl + 8:]
        h = _headers(payload)
        if h is None:
            continue
        first, cid, cseq = h
        parts = cseq.split()
        if len(parts) < 2:
            continue
        key = (cid, parts[0], parts[1].upper())
        if first.startswith("SIP/2.0"):
            if dst != uac or key not in start:
                continue
            try:
                code = int(first.split()[1])
            except (IndexError, ValueError):
                continue
            seen = got.setdefault(key, set())
            ms = (t - start[key]) * 1000.0
            m = out.setdefault(key[2], {})
            if code < 200 and "final" in seen:
                m.setdefault("late_1xx", []).append(ms)
            if 180 <= code <= 183 and "180" not in seen:
                seen.add("180")
                m.setdefault("first_180_183", []).append(ms)
            if code >= 200 and "final" not in seen:
                seen.add("final")
                m.setdefault("final_2xx" if code < 300 else "final_error", []).append(ms)
        elif src == uac and key not in start and key[2] != "ACK":
            start[key] = t
    for key in start:
        if "final" not in got.get(key, set()):
            out.setdefault(key[2], {}).setdefault("no_final", []).append(0.0)
    return out
