"""The wire between the daemon and its SIP workers: JSON objects, one per line, over a stream socket.

``dialer serve`` gives each worker a listening Unix socket in the node's state directory and
connects to it (``dialer.pool``); when the daemon dies the worker keeps its calls and waits for
the next daemon to attach (``sip.link``). The tests also drive a worker over one end of a
``socket.socketpair()`` (``--ipc-fd N``): when that closes, the worker hangs up and exits. The
worker's stdout and stderr stay free for logs. When a worker dies the daemon reads end-of-file
and accounts for the worker's calls.

Daemon to worker (``op``):

* ``init``: ``worker`` (index), ``bind`` (address for SIP and RTP), ``trunks`` (name ->
  ``{uri, registrar, username, password, transport, register}``), ``allowed_sources`` (IP
  addresses SIP is accepted from), ``log_level``, ``rtp_port`` (first RTP port of this worker)
  and ``rtp_port_range``. The password travels only here, never on a command line.
* ``dial``: ``call_id`` (the SIP Call-ID, also the attempt id), ``trunk``, ``uri``,
  ``from_uri`` (or null), ``display``, ``ring_timeout``, ``media`` (prompt name -> WAV path),
  ``dialogue`` (the fields of ``DialogueSettings``).
* ``hangup``: ``call_id``.
* ``trunk``: ``trunk``, ``up`` (bool), ``reason``: the trunk's registration was lost (or is
  back); calls on it that have had no answer yet end ``trunk_down``.
* ``shutdown``.

Worker to daemon (``ev``):

* ``ready``: ``worker``, ``pid``, ``sip_port``.
* ``reg``: ``trunk``, ``code``, ``reason``, ``expires``: every registration state change.
* ``ringing`` / ``answered``: ``call_id``, ``at``.
* ``played``: ``call_id``, ``prompt``, ``at``: a prompt or the message starts playing.
* ``key``: ``call_id``, ``key``, ``at``;  ``confirmed``: ``call_id``, ``what``, ``at``.
* ``slots``: ``held``: call slots held by finished calls whose CANCEL or BYE is still
  unanswered (freed within the trunk's ``invite_timeout``); the pool counts them as busy.
* ``dropped``: ``counts`` (reason -> messages), ``last``: what the source filter dropped.
* ``ended``: ``call_id``, ``status``, ``reason``, ``q850``, ``outcome``, ``answered_at``,
  ``keys``, ``answer_confirmed_at``, ``listen_confirmed_at``, ``at``. Exactly one per ``dial``.
* ``log``: ``level``, ``message`` (worker-side problems worth the daemon's log).
* ``load``: ``overloaded`` (bool), ``lag`` (s): the worker's loop runs late (the machine is short
  of CPU) or has caught up; an overloaded worker is given no new calls.

Attaching (``sip.link``; this part of the wire does not change between versions, so that a
daemon can let a worker of another version finish its calls):

* daemon to worker ``attach``: ``wire`` (the daemon's wire version). A worker the daemon did
  not start itself answers ``hello`` (``wire``, ``worker``, ``pid``, ``sip_port``, ``digest``,
  ``ready``, ``rtp_port``), then every event it kept while no daemon was attached, in order, then its state
  (``reg``, ``load``, ``slots``), then ``attached``: ``calls`` (the call_ids it carries, each to
  end with one ``ended``), ``dropped`` (progress events a full buffer lost), ``alone`` (s).
  A worker attached to another daemon answers ``refused`` (``reason``, ``pid``) and hangs up.
* daemon to worker ``retire``: finish the calls, take no new one, exit.
* Every event but ``reg``, ``load`` and ``slots`` carries ``seq`` (1, 2, ... per worker
  process); the daemon answers ``ack`` (``seq``: the last one whose effect is committed) and
  the worker keeps each event until then, to hand it over again to the next daemon.
* ``init`` carries ``wire`` and ``digest`` (a hash of the rest of ``init``), which the worker
  reports in ``hello``: a daemon adopts a worker of the same wire and digest, and retires others.

Times are POSIX timestamps (float seconds).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

Message = dict[str, Any]

MAX_LINE = 1 << 20
WIRE_VERSION = 1  # grows with every change of the wire a daemon and a worker must agree on
ALONE_S = 60.0  # a worker with no daemon attached this long finishes its calls and exits


class Channel:
    """A non-blocking, line-framed JSON channel over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self._buf = b""
        self.closed = False

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message) -> None:
        """Send one message; blocks briefly if the peer's buffer is full."""
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
        finally:
            if not self.closed:
                self.sock.setblocking(False)

    def receive(self) -> list[Message]:
        """Read what has arrived and return the complete messages; sets ``closed`` at EOF."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._buf += chunk
            if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
                raise ValueError("IPC line too long")
        messages: list[Message] = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                messages.append(json.loads(line))
        return messages

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def inheritable_pair() -> tuple[Channel, int]:
    """A channel for the parent and a raw fd for the child (to pass with ``pass_fds``)."""
    parent, child = socket.socketpair()
    fd = child.detach()
    os.set_inheritable(fd, True)
    return Channel(parent), fd
