"""customer_id compares byte for byte on MariaDB.

Revision ID: 0002_customer_id_binary
Revises: 0001_platform_tables
Create Date: 2026-12-07

MariaDB's default utf8mb4 collation (utf8mb4_general_ci) made "CUS_a" and "CUS_A" one
value: one key in `credit_score_predictions` (score_dt, customer_id) and in the feature
target's key, one customer to keyset paging (`customer_id > :after` skipped the other's
rows), one customer in every join on customer_id. Every `customer_id` column becomes
utf8mb4_nopad_bin: bytes compared as Python compares strings, without the trailing-space
padding utf8mb4_bin still applies ("CUS_a " would equal "CUS_a" there). No row can be
lost: values distinct under the case-insensitive collation stay distinct under the binary
one. SQLite compares text byte for byte already, so it has nothing to do.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002_customer_id_binary"
down_revision: str | None = "0001_platform_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHARSET = "utf8mb4"
BINARY = "utf8mb4_nopad_bin"
LENGTH = 32
TABLES = (
    "customer_info",
    "credit_score",
    "credit_score_features",
    "credit_score_features_target",
    "credit_predictions_api_log",
    "credit_score_predictions",
)


def _collations() -> dict[str, tuple[str, str]]:
    """Each table's customer_id collation and the table's default collation."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.TABLE_NAME, c.COLLATION_NAME, t.TABLE_COLLATION "
            "FROM information_schema.COLUMNS c JOIN information_schema.TABLES t "
            "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
            "WHERE c.TABLE_SCHEMA = DATABASE() AND c.COLUMN_NAME = 'customer_id'"
        )
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def _set_collation(table: str, collation: str) -> None:
    op.alter_column(
        table,
        "customer_id",
        type_=mysql.VARCHAR(LENGTH, charset=CHARSET, collation=collation),
        existing_type=sa.String(LENGTH),
        existing_nullable=False,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    collations = _collations()
    for table in TABLES:
        if collations[table][0] != BINARY:
            _set_collation(table, BINARY)


def downgrade() -> None:
    """Back to each table's default collation; fails on a key that only the binary
    collation told apart (two customers then collide), leaving that table as it was."""
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    collations = _collations()
    for table in TABLES:
        if collations[table][0] == BINARY:
            _set_collation(table, collations[table][1])
