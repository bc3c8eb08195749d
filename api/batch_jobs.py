"""Asynchronous batch jobs: large scoring requests submitted, polled and fetched later.

The routes keep the shape of BentoML's `@bentoml.task` (`/predict_batch_job/submit` → task
id → `/status` → `/get`), but the jobs live in the platform's own store (`api.job_store`),
not in BentoML's task database, which held every body and answer in memory and in one
SQLite blob, was deleted at each server start, and came with an unauthenticated `/retry`.

A submitted body is streamed to disk, read back a chunk of rows at a time and checked (a
bad row is a 400 naming it, before anything is scored or logged), then the job runs in the
worker that accepted it: a chunk of rows at a time, each chunk scored and logged (committed
or spooled) as /predict_batch does, its answers appended to the result file. So a worker's
memory grows by about one chunk whatever the job's size. A job is `completed` only once
every row is logged and its answers are on disk; its rows are logged as
"job/<task id>#<position>". `X-Request-ID` on submit is an idempotency key: the same key
and body answer the first job's id (nothing is scored twice), another body a 409.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.job_store import (
    COMPLETED,
    FAILED,
    BadJobBody,
    Job,
    JobRefused,
    JobStore,
    NotJson,
    RequestKeyConflict,
    process_owner,
)
from api.schemas import PredictionFeatures
from credit_platform.core import settings
from credit_platform.core.routes import JOB_GET, JOB_STATUS, JOB_SUBMIT, REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

# A job's rows are logged as "job/<task id>#<position>": "/" is outside the client key
# alphabet, so no client request id can take one.
JOB_ROW_PREFIX = "job/"
WRITE_BYTES = 1 << 20  # a submitted body goes to disk in pieces of this size
READ_BYTES = 1 << 16  # a result is sent in pieces of this size
SWEEP_SECONDS = 60.0  # expired jobs are removed at most this often by status and get

_ROWS: TypeAdapter[list[PredictionFeatures]] = TypeAdapter(list[PredictionFeatures])

# (request id, rows, position of the first row) -> the rows' answers as a JSON array.
AnswerChunk = Callable[[str, list[Any], int], Awaitable[bytes]]


def job_request_id(task_id: str) -> str:
    return f"{JOB_ROW_PREFIX}{task_id}"


def job_store_from_settings() -> JobStore:
    return JobStore(
        settings.api_job_dir(),
        quota_bytes=settings.api_job_store_bytes(),
        in_flight=settings.api_jobs_in_flight(),
        retention_seconds=settings.api_job_retention_seconds(),
    )


def check_rows(chunk: str, first: int) -> list[PredictionFeatures]:
    """A chunk of rows (a JSON array) as /predict_batch validates them; BadJobBody naming
    each bad row by its position in the job, NotJson when the text is not JSON."""
    try:
        return _ROWS.validate_json(chunk)
    except ValidationError as error:
        invalid = [item for item in error.errors() if item["type"] == "json_invalid"]
        if invalid:
            raise NotJson(invalid[0]["msg"]) from error
        problems = []
        for item in error.errors(include_url=False, include_context=False):
            location = list(item["loc"])
            if location and isinstance(location[0], int):
                location[0] = f"data[{first + location[0]}]"
            problems.append({**item, "loc": location})
        shown = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in problems[:5]
        )
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        detail = [{"loc": p["loc"], "msg": p["msg"], "type": p["type"]} for p in problems[:50]]
        raise BadJobBody(f"invalid rows: {shown}{more}", detail=detail) from error


class StoredRow:
    """A job's row as checked at submit and stored (`stored_rows`): what the scorer and the
    log read of a PredictionFeatures (the customer id and `features()`), without validating
    the row a second time."""

    __slots__ = ("customer_id", "_features")

    def __init__(self, values: dict[str, Any]) -> None:
        self.customer_id: str = values.pop("customer_id")
        self._features = values

    def features(self) -> dict[str, Any]:
        return self._features.copy()


def store_rows(rows: list[PredictionFeatures]) -> bytes:
    """Validated rows as one line of JSON: each row's fields, in the model's order."""
    return orjson.dumps([row.__dict__ for row in rows])


def stored_rows(line: bytes) -> list[StoredRow]:
    return [StoredRow(values) for values in orjson.loads(line)]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _shown(task_id: str) -> str:
    return task_id if len(task_id) <= 64 else task_id[:64] + "…"


class JobService:
    """The job routes of one worker, and the jobs it runs."""

    def __init__(
        self,
        store: JobStore,
        answer_chunk: AnswerChunk,
        *,
        request_key: re.Pattern[str],
        max_rows: int,
        max_body_bytes: int,
    ) -> None:
        self.store = store
        self.answer_chunk = answer_chunk
        self.request_key = request_key
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes
        self._running: dict[str, Any] = {}  # task id -> its asyncio task
        self._swept = 0.0

    def start(self) -> None:
        """At worker start: jobs cut short by a stop or a crash are failed with the reason,
        expired ones removed, and BentoML's task store left by an older release (every job's
        rows and answers, readable by anyone) deleted."""
        remove_bentoml_task_store()
        for task_id in self.store.settle_orphans():
            logger.error("job %s was in flight when its worker stopped: marked failed", task_id)
        self.store.remove_expired()
        self._swept = time.monotonic()

    def stop(self) -> None:
        """At worker shutdown: the jobs it runs are failed, saying why, and cancelled."""
        for task_id in self.store.abandon_own("the service shut down while it ran"):
            logger.error("job %s cut short by the shutdown: marked failed", task_id)
        for task in list(self._running.values()):
            task.get_loop().call_soon_threadsafe(task.cancel)

    # --- routes ---------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        key = request.headers.get(REQUEST_ID_HEADER)
        if key is not None and not self.request_key.match(key):
            return _error(
                400, f"{REQUEST_ID_HEADER} must be 1-48 characters of letters, digits and ._:-"
            )
        try:
            declared = int(request.headers.get("content-length", ""))
        except ValueError:
            declared = self.max_body_bytes  # a streamed body: room for the largest
        try:
            task_id = await anyio.to_thread.run_sync(self.store.reserve, declared)
        except JobRefused as refused:
            response = _error(refused.status, str(refused))
            if refused.retry_after is not None:
                response.headers["Retry-After"] = str(refused.retry_after)
            return response
        try:
            digest, size = await self._receive(request, task_id)
            rows = await anyio.to_thread.run_sync(
                self.store.split_body, task_id, check_rows, store_rows, self.max_rows
            )
            earlier = await anyio.to_thread.run_sync(
                self.store.accept, task_id, rows, digest, key, size
            )
        except BadJobBody as bad:
            await anyio.to_thread.run_sync(self.store.drop, task_id)
            extra = {"detail": bad.detail} if bad.detail is not None else {}
            return _error(bad.status, str(bad), **extra)
        except RequestKeyConflict as conflict:
            await anyio.to_thread.run_sync(self.store.drop, task_id)
            return _error(409, str(conflict))
        except BaseException:  # the client went away, or the worker stops
            await anyio.to_thread.run_sync(self.store.drop, task_id)
            raise
        headers = {REQUEST_ID_HEADER: key} if key else {}
        if earlier is not None:  # the same key and body: the first job
            job = await anyio.to_thread.run_sync(self._lookup, earlier)
            status = job.status_json()["status"] if job else FAILED
            return JSONResponse({"task_id": earlier, "status": status}, headers=headers)
        import asyncio

        task = asyncio.get_running_loop().create_task(self._run(task_id))
        self._running[task_id] = task
        task.add_done_callback(lambda _: self._running.pop(task_id, None))
        logger.info("job %s submitted: %d rows", task_id, rows)
        return JSONResponse({"task_id": task_id, "status": "in_progress"}, headers=headers)

    async def status(self, request: Request) -> Response:
        task_id = request.query_params.get("task_id")
        if task_id is None:
            return _error(400, "task_id is required")
        job = await anyio.to_thread.run_sync(self._lookup, task_id)
        if job is None:
            return self._unknown(task_id)
        return JSONResponse(job.status_json())

    async def get(self, request: Request) -> Response:
        task_id = request.query_params.get("task_id")
        if task_id is None:
            return _error(400, "task_id is required")
        job = await anyio.to_thread.run_sync(self._lookup, task_id)
        if job is None:
            return self._unknown(task_id)
        if job.status == FAILED:
            return _error(job.error_status or 500, job.error or f"job {task_id} failed")
        if job.status != COMPLETED:
            return _error(400, f"task {task_id} is not completed yet")
        result = await anyio.to_thread.run_sync(self.store.open_result, task_id)
        if result is None:  # expired between the two reads
            return self._unknown(task_id)
        return StreamingResponse(_pieces(result), media_type="application/json")

    def _unknown(self, task_id: str) -> JSONResponse:
        return _error(
            404,
            f"no job {_shown(task_id)!r}: unknown, or ended more than "
            f"{self.store.retention_seconds:g} s ago (CREDIT_API_JOB_RETENTION_SECONDS)",
        )

    def _lookup(self, task_id: str) -> Job | None:
        """The job (settled when its owner is gone), None when unknown or expired."""
        if time.monotonic() - self._swept > SWEEP_SECONDS:
            self._swept = time.monotonic()
            self.store.remove_expired()
        job = self.store.get(task_id)
        if job is None:
            return None
        if job.completed_at is not None and (
            job.completed_at + self.store.retention_seconds < time.time()
        ):
            return None
        return self.store.settle(job)

    async def _receive(self, request: Request, task_id: str) -> tuple[str, int]:
        """Writes the body to the job's directory as it arrives; its SHA-256 and size."""
        digest = hashlib.sha256()
        size = 0
        pending = bytearray()
        with self.store.body_file(task_id) as sink:
            async for piece in request.stream():
                size += len(piece)
                if size > self.max_body_bytes:
                    raise BadJobBody(
                        f"the request body is over the limit of {self.max_body_bytes} bytes "
                        f"for a job of at most {self.max_rows} rows",
                        status=413,
                    )
                digest.update(piece)
                pending += piece
                if len(pending) >= WRITE_BYTES:
                    await anyio.to_thread.run_sync(sink.write, bytes(pending))
                    pending.clear()
            await anyio.to_thread.run_sync(sink.write, bytes(pending))
        if size == 0:
            raise BadJobBody('the body is empty: it must be {"data": [rows]}')
        return digest.hexdigest(), size

    # --- running a job ------------------------------------------------------------------

    async def _run(self, task_id: str) -> None:
        owner = process_owner()
        try:
            await self._score_chunks(task_id)
        except Exception as error:
            status = getattr(error, "error_code", 500)
            message = f"job {task_id} failed: {error}"
            logger.exception("job %s failed", task_id)
            await anyio.to_thread.run_sync(
                lambda: self.store.fail(task_id, message, int(status), owner=owner)
            )
            return
        if await anyio.to_thread.run_sync(self.store.complete, task_id):
            logger.info("job %s completed", task_id)

    async def _score_chunks(self, task_id: str) -> None:
        request_id = job_request_id(task_id)
        chunks = self.store.chunks(task_id)
        done = 0
        with self.store.result_file(task_id) as sink:
            sink.write(b"[")
            while True:
                chunk = await anyio.to_thread.run_sync(_next_rows, chunks)
                if chunk is None:
                    break
                answers = await self.answer_chunk(request_id, chunk, done)
                if done:
                    sink.write(b",")
                sink.write(answers[1:-1])  # the array's items
                done += len(chunk)
                await anyio.to_thread.run_sync(self.store.progress, task_id, done)
            sink.write(b"]")
            sink.flush()
            await anyio.to_thread.run_sync(_sync, sink)


