"""The supervised pool of SIP worker processes (``python -m sip.worker``).

One PJSUA2 process holds at most 4 calls, so capacity comes from several workers. The pool is
elastic (``dialer.core.elastic``): it starts warm (the workers the global limit needs), then at
every scheduling pass ``scale`` keeps workers for the calls in progress, the calls the scheduler
could place now and a spare one, starting the missing ones ahead of the calls (a worker needs
a good fraction of a second to become ready; ``GROW_STEP`` a pass, so that the forks do not hold
the loop up) and retiring (finish the calls, take none, exit) those idle for ``idle_grace``
seconds beyond that, never one with calls, never worker 0 (the trunks' registrations). A worker
that dies takes only its own calls: the pool reports them as lost and starts a replacement.

Calls outlive the daemon. Each worker listens on a Unix socket of its own in the node's state
directory (``<data dir>/run/<node>/w<index>-<token>.sock``, the directory 0700): the pool binds
it, hands the listening descriptor to the new process (in a session of its own, so a signal to
the daemon's process group does not reach it) and connects at once. When the daemon dies the
worker keeps its calls (``sip.link``); the next daemon of the node ``adopt``s every worker it
finds there before it settles any open attempt: each says who it is, hands over the events the
daemon missed, in order, and lists the calls it still carries. A worker of another wire version
or configuration is told to ``retire``: it finishes its calls, takes no new ones and exits, while
a fresh worker of this daemon takes its place for new calls (each worker's RTP range has room
for both). Adopted workers are not this process's children: they are watched through their
socket (a dead process closes it) and their pid.

This module starts processes and moves messages; it never imports pjsua2.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialer import ipc
from dialer.core import elastic
from dialer.core.cluster import NodeLoad
from dialer.core.errors import ConfigError
from dialer.files import private_dir, write_private
from dialer.ipc import WIRE_VERSION, Channel, inheritable_pair
from dialer.procs import Adopted, ForkServer, Process
from dialer.workerprep import (
    FDS_PER_WORKER,
    check_rtp_ranges,
    digest,
    raise_fd_limit,
    worker_events,
)

logger = logging.getLogger(__name__)

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)
# New calls a second at most, in bursts of SETUP_BURST: hundreds of INVITEs at once starve a host.
SETUP_RATE = 100.0
SETUP_BURST = 100
RETIRE_EXIT_S = 5.0  # a retiring worker that closed its channel has this long to exit itself
ADOPT_TIMEOUT = 3.0  # seconds a starting daemon waits for the workers it finds to report
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; longer paths go through /proc/self/fd


class AnotherDaemon(ConfigError):
    """A worker of this node is attached to another running daemon."""


@dataclass
class Worker:
    """The daemon's view of one worker process."""

    index: int
    proc: Process
    channel: Channel
    started_at: float
    ready: bool = False
    retiring: bool = False  # another version or configuration: finishes its calls, takes none
    closed_at: float | None = None  # monotonic: when a retiring worker's channel was seen closed
    adopted: bool = False
    rtp_half: int = 0  # which half of its index's RTP range it uses (WorkerPool._half)
    sip_port: int | None = None
    calls: set[str] = field(default_factory=set)
    failures: int = 0
    overloaded: bool = False  # the worker reports its event loop running late (``load``)
    lag: float = 0.0  # its last ``load``: how late its loop runs (s)
    wait: float = 0.0  # and the largest share of a second a thread of it waited for a CPU
    held: int = 0  # slots of calls over whose CANCEL or BYE is unanswered: freed in invite_timeout
    idle_since: float | None = None  # monotonic: since when it has carried no call (elastic)

    @property
    def taken(self) -> int:
        return len(self.calls) + self.held

    @property
    def pid(self) -> int:
        return self.proc.pid


