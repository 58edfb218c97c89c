"""Polling repositories that cannot call back: a moved branch head becomes one recorded change,
the first poll replays no history, and the server polls services whose interval is due."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import Conveyor
from tests.sources.test_sources_hook import ServerProcess, bare_with_clone, push

from conveyor.errors import GitError
from conveyor.sources.intake import ZERO_SHA
from conveyor.sources.poll import due_services, ls_remote, poll_service
from conveyor.store.db import Settings, Store, open_store
from conveyor.store.models import Delivery, Service, utcnow


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    opened = open_store(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def server(conveyor: Conveyor, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(conveyor, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def register(store: Store, name: str, repository: str, interval: float | None = 60.0) -> None:
    with store.write() as w:
        w.session.add(Service(name=name, repository=repository, poll_interval=interval))


def deliveries(store: Store) -> list[Delivery]:
    with store.session() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)).all())


def test_ls_remote_lists_branch_heads_of_a_url(tmp_path: Path) -> None:
    bare, clone = bare_with_clone(tmp_path)
    clone.git("checkout", "-q", "-b", "release/1.0")
    release = clone.commit("release")
    push(clone, "release/1.0")
    clone.git("tag", "v1")
    clone.git("push", "-q", "origin", "v1")
    heads = ls_remote(f"file://{bare.path}")
    assert heads == {"main": bare.git("rev-parse", "main"), "release/1.0": release}
    with pytest.raises(GitError):
        ls_remote(f"file://{tmp_path}/missing.git")
    with pytest.raises(GitError):
        ls_remote("ext::sh -c touch% pwned")  # a transport that runs commands is refused
    assert not (tmp_path / "pwned").exists()


def test_the_first_poll_notes_the_heads_and_later_polls_record_what_moved(
    store: Store, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)
    url = f"file://{bare.path}"
    register(store, "demo", url)
    first = bare.git("rev-parse", "main")

    assert poll_service(store, store.home, "demo") == []  # history is not replayed
    with store.session() as session:
        svc = session.scalars(select(Service)).one()
        assert svc.poll_state == {"main": first}
        assert svc.polled_at is not None
    assert poll_service(store, store.home, "demo") == []  # nothing moved

    second = clone.commit("second")
    push(clone, "main")
    clone.git("checkout", "-q", "-b", "$(touch${IFS}pwned)")
    odd = clone.commit("odd branch name")
    push(clone, "$(touch${IFS}pwned)")
    ids = poll_service(store, store.home, "demo")
    assert len(ids) == 2
    got = {d.payload["ref"]: d for d in deliveries(store)}
    main = got["refs/heads/main"]
    assert (main.source, main.delivery_id, main.service) == ("poll", f"demo:main:{second}", "demo")
    assert (main.payload["before"], main.payload["after"]) == (first, second)
    new_branch = got["refs/heads/$(touch${IFS}pwned)"]
    assert (new_branch.payload["before"], new_branch.payload["after"]) == (ZERO_SHA, odd)
    assert sorted(ids) == sorted(d.id for d in deliveries(store))
    assert poll_service(store, store.home, "demo") == []
    assert not list(tmp_path.rglob("pwned"))


def test_a_failing_remote_counts_as_polled(store: Store, tmp_path: Path) -> None:
    register(store, "gone", f"file://{tmp_path}/missing.git", interval=60)
    with pytest.raises(GitError):
        poll_service(store, store.home, "gone")
    assert due_services(store) == []  # not asked again before its interval


def test_due_services_follow_the_interval(store: Store) -> None:
    register(store, "never-polled", "/nowhere", interval=30)
    register(store, "recent", "/nowhere", interval=30)
    register(store, "stale", "/nowhere", interval=30)
    register(store, "not-polled-at-all", "/nowhere", interval=None)
    now = utcnow()
    with store.write() as w:
        for svc in w.session.scalars(select(Service)):
            if svc.name == "recent":
                svc.polled_at = now - dt.timedelta(seconds=10)
            elif svc.name == "stale":
                svc.polled_at = now - dt.timedelta(seconds=31)
    assert due_services(store, now) == ["never-polled", "stale"]
    assert due_services(store, now + dt.timedelta(seconds=25)) == [
        "never-polled",
        "recent",
        "stale",
    ]


@pytest.mark.integration
def test_the_server_polls_a_repository_url_and_runs_what_was_pushed(
    conveyor: Conveyor, server: ServerProcess, tmp_path: Path
) -> None:
    bare, clone = bare_with_clone(tmp_path)  # no hook in this repository
    url = f"file://{bare.path}"
    conveyor("service", "add", "demo", "--repo", url, "--poll", "0.5", check=True)
    database = f"sqlite:///{conveyor.home / 'conveyor.db'}"
    store = open_store(Settings(home=conveyor.home, database_url=database))
    try:
        server.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the first poll notes the heads, and runs nothing
            with store.session() as session:
                if session.scalars(select(Service.polled_at)).one() is not None:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the service was never polled: {server.log.read_text()}")
        first = bare.git("rev-parse", "main")
        sha = clone.commit("pushed, no hook")
        push(clone, "main")
        run = server.wait_for_run("demo", sha)
        assert (run["status"], run["trigger"]) == ("succeeded", "poll")
        assert run["ref"] == "refs/heads/main"
        assert first not in [r["sha"] for r in server.runs("demo")]  # no history replayed
    finally:
        store.close()
