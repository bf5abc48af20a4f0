"""A stand-in for ``sip.worker`` in the pool's tests: speaks the same wire through the same
``sip.link`` (listening socket, attach, buffer, acknowledgements), places no SIP call.

``dial`` answers ``ringing`` at once and ``ended`` (contacted) ``ring_timeout`` seconds later.
``FAKE_WIRE`` in the environment makes it claim another wire version.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from pathlib import Path

from dialer import ipc
from dialer.ipc import Channel
from sip import link as linkmod


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    if "FAKE_WIRE" in os.environ:
        linkmod.WIRE_VERSION = int(os.environ["FAKE_WIRE"])  # type: ignore[attr-defined]  # a fake wire
    listener = socket.socket(fileno=args.listen_fd)
    select.select([listener], [], [], 10)
    conn, _ = listener.accept()
    channel = Channel(conn)
    init: ipc.Init | None = None
    while init is None and not channel.closed:
        select.select([channel], [], [], 1.0)
        got = channel.receive_msgs()
        init = got[0] if got and isinstance(got[0], ipc.Init) else None
    if init is None:
        return 2
    calls: dict[str, float] = {}
    retiring = False
    link = linkmod.Link(channel, listener, state_dir=Path(args.socket).parent,
                        hello=lambda: {"worker": init.worker, "sip_port": 0,
                                       "digest": init.digest, "ready": True},
                        calls=lambda: sorted(calls),
                        alone_s=float(init.orphan_timeout or 60))
    link.send(ipc.Ready(worker=init.worker, pid=os.getpid(), sip_port=0))
    try:
        while True:
            for msg in link.receive():
                if isinstance(msg, ipc.Dial):
                    cid = msg.call_id
                    calls[cid] = time.monotonic() + float(msg.ring_timeout or 1)
                    link.send(ipc.Ringing(call_id=cid, at=time.time()))
                elif isinstance(msg, ipc.Hangup) and msg.call_id in calls:
                    del calls[msg.call_id]
                    link.send(ipc.Ended(call_id=msg.call_id, outcome="failed",
                                        reason="hung up on request", at=time.time()))
                elif isinstance(msg, ipc.Retire):
                    retiring = True
                elif isinstance(msg, ipc.Shutdown):
                    return 0
            now = time.monotonic()
            for cid, end in list(calls.items()):
                if now >= end:
                    del calls[cid]
                    link.send(ipc.Ended(call_id=cid, outcome="contacted", status=200,
                                        at=time.time()))
            if link.abandoned:
                retiring = True
            if retiring and not calls:
                return 0
            time.sleep(0.01)
    finally:
        os.unlink(args.socket)
        link.write_undelivered()
        link.close()


if __name__ == "__main__":
    sys.exit(main())
