"""The prediction log, written by group commit with a local spool for database outages.

A request enqueues its log rows and waits on a future. One writer thread takes whatever
is queued (up to `max_batch_rows` rows; while rows keep arriving it waits for more, at most
`max_wait_seconds`), inserts it in ONE transaction, and only then resolves the futures: the
caller answers after its row is durable, yet a commit is shared by every request of that
moment. The writer creates the table itself (retrying while the database is unreachable).

If the database fails, or does not answer within `timeout_seconds` (a watchdog thread then
takes over from the stuck writer), the rows are appended to a JSON-lines spool file and
fsync'd before the futures resolve; later batches go straight to the spool until a probe
finds the database back, and the writer then replays the spool (its own file and those left
by processes that died) and removes it. An error no retry can fix (bad password, missing
database or privilege, a table of another layout) is kept in `problem` for the service's
readiness, and logged.

Inserts are plain INSERTs: nothing the database reports is downgraded to a warning. A
request id already logged is the one error handled: the same rows again (a retry, a replay)
resolve to the logged answers; other rows under that id raise `RequestConflict`. On MariaDB
a batch is sent as multi-row INSERT statements rendered here (values escaped as the server's
sql_mode needs; strict mode is forced per session), since PyMySQL's per-value escaping cost
more CPU than everything else a batch row needs. A row the database refuses (a constraint,
a value it cannot take) fails its own request only; met during a replay, when it was
answered already, it goes to a "rejected" file beside the spool rather than block the log.
`close()` drains the queue.

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
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, delete, event, insert, literal, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from api.model_sync import read_json, write_json
from credit_platform.core.db import (
    LOCK_CONFLICT_ERRORS,
    create_tables,
    is_mariadb,
    make_engine,
    mariadb_error_code,
    permanent_problem,
    redacted,
)
from credit_platform.core.processes import pid_alive
from credit_platform.core.schema import MODEL_ROLES, credit_predictions_api_log

logger = logging.getLogger(__name__)

SPOOL_PREFIX = "prediction_log-"
# In the shared state directory of a server's workers: present while the id column is full.
IDS_FULL_FLAG = "prediction_log_ids_full"
REJECTED_PREFIX = "prediction_log_rejected-"
# The lane of bulk rows (a shadow's, a batch job's), written by a logger of its own so that
# a slow or refused bulk insert never holds the answers of single requests.
BULK_LANE = "bulk"
# A database call may take this long per row beyond `timeout_seconds` before the watchdog
# counts the database as hung (a 150,000-row job's insert takes seconds, legitimately).
MIN_INSERT_ROWS_PER_SECOND = 20_000
# A batch's rows are logged as "<id>#0" ... "<id>#<n-1>".
_BATCH_ROW_ID = re.compile(r"^(.*)#(\d+)$")


def spool_name_pattern(lane: str = "") -> re.Pattern[str]:
    """prediction_log-[<lane>-]<pid>.jsonl is appended to; ...-<pid>.<n>.jsonl is sealed for
    replay. A lane's logger replays its own lane's files only."""
    part = f"{lane}-" if lane else ""
    return re.compile(rf"^{re.escape(SPOOL_PREFIX + part)}(\d+)(?:\.\d+)?\.jsonl$")


class PredictionLogClosed(RuntimeError):
    """The logger no longer accepts rows (the service is shutting down)."""


class PredictionLogUnavailable(RuntimeError):
    """A row could be written neither to the database nor to the spool."""


class RowNotEncodable(ValueError):
    """A row holds a value the log cannot store (wrong type, NaN, unserializable features)."""


class RequestConflict(ValueError):
    """The request id is logged already, for other rows (another body)."""


@dataclass(frozen=True, slots=True)
class LoggedAnswer:
    """What the log holds for one row of a request answered before."""

    prediction: str
    confidence: float
    model_version: str
    reasons: dict[str, Any] | None = None


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
    role: str = MODEL_ROLES[0]
    reasons: dict[str, Any] | None = None  # the explanation answered, if one was asked for

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

    def same_request(self, other: PredictionLogRow | _StoredRow) -> bool:
        """Whether `other`, logged under this row's request id, was scored from the same
        input (customer and features) and asked for the same explanation (none, or as
        many reasons); the answer and the model may differ."""
        return (
            self.customer_id == other.customer_id
            and self.features == other.features
            and _reasons_asked(self.reasons) == _reasons_asked(other.reasons)
        )

    def answer(self) -> LoggedAnswer:
        return LoggedAnswer(self.prediction, self.confidence, self.model_version, self.reasons)


@dataclass(frozen=True, slots=True)
class _StoredRow:
    customer_id: str
    features: Any
    prediction: str
    confidence: float
    model_version: str
    reasons: Any = None
    created_at: datetime | None = None
    elapsed_ms: float = 0.0
    role: str = MODEL_ROLES[0]

    def answer(self) -> LoggedAnswer:
        return LoggedAnswer(self.prediction, self.confidence, self.model_version, self.reasons)


def _reasons_asked(reasons: Any) -> int | None:
    """How many reasons a logged explanation holds (None: no explanation)."""
    if not isinstance(reasons, dict):
        return None
    return len(reasons.get("reasons") or ())


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


def reasons_json(reasons: dict[str, Any] | None) -> str | None:
    """The reasons column's text (None stays NULL); non-finite numbers are refused."""
    if reasons is None:
        return None
    if not isinstance(reasons, dict):
        raise RowNotEncodable(f"reasons must be a mapping, not {type(reasons).__name__}")
    try:
        return json.dumps(reasons, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise RowNotEncodable(f"reasons cannot be stored as JSON: {error}") from error


def mariadb_insert_statements(
    rows: Sequence[PredictionLogRow], *, backslash_escapes: bool = True
) -> list[str]:
    """`INSERT` statements holding every row as literal values, each at most
    MAX_STATEMENT_BYTES characters (or one row, if a row is longer). Raises RowNotEncodable
    for a row that cannot be stored."""
    literal = _backslash_literal if backslash_escapes else _doubled_quote_literal
    head = (
        f"INSERT INTO `{credit_predictions_api_log.name}` "
        f"({', '.join(f'`{name}`' for name in _ROW_FIELDS)}) VALUES "
    )
    timestamps: dict[datetime, str] = {}
    roles: dict[str, str] = {}  # a handful of values: render each once
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
        try:
            role = roles[row.role]
        except (KeyError, TypeError):
            role = roles[row.role] = literal(row.role)
        if not isinstance(row.features, dict):
            raise RowNotEncodable(f"features must be a mapping, not {type(row.features).__name__}")
        value = (
            f"({literal(row.request_id)},{literal(row.customer_id)},"
            f"{literal(features_json(row.features))},{literal(row.prediction)},"
            f"{_number_literal(row.confidence)},{_number_literal(row.elapsed_ms)},"
            f"{literal(row.model_version)},{stamp},{role},"
            f"{'NULL' if row.reasons is None else literal(reasons_json(row.reasons))})"
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


# What a request's future resolves to: None when its rows were logged (or spooled) as given,
# the logged answers when the same rows were logged before under its request id.
LogOutcome = list[LoggedAnswer] | None


@dataclass
class _Pending:
    rows: Sequence[PredictionLogRow]
    future: Future[LogOutcome]


@dataclass
class LogStats:
    """Counters for tests and the service's health: what went where."""

    commits: int = 0
    committed_rows: int = 0
    spooled_rows: int = 0
    replayed_rows: int = 0
    rejected_rows: int = 0
    database_failures: int = 0
    repeated_requests: int = 0
    stalls: int = 0


def _strict_session(dbapi_connection, _record) -> None:
    """Strict mode for every statement of the log's sessions, whatever the server's default:
    a value too long or out of range is an error, never stored truncated."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute(
            "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), "
            "'STRICT_ALL_TABLES')"
        )


def _log_engine(url: str) -> Engine:
    """SQLite through the shared factory; on MariaDB also bound reads and writes (a hung
    server eventually fails the stuck call) and force strict mode."""
    if make_url(url).get_backend_name() == "sqlite":
        return make_engine(url)
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={"connect_timeout": 3, "read_timeout": 10, "write_timeout": 10},
    )
    event.listen(engine, "connect", _strict_session)
    return engine


# MariaDB errors about the rows themselves, whatever class the driver gives them: a value out
# of range (an id column at the top of its type included) or too long, a wrong value, a
# NULL, a duplicate key, a failed CHECK constraint.
_ROW_ERRORS = frozenset({167, 1048, 1062, 1264, 1292, 1366, 1406, 3140, 4025})


# MariaDB errors of a server that answers but cannot take the statement right now (a lock
# wait, a deadlock, too many connections, a shutdown, a killed or broken connection): an
# outage, never a refusal of the rows.
_TRANSIENT_ERRORS = LOCK_CONFLICT_ERRORS | frozenset(
    {1040, 1053, 1152, 1153, 1158, 1159, 1160, 1161, 1184, 1927, 4031}
)
# A value out of range for the id column: every later row will be refused too.
_OUT_OF_RANGE = frozenset({167, 1264, 1467})


def ids_exhausted(error: BaseException) -> bool:
    """True when the database refused rows because the log's id column is at the top of
    its type (AUTO_INCREMENT can give no new id): no row can be logged until it is fixed."""
    if mariadb_error_code(error) not in _OUT_OF_RANGE:
        return False
    message = str(getattr(error, "orig", error))
    return "'id'" in message or "auto-increment" in message.lower()


def _server_refused(error: BaseException) -> bool:
    """True when the error is the server's answer to the statement itself (a trigger's
    SIGNAL, a constraint the driver does not classify): not a lost connection, not a
    transient lock, not a problem of the service's access."""
    code = mariadb_error_code(error)
    if code is None or code in _TRANSIENT_ERRORS or permanent_problem(error):
        return False
    return 1000 <= code < 2000 or code >= 3000


def _rows_refused(error: BaseException) -> bool:
    """True when the database is up but will not take these rows (a constraint, bad data,
    a value that cannot be bound); anything else (connection lost, table missing, locked)
    is an outage, and the rows wait in the spool."""
    if isinstance(error, IntegrityError | DataError | RowNotEncodable):
        return True
    if isinstance(error, DBAPIError):
        return mariadb_error_code(error) in _ROW_ERRORS
    return isinstance(error, StatementError)


def _batch_successor(rows: Sequence[PredictionLogRow]) -> str | None:
    """For a batch's rows ("<id>#0" ... "<id>#<n-1>"), the id a row after its last would
    have: logged, it means the id was used for a longer batch, so these rows are another
    request. None for rows of another form."""
    if not rows:
        return None
    last = _BATCH_ROW_ID.match(rows[-1].request_id)
    if last is None or int(last.group(2)) != len(rows) - 1:
        return None
    if rows[0].request_id != f"{last.group(1)}#0":
        return None
    return f"{last.group(1)}#{len(rows)}"


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
        timeout_seconds: float = 1.0,
        lane: str = "",
        ids_full_flag: Path | None = None,
    ) -> None:
        self.url = url
        self.lane = lane
        # Shared by the loggers of every worker of one server: present while any of them
        # found the id column full, so each worker's readiness says so, not only the one
        # whose rows were refused (a balancer would otherwise see /readyz flap).
        self.ids_full_flag = ids_full_flag
        self.spool_dir = Path(spool_dir)
        part = f"{lane}-" if lane else ""
        self.spool_path = self.spool_dir / f"{SPOOL_PREFIX}{part}{os.getpid()}.jsonl"
        self.rejected_path = self.spool_dir / f"{REJECTED_PREFIX}{part}{os.getpid()}.jsonl"
        self._spool_name = spool_name_pattern(lane)
        self.max_batch_rows = max_batch_rows
        self.max_wait_seconds = max_wait_seconds
        self.idle_gap_seconds = idle_gap_seconds
        self.retry_interval_seconds = retry_interval_seconds
        self.timeout_seconds = timeout_seconds
        self.stats = LogStats()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._accepting = True
        self._submit_lock = threading.Lock()
        self._engine: Engine | None = None
        self._literal_statements = False
        self._database_down = False
        self._schema_ready = False
        self._problem: str | None = None
        self._ids_problem: str | None = None  # the id column is full: every row is refused
        self._next_ids_probe = 0.0
        self._next_probe = 0.0
        self._spool_pending = True  # at start: look for spools left by dead processes
        self._sealed = 0
        # The spool is appended to by the writer and, while the writer is stuck in a
        # database call, by the watchdog; this lock also guards the fields below.
        self._spool_lock = threading.Lock()
        self._busy_since: float | None = None
        self._busy_budget = timeout_seconds
        self._in_flight: list[_Pending] = []
        self._taken_over = False
        self._stopped = threading.Event()
        self._first_attempt = threading.Event()  # the table was created, or could not be yet
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch, name="prediction-log-watchdog", daemon=True
        )
        self._thread.start()
        self._watchdog.start()

    # --- the request side -------------------------------------------------------------

    def submit(self, rows: Sequence[PredictionLogRow]) -> Future[LogOutcome]:
        """Queue rows; the future resolves once they are committed or spooled (fsync'd): to
        None, or to the logged answers when these rows were logged before under their
        request ids. It raises RequestConflict when other rows hold those ids."""
        future: Future[LogOutcome] = Future()
        with self._submit_lock:
            if not self._accepting:
                raise PredictionLogClosed("the prediction log is closed (shutting down)")
            self._queue.put(_Pending(list(rows), future))
        return future

    def write(self, rows: Sequence[PredictionLogRow], timeout: float | None = 30.0) -> LogOutcome:
        """Blocking form of `submit`."""
        return self.submit(rows).result(timeout=timeout)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the writer's first attempt at its table is over (created, or found
        unreachable); True when it is."""
        return self._first_attempt.wait(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """The writer runs, its first attempt at the table is over (created, or spooling
        while the database is unreachable), and no permanent `problem` stands."""
        return (
            self.alive
            and self._first_attempt.is_set()
            and self._problem is None
            and self._ids_problem is None
            and not self._ids_full_elsewhere()
        )

    def _ids_full_elsewhere(self) -> str | None:
        """What another worker wrote when it found the id column full, while it stands."""
        if self.ids_full_flag is None:
            return None
        flag = read_json(self.ids_full_flag)
        return None if flag is None else str(flag.get("problem"))

    @property
    def problem(self) -> str | None:
        """Why the log cannot reach its table in a way no retry fixes (bad password, missing
        database or privilege, a table of another layout; the log keeps spooling and
        retrying meanwhile), or why it refuses every row (the id column is full: requests
        fail until it is fixed); None otherwise."""
        return self._problem or self._ids_problem or self._ids_full_elsewhere()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting rows, write every queued row, stop the writer. Idempotent."""
        with self._submit_lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("prediction log writer did not finish within %s s", timeout)
        self._stopped.set()
        self._watchdog.join(5)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self._maybe_recover()
        self._first_attempt.set()
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._write_batch(batch)
            self._maybe_recover()
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
                with self._database_call(batch):
                    outcomes = self._commit_requests([pending.rows for pending in batch])
            except Exception as error:
                if self._refused(error, batch):
                    self._write_each_request(batch)
                    return
                self._mark_database_down(error)
            else:
                self._ids_problem = None
                for pending, outcome in zip(batch, outcomes, strict=True):
                    self._resolve([pending], outcome)
                return
        self._spool_batch(batch)

    def _write_each_request(self, batch: list[_Pending]) -> None:
        """The database is up but refused the batch: one transaction per request, so only
        the request whose rows it refuses fails (it gets no answer), not its neighbours."""
        for position, pending in enumerate(batch):
            try:
                with self._database_call([pending]):
                    (outcome,) = self._commit_requests([pending.rows])
            except Exception as error:
                if not self._refused(error, [pending]):
                    self._mark_database_down(error)
                    self._spool_batch(batch[position:])
                    return
                self._note_ids_exhausted(error)
                logger.error("the database refused a prediction log row: %s", error)
                self._resolve(
                    [pending], PredictionLogUnavailable(f"the database refused the row: {error}")
                )
            else:
                self._ids_problem = None
                self._resolve([pending], outcome)

    def _refused(self, error: BaseException, batch: list[_Pending]) -> bool:
        """Whether the database is up and refused these rows (they fail; the log goes on),
        rather than being down (they are spooled). An error the driver does not classify is
        a refusal only when it is the server's answer and the server still answers."""
        if _rows_refused(error):
            return True
        if not _server_refused(error):
            return False
        try:
            if self._busy_since is None:  # else already watched: a replay
                with self._database_call(batch):
                    self._select_one()
            else:
                self._select_one()
        except Exception:
            return False
        return True

    def _select_one(self) -> None:
        with self._connect().connect() as connection:
            connection.execute(select(literal(1))).scalar_one()

    def _note_ids_exhausted(self, error: BaseException) -> None:
        if ids_exhausted(error) and self._ids_problem is None:
            self._ids_problem = (
                "the prediction log's id column is full, every row is refused: "
                f"{getattr(error, 'orig', error)}; "
                "fix the table (e.g. archive its rows and reset AUTO_INCREMENT)"
            )
            self._next_ids_probe = time.monotonic() + self.retry_interval_seconds
            logger.error("%s", self._ids_problem)
            if self.ids_full_flag is not None:
                try:
                    self.ids_full_flag.parent.mkdir(parents=True, exist_ok=True)
                    write_json(self.ids_full_flag, {"problem": self._ids_problem})
                except OSError as flag_error:
                    logger.warning("cannot tell the other workers: %s", flag_error)

    def _spool_batch(self, batch: list[_Pending]) -> None:
        """Append the batch to the spool with one fsync; a request whose rows cannot be
        serialized fails alone, the others resolve once the spool is on disk. Requests
        already answered (by the watchdog) are skipped."""
        lines: list[str] = []
        spooled: list[_Pending] = []
        for pending in batch:
            if pending.future.done():
                continue
            try:
                encoded = [row.to_json() + "\n" for row in pending.rows]
            except (TypeError, ValueError) as error:
                self._resolve([pending], PredictionLogUnavailable(f"unserializable row: {error}"))
            else:
                lines.extend(encoded)
                spooled.append(pending)
        with self._spool_lock:
            try:
                self._append(self.spool_path, lines)
            except OSError as error:
                logger.exception("cannot spool %d prediction log rows", len(lines))
                failure: PredictionLogUnavailable | None = PredictionLogUnavailable(
                    f"the prediction log database is unavailable and the spool "
                    f"{self.spool_path} cannot be written: {error}"
                )
            else:
                failure = None
                self._spool_pending = self._spool_pending or bool(lines)
                self.stats.spooled_rows += len(lines)
        self._resolve(spooled, failure)

    def _set_aside(self, rows: Sequence[PredictionLogRow], error: BaseException | str) -> None:
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
    def _resolve(batch: Iterable[_Pending], outcome: LogOutcome | BaseException) -> None:
        for pending in batch:
            future = pending.future
            try:
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            except InvalidStateError:  # cancelled by its caller, or answered by the watchdog
                pass

    # --- the database -----------------------------------------------------------------

    def _connect(self) -> Engine:
        if self._engine is None:
            self._engine = _log_engine(self.url)
            self._literal_statements = is_mariadb(self._engine.url.get_backend_name())
        return self._engine

    def _insert(self, rows: Sequence[PredictionLogRow]) -> None:
        """All rows in one transaction, or none (a duplicate request id fails the lot)."""
        if not rows:
            return
        engine = self._connect()
        with engine.begin() as connection:
            if self._literal_statements:
                execute_literal_inserts(connection, rows)
            else:
                connection.execute(
                    insert(credit_predictions_api_log), [row.record() for row in rows]
                )
        self.stats.commits += 1
        self.stats.committed_rows += len(rows)

    def _logged(self, request_ids: Sequence[str]) -> dict[str, _StoredRow]:
        table = credit_predictions_api_log
        columns = (
            table.c.request_id,
            table.c.customer_id,
            table.c.features,
            table.c.prediction,
            table.c.confidence,
            table.c.model_version,
            table.c.reasons,
            table.c.created_at,
            table.c.elapsed_ms,
            table.c.role,
        )
        found: dict[str, _StoredRow] = {}
        with self._connect().connect() as connection:
            for start in range(0, len(request_ids), 1000):
                chunk = request_ids[start : start + 1000]
                query = select(*columns).where(table.c.request_id.in_(chunk))
                for row in connection.execute(query):
                    found[row[0]] = _StoredRow(*row[1:])
        return found

    def _commit_requests(self, requests: Sequence[Sequence[PredictionLogRow]]) -> list[LogOutcome]:
        """Insert the requests' rows in one transaction; a request whose ids are logged
        already (or earlier in the same batch) resolves to those answers when its rows are
        the same, and to RequestConflict otherwise; the others are inserted. Raises what
        the database reports for anything else."""
        try:
            self._insert([row for rows in requests for row in rows])
            return [None] * len(requests)
        except IntegrityError as error:
            failure: IntegrityError = error
        outcomes: list[LogOutcome | RequestConflict] = [None] * len(requests)
        remaining = list(range(len(requests)))
        successors = [_batch_successor(rows) for rows in requests]
        for _attempt in range(3):  # another process may log the same id meanwhile
            stored = self._logged(
                [row.request_id for i in remaining for row in requests[i]]
                + [successors[i] for i in remaining if successors[i]]
            )
            earlier: dict[str, PredictionLogRow] = {}
            to_insert = []
            for i in remaining:
                rows = requests[i]
                known = [stored.get(row.request_id) or earlier.get(row.request_id) for row in rows]
                successor = successors[i]
                longer = successor is not None and (successor in stored or successor in earlier)
                if not any(known) and not longer:
                    to_insert.append(i)
                    earlier.update((row.request_id, row) for row in rows)
                elif not longer and all(
                    logged is not None and row.same_request(logged)
                    for row, logged in zip(rows, known, strict=True)
                ):
                    outcomes[i] = [logged.answer() for logged in known]  # type: ignore[union-attr]
                    self.stats.repeated_requests += 1
                else:
                    outcomes[i] = RequestConflict(
                        f"request id {rows[0].request_id.split('#')[0]!r} is logged already "
                        "for another request body"
                    )
            if len(to_insert) == len(remaining):
                raise failure  # no request id was logged before: the database refused a row
            try:
                self._insert([row for i in to_insert for row in requests[i]])
            except IntegrityError as error:
                failure, remaining = error, to_insert
                continue
            return outcomes  # type: ignore[return-value]
        raise failure

    def _ensure_schema(self) -> None:
        """Create the tables if missing (serialised between processes) and check them."""
        if not self._schema_ready:
            create_tables(self._connect())
            self._schema_ready = True

    def _mark_database_down(self, error: BaseException) -> None:
        self.stats.database_failures += 1
        self._schema_ready = False  # recreate on the next probe, should it be gone
        problem = permanent_problem(error)
        if problem and problem != self._problem:
            logger.error(
                "prediction log database %s refuses the service: %s; answers go on, their "
                "rows are spooled to %s until this is fixed",
                redacted(self.url),
                problem,
                self.spool_path,
            )
        elif not problem and not self._database_down:
            logger.warning(
                "prediction log database %s failed (%s); spooling to %s until it is back",
                redacted(self.url),
                error,
                self.spool_path,
            )
        self._problem = problem
        self._database_down = True
        self._next_probe = time.monotonic() + self.retry_interval_seconds

    # --- the watchdog -----------------------------------------------------------------

    @contextmanager
    def _database_call(self, batch: list[_Pending]) -> Iterator[None]:
        """Marks the writer busy in the database with `batch` waiting on it, so the
        watchdog can spool it (and whatever queues meanwhile) should the call hang."""
        rows = sum(len(pending.rows) for pending in batch)
        with self._spool_lock:
            self._busy_since = time.monotonic()
            self._busy_budget = self.timeout_seconds + rows / MIN_INSERT_ROWS_PER_SECOND
            self._in_flight = batch
        try:
            yield
        finally:
            with self._spool_lock:
                self._busy_since = None
                self._in_flight = []
                taken_over, self._taken_over = self._taken_over, False
            if taken_over:  # the rows are in the spool; replay them once the database answers
                self._database_down = True
                self._schema_ready = False
                self._next_probe = time.monotonic() + self.retry_interval_seconds

    def _watch(self) -> None:
        """While the writer has been stuck in one database call for over timeout_seconds,
        spool what waits on it and everything queued meanwhile, so answers leave."""
        poll = min(0.05, self.timeout_seconds / 5)
        while not self._stopped.wait(poll):
            with self._spool_lock:
                since = self._busy_since
                stuck = since is not None and time.monotonic() - since > self._busy_budget
                if stuck and not self._taken_over:
                    self._taken_over = True
                    self._first_attempt.set()
                    batch = list(self._in_flight)
                    self.stats.stalls += 1
                else:
                    continue
            logger.warning(
                "prediction log database %s has not answered for %.1f s; spooling to %s",
                redacted(self.url),
                self.timeout_seconds,
                self.spool_path,
            )
            self._spool_batch(batch)
            self._drain_while_stuck()

    def _drain_while_stuck(self) -> None:
        while True:
            with self._spool_lock:
                if self._busy_since is None:
                    return
            batch: list[_Pending] = []
            closing = False
            try:
                item = self._queue.get(timeout=0.02)
                while True:
                    if item is None:
                        closing = True
                        break
                    item.future.set_running_or_notify_cancel()
                    batch.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch:
                self._spool_batch(batch)
            if closing:  # leave the end-of-input mark to the writer
                self._queue.put(None)
                return

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
        """Our own sealed spools and those of processes that are gone (never a live one's)."""
        if not self.spool_dir.is_dir():
            return []
        found = []
        for path in sorted(self.spool_dir.iterdir()):
            match = self._spool_name.match(path.name)
            if not match or path == self.spool_path:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or not pid_alive(pid):
                found.append(path)
        return found

    def _seal_spool(self) -> None:
        """Move our spool aside for replay, so rows spooled meanwhile (by the watchdog) go to
        a new file the replay does not remove."""
        with self._spool_lock:
            self._spool_pending = False
            if not self.spool_path.exists():
                return
            while True:  # never over a sealed file a crashed process of this pid left
                self._sealed += 1
                sealed = self.spool_path.with_name(f"{self.spool_path.stem}.{self._sealed}.jsonl")
                if not sealed.exists():
                    break
            os.replace(self.spool_path, sealed)

    def _probe_ids(self) -> None:
        """While the id column is full: whether a row can be inserted again (inserted and
        rolled back), so readiness returns once the table is fixed. A worker that learnt it
        from another's flag probes too, so the flag goes whichever worker stops first. Called
        after every batch the writer commits: the flag is looked at once per retry interval,
        not per batch."""
        if time.monotonic() < self._next_ids_probe:
            return
        self._next_ids_probe = time.monotonic() + self.retry_interval_seconds
        if self._ids_problem is None and self._ids_full_elsewhere() is None:
            return
        probe = PredictionLogRow(
            f"ids-probe@{os.getpid()}", "ids-probe", {}, "Standard", 0.0, 0.0, "probe", utc_now()
        )
        try:
            with self._database_call([]), self._connect().connect() as connection:
                transaction = connection.begin()
                try:
                    if self._literal_statements:
                        execute_literal_inserts(connection, [probe])
                    else:
                        connection.execute(insert(credit_predictions_api_log), [probe.record()])
                finally:
                    transaction.rollback()
        except Exception as error:
            if not ids_exhausted(error):
                logger.debug("the id column probe failed: %s", error)
            return
        logger.warning("the prediction log's id column takes rows again")
        self._ids_problem = None
        if self.ids_full_flag is not None:
            self.ids_full_flag.unlink(missing_ok=True)

    def _maybe_recover(self) -> None:
        """Create the schema if needed and replay the spools, when due."""
        self._probe_ids()
        if not self._spool_pending and self._schema_ready:
            return
        if self._database_down and time.monotonic() < self._next_probe:
            return
        try:
            with self._database_call([]):
                self._ensure_schema()
                self._replay_spool()
        except Exception as error:
            with self._spool_lock:
                self._spool_pending = True
            self._mark_database_down(error)
            return
        if self._database_down or self._problem:
            logger.warning("prediction log database %s is back", redacted(self.url))
        self._database_down = False
        self._problem = None

    def _replay_spool(self) -> int:
        """Insert every spooled row (in transactions of max_batch_rows) and remove the spool
        files; returns the rows replayed. Runs on the writer thread only. Raises, keeping
        the files, when the database is still down."""
        self._seal_spool()
        replayed = 0
        for path in self._spool_files():
            rows = 0
            for chunk in self._spool_chunks(path, self.max_batch_rows):
                self._replay_chunk(chunk)
                rows += len(chunk)
            path.unlink(missing_ok=True)
            replayed += rows
            if rows:
                logger.info("replayed %d prediction log rows from %s", rows, path)
        self.stats.replayed_rows += replayed
        return replayed

    def _replay_chunk(self, rows: Sequence[PredictionLogRow]) -> None:
        """Rows already logged are skipped (a repeated replay, a commit that finished after
        the watchdog spooled it); rows the database refuses go to the rejected file. A row
        that conflicts with a logged row of another body: the earlier request of the two
        is kept in the table, the later one goes to the rejected file. While the id column
        is full nothing is set aside: the spool waits."""
        try:
            outcomes = self._commit_requests([[row] for row in rows])
        except Exception as error:
            if ids_exhausted(error) or not self._refused(error, []):
                raise
            for row in rows:  # find the rows the database refuses
                try:
                    (outcome,) = self._commit_requests([[row]])
                except Exception as row_error:
                    if ids_exhausted(row_error) or not self._refused(row_error, []):
                        raise
                    self._set_aside([row], row_error)
                else:
                    if isinstance(outcome, RequestConflict):
                        self._keep_first(row, outcome)
            return
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, RequestConflict):
                self._keep_first(row, outcome)

    def _keep_first(self, row: PredictionLogRow, conflict: RequestConflict) -> None:
        """A spooled row whose id the table holds for another body (both were answered while
        the database was out of reach, perhaps by different workers): the table keeps the
        one created first, and the other goes to the rejected file, so none is lost."""
        table = credit_predictions_api_log
        stored = self._logged([row.request_id]).get(row.request_id)
        if stored is None or row.same_request(stored):  # replaced meanwhile by this very row
            if stored is None:
                self._insert([row])
            return
        stored_at = stored.created_at
        if stored_at is None or stored_at <= row.created_at:
            self._set_aside([row], conflict)
            return
        later = PredictionLogRow(
            row.request_id,
            stored.customer_id,
            stored.features if isinstance(stored.features, dict) else json.loads(stored.features),
            stored.prediction,
            stored.confidence,
            stored.elapsed_ms,
            stored.model_version,
            stored_at,
            stored.role,
        )
        self._set_aside(
            [later],
            f"request id {row.request_id!r} was answered first for another body "
            f"(at {row.created_at.isoformat()}, replayed from the spool), which the log keeps",
        )
        engine = self._connect()
        with engine.begin() as connection:
            connection.execute(delete(table).where(table.c.request_id == row.request_id))
            if self._literal_statements:
                execute_literal_inserts(connection, [row])
            else:
                connection.execute(insert(table), [row.record()])

    @staticmethod
    def _spool_chunks(path: Path, size: int) -> Iterator[list[PredictionLogRow]]:
        """The file's rows, `size` at a time, so a spool grown through a long outage is
        replayed in the memory of one chunk; none when another process replayed and removed
        it meanwhile (a dead process's spool is found by every worker)."""
        try:
            spool = path.open(encoding="utf-8")
        except FileNotFoundError:
            return
        chunk: list[PredictionLogRow] = []
        with spool:
            for number, line in enumerate(spool, start=1):
                if not line.strip():
                    continue
                try:
                    chunk.append(PredictionLogRow.from_json(line))
                except (ValueError, TypeError, KeyError) as error:
                    # Only a write cut short by a kill can leave this; its request got no answer.
                    logger.warning("skipping unreadable line %d of %s: %s", number, path, error)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
