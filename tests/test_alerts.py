"""The pure decisions of launch from monitoring (dialer.core.alerts): matchers in Alertmanager's
syntax and semantics, the route an alert takes, new firing periods, what a resolution does,
the key of a period and the campaign's name."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer.core.alerts import (
    Alert,
    AlertAction,
    AlertRoute,
    AlertStatus,
    KnownPeriod,
    MatchOp,
    campaign_name,
    describe,
    on_firing,
    on_resolved,
    parse_matcher,
    period_start,
    route_for,
)
from dialer.core.domain import CampaignState
from dialer.core.errors import ValidationError


@pytest.mark.parametrize("text,label,op,value", [
    ('severity="critical"', "severity", MatchOp.EQ, "critical"),
    ("severity=critical", "severity", MatchOp.EQ, "critical"),
    (' team != "ops" ', "team", MatchOp.NE, "ops"),
    ('team=~"ops|infra"', "team", MatchOp.RE, "ops|infra"),
    ('instance!~"db-.*"', "instance", MatchOp.NRE, "db-.*"),
    (r'msg="say \"hi\""', "msg", MatchOp.EQ, 'say "hi"'),
    ('empty=""', "empty", MatchOp.EQ, ""),
])
def test_matchers_parse_alertmanager_syntax(text: str, label: str, op: MatchOp,
                                            value: str) -> None:
    m = parse_matcher(text)
    assert (m.label, m.op, m.value) == (label, op, value)
    assert parse_matcher(str(m)) == m  # what config check prints reads back the same


@pytest.mark.parametrize("text,why", [
    ("severity", "not a matcher"),
    ('9lives="x"', "not a matcher"),
    ('a=~"("', "not a regular expression"),
    ('a="x"y', "quoted as a whole"),
    ('a="x"y"', "unescaped"),
])
def test_bad_matchers_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        parse_matcher(text)


@pytest.mark.parametrize("matcher,labels,matches", [
    ('severity="critical"', {"severity": "critical"}, True),
    ('severity="critical"', {"severity": "warning"}, False),
    ('severity="critical"', {}, False),
    ('severity=""', {}, True),  # a missing label matches as the empty string
    ('severity!="critical"', {}, True),
    ('severity!="critical"', {"severity": "critical"}, False),
    ('team=~"ops|infra"', {"team": "infra"}, True),
    ('team=~"ops|infra"', {"team": "devops"}, False),  # anchored, as in Alertmanager
    ('team=~"ops"', {"team": "ops-2"}, False),
    ('team!~"ops.*"', {"team": "ops-2"}, False),
    ('team!~"ops.*"', {"team": "infra"}, True),
])
def test_matchers_follow_alertmanager_semantics(matcher: str, labels: dict[str, str],
                                                matches: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is matches


def route(index: int, *matchers: str, template: str = "T", stop: bool = False) -> AlertRoute:
    return AlertRoute(index=index, matchers=tuple(parse_matcher(m) for m in matchers),
                      template=template, stop_on_resolve=stop)


ROUTES = (route(1, 'alertname="PlantFire"', 'severity=~"critical|page"', template="Fire"),
          route(2, 'team="shift"', template="Shift"),
          route(3, template="Catch all"))


@pytest.mark.parametrize("labels,taken", [
    ({"alertname": "PlantFire", "severity": "critical"}, 1),
    ({"alertname": "PlantFire", "severity": "warning", "team": "shift"}, 2),  # first that fits
    ({"alertname": "PlantFire", "severity": "warning"}, 3),
    ({}, 3),  # no matchers: every alert
])
def test_the_first_route_whose_matchers_all_accept_the_labels_is_taken(
        labels: dict[str, str], taken: int) -> None:
    r = route_for(ROUTES, labels)
    assert r is not None and r.index == taken


def test_no_route_takes_an_alert_no_matcher_set_accepts() -> None:
    assert route_for(ROUTES[:2], {"alertname": "DiskFull"}) is None
    assert route_for((), {"alertname": "DiskFull"}) is None


def test_a_firing_alert_launches_only_in_a_new_period() -> None:
    assert on_firing(None) is AlertAction.LAUNCHED
    assert on_firing(KnownPeriod(campaign_id=3, resolved=False)) is AlertAction.DUPLICATE
    # resolved before its firing notification arrived (out of order): not launched late
    assert on_firing(KnownPeriod(campaign_id=None, resolved=True)) is AlertAction.DUPLICATE


LIVE = [CampaignState.SCHEDULED, CampaignState.ACTIVE, CampaignState.BLOCKED,
        CampaignState.SUSPENDED, CampaignState.INCOMPLETE]
DONE = [CampaignState.COMPLETED, CampaignState.TERMINATED]


@pytest.mark.parametrize("state", LIVE)
def test_a_resolution_stops_a_live_campaign_only_when_the_route_says_so(
        state: CampaignState) -> None:
    known = KnownPeriod(campaign_id=3, resolved=False, campaign_state=state)
    assert on_resolved(route(1, stop=True), known) is AlertAction.STOPPED
    assert on_resolved(route(1, stop=False), known) is AlertAction.RESOLVED


@pytest.mark.parametrize("state", [*DONE, None])  # None: the campaign was deleted
def test_a_resolution_leaves_a_finished_or_deleted_campaign(state: CampaignState | None) -> None:
    known = KnownPeriod(campaign_id=3, resolved=False, campaign_state=state)
    assert on_resolved(route(1, stop=True), known) is AlertAction.RESOLVED


def test_a_resolution_is_handled_once_and_one_never_seen_firing_is_recorded() -> None:
    assert on_resolved(route(1, stop=True), KnownPeriod(
        campaign_id=3, resolved=True, campaign_state=CampaignState.ACTIVE)) \
        is AlertAction.DUPLICATE
    assert on_resolved(route(1, stop=True), None) is AlertAction.RESOLVED


def test_the_same_instant_is_the_same_period_key_whatever_its_zone() -> None:
    utc = dt.datetime(2026, 12, 3, 14, 0, 5, 123456, tzinfo=dt.UTC)
    rome = utc.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert period_start(utc) == period_start(rome) == "2026-12-03T14:00:05.123456Z"
    with pytest.raises(ValidationError):
        period_start(utc.replace(tzinfo=None))


@given(st.datetimes(timezones=st.just(dt.UTC)), st.datetimes(timezones=st.just(dt.UTC)))
def test_two_instants_share_a_period_key_only_when_equal(a: dt.datetime, b: dt.datetime) -> None:
    assert (period_start(a) == period_start(b)) is (a == b)


def alert(name: str) -> Alert:
    return Alert(status=AlertStatus.FIRING, fingerprint="f", starts_at="s", ends_at=None,
                 labels={"alertname": name})


@pytest.mark.parametrize("name,campaign", [
    ("PlantFire", "PlantFire"),
    ("Città allarme", "Città allarme"),
    ("disk:usage/high", "disk usage high"),  # a campaign name is letters, digits, - _ space
    ("", "alert"),
    ("!!!", "alert"),
    ("x" * 300, "x" * 100),
])
def test_the_campaign_is_named_after_the_alert(name: str, campaign: str) -> None:
    assert campaign_name(alert(name)) == campaign


def test_describe_says_which_alert_launched_a_campaign() -> None:
    assert describe(None) is None
    view = {"alertname": "PlantFire", "fingerprint": "abc", "starts_at": "2026-12-03T14:00Z",
            "route": 1, "resolved_at": None, "stopped_on_resolve": False}
    assert describe(view) == ("Alertmanager alert PlantFire (fingerprint abc, firing since "
                              "2026-12-03T14:00Z, route 1)")
    view.update(resolved_at="2026-12-03T15:00Z", stopped_on_resolve=True)
    assert str(describe(view)).endswith("; resolved 2026-12-03T15:00Z, campaign stopped")
