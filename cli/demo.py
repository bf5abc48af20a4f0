"""``dialer demo``: a whole campaign through the real daemon, against simulated phones.

Everything runs on loopback as the current user: a throw-away SQLite database, two simulated-phone
processes (``python -m sip.phones``: one behind the internal trunk, one behind the external one;
each PJSUA2 process holds 4 calls), the real ``dialer serve`` in a subprocess, and a 20-recipient
campaign whose recipients answer and confirm, are busy, do not answer, hang up early, press a
wrong key, or stay silent. Progress is shown live; the per-recipient outcome table ends it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.campaigns import recipients_table
from cli.common import login
from dialer.bootstrap import Store, open_store
from dialer.core.domain import CampaignSettings, Kind, Limits
from dialer.core.errors import DialerError
from dialer.core.recipients import Recipient
from media.audio import wav_seconds
from media.prompts import prompt_path

DEADLINE = 300.0  # the demo gives up (and says so) after five minutes


def _behaviours(message: float, answer_prompt: float) -> list[tuple[str, Any]]:
    """What each simulated phone does, in list order (cycled over the recipients)."""
    key1 = min(1.5, answer_prompt)  # during the "press 1" prompt
    listen = key1 + message + 2.0  # during the "press 9" prompt that follows the message
    wrong = listen
    confirm = {"behaviour": "confirm", "ring": 1.0, "answer_key_delay": key1,
               "listen_key_delay": listen}
    return [
        ("confirms", confirm),
        ("busy, then ok", {**confirm, "behaviour": ["busy", "confirm"]}),
        ("confirms", {**confirm, "ring": 2.0}),
        ("no answer, then ok", {**confirm, "behaviour": ["no_answer", "confirm"]}),
        ("busy", {"behaviour": "busy"}),
        ("wrong key", {**confirm, "behaviour": "wrong_key", "wrong_key_delay": wrong,
                               "listen_key_delay": wrong + message + 2.0}),
        ("hangs up, then ok",
         {**confirm, "behaviour": ["hangup_early", "confirm"], "hangup_after": key1 + 1.0}),
        ("confirms", {**confirm, "ring": 0.5}),
        ("never answers", {"behaviour": "no_answer"}),
        ("silent", {"behaviour": "silent"}),
    ]


def _start_phones(tmp: Path, name: str,
                  script: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    script_file = tmp / f"phones-{name}.json"
    script_file.write_text(json.dumps(script, indent=1))
    ready = tmp / f"phones-{name}.port"
    with open(tmp / f"phones-{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sip.phones", "--bind", "127.0.0.1",
                                 "--port", "0", "--ready-file", str(ready), "--script",
                                 str(script_file), "--log", str(tmp / f"phones-{name}.jsonl"),
                                 "--log-level", "1"], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, int(ready.read_text().strip())
        if proc.poll() is not None:
            raise DialerError(f"the simulated phones exited (see {tmp}/phones-{name}.log)")
        time.sleep(0.05)
    proc.kill()
    raise DialerError("the simulated phones did not start within 20 s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_demo(console: Console, *, recipients: int = 20, keep: bool = False) -> None:
    """Run the demo campaign and print its outcome table."""
    tmp = Path(tempfile.mkdtemp(prefix="dialer-demo-"))
    daemon: subprocess.Popen[bytes] | None = None
    phones: list[subprocess.Popen[bytes]] = []
    ok = False
    try:
        message = prompt_path("en", "demo_message")
        behaviours = _behaviours(wav_seconds(message),
                                 wav_seconds(prompt_path("en", "answer_prompt")))
        recs: list[Recipient] = []
        scripts: dict[str, dict[str, Any]] = {"internal": {"numbers": {}},
                                              "external": {"numbers": {}}}
        for i in range(recipients):
            label, behaviour = behaviours[i % len(behaviours)]
            if i % 2 == 0:
                number, kind = str(201 + i), Kind.INTERNAL
            else:
                number, kind = f"+39069{i:06d}", Kind.EXTERNAL
            recs.append(Recipient(number=number, kind=kind, name=label))
            scripts[kind.value]["numbers"][number] = behaviour
        console.print(f"[bold]dialer demo[/] in {tmp}: {recipients} recipients, "
                      "simulated phones on loopback")
        ports: dict[str, int] = {}
        for trunk in ("internal", "external"):
            proc, port = _start_phones(tmp, trunk, scripts[trunk])
            phones.append(proc)
            ports[trunk] = port
        db_url = f"sqlite:///{tmp}/demo.db"
        (tmp / "dialer.toml").write_text(f"""
