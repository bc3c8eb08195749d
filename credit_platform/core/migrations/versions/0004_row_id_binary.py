"""Row ids compare byte for byte on MariaDB.

Revision ID: 0004_row_id_binary
Revises: 0003_reason_codes
Create Date: 2026-12-07

The source tables' `id` (the Kaggle ID, a row's key) kept MariaDB's default collation
(utf8mb4_general_ci) when 0002 made `customer_id` binary: "0x1a2b" and "0x1A2B" were one
key, so the loader took the second row for one already stored and skipped it, and labels
joined the features of a row whose id differed only in case. SQLite told them apart. Every
`id` of those tables becomes utf8mb4_nopad_bin, as `customer_id` is. No row can be lost:
values distinct under the case-insensitive collation stay distinct under the binary one.
"""

from collections.abc import Sequence

from credit_platform.core.migrations.collations import compare_by_default, compare_bytes

revision: str = "0004_row_id_binary"
down_revision: str | None = "0003_reason_codes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LENGTH = 32
TABLES = (
    "customer_info",
    "credit_score",
    "credit_score_features",
    "credit_score_features_target",
)


def upgrade() -> None:
    compare_bytes("id", LENGTH, TABLES)


def downgrade() -> None:
    """Fails on two keys only the byte comparison told apart, leaving that table as it was."""
    compare_by_default("id", LENGTH, TABLES)
