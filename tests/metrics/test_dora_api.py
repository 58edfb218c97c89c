"""GET /api/v1/dora on the real app (SQLite and PostgreSQL): the same JSON as the engine on
the same facts, the read scope, and bad parameters as JSON errors."""

from __future__ import annotations

import datetime as dt

from conveyor.metrics.dora import Settings, Window, compute
from conveyor.store.facts import write_fact
from tests.metrics.test_dora_cli import history
from tests.server.conftest import Api, Serve, serve  # noqa: F401 (the fixture)

QUERY = {"from": "2024-01-01", "to": "2024-01-15"}


def test_the_report_is_the_engines_on_the_same_facts(serve: Serve) -> None:  # noqa: F811
    async def body(api: Api) -> None:
        with api.store.write() as w:
            for fact in history():
                write_fact(w, fact, source="test")
        reader = api.token("read")
        r = await api.get("/dora", reader, params=QUERY | {"explain": "true", "tz": "UTC"})
        assert r.status_code == 200, r.text
        data = r.json()
        # By hand (test_a_rollback): 2 deployments in 2 weeks, 1 of 3 failed, 10 min recovery.
        m = data["metrics"]
        assert (m["deployment_frequency"]["value"], m["deployment_frequency"]["tier"]) == (
            1.0,
            "high",
        )
        assert (m["change_failure_rate"]["failed"], m["recovery_time"]["value"]) == (1, 600.0)
        assert m.pop("work_in_progress")["value"] == 0.0
        window = Window(dt.date(2024, 1, 1), dt.date(2024, 1, 15))
        assert data == compute(history(), [], window, Settings(explain=True)).to_json()

        by_month = await api.get(
            "/dora", reader, params={"since": "2w", "to": "2024-01-15", "by": "month"}
        )
        assert [row["start"] for row in by_month.json()["series"]] == ["2024-01-01"]
        other = await api.get("/dora", reader, params=QUERY | {"service": "ledger"})
        assert other.json()["metrics"]["deployment_frequency"]["sample_size"] == 0

    serve(body)


def test_the_read_scope_is_needed_and_bad_parameters_are_json_errors(
    serve: Serve,  # noqa: F811
) -> None:
    async def body(api: Api) -> None:
        assert (await api.client.get("/api/v1/dora")).status_code == 401
        runner = await api.get("/dora", api.token("runner"))
        assert runner.status_code == 403
        assert runner.json()["error"]["message"] == "this token lacks the read scope"
        bad_zone = await api.get("/dora", params={"tz": "Mars/Olympus"})
        assert bad_zone.status_code == 400
        assert bad_zone.json()["error"]["message"] == "unknown time zone 'Mars/Olympus'"
        bad_by = await api.get("/dora", params={"by": "year"})
        assert bad_by.status_code == 422
        both = await api.get("/dora", params={"since": "7d", "from": "2024-01-01"})
        assert both.json()["error"]["message"] == "give --since or --from, not both"
        unknown = await api.get("/dora", params={"tiers": "1999"})
        assert unknown.json()["error"]["hint"] == "choose one of 2023, 2024"

    serve(body)
