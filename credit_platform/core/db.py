"""Engines for the feature store, with errors that name the database instead of a stack trace.

Creating the schema means running the versioned migrations (`core/migrations`) up to their
head: safe to repeat and to run from several processes at once (a lock serialises it, and a
database already at the head is not locked at all), and it refuses tables that could not
store what the schema promises (a character set other than utf8mb4, a layout no migration
knows).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import bindparam, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from credit_platform.core import settings
from credit_platform.core.schema import MARIADB_CHARSET, metadata

# MariaDB errors no retry can fix: access denied (user, database, table, column, privilege,
# host), unknown database, unknown column (a table of another layout).
PERMANENT_MARIADB_ERRORS = frozenset({1044, 1045, 1049, 1054, 1130, 1142, 1143, 1227, 1698})
# SQLite's equivalents: a file that cannot be opened, a table of another layout.
PERMANENT_SQLITE_MESSAGES = ("unable to open database file", "no such column", "has no column")
# A process waiting for another's migration says so this often.
SCHEMA_LOCK_REPORT_SECONDS = 30.0
# MariaDB errors that roll back only the statement's transaction because another
# transaction held the rows (lock wait timeout, deadlock): running it again is the fix
# InnoDB asks for ("try restarting transaction").
LOCK_CONFLICT_ERRORS = frozenset({1205, 1213})
# SQLite's equivalent, once its busy timeout has passed.
SQLITE_LOCK_CONFLICT_MESSAGE = "database is locked"
TRANSACTION_ATTEMPTS = 5
TRANSACTION_FIRST_BACKOFF_SECONDS = 0.5

Result = TypeVar("Result")

logger = logging.getLogger(__name__)


class FeatureStoreUnavailable(RuntimeError):
    """The feature store could not be reached or opened."""


class SchemaMismatch(FeatureStoreUnavailable):
    """Existing tables cannot hold what the schema promises (layout or character set)."""


def permanent_problem(error: BaseException) -> str | None:
    """The reason when `error` (or what caused it) is one no retry can fix: bad credentials,
    a missing database, missing privileges, tables of another layout; None for anything
    that may pass (server down, timeout, lock)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SchemaMismatch):
            return str(seen)
        original = seen.orig if isinstance(seen, DBAPIError) else seen
        args = getattr(original, "args", ())
        if args and isinstance(args[0], int) and args[0] in PERMANENT_MARIADB_ERRORS:
            return f"MariaDB error {args[0]}: {args[1] if len(args) > 1 else original}"
        if type(original).__module__.startswith("sqlite3") and any(
            message in str(original) for message in PERMANENT_SQLITE_MESSAGES
        ):
            return f"SQLite: {original}"
        seen = seen.__cause__
    return None


