"""The platform's store of asynchronous batch jobs: a directory with an SQLite index.

`<store>/jobs.db` lists every job (status, owner, sizes, times, its X-Request-ID and the
digest of its body); `<store>/<task id>/` holds the job's files: `body.json` while the body
arrives, `rows.jsonl` (its rows, one chunk of rows a line) while it runs, `result.json` (the
answers, as /predict_batch gives them) once it ends. Every file is 0600, every directory
0700: they hold applicants' rows and answers.

Bounds, checked in one transaction as a job is reserved, for every worker and replica
sharing the store: jobs receiving or running at once (`TooManyJobs`, a 429), bytes held
(`StoreFull`, a 507; `JobTooLarge`, a 413, when the job could never fit). A running job
reserves twice its body (its rows and its answers, which are smaller than the rows); an
ended one holds its answers only. Ended jobs are deleted after the retention period.

A job belongs to the worker process that accepted it (its host, pid and the pid's start
time): a job whose owner is gone is marked failed, with the reason, whenever a worker looks
at it, so a job cut by a restart or a worker's death never stays in progress. Owners on
another host (replicas sharing the store through a volume) are judged by their heartbeat,
written after every chunk.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

RECEIVING = "receiving"  # the body is arriving or being checked: not yet a job
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
IN_FLIGHT = (RECEIVING, IN_PROGRESS)

# Task ids are uuid4 hex; anything else names no job and is answered 404 without a lookup.
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
# A job's rows are checked, stored, scored and logged this many characters at a time
# (about 1,500 real rows).
DEFAULT_CHUNK_CHARS = 1 << 20
# A single row may take this many characters (real rows take about 1,000).
MAX_ROW_CHARS = 1 << 20
READ_CHARS = 1 << 20
# An owner on another host whose heartbeat is older than this is taken for gone.
HEARTBEAT_STALE_SECONDS = 300.0
RETRY_AFTER_SECONDS = 30
FILE_MODE = 0o600
DIR_MODE = 0o700

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    task_id TEXT PRIMARY KEY,
    request_key TEXT UNIQUE,
    body_digest TEXT,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    reserved_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    rows INTEGER,
    rows_done INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    executed_at REAL,
    completed_at REAL,
    heartbeat_at REAL NOT NULL,
    error TEXT,
    error_status INTEGER
)
"""


class JobRefused(Exception):
    """A job the store cannot take now; `status` is the HTTP status to answer."""

    status = 503
    retry_after: int | None = None


class TooManyJobs(JobRefused):
    status = 429
    retry_after = RETRY_AFTER_SECONDS


class StoreFull(JobRefused):
    status = 507
    retry_after = RETRY_AFTER_SECONDS


class JobTooLarge(JobRefused):
    status = 413


class BadJobBody(ValueError):
    """The body is not `{"data": [rows]}`, or a row is malformed; the message says where."""

    def __init__(self, message: str, status: int = 400, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class RequestKeyConflict(Exception):
    """The X-Request-ID names a job submitted with another body."""


@dataclass(frozen=True)
class Job:
    task_id: str
    status: str
    owner: str
    rows: int | None
    rows_done: int
    created_at: float
    executed_at: float | None
    completed_at: float | None
    heartbeat_at: float
    error: str | None
    error_status: int | None

    def status_json(self) -> dict[str, Any]:
        """BentoML's task status shape (`task_id`, `status`, `created_at`, `executed_at`),
        with the rows, the rows answered so far, the end time and any failure."""
        answer: dict[str, Any] = {
            "task_id": self.task_id,
            "status": IN_PROGRESS if self.status == RECEIVING else self.status,
            "created_at": _iso(self.created_at),
            "executed_at": _iso(self.executed_at),
            "completed_at": _iso(self.completed_at),
            "rows": self.rows,
            "rows_done": self.rows_done,
        }
        if self.error:
            answer["error"] = self.error
        return answer


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).isoformat()


def process_owner(pid: int | None = None) -> str:
    """ "<host>:<pid>-<start time>": the worker process, unique even when a pid is reused."""
    from api.model_sync import process_identity

    return f"{socket.gethostname()}:{process_identity(pid or os.getpid())}"


