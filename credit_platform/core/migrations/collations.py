"""Text keys that compare byte for byte on MariaDB: the work of the collation revisions.

MariaDB's default utf8mb4 collation (utf8mb4_general_ci) makes "a" and "A" one value.
A key column moved to utf8mb4_nopad_bin compares as Python and SQLite compare strings,
without the trailing-space padding utf8mb4_bin still applies. SQLite has nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

CHARSET = "utf8mb4"
BYTE_COMPARED = "utf8mb4_nopad_bin"


def _on_mariadb() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def _collations(column: str, tables: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each table's collation of `column`, and the table's default collation."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.TABLE_NAME, c.COLLATION_NAME, t.TABLE_COLLATION "
            "FROM information_schema.COLUMNS c JOIN information_schema.TABLES t "
            "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
            "WHERE c.TABLE_SCHEMA = DATABASE() AND c.COLUMN_NAME = :column "
            "AND c.TABLE_NAME IN :tables"
        ).bindparams(sa.bindparam("tables", expanding=True)),
        {"column": column, "tables": list(tables)},
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def _set(table: str, column: str, length: int, collation: str) -> None:
    op.alter_column(
        table,
        column,
        type_=mysql.VARCHAR(length, charset=CHARSET, collation=collation),
        existing_type=sa.String(length),
        existing_nullable=False,
    )


def compare_bytes(column: str, length: int, tables: Sequence[str]) -> None:
    """`column` (VARCHAR(length), NOT NULL) of each table becomes byte-compared. No row
    can be lost: values distinct case-insensitively stay distinct."""
    if not _on_mariadb():
        return
    collations = _collations(column, tables)
    for table in tables:
        if collations[table][0] != BYTE_COMPARED:
            _set(table, column, length, BYTE_COMPARED)


def compare_by_default(column: str, length: int, tables: Sequence[str]) -> None:
    """Back to each table's default collation; fails on a key only the byte comparison
    told apart (two values then collide), leaving that table as it was."""
    if not _on_mariadb():
        return
    collations = _collations(column, tables)
    for table in tables:
        if collations[table][0] == BYTE_COMPARED:
            _set(table, column, length, collations[table][1])
