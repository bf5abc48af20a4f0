"""The fork server: SIP workers forked from one process that has already imported them.

A worker started as ``python -m sip.worker`` spends about 75 ms of CPU importing Python, the
wire, the core and pjsua2 before it does anything; a pool of 125 pays that 125 times. The
daemon (``dialer.procs.ForkServer``) starts this module once, as ``python -m sip.forkserver
--control-fd N``; it imports ``sip.worker`` (pjsua2 loaded, the library not created: that
happens in each worker), freezes the heap so that the children share its pages, and forks one
worker per request. A worker is then the same program as before (``sip.worker.main``, same
arguments, same command line in ``ps`` through ``setproctitle``), minus the imports.

The control socket is a ``SOCK_SEQPACKET`` pair, one JSON object per packet:

* daemon to server: ``{"argv": [...], "session": bool}`` with the worker's wire socket attached
  (``SCM_RIGHTS``); ``"{fd}"`` in ``argv`` stands for that descriptor's number in the worker.
  ``session``: the worker starts its own session, so that it outlives the daemon.
* server to daemon: ``{"pid": N}`` (or ``{"error": "..."}``) for each request, in order, and
  ``{"exited": N, "code": C}`` when a worker it forked ends (``C`` as ``Popen.returncode``).

When the daemon closes its end (it stopped, or died) the server exits; the workers it forked
carry on (those tied to the daemon by their wire socket then exit by themselves).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

import setproctitle

import sip.worker

MAX_PACKET = 1 << 16


def _reap(control: socket.socket) -> None:
    """Report every child that has ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(control: socket.socket, msg: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the daemon is gone: the loop sees EOF next
        control.send(json.dumps(msg).encode())


def _child(request: dict[str, object], fd: int, control: socket.socket,
           wakeup: tuple[int, int]) -> None:
    """In the forked process: become the worker; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has
        control.close()
        for end in wakeup:
            os.close(end)
        if request.get("session"):
            os.setsid()
        raw = request.get("argv")
        argv = [str(fd) if a == "{fd}" else str(a) for a in raw] if isinstance(raw, list) else []
        setproctitle.setproctitle(" ".join([sys.executable, "-m", "sip.worker", *argv]))
        code = sip.worker.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - the worker's own last word, then out
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(control: socket.socket) -> int:
    """Fork a worker per request until the daemon closes ``control``."""
    wakeup = os.pipe()
    for end in wakeup:
        os.set_blocking(end, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.freeze()  # what is imported stays put: the children share those pages
    while True:
        try:
            ready, _, _ = select.select([control.fileno(), wakeup[0]], [], [])
        except InterruptedError:
            continue
        if wakeup[0] in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup[0], 512):
                    pass
        _reap(control)
        if control.fileno() not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_PACKET, 4)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not data:
            return 0  # the daemon is gone
        try:
            request = json.loads(data)
            if not isinstance(request, dict) or len(fds) != 1:
                raise ValueError("a request is an object with one descriptor")
            pid = os.fork()
        except (ValueError, OSError) as exc:
            for fd in fds:
                os.close(fd)
            _send(control, {"error": str(exc)})
            continue
        if pid == 0:
            _child(request, fds[0], control, wakeup)
        os.close(fds[0])
        _send(control, {"pid": pid})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-fd", type=int, required=True,
                        help="the SOCK_SEQPACKET socket the daemon sends requests on")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when this ends
    return serve(socket.socket(fileno=args.control_fd))


if __name__ == "__main__":
    sys.exit(main())
