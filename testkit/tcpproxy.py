"""A TCP relay a test can cut: what a node reaches its database through, so that the test can
take the database away from that node alone (``cut``: every connection reset, new ones
refused) and give it back (``restore``, on the same port)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from testkit.net import free_port


class TcpProxy:
    """``127.0.0.1:port`` relayed to ``target``; one thread, select-driven."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.connections = 0  # accepted so far

    def start(self) -> TcpProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.setblocking(False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        assert self._listener is not None
        sel.register(self._listener, selectors.EVENT_READ)
        known: set[socket.socket] = set()
        while not self._stop.is_set():
            with self._lock:
                for s in [s for s in self._pairs if s not in known]:
                    sel.register(s, selectors.EVENT_READ)
                    known.add(s)
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                    continue
                with self._lock:
                    peer = self._pairs.get(sock)
                if peer is None:
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        peer.sendall(data)
                        continue
                except OSError:
                    pass
                self._close_pair(sock)
            with self._lock:
                for s in [s for s in known if s not in self._pairs]:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(s)
                    known.discard(s)
        sel.close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=3)
        except OSError:
            client.close()
            return
        client.setblocking(True)
        upstream.setblocking(True)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
            self.connections += 1

    def _close_pair(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.pop(sock, None)
            if peer is not None:
                self._pairs.pop(peer, None)
        for s in (sock, peer):
            if s is not None:
                _reset(s)

    def cut(self) -> None:
        """Reset every relayed connection and refuse new ones (the port is closed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._pairs = list(self._pairs), {}
        for s in socks:
            _reset(s)

    def restore(self) -> TcpProxy:
        return self.start()

    def stop(self) -> None:
        self.cut()


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a link that dies does to the far end's next write."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        s.close()