def owner_gone(owner: str, heartbeat_at: float, now: float) -> str | None:
    """Why the owner is gone (None while it runs): a process on this host that no longer
    runs, or one on another host silent for longer than HEARTBEAT_STALE_SECONDS."""
    from api.model_sync import process_identity

    host, _, identity = owner.rpartition(":")
    pid = int(identity.split("-", 1)[0])
    if host == socket.gethostname():
        if process_identity(pid) == identity:
            return None
        return f"the worker running it (pid {pid}) exited before it completed"
    if now - heartbeat_at <= HEARTBEAT_STALE_SECONDS:
        return None
    return (
        f"the worker running it (pid {pid} on {host}) has not been heard from for "
        f"{now - heartbeat_at:.0f} s"
    )


def _create_private(path: Path) -> BinaryIO:
    """A new file only its owner may read (0600 whatever the umask)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return os.fdopen(descriptor, "wb")


class JobStore:
    def __init__(
        self,
        root: Path,
        *,
        quota_bytes: int,
        in_flight: int,
        retention_seconds: float,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
    ) -> None:
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self.in_flight = in_flight
        self.retention_seconds = retention_seconds
        self.chunk_chars = chunk_chars
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, DIR_MODE)
        self.index = self.root / "jobs.db"
        if not self.index.exists():
            _create_private(self.index).close()
        os.chmod(self.index, FILE_MODE)
        with self._connect() as connection:
            connection.execute(SCHEMA)

    # --- the index ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One connection per call: the store is shared by threads, workers and servers.
        A write transaction starts IMMEDIATE, so checks and updates in it are atomic."""
        connection = sqlite3.connect(self.index, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    def job_dir(self, task_id: str) -> Path:
        return self.root / task_id

    def get(self, task_id: str) -> Job | None:
        if not TASK_ID.match(task_id):
            return None
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM jobs WHERE task_id = ?", (task_id,)).fetchone()
        return _job(row) if row else None

    def reserve(self, body_bytes: int) -> str:
        """A new job's id and directory, once the store has room for a body of
        `body_bytes`; raises TooManyJobs, StoreFull or JobTooLarge."""
        needed = 2 * body_bytes
        if needed > self.quota_bytes:
            raise JobTooLarge(
                f"a job of {body_bytes} bytes needs {needed} bytes of the job store "
                f"(its rows and answers), more than its quota of {self.quota_bytes} bytes "
                "(CREDIT_API_JOB_STORE_BYTES): split the rows into smaller jobs"
            )
        self.settle_orphans()
        self.remove_expired()
        now = time.time()
        task_id = uuid.uuid4().hex
        with self._connect(write=True) as connection:
            running = connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", IN_FLIGHT
            ).fetchone()[0]
            if running >= self.in_flight:
                raise TooManyJobs(
                    f"{running} jobs are in flight, the most the service runs at once "
                    f"(CREDIT_API_JOBS_IN_FLIGHT={self.in_flight}): submit again later"
                )
            held = connection.execute(
                "SELECT COALESCE(SUM(reserved_bytes + stored_bytes), 0) FROM jobs"
            ).fetchone()[0]
            if held + needed > self.quota_bytes:
                raise StoreFull(
                    f"the job store holds {held} of its {self.quota_bytes} bytes "
                    f"(CREDIT_API_JOB_STORE_BYTES) and this job needs {needed}: submit again "
                    "once running jobs end or ended ones expire"
                )
            connection.execute(
                "INSERT INTO jobs (task_id, status, owner, reserved_bytes, created_at, "
                "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, RECEIVING, process_owner(), needed, now, now),
            )
        self.job_dir(task_id).mkdir(mode=DIR_MODE)
        return task_id

    def accept(
        self,
        task_id: str,
        rows: int,
        body_digest: str,
        request_key: str | None,
        body_bytes: int | None = None,
    ) -> str | None:
        """Turns a received, checked body into a running job (its reservation cut to twice
        `body_bytes`, when a streamed body reserved room for the largest). With a request
        key already used for the same body, the earlier job's id instead (this one is
        dropped); with another body, RequestKeyConflict."""
        with self._connect(write=True) as connection:
            if request_key is not None:
                earlier = connection.execute(
                    "SELECT task_id, body_digest FROM jobs WHERE request_key = ?", (request_key,)
                ).fetchone()
                if earlier is not None:
                    if earlier["body_digest"] != body_digest:
                        raise RequestKeyConflict(
                            f"X-Request-ID {request_key!r} was sent before with another body "
                            f"(job {earlier['task_id']}); send a new id for a new job"
                        )
                    connection.execute("DELETE FROM jobs WHERE task_id = ?", (task_id,))
                    shutil.rmtree(self.job_dir(task_id), ignore_errors=True)
                    return earlier["task_id"]
            connection.execute(
                "UPDATE jobs SET status = ?, rows = ?, body_digest = ?, request_key = ?, "
                "executed_at = ?, heartbeat_at = ?, "
                "reserved_bytes = MIN(reserved_bytes, COALESCE(?, reserved_bytes)) "
                "WHERE task_id = ?",
                (
                    IN_PROGRESS,
                    rows,
                    body_digest,
                    request_key,
                    time.time(),
                    time.time(),
                    None if body_bytes is None else 2 * body_bytes,
                    task_id,
                ),
            )
        return None

    def drop(self, task_id: str) -> None:
        """Forgets a body that never became a job (refused, or its client went away)."""
        with self._connect(write=True) as connection:
            connection.execute(
                "DELETE FROM jobs WHERE task_id = ? AND status = ?", (task_id, RECEIVING)
            )
        shutil.rmtree(self.job_dir(task_id), ignore_errors=True)

    def progress(self, task_id: str, rows_done: int) -> None:
        with self._connect(write=True) as connection:
            connection.execute(
                "UPDATE jobs SET rows_done = ?, heartbeat_at = ? WHERE task_id = ?",
                (rows_done, time.time(), task_id),
            )

    def complete(self, task_id: str) -> bool:
        """Marks a running job completed (its result file written and synced); False if it
        was no longer running (marked failed meanwhile)."""
        result = self.job_dir(task_id) / "result.json"
        size = result.stat().st_size
        with self._connect(write=True) as connection:
            done = connection.execute(
                "UPDATE jobs SET status = ?, completed_at = ?, reserved_bytes = 0, "
                "stored_bytes = ? WHERE task_id = ? AND status = ?",
                (COMPLETED, time.time(), size, task_id, IN_PROGRESS),
            ).rowcount
        (self.job_dir(task_id) / "rows.jsonl").unlink(missing_ok=True)
        return bool(done)

    def fail(
        self, task_id: str, message: str, status: int = 500, *, owner: str | None = None
    ) -> bool:
        """Marks an in-flight job failed with `message` (only while `owner` owns it, when
        given); False if it had ended. Its files are removed: a failed job keeps no rows."""
        query = (
            "UPDATE jobs SET status = ?, error = ?, error_status = ?, completed_at = ?, "
            "reserved_bytes = 0, stored_bytes = 0 WHERE task_id = ? AND status IN (?, ?)"
        )
        parameters: tuple[Any, ...] = (FAILED, message, status, time.time(), task_id, *IN_FLIGHT)
        if owner is not None:
            query += " AND owner = ?"
            parameters += (owner,)
        with self._connect(write=True) as connection:
            done = connection.execute(query, parameters).rowcount
        if done:
            shutil.rmtree(self.job_dir(task_id), ignore_errors=True)
        return bool(done)

    def settle(self, job: Job) -> Job:
        """The job, marked failed first when it is in flight and its owner is gone."""
        if job.status not in IN_FLIGHT:
            return job
        why = owner_gone(job.owner, job.heartbeat_at, time.time())
        if why is None:
            return job
        message = (
            f"job {job.task_id} was cut short: {why} (the service stopped, restarted or lost "
            "the worker); rows it logged keep their ids, submit the rows again for answers"
        )
        self.fail(job.task_id, message, owner=job.owner)
        return self.get(job.task_id) or job

    def settle_orphans(self) -> list[str]:
        """Marks failed every in-flight job whose owner is gone; their ids."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT * FROM jobs WHERE status IN (?, ?)", IN_FLIGHT
            ).fetchall()
        settled = []
        for row in rows:
            if self.settle(_job(row)).status == FAILED:
                settled.append(row["task_id"])
        return settled

    def abandon_own(self, reason: str) -> list[str]:
        """Marks failed the in-flight jobs of this process (it is shutting down)."""
        owner = process_owner()
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT task_id FROM jobs WHERE status IN (?, ?) AND owner = ?",
                (*IN_FLIGHT, owner),
            ).fetchall()
        abandoned = []
        for row in rows:
            message = (
                f"job {row['task_id']} was cut short: {reason}; rows it logged keep their "
                "ids, submit the rows again for answers"
            )
            if self.fail(row["task_id"], message, owner=owner):
                abandoned.append(row["task_id"])
        return abandoned

    def remove_expired(self, now: float | None = None) -> list[str]:
        """Deletes ended jobs older than the retention period (their files and index row),
        and directories the index no longer names (left by a crash between the two)."""
        cutoff = (now or time.time()) - self.retention_seconds
        with self._connect(write=True) as connection:
            expired = [
                row[0]
                for row in connection.execute(
                    "SELECT task_id FROM jobs WHERE status IN (?, ?) AND completed_at < ?",
                    (COMPLETED, FAILED, cutoff),
                )
            ]
            connection.executemany(
                "DELETE FROM jobs WHERE task_id = ?", [(task_id,) for task_id in expired]
            )
            known = {row[0] for row in connection.execute("SELECT task_id FROM jobs")}
        for task_id in expired:
            shutil.rmtree(self.job_dir(task_id), ignore_errors=True)
        for path in self.root.iterdir():
            if path.is_dir() and TASK_ID.match(path.name) and path.name not in known:
                shutil.rmtree(path, ignore_errors=True)
        return expired

    # --- a job's files ----------------------------------------------------------------------

    def body_file(self, task_id: str) -> BinaryIO:
        return _create_private(self.job_dir(task_id) / "body.json")

    def split_body(
        self,
        task_id: str,
        validate: Validate,
        encode: Callable[[list[Any]], bytes],
        max_rows: int,
    ) -> int:
        """Reads the received body a chunk at a time (`read_chunks`: `validate` raises
        BadJobBody naming a bad row), writes each chunk's validated rows as one line
        (`encode(rows)`, no newline in it) to `rows.jsonl` and removes the body; the number
        of rows."""
        directory = self.job_dir(task_id)
        body = directory / "body.json"
        count = 0
        with body.open("rb") as source, _create_private(directory / "rows.jsonl") as sink:
            for _, rows in read_chunks(source, self.chunk_chars, validate):
                count += len(rows)
                if count > max_rows:
                    raise BadJobBody(
                        f"a job takes at most {max_rows} rows (CREDIT_API_MAX_JOB_ROWS); "
                        "split the rows into smaller jobs",
                        status=413,
                    )
                sink.write(encode(rows))
                sink.write(b"\n")
            sink.flush()
            os.fsync(sink.fileno())
        body.unlink()
        return count

    def chunks(self, task_id: str) -> Iterator[bytes]:
        """The job's rows, a chunk at a time (each line `split_body` wrote)."""
        with (self.job_dir(task_id) / "rows.jsonl").open("rb") as source:
            yield from source

    def result_file(self, task_id: str) -> BinaryIO:
        return _create_private(self.job_dir(task_id) / "result.json")

    def open_result(self, task_id: str) -> BinaryIO | None:
        try:
            return (self.job_dir(task_id) / "result.json").open("rb")
        except FileNotFoundError:
            return None


