"""Alembic's environment for the platform's migrations.

They run on the connection `credit_platform.core.migrations` hands over, against the
platform schema.

Batch mode makes ALTERs work on SQLite too (it rebuilds the table where SQLite cannot alter
it in place) and runs them as plain ALTER TABLE on MariaDB. Every revision commits on its
own, so an interrupted upgrade resumes at the revision that failed.
"""

from alembic import context

from credit_platform.core.migrations import VERSION_TABLE, compare_server_default
from credit_platform.core.migrations.columns import place_added_columns
from credit_platform.core.schema import metadata

if context.is_offline_mode():
    raise SystemExit(
        "the platform's migrations run against a database (credit-platform init); "
        "sql/schema_*.sql holds the DDL of the head revision for an empty database"
    )

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "run the platform's migrations through credit_platform.core.migrations "
        "(credit-platform init or credit-platform db ...), which hands Alembic a connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
    compare_type=True,
    compare_server_default=compare_server_default,
    transaction_per_migration=True,
    # A column added among others is written as `op.add_column_after` (columns.py).
    process_revision_directives=place_added_columns,
)
with context.begin_transaction():
    context.run_migrations()
