"""Capacity bench: the real ``dialer serve`` against SIPp, and SIPp placing the same calls.

One command (from the repository root, as root: SIPp replays RTP captures through a raw socket)::

    python bench/capacity.py --calls 500 --recipients 2000 --message 20

1. **Dialer run.** A SIPp answerer (``tests/sipp/answer_confirm.xml``: 180, 200 OK, RFC 2833 key 1
   one second after the ACK and key 9 during the "press 9" prompt, both from captures on payload
   type 120, then waits for the BYE) serves both trunks. The real daemon (``python -m cli.app
   serve``) runs with a global limit of ``--calls`` and a pool of ``ceil(calls / 4)`` workers;
   once the pool is warm, a campaign of ``--recipients`` recipients (one attempt each) starts.
2. **SIPp caller run.** A fresh answerer of the same scenario, and SIPp as the caller
   (``bench/sipp/uac_pcap_hold.xml``: SIPp's ``uac_pcap`` with a PCMU capture as long as the
   dialer's call) placing the same number of calls, ``--calls`` at a time, ``--rate`` a second.

Every half second the bench samples the calls established (from the answerer's log, and for the
dialer from the database too), and the CPU time and RSS of every caller process (daemon and
workers, or the SIPp caller) from ``/proc``. It prints one table and writes the figures as JSON
(``--json``).

Definitions (the same for both callers):

* *CPU per call*: CPU seconds of the caller's processes divided by the call-seconds they held,
  in % of one core. "plateau" counts only the intervals where at least 90% of the peak was up;
  "run" counts from the first call to the last end (the dialer's idle workers included).
* *RSS per call*: the highest sum of the caller's processes' RSS divided by the peak number of
  concurrent calls (RSS counts shared pages once per process: an upper bound). PSS is sampled
  every few seconds as the fairer figure.
* *Setup rate*: answered calls a second while ramping up, from the first INVITE to the moment
  the peak was first reached (the answerer's log); also the best 5-second window.
* *Confirmations sent* are the keys the answerer logged as played; *recorded* are the keys the
  database holds for the same calls, and the answer/listen confirmations it stamped.
* *Audio* (``--audio``, the default when tcpdump is installed): ``tcpdump`` captures, with a
  kernel filter, the RTP headers the caller sends to the answerer's media port; after the run
  ``testkit.rtpquality`` splits them by stream (source, SSRC) and reports over the streams the
  p50/p99/max of the RFC 3550 interarrival jitter at the end of the stream, the worst gap
  between two packets in a row and the loss (from the sequence numbers), the streams that
  carried less audio than the message, and the packets the capture itself dropped (when it did,
  the loss figures are not to be trusted).

Every loop here is bounded in count and time; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dialer.pressure import CpuPressure  # noqa: E402
from testkit import DTMF_PAYLOAD_TYPE, Sipp, make_dtmf_captures  # noqa: E402
from testkit.harness import Dialer  # noqa: E402
from testkit.net import free_port  # noqa: E402
from testkit.rtpquality import Capture, audio_figures, percentiles, unsound  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ANSWER_SCENARIO = ROOT / "tests" / "sipp" / "answer_confirm.xml"
CALLER_SCENARIO = BENCH_DIR / "sipp" / "uac_pcap_hold.xml"
CALLS_PER_WORKER = 4  # PJSUA_MAX_CALLS of the wheel
KEY1_MS = 1000  # ACK -> key 1, inside the 4 s "press 1" prompt
KEY9_AFTER_MESSAGE_MS = 1500  # end of the message -> key 9, inside the 3.4 s "press 9" prompt
SAMPLE_S = 0.5
PSS_EVERY_S = 5.0
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# /proc


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def proc_cpu_rss(pid: int) -> tuple[float, int] | None:
    """(CPU seconds user+system, RSS bytes) of a live process, None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, rss 24
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def proc_pss(pid: int) -> int:
    text = _read(f"/proc/{pid}/smaps_rollup") or ""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the workers are the fork server's children, since 46300d2)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # it exited (a worker retiring): no descendants to count
        return out
    for tid in tids:
        text = _read(f"/proc/{pid}/task/{tid}/children") or ""
        for child in (int(p) for p in text.split()):
            out += [child, *children(child)]
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    parts = [int(x) for x in (_read("/proc/stat") or "cpu 0 0 0 0").splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


def machine_info() -> dict[str, Any]:
    model = ""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(), "model": model, "memory_gb": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "load": os.getloadavg()}


