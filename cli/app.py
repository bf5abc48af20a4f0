"""The ``dialer`` command line (Typer + Rich): the root app, global options, ``init``, ``serve``
and ``demo``. The command groups live in their own modules: ``cli/templates.py``,
``cli/campaigns.py``, ``cli/settings.py``, ``cli/history.py``, ``cli/operators.py`` and
``cli/nodes.py``.

Every error the user can act on is one line on stderr and exit code 1, never a traceback; every
listing and ``show`` takes ``--json`` for scripts (schemas in docs/cli-json.md). Every command
needs a role of its caller (the process's real OS user, never $LOGNAME/$USER): see
``dialer.core.permissions``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from cli.campaigns import campaign_app, recipients_table
from cli.choices import LogFormat
from cli.common import (
    DEFAULT_DB,
    _state,
    actor,
    authorized,
    close_stores,
    db_url,
    emit_json,
    err,
    fail,
    import_audio_file,
    local,
    out,
    parse_start,
    read_recipients,
    say,
    short_time,
    store,
)
from cli.configcheck import EX_CONFIG, config_app
from cli.db import db_app
from cli.escalation import template_escalate
from cli.history import history_app
from cli.nodes import nodes
from cli.operators import audit_app, operator_app
from cli.settings import settings_app
from cli.templates import template_app
from dialer import bootstrap, logs
from dialer.core.errors import ConfigError, DialerError
from dialer.core.permissions import PermissionDenied, Role
from dialer.core.recipients import DEFAULT_EXTENSION_PATTERN, DEFAULT_REGION, NumberRules
from dialer.logs import FORMATS, JsonFormatter, TextFormatter

__all__ = ["DEFAULT_DB", "JsonFormatter", "TextFormatter", "actor", "app", "authorized",
           "db_url", "emit_json", "err", "fail", "import_audio_file", "local", "main", "out",
           "parse_start", "read_recipients",
           "recipients_table", "short_time", "store"]


class _Group(TyperGroup):
    """Every error reaches the user as one line: a DialerError as it is, a storage, file or
    network failure explained (``bootstrap.explain``), a usage error with where to find the
    usage; exit 1 (2 for usage). Only a bug shows its traceback, and only with ``--debug``."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DialerError as exc:
            fail(str(exc))
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as exc:
            if _state.get("debug"):
                raise
            fail(bootstrap.explain(exc, db_url()) or
                 f"unexpected {type(exc).__name__}: {exc} (a bug: 'dialer --debug ...' "
                 "shows where)")
        finally:
            close_stores()

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except typer.Abort:
            if not standalone_mode:
                raise
            say("aborted")
            sys.exit(1)
        except Exception as exc:
            # Typer's own (vendored) click errors: usage errors and the like, known by their
            # face, since Typer exports only BadParameter of them
            message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
            if not standalone_mode or not callable(message) or not isinstance(code, int):
                raise
            ctx = getattr(exc, "ctx", None)
            path = " ".join(["dialer", *ctx.command_path.split()[1:]]) if ctx is not None else ""
            where = f" (see '{path} --help')" if path and code == 2 else ""
            say(f"{message().replace('Value error, ', '')}{where}")
            sys.exit(code)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


app = typer.Typer(cls=_Group,
                  help="SIP-native alert dialer: call a list of people, play a message, collect "
                       "DTMF confirmations, retry, keep the record.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
template_app.command("escalate")(template_escalate)
app.add_typer(template_app, name="template")
app.add_typer(campaign_app, name="campaign")
app.add_typer(settings_app, name="settings")
app.add_typer(history_app, name="history")
app.add_typer(operator_app, name="operator")
app.add_typer(audit_app, name="audit")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.command("nodes")(nodes)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"dialer {version('alert-dialer')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy database URL "
                                     "(default: $DIALER_DB, else sqlite:///dialer.db)."),
    region: str = typer.Option(DEFAULT_REGION, "--region", envvar="DIALER_REGION",
                               help="Region of numbers written without +CC (ISO code)."),
    extension_pattern: str = typer.Option(DEFAULT_EXTENSION_PATTERN, "--extension-pattern",
                                          envvar="DIALER_EXTENSION_PATTERN",
                                          help="Regular expression of an internal extension."),
    max_audio_seconds: float = typer.Option(600.0, "--max-audio-seconds",
                                            envvar="DIALER_MAX_AUDIO_SECONDS",
                                            help="Longest message accepted on import."),
    debug: bool = typer.Option(False, "--debug",
                               help="Show the traceback of an unexpected error (a bug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ("Alert dialer. Example: dialer init && dialer template add Fire --audio fire.wav "
     "--recipients staff.csv")
    import phonenumbers

    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise typer.BadParameter(f"unknown region {region!r}", param_hint="--region")
    try:
        re.compile(extension_pattern)
    except re.error as exc:
        raise typer.BadParameter(f"not a regular expression: {exc}",
                                 param_hint="--extension-pattern") from exc
    if max_audio_seconds <= 0:
        raise typer.BadParameter("must be positive", param_hint="--max-audio-seconds")
    _state["db"] = db
    _state["debug"] = debug
    _state["rules"] = NumberRules(region=region.upper(), extension_pattern=extension_pattern)
    _state["max_audio"] = max_audio_seconds