def _job(row: sqlite3.Row) -> Job:
    return Job(
        task_id=row["task_id"],
        status=row["status"],
        owner=row["owner"],
        rows=row["rows"],
        rows_done=row["rows_done"],
        created_at=row["created_at"],
        executed_at=row["executed_at"],
        completed_at=row["completed_at"],
        heartbeat_at=row["heartbeat_at"],
        error=row["error"],
        error_status=row["error_status"],
    )


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Text:
    """A UTF-8 byte stream read as text a window at a time: `buffer[position:]` is what
    is left of the current window."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.position = 0
        self.consumed = 0  # characters dropped before the window
        self.ended = False

    def more(self) -> bool:
        """Appends what the stream holds next; False at its end."""
        if self.ended:
            return False
        data = self.source.read(READ_CHARS)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            raise BadJobBody(f"the body is not UTF-8 text: {error.reason}") from error
        self.consumed += self.position
        self.buffer = self.buffer[self.position :] + text
        self.position = 0
        if not data:
            self.ended = True
        return True

    def skip_whitespace(self) -> str | None:
        """The next character that is not whitespace (not consumed); None at the end."""
        while True:
            self.position = _WHITESPACE.match(self.buffer, self.position).end()
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.more():
                return None

    def expect(self, character: str, what: str) -> None:
        found = self.skip_whitespace()
        if found != character:
            at = self.consumed + self.position
            seen = "the end of the body" if found is None else repr(found)
            raise BadJobBody(
                f'the body must be {{"data": [rows]}}: {what} expected at '
                f"character {at}, found {seen}"
            )
        self.position += 1

    def value(self, what: str) -> tuple[Any, str]:
        """The JSON value starting here: parsed, and as its text."""
        self.skip_whitespace()
        while True:
            try:
                parsed, end = _DECODER.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                if len(self.buffer) - self.position > MAX_ROW_CHARS:
                    raise BadJobBody(
                        f"{what} is not valid JSON within {MAX_ROW_CHARS} characters ({error.msg})"
                    ) from error
                if self.more():
                    continue
                raise BadJobBody(f"{what} is not valid JSON: {error.msg}") from error
            if end == len(self.buffer) and not self.ended:
                # A number may go on in the next window ("12" of "123"): read on first.
                self.more()
                continue
            text = self.buffer[self.position : end]
            self.position = end
            return parsed, text


def _open_array(text: _Text) -> None:
    """Reads `{"data": [` and stops at the first row."""
    text.expect("{", "'{'")
    if text.skip_whitespace() != '"':
        text.expect('"', 'the key "data"')
    key, _ = text.value("the body's key")
    if key != "data":
        raise BadJobBody(f'the body must be {{"data": [rows]}}: unexpected key {key!r}')
    text.expect(":", "':'")
    text.expect("[", "'[' (data must be a list of rows)")
    if text.skip_whitespace() == "]":
        raise BadJobBody("data must hold at least one row")


def _exact_rows(text: _Text, position: int) -> Iterator[str]:
    """The texts of the rows from here (row `position`) to the end of the body, each parsed
    to find where it ends; then the body's end is checked."""
    while True:
        if text.skip_whitespace() != "{":
            at = text.consumed + text.position
            raise BadJobBody(f"data[{position}] must be an object (a row), at character {at}")
        _, raw = text.value(f"data[{position}]")
        yield raw
        position += 1
        following = text.skip_whitespace()
        if following == ",":
            text.position += 1
            continue
        text.expect("]", f"',' or ']' after data[{position - 1}]")
        break
    if text.skip_whitespace() == ",":
        raise BadJobBody('the body must be {"data": [rows]}: no key but "data" is allowed')
    text.expect("}", "'}'")
    if text.skip_whitespace() is not None:
        raise BadJobBody('the body must be {"data": [rows]}: something follows it')


