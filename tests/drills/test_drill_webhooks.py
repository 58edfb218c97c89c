"""Signed GitHub push deliveries to a real `conveyor server`, as a forge really sends them:
duplicated, late, out of order, and a hundred at once. Each change is recorded exactly once, a
push is never run twice, and a late delivery never takes a branch back to an older commit."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.forges.github import sign_github
from tests.conftest import GitRepo
from tests.serverproc import ServerProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

PAYLOADS = Path(__file__).parent.parent / "forges" / "fixtures"
PIPELINE = """\
service: SERVICE
on:
  push: { branches: [main, "feature/*"] }
jobs:
  build:
    run: "true"
"""


class Forge:
    """Sends GitHub push deliveries, signed with the service's secret, to the server."""

    def __init__(self, server: ServerProcess, service: str, secret: str) -> None:
        self.server = server
        self.service = service
        self.secret = secret
        self.template = json.loads((PAYLOADS / "github" / "push.json").read_text())

    def push(self, before: str, after: str, ref: str = "refs/heads/main") -> tuple[bytes, str]:
        """A push's body and a fresh delivery id (a forge's retry reuses the id)."""
        data = json.loads(json.dumps(self.template))
        data.update(ref=ref, before=before, after=after)
        data["commits"][-1]["id"] = data["head_commit"]["id"] = after
        return json.dumps(data).encode(), str(uuid.uuid4())

    def send(self, body: bytes, delivery: str, client: httpx.Client | None = None) -> int:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign_github(self.secret, body),
        }
        http = client or self.server.http
        url = f"/hooks/github/{self.service}"
        return http.post(url, content=body, headers=headers).status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (each test has its own service). No runner: runs stay
    queued, which is what these drills count."""
    srv = ServerProcess(tmp_path_factory.mktemp("webhooks") / "home")
    srv.admin = srv.token("admin", "admin")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def register(server: ServerProcess, repo: GitRepo, service: str) -> Forge:
    r = server.api(
        "POST", "/services", json={"name": service, "repository": str(repo.path),
                                   "generate_webhook_secret": True},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return Forge(server, service, r.json()["webhook_secret"])


def deliveries(server: ServerProcess, service: str) -> list[dict[str, Any]]:
    rows = server.query(
        "SELECT delivery_id, status, reason, run_id, payload FROM deliveries WHERE service = ?",
        service,
    )
    return [
        {"delivery": d, "status": s, "reason": r, "run_id": run, "after": json.loads(p)["after"]}
        for d, s, r, run, p in rows
    ]


def processed(
    server: ServerProcess, service: str, count: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """The service's deliveries once `count` of them have been turned into runs or reasons."""

    def done() -> list[dict[str, Any]] | None:
        rows = deliveries(server, service)
        done = sum(d["status"] not in ("received", "claimed") for d in rows)
        return rows if done >= count else None

    rows: list[dict[str, Any]] = until(done, timeout, f"{count} deliveries processed")
    return rows


def run_shas(server: ServerProcess, service: str) -> list[str]:
    rows = server.query(
        "SELECT runs.sha FROM runs JOIN services ON services.id = runs.service_id "
        "WHERE services.name = ? ORDER BY runs.id",
        service,
    )
    return [sha for (sha,) in rows]


def received(server: ServerProcess, service: str) -> int:
    rows = server.query(
        "SELECT id FROM events WHERE type = 'change.received' AND service = ?", service
    )
    return len(rows)


def test_a_duplicated_delivery_is_recorded_once_and_its_push_runs_once(
    server: ServerProcess, repo: GitRepo
) -> None:
    first = repo.commit("first", {"conveyor.yml": PIPELINE.replace("SERVICE", "dup")})
    second = repo.commit("second", {"README": "hello\n"})
    forge = register(server, repo, "dup")
    body, delivery = forge.push(first, second)

    # The same delivery five times at once (a forge retrying on a slow answer).
    with ThreadPoolExecutor(5) as pool:
        codes = sorted(pool.map(lambda _: forge.send(body, delivery), range(5)))
    assert codes == [202, 409, 409, 409, 409]
    [row] = processed(server, "dup", 1)
    assert (row["delivery"], row["status"], row["after"]) == (delivery, "queued", second)

    # Later, the same push again under a new delivery id ("Redeliver", or a hook and a
    # webhook both announcing it): recorded, but no second run.
    again, other = forge.push(first, second)
    assert forge.send(again, other) == 202
    rows = processed(server, "dup", 2)
    late = next(d for d in rows if d["delivery"] == other)
    assert late["status"] == "ignored"
    assert late["run_id"] == row["run_id"]
    assert run_shas(server, "dup") == [second]
    assert received(server, "dup") == 2


