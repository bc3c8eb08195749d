"""The prediction log, written by group commit with a local spool for database outages.

A request enqueues its log rows and waits on a future. One writer thread takes whatever
is queued (up to `max_batch_rows` rows; while rows keep arriving it waits for more, at most
`max_wait_seconds`),
inserts it in ONE transaction, and only then resolves the futures: the caller answers
after its row is durable, yet a commit is shared by every request of that moment.

If the database fails, the batch is appended to a JSON-lines spool file and fsync'd
before the futures resolve, and later batches go straight to the spool until a probe
finds the database back; the writer then replays the spool (its own file and those left
by processes that died) and removes it. Inserts ignore a request_id already present, so a
replay that repeats rows never duplicates one. On MariaDB a batch is sent as multi-row
`INSERT IGNORE` statements rendered here (values escaped as the server's sql_mode needs),
since PyMySQL's per-value escaping cost more CPU than everything else a batch row needs.
A row the database is up but refuses (a
constraint, a value it cannot take) fails its own request only; met during a replay, when
it was answered already, it goes to a "rejected" file beside the spool rather than block
the log. `close()` drains the queue.

Plain class, no BentoML: the service owns one, tests drive it directly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from credit_platform.core.db import make_engine, redacted
from credit_platform.core.schema import credit_predictions_api_log

logger = logging.getLogger(__name__)

SPOOL_PREFIX = "prediction_log-"
REJECTED_PREFIX = "prediction_log_rejected-"
_SPOOL_NAME = re.compile(rf"^{re.escape(SPOOL_PREFIX)}(\d+)\.jsonl$")


class PredictionLogClosed(RuntimeError):
    """The logger no longer accepts rows (the service is shutting down)."""


class PredictionLogUnavailable(RuntimeError):
    """A row could be written neither to the database nor to the spool."""


class RowNotEncodable(ValueError):
    """A row holds a value the log cannot store (wrong type, NaN, unserializable features)."""


@dataclass(slots=True)
class PredictionLogRow:
    """One answered prediction; created_at is naive UTC, set when the request was served.
    Not frozen: a frozen dataclass's __init__ costs a microsecond a row on big batches."""

    request_id: str
    customer_id: str
    features: dict[str, Any]
    prediction: str
    confidence: float
    elapsed_ms: float
    model_version: str
    created_at: datetime

    def record(self) -> dict[str, Any]:
        """The row as the table's columns. A shallow copy: `dataclasses.asdict` deep-copies
        the features and cost more than the insert itself on 1,000-row batches."""
        return {name: getattr(self, name) for name in _ROW_FIELDS}

    def to_json(self) -> str:
        record = self.record()
        record["created_at"] = self.created_at.isoformat()
        return json.dumps(record, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> PredictionLogRow:
        record = json.loads(line)
        record["created_at"] = datetime.fromisoformat(record["created_at"])
        return cls(**record)


_ROW_FIELDS = tuple(field.name for field in fields(PredictionLogRow))
assert set(_ROW_FIELDS) <= set(credit_predictions_api_log.columns.keys())

# One multi-row statement stays far below MariaDB's max_allowed_packet (16 MiB by default).
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
# Set in the server's status flags when sql_mode has NO_BACKSLASH_ESCAPES (MySQL protocol).
_NO_BACKSLASH_ESCAPES = 0x0200


def _backslash_literal(value: Any) -> str:
    """A MariaDB string literal under the default sql_mode, or NULL."""
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise RowNotEncodable(f"expected text, got {type(value).__name__}: {value!r:.80}")
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "'" in value:
        value = value.replace("'", "\\'")
    if "\0" in value:
        value = value.replace("\0", "\\0")
    return f"'{value}'"


def _doubled_quote_literal(value: Any) -> str:
    """A MariaDB string literal under sql_mode NO_BACKSLASH_ESCAPES, or NULL."""
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise RowNotEncodable(f"expected text, got {type(value).__name__}: {value!r:.80}")
    return "'" + value.replace("'", "''") + "'"


def _number_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if type(value) is bool or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowNotEncodable(f"expected a finite number, got {value!r:.80}")
    return repr(float(value))


def features_json(features: dict[str, Any]) -> str:
    """The features column's text: compact JSON; NaN, infinities and unserializable values
    are refused rather than silently turned into null."""
    for value in features.values():
        if type(value) is float and not math.isfinite(value):
            raise RowNotEncodable(f"features hold a non-finite number: {value!r}")
    try:
        return orjson.dumps(features).decode()
    except TypeError as error:  # orjson.JSONEncodeError
        raise RowNotEncodable(f"features are not JSON-serializable: {error}") from error


def mariadb_insert_statements(
    rows: Sequence[PredictionLogRow], *, backslash_escapes: bool = True
) -> list[str]:
    """`INSERT IGNORE` statements holding every row as literal values, each at most
    MAX_STATEMENT_BYTES characters (or one row, if a row is longer). Raises RowNotEncodable
    for a row that cannot be stored."""
    literal = _backslash_literal if backslash_escapes else _doubled_quote_literal
    head = (
        f"INSERT IGNORE INTO `{credit_predictions_api_log.name}` "
        f"({', '.join(f'`{name}`' for name in _ROW_FIELDS)}) VALUES "
    )
    timestamps: dict[datetime, str] = {}
    statements: list[str] = []
    values: list[str] = []
    size = len(head)
    for row in rows:
        created_at = row.created_at
        stamp = timestamps.get(created_at)
        if stamp is None:
            if not isinstance(created_at, datetime):
                raise RowNotEncodable(f"created_at is not a datetime: {created_at!r:.80}")
            stamp = timestamps[created_at] = f"'{created_at:%Y-%m-%d %H:%M:%S.%f}'"
        if not isinstance(row.features, dict):
            raise RowNotEncodable(f"features must be a mapping, not {type(row.features).__name__}")
        value = (
            f"({literal(row.request_id)},{literal(row.customer_id)},"
            f"{literal(features_json(row.features))},{literal(row.prediction)},"
            f"{_number_literal(row.confidence)},{_number_literal(row.elapsed_ms)},"
            f"{literal(row.model_version)},{stamp})"
        )
        if values and size + len(value) > MAX_STATEMENT_BYTES:
            statements.append(head + ",".join(values))
            values, size = [], len(head)
        values.append(value)
        size += len(value) + 1
    if values:
        statements.append(head + ",".join(values))
    return statements


def execute_literal_inserts(connection: Connection, rows: Sequence[PredictionLogRow]) -> None:
    """Run `mariadb_insert_statements` on the connection's DBAPI cursor, inside its
    transaction. Not through `exec_driver_sql`: that always %-formats the statement, and
    values may hold "%". Driver errors are raised as SQLAlchemy's, as `execute` would."""
    dbapi_connection = connection.connection.dbapi_connection
    status = getattr(dbapi_connection, "server_status", 0) or 0
    statements = mariadb_insert_statements(
        rows, backslash_escapes=not status & _NO_BACKSLASH_ESCAPES
    )
    dialect = connection.dialect
    dbapi = dialect.loaded_dbapi
    with dbapi_connection.cursor() as cursor:
        for statement in statements:
            try:
                cursor.execute(statement)
            except UnicodeError as error:  # a lone surrogate cannot be sent as UTF-8
                raise RowNotEncodable(f"a value cannot be sent to the database: {error}") from error
            except dbapi.Error as error:
                lost = dialect.is_disconnect(error, dbapi_connection, cursor)
                if lost:  # as SQLAlchemy would: the pool must not hand this connection out
                    connection.invalidate(error)
                raise DBAPIError.instance(
                    f"{statement[:300]} ...",
                    None,
                    error,
                    dbapi.Error,
                    connection_invalidated=lost,
                    dialect=dialect,
                ) from error


def utc_now() -> datetime:
    """The log's clock: naive UTC (the column has no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class _Pending:
    rows: Sequence[PredictionLogRow]
    future: Future[None]


@dataclass
class LogStats:
    """Counters for tests and the service's health: what went where."""

    commits: int = 0
    committed_rows: int = 0
    spooled_rows: int = 0
    replayed_rows: int = 0
    rejected_rows: int = 0
    database_failures: int = 0


def _log_engine(url: str) -> Engine:
    """SQLite through the shared factory; on MariaDB also bound reads and writes, so a hung
    server turns into a spooled batch instead of requests waiting forever."""
    if make_url(url).get_backend_name() == "sqlite":
        return make_engine(url)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={"connect_timeout": 3, "read_timeout": 10, "write_timeout": 10},
    )