@app.command()
def init() -> None:
    """Create or upgrade the database; its first caller becomes the first admin.

    The only command that creates a database: a new SQLite file is 0600 and the directories
    it creates 0700, whatever the umask. Example: dialer --db sqlite:///alerts.db init
    """
    from dialer.files import others_can_read

    s = store(ready=False)
    who = actor()
    before, head = bootstrap.schema_revisions(s)
    if before == head:
        s.check_db_role(who)
        roles = s.roles_of(who)
        if s.list_operators() and Role.ADMIN not in roles:
            raise PermissionDenied(who, "init", Role.ADMIN, roles)
    s.migrate()
    first = s.ensure_first_admin(who, now=time.time())
    change = (f"schema {head}, up to date" if before == head else
              f"schema {head}, new" if before is None else f"schema {before} -> {head}")
    out.print(f"database ready: {s.safe_url} ({change})", highlight=False)
    if first:
        err.print(f"note: {who} is its first admin (dialer operator add USER --role ...)",
                  highlight=False)
    path = bootstrap.database_file(s)
    mode = others_can_read(path) if path is not None else None
    if path is not None and mode is not None:  # left as it is: it may be shared on purpose
        err.print(f"note: other users can access {path} (mode {mode:04o}); "
                  f"chmod 600 it unless that is meant", highlight=False)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c",
                                help="TOML configuration (see dialer.toml)."),
    log_format: LogFormat = typer.Option(LogFormat.text, help="Log lines as text or JSON."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    ("Run the daemon: SIP workers, registrations, scheduler, metrics. "
     "Example: dialer serve -c dialer.toml")
    from dialer import config as config_mod

    try:
        cfg = config_mod.load(config)
    except ConfigError as exc:  # not worth a restart: systemd's RestartPreventExitStatus
        say(f"{exc} (dialer config check -c {config} lists every problem)")
        raise typer.Exit(EX_CONFIG) from exc
    cfg = dataclasses.replace(cfg, database_url=_state["db"] or cfg.database_url,
                              log_format=log_format.value)
    setup_logging(verbose, log_format.value)
    try:
        bootstrap.daemon(cfg).run()  # its database must exist: only 'dialer init' creates one
    except DialerError:
        raise  # the operator's to fix: one line
    except Exception:
        # a bug: its traceback goes to the log (the journal), then the one line
        logging.getLogger("dialer.daemon").critical("the daemon failed", exc_info=True)
        raise


@app.command()
def demo(
    recipients: int = typer.Option(20, help="Size of the demo campaign."),
    keep: bool = typer.Option(False, help="Keep the throw-away directory and print its path."),
) -> None:
    """Run a whole campaign against simulated phones on loopback. Example: dialer demo"""
    from cli.demo import run_demo  # here, not at the top: its imports (numpy...) load only for it

    run_demo(out, recipients=recipients, keep=keep)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    """Log to stderr: one line per event, as text or as JSON objects (``--log-format``; the
    daemon passes it on to its workers)."""
    if fmt not in FORMATS:
        raise DialerError(f"--log-format {fmt!r}: text or json")
    logs.setup(fmt, logging.DEBUG if verbose else logging.INFO)
    # Alembic's schema check at start says which plugins it set up, a dozen lines a start
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dialer")


if __name__ == "__main__":
    main()
