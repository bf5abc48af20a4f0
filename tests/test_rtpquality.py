"""The audio-quality analysis of the capacity bench (testkit.rtpquality) finds what is planted in
a synthetic RTP capture: a gap, a loss, jitter, a sequence-number wrap, duplicates; so the
bench's figures cannot be silently wrong (issue 16)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt
import pytest

from testkit.rtpquality import Packet, analyse, percentiles, streams

PTIME = 0.020  # 20 ms of G.711 at 8 kHz: 160 bytes per packet


def stream(n: int, *, start_seq: int = 1000, drop: frozenset[int] = frozenset(),
           late: dict[int, float] | None = None, pause: tuple[int, float] | None = None
           ) -> list[Packet]:
    """``n`` packets 20 ms apart; ``drop``: indexes never sent; ``late``: index -> extra delay
    (s); ``pause``: (index, seconds) every packet from there arrives that much later."""
    out = []
    for i in range(n):
        if i in drop:
            continue
        arrival = 100.0 + i * PTIME + (late or {}).get(i, 0.0)
        if pause and i >= pause[0]:
            arrival += pause[1]
        out.append(Packet(seq=(start_seq + i) % 65536, timestamp=(5000 + 160 * i) % 2**32,
                          arrival=arrival, samples=160))
    return out


def test_a_clean_stream_is_clean() -> None:
    q = analyse(stream(500))
    assert (q.expected, q.received, q.lost, q.loss) == (500, 500, 0, 0.0)
    assert q.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert q.worst_gap_ms == pytest.approx(20.0)
    assert q.audio_seconds == pytest.approx(10.0)


def test_a_planted_loss_and_gap_are_found() -> None:
    q = analyse(stream(500, drop=frozenset(range(200, 210))))  # 10 packets = 200 ms lost
    assert (q.expected, q.received, q.lost) == (500, 490, 10)
    assert q.loss == pytest.approx(0.02)
    assert q.worst_gap_ms == pytest.approx(220.0)  # the last before the hole to the first after
    assert q.audio_seconds == pytest.approx(9.8)


def test_a_pause_is_a_gap_and_jitter_without_loss() -> None:
    q = analyse(stream(500, pause=(300, 0.150)))  # everything from packet 300 on 150 ms late
    assert q.lost == 0
    assert q.worst_gap_ms == pytest.approx(170.0)
    # RFC 3550: one transit jump of 150 ms (1200 samples) moves J by 1200/16 = 75 samples
    assert q.worst_jitter_ms == pytest.approx(1000 * (1200 / 16) / 8000)


def test_wrap_duplicates_and_reordering_count_right() -> None:
    packets = stream(300, start_seq=65436)  # wraps at packet 100
    packets.insert(50, packets[49])  # a duplicate
    packets[120], packets[121] = packets[121], packets[120]  # two swapped
    q = analyse(packets)
    assert (q.expected, q.received, q.lost) == (300, 300, 0)


def _write_pcap(path: Path, packets: list[Packet], *, link: str, snaplen: int = 65535) -> None:
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_NULL if link == "lo"
                                  else dpkt.pcap.DLT_EN10MB)
        for p in packets:
            rtp = struct.pack("!BBHII", 0x80, 0, p.seq, p.timestamp, 0xC0FFEE) + b"\xff" * 160
            udp = dpkt.udp.UDP(sport=20000, dport=30000, data=rtp)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=socket.inet_aton("127.0.0.2"), dst=socket.inet_aton("127.0.0.1"),
                            p=dpkt.ip.IP_PROTO_UDP, data=udp)
            ip.len = len(ip)
            frame = (dpkt.loopback.Loopback(family=socket.AF_INET, data=ip) if link == "lo"
                     else dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip))
            writer.writepkt(bytes(frame)[:snaplen], ts=p.arrival)  # tcpdump -s: headers only
        dtmf = struct.pack("!BBHII", 0x80, 120, 9, 0, 0xC0FFEE) + b"\x01\x0a\x00\xa0"
        udp = dpkt.udp.UDP(sport=20000, dport=30000, data=dtmf)  # a key: not audio, left out
        udp.ulen = len(udp)
        ip = dpkt.ip.IP(src=socket.inet_aton("127.0.0.2"), dst=socket.inet_aton("127.0.0.1"),
                        p=dpkt.ip.IP_PROTO_UDP, data=udp)
        ip.len = len(ip)
        frame = (dpkt.loopback.Loopback(family=socket.AF_INET, data=ip) if link == "lo"
                 else dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip))
        writer.writepkt(bytes(frame), ts=200.0)


@pytest.mark.parametrize("link", ["lo", "ethernet"])
def test_a_capture_with_a_planted_gap_and_loss(tmp_path: Path, link: str) -> None:
    planted = stream(250, drop=frozenset({40, 41, 42, 180}))
    capture = tmp_path / "answerer.pcap"
    _write_pcap(capture, planted, link=link)
    found = streams(capture)
    assert list(found) == [("127.0.0.2", 20000, "127.0.0.1", 30000, 0xC0FFEE)]
    q = analyse(found[("127.0.0.2", 20000, "127.0.0.1", 30000, 0xC0FFEE)])
    assert (q.expected, q.received, q.lost) == (250, 246, 4)
    assert q.worst_gap_ms == pytest.approx(80.0, abs=0.01)  # 3 packets missing: 4 x 20 ms
    assert q.audio_seconds == pytest.approx(246 * PTIME)


def test_percentiles() -> None:
    assert percentiles([]) == (0.0, 0.0, 0.0)
    assert percentiles([float(v) for v in range(1, 101)]) == (50.0, 99.0, 100.0)


def test_a_capture_of_headers_only_still_counts_the_audio(tmp_path: Path) -> None:
    """The bench captures 128 bytes a packet (``tcpdump -s 128``): the audio carried is read
    from the UDP length, not from the bytes captured (the CI failure of stop 21: every stream
    of the smoke run counted as shorter than the message)."""
    capture = tmp_path / "answerer.pcap"
    _write_pcap(capture, stream(250), link="lo", snaplen=64)
    (q,) = [analyse(p) for p in streams(capture).values()]
    assert (q.expected, q.received, q.lost) == (250, 250, 0)
    assert q.audio_seconds == pytest.approx(250 * PTIME)


def test_sound_is_every_p99_within_its_bound_and_no_stream_short() -> None:
    from testkit.rtpquality import unsound

    good = {"jitter_ms": [0.4, 19.0, 40.0], "worst_gap_ms": [20.0, 59.0, 300.0],
            "loss_pct": [0.0, 0.1, 5.0], "short": 0}
    assert unsound(good) == []  # the max may be bad: the 99th percentile decides
    bad = {**good, "jitter_ms": [0.4, 21.0, 40.0], "short": 2}
    assert unsound(bad) == ["jitter_ms p99 21 > 20", "2 streams short of the message"]


def test_where_the_worst_gap_was() -> None:
    """The analysis says where a stream's worst gap came and how many gaps it had, so the bench
    can tell gaps at a call's start (its setup) from gaps on the plateau."""
    q = analyse(stream(500, drop=frozenset({100, 300, 301})))  # gaps at 2.02 s and 6.04 s
    assert q.gaps == 2
    assert q.worst_gap_ms == pytest.approx(60.0)
    assert q.worst_gap_at == pytest.approx(302 * PTIME)
    assert q.worst_gap_clock == pytest.approx(100.0 + 302 * PTIME)
    assert analyse(stream(500)).gaps == 0


