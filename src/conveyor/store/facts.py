"""Writing DORA facts to the store: one deployment fact with its changes, once per key."""

from __future__ import annotations

from sqlalchemy import insert, select

from conveyor.facts import DeploymentFact
from conveyor.store.db import Writer
from conveyor.store.models import ChangeFactRow, DeploymentFactRow


def write_fact(
    w: Writer, fact: DeploymentFact, *, source: str, deployment_id: int | None = None
) -> bool:
    """Insert ``fact`` unless a fact with its key (``fact.id``) exists; True if inserted."""
    if w.session.scalar(select(DeploymentFactRow.id).where(DeploymentFactRow.key == fact.id)):
        return False
    row = DeploymentFactRow(
        key=fact.id,
        source=source,
        service=fact.service,
        environment=fact.environment,
        tier=fact.tier,
        kind=fact.kind,
        result=fact.result,
        sha=fact.sha,
        started_at=fact.started_at,
        finished_at=fact.finished_at,
        failed_at=fact.failed_at,
        rollback_of=fact.rollback_of,
        fixes_incident=fact.fixes_incident,
        stages={k: v.isoformat() for k, v in fact.stages.items()},
        deployment_id=deployment_id,
        served_at=fact.serving_from,
    )
    w.session.add(row)
    w.session.flush()
    if fact.changes:
        w.session.execute(
            insert(ChangeFactRow),
            [
                {
                    "fact_id": row.id,
                    "sha": c.sha,
                    "committed_at": c.committed_at,
                    "authored_at": c.authored_at,
                    "seen_at": c.seen_at,
                }
                for c in fact.changes
            ],
        )
    return True
