"""Templates (a campaign's settings, message and recipient list before launch) and the audio
they play."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dialer.core.domain import CampaignSettings, CampaignState, Kind
from dialer.core.errors import CsvError, NotFound, ValidationError
from dialer.core.recipients import NumberRules, Recipient, normalise_number
from dialer.files import write_private
from dialer.storage.history import History
from dialer.storage.models import (
    CampaignRow,
    MediaRow,
    TemplateRecipientRow,
    TemplateRow,
)
from dialer.storage.records import (
    TemplateView,
    at_dt,
    settings_from_dict,
    settings_to_dict,
    to_dt,
)


class Templates(History):
    """Templates, their recipient lists, and the audio files."""

    # ----- templates -----

    def add_media(self, *, data: bytes, sha256: str, rate: int, seconds: float,
                  source: str | None, now: float) -> str:
        """Store a normalised audio file (once per content) and return its SHA-256."""
        with self.session() as s:
            if s.get(MediaRow, sha256) is None:
                s.add(MediaRow(sha256=sha256, rate=rate, seconds=seconds, source=source,
                               data=data, created_at=to_dt(now)))
        return sha256

    def media_file(self, sha256: str, cache_dir: Path) -> Path:
        """The audio as a local file (written once into ``cache_dir``, named by its hash)."""
        path = cache_dir / f"{sha256}.wav"
        if not path.exists():
            with self.session() as s:
                row = s.get(MediaRow, sha256)
                if row is None:
                    raise NotFound(f"no audio {sha256} in the database")
                data = row.data
            write_private(path, data)  # 0600 in a 0700 directory, whatever the umask
        return path

    def add_template(self, *, name: str, settings: CampaignSettings, audio_sha: str,
                     audio_seconds: float, recipients: Sequence[Recipient], now: float,
                     actor: str, enabled: bool = True, audit: bool = True) -> int:
        try:
            with self.session() as s:
                if s.scalar(select(TemplateRow.id).where(TemplateRow.name == name)) is not None:
                    raise ValidationError(f"a template named {name!r} already exists")
                row = TemplateRow(name=name, enabled=enabled, settings=settings_to_dict(settings),
                                  audio_sha=audio_sha, audio_seconds=audio_seconds,
                                  created_at=to_dt(now), updated_at=to_dt(now))
                s.add(row)
                s.flush()
                self._insert_template_recipients(s, row.id, recipients, 1)
                self._event(s, "template_added", at=now, actor=actor, template=name)
                if audit:
                    self._audit(s, actor=actor, now=now, action="template.add",
                                target=f"template {name}",
                                new={"settings": settings_to_dict(settings), "enabled": enabled,
                                     "audio_sha256": audio_sha, "recipients": len(recipients)})
                return row.id
        except IntegrityError as exc:
            raise ValidationError(f"template {name!r} could not be stored: {exc.orig}") from exc

    def get_template(self, name: str, *, with_recipients: bool = True) -> TemplateView:
        """A template; its recipient list is left empty with ``with_recipients=False``."""
        with self.session() as s:
            row = s.scalar(select(TemplateRow).where(TemplateRow.name == name))
            if row is None:
                raise NotFound(f"no template named {name!r}")
            recs = s.execute(select(TemplateRecipientRow.number, TemplateRecipientRow.kind,
                                    TemplateRecipientRow.name, TemplateRecipientRow.email,
                                    TemplateRecipientRow.timezone)
                             .where(TemplateRecipientRow.template_id == row.id)
                             .order_by(TemplateRecipientRow.position)).all() \
                if with_recipients else []
            return TemplateView(id=row.id, name=row.name, enabled=row.enabled,
                                settings=settings_from_dict(row.settings),
                                audio_sha=row.audio_sha, audio_seconds=row.audio_seconds,
                                recipients=[Recipient(number=number, kind=Kind(kind),
                                                      name=rname, email=email, timezone=tz)
                                            for number, kind, rname, email, tz in recs])

    def list_templates(self) -> list[dict[str, Any]]:
        with self.session() as s:
            counts = dict(s.execute(select(TemplateRecipientRow.template_id, func.count())
                                    .group_by(TemplateRecipientRow.template_id)).all())
            out = []
            for row in s.scalars(select(TemplateRow).order_by(TemplateRow.name)):
                st = settings_from_dict(row.settings)
                out.append({"id": row.id, "name": row.name, "enabled": row.enabled,
                            "priority": st.priority, "attempts": st.attempts,
                            "recipients": counts.get(row.id, 0),
                            "audio_seconds": round(row.audio_seconds, 2)})
            return out

    def _insert_template_recipients(self, s: Session, template_id: int,
                                    recs: Sequence[Recipient], first: int) -> None:
        """A template's recipients at positions ``first``, ``first + 1``... in one executemany."""
        if recs:
            s.execute(insert(cast(Table, TemplateRecipientRow.__table__)), [
                {"template_id": template_id, "position": first + i, "number": r.number,
                 "name": r.name, "email": r.email, "kind": r.kind.value,
                 "timezone": r.timezone}
                for i, r in enumerate(recs)])

    # ----- template editing -----

    def _template_row(self, s: Session, name: str, lock: bool = False) -> TemplateRow:
        q = select(TemplateRow).where(TemplateRow.name == name)
        row = s.scalar(q.with_for_update() if lock and not self.sqlite else q)
        if row is None:
            raise NotFound(f"no template named {name!r}")
        return row

    def _template_recipients(self, s: Session, tid: int) -> list[TemplateRecipientRow]:
        return list(s.scalars(select(TemplateRecipientRow)
                              .where(TemplateRecipientRow.template_id == tid)
                              .order_by(TemplateRecipientRow.position)))

    def edit_template(self, name: str, *, actor: str, now: float, new_name: str | None = None,
                      enabled: bool | None = None, audio_sha: str | None = None,
                      audio_seconds: float | None = None,
                      settings: CampaignSettings | None = None) -> dict[str, Any]:
        """Change a template: name, enable state, audio and/or settings. Returns the changes
        as {field: [old, new]} (only fields whose value changed)."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            changes: dict[str, list[Any]] = {}
            if new_name is not None and new_name != row.name:
                if s.scalar(select(TemplateRow.id).where(TemplateRow.name == new_name)):
                    raise ValidationError(f"a template named {new_name!r} already exists")
                changes["name"] = [row.name, new_name]
                row.name = new_name
            if enabled is not None and enabled != row.enabled:
                changes["enabled"] = [row.enabled, enabled]
                row.enabled = enabled
            if audio_sha is not None and audio_sha != row.audio_sha:
                changes["audio_sha256"] = [row.audio_sha, audio_sha]
                row.audio_sha = audio_sha
                row.audio_seconds = float(audio_seconds or 0.0)
            if settings is not None:
                old = settings_from_dict(row.settings)
                new = dataclasses.replace(settings, display_name=row.name)
                for key, value in settings_to_dict(new).items():
                    was = settings_to_dict(old).get(key)
                    if value != was and key != "display_name":
                        changes[key] = [was, value]
                row.settings = settings_to_dict(new)
            elif "name" in changes:
                row.settings = {**row.settings, "display_name": row.name}
            if changes:
                row.updated_at = at_dt(now)
                self._audit(s, actor=actor, now=now, action="template.edit",
                            target=f"template {name}",
                            old={k: v[0] for k, v in changes.items()},
                            new={k: v[1] for k, v in changes.items()})
            return changes

    def clone_template(self, name: str, new_name: str, *, actor: str, now: float) -> int:
        tpl = self.get_template(name)
        st = dataclasses.replace(tpl.settings, display_name=new_name)
        tid = self.add_template(name=new_name, settings=st, audio_sha=tpl.audio_sha,
                                audio_seconds=tpl.audio_seconds, recipients=tpl.recipients,
                                now=now, actor=actor, enabled=tpl.enabled, audit=False)
        with self.session() as s:
            self._audit(s, actor=actor, now=now, action="template.clone",
                        target=f"template {new_name}", old={"from": name},
                        new={"name": new_name, "recipients": len(tpl.recipients)})
        return tid

    def delete_template(self, name: str, *, actor: str, now: float) -> int:
        """Delete a template and its recipient list; campaigns launched from it keep their
        snapshot and go on. Returns how many unfinished campaigns came from it."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            running = s.scalar(select(func.count()).select_from(CampaignRow).where(
                CampaignRow.template_id == row.id,
                CampaignRow.state.notin_([CampaignState.COMPLETED.value,
                                          CampaignState.TERMINATED.value]))) or 0
            s.execute(update(CampaignRow).where(CampaignRow.template_id == row.id)
                      .values(template_id=None))
            s.execute(delete(TemplateRecipientRow).where(
                TemplateRecipientRow.template_id == row.id))
            old = {"settings": row.settings, "enabled": row.enabled,
                   "audio_sha256": row.audio_sha}
            s.delete(row)
            self._audit(s, actor=actor, now=now, action="template.delete",
                        target=f"template {name}", old=old)
            return int(running)

    def _match(self, rows: Sequence[Any], ref: str, rules: NumberRules, what: str) -> Any:
        """A recipient by reference: ``#N`` is position N; a number in the list wins over a
        position; else a position; else the number written another way (normalised)."""
        text = ref.strip()
        if text.startswith("#") and text[1:].isdigit():
            hit = [r for r in rows if r.position == int(text[1:])]
        else:
            hit = [r for r in rows if r.number == text]
            if not hit and text.isdigit():
                hit = [r for r in rows if r.position == int(text)]
            if not hit:
                try:
                    number, _ = normalise_number(text, rules)
                except ValidationError:
                    number = None
                hit = [r for r in rows if number is not None and r.number == number]
        if not hit:
            raise NotFound(f"no recipient {ref!r} in {what}")
        return hit[0]

    def template_recipient_add(self, name: str, rec: Recipient, *, actor: str, now: float,
                               position: int | None = None) -> int:
        """Add one recipient (at the end, or at ``position``); returns its position."""
        return self.template_recipients_import(name, [rec], actor=actor, now=now,
                                               position=position, source=None)[0]

    def template_recipients_import(self, name: str, recs: Sequence[Recipient], *, actor: str,
                                   now: float, replace: bool = False,
                                   position: int | None = None,
                                   source: str | None = "import",
                                   lines: Sequence[int] | None = None) -> list[int]:
        """Append (or with ``replace`` substitute) recipients, all or nothing: a number already
        in the list is refused, naming the line (``lines``) and the position it repeats."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            existing = [] if replace else self._template_recipients(s, row.id)
            have = {r.number: r.position for r in existing}
            problems: list[tuple[int, str]] = []
            for i, r in enumerate(recs):
                if r.number in have:
                    line = lines[i] if lines else i + 1
                    problems.append((line, f"{r.number} is already recipient {have[r.number]} "
                                           f"of template {name!r}"))
            if problems:
                if source is None:
                    raise ValidationError(problems[0][1])
                raise CsvError(source, problems)
            if replace:
                s.execute(delete(TemplateRecipientRow).where(
                    TemplateRecipientRow.template_id == row.id))
                s.flush()
            at = len(existing) + 1 if position is None else max(1, min(position,
                                                                       len(existing) + 1))
            for held in existing:  # make room after the insertion point
                if held.position >= at:
                    held.position += len(recs)
            s.flush()
            self._insert_template_recipients(s, row.id, recs, at)
            row.updated_at = at_dt(now)
            self._audit(s, actor=actor, now=now,
                        action="recipients.replace" if replace else "recipients.add",
                        target=f"template {name}",
                        new=[{"position": at + i, "number": r.number, "name": r.name,
                              "email": r.email, "kind": r.kind.value,
                              **({"timezone": r.timezone} if r.timezone else {})}
                             for i, r in enumerate(recs)])
            return [at + i for i in range(len(recs))]

    def template_recipient_remove(self, name: str, ref: str, *, actor: str, now: float,
                                  rules: NumberRules = NumberRules()) -> dict[str, Any]:
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            recs = self._template_recipients(s, row.id)
            hit = self._match(recs, ref, rules, f"template {name!r}")
            old = _template_rec(hit)
            s.delete(hit)
            s.flush()
            for r in recs:
                if r.position > hit.position:
                    r.position -= 1
            row.updated_at = at_dt(now)
            self._audit(s, actor=actor, now=now, action="recipients.remove",
                        target=f"template {name}", old=old)
            return old

    def template_recipient_move(self, name: str, ref: str, to: int, *, actor: str, now: float,
                                rules: NumberRules = NumberRules()) -> int:
        """Move a recipient to position ``to`` (1-based, clamped); returns the new position."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            recs = self._template_recipients(s, row.id)
            hit = self._match(recs, ref, rules, f"template {name!r}")
            to = max(1, min(to, len(recs)))
            order = [r for r in recs if r is not hit]
            order.insert(to - 1, hit)
            old_pos = hit.position
            for i, r in enumerate(order):
                r.position = i + 1
            row.updated_at = at_dt(now)
            if old_pos != to:
                self._audit(s, actor=actor, now=now, action="recipients.move",
                            target=f"template {name}", old={"number": hit.number,
                                                            "position": old_pos},
                            new={"number": hit.number, "position": to})
            return to


def _template_rec(r: TemplateRecipientRow) -> dict[str, Any]:
    return {"position": r.position, "number": r.number, "name": r.name, "email": r.email,
            "kind": r.kind, **({"timezone": r.timezone} if r.timezone else {})}
