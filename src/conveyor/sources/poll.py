"""Polling repositories that cannot call back: `git ls-remote --heads` on the service's own
repository URL every `poll_interval` seconds, a change recorded for each branch whose head
moved since the last poll (the intake step then applies the branch filter and queues runs).

The first poll of a service only notes the heads it finds: history is not replayed. Branch
names from the remote are data: they are compared and stored, never given to a shell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import subprocess
from pathlib import Path

from sqlalchemy import select

from conveyor.errors import GitError
from conveyor.git import run_git_clean
from conveyor.sources.intake import ZERO_SHA, record_change
from conveyor.store.db import Store
from conveyor.store.models import Delivery, Service, utcnow

log = logging.getLogger("conveyor.poll")

LS_REMOTE_TIMEOUT = 60
# Delivery ids are at most this long; longer ones name the branch by a hash.
DELIVERY_MAX = 200


def ls_remote(url: str, timeout: float = LS_REMOTE_TIMEOUT) -> dict[str, str]:
    """{branch: sha} of the repository at `url` (a URL or a local path)."""
    try:
        result = run_git_clean(
            "-c", "protocol.ext.allow=never", "ls-remote", "--heads", "--", url, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git ls-remote {url} did not answer within {timeout:g}s") from None
    if result.returncode != 0:
        raise GitError(f"git ls-remote {url} failed: {result.stderr.strip()}")
    heads: dict[str, str] = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/") and len(sha) in (40, 64):
            heads[ref.removeprefix("refs/heads/")] = sha
    return heads


def _delivery_id(service: str, branch: str, sha: str) -> str:
    delivery = f"{service}:{branch}:{sha}"
    if len(delivery) <= DELIVERY_MAX:
        return delivery
    return f"{service[:100]}:{hashlib.sha256(branch.encode()).hexdigest()[:16]}:{sha}"


def due_services(store: Store, now: dt.datetime | None = None) -> list[str]:
    """Services to poll now: a poll interval is set and has elapsed since the last poll."""
    now = now or utcnow()
    with store.session() as session:
        rows = session.execute(
            select(Service.name, Service.poll_interval, Service.polled_at)
            .where(Service.poll_interval.is_not(None), Service.poll_interval > 0)
            .order_by(Service.name)
        )
        return [
            name
            for name, interval, polled_at in rows
            if polled_at is None or (now - polled_at).total_seconds() >= (interval or 0)
        ]


def poll_service(store: Store, home: Path, service: str) -> list[int]:
    """Poll one service now; the ids of the deliveries recorded for branches that moved.

    `home` is the server's data directory (kept for symmetry with the intake step, which
    fetches the service's mirror there; polling itself only asks the remote for its heads).
    A failed poll still counts as a poll (so a dead remote is not asked every second) and
    raises GitError.
    """
    del home
    with store.session() as session:
        svc = session.scalar(select(Service).where(Service.name == service))
        if svc is None:
            return []
        url = svc.repository
    try:
        heads = ls_remote(url)
    except GitError:
        with store.write() as w:
            row = w.session.scalar(select(Service).where(Service.name == service))
            if row is not None:
                row.polled_at = utcnow()
        raise
    with store.write() as w:
        # Compared with the state as it is now, in this transaction: another server process
        # may have polled meanwhile (and the delivery ids make a change recorded twice one).
        row = w.session.scalar(select(Service).where(Service.name == service))
        if row is None:
            return []
        first = row.polled_at is None
        seen = {str(k): str(v) for k, v in (row.poll_state or {}).items()}
        recorded: list[str] = []
        if not first:
            for branch, sha in sorted(heads.items()):
                if seen.get(branch) == sha:
                    continue
                delivery = _delivery_id(service, branch, sha)
                new = record_change(
                    w,
                    source="poll",
                    delivery_id=delivery,
                    service=service,
                    payload={
                        "ref": f"refs/heads/{branch}",
                        "before": seen.get(branch, ZERO_SHA),
                        "after": sha,
                        "repository": url,
                    },
                )
                if new:
                    recorded.append(delivery)
        row.poll_state = dict(heads)
        row.polled_at = utcnow()
        ids = (
            w.session.scalars(
                select(Delivery.id)
                .where(Delivery.source == "poll", Delivery.delivery_id.in_(recorded))
                .order_by(Delivery.id)
            ).all()
            if recorded
            else []
        )
    if first:
        log.info("first poll of %s: %d branch(es) noted, none run", service, len(heads))
    elif recorded:
        log.info("poll of %s: %d branch(es) moved", service, len(recorded))
    return list(ids)


def poll_due(store: Store, home: Path, now: dt.datetime | None = None) -> list[int]:
    """Poll every service that is due; one failing remote does not hold up the others."""
    ids: list[int] = []
    for service in due_services(store, now):
        try:
            ids += poll_service(store, home, service)
        except GitError as exc:
            log.warning("polling %s failed: %s", service, exc.message)
    return ids


def poll_sources(store: Store, home: Path) -> int:
    """The server's polling step: poll the services that are due, and record what git hooks
    spooled while the server was away. How many changes were recorded."""
    from conveyor.sources.hook import drain_spools

    return len(poll_due(store, home)) + drain_spools(store)
