"""``testkit.free_port`` never hands out a port twice in one test run.

A port it returns is only checked free, not bound: the peer binds it later. A second call in
between (the harness's worker range, then a SIPp's port) must not return a port of the first, or
the second peer to bind fails with EADDRINUSE (seen once in CI: SIPp "Unable to bind main socket,
errno = 98").
"""

from __future__ import annotations

from testkit import free_port


def test_ports_handed_out_do_not_overlap() -> None:
    taken: set[int] = set()
    # 600 single ports and 25 ranges of 8 out of 10,000: without a record of what was handed
    # out, the birthday bound makes a repeat all but certain (about 30 expected).
    for i in range(625):
        count = 8 if i % 25 == 0 else 1
        base = free_port(count)
        span = set(range(base, base + count))
        assert not span & taken, f"port(s) {sorted(span & taken)} handed out twice"
        taken |= span
