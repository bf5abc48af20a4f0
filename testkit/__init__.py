"""The test peers and drivers shared by the test suite and the benchmarks: SIPp (``sipp``),
Kamailio (``kamailio``), RTP telephone-event captures (``rtp``), a PJSUA2 probe (``probe``),
free loopback ports (``net``), the one poll-until helper (``wait``) and the driver of a real
dialer installation (``harness.Dialer``). Nothing of the product imports it.
"""

from testkit.kamailio import Kamailio, Registration, parse_ul_dump, running
from testkit.net import (
    DTMF_KEYS,
    DTMF_PAYLOAD_TYPE,
    KAMAILIO_CFG,
    LOCALHOST,
    SHIPPED_DTMF,
    SIPP_DIR,
    TESTS_DIR,
    free_port,
)
from testkit.probe import PjProbe, ProbeAccount, ProbeCall
from testkit.rtp import make_dtmf_captures, read_rtp_payload_types
from testkit.sipp import SIPP_TIMING_DEFAULTS, Sipp, SippEvent, parse_sipp_log, peak_concurrency
from testkit.wait import PeerError, WaitTimeout, until
from testkit.wait import until as wait_until

__all__ = [
    "DTMF_KEYS", "DTMF_PAYLOAD_TYPE", "KAMAILIO_CFG", "LOCALHOST", "SHIPPED_DTMF", "SIPP_DIR",
    "SIPP_TIMING_DEFAULTS", "TESTS_DIR", "Kamailio", "PeerError", "PjProbe", "ProbeAccount",
    "ProbeCall", "Registration", "Sipp", "SippEvent", "WaitTimeout", "free_port",
    "make_dtmf_captures", "parse_sipp_log", "parse_ul_dump", "peak_concurrency",
    "read_rtp_payload_types", "running", "until", "wait_until",
]