class NotJson(ValueError):
    """A chunk's text is not JSON (a chunk boundary was guessed wrong, or the body is
    malformed)."""


# Between two rows: the end of one object, a comma, the start of the next.
_BOUNDARY = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*\{")
_SPACE = " \t\n\r"
Validate = Callable[[str, int], list[Any]]


def read_chunks(
    source: BinaryIO, chunk_chars: int, validate: Validate
) -> Iterator[tuple[int, list[Any]]]:
    """The rows of a `{"data": [rows]}` body, about `chunk_chars` characters of them at a
    time, each chunk checked by `validate(its rows as a JSON array, position of its first
    row)`: (position of the first row, the validated rows). The body is never held whole.

    A chunk ends at the first "}, {" after `chunk_chars` characters, a guess that needs no
    parsing in Python; a wrong guess (inside a string, or a nested object) leaves an
    unclosed string or object, which `validate` refuses as NotJson. From there on (and for
    a malformed body) rows are found by parsing each, which names what is wrong and where.
    """
    text = _Text(source)
    _open_array(text)
    first = 0
    while True:
        while not text.ended and len(text.buffer) - text.position < chunk_chars + MAX_ROW_CHARS:
            text.more()
        found = _BOUNDARY.search(text.buffer, text.position + chunk_chars)
        if found is not None:
            segment, resume = text.buffer[text.position : found.start() + 1], found.end() - 1
        elif text.ended:
            tail = text.buffer.rstrip(_SPACE)
            if not tail.endswith("}"):
                break
            tail = tail[:-1].rstrip(_SPACE)
            if not tail.endswith("]") or len(tail) - 1 <= text.position:
                break
            segment, resume = tail[text.position : -1], None
        else:
            break  # a row longer than MAX_ROW_CHARS, or no rows: parsed below, which says
        try:
            rows = validate("[" + segment + "]", first)
        except NotJson:
            break
        yield first, rows
        first += len(rows)
        if resume is None:
            return
        text.position = resume
    yield from _exact_chunks(text, first, chunk_chars, validate)


def _exact_chunks(
    text: _Text, first: int, chunk_chars: int, validate: Validate
) -> Iterator[tuple[int, list[Any]]]:
    chunk: list[str] = []
    size = 0
    for raw in _exact_rows(text, first):
        chunk.append(raw)
        size += len(raw)
        if size >= chunk_chars:
            yield first, _validate_exact(chunk, first, validate)
            first += len(chunk)
            chunk, size = [], 0
    if chunk:
        yield first, _validate_exact(chunk, first, validate)


def _validate_exact(chunk: list[str], first: int, validate: Validate) -> list[Any]:
    try:
        return validate("[" + ",".join(chunk) + "]", first)
    except NotJson as error:
        raise BadJobBody(f"data[{first}] to data[{first + len(chunk) - 1}]: {error}") from error