def test_the_gaps_of_a_capture_are_placed_in_time(tmp_path: Path) -> None:
    from testkit.rtpquality import audio_figures, timeline

    capture = tmp_path / "answerer.pcap"
    # A stream with a gap 1.0 s in, a second stream starting 25 s later with one 4.0 s in.
    first = stream(500, drop=frozenset({50}))
    second = [Packet(p.seq, p.timestamp, p.arrival + 25.0, p.samples)
              for p in stream(500, start_seq=7, drop=frozenset({200, 201}))]
    _write_pcap(capture, first, link="lo")
    other = tmp_path / "other.pcap"
    _write_pcap(other, second, link="lo")
    merged = streams(capture) | {(k[0], k[1] + 1, *k[2:]): v for k, v in streams(other).items()}
    # audio_figures reads one file: write both streams into one
    both = tmp_path / "both.pcap"
    with both.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_NULL)
        for key, packets in merged.items():
            for p in packets:
                rtp = struct.pack("!BBHII", 0x80, 0, p.seq, p.timestamp, 0xC0FFEE) + b"\xff" * 160
                udp = dpkt.udp.UDP(sport=key[1], dport=30000, data=rtp)
                udp.ulen = len(udp)
                ip = dpkt.ip.IP(src=socket.inet_aton("127.0.0.2"),
                                dst=socket.inet_aton("127.0.0.1"), p=dpkt.ip.IP_PROTO_UDP,
                                data=udp)
                ip.len = len(ip)
                writer.writepkt(bytes(dpkt.loopback.Loopback(family=socket.AF_INET, data=ip)),
                                ts=p.arrival)
    figures = audio_figures(both, 1.0)
    assert figures["gaps"] == 2
    assert figures["gap_at_s"] == [pytest.approx(1.02), pytest.approx(4.04), pytest.approx(4.04)]
    # first gap at 1.02 s of the run, the second at 25 + 4.04 s: windows 0 and 2 of 10 s
    assert figures["gap_timeline"] == [1, 0, 1]
    assert timeline([], 0.0) == []
