"""Asynchronous batch jobs through a real server: submit → status → get, the same answers
and log rows as /predict_batch, every row logged before the job reports completed, a job cut
by a worker's death or a restart reported failed (never left in progress), results kept
across restarts and shared by servers on one store, limits answered 429/507/413, and
BentoML's own task routes (an unauthenticated retry among them) gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
import requests

from api.batch_jobs import JOB_ROW_PREFIX
from api.job_store import JobStore
from api.predictor import load_predictor
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess
from credit_platform.core.settings import api_job_dir, bentoml_home
from credit_platform_tests.api import test_api_service as served
from credit_platform_tests.api.test_api_service import BATCH_LIMIT, ModelTags, Server, features_of

pytestmark = pytest.mark.slow

sample = served.sample
payloads = served.payloads
tags = served.tags
server = served.server


def _rows(payloads: list[dict], count: int, prefix: str) -> list[dict]:
    return [
        {**payloads[number % len(payloads)], "customer_id": f"{prefix}{number:06d}"}
        for number in range(count)
    ]


def _submit(server: Server | ServiceProcess, rows: list[dict], **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url}{routes.JOB_SUBMIT}", json={"data": rows}, timeout=120, **kwargs
    )


def _status(server: Server | ServiceProcess, task_id: str) -> requests.Response:
    return requests.get(f"{server.url}{routes.JOB_STATUS}", params={"task_id": task_id}, timeout=30)


def _get(server: Server | ServiceProcess, task_id: str) -> requests.Response:
    return requests.get(f"{server.url}{routes.JOB_GET}", params={"task_id": task_id}, timeout=60)


def _store(directory: Path) -> JobStore:
    """The job store as the test's own process sees it (a process of another replica)."""
    return JobStore(directory, quota_bytes=1 << 40, in_flight=1000, retention_seconds=3600)


