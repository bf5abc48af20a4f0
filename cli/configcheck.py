"""``dialer config check``: validate the daemon's TOML configuration without starting it.

Every problem is listed (on stdout, one per line, each with its place in the file), then one
``error:`` line on stderr and exit 1; a config that checks prints what the daemon would run
with. The passwords' values are not needed: their sources are checked (``password_env`` set in
the config, ``password_file`` given), not read. ``dialer serve`` refuses a config that does not
check, with exit code 78 (EX_CONFIG: the unit does not restart on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.common import emit_json, fail, out
from dialer.core.errors import ConfigError

EX_CONFIG = 78  # sysexits.h: configuration error (the unit's RestartPreventExitStatus)

config_app = typer.Typer(help="The daemon's configuration file.", no_args_is_help=True)


def summary(cfg: Any) -> dict[str, Any]:
    """What a checked config runs with (``config check --json``)."""
    return {"path": str(cfg.path), "node": cfg.node, "database": _safe(cfg.database_url),
            "data_dir": str(cfg.data_dir), "workers": cfg.workers,
            "calls_per_worker": cfg.calls_per_worker, "bind": cfg.bind,
            "sip_ports": (f"{cfg.sip_port}-{cfg.sip_port + cfg.workers - 1}"
                          if cfg.sip_port else "any"),
            "trunks": sorted(cfg.trunks), "routes": {k: list(v) for k, v in cfg.routes.items()},
            "metrics": f"{cfg.metrics_bind}:{cfg.metrics_port}" if cfg.metrics_port is not None
            else None, "smtp": cfg.smtp is not None, "alertmanager": _alerts(cfg.alertmanager)}


def _alerts(a: Any) -> dict[str, Any] | None:
    """The receiver's address, where its token comes from (never the token) and its routes."""
    if a is None:
        return None
    return {"listen": f"{a.bind}:{a.port}", "token": a.token_source, "actor": a.actor,
            "routes": [{"matchers": [str(m) for m in r.matchers], "template": r.template,
                        "stop_on_resolve": r.stop_on_resolve} for r in a.routes]}


def _safe(url: str) -> str:
    from dialer.bootstrap import redact

    return redact(url)


@config_app.command("check")
def check(
    config: Path = typer.Option(Path("dialer.toml"), "--config", "-c",
                                help="The TOML file to check."),
    json_out: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Check a configuration: every problem at once, nothing started, no password read.

    Example: dialer config check -c /etc/dialer/dialer.toml
    """
    from dialer import config as config_mod

    try:
        cfg = config_mod.load(config, secrets=False)
    except ConfigError as exc:
        if json_out:
            emit_json({"path": str(config), "ok": False, "problems": exc.problems})
        elif len(exc.problems) > 1:
            for p in exc.problems:
                out.print(f"  {p}", highlight=False, markup=False, soft_wrap=True)
        n = len(exc.problems)
        fail(f"{config}: {n} problems (listed above)" if n > 1 and not json_out
             else str(exc))
    data = summary(cfg)
    if json_out:
        emit_json({**data, "ok": True})
        return
    out.print(f"{config}: ok", highlight=False)
    for key, value in data.items():
        if key != "path":
            out.print(f"  {key}: {value}", highlight=False, markup=False)
