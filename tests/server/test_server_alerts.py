"""Incidents through the API, in-process on SQLite and PostgreSQL: Alertmanager's webhook
(firing opens or updates, resolved resolves, deduplicated by fingerprint, redeliveries change
nothing, alerts Conveyor cannot place are recorded as ignored, bad bodies leave no trace), and
opening, resolving and showing incidents by hand, with their attribution and recovery time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.alertmanager import (
    SHA_V2,
    add_rollback,
    alert,
    notification,
    seed_history,
)
from tests.server.conftest import API, Api, Serve

from conveyor.server.app import ServerConfig
from conveyor.store.models import Delivery, Event, Incident, utcnow

HOOK = f"{API}/hooks/alertmanager"
MINUTE = dt.timedelta(minutes=1)


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def deliver(api: Api, data: Any, token: str | None = None) -> httpx.Response:
    """POST ``data`` as Alertmanager does: JSON, its bearer token."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    if token != "":
        headers["Authorization"] = f"Bearer {token or api.admin}"
    return await api.client.post(HOOK, content=raw, headers=headers)


async def applied(api: Api, data: Any, token: str | None = None) -> list[dict[str, Any]]:
    r = await deliver(api, data, token)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    outcomes: list[dict[str, Any]] = r.json()["alerts"]
    return outcomes