def _wait_until_ended(server: Server | ServiceProcess, task_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(server, task_id).json()["status"]
        if status != "in_progress":
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {task_id} still in progress after {timeout}s")


def test_a_job_above_the_batch_limit_completes_fully_logged(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    rows = _rows(payloads, 3000, "JOB")
    assert len(rows) > BATCH_LIMIT  # too large for /predict_batch on this server
    too_big = requests.post(f"{server.url}{routes.PREDICT_BATCH}", json={"data": rows}, timeout=60)
    assert too_big.status_code == 413 and "at most 50 rows" in too_big.text

    submitted = _submit(server, rows)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    assert _wait_until_ended(server, task_id) == "completed"
    # Completed means logged: every row is in the log at once, under the job's ids.
    logged = {
        row["request_id"]: row
        for row in server.log_rows()
        if row["request_id"].startswith(f"{JOB_ROW_PREFIX}{task_id}#")
    }
    assert len(logged) == 3000

    status = _status(server, task_id).json()
    assert status["rows"] == status["rows_done"] == 3000 and status["completed_at"]
    result = _get(server, task_id)
    assert result.status_code == 200
    answers = result.json()
    assert [answer["customer_id"] for answer in answers] == [row["customer_id"] for row in rows]
    predictor = load_predictor(tags.first)
    expected = predictor.predict([features_of(row) for row in rows])
    assert [answer["predict"] for answer in answers] == [p.label for p in expected]
    for position in (0, 1234, 2999):
        row = logged[f"{JOB_ROW_PREFIX}{task_id}#{position}"]
        assert row["prediction"] == answers[position]["predict"]
        assert row["customer_id"] == rows[position]["customer_id"]
    # The rows and answers of every job are readable by the service's user alone.
    for path in (api_job_dir() / "jobs.db", api_job_dir() / task_id / "result.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_bad_jobs_are_refused_naming_the_problem(server: Server, payloads: list[dict]) -> None:
    unknown = _status(server, "0" * 32)
    assert unknown.status_code == 404
    bad = _rows(payloads, 10, "BAD")
    bad[7] = {**bad[7], "num_of_loan": "many"}
    submitted = _submit(server, bad)
    assert submitted.status_code == 400  # checked before anything is scored or logged
    assert "data[7].num_of_loan" in submitted.json()["error"]
    assert not [r for r in server.log_rows() if r["customer_id"].startswith("BAD")]
    for body, named in (
        ({"data": []}, "at least one row"),
        ({"rows": bad}, "unexpected key 'rows'"),
        ({"data": [{**bad[0], "extra": 1}]}, "data[0].extra"),
    ):
        refused = requests.post(f"{server.url}{routes.JOB_SUBMIT}", json=body, timeout=30)
        assert refused.status_code == 400 and named in refused.text, refused.text


def test_odd_task_ids_are_unknown_at_once(server: Server, payloads: list[dict]) -> None:
    """Before, once a job had run, a status request for a 300-character id or for a path to
    the workers' `desired` file hung (60 s, then a 500): the id was read as a file name."""
    assert _submit(server, _rows(payloads, 5, "ODD")).status_code == 200  # a store with jobs
    workers = next((api_job_dir().parent / "run").glob("api-workers-*")).name
    for task_id in ("a" * 300, f"../{workers}/desired", "../" + "0" * 29, "%00", ""):
        for route in ("status", "get"):
            answer = requests.get(
                f"{server.url}/predict_batch_job/{route}", params={"task_id": task_id}, timeout=10
            )
            assert answer.status_code == 404, (route, task_id, answer.text)
            assert "no job" in answer.json()["error"]
    missing = requests.get(f"{server.url}{routes.JOB_STATUS}", timeout=10)
    assert missing.status_code == 400 and "task_id is required" in missing.text


def test_bentomls_task_routes_are_gone(server: Server, payloads: list[dict]) -> None:
    """`/retry` re-ran any stored job for anyone (no token); `/cancel` and the job route
    itself (a synchronous call with no row limit but the job's) went with it."""
    submitted = _submit(server, _rows(payloads, 60, "RTY"))
    task_id = submitted.json()["task_id"]
    assert _wait_until_ended(server, task_id) == "completed"
    retried = requests.post(
        f"{server.url}/predict_batch_job/retry", params={"task_id": task_id}, timeout=10
    )
    assert retried.status_code in (404, 405), retried.text
    cancelled = requests.put(
        f"{server.url}/predict_batch_job/cancel", params={"task_id": task_id}, timeout=10
    )
    assert cancelled.status_code in (404, 405)
    direct = requests.post(
        f"{server.url}/predict_batch_job", json={"data": payloads[:2]}, timeout=10
    )
    assert direct.status_code in (404, 405)
    logged = [r for r in server.log_rows() if r["customer_id"].startswith("RTY")]
    assert len(logged) == 60  # once


def test_a_request_id_names_one_job(server: Server, payloads: list[dict]) -> None:
    rows = _rows(payloads, 120, "KEY")
    first = _submit(server, rows, headers={"X-Request-ID": "job-key-1"})
    assert first.status_code == 200 and first.headers["X-Request-ID"] == "job-key-1"
    task_id = first.json()["task_id"]
    again = _submit(server, rows, headers={"X-Request-ID": "job-key-1"})
    assert again.status_code == 200 and again.json()["task_id"] == task_id
    assert _wait_until_ended(server, task_id) == "completed"
    other = _submit(server, rows[:-1], headers={"X-Request-ID": "job-key-1"})
    assert other.status_code == 409 and "job-key-1" in other.text
    bad_key = _submit(server, rows, headers={"X-Request-ID": "no spaces"})
    assert bad_key.status_code == 400 and "X-Request-ID" in bad_key.text
    logged = [r for r in server.log_rows() if r["customer_id"].startswith("KEY")]
    assert len(logged) == 120  # every row once, under the first job's ids
    assert {r["request_id"].split("#")[0] for r in logged} == {f"{JOB_ROW_PREFIX}{task_id}"}


def _owner_pid(directory: Path, task_id: str) -> int:
    job = _store(directory).get(task_id)
    assert job is not None
    return int(job.owner.rpartition(":")[2].split("-")[0])


def test_a_job_whose_worker_dies_reports_failed(server: Server, payloads: list[dict]) -> None:
    rows = _rows(payloads, 40_000, "CUT")
    submitted = _submit(server, rows)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    pid = _owner_pid(api_job_dir(), task_id)
    os.kill(pid, signal.SIGKILL)  # the worker running the job, mid-job
    assert _wait_until_ended(server, task_id, timeout=60) == "failed"
    answer = _get(server, task_id)
    assert f"pid {pid}" in answer.text and "exited before it completed" in answer.text
    # The server goes on: a new worker took the dead one's place.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server.post(routes.PREDICT, {"data": payloads[0]}).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError("the service did not recover from the worker's death")


def _service(tags: ModelTags, workdir: Path, name: str, **extra: str) -> ServiceProcess:
    """A server of its own, its log and job store under `workdir`, ready."""
    service = ServiceProcess(
        {
            "FEATURE_STORE_URL": f"sqlite:///{workdir / 'prediction_log.db'}",
            "CREDIT_PREDICTION_SPOOL_DIR": str(workdir / "spool"),
            "CREDIT_API_MODEL_TAG": tags.first,
            "CREDIT_API_ADMIN_TOKEN": served.TOKEN,
            "CREDIT_API_JOB_DIR": str(workdir / "jobs"),
            **extra,
        },
        workdir / f"{name}.log",
    )
    service.wait_ready(served.STARTUP_TIMEOUT)
    return service


def _padded_body(payloads: list[dict], size: int) -> bytes:
    """A job body of about `size` bytes: rows with whitespace between their fields (as a
    pretty-printing client sends them), at most 4 KiB a row."""
    rows = []
    total = 12
    number = 0
    while total < size:
        row = json.dumps({**payloads[number % len(payloads)], "customer_id": f"PAD{number:06d}"})
        row = row.replace(", ", ",  " + " " * 60)
        rows.append(row)
        total += len(row) + 1
        number += 1
    return ('{"data": [' + ",".join(rows) + "]}").encode()


def test_jobs_in_flight_and_the_store_are_bounded(
    tags: ModelTags, payloads: list[dict], tmp_path: Path
) -> None:
    service = _service(
        tags,
        tmp_path,
        "limits",
        CREDIT_API_JOBS_IN_FLIGHT="2",
        CREDIT_API_JOB_STORE_BYTES="2000000",
    )
    url = f"{service.url}{routes.JOB_SUBMIT}"
    headers = {"Content-Type": "application/json"}
    # Another replica's jobs, held by this (live) process in the shared store.
    other = _store(tmp_path / "jobs")
    try:
        too_large = requests.post(
            url, data=_padded_body(payloads, 1_100_000), headers=headers, timeout=60
        )
        assert too_large.status_code == 413, too_large.text  # twice 1.1 MB > 2 MB
        assert "CREDIT_API_JOB_STORE_BYTES" in too_large.text

        held = other.reserve(600_000)  # 1.2 MB of the 2 MB
        full = requests.post(url, data=_padded_body(payloads, 500_000), headers=headers, timeout=60)
        assert full.status_code == 507, full.text
        assert int(full.headers["Retry-After"]) > 0 and "holds 1200000" in full.text

        other.reserve(10)  # two jobs in flight: the limit
        busy = _submit(service, _rows(payloads, 10, "LIM"))
        assert busy.status_code == 429, busy.text
        assert int(busy.headers["Retry-After"]) > 0 and "CREDIT_API_JOBS_IN_FLIGHT" in busy.text

        other.drop(held)  # room again
        accepted = _submit(service, _rows(payloads, 10, "LIM"))
        assert accepted.status_code == 200, accepted.text
        assert _wait_until_ended(service, accepted.json()["task_id"]) == "completed"
    finally:
        service.stop()


def test_results_survive_restarts_and_servers_share_the_store(
    tags: ModelTags, payloads: list[dict], tmp_path: Path
) -> None:
    """BentoML deleted its task store at every server start (a job completed minutes before
    a restart answered 404), and a second server on the same home failed to start."""
    # What an older release left: BentoML's task store, every job's rows and answers, 0644.
    leftover = bentoml_home() / "task_result.db"
    leftover.write_bytes(b"SQLite format 3\x00 rows and answers")
    leftover.chmod(0o644)
    first = _service(tags, tmp_path, "first")
    assert not leftover.exists()
    second = None
    third = None
    try:
        rows = _rows(payloads, 2500, "DUR")
        task_id = _submit(first, rows).json()["task_id"]
        assert _wait_until_ended(first, task_id) == "completed"
        answers = _get(first, task_id).json()
        assert len(answers) == 2500

        second = _service(tags, tmp_path, "second")  # the same home and store, first running
        assert _status(second, task_id).json()["status"] == "completed"
        assert _get(second, task_id).json() == answers
        first.stop()
        assert _get(second, task_id).json() == answers

        # A job in flight when its server goes down is failed, saying why, at the restart.
        running = _submit(second, _rows(payloads, 60_000, "CUT")).json()["task_id"]
        owner = _owner_pid(tmp_path / "jobs", running)
        os.kill(owner, signal.SIGSTOP)  # it cannot end now
        assert _status(second, running).json()["status"] == "in_progress"
        second.kill()  # the server and every worker at once, as a crash

        third = _service(tags, tmp_path, "third")
        cut = _status(third, running).json()
        assert cut["status"] == "failed"
        assert f"pid {owner}" in cut["error"] and "exited before it completed" in cut["error"]
        assert "submit the rows again" in _get(third, running).text
        assert _get(third, task_id).json() == answers  # the completed one is still there
    finally:
        for service in (first, second, third):
            if service is not None:
                service.stop()


def test_a_streamed_job_body_goes_to_disk_as_it_arrives(
    server: Server, payloads: list[dict]
) -> None:
    """A chunked body (no Content-Length) is written to the job store while it arrives; the
    request limits held such a body whole in the worker's memory before the application
    started (up to the job limit, 819 MB)."""
    rows = _rows(payloads, 400, "STR")
    body = json.dumps({"data": rows}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /predict_batch_job/submit HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        half = len(body) // 2
        connection.sendall(b"%x\r\n%s\r\n" % (half, body[:half]))
        store = _store(api_job_dir())
        deadline = time.monotonic() + 30
        receiving: list = []
        while not receiving and time.monotonic() < deadline:
            with store._connect() as index:
                receiving = index.execute(
                    "SELECT task_id FROM jobs WHERE status = 'receiving'"
                ).fetchall()
            time.sleep(0.1)
        assert receiving, "the job did not start before its body was complete"
        (task_id,) = receiving[0]
        rest = body[half:]
        connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = connection.recv(65536)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert task_id.encode() in answer
    assert _wait_until_ended(server, task_id) == "completed"
    assert len(_get(server, task_id).json()) == 400
