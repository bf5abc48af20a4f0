"""Foreign TCP connections refused in the kernel: a classic BPF filter on the SIP listener.

The source filter (``sip.pjmodule``) judges SIP *messages*; a TCP connection costs a worker a
socket before any message arrives, and the wheel's select ioqueue holds 64 sockets, past which
pjlib aborts the process (``pj_ioqueue_register_sock2`` assertion). So the worker's listening TCP
socket gets a socket filter (``SO_ATTACH_FILTER``: no privilege needed on one's own socket) that
drops every segment — the SYN first — whose IPv4 source is outside the trusted networks: a
stranger's connection never completes and never reaches PJSIP. Accepted connections inherit the
filter. Such SYNs are dropped by the kernel, so ``dialer_sip_dropped_total`` does not count them.

A call's RTP and RTCP sockets get one too, once its media is up (``Worker.on_media_state``): only
the far end's SDP address and the trusted networks may send it audio. Without it pjmedia follows
the source of any ten packets in a row ("NAT latching", ``PJMEDIA_RTP_NAT_PROBATION_CNT``), so a
stranger could take over the call's incoming audio and key presses, and its outgoing audio.

The sockets are PJSIP's; pjsua2 does not give out its descriptor, so it is found among the
process's own descriptors by its local port.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Sequence

SO_ATTACH_FILTER = 26
SKF_NET_OFF = -0x100000  # offsets from the network header, whatever the layer 4 protocol
# Classic BPF opcodes (linux/filter.h)
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_ALU_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def program(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[Instruction]:
    """Accept IPv4 packets from ``networks`` (IPv6 ones are ignored: the socket is IPv4)."""
    nets = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    prog: list[Instruction] = []
    for i, net in enumerate(nets):
        left = len(nets) - i - 1  # networks after this one, 3 instructions each
        prog.append((BPF_LD_W_ABS, 0, 0, (SKF_NET_OFF + 12) & 0xFFFFFFFF))  # the source
        prog.append((BPF_ALU_AND_K, 0, 0, int(net.netmask)))
        # match: jump over the remaining checks and the drop to the accept
        prog.append((BPF_JEQ_K, 3 * left + 1, 0, int(net.network_address)))
    prog.append((BPF_RET_K, 0, 0, 0))  # drop
    prog.append((BPF_RET_K, 0, 0, 0xFFFFFFFF))  # accept the whole packet
    return prog


def run(prog: Sequence[Instruction], source: str) -> bool:
    """Interpret ``prog`` for a packet from ``source`` (what the kernel does; for tests)."""
    src = int(ipaddress.IPv4Address(source))
    a, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == BPF_LD_W_ABS:
            a = src
        elif code == BPF_ALU_AND_K:
            a &= k
        elif code == BPF_JEQ_K:
            pc += jt if a == k else jf
        elif code == BPF_RET_K:
            return k != 0
        pc += 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


def attach(fd: int, prog: Sequence[Instruction]) -> None:
    """Attach ``prog`` to the socket ``fd`` (the kernel copies it)."""
    insns = (_SockFilter * len(prog))(*(_SockFilter(*i) for i in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(insns))
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    finally:
        sock.close()


def tcp_listeners(port: int) -> list[int]:
    """This process's listening TCP sockets on ``port``."""
    return _sockets(port, socket.SOCK_STREAM, listening=True)


def udp_sockets(port: int) -> list[int]:
    """This process's UDP sockets bound to ``port`` (a call's RTP or RTCP socket)."""
    return _sockets(port, socket.SOCK_DGRAM, listening=False)


def _sockets(port: int, kind: int, listening: bool) -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type == kind and sock.family == socket.AF_INET \
                    and sock.getsockname()[1] == port \
                    and (not listening
                         or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                found.append(fd)
        except OSError:
            pass
        finally:
            sock.close()
    return found