class WorkerPool:
    """Starts, feeds and restarts the SIP workers."""

    def __init__(self, *, size: int, calls_per_worker: int,
                 init_message: Callable[[int], ipc.Init], command: list[str] | None = None,
                 state_dir: Path | None = None) -> None:
        """``state_dir``: where the workers' sockets live, so that they outlive the daemon;
        None: each worker is tied to this process by a socketpair and dies with it."""
        self.size = size
        self.state_dir = state_dir
        self._dirfd: int | None = None
        self.retiring: dict[int, Worker] = {}  # pid -> worker of another version or config
        self.calls_per_worker = calls_per_worker
        self._init_message = init_message
        # None: workers forked by a fork server (dialer.procs), else run as this command
        self._command = command
        self._forkserver: ForkServer | None = None
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._restart_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._spawns: dict[int, int] = {}  # index -> processes started for it by this daemon
        self._generation: int | None = None  # this daemon's start, counted in the state dir
        self.stopping = False
        self._tokens = float(SETUP_BURST)
        self._tokens_at = time.monotonic()
        self.wanted = size  # the ceiling the limits give (``resize``); ``scale`` works below it
        self.margin = elastic.MARGIN
        self.idle_grace = elastic.IDLE_GRACE
        self.grow_step = elastic.GROW_STEP
        self.retired = 0  # workers retired because they were idle and not needed

    def start(self, size: int | None = None) -> None:
        """Start ``size`` workers (default: the pool's maximum) ahead of any call; from then on
        ``scale`` follows the demand."""
        if self.state_dir is not None:
            private_dir(self.state_dir)
        limit = raise_fd_limit(64 + FDS_PER_WORKER * self.size + 1024)
        if limit < 64 + FDS_PER_WORKER * self.size:
            logger.warning("RLIMIT_NOFILE is %d: too low for %d workers", limit, self.size)
        last = self._init_message(self.size - 1)
        first = self._init_message(0).rtp_port
        if last.rtp_port and first:
            check_rtp_ranges(first, last.rtp_port + (last.rtp_port_range or 0))
        self.resize(self.size if size is None else size)
        self._grow(self.wanted)  # warm: idle ones retire after the grace if no demand comes

    def resize(self, size: int) -> None:
        """The limits give room for ``size`` workers (never above the maximum): the ceiling of
        ``scale``, which starts workers when demand comes and retires idle ones."""
        self.wanted = max(1, min(size, self.size))

    @property
    def kept(self) -> int:
        """Workers running, starting or due to restart: ``scale``'s target (``wanted``: ceiling)."""
        return len(self.workers) + len(self._restart_at)

    def _grow(self, count: int) -> int:
        """Have ``count`` workers (running, starting or due to restart): start the missing ones
        at the lowest free indexes (one a retiring worker still holds too: the new process
        takes the other RTP half and the alternative SIP port, as after an adoption)."""
        started, have = 0, self.kept
        for i in range(self.size):
            if have + started >= count:
                break
            if i not in self.workers and i not in self._restart_at:
                self._spawn(i)
                started += 1
        return started

    def scale(self, demand: int) -> elastic.Scale:
        """Grow ahead of ``demand`` (calls in progress plus those the scheduler could place
        now), retire workers idle past the grace beyond it (``dialer.core.elastic``)."""
        if self.stopping:
            return elastic.Scale()
        now = time.monotonic()
        running = [w for w in self.workers.values() if w.ready]
        decision = elastic.decide(
            [elastic.WorkerLoad(index=w.index, calls=w.taken, idle_since=w.idle_since)
             for w in running],
            starting=self.kept - len(running), demand=demand,
            calls_per_worker=self.calls_per_worker, maximum=self.wanted, now=now,
            margin=self.margin, idle_grace=self.idle_grace, pinned=(0,), step=self.grow_step)
        if decision.start:
            self._grow(self.kept + decision.start)
        for index in decision.retire:
            w = self.workers.pop(index)
            w.retiring = True
            self.retiring[w.pid] = w
            w.channel.send_msg(ipc.Retire())
            self.retired += 1
            logger.info("worker %d (pid %d) idle for %.0f s and not needed: retiring it",
                        index, w.pid, now - (w.idle_since or now))
        return decision

    def init_for(self, index: int, half: int = 0) -> ipc.Init:
        """``index``'s init message, its RTP ports in one ``half`` of the index's range."""
        init = self._init_message(index)
        out = ipc.replace(init, wire=WIRE_VERSION, digest=digest(init))
        span = init.rtp_port_range or 0
        if init.rtp_port and span >= 4:
            # pjsua wraps past port + range, so a range of span/2 - 2 stays inside the half
            out = ipc.replace(out, rtp_port=init.rtp_port + half * (span // 2),
                              rtp_port_range=span // 2 - 2)
        return out

    def _half(self, index: int) -> int:
        """Which half of ``index``'s RTP range a new process for it takes.

        Not the half of the process it replaces: a worker that died (or a daemon killed with its
        workers) leaves far ends that still send RTP and DTMF to its ports until they notice,
        and a new call on such a port would hear them. So each start of the daemon and each
        restart of an index alternate halves, and a worker retiring beside its successor keeps
        the other half."""
        if self._generation is None:
            self._generation = self._next_generation()
        half = (self._generation + self._spawns.get(index, 0)) % 2
        for w in self.retiring.values():
            if w.index == index and w.rtp_half == half:
                half = 1 - half
        return half

    def _next_generation(self) -> int:
        if self.state_dir is None:
            return 0
        path = self.state_dir / "generation"
        try:
            gen = int(path.read_text().strip()) + 1
        except (OSError, ValueError):
            gen = 0
        write_private(path, f"{gen}\n".encode())
        return gen

    def _spawn(self, index: int) -> Worker:
        proc: Process
        if self.state_dir is None:
            channel, child_fd = inheritable_pair()
            try:
                proc = self._start(["--ipc-fd", "{fd}"], child_fd, session=False)
            finally:
                os.close(child_fd)
        else:
            name = f"w{index}-{secrets.token_hex(4)}.sock"
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(self._address(name))
                os.chmod(self.state_dir / name, 0o600)
                listener.listen(8)
                proc = self._start(["--listen-fd", "{fd}", "--socket", str(self.state_dir / name)],
                                   listener.fileno(), session=True)
            finally:
                listener.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self._address(name))  # queued on the listener: no race with the child
            channel = Channel(sock)
        half = self._half(index)
        self._spawns[index] = self._spawns.get(index, 0) + 1
        w = Worker(index=index, proc=proc, channel=channel, started_at=time.monotonic(),
                   failures=self._failures.get(index, 0), rtp_half=half)
        self.workers[index] = w
        channel.send_msg(self.init_for(index, half))
        logger.info("worker %d started (pid %d)", index, proc.pid)
        return w

    def _start(self, argv: list[str], fd: int, *, session: bool) -> Process:
        """A worker process with ``argv`` (``{fd}``: ``fd``, which it inherits)."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self._command is None:
            if self._forkserver is None:
                self._forkserver = ForkServer(env)
            try:
                return self._forkserver.spawn(argv, fd, session=session)
            except OSError as exc:
                logger.warning("fork server: %s; starting the worker as a program", exc)
        command = self._command or [sys.executable, "-m", "sip.worker"]
        return subprocess.Popen([*command, *(str(fd) if a == "{fd}" else a for a in argv)],
                                pass_fds=[fd], stdin=subprocess.DEVNULL, env=env,
                                start_new_session=session)

    # ----- the state directory -----

    def _address(self, name: str) -> str:
        """The address of socket ``name``: its path, or, when that is too long for a Unix
        socket, the same file through an open descriptor of the directory."""
        assert self.state_dir is not None
        full = str(self.state_dir / name)
        if len(full.encode()) <= SOCKET_PATH_MAX:
            return full
        if self._dirfd is None:
            self._dirfd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dirfd}/{name}"

    def adopt(self, timeout: float = ADOPT_TIMEOUT) -> list[tuple[Worker, list[ipc.Event]]]:
        """Re-attach every worker a previous daemon of this node left running.

        Returns each adopted worker with the events it kept for us, in order (the first is its
        ``hello``, the last ``attached`` with the calls it carries). A worker of another wire
        version or configuration, or one whose index is taken, is told to retire. A worker that
        does not report within ``timeout`` is killed (its calls are then settled as
        interrupted). Raises ``AnotherDaemon`` when a worker is attached to a running daemon."""
        if self.state_dir is None:
            return []
        private_dir(self.state_dir)
        sel = selectors.DefaultSelector()
        got: dict[Channel, list[ipc.Event]] = {}
        names: dict[Channel, str] = {}
        for path in sorted(self.state_dir.glob("w*.sock")):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._address(path.name))
            except OSError:  # nobody listens: its worker is gone
                sock.close()
                path.unlink(missing_ok=True)
                continue
            ch = Channel(sock)
            ch.send_msg(ipc.Attach(wire=WIRE_VERSION))
            sel.register(ch.fileno(), selectors.EVENT_READ, ch)
            got[ch], names[ch] = [], path.name
        deadline = time.monotonic() + timeout
        waiting = set(got)
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                ch = key.data
                try:
                    msgs = worker_events(ch.receive_msgs())
                except ValueError:
                    msgs = []
                    ch.closed = True
                got[ch].extend(msgs)
                if ch.closed or any(isinstance(m, (ipc.Attached, ipc.Refused)) for m in msgs):
                    sel.unregister(ch.fileno())
                    waiting.discard(ch)
        sel.close()
        for ch, msgs in got.items():
            refused = next((m for m in msgs if isinstance(m, ipc.Refused)), None)
            if refused is not None:  # before adopting anything: leave every worker untouched
                for other in got:
                    other.close()
                raise AnotherDaemon(
                    f"worker pid {refused.pid} ({names[ch]}) is attached to another "
                    f"running daemon of this node: stop it first, or give this one another "
                    f"node name")
        adopted: list[tuple[Worker, list[ipc.Event]]] = []
        for ch, msgs in got.items():
            hello = next((m for m in msgs if isinstance(m, ipc.Hello)), None)
            done = any(isinstance(m, ipc.Attached) for m in msgs)
            if hello is None or not done:
                ch.close()
                pid = hello.pid if hello else 0
                logger.error("worker socket %s did not answer in %.0f s%s", names[ch], timeout,
                             f": killing pid {pid}" if pid else "")
                if pid:
                    Adopted(pid).kill()
                continue
            w = self._adopted(ch, hello, msgs)
            adopted.append((w, msgs))
        return adopted

    def _adopted(self, ch: Channel, hello: ipc.Hello, msgs: list[ipc.Event]) -> Worker:
        end = next(m for m in msgs if isinstance(m, ipc.Attached))
        index = hello.worker
        w = Worker(index=index, proc=Adopted(hello.pid), channel=ch,
                   started_at=time.monotonic(), ready=bool(hello.ready),
                   sip_port=hello.sip_port, calls=set(end.calls), adopted=True,
                   idle_since=None if end.calls else time.monotonic(),
                   rtp_half=self._half_of(index, hello.rtp_port))
        why = None
        if hello.wire != WIRE_VERSION:
            why = f"wire version {hello.wire} (ours: {WIRE_VERSION})"
        elif not 0 <= index < self.size:
            why = f"index {index} outside this pool of {self.size}"
        elif index in self.workers:
            why = f"index {index} already taken by pid {self.workers[index].pid}"
        elif hello.digest != digest(self._init_message(index)):
            why = "configuration changed"
        if why is None:
            self.workers[index] = w
            ch.send_msg(ipc.Trust(allowed_sources=self._init_message(index).allowed_sources))
        else:
            w.retiring = True
            self.retiring[w.pid] = w
            ch.send_msg(ipc.Retire())
        logger.warning("worker %d (pid %d) adopted with %d call(s) and %d event(s) kept%s",
                       index, w.pid, len(w.calls), len(msgs) - 2,
                       f"; retiring it: {why}" if why else "")
        return w

    def _half_of(self, index: int, rtp_port: int | None) -> int:
        if not 0 <= index < self.size or rtp_port is None:
            return 0
        init = self._init_message(index)
        base, span = init.rtp_port or 0, init.rtp_port_range or 0
        if not (base and span >= 4):
            return 0
        return 1 if rtp_port >= base + span // 2 else 0

    def undelivered(self) -> list[ipc.Event]:
        """Events of workers that exited with no daemon attached (``sip.link``), oldest file
        first; the files are removed: call ``undelivered`` once, before settling anything."""
        if self.state_dir is None or not self.state_dir.exists():
            return []
        out: list[ipc.Event] = []
        for path in sorted(self.state_dir.glob("undelivered-*.jsonl"),
                           key=lambda p: p.stat().st_mtime):
            for line in path.read_text().splitlines():
                try:
                    msg = json.loads(line)
                except ValueError:
                    logger.error("%s: a line is not JSON: skipped", path)
                    continue
                out.extend(worker_events(ipc.decode_all([msg])))
            logger.warning("%d event(s) of a worker that exited alone read from %s",
                           len(out), path.name)
            path.unlink()
        return out

    # ----- capacity -----

    def _usable(self, w: Worker) -> bool:
        return w.ready and not w.channel.closed and not w.overloaded

    def free_slots(self) -> int:
        """Slots for new calls. A worker whose event loop runs late (the machine is short of
        CPU) takes no new calls until it catches up: under overload the pool places fewer
        calls instead of degrading those in progress."""
        slots = sum(self.calls_per_worker - w.taken for w in self.workers.values()
                    if self._usable(w) and w.taken < self.calls_per_worker)
        return min(slots, int(self._refill()))

    def _refill(self) -> float:
        """The setup-rate budget (token bucket): calls that may start now."""
        now = time.monotonic()
        self._tokens = min(float(SETUP_BURST), self._tokens + (now - self._tokens_at) * SETUP_RATE)
        self._tokens_at = now
        return self._tokens

    def busy_slots(self) -> int:
        return sum(len(w.calls) for w in self.all_workers())

    def all_workers(self) -> list[Worker]:
        """Every worker with a channel: the pool's own and those retiring."""
        return [*self.workers.values(), *self.retiring.values()]

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready)

    def node_load(self) -> NodeLoad:
        """The call slots of the workers that take calls, and the workers running late."""
        live = [w for w in self.workers.values() if w.ready and not w.channel.closed]
        return NodeLoad(slots=sum(self.calls_per_worker for w in live if not w.overloaded),
                        late=sum(1 for w in live if w.overloaded),
                        lag=max((w.lag for w in live), default=0.0),
                        wait=max((w.wait for w in live), default=0.0))

    def dial(self, message: ipc.Dial) -> Worker | None:
        """Hand a call to the least busy ready worker; None when every slot is taken."""
        ready = [w for w in self.workers.values()
                 if self._usable(w) and w.taken < self.calls_per_worker]
        if not ready:
            return None
        w = min(ready, key=lambda x: (x.taken, x.index))
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)  # never refuses: the claim was bounded
        w.calls.add(message.call_id)
        w.idle_since = None
        w.channel.send_msg(message)
        return w

    def send_all(self, message: ipc.Op) -> None:
        for w in self.all_workers():
            if not w.channel.closed:
                w.channel.send_msg(message)

    # ----- events -----

    def on_message(self, w: Worker, msg: ipc.Event) -> None:
        """Book-keeping the pool itself needs; the daemon handles the rest."""
        if isinstance(msg, ipc.Ready):
            w.ready = True
            w.sip_port = msg.sip_port
            if not w.calls:
                w.idle_since = time.monotonic()
            self._failures[w.index] = 0
            logger.info("worker %d ready (pid %d, SIP port %s)", w.index, w.pid, w.sip_port)
        elif isinstance(msg, ipc.Ended):
            w.calls.discard(msg.call_id)
            if not w.calls:
                w.idle_since = time.monotonic()
        elif isinstance(msg, ipc.Slots):
            w.held = max(0, msg.held)
        elif isinstance(msg, ipc.Load):
            w.lag, w.wait = msg.lag, msg.wait or 0.0
            if w.overloaded == msg.overloaded:
                return  # the periodic report: the gauges take it
            w.overloaded = msg.overloaded
            (logger.warning if w.overloaded else logger.info)(
                "worker %d %s (loop %.0f ms late, threads waited %.0f%% of a second for a CPU)",
                w.index, "overloaded: no new calls" if w.overloaded else "caught up",
                1000 * msg.lag, 100 * w.wait)

    def reap(self) -> list[tuple[Worker, set[str]]]:
        """Workers that have exited (or closed their channel): their lost calls, then restart."""
        lost: list[tuple[Worker, set[str]]] = []
        for w in list(self.retiring.values()):
            if self._gone(w):
                logger.info("retiring worker %d (pid %d) exited holding %d call(s)", w.index,
                            w.pid, len(w.calls))
                lost.append((w, set(w.calls)))
                del self.retiring[w.pid]
        for index, w in list(self.workers.items()):
            if not self._gone(w):
                continue
            (logger.info if self.stopping else logger.error)(
                "worker %d (pid %d) exited with %s holding %d call(s)",
                index, w.pid, w.proc.poll(), len(w.calls))
            lost.append((w, set(w.calls)))
            del self.workers[index]
            fails = self._failures.get(index, 0) + 1
            self._failures[index] = fails
            delay = RESTART_BACKOFF[min(fails - 1, len(RESTART_BACKOFF) - 1)]
            self._restart_at[index] = time.monotonic() + delay
        now = time.monotonic()
        if self.stopping:
            self._restart_at.clear()
        for index, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[index]
                self.restarts += 1
                self._spawn(index)
        return lost

    @staticmethod
    def _gone(w: Worker) -> bool:
        """Whether ``w`` exited or closed its channel (then it is killed: it is no use; one
        retiring closes it on its way out: it gets ``RETIRE_EXIT_S`` to exit by itself)."""
        code = w.proc.poll()
        if code is None and not w.channel.closed:
            return False
        if code is None and w.retiring:
            w.closed_at = w.closed_at or time.monotonic()
            if time.monotonic() - w.closed_at < RETIRE_EXIT_S:
                return False
        if code is None:
            w.proc.kill()
            w.proc.wait()
        w.channel.close()
        return True

    def next_restart_in(self) -> float | None:
        if not self._restart_at:
            return None
        return max(0.0, min(self._restart_at.values()) - time.monotonic())

    def channels(self) -> list[tuple[Worker, Channel]]:
        return [(w, w.channel) for w in self.all_workers() if not w.channel.closed]

    def stop_restarts(self) -> None:
        """No more replacements: the pool is being shut down."""
        self.stopping = True
        self._restart_at.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask every worker to hang up and exit; kill those that do not in time."""
        self.stop_restarts()
        self.send_all(ipc.Shutdown())
        deadline = time.monotonic() + timeout
        for w in self.all_workers():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                w.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                logger.warning("worker %d did not stop in time: killing it", w.index)
                w.proc.kill()
                w.proc.wait()
            w.channel.close()
        self._close_forkserver()

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "pid": w.pid, "ready": w.ready, "calls": sorted(w.calls),
                 "sip_port": w.sip_port, "retiring": w.retiring, "adopted": w.adopted}
                for w in self.all_workers()]

    def detach(self) -> None:
        """Let go of every worker without stopping it (a test's stand-in for kill -9 of the
        daemon, and the end of a daemon that hands its calls over)."""
        for w in self.all_workers():
            w.channel.close()
        self.workers.clear()
        self.retiring.clear()
        self._restart_at.clear()
        self._close_forkserver()

    def _close_forkserver(self) -> None:
        if self._forkserver is not None:
            self._forkserver.close()
            self._forkserver = None
