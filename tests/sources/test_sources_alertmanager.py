"""Alertmanager webhook notifications: what Alertmanager 0.25 really sends becomes exactly the
alerts it describes (UTC times, Go's zero time read as "not set"), and anything that is not a
version-4 notification is refused as a whole with a message naming the problem."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.alertmanager import RECORDED_FIRING, RECORDED_RESOLVED, alert, notification

from conveyor.sources.alertmanager import (
    AlertPayloadError,
    label_fingerprint,
    parse_notification,
)


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def refused(data: Any) -> str:
    raw = data if isinstance(data, bytes) else body(data)
    with pytest.raises(AlertPayloadError) as caught:
        parse_notification(raw)
    return caught.value.message


def test_a_recorded_firing_notification_is_the_alert_it_describes() -> None:
    parsed = parse_notification(body(RECORDED_FIRING))

    assert (parsed.receiver, parsed.status, parsed.truncated_alerts) == ("conveyor", "firing", 0)
    assert parsed.group_key == '{}:{alertname="ShopErrors", service="shop"}'
    [one] = parsed.alerts
    assert one.fingerprint == "0765ac6d955dc062"
    assert one.status == "firing"
    assert one.name == "ShopErrors"
    assert one.label("service") == "shop"
    assert one.title == "ShopErrors: shop is failing requests"
    assert one.starts_at == dt.datetime(2026, 11, 26, 7, 48, 46, 841000, tzinfo=dt.UTC)
    assert one.ends_at is None  # Go's zero time: not set
    assert one.generator_url.startswith("http://vm:55409/graph?")


def test_a_recorded_resolved_notification_carries_when_the_alert_ended() -> None:
    [one] = parse_notification(body(RECORDED_RESOLVED)).alerts

    assert one.status == "resolved"
    assert one.ends_at == dt.datetime(2026, 11, 26, 7, 48, 49, 841000, tzinfo=dt.UTC)


def test_times_become_utc_microseconds_and_a_firing_alerts_end_is_dropped() -> None:
    """Go writes nanoseconds and any offset; the store keeps UTC microseconds, so a
    redelivered alert compares equal to the stored one. A firing alert's endsAt is only when
    it would expire unless resent: meaningless for an incident."""
    firing = alert(starts_at="2026-11-26T09:48:46.841266876+02:00", ends_at="2026-11-26T08:00:00Z")
    resolved = alert("resolved", ends_at="2026-11-26T08:00:00.5-01:00")
    parsed = parse_notification(body(notification(firing, resolved)))

    assert parsed.status == "firing"
    assert parsed.alerts[0].starts_at == dt.datetime(2026, 11, 26, 7, 48, 46, 841266, tzinfo=dt.UTC)
    assert parsed.alerts[0].ends_at is None
    assert parsed.alerts[1].ends_at == dt.datetime(2026, 11, 26, 9, 0, 0, 500000, tzinfo=dt.UTC)


def test_an_alert_without_a_fingerprint_gets_a_stable_one_from_its_labels() -> None:
    """Alertmanager before 0.19 sent none; the label set is what its fingerprint hashes."""
    data = notification(alert())
    del data["alerts"][0]["fingerprint"]
    first = parse_notification(body(data)).alerts[0].fingerprint
    reordered = notification(alert(labels={"severity": "page"}))
    del reordered["alerts"][0]["fingerprint"]

    assert first == parse_notification(body(data)).alerts[0].fingerprint
    assert first == label_fingerprint({"service": "shop", "alertname": "ShopErrors"})
    assert parse_notification(body(reordered)).alerts[0].fingerprint != first


@pytest.mark.parametrize(
    ("annotations", "title"),
    [
        ({"summary": "  5% of requests fail  "}, "ShopErrors: 5% of requests fail"),
        ({"description": "long text"}, "ShopErrors: long text"),
        ({}, "ShopErrors"),
        ({"summary": "x" * 600}, "ShopErrors: " + "x" * 487 + "…"),
    ],
)
def test_the_title_is_the_alert_name_and_its_summary(
    annotations: dict[str, str], title: str
) -> None:
    [one] = parse_notification(body(notification(alert(annotations=annotations)))).alerts
    assert one.title == title
    assert len(one.title) <= 500


def test_deployment_may_be_a_label_or_an_annotation() -> None:
    by_label = alert(labels={"deployment": "7"})
    by_annotation = alert(annotations={"deployment": "8"})
    parsed = parse_notification(body(notification(by_label, by_annotation)))
    assert [a.tag("deployment") for a in parsed.alerts] == ["7", "8"]


def test_unknown_fields_are_ignored_for_later_alertmanagers() -> None:
    data = {**RECORDED_FIRING, "newField": {"x": 1}}
    data["alerts"] = [{**RECORDED_FIRING["alerts"][0], "silenceURL": "http://x"}]
    assert len(parse_notification(body(data)).alerts) == 1


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in RECORDED_FIRING.items() if k != key}


def with_alert(**changes: Any) -> dict[str, Any]:
    one = {**RECORDED_FIRING["alerts"][0], **changes}
    return {**RECORDED_FIRING, "alerts": [{k: v for k, v in one.items() if v is not None}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the body is not JSON"),
        (b"status=firing", "the body is not JSON"),
        (b'{"version": "4", "x": NaN}', "the body is not JSON: NaN is not valid JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        ([RECORDED_FIRING], "the body must be a JSON object"),
        (without("version"), "missing version"),
        ({**RECORDED_FIRING, "version": "3"}, "unsupported webhook payload version '3'"),
        ({**RECORDED_FIRING, "version": 4}, "unsupported webhook payload version 4"),
        (without("alerts"), "alerts: Field required"),
        (without("status"), "status: Field required"),
        ({**RECORDED_FIRING, "status": "pending"}, "status: Input should be 'firing'"),
        ({**RECORDED_FIRING, "alerts": {}}, "alerts: Input should be a valid list"),
        ({**RECORDED_FIRING, "truncatedAlerts": -1}, "truncatedAlerts: Input should be greater"),
        (with_alert(status="silenced"), "alerts.0.status: Input should be 'firing'"),
        (with_alert(labels=None), "alerts.0.labels: Field required"),
        (with_alert(labels={"service": 5}), "alerts.0.labels.service: Input should be a valid str"),
        (with_alert(labels={"bad-name": "x"}), "alerts.0.labels.bad-name.[key]: String should"),
        (with_alert(startsAt=None), "alerts.0.startsAt: Field required"),
        (with_alert(startsAt="yesterday"), "alerts.0.startsAt: Input should be a valid datetime"),
        (with_alert(startsAt="2026-11-26T07:48:46"), "alerts.0.startsAt: Input should have timez"),
        (with_alert(startsAt="0001-01-01T00:00:00Z"), "alerts.0.startsAt: the alert has no start"),
        (with_alert(fingerprint="a b"), "alerts.0.fingerprint: String should match pattern"),
    ],
)
def test_anything_else_is_refused_naming_the_problem(data: Any, message: str) -> None:
    assert refused(data).startswith(message), refused(data)


def test_oversized_fields_are_refused() -> None:
    assert refused(with_alert(labels={"service": "x" * 5000})).startswith(
        "alerts.0.labels.service: String should have at most 4096 characters"
    )
    many = {f"l{i}": "x" for i in range(300)}
    assert refused(with_alert(labels=many)).startswith("alerts.0.labels: Dictionary should have")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutation=st.dictionaries(
        st.sampled_from(["version", "status", "receiver", "alerts", "groupKey", "commonLabels"]),
        json_values,
        max_size=3,
    ),
    alert_mutation=st.dictionaries(
        st.sampled_from(["status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"]),
        json_values,
        max_size=3,
    ),
)
def test_any_mangled_notification_is_either_parsed_or_refused_cleanly(
    mutation: dict[str, Any], alert_mutation: dict[str, Any]
) -> None:
    """Whatever arrives, the parser answers with alerts or AlertPayloadError, never a crash."""
    data = {**RECORDED_FIRING, "alerts": [{**RECORDED_FIRING["alerts"][0], **alert_mutation}]}
    data.update(mutation)
    try:
        parsed = parse_notification(body(data))
    except AlertPayloadError as exc:
        message = exc.message
        parsed = None
    if parsed is None:
        assert message
        return
    for one in parsed.alerts:
        assert one.starts_at.tzinfo is dt.UTC
        assert one.status in ("firing", "resolved")