def test_late_and_out_of_order_pushes_never_take_the_branch_back(
    server: ServerProcess, repo: GitRepo
) -> None:
    c1 = repo.commit("one", {"conveyor.yml": PIPELINE.replace("SERVICE", "late")})
    c2 = repo.commit("two", {"README": "2\n"})
    c3 = repo.commit("three", {"README": "3\n"})
    forge = register(server, repo, "late")

    # The forge sends c1→c2 then c2→c3; the network hands them over newest first.
    newer, newer_id = forge.push(c2, c3)
    older, older_id = forge.push(c1, c2)
    assert forge.send(newer, newer_id) == 202
    processed(server, "late", 1)
    assert forge.send(older, older_id) == 202
    rows = {d["delivery"]: d for d in processed(server, "late", 2)}
    assert rows[newer_id]["status"] == "queued"
    assert rows[older_id]["status"] == "ignored"
    assert c3[:7] in rows[older_id]["reason"], rows[older_id]["reason"]
    assert run_shas(server, "late") == [c3]  # c2 is in c3: nothing of it is left unbuilt

    # A deliberate force-push back to c1 (before = the branch's head) is a real push: it runs.
    back, back_id = forge.push(c3, c1)
    assert forge.send(back, back_id) == 202
    rows = {d["delivery"]: d for d in processed(server, "late", 3)}
    assert rows[back_id]["status"] == "queued"
    assert run_shas(server, "late") == [c3, c1]


def test_a_hundred_concurrent_pushes_are_each_recorded_and_queued_once(
    server: ServerProcess, repo: GitRepo
) -> None:
    base = repo.commit("base", {"conveyor.yml": PIPELINE.replace("SERVICE", "burst")})
    heads = []
    for i in range(100):
        repo.git("checkout", "-q", "-b", f"feature/{i}", base)
        heads.append(repo.commit(f"feature {i}", {"README": f"{i}\n"}))
    forge = register(server, repo, "burst")
    pushes = [forge.push(base, sha, f"refs/heads/feature/{i}") for i, sha in enumerate(heads)]
    health: list[float] = []

    def probe() -> None:
        """While the burst lands, the server keeps answering."""
        with httpx.Client(base_url=server.http.base_url, timeout=5) as client:
            while len(health) < 20:
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                health.append(time.monotonic() - started)

    started = time.monotonic()
    with (
        httpx.Client(base_url=server.http.base_url, timeout=30) as client,
        ThreadPoolExecutor(51) as pool,
    ):
        prober = pool.submit(probe)
        codes = list(pool.map(lambda push: forge.send(*push, client=client), pushes))
        accepted = time.monotonic() - started
        prober.result()
    assert codes == [202] * 100
    rows = processed(server, "burst", 100, timeout=40)
    queued = time.monotonic() - started

    assert len(rows) == 100
    assert {d["status"] for d in rows} == {"queued"}
    assert sorted(d["delivery"] for d in rows) == sorted(d for _, d in pushes)
    assert sorted(run_shas(server, "burst")) == sorted(heads)
    assert received(server, "burst") == 100
    runs = server.api("GET", "/runs", params={"service": "burst", "limit": 200}).json()
    assert len(runs) == 100
    # Started by the dispatcher as soon as queued; their jobs wait for a runner.
    assert {r["status"] for r in runs} <= {"queued", "running"}
    print(
        f"100 pushes: all accepted in {accepted:.2f}s, all queued as runs in {queued:.2f}s; "
        f"/health during the burst: max {max(health) * 1000:.0f} ms"
    )
