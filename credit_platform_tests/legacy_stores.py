"""Feature stores as older releases made them (the DDL in core/legacy_schemas/, copied from
git history), for the tests of migrations and of what opening an old store upgrades."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

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
