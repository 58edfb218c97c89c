"""Teams: named groups of services, measured together (DORA's portfolio, issue 15).

A team's services are kept by name, not by a reference to ``services``: imported history names
services Conveyor never built, and a team may group those too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.migrations.columns import create_table, indexes, reference, string, timestamp

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    create_table(
        "teams",
        string("name", 200, unique=True),
        timestamp("created_at"),
        string("created_by", 200, nullable=True),
    )
    create_table(
        "team_services",
        reference("team_id", "teams"),
        string("service", 200),
        sa.UniqueConstraint("team_id", "service", name="uq_team_services_service"),
    )
    indexes("team_services", "team_id")


def downgrade() -> None:
    op.drop_table("team_services")
    op.drop_table("teams")
