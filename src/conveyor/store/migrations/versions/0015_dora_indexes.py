"""Indexes for DORA on a long history (issue 15, item 6): every statement of a report finds its
rows through an index (tests/metrics/test_dora_plans.py).

Work in progress reads each service's newest release in a tier and in each environment; the
incidents of a span are read by when they opened or were resolved, of every service or one.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"

INDEXES = {
    "ix_deployments_tier_release": (
        "deployments",
        ["service_id", "tier", "status", "kind", "release_id"],
    ),
    "ix_deployments_env_release": (
        "deployments",
        ["service_id", "status", "environment", "release_id"],
    ),
    "ix_incidents_opened": ("incidents", ["opened_at"]),
    "ix_incidents_resolved": ("incidents", ["resolved_at"]),
    "ix_incidents_service_opened": ("incidents", ["service_id", "opened_at"]),
    "ix_incidents_service_resolved": ("incidents", ["service_id", "resolved_at"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
