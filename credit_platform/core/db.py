"""Engines for the feature store, with errors that name the database instead of a stack trace."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from credit_platform.core.schema import metadata


class FeatureStoreUnavailable(RuntimeError):
    """The feature store could not be reached or opened."""


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and metadata."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for SQLite or MariaDB; SQLite's folder is created, MariaDB pings on checkout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise FeatureStoreUnavailable(
                    f"cannot create the folder {folder} for the SQLite feature store: {error}"
                ) from error
        engine = create_engine(url, connect_args={"timeout": 30})
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=3600,
            connect_args={"connect_timeout": 5},
        )
    return engine


def check_reachable(engine: Engine) -> None:
    """Raise FeatureStoreUnavailable naming the database when it does not answer."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError) as error:
        reason = getattr(error, "orig", error)
        where = redacted(engine.url.render_as_string(hide_password=False))
        raise FeatureStoreUnavailable(
            f"cannot reach the feature store at {where}: {reason}"
        ) from error


def create_database_if_missing(url: str) -> None:
    """MariaDB needs the database to exist before tables can be created in it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" or not parsed.database:
        return
    server = create_engine(parsed.set(database=""), connect_args={"connect_timeout": 5})
    try:
        with server.begin() as connection:
            name = parsed.database.replace("`", "``")
            connection.execute(
                text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
            )
    except (OperationalError, InterfaceError) as error:
        reason = getattr(error, "orig", error)
        raise FeatureStoreUnavailable(
            f"cannot reach the database server for {redacted(url)}: {reason}"
        ) from error
    finally:
        server.dispose()


def init_schema(url: str) -> Engine:
    """Create the database (MariaDB) and every table that is missing; safe to repeat."""
    create_database_if_missing(url)
    engine = make_engine(url)
    check_reachable(engine)
    metadata.create_all(engine)
    return engine


def render_ddl(dialect_name: str) -> str:
    """CREATE TABLE/INDEX statements of the schema for "mariadb" or "sqlite" (for `sql/`)."""
    from sqlalchemy.dialects import mysql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialects = {"mariadb": mysql.dialect(is_mariadb=True), "sqlite": sqlite.dialect()}
    if dialect_name not in dialects:
        raise ValueError(f"unknown dialect {dialect_name!r}; choose one of {sorted(dialects)}")
    dialect = dialects[dialect_name]
    statements = [
        f"-- Generated from credit_platform/schema.py by `credit-platform init --print-ddl "
        f"{dialect_name}`, do not edit by hand."
    ]
    for table in metadata.sorted_tables:
        create = str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip()
        statements.append("\n".join(line.rstrip() for line in create.splitlines()) + ";")
        for index in sorted(table.indexes, key=lambda item: item.name or ""):
            created = CreateIndex(index, if_not_exists=True).compile(dialect=dialect)
            statements.append(f"{str(created).strip()};")
    return "\n\n".join(statements) + "\n"