def remove_bentoml_task_store() -> list[Path]:
    """BentoML's task database and its journal files, when an older release left them
    (left alone on a BentoML version the lookup was not tested with: api/library_patches.py)."""
    from api.library_patches import BATCH_JOB_STORE, version_problem

    problem = version_problem(BATCH_JOB_STORE)
    if problem is not None:
        logger.warning("BentoML's old task store is not looked for: %s", problem)
        return []
    from bentoml._internal.configuration.containers import BentoMLContainer

    database = Path(BentoMLContainer.result_store_file.get())
    removed = []
    for path in database.parent.glob(database.name + "*"):
        if path.name in (
            database.name,
            f"{database.name}-wal",
            f"{database.name}-shm",
            f"{database.name}-journal",
        ):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.warning("removed BentoML's task store of an older release: %s", database)
    return removed


def _next_rows(chunks: Iterator[bytes]) -> list[StoredRow] | None:
    line = next(chunks, None)
    return None if line is None else stored_rows(line)


def _sync(sink: Any) -> None:
    import os

    os.fsync(sink.fileno())


def _pieces(source: Any) -> Iterator[bytes]:
    with source:
        while piece := source.read(READ_BYTES):
            yield piece


def job_routes(jobs: Callable[[], JobService]) -> list[Route]:
    """The job routes, each handled by the worker's JobService (`jobs()`)."""

    async def submit(request: Request) -> Response:
        try:
            return await jobs().submit(request)
        except ClientDisconnect:
            return Response(status_code=499)

    async def status(request: Request) -> Response:
        return await jobs().status(request)

    async def get(request: Request) -> Response:
        return await jobs().get(request)

    return [
        Route(JOB_SUBMIT, submit, methods=["POST"]),
        Route(JOB_STATUS, status, methods=["GET"]),
        Route(JOB_GET, get, methods=["GET"]),
    ]
