"""``dialer history ...``: every run of every campaign, kept after the campaign and its template
are deleted; shown and exported (CSV, JSON) deterministically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.choices import ExportFormat, complete_campaign
from cli.common import authorized, emit_json, local, out
from cli.tables import Col, fit, shown, when
from dialer.core.alerts import describe
from dialer.core.chain import Status
from dialer.core.csvcells import cell
from dialer.core.errors import ValidationError
from dialer.core.permissions import Role

history_app = typer.Typer(help="The permanent history of every campaign run.", no_args_is_help=True)

V = Role.VIEWER
CSV_COLUMNS = ["record", "id", "at", "recipient_id", "position", "number", "attempt_id", "kind",
               "actor", "data", "chain_hash"]
EX_NOT_SEALED = 3  # ``history verify``: the run has no chain (yet) to verify


def export_json(history: dict[str, Any]) -> str:
    """The history as JSON text: sorted keys and fixed order, so the same history gives the same
    bytes."""
    return json.dumps(history, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def export_csv(history: dict[str, Any]) -> str:
    """The history as one CSV: a ``run`` row (with the settings snapshot), one ``recipient`` row
    each, then every ``attempt`` and every ``event``; fields that have no column go into
    ``data`` as JSON with sorted keys. Every text cell is neutralised against spreadsheet
    formulas (``dialer.core.csvcells``); the ``number`` column keeps its numbers (+39...) as they
    are. ``chain_hash``: the chain head on the ``run`` row, each row's own hash on the attempts
    and events (empty until the run is sealed)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()

    def put(row: dict[str, Any]) -> None:
        w.writerow({k: cell(v, number=k == "number") if isinstance(v, str) else v
                    for k, v in row.items()})

    def data(d: dict[str, Any], *skip: str) -> str:
        return json.dumps({k: v for k, v in d.items() if k not in skip}, sort_keys=True,
                          ensure_ascii=False)

    run = history["run"]
    put({"record": "run", "id": run["id"], "at": run["created_at"],
                "actor": run["created_by"], "chain_hash": run["chain"]["head"] or "",
                "data": data({**run, "settings": history["settings"]}, "id", "created_at",
                             "created_by")})
    for r in history["recipients"]:
        put({"record": "recipient", "id": r["id"], "recipient_id": r["id"],
                    "position": r["position"], "number": r["number"], "kind": r["kind"],
                    "data": data(r, "id", "position", "number", "kind")})
    position = {r["id"]: r["position"] for r in history["recipients"]}
    for a in history["attempts"]:
        put({"record": "attempt", "id": a["id"], "at": a["created_at"],
                    "recipient_id": a["recipient_id"],
                    "position": position.get(a["recipient_id"], ""),
                    "number": a["number"], "attempt_id": a["id"], "kind": a["outcome"] or "",
                    "chain_hash": a["chain_hash"] or "",
                    "data": data(a, "id", "created_at", "recipient_id", "number", "chain_hash")})
    for e in history["events"]:
        put({"record": "event", "id": e["id"], "at": e["at"],
                    "recipient_id": e["recipient_id"] if e["recipient_id"] is not None else "",
                    "position": position.get(e["recipient_id"], ""),
                    "attempt_id": e["attempt_id"] or "", "kind": e["kind"],
                    "actor": e["actor"] or "", "data": data(e["detail"]),
                    "chain_hash": e["chain_hash"] or ""})
    return buf.getvalue()


