"""How sound an RTP stream arrived (issue 16): loss, RFC 3550 jitter, the worst gap, the audio
received, from a capture taken at the answerer.

``analyse`` is pure over the packets of one stream (sequence number, RTP timestamp, arrival time,
payload size); ``streams`` reads a pcap (dpkt: Ethernet or loopback link, IPv4, UDP) and splits it
by (source, destination, SSRC); ``percentiles`` sums a set of streams up (p50, p99, max). The
capacity bench reports them per caller; ``tests/test_rtpquality.py`` proves on synthetic captures
that a planted gap and a planted loss are found, so the bench's figures cannot be silently wrong.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RTP_VERSION = 2
SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1: a jump up to this far is in order, the rest is late


@dataclass(frozen=True)
class Packet:
    """One RTP packet as it arrived: ``arrival`` in seconds, ``samples`` of audio it carries."""

    seq: int
    timestamp: int
    arrival: float
    samples: int


@dataclass(frozen=True)
class Quality:
    """One stream: packets expected (from the sequence numbers) and received, lost and the
    ratio, the RFC 3550 interarrival jitter at the end and its worst value (ms), the worst gap
    between two packets received in a row (ms), and the seconds of audio received. Where the
    worst gap was: ``worst_gap_at`` seconds after the stream's first packet, and ``worst_gap_clock``
    the arrival time of the packet that ended it (the capture's clock); ``gaps``: how many gaps
    were over ``GAP_MS``."""

    expected: int
    received: int
    lost: int
    loss: float
    jitter_ms: float
    worst_jitter_ms: float
    worst_gap_ms: float
    audio_seconds: float
    worst_gap_at: float = 0.0
    worst_gap_clock: float = 0.0
    gaps: int = 0
    start: float = 0.0  # the first packet's arrival (the capture's clock)


GAP_MS = 30.0
"""A gap worth counting: one 20 ms packet or more missing from its place (40 ms and up; the
bound is half a packet under it)."""


def analyse(packets: Sequence[Packet], clock_rate: int = 8000) -> Quality:
    """The quality of one stream, from its packets in arrival order (duplicates counted once)."""
    if not packets:
        return Quality(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    seen: set[int] = set()
    cycles, max_seq = 0, packets[0].seq
    first_ext = highest = packets[0].seq
    jitter = worst_jitter = 0.0
    prev: Packet | None = None
    worst_gap = worst_at = worst_clock = 0.0
    gaps = 0
    samples = 0
    for p in packets:
        delta = (p.seq - max_seq) % SEQ_MOD  # RFC 3550, appendix A.1
        if delta < MAX_DROPOUT:  # in order, perhaps after a loss
            if p.seq < max_seq:
                cycles += SEQ_MOD  # the sequence number wrapped
            max_seq = p.seq
            ext = cycles + p.seq
        else:  # late (reordered or duplicated): it belongs before max_seq
            ext = cycles + p.seq if p.seq <= max_seq else cycles - SEQ_MOD + p.seq
        if ext in seen:
            continue
        seen.add(ext)
        first_ext, highest = min(first_ext, ext), max(highest, ext)
        samples += p.samples
        if prev is not None:
            transit = (p.arrival - prev.arrival) * clock_rate - (p.timestamp - prev.timestamp)
            jitter += (abs(transit) - jitter) / 16.0  # RFC 3550, section 6.4.1
            worst_jitter = max(worst_jitter, jitter)
            gap = p.arrival - prev.arrival
            gaps += gap * 1000.0 > GAP_MS
            if gap > worst_gap:
                worst_gap, worst_at, worst_clock = gap, p.arrival - packets[0].arrival, p.arrival
        prev = p
    expected = highest - first_ext + 1
    lost = max(0, expected - len(seen))
    return Quality(expected=expected, received=len(seen), lost=lost,
                   loss=lost / expected if expected else 0.0,
                   jitter_ms=1000.0 * jitter / clock_rate,
                   worst_jitter_ms=1000.0 * worst_jitter / clock_rate,
                   worst_gap_ms=1000.0 * worst_gap, audio_seconds=samples / clock_rate,
                   worst_gap_at=worst_at, worst_gap_clock=worst_clock, gaps=gaps,
                   start=packets[0].arrival)


Stream = tuple[str, int, str, int, int]
"""(source address, source port, destination address, destination port, SSRC)."""


def streams(capture: Path, *, payload_types: Iterable[int] = (0, 8),
            bytes_per_sample: float = 1.0) -> dict[Stream, list[Packet]]:
    """The audio RTP streams of a pcap, by stream, packets in capture order (G.711 by default:
    payload types 0 and 8, one byte per sample). Telephone events and non-RTP are left out."""
    import socket

    import dpkt

    audio = set(payload_types)
    out: dict[Stream, list[Packet]] = {}
    with capture.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = reader.datalink()
        for stamp, frame in reader:
            ip = (dpkt.loopback.Loopback(frame).data if link == dpkt.pcap.DLT_NULL
                  else dpkt.ethernet.Ethernet(frame).data)
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            data = bytes(udp.data)
            if len(data) < 12 or data[0] >> 6 != RTP_VERSION or (data[1] & 0x7F) not in audio:
                continue
            count = data[0] & 0x0F
            header = 12 + 4 * count
            carried = udp.ulen - 8  # the RTP packet's real size: the capture keeps headers only
            key = (socket.inet_ntoa(ip.src), udp.sport, socket.inet_ntoa(ip.dst), udp.dport,
                   int.from_bytes(data[8:12], "big"))
            out.setdefault(key, []).append(Packet(
                seq=int.from_bytes(data[2:4], "big"), timestamp=int.from_bytes(data[4:8], "big"),
                arrival=float(stamp),
                samples=int(max(0, carried - header) / bytes_per_sample)))
    return out


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``values`` (nearest rank); zeros when there are none."""
    if not values:
        return 0.0, 0.0, 0.0
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return rank(0.50), rank(0.99), ordered[-1]


class Capture:
    """``tcpdump`` on loopback into ``path``, with a kernel capture filter (``bpf``), RTP
    headers only: cheap enough to run beside 500 calls."""

    def __init__(self, path: Path, bpf: str) -> None:
        self.path, self.bpf = path, bpf
        self.process: subprocess.Popen[bytes] | None = None
        self.dropped: int | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "128", "-B", "65536", "-U", "-w",
             str(self.path), self.bpf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # it says so once the filter is in place
            line = self.process.stderr.readline().decode(errors="replace")
            if "listening on" in line:
                return
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError(f"tcpdump did not start capturing ({self.bpf})")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        found = re.search(r"(\d+) packets? dropped by kernel", err.decode(errors="replace"))
        self.dropped = int(found.group(1)) if found else None
        self.process = None


def audio_figures(capture: Path, message_seconds: float) -> dict[str, Any]:
    """The audio rows of the capacity bench, over every stream of ``capture``: p50 / p99 / max
    of jitter, worst gap and loss, and the streams that carried less audio than the message.
    Where the gaps are: ``gap_at_s``, how far into its stream each worst gap over ``GAP_MS``
    came (p50 / p99 / max), and ``gap_timeline``, those worst gaps per ``TIMELINE_S`` of the run
    (the capture's first packet is 0)."""
    qs = [analyse(p) for p in streams(capture).values()]
    figures: dict[str, Any] = {"streams": len(qs), "packets": sum(q.received for q in qs),
                               "lost": sum(q.lost for q in qs),
                               "short": sum(1 for q in qs if q.audio_seconds < message_seconds),
                               "gaps": sum(q.gaps for q in qs)}
    gapped = [q for q in qs if q.worst_gap_ms > GAP_MS]
    figures["gap_at_s"] = [round(v, 2) for v in percentiles([q.worst_gap_at for q in gapped])]
    figures["gap_timeline"] = timeline([q.worst_gap_clock for q in gapped],
                                       min((q.start for q in qs), default=0.0))
    for name, values in (("jitter_ms", [q.jitter_ms for q in qs]),
                         ("worst_jitter_ms", [q.worst_jitter_ms for q in qs]),
                         ("worst_gap_ms", [q.worst_gap_ms for q in qs]),
                         ("loss_pct", [100.0 * q.loss for q in qs])):
        figures[name] = [round(v, 2) for v in percentiles(values)]
    return figures


TIMELINE_S = 10.0


def timeline(stamps: Sequence[float], start: float, step: float = TIMELINE_S) -> list[int]:
    """How many of ``stamps`` fall in each ``step`` seconds from ``start``."""
    if not stamps:
        return []
    counts = [0] * (int((max(stamps) - start) // step) + 1)
    for t in stamps:
        counts[max(0, int((t - start) // step))] += 1
    return counts


SOUND = {"jitter_ms": 20.0, "worst_gap_ms": 60.0, "loss_pct": 0.1}
"""What "sound" audio is (issue 16): over the calls, the 99th percentile of each figure at most
this: RFC 3550 jitter 20 ms, the worst gap between two packets of a call 60 ms (three packets
missing in a row), loss 0.1%; and no call short of the message."""


def unsound(figures: dict[str, Any]) -> list[str]:
    """Why the audio of ``audio_figures`` is not sound (empty: it is)."""
    out = [f"{name} p99 {figures[name][1]:g} > {limit:g}" for name, limit in SOUND.items()
           if figures[name][1] > limit]
    if figures["short"]:
        out.append(f"{figures['short']} streams short of the message")
    return out
