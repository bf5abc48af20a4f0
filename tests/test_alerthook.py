"""The Alertmanager receiver (dialer.alerthook) over real HTTP on loopback and a real store
(SQLite and PostgreSQL), fed notifications of Alertmanager's documented webhook schema
(version 4: https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).

Acceptance (issue 15, part 6): a firing payload launches one campaign; the same payload ten
times launches one; a wrong token is 401 and stores nothing; a resolved payload stops it when
so configured. Around them: malformed and unauthenticated requests store nothing, a new firing
period launches again, a new receiver over the same database (a restart, another node) does
not relaunch, and the launch is audited as the receiver, never as anyone the request names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.alerthook import PATH, AlertReceiver
from dialer.config import AlertmanagerConfig
from dialer.configfields import Secret
from dialer.core.alerts import AlertRoute, parse_matcher
from dialer.core.domain import CampaignSettings
from dialer.core.errors import DialerError
from dialer.core.permissions import Role
from dialer.metrics import Metrics
from dialer.storage.store import SqlStore
from dialer.testing.setup import recipient
from tests.fixtures_core import _reset_pg, pg_database  # noqa: F401 - pytest fixture

TOKEN = "s3cret-token-of-the-test"
NOW = 1_800_000_000.0
STARTS = "2027-01-15T08:00:00.123456789Z"  # Alertmanager writes nanoseconds
LATER = "2027-01-15T10:30:00Z"


def notification(status: str = "firing", *, alertname: str = "PlantFire",
                 fingerprint: str = "a1b2c3d4e5f60718", starts_at: str = STARTS,
                 ends_at: str = "0001-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    """A webhook notification as Alertmanager 0.25 sends it (one alert)."""
    lab = {"alertname": alertname, "severity": "critical", "site": "plant-2", **labels}
    return {
        "version": "4",
        "groupKey": "{}:{alertname=\"" + alertname + "\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "dialer",
        "groupLabels": {"alertname": alertname},
        "commonLabels": lab,
        "commonAnnotations": {"summary": "Fire in hall 2"},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": status,
            "labels": lab,
            "annotations": {"summary": "Fire in hall 2"},
            "startsAt": starts_at,
            "endsAt": ends_at if status == "firing" else LATER,
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=fire",
            "fingerprint": fingerprint,
        }],
    }


def resolved(**kw: Any) -> dict[str, Any]:
    return notification("resolved", **kw)


ROUTES = (
    AlertRoute(index=1, matchers=(parse_matcher('alertname="PlantFire"'),
                                  parse_matcher('severity=~"critical|page"')),
               template="Fire", stop_on_resolve=True),
    AlertRoute(index=2, matchers=(parse_matcher('alertname="ShiftCallout"'),),
               template="Shift", stop_on_resolve=False),
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dialer.db'}"
    pg = str(request.getfixturevalue("pg_database"))
    _reset_pg(pg)
    return pg


def prepare(url: str, *, role: bool = True) -> SqlStore:
    """An initialised store with templates Fire and Shift, and the receiver's operator."""
    store = SqlStore(url)
    store.migrate()
    audio = b"fake audio"
    sha = hashlib.sha256(audio).hexdigest()
    store.add_media(data=audio, sha256=sha, rate=8000, seconds=4.0, source=None, now=NOW)
    for name in ("Fire", "Shift"):
        store.add_template(name=name, settings=CampaignSettings(), audio_sha=sha,
                           audio_seconds=4.0, recipients=[recipient("101"), recipient("102")],
                           now=NOW, actor="admin")
    if role:
        store.set_operator("alertmanager", frozenset({Role.CAMPAIGNS}), actor="admin", now=NOW)
    return store


