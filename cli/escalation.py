"""``dialer template escalate``: a template's follow-up (``dialer.core.escalation``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import typer
from rich.table import Table

from cli.choices import EscalateWhen, complete_template
from cli.common import actor, authorized, emit_json, fail, out
from dialer.core import escalation, validation
from dialer.core.permissions import Role

CHAIN_LIMIT = 50  # the longest chain of follow-ups followed when looking for a cycle


def template_escalate(
    name: str = typer.Argument(..., autocompletion=complete_template,
                               help="The template whose campaigns escalate."),
    to: Optional[str] = typer.Option(None, "--to", autocompletion=complete_template,
                                     help="The follow-up template the dialer launches."),
    when: EscalateWhen = typer.Option(EscalateWhen.incomplete, "--when",
                                      help="incomplete: when the campaign ends incomplete; "
                                           "below: when fewer than --below recipients are "
                                           "reached --after minutes after its start."),
    below: Optional[int] = typer.Option(None, "--below", help="With --when below: the "
                                                              "recipients to have reached."),
    after: Optional[float] = typer.Option(None, "--after", help="With --when below: minutes "
                                                                "after the campaign's start."),
    pass_unreached: bool = typer.Option(False, "--pass-unreached/--own-list",
                                        help="The follow-up also calls the campaign's "
                                             "unreached recipients, after its own list."),
    none: bool = typer.Option(False, "--none", help="No escalation (removes the rule)."),
    json_out: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """Escalate a template's campaigns to a follow-up template, launched by the dialer once per
    campaign; campaigns already launched keep the rule they started with.

    Example: dialer template escalate Fire --to "Fire managers" --when below --below 5 --after 10
    """
    s = authorized(Role.CAMPAIGNS, "template escalate")
    tpl = s.get_template(name, with_recipients=False)
    if none == (to is not None):
        fail("give --to TEMPLATE, or --none to remove the escalation")
    st = dataclasses.replace(
        tpl.settings, escalate_to=to, escalate_when=when.value,
        escalate_below=below if when is EscalateWhen.below else None,
        escalate_after=after * 60 if after is not None and when is EscalateWhen.below
        else None, escalate_unreached=pass_unreached and to is not None)
    if to is not None:
        if when is EscalateWhen.incomplete and (below is not None or after is not None):
            fail("--below and --after go with --when below")
        escalation.check(st, name)
        chain: list[str] = [name]
        step: str | None = to
        while step is not None and len(chain) <= CHAIN_LIMIT:  # NotFound: one line, exit 1
            if step in chain:
                fail("escalation cycle: " + " -> ".join([*chain, step]))
            chain.append(step)
            step = s.get_template(step, with_recipients=False).settings.escalate_to
    validation.settings(st)
    done = s.edit_template(name, actor=actor(), now=time.time(),
                           settings=st if st != tpl.settings else None)
    if json_out:
        emit_json({"name": name, "escalation": escalation.describe(escalation.rule_of(st)),
                   "changes": done})
        return
    rule = escalation.rule_of(st)
    out.print(f"template {name!r} escalates {escalation.describe(rule)}" if rule
              else f"template {name!r}: no escalation")
    if done:
        t = Table("field", "old", "new")
        for key, (old, new) in done.items():
            t.add_row(key, str(old), str(new))
        out.print(t)


def escalation_lines(detail: dict[str, object]) -> list[str]:
    """``campaign show``'s lines on a run's escalation (none without one)."""
    links = detail.get("escalation")
    if not isinstance(links, dict):
        return []
    lines = []
    if links.get("escalated_from") is not None:
        lines.append(f"escalation of campaign {links['escalated_from']}")
    if links.get("rule"):
        where = {"armed": "not decided yet", "never": "not needed",
                 "failed": "failed (see history)"}.get(str(links.get("state")), "")
        if links.get("escalated_to") is not None:
            where = f"launched: campaign {links['escalated_to']}"
        lines.append(f"escalates {links['rule']}: {where}")
    return lines