def mariadb_error_code(error: BaseException) -> int | None:
    """The MariaDB error number behind a SQLAlchemy error, None when there is none."""
    args = getattr(getattr(error, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_lock_conflict(error: BaseException) -> bool:
    """True when the database gave up the transaction because another one held its rows
    (a MariaDB deadlock or lock wait timeout, a locked SQLite file): it may pass if rerun."""
    if not isinstance(error, DBAPIError):
        return False
    if mariadb_error_code(error) in LOCK_CONFLICT_ERRORS:
        return True
    return SQLITE_LOCK_CONFLICT_MESSAGE in str(error.orig)


def run_transaction(
    engine: Engine,
    work: Callable[[Connection], Result],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
    log: logging.Logger = logger,
) -> Result:
    """`work(connection)` in one transaction, run again from the start (after a growing,
    jittered pause) when it loses a lock conflict to a concurrent writer, e.g. two days of
    a backfill replacing their partitions of one table at once. Everything else, and the
    last conflict, is raised; a rolled-back attempt leaves nothing behind. Each rerun is
    logged as a warning on `log` (a Dagster run's `context.log` shows it in the run)."""
    pause = TRANSACTION_FIRST_BACKOFF_SECONDS
    for attempt in range(1, attempts):
        try:
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as error:
            if not is_lock_conflict(error):
                raise
            log.warning(
                "transaction attempt %s of %s lost a lock conflict to a concurrent writer "
                "and was rolled back; running it again: %s",
                attempt,
                attempts,
                getattr(error, "orig", error),
            )
            time.sleep(pause * random.uniform(1.0, 1.5))
            pause *= 2
    with engine.begin() as connection:
        return work(connection)


def is_mariadb(dialect_name: str) -> bool:
    """Whether a dialect (or URL backend) name is MariaDB's (SQLAlchemy calls it mysql)."""
    return dialect_name in ("mysql", "mariadb")


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


@contextlib.contextmanager
def schema_lock(
    engine: Engine,
    *,
    timeout: float | None = None,
    report_seconds: float = SCHEMA_LOCK_REPORT_SECONDS,
) -> Iterator[None]:
    """Held while the schema is created or migrated, so processes starting together on one
    database migrate it once: a named lock on MariaDB, a file lock beside SQLite's file. A
    waiter logs every `report_seconds` and fails after `timeout` (CREDIT_SCHEMA_LOCK_TIMEOUT,
    15 min: a migration rebuilding a large table takes minutes)."""
    timeout = settings.schema_lock_timeout() if timeout is None else timeout
    where = redacted(engine.url.render_as_string(hide_password=False))
    waiting = _LockWait(where, timeout, report_seconds)
    if engine.url.get_backend_name() == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{Path(database).expanduser()}.schema-lock", "a") as lock_file:
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waiting.still_waiting()
                    time.sleep(min(0.1, waiting.remaining()))
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        name = f"credit_platform_schema:{engine.url.database}"[:64]
        while True:
            acquired = connection.execute(
                text("SELECT GET_LOCK(:name, :seconds)"),
                {"name": name, "seconds": min(report_seconds, waiting.remaining())},
            ).scalar()
            if acquired == 1:
                break
            waiting.still_waiting()
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})


class _LockWait:
    """How long a process has waited for the schema lock: logs while it waits, and raises
    FeatureStoreUnavailable once the timeout has passed."""

    def __init__(self, where: str, timeout: float, report_seconds: float) -> None:
        self.where = where
        self.timeout = timeout
        self.report_seconds = report_seconds
        self.started = time.monotonic()
        self.next_report = self.started + report_seconds

    def remaining(self) -> float:
        return max(0.0, self.started + self.timeout - time.monotonic())

    def still_waiting(self) -> None:
        now = time.monotonic()
        waited = now - self.started
        if waited >= self.timeout:
            raise FeatureStoreUnavailable(
                f"another process held the schema lock of {self.where} for over "
                f"{self.timeout:g} s (a migration still running? "
                f"{settings.SCHEMA_LOCK_TIMEOUT_ENV} sets how long to wait)"
            )
        if now >= self.next_report:
            self.next_report = now + self.report_seconds
            logger.warning(
                "waiting for another process's migration of %s: %.0f s so far, giving up "
                "after %g s",
                self.where,
                waited,
                self.timeout,
            )


def _foreign_charset_problems(connection: Connection) -> list[str]:
    """MariaDB: the platform tables holding text in another character set than utf8mb4,
    each with the statement that converts it (no migration converts text silently)."""
    if not is_mariadb(connection.dialect.name):
        return []
    names = [table.name for table in metadata.sorted_tables]
    found = connection.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND CHARACTER_SET_NAME IS NOT NULL AND CHARACTER_SET_NAME <> :charset "
            "AND TABLE_NAME IN :names ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ).bindparams(bindparam("names", expanding=True)),
        {"charset": MARIADB_CHARSET, "names": names},
    ).all()
    problems = []
    for table_name in sorted({row[0] for row in found}):
        columns = [f"{row[1]} ({row[2]})" for row in found if row[0] == table_name]
        problems.append(
            f"table {table_name} stores text as {', '.join(columns)}, which turns emoji "
            f"and CJK text into '?': ALTER TABLE `{table_name}` CONVERT TO CHARACTER SET "
            f"{MARIADB_CHARSET}"
        )
    return problems


