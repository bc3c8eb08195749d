"""Asynchronous batch jobs through a real server: submit → status → get, the same answers
and log rows as /predict_batch, every row logged before the job reports completed, and a job
cut by a worker's death reported failed (never left in progress)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from api.batch_jobs import JOB_ROW_PREFIX
from api.predictor import load_predictor
from credit_platform.core.settings import api_jobs_dir
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


def _submit(server: Server, rows: list[dict]) -> requests.Response:
    return requests.post(f"{server.url}/predict_batch_job/submit", json={"data": rows}, timeout=120)


def _status(server: Server, task_id: str) -> requests.Response:
    return requests.get(
        f"{server.url}/predict_batch_job/status", params={"task_id": task_id}, timeout=30
    )


def _wait_until_ended(server: Server, task_id: str, timeout: float = 120) -> str:
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
    too_big = requests.post(f"{server.url}/predict_batch", json={"data": rows}, timeout=60)
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

    result = requests.get(
        f"{server.url}/predict_batch_job/get", params={"task_id": task_id}, timeout=60
    )
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


def test_bad_jobs_are_refused_naming_the_problem(server: Server, payloads: list[dict]) -> None:
    unknown = _status(server, "0" * 32)
    assert unknown.status_code == 404
    bad = _rows(payloads, 10, "BAD")
    bad[7] = {**bad[7], "num_of_loan": "many"}
    submitted = _submit(server, bad)
    if submitted.status_code == 200:  # validated when it runs: the job fails, saying why
        task_id = submitted.json()["task_id"]
        assert _wait_until_ended(server, task_id) == "failed"
        answer = requests.get(
            f"{server.url}/predict_batch_job/get", params={"task_id": task_id}, timeout=30
        )
        text = answer.text
    else:
        assert submitted.status_code == 400
        text = submitted.text
    assert "num_of_loan" in text
    assert not [r for r in server.log_rows() if r["customer_id"].startswith("BAD")]


def test_a_job_whose_worker_dies_reports_failed(server: Server, payloads: list[dict]) -> None:
    rows = _rows(payloads, 40_000, "CUT")
    submitted = _submit(server, rows)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    claim = json.loads((api_jobs_dir() / f"{task_id}.json").read_text())
    os.kill(claim["pid"], signal.SIGKILL)  # the worker running the job, mid-job
    assert _wait_until_ended(server, task_id, timeout=60) == "failed"
    answer = requests.get(
        f"{server.url}/predict_batch_job/get", params={"task_id": task_id}, timeout=30
    )
    assert f"pid {claim['pid']}" in answer.text and "exited before it completed" in answer.text
    # The server goes on: a new worker took the dead one's place.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server.post("/predict", {"data": payloads[0]}).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError("the service did not recover from the worker's death")
