"""An index for reading a log page by page (issue 16, item 3): a page of a job's lines after a
cursor (a line id) is a range of (job_id, id), so each page costs the same wherever it is in
the log (tests/server/test_log_pages.py checks the plans).

(job_id, seq) cannot serve it: the cursor is the line id, which orders a run's lines across
its jobs.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    op.create_index("ix_log_lines_job_id", "log_lines", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_log_lines_job_id", table_name="log_lines")
