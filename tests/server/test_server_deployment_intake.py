"""The live intake of deployments made by another CD system (POST /api/v1/intake/deployments):
a CDEvent or a native record, with a trigger token; checked like a history import, idempotent
by service and id, nothing stored from a bad body. In-process, on a real store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from tests.server.conftest import API, Api, Serve

from conveyor.server.tokens import create_token
from conveyor.store.models import ChangeFactRow, DeploymentFactRow

SHA = "0b31b1c02ff458ad9b7b81cbdf8f028bd546994a"


def service_deployed(id_: str = "271069a8-fc18-44f1-b38f-9d70a1695819") -> dict[str, Any]:
    """A CDEvent service.deployed (v0.4), as the spec's example writes it."""
    return {
        "context": {
            "version": "0.4.1",
            "id": id_,
            "source": "/event/source/123",
            "type": "dev.cdevents.service.deployed.0.2.0",
            "timestamp": "2024-05-01T10:30:00Z",
        },
        "subject": {
            "id": "service/shop",
            "source": "/event/source/123",
            "type": "service",
            "content": {
                "environment": {"id": "production", "source": "/event/source/123"},
                "artifactId": f"pkg:golang/example.com/shop@{SHA}",
            },
        },
        "customData": {
            "commits": [{"sha": SHA, "committed_at": "2024-05-01T09:00:00Z"}],
        },
    }


def native(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "deployment",
        "service": "shop",
        "environment": "production",
        "id": "spinnaker-42",
        "commit": SHA,
        "started_at": "2024-05-01T11:00:00Z",
        "finished_at": "2024-05-01T11:10:00Z",
        "status": "failed",
        "commits": [],
    } | extra


def facts(api: Api) -> dict[str, str]:
    with api.store.session() as session:
        return {r.key: r.result for r in session.scalars(select(DeploymentFactRow))}


def test_a_cd_system_reports_its_deployments_with_a_trigger_token(serve: Serve) -> None:
    async def body(api: Api) -> None:
        trigger = api.token("trigger")
        first = await api.post("/intake/deployments", service_deployed(), token=trigger)
        assert first.status_code == 201, first.text
        assert first.json() == {
            "status": "created",
            "service": "shop",
            "environment": "production",
            "id": "271069a8-fc18-44f1-b38f-9d70a1695819",
            "result": "succeeded",
            "changes": 1,
        }
        # The same event again (a retry): nothing new.
        again = await api.post("/intake/deployments", service_deployed(), token=trigger)
        assert again.status_code == 200
        assert again.json()["status"] == "present"

        record = await api.post("/intake/deployments", native(), token=trigger)
        assert record.status_code == 201, record.text
        assert facts(api) == {
            "i:shop:271069a8-fc18-44f1-b38f-9d70a1695819": "succeeded",
            "i:shop:spinnaker-42": "failed",
        }
        with api.store.session() as session:
            assert session.scalars(select(ChangeFactRow.sha)).all() == [SHA]

        # A CloudEvent (structured mode) carrying the CDEvent as its data.
        cloud = {
            "specversion": "1.0",
            "id": "c-1",
            "source": "/spinnaker",
            "type": "dev.cdevents.service.deployed.0.2.0",
            "data": service_deployed("cloud-1"),
        }
        headers = {"Content-Type": "application/cloudevents+json"}
        wrapped = await api.post("/intake/deployments", cloud, token=trigger, headers=headers)
        assert wrapped.status_code == 201, wrapped.text

    serve(body)


def test_a_bad_deployment_is_refused_naming_its_fields_and_nothing_is_stored(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        trigger = api.token("trigger")
        bad = await api.post(
            "/intake/deployments",
            native(finished_at="2024-05-01T10:00:00Z", environment="-prod"),
            token=trigger,
        )
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert error["code"] == "invalid_deployment"
        assert any(
            e.startswith("environment: '-prod' is not an environment name") for e in error["errors"]
        )

        wrong_time = await api.post(
            "/intake/deployments", native(started_at="2024-05-01 11:00"), token=trigger
        )
        assert wrong_time.status_code == 400
        assert "started_at" in wrong_time.json()["error"]["message"]

        not_json = await api.client.post(
            API + "/intake/deployments", content=b"{", headers=api.auth(trigger)
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"]["message"].startswith("not valid JSON")

        incident = {
            "kind": "incident",
            "service": "shop",
            "id": "I-1",
            "opened_at": "2024-05-01T10:00:00Z",
        }
        refused = await api.post("/intake/deployments", incident, token=trigger)
        assert refused.status_code == 400
        assert "POST /incidents" in refused.json()["error"]["message"]

        other = service_deployed() | {
            "context": service_deployed()["context"]
            | {"type": "dev.cdevents.pipelinerun.finished.0.2.0"}
        }
        ignored = await api.post("/intake/deployments", other, token=trigger)
        assert ignored.status_code == 400
        assert "not a deployment (pipelinerun.finished)" in ignored.json()["error"]["message"]

        reads_a_path = await api.post(
            "/intake/deployments",
            native(status="succeeded", commits=None, repository="/srv/git/shop.git"),
            token=trigger,
        )
        assert reads_a_path.status_code == 400
        assert reads_a_path.json()["error"]["message"].startswith("repository: not accepted")

        too_large = await api.client.post(
            API + "/intake/deployments",
            content=b" " * (api.config.body_limits.api + 1),
            headers=api.auth(trigger) | {"Content-Type": "application/json"},
        )
        assert too_large.status_code == 413
        assert facts(api) == {}

    serve(body)


def test_only_trigger_tokens_may_report_and_only_where_they_are_limited_to(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        anonymous = await api.client.post(API + "/intake/deployments", json=native())
        assert anonymous.status_code == 401
        read_only = await api.post("/intake/deployments", native(), token=api.token("read"))
        assert read_only.status_code == 403
        billing_only = create_token(api.store, "billing-cd", ["trigger"], services=["billing"])
        elsewhere = await api.post("/intake/deployments", native(), token=billing_only)
        assert elsewhere.status_code == 403
        assert "billing" in elsewhere.json()["error"]["message"]
        staging_only = create_token(api.store, "staging-cd", ["trigger"], environments=["staging"])
        production = await api.post("/intake/deployments", native(), token=staging_only)
        assert production.status_code == 403
        assert facts(api) == {}
        staging = await api.post(
            "/intake/deployments", native(environment="staging"), token=staging_only
        )
        assert staging.status_code == 201

    serve(body)
