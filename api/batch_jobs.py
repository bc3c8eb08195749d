"""Asynchronous batch jobs: large scoring requests submitted, polled and fetched later.

BentoML's `@bentoml.task` gives the idiom (`/predict_batch_job/submit` → task id →
`/status` → `/get`). Its result store is a SQLite file shared by the workers, but a job runs
as a coroutine in the memory of the worker that accepted it: a worker that dies mid-job
leaves the job "in_progress" for ever. So each accepted job is claimed, in a small file
naming the worker process, as its submit answer leaves; a status or result request for an
in-progress job whose worker is gone marks it failed, with a message saying so, before
BentoML answers. The job's rows are logged (committed or spooled) before the job function
returns, so a completed job is always fully logged, and a failed one may be resubmitted:
its rows are logged under ids derived from the task id, so they never collide.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credit_platform.core import settings

logger = logging.getLogger(__name__)

JOB_ROUTE = "/predict_batch_job"
# A job's rows are logged as "job/<task id>#<position>": "/" is outside the client key
# alphabet, so no client request id can take one.
JOB_ROW_PREFIX = "job/"
IN_PROGRESS = "in_progress"
# Claims of jobs that ended are removed when they are asked about; any left older than this
# (never asked about again) are removed when a worker starts.
CLAIM_RETENTION_SECONDS = 7 * 24 * 3600


def job_request_id(task_id: str) -> str:
    return f"{JOB_ROW_PREFIX}{task_id}"


def _identity(pid: int) -> str:
    from api.model_sync import process_identity

    return process_identity(pid)


class JobClaims:
    """Which worker process runs each job: `<jobs dir>/<task id>.json`."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = Path(jobs_dir)

    def claim(self, task_id: str) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        path = self.jobs_dir / f"{task_id}.json"
        temporary = path.with_name(f".{path.name}.tmp")
        pid = os.getpid()
        temporary.write_text(json.dumps({"pid": pid, "identity": _identity(pid)}))
        os.replace(temporary, path)

    def owner_gone(self, task_id: str) -> int | None:
        """The pid of the worker that ran `task_id` when that worker no longer runs; None
        while it runs, or when the job was never claimed here."""
        try:
            owner = json.loads((self.jobs_dir / f"{task_id}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        pid = int(owner["pid"])
        return None if _identity(pid) == owner["identity"] else pid

    def forget(self, task_id: str) -> None:
        (self.jobs_dir / f"{task_id}.json").unlink(missing_ok=True)

    def prune(self, older_than: float = CLAIM_RETENTION_SECONDS) -> None:
        if not self.jobs_dir.is_dir():
            return
        cutoff = time.time() - older_than
        for path in self.jobs_dir.glob("*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


def _task_id(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("task_id")
    return values[0] if values else None


async def mark_failed(task_id: str, message: str) -> bool:
    """Record a failed result for an in-progress job in BentoML's result store (the store's
    own class, so /status and /get read it as any other result). False if it was not in
    progress (it ended meanwhile)."""
    from _bentoml_impl.tasks import ResultStatus, Sqlite3Store
    from bentoml._internal.configuration.containers import BentoMLContainer

    async with Sqlite3Store(BentoMLContainer.result_store_file.get()) as store:
        try:
            status = await store.get_status(task_id)
        except KeyError:
            return False
        if status.status != ResultStatus.IN_PROGRESS:
            return False
        await store.set_result(
            task_id, JSONResponse({"error": message}, status_code=500), ResultStatus.FAILED
        )
        return True


async def job_status(task_id: str) -> str | None:
    from _bentoml_impl.tasks import Sqlite3Store
    from bentoml._internal.configuration.containers import BentoMLContainer

    async with Sqlite3Store(BentoMLContainer.result_store_file.get()) as store:
        try:
            return (await store.get_status(task_id)).status.value
        except KeyError:
            return None


class JobClaimMiddleware:
    """Claims each job its worker accepts, and fails a job whose worker is gone when a
    client asks about it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.claims = JobClaims(settings.api_jobs_dir())
        self.claims.prune()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(JOB_ROUTE + "/"):
            await self.app(scope, receive, send)
            return
        action = path[len(JOB_ROUTE) + 1 :]
        if action == "submit":
            await self.app(scope, receive, self._claiming(send))
            return
        task_id = _task_id(scope)
        if task_id and action in ("status", "get"):
            await self._settle_orphan(task_id)
        await self.app(scope, receive, send)

    def _claiming(self, send: Send) -> Send:
        """Wraps `send` to claim the job named in a successful submit answer."""
        state: dict[str, Any] = {"status": 0, "body": b""}

        async def claiming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and state["status"] == 200:
                state["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    try:
                        task_id = json.loads(state["body"])["task_id"]
                    except (ValueError, KeyError, TypeError):
                        task_id = None
                    if task_id:
                        self.claims.claim(task_id)
            await send(message)

        return claiming_send

    async def _settle_orphan(self, task_id: str) -> None:
        gone = self.claims.owner_gone(task_id)
        status = await job_status(task_id)
        if status is not None and status != IN_PROGRESS:
            self.claims.forget(task_id)
            return
        if gone is None or status is None:
            return
        message = (
            f"job {task_id} was cut short: the worker running it (pid {gone}) exited before "
            "it completed; rows it logged keep their ids, submit the rows again for answers"
        )
        if await mark_failed(task_id, message):
            logger.error(message)
            self.claims.forget(task_id)