@dataclass
class Group:
    """A set of processes measured together (CPU seconds per pid, so exits are not lost)."""

    cpu: dict[int, float] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)

    def sample(self, pids: Iterable[int]) -> None:
        self.rss = {}
        for pid in pids:
            got = proc_cpu_rss(pid)
            if got is not None:
                self.cpu[pid] = got[0]
                self.rss[pid] = got[1]

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())

    @property
    def rss_total(self) -> int:
        return sum(self.rss.values())


# --------------------------------------------------------------------------------------------
# the answerer's log


class SippLog:
    """Incremental reader of the ``PEER`` lines the answering scenario logs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""
        self.invites: dict[str, int] = {}  # call id -> clock ms
        self.ends: dict[str, int] = {}
        self.keys: list[tuple[str, str]] = []
        self.open: set[str] = set()
        self.peak = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read(16 << 20)
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for raw in lines:
            parts = raw.decode(errors="replace").split()
            if len(parts) < 3 or parts[0] != "PEER":
                continue
            kind, cid, clock = parts[1], parts[2], parts[-1]
            ms = int(clock) if clock.isdigit() else -1
            if kind == "INVITE":
                self.invites.setdefault(cid, ms)
                if cid not in self.ends:
                    self.open.add(cid)
                    self.peak = max(self.peak, len(self.open))
            elif kind == "KEY" and len(parts) >= 5:
                self.keys.append((cid, parts[3]))
            elif kind == "END":
                self.ends[cid] = ms
                self.open.discard(cid)

    def setup_rates(self, peak: int) -> tuple[float, float]:
        """(ramp rate to the peak, best 5-second window) in INVITEs a second.

        ``peak`` should not count calls a dead worker left open at the answerer."""
        times = sorted(t for t in self.invites.values() if t >= 0)
        if len(times) < 2:
            return 0.0, 0.0
        k = max(2, min(peak, len(times)))
        ramp = (k - 1) / max(0.001, (times[k - 1] - times[0]) / 1000)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - 5000:
                j += 1
            best = max(best, i - j + 1)
        return ramp, best / 5.0

    def call_seconds(self) -> float:
        last = max(list(self.ends.values()) + list(self.invites.values()) + [0])
        return sum((self.ends.get(c, last) - t) / 1000 for c, t in self.invites.items())


# --------------------------------------------------------------------------------------------
# audio for the SIPp caller


def pcmu_capture(path: Path, seconds: float) -> Path:
    """A PCMU RTP capture (20 ms packets of μ-law silence) for SIPp's ``play_pcap_audio``."""
    import dpkt

    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for i in range(int(seconds * 50)):
            rtp = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, 0x5EED) + b"\xff" * 160
            udp = dpkt.udp.UDP(sport=6000, dport=6002, data=rtp)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=17, data=udp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6,
                                         type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            w.writepkt(bytes(eth), ts=i * 0.02)
    return path


# --------------------------------------------------------------------------------------------
# the runs


@dataclass
class Sample:
    t: float
    established: int  # answerer's view
    db_answered: int | None
    db_open: int | None
    cpu: float  # caller's CPU seconds so far
    rss: int
    answerer_cpu: float
    machine: tuple[float, float]
    pressure: float | None = None  # the machine's CPU pressure (PSI some, share of time)