def _check_tables(connection: Connection) -> None:
    """Raise SchemaMismatch when a table lacks a column of the schema (a layout no
    migration brought up to date) or (MariaDB) holds text in another character set than
    utf8mb4, naming the table and the fix."""
    inspector = inspect(connection)
    problems = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            problems.append(f"table {table.name} is missing")
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column.name for column in table.columns if column.name not in present]
        if missing:
            problems.append(
                f"table {table.name} lacks column(s) {', '.join(missing)} (a layout no "
                "migration knows: move its rows aside and drop it, and `credit-platform "
                "init` creates it anew)"
            )
    problems.extend(_foreign_charset_problems(connection))
    if problems:
        raise SchemaMismatch("; ".join(problems))


def create_tables(engine: Engine) -> None:
    """Bring the database to the migrations' head (creating every table of an empty one,
    upgrading one an earlier release made) under the schema lock, then check the tables.
    A database at the head already is only checked. Raises SchemaMismatch before
    migrating tables whose text is not utf8mb4 (converting them is the operator's call)."""
    from credit_platform.core import migrations  # Alembic, imported where it is used

    with engine.connect() as connection:
        at_head = migrations.is_current(connection)
    if not at_head:
        with schema_lock(engine), engine.connect() as connection:
            problems = _foreign_charset_problems(connection)
            if problems:
                raise SchemaMismatch("; ".join(problems))
            before = migrations.upgrade(connection)
            after = migrations.current_revision(connection)
            if before != after:
                logger.info(
                    "feature store %s migrated from %s to %s",
                    redacted(engine.url.render_as_string(hide_password=False)),
                    before or "an unversioned schema",
                    after,
                )
    with engine.connect() as connection:
        _check_tables(connection)


def init_schema(url: str, *, create_database: bool = True) -> Engine:
    """Create the database (MariaDB, unless `create_database` is false) and every table that
    is missing; safe to repeat and to run concurrently. Raises SchemaMismatch for tables
    that cannot hold the schema's data."""
    if create_database:
        create_database_if_missing(url)
    engine = make_engine(url)
    try:
        check_reachable(engine)
        create_tables(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def render_ddl(dialect_name: str) -> str:
    """The DDL of an empty database at the migrations' head for "mariadb" or "sqlite" (for
    `sql/`): CREATE TABLE/INDEX statements of the schema, then Alembic's version table
    holding the head revision, so `credit-platform init` knows it needs no migration. Plain
    CREATE TABLE, not IF NOT EXISTS: run against a database holding tables already, it
    fails instead of stamping tables of another layout as current."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, insert
    from sqlalchemy.dialects import mysql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from credit_platform.core import migrations

    dialects = {"mariadb": mysql.dialect(is_mariadb=True), "sqlite": sqlite.dialect()}
    if dialect_name not in dialects:
        raise ValueError(f"unknown dialect {dialect_name!r}; choose one of {sorted(dialects)}")
    dialect = dialects[dialect_name]
    head = migrations.head_revision()
    statements = [
        f"-- Generated from credit_platform/core/schema.py by `credit-platform sql --write`, "
        f"do not edit by hand.\n-- An empty database at migration {head} ("
        "`credit-platform init` upgrades an existing one)."
    ]
    for table in metadata.sorted_tables:
        create = str(CreateTable(table).compile(dialect=dialect)).strip()
        statements.append("\n".join(line.rstrip() for line in create.splitlines()) + ";")
        for index in sorted(table.indexes, key=lambda item: item.name or ""):
            statements.append(f"{str(CreateIndex(index).compile(dialect=dialect)).strip()};")
    # The table Alembic itself creates (alembic.ddl.impl: version_table_impl).
    version = Table(
        migrations.VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{migrations.VERSION_TABLE}_pkc"),
    )
    create = str(CreateTable(version).compile(dialect=dialect)).strip()
    statements.append("\n".join(line.rstrip() for line in create.splitlines()) + ";")
    stamp = insert(version).values(version_num=head)
    statements.append(f"{stamp.compile(dialect=dialect, compile_kwargs={'literal_binds': True})};")
    return "\n\n".join(statements) + "\n"
