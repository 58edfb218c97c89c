"""DORA's definitions of 2024 (issue 15, docs/decisions/0018-dora-2024.md).

A deployment records when it began serving users (``served_at``, on the deployment and on its
DORA fact): one stopped by its checks before taking traffic is no change failure. For rows
written before, it is filled in from what was recorded:

- a deployment that became healthy served from then (``healthy_at``: the traffic switch, or
  its in-place replacement passing its checks);
- a failed deployment whose failure left the release before it serving never served: the
  controller recorded that in its reason ("... kept serving", "nothing was serving before"),
  which is what a blue-green candidate stopped by its checks before the switch gets;
- any other deployment that ended (failed in place, rolled back, failed rollbacks) served from
  its failure (else its end), the earliest instant recorded;
- an imported fact served from its start (imports that do not say otherwise, docs/metrics.md).

The DORA summaries are dropped so every profile is tallied again under the new definitions
(metrics.summary rebuilds them on first use).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import timestamp

revision = "0014"
down_revision = "0013"

FILL_DEPLOYMENTS = """
UPDATE deployments SET served_at = COALESCE(
    healthy_at,
    CASE WHEN status = 'failed' AND kind = 'deploy' AND (
        reason LIKE '%kept serving%' OR reason LIKE '%nothing was serving before%'
    ) THEN NULL ELSE COALESCE(failed_at, finished_at) END
)
"""
FILL_FACTS = """
UPDATE deployment_facts SET served_at = CASE
    WHEN deployment_id IS NULL OR result = 'succeeded' THEN started_at
    ELSE (SELECT deployments.served_at FROM deployments
          WHERE deployments.id = deployment_facts.deployment_id)
END
"""


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(timestamp("served_at", nullable=True))
    with op.batch_alter_table("deployment_facts") as batch:
        batch.add_column(timestamp("served_at", nullable=True))
    with op.batch_alter_table("dora_days") as batch:
        batch.add_column(
            sa.Column("caught", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column(
                "incident_recoveries",
                sa.LargeBinary(),
                nullable=False,
                server_default=sa.text("''"),
            )
        )
        batch.add_column(
            sa.Column(
                "incident_unrestored", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )
    op.execute(FILL_DEPLOYMENTS)
    op.execute(FILL_FACTS)
    # Old figures are recomputed: every summarised day is tallied again on first use.
    op.execute("DELETE FROM dora_days")
    op.execute("DELETE FROM dora_summaries")


def downgrade() -> None:
    with op.batch_alter_table("dora_days") as batch:
        batch.drop_column("incident_unrestored")
        batch.drop_column("incident_recoveries")
        batch.drop_column("caught")
    with op.batch_alter_table("deployment_facts") as batch:
        batch.drop_column("served_at")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("served_at")
    op.execute("DELETE FROM dora_days")
    op.execute("DELETE FROM dora_summaries")