async def incident(api: Api, incident_id: int) -> dict[str, Any]:
    r = await api.get(f"/incidents/{incident_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def events(api: Api, prefix: str) -> list[Event]:
    with api.store.session() as session:
        return [
            e
            for e in session.scalars(select(Event).order_by(Event.id))
            if e.type.startswith(prefix)
        ]


def times(**kw: dt.datetime) -> dict[str, str]:
    return {k: rfc3339(v) for k, v in kw.items()}


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_alert_opens_an_incident_updates_it_and_resolves_it_once_whatever_is_redelivered(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        token = api.token("trigger")
        began, ended = now - 5 * MINUTE, now - MINUTE
        firing = notification(alert(starts_at=rfc3339(began)))

        [opened] = await applied(api, firing, token)
        assert opened["outcome"] == "opened", opened
        first = await incident(api, opened["incident"])
        assert first["status"] == "open"
        assert first["source"] == "alertmanager"
        assert first["title"] == "ShopErrors: shop is failing requests"
        assert (first["service"], first["environment"]) == ("shop", "production")
        assert parse(first["opened_at"]) == began
        assert first["deployment"] == history.production_v2
        assert first["release"] == history.release_v2
        assert first["version"] == f"r{history.release_v2}-{SHA_V2[:7]}"
        assert first["attribution"]["how"] == "window"
        assert "before" not in first["attribution"]["detail"]
        assert f"deployment {history.production_v2}" in first["attribution"]["detail"]
        assert first["alert"]["labels"] == {"alertname": "ShopErrors", "service": "shop"}

        # Alertmanager's repeats and redeliveries: nothing changes, no event.
        for _ in range(3):
            [again] = await applied(api, firing, token)
            assert (again["outcome"], again["incident"]) == ("unchanged", opened["incident"])

        # A changed annotation updates the open incident.
        changed = notification(
            alert(starts_at=rfc3339(began), annotations={"summary": "half of requests fail"})
        )
        [updated] = await applied(api, changed, token)
        assert (updated["outcome"], updated["incident"]) == ("updated", opened["incident"])
        assert (await incident(api, opened["incident"]))["title"] == (
            "ShopErrors: half of requests fail"
        )

        resolved = notification(alert("resolved", starts_at=rfc3339(began), ends_at=rfc3339(ended)))
        [done] = await applied(api, resolved, token)
        assert (done["outcome"], done["incident"]) == ("resolved", opened["incident"])
        shown = await incident(api, opened["incident"])
        assert shown["status"] == "resolved"
        assert parse(shown["resolved_at"]) == ended  # when the alert ended, not when it came
        assert shown["resolved_by"] == "alert ShopErrors resolved (Alertmanager)"
        assert shown["restored_by"] == "resolved"
        assert shown["recovery_seconds"] == pytest.approx(240.0)

        # The resolved notification again, and the old firing arriving late: nothing.
        [late] = await applied(api, resolved, token)
        assert late["outcome"] == "unchanged"
        [late] = await applied(api, firing, token)
        assert (late["outcome"], late["incident"]) == ("unchanged", opened["incident"])

        # The alert fires again (a new occurrence): a new incident.
        again_began = now - 0.5 * MINUTE
        [second] = await applied(api, notification(alert(starts_at=rfc3339(again_began))), token)
        assert second["outcome"] == "opened"
        assert second["incident"] != opened["incident"]

        kinds = [(e.type, e.data["incident"], e.data["actor"]) for e in events(api, "incident.")]
        actor = "token:token-1"
        assert kinds == [
            ("incident.opened", opened["incident"], actor),
            ("incident.updated", opened["incident"], actor),
            ("incident.resolved", opened["incident"], actor),
            ("incident.opened", second["incident"], actor),
        ]

    serve(body)


def test_a_healthy_rollback_before_the_alert_resolves_is_the_recovery(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        began = now - 5 * MINUTE
        [opened] = await applied(api, notification(alert(starts_at=rfc3339(began))))
        rollback = add_rollback(api.store, history, now - 3 * MINUTE)

        shown = await incident(api, opened["incident"])
        assert shown["status"] == "open"  # the alert decides; the rollback is shown meanwhile
        assert shown["restored_by"] == f"rollback deployment {rollback}"
        assert shown["recovery_seconds"] == pytest.approx(120.0)

        resolved = alert("resolved", starts_at=rfc3339(began), ends_at=rfc3339(now - MINUTE))
        await applied(api, notification(resolved))
        shown = await incident(api, opened["incident"])
        assert shown["status"] == "resolved"
        assert parse(shown["restored_at"]) == now - 3 * MINUTE
        assert shown["restored_by"] == f"rollback deployment {rollback}"
        assert shown["recovery_seconds"] == pytest.approx(120.0)
        [resolved_event] = events(api, "incident.resolved")
        assert resolved_event.data["recovery_seconds"] == pytest.approx(120.0)

    serve(body)


def test_a_resolved_alert_whose_firing_was_missed_opens_and_resolves_its_incident(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)
        began, ended = now - 5 * MINUTE, now - 2 * MINUTE
        resolved = alert("resolved", starts_at=rfc3339(began), ends_at=rfc3339(ended))
        [done] = await applied(api, notification(resolved))
        assert done["outcome"] == "resolved"
        shown = await incident(api, done["incident"])
        assert (parse(shown["opened_at"]), parse(shown["resolved_at"])) == (began, ended)
        assert shown["recovery_seconds"] == pytest.approx(180.0)
        [again] = await applied(api, notification(resolved))
        assert again["outcome"] == "unchanged"

    serve(body)


def test_alerts_that_name_no_known_service_or_environment_are_recorded_as_ignored(
    serve: Serve,
) -> None:
    """200 all the same: Alertmanager must not drop (4xx) or retry forever (5xx) the other
    alerts of the group for one it cannot place."""

    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)
        start = rfc3339(now - MINUTE)
        group = notification(
            alert(fingerprint="aaaa000000000001", starts_at=start),
            alert(fingerprint="aaaa000000000002", starts_at=start, labels={"service": "nope"}),
            alert(fingerprint="aaaa000000000003", starts_at=start, labels={"service": ""}),
            alert(fingerprint="aaaa000000000004", starts_at=start, labels={"environment": "qa"}),
        )
        for _ in range(2):
            outcomes = await applied(api, group)
            assert [o["outcome"] for o in outcomes][1:] == ["ignored", "ignored", "ignored"]
            assert outcomes[1]["reason"] == "there is no service 'nope' in Conveyor"
            assert outcomes[2]["reason"] == "the alert has no 'service' label naming a service"
            assert outcomes[3]["reason"] == (
                "service shop has no environment 'qa' (it has: production, staging)"
            )
        assert api.count(Incident) == 1
        with api.store.session() as session:
            rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
            assert [(d.source, d.service, d.status) for d in rows] == [
                ("alertmanager", "nope", "ignored"),
                ("alertmanager", "", "ignored"),
                ("alertmanager", "shop", "ignored"),
            ]
        ignored = events(api, "alert.ignored")
        assert [e.data["fingerprint"] for e in ignored] == [
            "aaaa000000000002",
            "aaaa000000000003",
            "aaaa000000000004",
        ]
        r = await api.get("/alerts/ignored", api.token("read"))
        assert r.status_code == 200, r.text
        assert [(a["service"], a["alert"], a["status"], a["reason"]) for a in r.json()] == [
            ("shop", "ShopErrors", "firing", outcomes[3]["reason"]),
            (None, "ShopErrors", "firing", outcomes[2]["reason"]),
            ("nope", "ShopErrors", "firing", outcomes[1]["reason"]),
        ]

    serve(body)


def test_the_service_label_is_configurable_and_env_names_the_environment(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ALERT_SERVICE_LABEL", "app")

    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        start = rfc3339(now - MINUTE)
        outcomes = await applied(
            api,
            notification(
                alert(fingerprint="b1", starts_at=start, labels={"app": "shop", "env": "staging"}),
                alert(fingerprint="b2", starts_at=start),  # service=shop, but app is the label
            ),
        )
        assert [o["outcome"] for o in outcomes] == ["opened", "ignored"]
        shown = await incident(api, outcomes[0]["incident"])
        assert shown["environment"] == "staging"
        # Only production is attributed by window.
        assert shown["deployment"] is None
        assert shown["attribution"]["how"] == "none"
        assert "staging-tier" in shown["attribution"]["detail"]
        assert history.staging_v2  # there was a deployment; it is not blamed

    serve(body)


@pytest.mark.parametrize(
    ("began_minutes_ago", "hours", "attributed"),
    [
        (5, None, "v2"),  # after v2 finished: v2
        (9.5, None, "v2"),  # v2 serving, not finished yet: v2
        (11, None, "v1"),  # before v2 served: v1 was live (but 290 min after it finished)
        (5, "0.05", None),  # 4 minutes after v2 finished, window of 3 minutes: none
        (11, "1", None),  # v1 was live, but finished 288 minutes earlier: none
        (400, None, None),  # before anything was deployed: none
    ],
)
def test_attribution_by_window(
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    began_minutes_ago: float,
    hours: str | None,
    attributed: str | None,
) -> None:
    if hours is not None:
        monkeypatch.setenv("CONVEYOR_ATTRIBUTION_HOURS", hours)

    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        start = rfc3339(now - began_minutes_ago * MINUTE)
        [opened] = await applied(api, notification(alert(starts_at=start)))
        shown = await incident(api, opened["incident"])
        expected = {"v1": history.production_v1, "v2": history.production_v2, None: None}
        assert shown["deployment"] == expected[attributed], shown["attribution"]
        assert shown["attribution"]["how"] == ("window" if attributed else "none")

    serve(body)


def test_a_deployment_label_or_annotation_attributes_explicitly(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        start = rfc3339(now - MINUTE)
        outcomes = await applied(
            api,
            notification(
                alert(
                    fingerprint="c1",
                    starts_at=start,
                    labels={"deployment": str(history.production_v1)},
                ),
                alert(
                    fingerprint="c2",
                    starts_at=start,
                    annotations={"deployment": str(history.production_v1)},
                ),
                alert(fingerprint="c3", starts_at=start, labels={"deployment": "999"}),
                alert(fingerprint="c4", starts_at=start, labels={"deployment": "latest"}),
            ),
        )
        shown = [await incident(api, o["incident"]) for o in outcomes]
        assert [s["deployment"] for s in shown] == [
            history.production_v1,
            history.production_v1,
            history.production_v2,  # not a deployment of shop: by window instead, and said so
            history.production_v2,
        ]
        assert [s["attribution"]["how"] for s in shown] == [
            "explicit",
            "explicit",
            "window",
            "window",
        ]
        assert "there is no deployment 999 of shop" in shown[2]["attribution"]["detail"]
        assert "'latest' is not a deployment id" in shown[3]["attribution"]["detail"]

    serve(body)


def test_bad_requests_are_refused_and_leave_no_trace(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)
        reader = api.token("read")
        good = notification(alert(starts_at=rfc3339(now - MINUTE)))

        r = await deliver(api, good, token="")
        assert r.status_code == 401
        r = await deliver(api, good, token="cvy_not-a-token")
        assert r.status_code == 401
        r = await deliver(api, good, token=reader)
        assert r.status_code == 403
        for bad, message in [
            (b"not json", "the body is not JSON"),
            ({**good, "version": "3"}, "unsupported webhook payload version '3'"),
            (notification({**alert(), "startsAt": "soon"}), "alerts.0.startsAt: Input should"),
        ]:
            r = await deliver(api, bad)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "bad_payload"
            assert r.json()["error"]["message"].startswith(message)
        big = notification(alert(annotations={"description": "x" * 60000}))
        big["alerts"] = big["alerts"] * 20
        r = await deliver(api, big)
        assert r.status_code == 413

        assert api.count(Incident) == 0
        assert api.count(Delivery) == 0
        assert events(api, "incident.") == []
        assert events(api, "alert.") == []

    # 1 MiB: the default (25 MiB, a forge's cap) would take a larger body than this test sends.
    serve(body, ServerConfig(runner_slots=2, webhook_max_bytes=2**20))


def test_the_same_notification_delivered_twice_at_once_opens_one_incident(serve: Serve) -> None:
    """Two Alertmanagers of a cluster may both send it: the service's row serialises them."""

    async def body(api: Api) -> None:
        now = utcnow()
        seed_history(api.store, now)
        firing = notification(alert(starts_at=rfc3339(now - MINUTE)))
        answers = await asyncio.gather(*(applied(api, firing) for _ in range(4)))
        outcomes = sorted(a[0]["outcome"] for a in answers)
        assert outcomes == ["opened", "unchanged", "unchanged", "unchanged"]
        assert api.count(Incident) == 1

    serve(body)


async def open_by_hand(api: Api, token: str | None = None, **fields: Any) -> httpx.Response:
    return await api.post(
        "/incidents", {"service": "shop", "title": "checkout down", **fields}, token
    )


def test_people_open_and_resolve_incidents_attributed_explicitly_or_by_window(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        person = api.token("trigger", user="olga")

        r = await open_by_hand(api, person, at=rfc3339(now - 5 * MINUTE))
        assert r.status_code == 201, r.text
        by_window = r.json()
        assert by_window["source"] == "manual"
        assert by_window["environment"] == "production"
        assert by_window["deployment"] == history.production_v2
        assert by_window["attribution"]["how"] == "window"

        explicit = {
            "deployment": {"deployment": history.production_v1},
            "release": {"release": history.release_v1},
            "commit": {"commit": "1111111"},
        }
        for name, fields in explicit.items():
            r = await open_by_hand(api, person, **fields)
            assert r.status_code == 201, (name, r.text)
            assert r.json()["deployment"] == history.production_v1, name
            assert r.json()["release"] == history.release_v1, name
            assert r.json()["attribution"]["how"] == "explicit", name
            assert "named by olga" in r.json()["attribution"]["detail"]

        # A release (or commit) only in staging: attributed to the release, no deployment.
        r = await open_by_hand(api, person, environment="staging", release=history.release_v2)
        assert r.status_code == 201, r.text
        assert (r.json()["deployment"], r.json()["release"]) == (
            history.staging_v2,
            history.release_v2,
        )

        incident_id = by_window["id"]
        r = await api.post(
            f"/incidents/{incident_id}/resolve",
            {"at": rfc3339(now - MINUTE), "reason": "restarted the database"},
            person,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved"
        assert r.json()["resolved_by"] == "olga: restarted the database"
        assert r.json()["recovery_seconds"] == pytest.approx(240.0)

        r = await api.post(f"/incidents/{incident_id}/resolve", {}, person)
        assert r.status_code == 409, r.text
        assert "resolved already" in r.json()["error"]["message"]

        opened = [e for e in events(api, "incident.opened") if e.data["incident"] == incident_id]
        resolved = [e for e in events(api, "incident.resolved")]
        assert opened[0].data["actor"] == "olga"
        assert resolved[0].data["actor"] == "olga"

    serve(body)


def test_bad_incident_requests_are_refused_with_the_reason(serve: Serve) -> None:
    async def body(api: Api) -> None:
        now = utcnow()
        history = seed_history(api.store, now)
        seed_history(api.store, now, service="other")
        reader = api.token("read")

        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"deployment": 1, "release": 1}, 400, "name at most one of"),
            ({"service": "nope"}, 404, "there is no service nope"),
            ({"deployment": 999}, 404, "there is no deployment 999 of shop"),
            ({"release": 999}, 404, "there is no release 999 of shop"),
            ({"commit": "abcdef0"}, 404, "commit abcdef0 is in no release"),
            ({"commit": "xyz"}, 422, "commit: String should match pattern"),
            ({"environment": "qa"}, 404, "service shop has no environment 'qa'"),
            (
                {"environment": "staging", "deployment": history.production_v2},
                400,
                "went to production, not staging",
            ),
            ({"at": rfc3339(now + 60 * MINUTE)}, 400, "is in the future"),
            ({"at": "2026-01-01T10:00:00"}, 422, "at: Input should have timezone info"),
            ({"title": ""}, 422, "title: String should have at least 1 character"),
        ]
        for fields, status, message in cases:
            r = await open_by_hand(api, **fields)
            assert r.status_code == status, (fields, r.text)
            assert message in r.json()["error"]["message"], (fields, r.text)

        r = await open_by_hand(api, reader)
        assert r.status_code == 403
        assert api.count(Incident) == 0

        r = await open_by_hand(api)
        incident_id = r.json()["id"]
        r = await api.post(f"/incidents/{incident_id}/resolve", {"at": rfc3339(now - MINUTE)})
        assert r.status_code == 400
        assert "cannot be resolved before that" in r.json()["error"]["message"]
        r = await api.post(f"/incidents/{incident_id}/resolve", {}, reader)
        assert r.status_code == 403
        r = await api.post("/incidents/999/resolve", {})
        assert r.status_code == 404
        r = await api.get("/incidents/999", reader)
        assert r.status_code == 404
        r = await api.get(f"/incidents/{incident_id}", reader)
        assert r.status_code == 200
        assert r.json()["status"] == "open"

    serve(body)