@history_app.command("list")
def history_list(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """List every run, including those whose campaign was deleted. Example: dialer history list"""
    rows = authorized(V, "history list").list_runs()
    if json_out:
        emit_json(rows)
        return
    cols = (Col("run", number=True), Col("name"), Col("template", 3), Col("state"),
            Col("created"), Col("by", 4), Col("recipients", 2, number=True), Col("campaign", 5))
    out.print(fit(cols, [[str(r["id"]), r["name"], r["template"], r["state"],
                          when(r["created_at"]), r["created_by"], str(r["recipients"]),
                          "deleted" if r["campaign_deleted"] else "kept"] for r in rows],
                  width=out.width))


@history_app.command("show")
def history_show(run_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Run id (= the campaign's id)."),
                 json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Show a run: its snapshot, recipients and every event. Example: dialer history show 3"""
    h = authorized(V, "history show").run_history(run_id)
    if json_out:
        emit_json(h)
        return
    run = h["run"]
    t = Table("field", "value", title=f"run {run['id']} {run['name']} ({run['state']})")
    t.add_row("template", run["template"])
    t.add_row("created", f"{local(run['created_at'])} by {run['created_by']}")
    t.add_row("start", local(run["start_at"]))
    for key, label in (("escalated_from", "escalation of run"),
                       ("escalated_to", "escalated to run")):
        if run.get(key) is not None:
            t.add_row(label, str(run[key]))
    if launched := describe(run.get("alert")):
        t.add_row("launched by", escape(launched))
    t.add_row("chain", chain_text(run["chain"]))
    for k, v in sorted(h["settings"].items()):
        t.add_row(k.replace("_", " "), shown(v, k))
    out.print(t)
    print_chain_head(run["chain"])
    zoned = any(r.get("timezone") for r in h["recipients"])  # calling-window zones of their own
    rt = Table("#", "number", "name", "kind", "email", *(["timezone"] if zoned else []),
               title="recipients at launch")
    for r in h["recipients"]:
        rt.add_row(str(r["position"]), r["number"], r["name"] or "", r["kind"], r["email"] or "",
                   *([r.get("timezone") or ""] if zoned else []))
    out.print(rt)
    position = {r["id"]: r["position"] for r in h["recipients"]}
    et = Table("time", "#", "event", "actor", "detail", title=f"{len(h['events'])} events, "
               f"{len(h['attempts'])} attempts", box=box.SIMPLE_HEAD)
    for e in h["events"]:
        detail = shown({k: v for k, v in sorted(e["detail"].items())
                       if v is not None and k != "settings"})
        et.add_row(local(e["at"]), str(position.get(e["recipient_id"], "")), e["kind"],
                   e["actor"] or "", detail)
    out.print(et)


def chain_text(chain: dict[str, Any]) -> str:
    """A run's chain in one phrase (``history show``, ``campaign show``); the head itself goes
    on a line of its own (``chain_head_line``), never cut by a table."""
    if not chain["head"]:
        return "not sealed (when the run is over; never for runs that ended before revision 0008)"
    return f"sealed {local(chain['sealed_at'])}, {chain['rows']} rows"


def print_chain_head(chain: dict[str, Any]) -> None:
    """``chain head <64 hex>`` on one line, unwrapped (to compare with an export's)."""
    if chain["head"]:
        out.print(f"chain head {chain['head']}", soft_wrap=True, highlight=False)


@history_app.command("verify")
def history_verify(
    run_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                 help="Run id (= the campaign's id)."),
    head: Optional[str] = typer.Option(
        None, "--head", metavar="HEX",
        help="A chain head kept elsewhere (an export's): it must be this run's head, or the "
             "hash of one of its rows (the chain grew since)."),
    json_out: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Recompute a run's history chain and name the first row altered, inserted or deleted.

    A run is sealed when it is over: its attempts and events in order,
    each with a SHA-256 over its content and the previous row's hash.
    The run keeps the last hash, the chain head (in every export and report).

    Exit status: 0 the chain verifies; 1 it does not (the line names the
    first bad row: altered, inserted, rows deleted before it, rows missing
    at the end), or an error; 3 nothing to verify: the run is not over yet,
    or it ended before the history was chained (revision 0008).

    Example: dialer history verify 3 --head 5f1c...e9
    """
    if head is not None and (len(head) != 64 or any(c not in "0123456789abcdefABCDEF"
                                                    for c in head)):
        raise typer.BadParameter("a chain head is 64 hex digits", param_hint="--head")
    report = authorized(V, "history verify").verify_run(run_id, expect_head=head)
    if json_out:
        emit_json(report.as_dict())
    else:
        typer.echo(report.line())
    if report.status in (Status.NOT_SEALED, Status.NOT_SEALED_YET):
        raise typer.Exit(EX_NOT_SEALED)
    if not report.ok:
        raise typer.Exit(1)


@history_app.command("export")
def history_export(
    run_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Run id (= the campaign's id)."),
    fmt: ExportFormat = typer.Option(ExportFormat.json, "--format", "-f", help="The format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Export a run: configuration snapshot, recipients, every attempt and event, the chain
    head and each row's hash (dialer history verify RUN --head checks a copy against them).

    In CSV, a text cell starting with = + - @ (a spreadsheet formula) gets a leading ';
    the number column keeps its numbers (+39...) as they are.

    Example: dialer history export 3 --format csv --output drill-3.csv
    """
    h = authorized(V, "history export").run_history(run_id)
    text = export_json(h) if fmt is ExportFormat.json else export_csv(h)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_bytes(text.encode("utf-8"))
    except OSError as exc:
        raise ValidationError(f"cannot write {output}: {exc}") from exc
    out.print(f"run {run_id} exported to {output}")


@history_app.command("report")
def history_report(
    run_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Run id (= the campaign's id)."),
    output: Path = typer.Option(..., "--output", "-o", help="The HTML file to write."),
    utc: bool = typer.Option(False, "--utc", help="Times in UTC (default: the local zone)."),
) -> None:
    """Write a self-contained HTML report of a run: configuration snapshot, outcome of every
    recipient and a chart of contacted / failed / in-call recipients over time.

    Example: dialer history report 3 --output drill-3.html
    """
    import datetime as dt

    from dialer.report import render_report

    h = authorized(V, "history report").run_history(run_id)
    tz = dt.UTC if utc else dt.datetime.now().astimezone().tzinfo or dt.UTC
    page = render_report(h, tz=tz)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot write {output}: {exc}") from exc
    out.print(f"run {run_id} report written to {output}")
