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

from credit_platform.core.migrations.collations import compare_by_default, compare_bytes

revision: str = "0002_customer_id_binary"
down_revision: str | None = "0001_platform_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LENGTH = 32
TABLES = (
    "customer_info",
    "credit_score",
    "credit_score_features",
    "credit_score_features_target",
    "credit_predictions_api_log",
    "credit_score_predictions",
)


def upgrade() -> None:
    compare_bytes("customer_id", LENGTH, TABLES)


def downgrade() -> None:
    """Fails on two keys only the byte comparison told apart, leaving that table as it was."""
    compare_by_default("customer_id", LENGTH, TABLES)
