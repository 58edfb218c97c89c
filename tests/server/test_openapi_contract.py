"""The OpenAPI document as a client contract: every JSON route of /api/v1 names its answer's
schema (a component, from conveyor.server.schemas), and the real answers of a small delivery
(a run, a release, an approval, a deployment, an incident, secrets, hooks, DORA...) match the
schema of their route, checked with jsonschema against the document the server serves."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import jsonschema
import pytest
from tests.conftest import GitRepo
from tests.delivery.harness import APP, HEALTH, stop_released_processes
from tests.server.conftest import API, TERMINAL, Api, Serve, until

from conveyor.server.app import ServerConfig, create_app
from conveyor.store.db import Settings, open_store

# Routes under /api whose success is not a JSON document, and why.
NOT_JSON = {
    ("get", "/api/v1/runs/{run_id}/logs/stream"): "server-sent events (text/event-stream)",
    ("get", "/api/v1/stream"): "server-sent events (text/event-stream)",
    ("get", "/api/v1/runs/{run_id}/logs/raw"): "the log as text (text/plain), to download",
    ("get", "/api/v1/artifacts/{digest}"): "the artifact's bytes (application/octet-stream)",
    ("get", "/api/v1/runs/{run_id}/source"): "a tar archive (application/x-tar)",
    ("delete", "/api/v1/session"): "204, no body (the cookie is cleared)",
    ("put", "/api/v1/users/{name}/credentials"): "204, no body",
}
# Answer models that take fields they do not name, and why.
OPEN_MODELS = {
    # Each DORA figure has its own details besides the common fields (metrics/dora_report.py).
    "DoraFigure",
}
METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("openapi")
    store = open_store(Settings(home=home, database_url=f"sqlite:///{home}/conveyor.db"))
    try:
        doc: dict[str, Any] = create_app(store).openapi()
    finally:
        store.close()
    return doc


def _refs(schema: Any) -> set[str]:
    """The components a schema names, directly or in its items."""
    if isinstance(schema, dict):
        found = {schema["$ref"]} if "$ref" in schema else set()
        for value in schema.values():
            found |= _refs(value)
        return found
    if isinstance(schema, list):
        return set().union(*(_refs(v) for v in schema)) if schema else set()
    return set()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in doc["paths"].items()
        if path.startswith("/api/")
        for method, op in ops.items()
        if method in METHODS
    ]


def test_every_json_route_names_its_answer_and_error_schemas(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    operations = _operations(document)
    assert len(operations) >= 50
    missing, undeclared = [], []
    for method, path, op in operations:
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert success, (method, path)
        json_answers = [
            r["content"]["application/json"]["schema"]
            for r in success.values()
            if "application/json" in r.get("content", {})
        ]
        if (method, path) in NOT_JSON:
            assert not json_answers, f"{method} {path} answers JSON: take it off NOT_JSON"
            # What it answers instead is declared (a media type), unless there is no body.
            for code, answer in success.items():
                assert code == "204" or answer.get("content"), (method, path, code)
            continue
        if not json_answers:
            missing.append(f"{method.upper()} {path}")
            continue
        for schema in json_answers:
            refs = _refs(schema)
            if not refs:
                undeclared.append(f"{method.upper()} {path}")
            for ref in refs:
                assert ref.removeprefix("#/components/schemas/") in components, ref
        # Errors are documented with their one shape (server/errors.py), not FastAPI's.
        for code, answer in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    assert not missing, f"routes with no JSON answer declared: {missing}"
    assert not undeclared, f"routes whose JSON answer names no schema: {undeclared}"
    assert "HTTPValidationError" not in components
    # The answer models forbid what they do not name (conveyor.server.schemas.common.Schema):
    # the contract says so too, for every model an answer reaches.
    answers = set().union(
        *(
            _refs(r.get("content", {}))
            for _, _, op in operations
            for code, r in op["responses"].items()
            if code.startswith("2")
        )
    )
    reached, todo = set(), [ref.removeprefix("#/components/schemas/") for ref in answers]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [r.removeprefix("#/components/schemas/") for r in _refs(components[name])]
    open_models = {n for n in reached if components[n].get("additionalProperties") is not False}
    assert open_models == OPEN_MODELS


def test_the_web_ui_and_metrics_stay_out_of_the_api_contract(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert not [p for p in paths if p.startswith(("/static", "/signin", "/runs/"))]


class Contract:
    """Calls the API and checks each answer against the OpenAPI document's schema for its
    route and status."""

    def __init__(self, api: Api, doc: dict[str, Any]) -> None:
        self.api = api
        self.doc = doc
        self.checked: set[tuple[str, str]] = set()

    def check(self, method: str, template: str, r: httpx.Response) -> Any:
        op = self.doc["paths"][API + template][method]
        answer = op["responses"].get(str(r.status_code))
        assert answer is not None, f"{method} {template}: {r.status_code} undocumented: {r.text}"
        schema = answer["content"]["application/json"]["schema"]
        body = r.json()
        jsonschema.validate(
            body,
            {**schema, "components": self.doc["components"]},
            cls=jsonschema.Draft202012Validator,
        )
        self.checked.add((method, template))
        return body

    async def call(
        self,
        method: str,
        template: str,
        status: int = 200,
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        **path: Any,
    ) -> Any:
        r = await self.api.client.request(
            method.upper(),
            API + template.format(**path),
            headers=self.api.auth(token or self.api.admin),
            params=params,
            json=json,
            content=content,
        )
        assert r.status_code == status, f"{method} {template}: {r.status_code} {r.text}"
        return self.check(method, template, r)


PIPELINE = f"""\
service: shop
jobs:
  test:
    run: echo testing
