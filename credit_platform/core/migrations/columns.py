"""A new column where `core/schema.py` puts it, not last: `op.add_column_after`.

A feature's column sits among the other features, before `name` and `ssn` in
`credit_score_features` and before the label in `credit_score_features_target`. A plain
ADD COLUMN on MariaDB puts it last, and the migrated table would then differ from the one
`sql/schema_mariadb.sql` creates (the migration tests compare `SHOW CREATE TABLE`, column
order included). So `credit-platform db revision` writes a column that is not the table's
last as `op.add_column_after(table, column, after=<the column before it>)`:
`ALTER TABLE ... ADD COLUMN ... AFTER ...` on MariaDB, and on SQLite, which has no AFTER,
the table rebuilt by Alembic's batch mode with the column in its place.

`env.py` imports this module, so the operation exists when a revision runs.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import _render_column
from alembic.operations import MigrateOperation, Operations, ops
from sqlalchemy.schema import CreateColumn


@Operations.register_operation("add_column_after")
class AddColumnAfterOp(MigrateOperation):
    """Add `column` to `table_name` right after its column `after`."""

    def __init__(self, table_name: str, column: sa.Column, after: str) -> None:
        self.table_name = table_name
        self.column = column
        self.after = after

    @classmethod
    def add_column_after(
        cls, operations: Operations, table_name: str, column: sa.Column, *, after: str
    ) -> Any:
        return operations.invoke(cls(table_name, column, after))

    def reverse(self) -> ops.DropColumnOp:
        return ops.DropColumnOp.from_column_and_tablename(None, self.table_name, self.column)


@Operations.implementation_for(AddColumnAfterOp)
def _add_column_after(operations: Operations, operation: AddColumnAfterOp) -> None:
    dialect = operations.get_bind().dialect
    if dialect.name in ("mysql", "mariadb"):
        quote = dialect.identifier_preparer.quote
        column = CreateColumn(operation.column).compile(dialect=dialect)
        operations.execute(
            f"ALTER TABLE {quote(operation.table_name)} ADD COLUMN {column} "
            f"AFTER {quote(operation.after)}"
        )
        return
    with operations.batch_alter_table(operation.table_name, recreate="always") as batch:
        batch.add_column(operation.column, insert_after=operation.after)


@renderers.dispatch_for(AddColumnAfterOp)
def _render_add_column_after(context: AutogenContext, operation: AddColumnAfterOp) -> str:
    column = _render_column(operation.column, context)
    return f"op.add_column_after({operation.table_name!r}, {column}, after={operation.after!r})"


def place_added_columns(context: Any, revision: Any, directives: list) -> None:
    """`process_revision_directives` for autogenerate: each column it adds that is not
    the last of its table in the target schema becomes an `add_column_after` naming the
    column before it there (downgrades drop it as before)."""
    metadata = context.opts["target_metadata"]
    script = directives[0]
    upgrade = script.upgrade_ops
    placed: list[AddColumnAfterOp] = []
    kept = []
    for operation in upgrade.ops:
        if not isinstance(operation, ops.ModifyTableOps):
            kept.append(operation)
            continue
        table = metadata.tables.get(operation.table_name)
        names = [column.name for column in table.columns] if table is not None else []
        rest = []
        for change in operation.ops:
            position = (
                names.index(change.column.name)
                if isinstance(change, ops.AddColumnOp) and change.column.name in names
                else None
            )
            if position is None or position in (0, len(names) - 1):
                rest.append(change)
            else:
                placed.append(
                    AddColumnAfterOp(operation.table_name, change.column, names[position - 1])
                )
        if rest:
            operation.ops = rest
            kept.append(operation)
    upgrade.ops = kept + placed