@dataclass
class Run:
    """What one caller did, as sampled."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    pss_peak: int = 0
    rss_idle: int = 0
    processes_peak: int = 0
    log: SippLog | None = None
    rss_peak_split: tuple[int, int, int, float] = (0, 0, 0, 0.0)  # total, first pid, max, mean
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self, limit: int) -> dict[str, Any]:
        assert self.log is not None
        log = self.log
        peak = log.peak
        ramp, best5 = log.setup_rates(min(peak, limit))
        s = self.samples
        plateau_cpu = plateau_cs = run_cpu = run_cs = 0.0
        for a, b in zip(s, s[1:], strict=False):
            dt = b.t - a.t
            held = (a.established + b.established) / 2 * dt
            run_cpu += b.cpu - a.cpu
            run_cs += held
            if min(a.established, b.established) >= 0.9 * peak and peak > 0:
                plateau_cpu += b.cpu - a.cpu
                plateau_cs += held
        busy = [((b.machine[0] - a.machine[0]) / max(1.0, b.machine[1] - a.machine[1]))
                * (os.cpu_count() or 1) * 100 for a, b in zip(s, s[1:], strict=False)]
        caller_pct = [(b.cpu - a.cpu) / max(1e-6, b.t - a.t) * 100
                      for a, b in zip(s, s[1:], strict=False)]
        answerer_pct = [(b.answerer_cpu - a.answerer_cpu) / max(1e-6, b.t - a.t) * 100
                        for a, b in zip(s, s[1:], strict=False)]
        rss_peak = max((x.rss for x in s), default=0)
        psi = [x.pressure for x in s if x.pressure is not None and peak
               and x.established >= 0.9 * peak]
        return {
            "cpu_pressure_plateau": [round(v, 3) for v in percentiles(psi)] if psi else None,

            "peak_established": peak,
            "peak_db_answered": max((x.db_answered or 0 for x in s), default=None),
            "peak_db_open": max((x.db_open or 0 for x in s), default=None),
            "limit": limit,
            "invites": len(log.invites),
            "ended": len(log.ends),
            "setup_rate_ramp": round(ramp, 1),
            "setup_rate_best_5s": round(best5, 1),
            "keys_sent": len(log.keys),
            "call_seconds": round(log.call_seconds(), 1),
            "cpu_per_call_plateau_pct": round(100 * plateau_cpu / plateau_cs, 3)
            if plateau_cs else None,
            "cpu_per_call_run_pct": round(100 * run_cpu / run_cs, 3) if run_cs else None,
            "cpu_seconds": round(run_cpu, 1),
            "caller_cpu_peak_pct": round(max(caller_pct, default=0), 1),
            "answerer_cpu_peak_pct": round(max(answerer_pct, default=0), 1),
            "machine_busy_mean_pct": round(sum(busy) / len(busy), 1) if busy else None,
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "rss_idle_mb": round(self.rss_idle / 2**20, 1),
            "rss_per_call_mb": round(rss_peak / 2**20 / peak, 2) if peak else None,
            "pss_peak_mb": round(self.pss_peak / 2**20, 1),
            "pss_per_call_mb": round(self.pss_peak / 2**20 / peak, 2) if peak else None,
            "processes": self.processes_peak,
            "rss_first_process_mb": round(self.rss_peak_split[1] / 2**20, 1),
            "rss_other_max_mb": round(self.rss_peak_split[2] / 2**20, 1),
            "rss_other_mean_mb": round(self.rss_peak_split[3] / 2**20, 1),
            **self.extra,
        }


def _answerer(workdir: Path, captures: dict[str, Path], message: float) -> Sipp:
    return Sipp(ANSWER_SCENARIO, workdir, dtmf=captures, trace_msg=False,
                keys={"key1_ms": KEY1_MS,
                      "key9_ms": int(message * 1000) + KEY9_AFTER_MESSAGE_MS},
                # The answerer is the instrument: under overload it must not stop the run (its
                # watchdog ends SIPp after 120 late loops); its trips are reported instead.
                extra_args=["-max_socket", "60000", "-watchdog_minor_maxtriggers", "1000000",
                            "-watchdog_major_maxtriggers", "1000000"])


def _watchdog_trips(answerer: Sipp) -> int:
    return len(re.findall(r"watchdog timer \S+ has been tripped", answerer.errors()))


def _db_counts(db: Path, campaign: int | None) -> tuple[int | None, int | None, str | None]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            answered, opened = con.execute(
                "SELECT SUM(answered_at IS NOT NULL), COUNT(*) FROM attempts "
                "WHERE ended_at IS NULL").fetchone()
            state = None
            if campaign is not None:
                row = con.execute("SELECT state FROM campaigns WHERE id = ?",
                                  (campaign,)).fetchone()
                state = row[0] if row else None
            return int(answered or 0), int(opened or 0), state
        finally:
            con.close()
    except sqlite3.Error:
        return None, None, None


def _audio_capture(args: argparse.Namespace, answerer: Sipp, path: Path) -> Capture | None:
    """The RTP the caller sends to the answerer, captured at the answerer (``--audio``)."""
    if not args.audio:
        return None
    cap = Capture(path, f"udp and dst port {answerer.media_port}")
    cap.start()
    return cap


def _audio(cap: Capture | None, run: Run, message: float) -> None:
    if cap is None:
        return
    cap.stop()
    run.extra["audio"] = {**audio_figures(cap.path, message), "capture_dropped": cap.dropped}
    cap.path.unlink()  # hundreds of MB at 500 calls; the figures are what is kept


def run_dialer(args: argparse.Namespace, workdir: Path, captures: dict[str, Path]) -> Run:
    run = Run("dialer")
    workers = args.workers or math.ceil(args.calls / CALLS_PER_WORKER)
    answerer = _answerer(workdir / "sipp-dialer", captures, args.message)
    answerer.start()
    cap = _audio_capture(args, answerer, workdir / "dialer-rtp.pcap")
    run.log = SippLog(answerer.log_file)
    metrics_port = free_port()
    d = Dialer(workdir / "dialer", internal={"uri": answerer.uri},
               external={"uri": answerer.uri}, workers=workers, metrics_port=metrics_port,
               sip={"overload_pressure": args.overload_pressure})
    # RTP below the kernel's ephemeral ports (32768-60999), where SIP transports and SIPp bind.
    d.config.write_text(re.sub(r"(?m)^rtp_port = \d+$", f"rtp_port = {args.rtp_port}",
                               d.config.read_text()))
    try:
        numbers = [str(100000 + i) for i in range(args.recipients)]
        d.template("bench", numbers, message=args.message, attempts=1, ring_timeout=30)
        d.store.set_settings(actor="bench", now=time.time(), max_calls=args.calls)
        started = time.monotonic()
        d.serve()
        pool = min(workers, math.ceil(args.calls / CALLS_PER_WORKER))
        d.wait(lambda: d.log_text().count(" ready (pid ") >= pool or None,
               30 + pool * 0.5, f"{pool} workers ready")
        warm = time.monotonic() - started
        assert d.daemon is not None
        daemon = d.daemon.pid
        caller = Group()
        caller.sample([daemon, *children(daemon)])
        run.rss_idle = caller.rss_total
        run.extra.update({"workers": pool, "pool_warm_s": round(warm, 1),
                          "pool_start_cpu_s": round(caller.cpu_total, 1)})
        cid = d.start_campaign("bench")
        db = Path(d.db_url.removeprefix("sqlite:///"))
        deadline = time.monotonic() + args.timeout
        _sample_loop(run, deadline, answerer,
                     pids=lambda: [daemon, *children(daemon)],
                     done=lambda: _db_counts(db, cid)[2] in ("completed", "incomplete"),
                     db=db, campaign=cid, caller=caller, gate=Gate(metrics_port))
        stopped = time.monotonic()
        d.stop(timeout=60)
        run.extra["stop_s"] = round(time.monotonic() - stopped, 1)
        run.extra.update(_db_outcome(db, cid, run.log))
        run.extra["overload_signals"] = d.log_text().count("overloaded: no new calls")
        held = [int(x) for x in re.findall(r"(?:carries at most|hold rises to) (\d+) calls",
                                           d.log_text())]
        run.extra["hold"] = {"steps": len(held), "lowest": min(held, default=None),
                             "highest": max(held, default=None),
                             "lifted": d.log_text().count("the overload hold is lifted")}
        run.extra["daemon_log_errors"] = sum(
            1 for line in d.log_text().splitlines() if " ERROR " in line or "Traceback" in line)
    finally:
        if d.daemon is not None and d.daemon.poll() is None:
            d.daemon.kill()
            d.daemon.wait()
        answerer.stop()
        _audio(cap, run, args.message)
    run.extra["answerer_errors"] = len(answerer.errors().splitlines())
    run.extra["answerer_watchdog_trips"] = _watchdog_trips(answerer)
    return run


def run_sipp_caller(args: argparse.Namespace, workdir: Path, captures: dict[str, Path]) -> Run:
    from media.audio import wav_seconds
    from media.prompts import prompt_path

    run = Run("sipp")
    answerer = _answerer(workdir / "sipp-caller", captures, args.message)
    answerer.start()
    cap = _audio_capture(args, answerer, workdir / "sipp-rtp.pcap")
    run.log = SippLog(answerer.log_file)
    goodbye = wav_seconds(prompt_path("en", "goodbye"))
    hold_ms = KEY1_MS + int(args.message * 1000) + KEY9_AFTER_MESSAGE_MS + int(goodbye * 1000)
    audio = pcmu_capture(workdir / "call_audio_pcmu.pcap", hold_ms / 1000)
    uac = Sipp(CALLER_SCENARIO, workdir / "sipp-caller", remote=answerer.address,
               service="100000", calls=args.recipients, limit=args.calls, rate=args.rate,
               keys={"hold_ms": hold_ms, "audio": str(audio)}, trace_msg=False,
               extra_args=["-max_socket", "60000"])
    try:
        uac.start()
        assert uac.process is not None
        pid = uac.process.pid
        deadline = time.monotonic() + args.timeout
        _sample_loop(run, deadline, answerer, pids=lambda: [pid], done=lambda: not uac.running(),
                     db=None, campaign=None, caller=Group())
        run.extra["uac_exit"] = uac.stop()
        run.extra["hold_ms"] = hold_ms
    finally:
        uac.stop()
        answerer.stop()
        _audio(cap, run, args.message)
    run.extra["answerer_errors"] = len(answerer.errors().splitlines())
    run.extra["answerer_watchdog_trips"] = _watchdog_trips(answerer)
    return run


class Gate:
    """The overload gate as the daemon's metrics show it, read every ``GATE_EVERY_S``: the worst
    CPU wait of a worker thread, the worst loop lag, and the workers running late (peaks)."""

    GAUGES = {"dialer_worker_cpu_wait_ratio": "wait", "dialer_worker_loop_lag_seconds": "lag",
              "dialer_workers_late": "late"}

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.peak = {"wait": 0.0, "lag": 0.0, "late": 0.0}
        self.at = 0.0

    def read(self, now: float) -> None:
        if now - self.at < GATE_EVERY_S:
            return
        self.at = now
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=2) as r:  # noqa: S310 - loopback
                text = r.read().decode()
        except OSError:
            return
        for family in text_string_to_metric_families(text):
            key = self.GAUGES.get(family.name)
            if key is None:
                continue
            for sample in family.samples:
                self.peak[key] = max(self.peak[key], float(sample.value))


GATE_EVERY_S = 2.0


def _sample_loop(run: Run, deadline: float, answerer: Sipp, *, pids: Any, done: Any,
                 db: Path | None, campaign: int | None, caller: Group,
                 gate: Gate | None = None) -> None:
    assert run.log is not None and answerer.process is not None
    ans = Group()
    psi = CpuPressure()
    last_pss = 0.0
    finished_at: float | None = None
    t0 = time.monotonic()
    for _ in range(int((deadline - t0) / SAMPLE_S) + 2):
        now = time.monotonic()
        run.log.poll()
        current = pids()
        caller.sample(current)
        ans.sample([answerer.process.pid])
        run.processes_peak = max(run.processes_peak, len(caller.rss))
        answered, opened = (None, None)
        if db is not None:
            answered, opened, _ = _db_counts(db, campaign)
        run.samples.append(Sample(now - t0, len(run.log.open), answered, opened,
                                  caller.cpu_total, caller.rss_total, ans.cpu_total,
                                  machine_busy(), psi.sample()))
        if caller.rss_total >= run.rss_peak_split[0] and current:
            first = caller.rss.get(current[0], 0)
            rest = [v for k, v in caller.rss.items() if k != current[0]]
            run.rss_peak_split = (caller.rss_total, first, max(rest, default=0),
                                  sum(rest) / max(1, len(rest)))
        if now - last_pss >= PSS_EVERY_S and run.log.open:
            last_pss = now
            run.pss_peak = max(run.pss_peak, sum(proc_pss(p) for p in current))
        if gate is not None and run.log.open:
            gate.read(now)
        if not answerer.running():
            raise RuntimeError(f"the SIPp answerer died: {answerer.diagnostics()}")
        if finished_at is None and len(run.log.invites) and done():
            finished_at = now
        # Calls a dead worker left open are never ended at the answerer: a short grace, then stop.
        if finished_at is not None and (not run.log.open or now - finished_at > 10):
            run.extra["open_at_answerer_after_end"] = len(run.log.open)
            break
        if now >= deadline:
            run.extra["timed_out"] = True
            break
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - now)))
    run.log.poll()
    if gate is not None:
        run.extra["gate"] = {k: round(v, 3) for k, v in gate.peak.items()}


def _db_outcome(db: Path, campaign: int, log: SippLog) -> dict[str, Any]:
    """Compare what the database recorded with what the answerer sent and saw."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT id, outcome, keys, answered_at IS NOT NULL, answer_confirmed_at IS NOT NULL, "
            "listen_confirmed_at IS NOT NULL, ended_at IS NOT NULL FROM attempts "
            "WHERE campaign_id = ?", (campaign,)).fetchall()
        recipients = dict(con.execute(
            "SELECT state, COUNT(*) FROM recipients WHERE campaign_id = ? GROUP BY state",
            (campaign,)).fetchall())
    finally:
        con.close()
    sent: dict[str, str] = {}
    for cid, key in log.keys:
        sent[cid] = sent.get(cid, "") + key
    recorded = {r[0]: r[2] or "" for r in rows}
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[str(r[1])] = outcomes.get(str(r[1]), 0) + 1
    lost = sorted(c for c, keys in sent.items() if recorded.get(c, "") != keys)
    unknown = sorted(set(log.invites) - set(recorded))
    return {
        "attempts": len(rows),
        "attempts_open": sum(1 for r in rows if not r[6]),
        "outcomes": outcomes,
        "recipients": recipients,
        "keys_recorded": sum(len(recorded.get(c, "")) for c in sent),
        "answer_confirmations": sum(1 for r in rows if r[4]),
        "listen_confirmations": sum(1 for r in rows if r[5]),
        "keys1_sent": sum(1 for _, k in log.keys if k == "1"),
        "keys9_sent": sum(1 for _, k in log.keys if k == "9"),
        "calls_with_lost_keys": len(lost),
        "lost_key_examples": lost[:5],
        "invites_without_attempt": len(unknown),
        "attempts_without_invite": len(set(recorded) - set(log.invites)),
    }