def _insert_ignoring_duplicates(engine: Engine):
    table = credit_predictions_api_log
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
    if backend in ("mysql", "mariadb"):
        return mysql.insert(table).prefix_with("IGNORE")
    raise ValueError(f"the prediction log supports SQLite and MariaDB, not {backend}")


def _rows_refused(error: BaseException) -> bool:
    """True when the database is up but will not take these rows (a constraint, bad data,
    a value that cannot be bound); anything else (connection lost, table missing, locked)
    is an outage, and the rows wait in the spool."""
    if isinstance(error, IntegrityError | DataError | RowNotEncodable):
        return True
    return isinstance(error, StatementError) and not isinstance(error, DBAPIError)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class PredictionLogger:
    """Group-commit writer of `credit_predictions_api_log` with spool and replay."""

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        max_batch_rows: int = 500,
        max_wait_seconds: float = 0.005,
        idle_gap_seconds: float = 0.0005,
        retry_interval_seconds: float = 2.0,
    ) -> None:
        self.url = url
        self.spool_dir = Path(spool_dir)
        self.spool_path = self.spool_dir / f"{SPOOL_PREFIX}{os.getpid()}.jsonl"
        self.rejected_path = self.spool_dir / f"{REJECTED_PREFIX}{os.getpid()}.jsonl"
        self.max_batch_rows = max_batch_rows
        self.max_wait_seconds = max_wait_seconds
        self.idle_gap_seconds = idle_gap_seconds
        self.retry_interval_seconds = retry_interval_seconds
        self.stats = LogStats()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._accepting = True
        self._submit_lock = threading.Lock()
        self._engine: Engine | None = None
        self._insert = None
        self._literal_statements = False
        self._database_down = False
        self._next_probe = 0.0
        self._spool_pending = True  # at start: look for spools left by dead processes
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    # --- the request side -------------------------------------------------------------

    def submit(self, rows: Sequence[PredictionLogRow]) -> Future[None]:
        """Queue rows; the future resolves once they are committed or spooled (fsync'd)."""
        future: Future[None] = Future()
        with self._submit_lock:
            if not self._accepting:
                raise PredictionLogClosed("the prediction log is closed (shutting down)")
            self._queue.put(_Pending(list(rows), future))
        return future

    def write(self, rows: Sequence[PredictionLogRow], timeout: float | None = 30.0) -> None:
        """Blocking form of `submit`."""
        self.submit(rows).result(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def database_down(self) -> bool:
        return self._database_down

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting rows, write every queued row, stop the writer. Idempotent."""
        with self._submit_lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("prediction log writer did not finish within %s s", timeout)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self._maybe_replay()
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._write_batch(batch)
            self._maybe_replay()
        if self._engine is not None:
            self._engine.dispose()

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Up to max_batch_rows rows: waits for the first, then keeps taking rows while they
        keep coming (gaps under idle_gap_seconds), for at most max_wait_seconds. When every
        caller is already queued the batch closes at once instead of lingering."""
        wait = self.retry_interval_seconds if (self._database_down or self._spool_pending) else 1.0
        try:
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        rows = len(first.rows)
        deadline = time.monotonic() + self.max_wait_seconds
        while rows < self.max_batch_rows:
            remaining = min(deadline - time.monotonic(), self.idle_gap_seconds)
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item.rows)
        return batch, False

    def _write_batch(self, batch: list[_Pending]) -> None:
        for pending in batch:
            pending.future.set_running_or_notify_cancel()
        if not self._database_down:
            try:
                self._commit([row for pending in batch for row in pending.rows])
            except Exception as error:
                if _rows_refused(error):
                    self._write_each_request(batch)
                    return
                self._mark_database_down(error)
            else:
                self._resolve(batch, None)
                return
        self._spool_batch(batch)

    def _write_each_request(self, batch: list[_Pending]) -> None:
        """The database is up but refused the batch: one transaction per request, so only
        the request whose rows it refuses fails (it gets no answer), not its neighbours."""
        for position, pending in enumerate(batch):
            try:
                self._commit(pending.rows)
            except Exception as error:
                if not _rows_refused(error):
                    self._mark_database_down(error)
                    self._spool_batch(batch[position:])
                    return
                logger.error("the database refused a prediction log row: %s", error)
                self._resolve(
                    [pending], PredictionLogUnavailable(f"the database refused the row: {error}")
                )
            else:
                self._resolve([pending], None)

    def _spool_batch(self, batch: list[_Pending]) -> None:
        """Append the batch to the spool with one fsync; a request whose rows cannot be
        serialized fails alone, the others resolve once the spool is on disk."""
        lines: list[str] = []
        spooled: list[_Pending] = []
        for pending in batch:
            try:
                encoded = [row.to_json() + "\n" for row in pending.rows]
            except (TypeError, ValueError) as error:
                self._resolve([pending], PredictionLogUnavailable(f"unserializable row: {error}"))
            else:
                lines.extend(encoded)
                spooled.append(pending)
        try:
            self._append(self.spool_path, lines)
        except OSError as error:
            logger.exception("cannot spool %d prediction log rows", len(lines))
            self._resolve(
                spooled,
                PredictionLogUnavailable(
                    f"the prediction log database is down and the spool {self.spool_path} "
                    f"cannot be written: {error}"
                ),
            )
            return
        self._spool_pending = self._spool_pending or bool(lines)
        self.stats.spooled_rows += len(lines)
        self._resolve(spooled, None)

    def _set_aside(self, rows: Sequence[PredictionLogRow], error: BaseException) -> None:
        """Keep spooled rows the database refuses (already answered, so they cannot fail) in
        the rejected file, fsync'd and never replayed. Raises when even that fails, so the
        spool is kept."""
        logger.error("the database refused %d prediction log rows: %s", len(rows), error)
        lines = [
            json.dumps({"error": str(error)[:1000], "row": json.loads(row.to_json())}) + "\n"
            for row in rows
        ]
        self._append(self.rejected_path, lines)
        self.stats.rejected_rows += len(rows)

    @staticmethod
    def _resolve(batch: Iterable[_Pending], error: BaseException | None) -> None:
        for pending in batch:
            if pending.future.cancelled():  # its caller went away; the row is kept anyway
                continue
            if error is None:
                pending.future.set_result(None)
            else:
                pending.future.set_exception(error)

    def _connect(self) -> Engine:
        if self._engine is None:
            self._engine = _log_engine(self.url)
            self._insert = _insert_ignoring_duplicates(self._engine)
            self._literal_statements = self._engine.url.get_backend_name() in ("mysql", "mariadb")
        return self._engine

    def _commit(self, rows: Sequence[PredictionLogRow]) -> None:
        """All rows in one transaction; rows whose request_id is logged already are skipped."""
        if not rows:
            return
        engine = self._connect()
        with engine.begin() as connection:
            if self._literal_statements:
                execute_literal_inserts(connection, rows)
            else:
                connection.execute(self._insert, [row.record() for row in rows])
        self.stats.commits += 1
        self.stats.committed_rows += len(rows)

    def _mark_database_down(self, error: BaseException) -> None:
        self.stats.database_failures += 1
        if not self._database_down:
            logger.warning(
                "prediction log database %s failed (%s); spooling to %s until it is back",
                redacted(self.url),
                error,
                self.spool_path,
            )
        self._database_down = True
        self._next_probe = time.monotonic() + self.retry_interval_seconds

    # --- spool and replay -------------------------------------------------------------

    def _append(self, path: Path, lines: Sequence[str]) -> None:
        """Append lines and fsync before returning: after this they survive a crash."""
        if not lines:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        payload = "".join(lines).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _spool_files(self) -> list[Path]:
        """Our own spool and those of processes that are gone (never a live one's)."""
        if not self.spool_dir.is_dir():
            return []
        found = []
        for path in sorted(self.spool_dir.iterdir()):
            match = _SPOOL_NAME.match(path.name)
            if not match:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or not _pid_alive(pid):
                found.append(path)
        return found

    def _maybe_replay(self) -> None:
        if not self._spool_pending:
            return
        if self._database_down and time.monotonic() < self._next_probe:
            return
        try:
            self._replay_spool()
        except Exception as error:
            self._mark_database_down(error)
            return
        if self._database_down:
            logger.warning("prediction log database %s is back", redacted(self.url))
        self._database_down = False

    def _replay_spool(self) -> int:
        """Insert every spooled row (in transactions of max_batch_rows) and remove the spool
        files; returns the rows replayed. Runs on the writer thread only. Raises, keeping
        the files, when the database is still down."""
        replayed = 0
        for path in self._spool_files():
            rows = self._read_spool(path)
            for start in range(0, len(rows), self.max_batch_rows):
                chunk = rows[start : start + self.max_batch_rows]
                try:
                    self._commit(chunk)
                except Exception as error:
                    if not _rows_refused(error):
                        raise
                    for row in chunk:  # find the rows the database refuses
                        try:
                            self._commit([row])
                        except Exception as row_error:
                            if not _rows_refused(row_error):
                                raise
                            self._set_aside([row], row_error)
            path.unlink(missing_ok=True)
            replayed += len(rows)
            if rows:
                logger.info("replayed %d prediction log rows from %s", len(rows), path)
        self.stats.replayed_rows += replayed
        self._spool_pending = False
        return replayed

    @staticmethod
    def _read_spool(path: Path) -> list[PredictionLogRow]:
        rows = []
        with path.open(encoding="utf-8") as spool:
            for number, line in enumerate(spool, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(PredictionLogRow.from_json(line))
                except (ValueError, TypeError, KeyError) as error:
                    # Only a write cut short by a kill can leave this; its request got no answer.
                    logger.warning("skipping unreadable line %d of %s: %s", number, path, error)
        return rows