class Hook:
    """A started receiver and a client for it."""

    def __init__(self, store: SqlStore, *, max_body: int = 1 << 20,
                 routes: tuple[AlertRoute, ...] = ROUTES) -> None:
        self.store = store
        self.metrics = Metrics()
        self.changes = 0
        self.clock = NOW + 10
        cfg = AlertmanagerConfig(bind="127.0.0.1", port=0, token=Secret(TOKEN),
                                 token_source="env DIALER_AM_TOKEN", max_body=max_body,
                                 routes=routes)
        self.receiver = AlertReceiver(cfg, store, clock=lambda: self.clock,
                                      metrics=self.metrics, on_change=self._changed)
        self.receiver.start()

    def _changed(self) -> None:
        self.changes += 1

    def post(self, payload: Any, *, token: str | None = TOKEN, scheme: str = "Bearer",
             path: str = PATH, method: str = "POST",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.receiver.port}{path}",
                                     data=body if method in ("POST", "PUT") else None,
                                     method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        if token is not None:
            req.add_header("Authorization", f"{scheme} {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read()), resp.headers
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"{}"), exc.headers

    def counted(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def stop(self) -> None:
        self.receiver.stop()


@pytest.fixture
def hook(url: str) -> Iterator[Hook]:
    h = Hook(prepare(url))
    try:
        yield h
    finally:
        h.stop()
        h.store.dispose()


def stored(store: SqlStore) -> dict[str, int]:
    """How many rows the tables a launch writes hold."""
    return {"alert_launches": len(store.alert_launches()),
            "campaigns": len(store.list_campaigns()), "runs": len(store.list_runs()),
            "audit": len([a for a in store.audit_list() if a["actor"] == "alertmanager"])}


NOTHING = {"alert_launches": 0, "campaigns": 0, "runs": 0, "audit": 0}


# ----- acceptance -----


def test_a_firing_payload_launches_one_campaign_named_after_the_alert(hook: Hook) -> None:
    status, reply, _ = hook.post(notification())
    assert status == 200
    [done] = reply["alerts"]
    assert done["action"] == "launched" and done["route"] == 1
    cid = done["campaign"]
    detail = hook.store.campaign_detail(cid)
    assert (detail["name"], detail["template"]) == ("PlantFire", "Fire")
    assert [r["number"] for r in detail["recipients"]] == ["101", "102"]
    assert detail["alert"]["fingerprint"] == "a1b2c3d4e5f60718"
    assert detail["alert"]["starts_at"] == "2027-01-15T08:00:00.123456Z"
    assert detail["alert"]["labels"]["site"] == "plant-2"
    assert stored(hook.store) == {"alert_launches": 1, "campaigns": 1, "runs": 1, "audit": 1}
    [audit] = [a for a in hook.store.audit_list() if a["action"] == "campaign.start"]
    assert audit["actor"] == "alertmanager"
    events = hook.store.events_of(cid)
    assert [e["kind"] for e in events][:2] == ["campaign_created", "alert_firing"]
    assert {e["actor"] for e in events} == {"alertmanager"}
    assert hook.changes == 1  # the daemon's loop is told to run a pass
    assert hook.counted("dialer_alert_launches_total", alertname="PlantFire",
                        template="Fire") == 1


def test_the_same_payload_ten_times_launches_one_campaign(hook: Hook) -> None:
    replies = [hook.post(notification()) for _ in range(10)]
    assert [s for s, _, _ in replies] == [200] * 10
    actions = [r["alerts"][0]["action"] for _, r, _ in replies]
    assert actions == ["launched"] + ["duplicate"] * 9
    assert {r["alerts"][0]["campaign"] for _, r, _ in replies} == {replies[0][1]["alerts"][0]
                                                                  ["campaign"]}
    assert stored(hook.store) == {"alert_launches": 1, "campaigns": 1, "runs": 1, "audit": 1}
    assert hook.counted("dialer_alertmanager_alerts_total", action="duplicate") == 9
    assert hook.counted("dialer_alertmanager_requests_total", result="ok") == 10


@pytest.mark.parametrize("token,scheme", [("wrong-token", "Bearer"), (None, "Bearer"),
                                          (TOKEN, "Basic"), ("", "Bearer"),
                                          (TOKEN + "x", "Bearer"), (TOKEN[:-1], "Bearer")])
def test_a_wrong_or_missing_token_is_401_and_stores_nothing(hook: Hook, token: str | None,
                                                            scheme: str) -> None:
    status, reply, headers = hook.post(notification(), token=token, scheme=scheme)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in json.dumps(reply)
    assert stored(hook.store) == NOTHING
    assert hook.counted("dialer_alertmanager_requests_total", result="unauthorized") == 1


def test_a_resolved_payload_stops_the_campaign_when_so_configured(hook: Hook) -> None:
    _, reply, _ = hook.post(notification())
    cid = reply["alerts"][0]["campaign"]
    hook.clock += 60
    status, reply, _ = hook.post(resolved())
    assert status == 200
    assert reply["alerts"][0] | {"action": "stopped", "campaign": cid} == reply["alerts"][0]
    detail = hook.store.campaign_detail(cid)
    assert detail["state"] == "terminated"
    assert detail["alert"]["stopped_on_resolve"] is True
    assert detail["alert"]["resolved_at"] is not None
    assert detail["alert"]["ends_at"] == "2027-01-15T10:30:00.000000Z"
    [stop] = [e for e in hook.store.events_of(cid) if e["kind"] == "campaign_state"
              and e["detail"].get("new") == "terminated"]
    assert stop["actor"] == "alertmanager"
    assert stop["detail"]["cause"] == "alert PlantFire resolved"
    assert [a["actor"] for a in hook.store.audit_list() if a["action"] == "campaign.stop"] \
        == ["alertmanager"]
    # the resolution repeated (Alertmanager sends it again): nothing more
    again = [hook.post(resolved())[1]["alerts"][0]["action"] for _ in range(3)]
    assert again == ["duplicate"] * 3
    assert len([e for e in hook.store.events_of(cid) if e["kind"] == "alert_resolved"]) == 1


# ----- around them -----


def test_a_resolution_leaves_the_campaign_running_without_stop_on_resolve(hook: Hook) -> None:
    _, reply, _ = hook.post(notification(alertname="ShiftCallout"))
    cid = reply["alerts"][0]["campaign"]
    state = hook.store.campaign_detail(cid)["state"]
    _, reply, _ = hook.post(resolved(alertname="ShiftCallout"))
    assert reply["alerts"][0]["action"] == "resolved"
    detail = hook.store.campaign_detail(cid)
    assert detail["state"] == state == "scheduled"  # as launched (no daemon ran a pass)
    assert detail["alert"]["resolved_at"] is not None
    assert detail["alert"]["stopped_on_resolve"] is False
    [ev] = [e for e in hook.store.events_of(cid) if e["kind"] == "alert_resolved"]
    assert ev["detail"]["stopped"] is False


def test_a_new_firing_period_after_the_resolution_launches_again(hook: Hook) -> None:
    first = hook.post(notification())[1]["alerts"][0]["campaign"]
    hook.post(resolved())
    status, reply, _ = hook.post(notification(starts_at="2027-01-15T12:00:00Z"))
    assert status == 200 and reply["alerts"][0]["action"] == "launched"
    second = reply["alerts"][0]["campaign"]
    assert second != first
    assert hook.store.campaign_detail(first)["state"] == "terminated"
    assert hook.store.campaign_detail(second)["state"] == "scheduled"
    assert stored(hook.store)["campaigns"] == 2
    # and its repetitions do not relaunch either
    assert hook.post(notification(starts_at="2027-01-15T12:00:00Z"))[1]["alerts"][0][
        "action"] == "duplicate"


def test_a_new_receiver_over_the_same_database_does_not_relaunch(url: str, hook: Hook) -> None:
    """A restarted daemon (or another node behind the load balancer) is another receiver with
    another store: the period is in the database, not in a receiver's memory."""
    cid = hook.post(notification())[1]["alerts"][0]["campaign"]
    hook.stop()
    again = Hook(SqlStore(url))
    try:
        status, reply, _ = again.post(notification())
        assert status == 200
        assert reply["alerts"][0] | {"action": "duplicate", "campaign": cid} == reply["alerts"][0]
        assert stored(again.store)["campaigns"] == 1
        # and it still stops that campaign on the resolution
        assert again.post(resolved())[1]["alerts"][0]["action"] == "stopped"
        assert again.store.campaign_detail(cid)["state"] == "terminated"
    finally:
        again.stop()
        again.store.dispose()


def test_concurrent_receivers_launch_one_campaign(url: str, hook: Hook) -> None:
    """Two receivers (two stores: two nodes) get the same notification at once, 8 times."""
    other = Hook(SqlStore(url))
    results: list[str] = []
    barrier = threading.Barrier(8)

    def send(h: Hook) -> None:
        barrier.wait(10)
        status, reply, _ = h.post(notification())
        results.append(f"{status} {reply['alerts'][0]['action']}")

    try:
        threads = [threading.Thread(target=send, args=(h,)) for h in [hook, other] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == ["200 duplicate"] * 7 + ["200 launched"]
        assert stored(hook.store) == {"alert_launches": 1, "campaigns": 1, "runs": 1,
                                      "audit": 1}
    finally:
        other.stop()
        other.store.dispose()


BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("not JSON", lambda p: b'{"version": "4", "alerts": ['),
    ("not UTF-8", lambda p: b'{"version": "\xff"}'),
    ("nested too deep", lambda p: b"[" * 200_000),
    ("not an object", lambda p: [p]),
    ("version 3", lambda p: p | {"version": "3"}),
    ("no alerts", lambda p: p | {"alerts": []}),
    ("no groupKey", lambda p: {k: v for k, v in p.items() if k != "groupKey"}),
    ("no fingerprint", lambda p: _alert(p, fingerprint=None)),
    ("bad fingerprint", lambda p: _alert(p, fingerprint="../../etc")),
    ("status unknown", lambda p: _alert(p, status="pending")),
    ("startsAt not a time", lambda p: _alert(p, startsAt="yesterday")),
    ("startsAt without zone", lambda p: _alert(p, startsAt="2027-01-15T08:00:00")),
    ("a label not a string", lambda p: _alert(p, labels={"alertname": "PlantFire",
                                                         "severity": 5})),
    ("labels not an object", lambda p: _alert(p, labels=["alertname"])),
]


def _alert(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    p = copy.deepcopy(payload)
    for k, v in changes.items():
        if v is None:
            del p["alerts"][0][k]
        else:
            p["alerts"][0][k] = v
    return p


@pytest.mark.parametrize("what,bad", BAD_BODIES, ids=[w for w, _ in BAD_BODIES])
def test_a_malformed_payload_is_400_and_stores_nothing(hook: Hook, what: str,
                                                       bad: Callable[[dict[str, Any]], Any]
                                                       ) -> None:
    status, reply, _ = hook.post(bad(notification()))
    assert status == 400, what
    assert reply["error"]
    assert stored(hook.store) == NOTHING
    assert hook.counted("dialer_alertmanager_requests_total", result="bad_request") == 1


def test_other_paths_methods_and_oversized_bodies_are_refused(url: str, hook: Hook) -> None:
    assert hook.post(notification(), path="/")[0] == 404
    assert hook.post(notification(), path="/alertmanager/x")[0] == 404
    assert hook.post(notification(), path="/metrics", token=None)[0] == 404
    status, _, headers = hook.post(notification(), method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    assert hook.post(notification(), method="PUT")[0] == 405
    small = Hook(hook.store, max_body=1024)
    try:
        big = notification(**{f"label{i}": "x" * 50 for i in range(40)})
        assert small.post(big)[0] == 413
        assert small.post(notification())[0] == 200  # a notification of normal size is fine
    finally:
        small.stop()
    assert stored(hook.store)["campaigns"] == 1
    assert hook.counted("dialer_alertmanager_requests_total", result="not_found") == 3
    assert hook.counted("dialer_alertmanager_requests_total", result="method_not_allowed") == 2


def test_without_the_campaigns_role_the_receiver_is_refused_and_stores_nothing(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    h = Hook(prepare(url, role=False))
    try:
        assert "'alertmanager' does not hold the campaigns role" in caplog.text  # at start
        status, reply, _ = h.post(notification())
        assert status == 403
        assert "dialer operator add alertmanager --role campaigns" in reply["error"]
        assert stored(h.store) == NOTHING
        # the request cannot name another actor: an operator named in it changes nothing
        h.store.set_operator("eve", frozenset({Role.ADMIN}), actor="admin", now=NOW)
        payload = notification(actor="eve", operator="eve", user="eve")
        status, _, _ = h.post(payload, headers={"X-Remote-User": "eve", "From": "eve"})
        assert status == 403
        h.store.set_operator("alertmanager", frozenset({Role.CAMPAIGNS}), actor="admin",
                             now=NOW)
        status, reply, _ = h.post(payload)
        assert status == 200
        assert h.store.campaign_detail(reply["alerts"][0]["campaign"])["alert"]
        assert {a["actor"] for a in h.store.audit_list() if a["action"] == "campaign.start"} \
            == {"alertmanager"}
    finally:
        h.stop()
        h.store.dispose()


def test_an_alert_no_route_takes_is_answered_and_stores_nothing(hook: Hook) -> None:
    status, reply, _ = hook.post(notification(alertname="DiskFull"))
    assert status == 200 and reply["alerts"][0]["action"] == "unmatched"
    status, reply, _ = hook.post(notification(severity="info"))  # PlantFire, not critical
    assert reply["alerts"][0]["action"] == "unmatched"
    assert hook.post(resolved(alertname="DiskFull"))[1]["alerts"][0]["action"] == "unmatched"
    assert stored(hook.store) == NOTHING


def test_a_disabled_template_launches_nothing_until_enabled(hook: Hook) -> None:
    hook.store.edit_template("Fire", actor="admin", now=NOW, enabled=False)
    status, reply, _ = hook.post(notification())
    assert status == 200
    assert reply["alerts"][0]["action"] == "failed"
    assert "disabled" in reply["alerts"][0]["error"]
    assert stored(hook.store) == NOTHING  # so the next notification tries again
    hook.store.edit_template("Fire", actor="admin", now=NOW, enabled=True)
    assert hook.post(notification())[1]["alerts"][0]["action"] == "launched"
    assert hook.counted("dialer_alertmanager_alerts_total", action="failed") == 1


def test_a_period_seen_resolved_first_is_not_launched_by_a_late_firing(hook: Hook) -> None:
    assert hook.post(resolved())[1]["alerts"][0]["action"] == "resolved"
    assert hook.post(notification())[1]["alerts"][0]["action"] == "duplicate"
    assert stored(hook.store)["campaigns"] == 0
    assert stored(hook.store)["alert_launches"] == 1


def test_each_alert_of_a_group_is_its_own_period(hook: Hook) -> None:
    """A grouped notification: two instances of one alert (two fingerprints) and one alert of
    another route; the repeat of the group launches nothing more."""
    note = notification(instance="a")
    second = notification(instance="b", fingerprint="ffff0000ffff0000")["alerts"][0]
    third = notification(alertname="ShiftCallout", fingerprint="1234")["alerts"][0]
    note["alerts"] += [second, third]
    status, reply, _ = hook.post(note)
    assert status == 200
    assert [(a["action"], a.get("route")) for a in reply["alerts"]] == [
        ("launched", 1), ("launched", 1), ("launched", 2)]
    assert [a["action"] for a in hook.post(note)[1]["alerts"]] == ["duplicate"] * 3
    assert stored(hook.store)["campaigns"] == 3


def test_the_token_never_reaches_the_log_or_the_database(hook: Hook,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level("DEBUG")
    hook.post(notification(), token="Wr0ng-T0ken-given")
    cid = hook.post(notification())[1]["alerts"][0]["campaign"]
    hook.post(resolved())
    assert TOKEN not in caplog.text
    assert "Wr0ng-T0ken" not in caplog.text
    blob = json.dumps([hook.store.run_history(cid), hook.store.audit_list(),
                       hook.store.alert_launches()], default=str)
    assert TOKEN not in blob
    assert TOKEN not in repr(hook.receiver.config)


def test_the_receiver_listens_on_ipv6_too(url: str) -> None:
    store = prepare(url)
    cfg = AlertmanagerConfig(bind="::1", port=0, token=Secret(TOKEN), token_source="env X",
                             routes=ROUTES)
    receiver = AlertReceiver(cfg, store)
    try:
        receiver.start()
    except DialerError as exc:  # a machine without IPv6 on loopback
        pytest.skip(str(exc))
    try:
        req = urllib.request.Request(f"http://[::1]:{receiver.port}{PATH}", method="POST",
                                     data=json.dumps(notification()).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["alerts"][0]["action"] == "launched"
    finally:
        receiver.stop()
        store.dispose()


def test_a_taken_port_is_one_clear_error(hook: Hook) -> None:
    cfg = AlertmanagerConfig(bind="127.0.0.1", port=hook.receiver.port, token=Secret(TOKEN),
                             routes=ROUTES)
    with pytest.raises(DialerError, match=r"\[alertmanager\]: cannot listen on 127.0.0.1:"):
        AlertReceiver(cfg, hook.store).start()