environments:
  production:
    approval: {{ approvers: [ops], required: 1 }}
    deploy: {{ target: process, start: python3 app.py }}
    {HEALTH}
notify:
  - inbox: {{}}
    on: [approval.requested, deployment.succeeded]
"""

IMPORT = {
    "kind": "deployment",
    "service": "imported",
    "environment": "production",
    "id": "build-1",
    "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8",
    "started_at": "2024-05-01T10:00:00Z",
    "finished_at": "2024-05-01T10:12:00Z",
    "status": "succeeded",
}

ALERTS = {
    "version": "4",
    "groupKey": "{}:{alertname='Down'}",
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "conveyor",
    "groupLabels": {"alertname": "Down"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "Down", "service": "nowhere"},
            "annotations": {},
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus",
            "fingerprint": "abc123",
        }
    ],
}


@pytest.mark.integration
def test_real_answers_of_a_delivery_match_the_contract(serve: Serve, repo: GitRepo) -> None:
    repo.commit("v1", {"app.py": APP, "VERSION": "v1", "HEALTHY": "yes", "conveyor.yml": PIPELINE})

    async def body(api: Api) -> None:
        doc = (await api.client.get(f"{API}/openapi.json")).json()
        c = Contract(api, doc)
        await c.call("get", "/health")
        await c.call("get", "/me")
        await c.call("post", "/users", 201, json={"name": "olga", "groups": ["ops"]})
        await c.call("get", "/users")
        olga = api.token("read", "trigger", "approve", user="olga")
        service = await c.call(
            "post",
            "/services",
            201,
            json={"name": "shop", "repository": str(repo.path), "generate_webhook_secret": True},
        )
        assert "webhook_secret" in service  # the one answer that shows it
        listed = await c.call("get", "/services")
        assert "webhook_secret" not in listed[0]

        # Secrets: set one, several, list, remove.
        await c.call(
            "put",
            "/services/{service}/secrets/{name}",
            service="shop",
            name="A",
            json={"value": "1"},
        )
        await c.call(
            "put", "/services/{service}/secrets", service="shop", json={"values": {"B": "2"}}
        )
        await c.call("get", "/services/{service}/secrets", service="shop")
        await c.call("delete", "/services/{service}/secrets/{name}", service="shop", name="B")

        # A run, its logs and artifacts, the release it makes.
        run = await c.call("post", "/runs", 201, json={"service": "shop"})
        ended = await until(lambda: _ended(c, run["id"]), 30, f"run {run['id']} to end")
        assert ended["status"] == "succeeded", ended
        await c.call("get", "/runs", params={"service": "shop"})
        logs = await c.call("get", "/runs/{run_id}/logs", run_id=run["id"])
        assert any("testing" in line["text"] for line in logs["lines"])
        await c.call("get", "/runs/{run_id}/artifacts", run_id=run["id"])
        await until(lambda: _released(api), 20, "release 1")
        await c.call("get", "/releases")
        await c.call("get", "/releases/{release_id}", release_id=1)

        # The approval, decided by a person; the deployment it lets through.
        pending = await until(lambda: _pending(api), 30, "the approval request")
        listed_approvals = await c.call("get", "/approvals", params={"all": True}, token=olga)
        assert listed_approvals[0]["you"]["may_decide"] is True
        assert listed_approvals[0]["context"]["commit_count"] >= 1
        await c.call(
            "post",
            "/approvals/{approval_id}/approve",
            approval_id=pending["id"],
            token=olga,
            json={"reason": "looks right"},
        )
        await until(lambda: _serving(api), 30, "production to serve release 1")
        deployments = await c.call("get", "/deployments", params={"service": "shop"})
        await c.call("get", "/deployments/{deployment_id}", deployment_id=deployments[0]["id"])
        await c.call("get", "/environments", params={"service": "shop"})
        await c.call(
            "post",
            "/services/{service}/environments/{environment}/hold",
            service="shop",
            environment="production",
            json={"reason": "freeze"},
        )
        await c.call(
            "post",
            "/services/{service}/environments/{environment}/unhold",
            service="shop",
            environment="production",
        )

        # Incidents: opened by hand, listed, shown, resolved; an alert nobody can place.
        incident = await c.call(
            "post",
            "/incidents",
            201,
            json={"service": "shop", "environment": "production", "title": "slow"},
        )
        await c.call("get", "/incidents")
        await c.call("get", "/incidents/{incident_id}", incident_id=incident["id"])
        [env] = await c.call("get", "/environments", params={"service": "shop"})
        assert [i["id"] for i in env["open_incidents"]] == [incident["id"]]
        await c.call(
            "post", "/incidents/{incident_id}/resolve", incident_id=incident["id"], json={}
        )
        outcome = await c.call("post", "/hooks/alertmanager", json=ALERTS)
        assert outcome["alerts"][0]["outcome"] == "ignored"
        await c.call("get", "/alerts/ignored")

        # What people read: the overview, the timeline, the inbox, the audit log, DORA.
        await c.call("get", "/overview")
        timeline = await c.call("get", "/releases/{release_id}/timeline", release_id=1)
        assert {"commit", "run", "release", "deployment", "approval", "incident"} <= {
            e["kind"] for e in timeline["entries"]
        }
        await until(lambda: _inbox(api), 20, "the inbox notices")
        await c.call("get", "/inbox")
        await c.call("get", "/notifications")
        await c.call("get", "/audit")
        await c.call("get", "/dora", params={"service": "shop"})
        report = await c.call("get", "/dora", params={"explain": True, "by": "day"})
        assert "explanation" in report["metrics"]["lead_time"]

        # A rerun, cancelled; changes from a git hook; history imported (a dry run).
        again = await c.call("post", "/runs/{run_id}/rerun", 201, run_id=run["id"], json={})
        await c.call("post", "/runs/{run_id}/cancel", run_id=again["id"])
        hook = await c.call("post", "/hook-tokens", 201, json={"repository": str(repo.path)})
        sha = repo.git("rev-parse", "HEAD")
        push = {"repository": str(repo.path), "ref": "refs/heads/main", "before": sha, "after": sha}
        await c.call("post", "/hooks/git", 202, token=hook["token"], json=push | {"delivery": "d1"})
        await c.call("post", "/hooks/git", 200, token=hook["token"], json=push | {"delivery": "d1"})
        lines = json.dumps(IMPORT | {"commits": []}).encode() + b"\n"
        summary = await c.call("post", "/import", params={"dry_run": True}, content=lines)
        assert summary["deployments"]["added"] == 1
        # A bad line: every error, naming its line, in the error body.
        bad = json.dumps(IMPORT).encode() + b"\n"
        refused = await c.call("post", "/import", 400, params={"dry_run": True}, content=bad)
        assert refused["error"]["errors"]

        # Errors have their one documented shape.
        await c.call("get", "/runs/{run_id}", 404, run_id=999)
        await c.call("get", "/runs", 422, params={"limit": 0})
        r = await api.client.get(f"{API}/overview")
        assert r.status_code == 401
        c.check("get", "/overview", r)
        await _settle(api)

        covered = {f"{m.upper()} {t}" for m, t in c.checked}
        assert len(covered) >= 40, sorted(covered)

    try:
        serve(body)
    finally:
        stop_released_processes(repo.path.parent / "home")


@pytest.mark.integration
def test_the_runner_protocol_answers_match_the_contract(serve: Serve, repo: GitRepo) -> None:
    """No built-in runner: the test is the runner agent, over the API."""
    repo.commit("pipeline", {"conveyor.yml": "service: svc\njobs:\n  build:\n    run: 'true'\n"})

    async def body(api: Api) -> None:
        doc = (await api.client.get(f"{API}/openapi.json")).json()
        c = Contract(api, doc)
        runner = api.token("runner")
        await api.register("svc", repo.path)
        run = await api.trigger("svc")

        async def leased() -> Any:
            r = await api.post("/runners/lease", {"name": "probe", "wait": 0}, token=runner)
            return r if r.status_code == 200 else None

        lease = c.check("post", "/runners/lease", await until(leased, 10, "a job to lease"))
        assert (lease["run_id"], lease["job"]) == (run["id"], "build")
        assert "secrets_error" not in lease
        token = {"token": lease["token"]}
        job = {"job_id": lease["job_id"]}
        await c.call("post", "/jobs/{job_id}/heartbeat", token=runner, json=token, **job)
        answer = await c.call(
            "post", "/jobs/{job_id}/reports", token=runner, json=token | {"reports": []}, **job
        )
        assert answer == {"applied": 0, "seq": 0, "cancel": False}
        stale = {"token": lease["token"] + 1}
        await c.call("post", "/jobs/{job_id}/heartbeat", 409, token=runner, json=stale, **job)

        data = b"an artifact"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        put = {"token": runner, "content": data, "digest": digest}
        assert (await c.call("put", "/artifacts/{digest}", 201, **put))["size"] == len(data)
        assert "size" not in await c.call("put", "/artifacts/{digest}", 201, **put)

        # What is not JSON comes as its declared media type.
        for template, path in (
            ("/artifacts/{digest}", f"/artifacts/{digest}"),
            ("/runs/{run_id}/source", f"/runs/{run['id']}/source"),
        ):
            r = await api.get(path, token=runner if "source" in path else None)
            assert r.status_code == 200, r.text
            declared = doc["paths"][API + template]["get"]["responses"]["200"]["content"]
            assert r.headers["content-type"] in declared, (template, r.headers["content-type"])

        await c.call("post", "/runs/{run_id}/cancel", run_id=run["id"])

    serve(body, ServerConfig(runner_slots=0))


async def _ended(c: Contract, run_id: int) -> Any:
    run = await c.call("get", "/runs/{run_id}", run_id=run_id)
    return run if run["status"] in TERMINAL else None


async def _released(api: Api) -> bool:
    return bool((await api.get("/releases")).json())


async def _pending(api: Api) -> Any:
    found = (await api.get("/approvals")).json()
    return found[0] if found else None


async def _serving(api: Api) -> Any:
    [env] = (await api.get("/environments", params={"service": "shop"})).json()
    return env["release"] == 1 and env["healthy"] and not env["queue"]


async def _inbox(api: Api) -> bool:
    return len((await api.get("/inbox")).json()) >= 2


async def _settle(api: Api) -> None:
    """Let the runs queued by the hook and the rerun end before the server stops."""

    async def quiet() -> bool:
        runs = (await api.get("/runs")).json()
        return all(r["status"] in TERMINAL for r in runs)

    await until(quiet, 30, "the runs to end")