# --------------------------------------------------------------------------------------------
# report


def _audio_rows(d: dict[str, Any] | None, s: dict[str, Any] | None
                ) -> list[tuple[str, Any, Any, str]]:
    """The audio-quality rows (``--audio``): over the streams the answerer received."""
    if d is None and s is None:
        return []

    def cell(f: dict[str, Any] | None, key: str) -> str | None:
        if f is None:
            return None
        value = f[key]
        return "/".join(f"{x:g}" for x in value) if isinstance(value, list) else str(value)

    def counts(f: dict[str, Any] | None) -> str | None:
        return None if f is None else f"{f['streams']} / {f['packets']} / {f['lost']}"

    def short(f: dict[str, Any] | None) -> str | None:
        return None if f is None else f"{f['short']} / {f['capture_dropped']}"

    def verdict(f: dict[str, Any] | None) -> str | None:
        return None if f is None else "; ".join(unsound(f)) or "yes"

    return [
        ("audio streams received / packets / lost", counts(d), counts(s), ""),
        ("RTP jitter, RFC 3550, p50/p99/max (ms)", cell(d, "jitter_ms"), cell(s, "jitter_ms"), ""),
        ("worst gap between packets p50/p99/max (ms)", cell(d, "worst_gap_ms"),
         cell(s, "worst_gap_ms"), ""),
        ("loss per stream p50/p99/max (%)", cell(d, "loss_pct"), cell(s, "loss_pct"), ""),
        ("streams shorter than the message / capture drops", short(d), short(s), ""),
        ("gaps of a packet or more (all streams)", cell(d, "gaps"), cell(s, "gaps"), ""),
        ("where a stream's worst gap came, s into it, p50/p99/max", cell(d, "gap_at_s"),
         cell(s, "gap_at_s"), ""),
        ("worst gaps per 10 s of the run", cell(d, "gap_timeline"), cell(s, "gap_timeline"), ""),
        ("sound (p99 jitter <= 20 ms, worst gap <= 60 ms, loss <= 0.1%, none short)",
         verdict(d), verdict(s), ""),
    ]


