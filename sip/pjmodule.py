"""A PJSIP module that sees every SIP message before the transaction layer: the source filter.

Why here (issue 9): PJSIP matches in-dialog requests by Call-ID and tags alone and offers every
INVITE to an account, so a forged BYE from anywhere ends a call and a flood of INVITEs takes call
slots and sockets before ``onIncomingCall`` runs. pjsua2 has no per-packet hook, but the wheel's
``_pjsua2`` library exports the C API, and PJSIP lets any module registered on the endpoint with a
priority number below the transaction layer's (16) look at each parsed message first and consume
it (``pjsip_endpt_register_module``, ``on_rx_request`` / ``on_rx_response``). That is the layer
that sees requests *and* responses, in and out of dialog, on UDP and TCP, with the source address
and the parsed headers; a kernel socket filter would see only addresses (not dialogs), and a proxy
in front would be one more component to run. The decisions themselves are pure (``sip.trust``);
this module only reads the C structures and carries the decision out.

The structures are PJSIP 2.15.1's on a 64-bit build (``PJSIP_MAX_PKT_LEN`` 4000). A wrong guess
would read garbage, so ``Module.self_check`` sends the endpoint one datagram and checks that the
source port and Call-ID read back are the ones sent; a worker that fails it does not start.
Outgoing messages are seen too (``on_tx_request``): the worker times REGISTER refreshes with it.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import time
import uuid
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_char,
    c_char_p,
    c_int,
    c_int32,
    c_long,
    c_size_t,
    c_ssize_t,
    c_uint32,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

logger = logging.getLogger(__name__)

PJSIP_MAX_PKT_LEN = 4000
PJ_INET6_ADDRSTRLEN = 46
PJSIP_MAX_MODULE = 32
PRIORITY = 12  # after the transport layer (8: message logging), before transactions (16)

PJSIP_REQUEST_MSG = 0
METHODS = {0: "INVITE", 1: "CANCEL", 2: "ACK", 3: "BYE", 4: "REGISTER", 5: "OPTIONS"}
PJSIP_H_CALL_ID = 7
PJSIP_H_CSEQ = 15
PJSIP_H_FROM = 19
PJSIP_H_TO = 38


class PjStr(Structure):
    _fields_ = [("ptr", c_void_p), ("slen", c_ssize_t)]

    def text(self) -> str:
        if not self.ptr or self.slen <= 0:
            return ""
        return ctypes.string_at(self.ptr, self.slen).decode("utf-8", "replace")


class _Method(Structure):
    _fields_ = [("id", c_int), ("name", PjStr)]

    def text(self) -> str:
        return METHODS.get(self.id) or self.name.text()


_HDR_MEMBERS: list[tuple[str, Any]] = [("prev", c_void_p), ("next", c_void_p), ("type", c_int),
                                       ("name", PjStr), ("sname", PjStr), ("vptr", c_void_p)]


class _CidHdr(Structure):
    _fields_ = [*_HDR_MEMBERS, ("id", PjStr)]


class _FromToHdr(Structure):
    _fields_ = [*_HDR_MEMBERS, ("uri", c_void_p), ("tag", PjStr)]


class _CSeqHdr(Structure):
    _fields_ = [*_HDR_MEMBERS, ("cseq", c_int32), ("method", _Method)]


class _ReqLine(Structure):
    _fields_ = [("method", _Method), ("uri", c_void_p)]


class _StatusLine(Structure):
    _fields_ = [("code", c_int), ("reason", PjStr)]


class _Line(Union):
    _fields_ = [("req", _ReqLine), ("status", _StatusLine)]


class _Msg(Structure):
    _fields_ = [("type", c_int), ("line", _Line)]


class _IoqueueOpKey(Structure):
    _fields_ = [("internal", c_void_p * 32), ("activesock_data", c_void_p),
                ("user_data", c_void_p)]


class _TpInfo(Structure):
    _fields_ = [("pool", c_void_p), ("transport", c_void_p), ("tp_data", c_void_p),
                ("op_key", _IoqueueOpKey), ("op_rdata", c_void_p)]


class _Sockaddr(Structure):
    _fields_ = [("raw", c_char * 28)]
    _pack_ = 4


class _PktInfo(Structure):
    _fields_ = [("sec", c_long), ("msec", c_long), ("packet", c_char * PJSIP_MAX_PKT_LEN),
                ("zero", c_uint32), ("len", c_ssize_t), ("src_addr", _Sockaddr),
                ("src_addr_len", c_int), ("src_name", c_char * PJ_INET6_ADDRSTRLEN),
                ("src_port", c_int)]


class _MsgInfo(Structure):
    _fields_ = [("msg_buf", c_void_p), ("len", c_int), ("msg", POINTER(_Msg)), ("info", c_char_p),
                ("cid", POINTER(_CidHdr)), ("from_", POINTER(_FromToHdr)),
                ("to", POINTER(_FromToHdr)), ("via", c_void_p), ("cseq", POINTER(_CSeqHdr))]


class _RxData(Structure):
    _fields_ = [("tp_info", _TpInfo), ("pkt_info", _PktInfo), ("msg_info", _MsgInfo)]


class _InvSession(Structure):
    _fields_ = [("obj_name", c_char * 32), ("pool", c_void_p), ("pool_prov", c_void_p),
                ("pool_active", c_void_p), ("state", c_int)]


PJSIP_INV_STATE_DISCONNECTED = 6


class _TxData(Structure):
    _fields_ = [("prev", c_void_p), ("next", c_void_p), ("pool", c_void_p),
                ("obj_name", c_char * 32), ("info", c_char_p), ("sec", c_long), ("msec", c_long),
                ("mgr", c_void_p), ("op_key", _IoqueueOpKey), ("op_tdata", c_void_p),
                ("op_token", c_void_p), ("op_callback", c_void_p), ("lock", c_void_p),
                ("msg", POINTER(_Msg))]


_STATE_CB = CFUNCTYPE(None, c_void_p, c_int, c_void_p)  # pjsip_tp_state_callback
PJSIP_TP_STATE_CONNECTED = 0
PJSIP_TP_STATE_DISCONNECTED = 1
_RX_CB = CFUNCTYPE(c_int, POINTER(_RxData))
_TX_CB = CFUNCTYPE(c_int, POINTER(_TxData))


class _Module(Structure):
    _fields_ = [("prev", c_void_p), ("next", c_void_p), ("name", PjStr), ("id", c_int),
                ("priority", c_int), ("load", c_void_p), ("start", c_void_p), ("stop", c_void_p),
                ("unload", c_void_p), ("on_rx_request", _RX_CB), ("on_rx_response", _RX_CB),
                ("on_tx_request", _TX_CB), ("on_tx_response", _TX_CB), ("on_tsx_state", c_void_p)]


@dataclass(frozen=True)
class Rx:
    """What the filter needs of one received message."""

    src: str  # source IP address
    port: int
    request: bool
    method: str  # the request's method, or the CSeq method of a response
    status: int  # a response's status code (0 for requests)
    call_id: str
    to_tag: str
    cseq: int


@dataclass(frozen=True)
class Tx:
    """What the worker needs of one outgoing request."""

    method: str
    call_id: str
    cseq: int
    to: str  # the To header as printed
    from_tag: str


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(pj._pjsua2.__file__)  # the already-loaded library: same handle
    lib.pjsua_get_pjsip_endpt.restype = c_void_p
    lib.pjsip_endpt_register_module.argtypes = [c_void_p, POINTER(_Module)]
    lib.pjsip_endpt_register_module.restype = c_int
    lib.pjsip_endpt_unregister_module.argtypes = [c_void_p, POINTER(_Module)]
    lib.pjsip_endpt_unregister_module.restype = c_int
    lib.pjsip_endpt_respond_stateless.argtypes = [c_void_p, POINTER(_RxData), c_int, c_void_p,
                                                  c_void_p, c_void_p]
    lib.pjsip_endpt_respond_stateless.restype = c_int
    lib.pjsip_msg_find_hdr.argtypes = [POINTER(_Msg), c_int, c_void_p]
    lib.pjsip_msg_find_hdr.restype = c_void_p
    lib.pjsip_hdr_print_on.argtypes = [c_void_p, c_char_p, c_size_t]
    lib.pjsip_hdr_print_on.restype = c_int
    lib.pjsip_endpt_create_request.argtypes = [c_void_p, c_void_p, POINTER(PjStr), POINTER(PjStr),
                                               POINTER(PjStr), POINTER(PjStr), POINTER(PjStr),
                                               c_int, c_void_p, POINTER(c_void_p)]
    lib.pjsip_endpt_create_request.restype = c_int
    lib.pjsip_endpt_send_request_stateless.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p]
    lib.pjsip_endpt_send_request_stateless.restype = c_int
    lib.pjsip_ua_find_dialog.argtypes = [POINTER(PjStr), POINTER(PjStr), POINTER(PjStr), c_int]
    lib.pjsip_ua_find_dialog.restype = c_void_p
    lib.pjsip_dlg_get_inv_session.argtypes = [c_void_p]
    lib.pjsip_dlg_get_inv_session.restype = c_void_p
    lib.pjsip_inv_terminate.argtypes = [c_void_p, c_int, c_int]
    lib.pjsip_inv_terminate.restype = c_int
    lib.pjsip_endpt_get_tpmgr.argtypes = [c_void_p]
    lib.pjsip_endpt_get_tpmgr.restype = c_void_p
    lib.pjsip_tpmgr_get_state_cb.argtypes = [c_void_p]
    lib.pjsip_tpmgr_get_state_cb.restype = c_void_p
    lib.pjsip_tpmgr_set_state_cb.argtypes = [c_void_p, c_void_p]
    lib.pjsip_tpmgr_set_state_cb.restype = c_int
    return lib


def _pjstr(value: bytes) -> tuple[PjStr, ctypes.Array[c_char]]:
    buf = ctypes.create_string_buffer(value, max(1, len(value)))
    return PjStr(ctypes.cast(buf, c_void_p), len(value)), buf


# What a handler decides for a received message: None lets PJSIP have it; an int answers it with
# that status statelessly (and consumes it); "drop" consumes it without a word.
Decision = int | str | None
RxHandler = Callable[[Rx], Decision]
TxHandler = Callable[[Tx], None]


class Module:
    """The registered module. ``on_rx`` decides; ``on_tx`` observes outgoing requests.

    Both run inside ``libHandleEvents`` on the worker's one thread. An exception in a handler
    drops the message (fail closed) and is logged.
    """

    def __init__(self, on_rx: RxHandler, on_tx: TxHandler | None = None) -> None:
        self._lib = _library()
        self._endpt = self._lib.pjsua_get_pjsip_endpt()
        if not self._endpt:
            raise RuntimeError("no PJSIP endpoint: create the library first")
        self.on_rx = on_rx
        self.on_tx = on_tx
        self._probe: str | None = None
        self._probe_seen: tuple[int, str] | None = None
        self._name = ctypes.create_string_buffer(b"mod-dialer-trust")
        self._callbacks = (_RX_CB(self._rx_request), _RX_CB(self._rx_response),
                           _TX_CB(self._tx_request))
        self._mod = _Module()
        self._mod.name = PjStr(ctypes.cast(self._name, c_void_p), len(self._name.value))
        self._mod.id = -1
        self._mod.priority = PRIORITY
        self._mod.on_rx_request, self._mod.on_rx_response, self._mod.on_tx_request = \
            self._callbacks
        status = self._lib.pjsip_endpt_register_module(self._endpt, ctypes.byref(self._mod))
        if status != 0:
            raise RuntimeError(f"pjsip_endpt_register_module failed ({status})")
        self.registered = True

    def unregister(self) -> None:
        if self.registered:
            self._lib.pjsip_endpt_unregister_module(self._endpt, ctypes.byref(self._mod))
            self.registered = False

    # ----- reading messages -----

    @staticmethod
    def _read(rdata: _RxData) -> Rx:
        info = rdata.msg_info
        msg = info.msg.contents
        request = msg.type == PJSIP_REQUEST_MSG
        cseq = info.cseq.contents if info.cseq else None
        method = msg.line.req.method.text() if request else (cseq.method.text() if cseq else "")
        return Rx(src=rdata.pkt_info.src_name.decode("ascii", "replace"),
                  port=int(rdata.pkt_info.src_port), request=request, method=method,
                  status=0 if request else int(msg.line.status.code),
                  call_id=info.cid.contents.id.text() if info.cid else "",
                  to_tag=info.to.contents.tag.text() if info.to else "",
                  cseq=int(cseq.cseq) if cseq else 0)

    def _rx(self, p: ctypes._Pointer[_RxData], request: bool) -> int:
        try:
            rdata = p.contents
            rx = self._read(rdata)
            if self._probe is not None and rx.call_id == self._probe:
                self._probe_seen = (rx.port, rx.call_id)
                return 1
            decision = self.on_rx(rx)
            if decision is None:
                return 0
            if isinstance(decision, int) and request and rx.method != "ACK":
                self._lib.pjsip_endpt_respond_stateless(self._endpt, p, decision, None, None,
                                                        None)
            return 1
        except Exception:  # noqa: BLE001 - never into C; fail closed
            logger.exception("SIP filter: dropping a message it could not read")
            return 1

    def _rx_request(self, p: ctypes._Pointer[_RxData]) -> int:
        return self._rx(p, True)

    def _rx_response(self, p: ctypes._Pointer[_RxData]) -> int:
        return self._rx(p, False)

    def _tx_request(self, p: ctypes._Pointer[_TxData]) -> int:
        if self.on_tx is None:
            return 0
        try:
            msg = p.contents.msg
            if not msg:
                return 0
            method = msg.contents.line.req.method.text()
            cid = self._lib.pjsip_msg_find_hdr(msg, PJSIP_H_CALL_ID, None)
            cseq = self._lib.pjsip_msg_find_hdr(msg, PJSIP_H_CSEQ, None)
            to = self._lib.pjsip_msg_find_hdr(msg, PJSIP_H_TO, None)
            frm = self._lib.pjsip_msg_find_hdr(msg, PJSIP_H_FROM, None)
            buf = ctypes.create_string_buffer(512)
            n = self._lib.pjsip_hdr_print_on(to, buf, 511) if to else 0
            self.on_tx(Tx(method=method,
                          call_id=_CidHdr.from_address(cid).id.text() if cid else "",
                          cseq=int(_CSeqHdr.from_address(cseq).cseq) if cseq else 0,
                          to=buf.raw[:max(0, n)].decode("utf-8", "replace"),
                          from_tag=_FromToHdr.from_address(frm).tag.text() if frm else ""))
        except Exception:  # noqa: BLE001 - observing must never stop a message
            logger.exception("SIP filter: cannot read an outgoing request")
        return 0  # PJ_SUCCESS: send it

    # ----- sending -----

    def send_options(self, target: str, from_uri: str, call_id: str, cseq: int) -> bool:
        """Send one OPTIONS statelessly (no retransmission: the caller times the answer)."""
        method = _Method.in_dll(self._lib, "pjsip_options_method")  # id and name
        strs = [_pjstr(v.encode()) for v in (target, f"<{from_uri}>", f"<{target}>", call_id)]
        tdata = c_void_p()
        status = self._lib.pjsip_endpt_create_request(
            self._endpt, ctypes.byref(method), ctypes.byref(strs[0][0]),
            ctypes.byref(strs[1][0]), ctypes.byref(strs[2][0]), None, ctypes.byref(strs[3][0]),
            cseq, None, ctypes.byref(tdata))
        if status != 0:
            logger.warning("OPTIONS to %s: cannot create the request (%d)", target, status)
            return False
        status = self._lib.pjsip_endpt_send_request_stateless(self._endpt, tdata, None, None)
        if status != 0:
            logger.debug("OPTIONS to %s: not sent (%d)", target, status)
            return False
        return True

    def _inv(self, call_id: str, local_tag: str, remote_tag: str) -> int | None:
        strs = [_pjstr(v.encode()) for v in (call_id, local_tag, remote_tag)]
        dlg = self._lib.pjsip_ua_find_dialog(*(ctypes.byref(x[0]) for x in strs), 0)
        if not dlg:
            return None
        inv: int | None = self._lib.pjsip_dlg_get_inv_session(dlg)
        return inv

    def session_alive(self, call_id: str, local_tag: str, remote_tag: str) -> bool:
        """Whether the call's INVITE session is not over yet (and so holds a pjsua call slot).

        The dialog outlives the session (its INVITE transaction lingers for Timer D): what
        counts is the session's state, which frees pjsua's slot when it turns DISCONNECTED."""
        inv = self._inv(call_id, local_tag, remote_tag)
        return inv is not None and \
            _InvSession.from_address(inv).state != PJSIP_INV_STATE_DISCONNECTED

    def terminate(self, call_id: str, local_tag: str, remote_tag: str, code: int) -> bool:
        """End an outgoing call's INVITE session now, whatever its state (``pjsip_inv_terminate``).

        For a call whose INVITE, CANCEL or BYE goes unanswered: pjsua would hold its call slot
        until the transaction times out (32 s). pjsua then reports DISCONNECTED with ``code``
        (unless it already did: a hang-up is reported at once, the slot freed only later)."""
        inv = self._inv(call_id, local_tag, remote_tag)
        if not inv or _InvSession.from_address(inv).state == PJSIP_INV_STATE_DISCONNECTED:
            return False
        return bool(self._lib.pjsip_inv_terminate(inv, code, 1) == 0)

    # ----- connections -----

    def watch_connections(self, on_change: Callable[[bool], None]) -> None:
        """Call ``on_change(True)`` for each TCP connection made, ``(False)`` for each lost.

        pjsua has the transport manager's one state callback (account and transport
        bookkeeping): ours is put in front of it and passes every event on."""
        tpmgr = self._lib.pjsip_endpt_get_tpmgr(self._endpt)
        old = self._lib.pjsip_tpmgr_get_state_cb(tpmgr)
        chained = _STATE_CB(old) if old else None

        def state(tp: int, st: int, info: int) -> None:
            try:
                if st in (PJSIP_TP_STATE_CONNECTED, PJSIP_TP_STATE_DISCONNECTED):
                    on_change(st == PJSIP_TP_STATE_CONNECTED)
            except Exception:  # noqa: BLE001 - never into C
                logger.exception("SIP filter: connection bookkeeping failed")
            if chained is not None:
                chained(tp, st, info)

        self._state_cb = _STATE_CB(state)  # kept alive with the module
        self._chained = chained
        self._lib.pjsip_tpmgr_set_state_cb(tpmgr, ctypes.cast(self._state_cb, c_void_p))

    # ----- self check -----

    def self_check(self, ep: pj.Endpoint, host: str, port: int, timeout: float = 2.0) -> None:
        """Send ourselves one datagram and read it back; raise if the layout read is wrong."""
        self._probe = f"selfcheck-{uuid.uuid4().hex}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
            sport = sock.getsockname()[1]
            msg = (f"OPTIONS sip:check@{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {host}:{sport};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                   f"From: <sip:check@{host}>;tag=1\r\nTo: <sip:check@{host}>\r\n"
                   f"Call-ID: {self._probe}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
            sock.sendto(msg.encode(), (host, port))
            deadline = time.monotonic() + timeout
            while self._probe_seen is None and time.monotonic() < deadline:
                ep.libHandleEvents(20)
        finally:
            sock.close()
            probe, self._probe = self._probe, None
        if self._probe_seen != (sport, probe):
            raise RuntimeError(f"SIP filter self-check failed: sent from port {sport}, "
                               f"read {self._probe_seen!r}")
