"""Versioned migrations of the feature store (Alembic), run through Alembic's API.

Every platform table is created and changed by the revisions in `versions/`; their head
must equal `credit_platform.core.schema` (a test compares them with autogenerate's
`compare_metadata`). No alembic.ini is needed: the configuration is built here, and the
migrations travel inside the package (so the installed package, the Docker image and the
service's Bento all carry them). `credit_platform.core.db.create_tables` runs `upgrade`
under the schema lock, so processes starting together migrate once.

A database made before migrations existed (no version table) is upgraded from the first
revision, which recognises the tables an earlier release left and brings them to its layout
without losing a row (README "Migrations"). The version table has a name of its own, not
Alembic's default `alembic_version`: MLflow's and Dagster's SQL stores keep theirs under that
name, and an operator may give all three one database.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "credit_platform_alembic_version"

logger = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    """The migrations themselves are inconsistent (two revisions share a parent)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the platform's migrations, built in code; with a
    connection, the commands run on it (env.py reads it from `attributes`)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # A new revision's file is named by its id ("%%" escapes ConfigParser's interpolation).
    config.set_main_option("file_template", "%%(rev)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def head_revision() -> str:
    """The revision the newest migration leaves a database at (one head, or an error)."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise MigrationError(
            f"the migrations have {len(heads)} heads ({', '.join(sorted(heads))}): "
            "two revisions share a parent; give the newer one the other as down_revision"
        )
    return heads[0]


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in script_directory().walk_revisions())


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None for an empty or pre-migration database."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def is_current(connection: Connection) -> bool:
    """Whether the database is at this code's head revision."""
    return current_revision(connection) == head_revision()


def upgrade(connection: Connection, revision: str = "head") -> str | None:
    """Bring the database on `connection` to `revision` (default: head) and commit; return
    the revision it was at. A database at a revision this code does not know (a newer
    release migrated it) is left alone: the caller checks that its tables hold what this
    code needs. Hold the schema lock around it (`core.db.create_tables` does)."""
    before = current_revision(connection)
    if connection.in_transaction():
        connection.commit()  # the read above began one; Alembic runs its own per revision
    if before is not None and before not in known_revisions():
        logger.warning(
            "the feature store is at migration %s, which this release does not know (a newer "
            "release migrated it); it is left as it is",
            before,
        )
        return before
    command.upgrade(alembic_config(connection), revision)
    if connection.in_transaction():
        connection.commit()
    return before


def downgrade(connection: Connection, revision: str) -> None:
    """Take the database back to `revision` (for tests and a deliberate rollback)."""
    if connection.in_transaction():
        connection.commit()
    command.downgrade(alembic_config(connection), revision)
    if connection.in_transaction():
        connection.commit()


# Server defaults the database reports in another spelling than SQLAlchemy renders them.
_NOW_SPELLINGS = frozenset({"now()", "current_timestamp", "current_timestamp()"})


def _normalised_default(default: str | None) -> str | None:
    if default is None:
        return None
    value = default.strip().lower()
    while value.startswith("(") and value.endswith(")"):
        value = value[1:-1].strip()
    if value.startswith("current_timestamp(") or value in _NOW_SPELLINGS:
        return "now()"
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def compare_server_default(
    context,
    inspected_column,
    metadata_column,
    inspected_default: str | None,
    metadata_default,
    rendered_metadata_default: str | None,
) -> bool:
    """True when the defaults differ in meaning, not only in spelling ('' and "''", now()
    and CURRENT_TIMESTAMP(6))."""
    return _normalised_default(inspected_default) != _normalised_default(rendered_metadata_default)