def table(d: dict[str, Any], s: dict[str, Any] | None) -> str:
    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}x" if isinstance(a, (int, float)) and b else "-"

    def v(x: Any) -> str:
        return "-" if x is None else str(x)

    sv = s or {}
    rows = [
        ("peak concurrent calls (answerer's view)", d["peak_established"],
         sv.get("peak_established"), ""),
        ("peak answered calls open (database view)", d["peak_db_answered"], None, ""),
        ("global limit / peak open attempts (database)", f"{d['limit']} / {d['peak_db_open']}",
         sv.get("limit"), ""),
        ("calls placed (INVITEs) / ended", f"{d['invites']} / {d['ended']}",
         f"{sv.get('invites')} / {sv.get('ended')}" if s else None, ""),
        ("setup rate while ramping up (calls/s)", d["setup_rate_ramp"],
         sv.get("setup_rate_ramp"), ""),
        ("setup rate, best 5 s (calls/s)", d["setup_rate_best_5s"], sv.get("setup_rate_best_5s"),
         ""),
        ("failures (attempts not contacted)",
         d["attempts"] - d["outcomes"].get("contacted", 0), None, ""),
        ("confirmations sent: key 1 / key 9 (answerer)", f"{d['keys1_sent']} / {d['keys9_sent']}",
         None, ""),
        ("confirmations recorded: answer / listen (DB)",
         f"{d['answer_confirmations']} / {d['listen_confirmations']}", None, ""),
        ("keys sent / recorded, calls with a key lost",
         f"{d['keys_sent']} / {d['keys_recorded']}, {d['calls_with_lost_keys']}", None, ""),
        ("CPU per concurrent call, plateau (% of a core)", d["cpu_per_call_plateau_pct"],
         sv.get("cpu_per_call_plateau_pct"),
         ratio(d["cpu_per_call_plateau_pct"], sv.get("cpu_per_call_plateau_pct"))),
        ("CPU per concurrent call, whole run (% of a core)", d["cpu_per_call_run_pct"],
         sv.get("cpu_per_call_run_pct"),
         ratio(d["cpu_per_call_run_pct"], sv.get("cpu_per_call_run_pct"))),
        ("caller CPU, peak (% of a core)", d["caller_cpu_peak_pct"], sv.get("caller_cpu_peak_pct"),
         ""),
        ("answerer (SIPp UAS) CPU, peak (% of a core)", d["answerer_cpu_peak_pct"],
         sv.get("answerer_cpu_peak_pct"), ""),
        ("machine busy, mean over the run (% of one core)", d["machine_busy_mean_pct"],
         sv.get("machine_busy_mean_pct"), ""),
        ("caller processes", d["processes"], sv.get("processes"), ""),
        ("gate: worst CPU wait of a worker thread (share of a second) / loop lag (ms) / "
         "workers late, peaks",
         (f"{d['gate']['wait']:.3f} / {1000 * d['gate']['lag']:.0f} / {d['gate']['late']:.0f}"
          if d.get("gate") else None), None, ""),
        ("machine CPU pressure on the plateau (PSI some: share of time) p50/p99/max",
         "/".join(f"{x:g}" for x in d["cpu_pressure_plateau"])
         if d.get("cpu_pressure_plateau") else None,
         "/".join(f"{x:g}" for x in sv["cpu_pressure_plateau"])
         if s and sv.get("cpu_pressure_plateau") else None, ""),
        ("overload hold: steps / lowest / highest ceiling / times lifted",
         (f"{d['hold']['steps']} / {d['hold']['lowest']} / {d['hold']['highest']} / "
          f"{d['hold']['lifted']}") if d.get("hold") else None, None, ""),
        ("workers reporting overload (times) / answerer watchdog trips",
         f"{d.get('overload_signals')} / {d.get('answerer_watchdog_trips')}",
         f"- / {sv.get('answerer_watchdog_trips')}" if s else None, ""),
        ("RSS at peak, all caller processes (MB)", d["rss_peak_mb"], sv.get("rss_peak_mb"), ""),
        ("RSS per concurrent call (MB)", d["rss_per_call_mb"], sv.get("rss_per_call_mb"),
         ratio(d["rss_per_call_mb"], sv.get("rss_per_call_mb"))),
        ("PSS per concurrent call (MB)", d["pss_per_call_mb"], sv.get("pss_per_call_mb"),
         ratio(d["pss_per_call_mb"], sv.get("pss_per_call_mb"))),
        *_audio_rows(d.get("audio"), sv.get("audio")),
    ]
    w = max(len(r[0]) for r in rows)
    out = [f"| {'':{w}} | {'dialer':>14} | {'SIPp caller':>14} | {'ratio':>7} |",
           f"|{'-' * (w + 2)}|{'-' * 16}|{'-' * 16}|{'-' * 9}|"]
    for name, a, b, r in rows:
        out.append(f"| {name:{w}} | {v(a):>14} | {v(b):>14} | {r:>7} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500, help="global limit = concurrent calls")
    p.add_argument("--recipients", type=int, default=2000)
    p.add_argument("--message", type=float, default=20.0, help="message length (s)")
    p.add_argument("--rate", type=float, default=50.0, help="SIPp caller's call rate (calls/s)")
    p.add_argument("--workers", type=int, default=0,
                   help="[sip] workers (default: calls / 4, what the limit needs)")
    p.add_argument("--rtp-port", type=int, default=30000,
                   help="[sip] rtp_port: first RTP port, each worker takes 20 above it; 30000 "
                   "keeps up to 135 workers clear of the test peers' ports (10000-29999) and "
                   "the kernel's ephemeral ports (32768-)")
    p.add_argument("--overload-pressure", type=float, default=0.50,
                   help="[sip] overload_pressure of the dialer (the product's default; 0: the "
                   "overload hold follows the workers' lateness only)")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="seconds a run may take (default: from the sizes)")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction,
                   default=shutil.which("tcpdump") is not None,
                   help="capture the RTP at the answerer (tcpdump) and report its quality "
                        "(default: when tcpdump is installed)")
    p.add_argument("--skip-sipp-caller", action="store_true",
                   help="only the dialer run (the correctness figures)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/capacity.py needs root: SIPp replays RTP through a raw socket",
              file=sys.stderr)
        return 2
    call_s = KEY1_MS / 1000 + args.message + KEY9_AFTER_MESSAGE_MS / 1000 + 2.0
    waves = math.ceil(args.recipients / max(1, args.calls))
    args.timeout = args.timeout or 60 + waves * call_s * 2 + args.recipients / 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="capacity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    captures = make_dtmf_captures(workdir / "dtmf", ("1", "9"), DTMF_PAYLOAD_TYPE)
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"capacity bench {started}: {args.calls} calls, {args.recipients} recipients, "
          f"{args.message:g} s message; workdir {workdir}", flush=True)
    dialer = run_dialer(args, workdir, captures).figures(args.calls)
    print(f"dialer run done: peak {dialer['peak_established']}", flush=True)
    sipp = None
    if not args.skip_sipp_caller:
        sipp = run_sipp_caller(args, workdir, captures).figures(args.calls)
    print()
    print(f"machine: {info['nproc']} x {info['model']}, {info['memory_gb']} GB; "
          f"load before {', '.join(f'{x:.2f}' for x in info['load'])}; {started}")
    print(f"dialer: {dialer['workers']} workers warm in {dialer['pool_warm_s']} s "
          f"({dialer['pool_start_cpu_s']} CPU s), idle pool RSS {dialer['rss_idle_mb']} MB; "
          f"outcomes {dialer['outcomes']}")
    print(table(dialer, sipp))
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": info, "started": started, "dialer": dialer, "sipp": sipp}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
