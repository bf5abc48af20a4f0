"""RFC 2833 telephone-event captures for SIPp to replay (payload type 120, the type the
dialer's PJSUA2 offers; pjsua drops telephone events on any other type)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testkit.net import DTMF_KEYS, DTMF_PAYLOAD_TYPE, SHIPPED_DTMF, PeerError


def make_dtmf_captures(
    directory: Path,
    keys: Sequence[str] = DTMF_KEYS,
    payload_type: int = DTMF_PAYLOAD_TYPE,
    *,
    later: int = 0,
) -> dict[str, Path]:
    """Copy the shipped ``dtmf_2833_<key>.pcap`` captures with their RTP payload type rewritten.

    The sip-tester captures carry telephone events on payload type 101; pjsua accepts them only
    on the type of its own offer. Returns ``{key: path}``; the files are named
    ``dtmf_<pt>_<key>.pcap``. Lengths are unchanged (SIPp takes the packet length from the UDP
    header); SIPp recomputes the UDP checksum on replay, dpkt recomputes it here too.

    The shipped captures come from one recording: their RTP sequence numbers and timestamps
    grow from key 0 to key 9, and a receiver drops packets that go back in sequence, so within
    one call a key may only follow a lower one. ``later``: sequence numbers ``later`` higher
    (timestamps ``later`` × 160 higher), for a key that must follow any key of the set made
    without it (files ``dtmf_<pt>_<key>_later<N>.pcap``).
    """
    import dpkt  # test-only dependency

    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for key in keys:
        source = SHIPPED_DTMF / f"dtmf_2833_{key}.pcap"
        target = directory / (f"dtmf_{payload_type}_{key}.pcap" if not later
                              else f"dtmf_{payload_type}_{key}_later{later}.pcap")
        with source.open("rb") as src_file, target.open("wb") as dst_file:
            reader = dpkt.pcap.Reader(src_file)
            writer = dpkt.pcap.Writer(dst_file, snaplen=65535, linktype=reader.datalink())
            for stamp, frame in reader:
                eth = dpkt.ethernet.Ethernet(frame)
                ip = eth.data
                udp = ip.data
                rtp = bytearray(udp.data)
                if len(rtp) < 16 or rtp[0] >> 6 != 2:
                    raise PeerError(f"{source}: not an RTP packet")
                rtp[1] = (rtp[1] & 0x80) | payload_type  # keep the marker bit
                if later:
                    seq = (int.from_bytes(rtp[2:4], "big") + later) % 2**16
                    stamp_rtp = (int.from_bytes(rtp[4:8], "big") + later * 160) % 2**32
                    rtp[2:4] = seq.to_bytes(2, "big")
                    rtp[4:8] = stamp_rtp.to_bytes(4, "big")
                udp.data = bytes(rtp)
                udp.sum = 0  # dpkt recomputes both checksums when packing
                ip.sum = 0
                writer.writepkt(bytes(eth), ts=stamp)
        made[key] = target
    return made


def read_rtp_payload_types(capture: Path) -> list[int]:
    """Payload types of the RTP packets in a capture (for checking generated captures)."""
    import dpkt

    types = []
    with capture.open("rb") as handle:
        for _, frame in dpkt.pcap.Reader(handle):
            udp = dpkt.ethernet.Ethernet(frame).data.data
            types.append(udp.data[1] & 0x7F)
    return types


