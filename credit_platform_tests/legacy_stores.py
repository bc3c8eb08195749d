"""Feature stores as older releases made them (the DDL in core/legacy_schemas/, copied from
git history), for the tests of migrations and of what opening an old store upgrades."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from credit_platform.core import migrations, schema

LEGACY = Path(__file__).parent / "core" / "legacy_schemas"
# seed_release: the seed's five tables, INT log id, no role, case-insensitive ids (MariaDB).
# last_unversioned_release: every table as the last release before migrations made them.
RELEASES = ("seed_release", "last_unversioned_release")


def store_dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "mariadb"


def run_sql_file(url: str, path_or_text: Path | str) -> None:
    """Run a DDL file statement by statement, as the MariaDB image's init does."""
    ddl = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in ddl.split(";"):
                body = "\n".join(
                    line for line in statement.splitlines() if not line.startswith("--")
                ).strip()
                if body:
                    connection.execute(text(body))
    finally:
        engine.dispose()


def make_release_database(url: str, release: str) -> None:
    run_sql_file(url, LEGACY / f"{release}_{store_dialect(url)}.sql")


# Where MLflow's and Dagster's SQL stores record their migrations (a shared database).
OTHER_VERSION_TABLE = "alembic_version"


def schema_differences(connection, target=None) -> list:
    """What Alembic's autogenerate finds between the database and `target` (default: the
    platform schema as `core.schema` holds it now), compared as the migrations compare:
    tables, columns, types, nullability, server defaults, indexes, unique keys. Empty when
    the database is what the schema describes; another tool's version table in the same
    database is no difference."""
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": migrations.compare_server_default,
            "version_table": migrations.VERSION_TABLE,
            "include_name": lambda name, type_, _parents: (
                not (type_ == "table" and name == OTHER_VERSION_TABLE)
            ),
        },
    )
    return list(compare_metadata(context, target or schema.metadata))