[database]
url = "{db_url}"
[data]
dir = "{tmp}/data"
[sip]
bind = "127.0.0.1"
workers = 2
port = 0
rtp_port = 20000
log_level = 0
[trunks.internal]
uri = "sip:127.0.0.1:{ports['internal']}"
[trunks.external]
uri = "sip:127.0.0.1:{ports['external']}"
""")
        store = open_store(db_url, create=True, ready=False)
        store.migrate()
        now = time.time()
        # its caller owns it, as after 'dialer init': a kept demo database can be looked at
        store.ensure_first_admin(login(), now=now)
        store.set_settings(actor="demo", now=now, max_calls=8, max_internal=4, max_external=4)
        data = message.read_bytes()
        import hashlib

        sha = store.add_media(data=data, sha256=hashlib.sha256(data).hexdigest(), rate=8000,
                              seconds=wav_seconds(message), source=str(message), now=now)
        settings = CampaignSettings(display_name="Demo", attempts=2, ring_timeout=5.0,
                                    retry_delay=2.0, key_timeout=3.0, max_repeats=1,
                                    caller_number="100", limits=Limits(total=8))
        store.add_template(name="Demo", settings=settings, audio_sha=sha,
                           audio_seconds=wav_seconds(message), recipients=recs, now=now,
                           actor="demo")
        cid = store.start_campaign(template="Demo", name="Demo alert", now=now, start_at=now,
                                   actor="demo")
        with open(tmp / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "cli.app", "serve", "--config",
                                       str(tmp / "dialer.toml")], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, "DIALER_DB": db_url})
        detail = _follow(console, store, cid, recipients, daemon, tmp)
        console.print(recipients_table(detail, console.width))
        tally: dict[str, int] = {}
        for r in detail["recipients"]:
            tally[r["state"]] = tally.get(r["state"], 0) + 1
        console.print("campaign [bold]" + detail["state"] + "[/]: " +
                      ", ".join(f"{n} {s}" for s, n in sorted(tally.items())))
        if detail["state"] not in ("completed", "incomplete"):
            raise DialerError(f"the demo campaign did not finish (see {tmp}/daemon.log)")
        ok = True
    finally:
        _stop(daemon)
        for p in phones:
            _stop(p)
        if keep or not ok:
            console.print(f"kept {tmp} (daemon.log, phones-*.jsonl, demo.db); see it with",
                          highlight=False)
            console.print(f"  dialer --db sqlite:///{tmp}/demo.db campaign show 1",
                          highlight=False, soft_wrap=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _follow(console: Console, store: Store, cid: int, total: int,
            daemon: subprocess.Popen[bytes], tmp: Path) -> dict[str, Any]:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    task = progress.add_task("recipients done", total=total)
    deadline = time.monotonic() + DEADLINE
    detail = store.campaign_detail(cid)
    with Live(Group(progress), console=console, refresh_per_second=4, transient=False) as live:
        while time.monotonic() < deadline:
            detail = store.campaign_detail(cid)
            states = [r["state"] for r in detail["recipients"]]
            done = sum(1 for s in states if s in ("contacted", "failed", "stopped"))
            in_call = states.count("active")
            progress.update(task, completed=done, description=(
                f"{detail['state']:>10}  contacted {states.count('contacted'):>2}  "
                f"failed {states.count('failed'):>2}  in call {in_call}"))
            live.update(Group(progress))
            if detail["state"] in ("completed", "incomplete", "terminated"):
                break
            if daemon.poll() is not None:
                raise DialerError(f"the daemon exited with {daemon.returncode} "
                                  f"(see {tmp}/daemon.log)")
            time.sleep(0.5)
    console.print()  # a terminal that is not a TTY leaves the last frame unterminated
    return detail
