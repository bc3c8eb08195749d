"""Reason codes: the log's `reasons` (JSON, NULL when not asked for) and the batch
scores' `reason_1..3`.

Revision ID: 0003_reason_codes
Revises: 0002_customer_id_binary
Create Date: 2026-12-07 10:33:47.075237

Check what autogenerate wrote against core/schema.py, on SQLite and MariaDB alike (README
"Changing a table"); a revision never imports core/schema.py: it describes the change as
it was made, whatever the schema becomes later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_reason_codes"
down_revision: str | None = "0002_customer_id_binary"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credit_predictions_api_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasons", sa.JSON(none_as_null=True), nullable=True))

    with op.batch_alter_table("credit_score_predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason_1", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reason_2", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reason_3", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_score_predictions", schema=None) as batch_op:
        batch_op.drop_column("reason_3")
        batch_op.drop_column("reason_2")
        batch_op.drop_column("reason_1")

    with op.batch_alter_table("credit_predictions_api_log", schema=None) as batch_op:
        batch_op.drop_column("reasons")
