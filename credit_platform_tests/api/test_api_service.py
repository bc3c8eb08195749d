"""The prediction service through a real BentoML server process: predictions and their log
rows, a lender's validation, metadata, hot reload, rollback, refusals, reload under load.

The server runs the `credit-platform serve` command (the built Bento) on a free port,
sharing this session's platform home and BentoML store, with a SQLite prediction log.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from sqlalchemy import select

from bench.sample_requests import load_sample, request_payload, valid_request_payloads
from credit_platform.core import routes
from credit_platform.core.data_contract import PLAUSIBLE_RANGES
from credit_platform.core.db import init_schema, make_engine
from credit_platform.core.derived_features import RATIO_FEATURES
from credit_platform.core.features import LABELS, MODEL_FEATURES
from credit_platform.core.model_input import prepare_model_input
from credit_platform.core.model_store import list_model_tags, save_model_bundle
from credit_platform.core.reasons import REASON_CODES
from credit_platform.core.schema import credit_predictions_api_log as log_table
from credit_platform.core.service_process import free_port
from credit_platform.ingest.kaggle import load_kaggle_csv
from credit_platform_tests.contract_fixtures import as_loaded
from credit_platform_tests.model_fixtures import save_tiny_model, train_tiny_model

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "api-806b88869d5b87ae2ef7af6f"
BATCH_LIMIT = 50  # the server's CREDIT_API_MAX_BATCH_ROWS, small to keep the test quick
STARTUP_TIMEOUT = 90


@dataclass(frozen=True)
class ModelTags:
    first: str
    second: str
    broken: str


@dataclass
class Server:
    url: str
    log_url: str
    process: subprocess.Popen
    output: Path

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["data"] = body if isinstance(body, str | bytes) else json.dumps(body)
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        return requests.post(f"{self.url}{path}", timeout=30, **kwargs)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=30)

    def reload(self, tag: str | None = None, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = json.dumps({"tag": tag}) if tag else ""
        return requests.post(
            f"{self.url}{routes.ADMIN_RELOAD}", data=body, headers=headers, timeout=60
        )

    def served_tag(self) -> str:
        return self.get(routes.METADATA).json()["model_version"]

    def log_rows(self, **where: str) -> list[dict[str, Any]]:
        engine = make_engine(self.log_url)
        try:
            query = select(log_table)
            for column, value in where.items():
                query = query.where(log_table.c[column] == value)
            with engine.connect() as connection:
                return [dict(row) for row in connection.execute(query).mappings()]
        finally:
            engine.dispose()


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the server's process group (arbiter and workers), SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def sample(kaggle_sample: Path) -> pd.DataFrame:
    return load_sample(kaggle_sample)


@pytest.fixture(scope="module")
def payloads(sample: pd.DataFrame) -> list[dict[str, Any]]:
    return valid_request_payloads(sample, 60)


@pytest.fixture(scope="module")
def tags(sample: pd.DataFrame) -> ModelTags:
    # A model whose age scaler has a zero scale: refused when it is loaded.
    model, scalers = train_tiny_model(sample, iterations=5)
    broken_scaler = copy.deepcopy(scalers["age"])
    broken_scaler.scale_ = np.array([0.0])
    broken = save_model_bundle(
        model,
        {**scalers, "age": broken_scaler},
        partition="2025-01-14",
        metrics={"train_accuracy": 0.0},
        params={"iterations": 5},
    )
    first = save_tiny_model(sample, partition="2025-01-15", iterations=20, depth=4, seed=0)
    second = save_tiny_model(sample, partition="2025-01-16", iterations=15, depth=3, seed=1)
    return ModelTags(first=first, second=second, broken=broken)


@pytest.fixture(scope="module")
def server(tags: ModelTags, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("api_server")
    port = free_port()
    log_url = f"sqlite:///{workdir / 'prediction_log.db'}"
    env = {
        **os.environ,
        "FEATURE_STORE_URL": log_url,
        "CREDIT_PREDICTION_SPOOL_DIR": str(workdir / "spool"),
        "CREDIT_API_ADMIN_TOKEN": TOKEN,
        "CREDIT_API_MAX_BATCH_ROWS": str(BATCH_LIMIT),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    output = workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "credit_platform.cli.serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    command += ["--model-tag", tags.first]
    with output.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{output.read_text()}")
            try:
                if requests.get(f"{url}{routes.READYZ}", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the server was not ready in {STARTUP_TIMEOUT}s:\n{output.read_text()}"
                )
            time.sleep(0.25)
        yield Server(url=url, log_url=log_url, process=process, output=output)
    finally:
        stop(process)


def features_of(payload: dict[str, Any]) -> dict[str, Any]:
    return {name: payload[name] for name in MODEL_FEATURES}


# --- the fast path (no server) ----------------------------------------------------------


def test_fast_path_equals_the_reference_transform_on_real_rows(
    sample: pd.DataFrame, tags: ModelTags
) -> None:
    from api.predictor import load_predictor

    predictor = load_predictor(tags.first)
    rows = sample.iloc[:800]
    assert rows[list(MODEL_FEATURES)].isna().any(axis=1).sum() > 100  # gaps are exercised
    records = [request_payload(row) for row in rows.to_dict(orient="records")]

    fast = predictor.probabilities(records)
    # Training sees these rows as the loader stores them: implausible values missing.
    reference_input = prepare_model_input(as_loaded(rows), predictor.bundle.scalers)
    reference = predictor.bundle.model.predict_proba(reference_input)
    np.testing.assert_array_equal(fast, reference)

    predictions = predictor.predict(records)
    expected_labels = predictor.bundle.model.predict(reference_input).ravel()
    assert [p.label for p in predictions] == [str(label) for label in expected_labels]
    assert [p.confidence for p in predictions] == pytest.approx(reference.max(axis=1).tolist())


# --- predictions and the log ------------------------------------------------------------


def plausible(payloads: list[dict]) -> list[dict]:
    """The payloads with nothing for the predictor to repair."""
    return [
        payload
        for payload in payloads
        if all(
            payload[name] is None or low <= payload[name] <= high
            for name, (low, high) in PLAUSIBLE_RANGES.items()
        )
    ]


def test_predict_answers_and_logs_the_row(server: Server, payloads: list[dict]) -> None:
    payload = plausible(payloads)[0]
    response = server.post(routes.PREDICT, {"data": payload})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"customer_id", "predict", "confidence"}
    assert body["customer_id"] == payload["customer_id"]
    assert body["predict"] in LABELS
    assert 0 < body["confidence"] <= 1

    request_id = response.headers["X-Request-ID"]
    (row,) = server.log_rows(request_id=request_id)  # committed before the answer
    assert row["model_version"] == server.served_tag()
    assert row["customer_id"] == payload["customer_id"]
    assert row["prediction"] == body["predict"]
    assert row["confidence"] == pytest.approx(body["confidence"])
    assert row["features"] == features_of(payload)
    assert row["elapsed_ms"] > 0


def test_a_retried_request_id_is_logged_once(server: Server, payloads: list[dict]) -> None:
    headers = {"X-Request-ID": "client-retry-0001"}
    first = server.post(routes.PREDICT, {"data": payloads[1]}, headers=headers)
    again = server.post(routes.PREDICT, {"data": payloads[1]}, headers=headers)

    assert first.status_code == again.status_code == 200
    assert first.headers["X-Request-ID"] == "client-retry-0001"
    assert again.json() == first.json()
    assert len(server.log_rows(request_id="client-retry-0001")) == 1


def test_request_id_is_an_idempotency_key(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    """Same key and body: the logged answer again, even after a reload to a model that would
    answer otherwise; another body under the key: 409 naming it, and the log keeps the first."""
    before = server.served_tag()
    headers = {"X-Request-ID": "idem-key-1"}
    first = server.post(routes.PREDICT, {"data": payloads[6]}, headers=headers)
    assert first.status_code == 200, first.text
    other = tags.second if before != tags.second else tags.first
    assert server.reload(other).status_code == 200
    try:
        again = server.post(routes.PREDICT, {"data": payloads[6]}, headers=headers)
        fresh = server.post(routes.PREDICT, {"data": payloads[6]})
    finally:
        assert server.reload(before).status_code == 200
    assert again.status_code == 200 and again.json() == first.json()
    assert fresh.status_code == 200
    assert fresh.json()["confidence"] != first.json()["confidence"]  # the other model's answer
    (row,) = server.log_rows(request_id="idem-key-1")
    assert row["model_version"] == before and row["role"] == "champion"

    changed = {**payloads[6], "age": payloads[6]["age"] + 1}
    conflict = server.post(routes.PREDICT, {"data": changed}, headers=headers)
    assert conflict.status_code == 409
    assert "X-Request-ID" in conflict.text and "idem-key-1" in conflict.text
    (kept,) = server.log_rows(request_id="idem-key-1")
    # the first body as it was scored: a value the contract repaired is logged as null
    scored = {**features_of(payloads[6]), **dict.fromkeys(first.json().get("repaired", []))}
    assert kept["features"] == scored

    # Keys are case-sensitive: another key, another request.
    upper = server.post(
        routes.PREDICT, {"data": payloads[7]}, headers={"X-Request-ID": "Idem-Key-1"}
    )
    assert upper.status_code == 200
    assert server.log_rows(request_id="Idem-Key-1")[0]["customer_id"] == payloads[7]["customer_id"]


def test_a_repaired_request_sent_again_is_the_same_answer(
    server: Server, payloads: list[dict]
) -> None:
    """A retry of a request whose implausible value was repaired: the log holds the repaired
    features, the retry is recognised as the same request (not a 409) and its answer still
    lists the repair."""
    implausible = {**payloads[11], "num_bank_accounts": 1747}
    headers = {"X-Request-ID": "idem-repaired-1"}
    first = server.post(routes.PREDICT, {"data": implausible}, headers=headers)
    assert first.status_code == 200, first.text
    assert "num_bank_accounts" in first.json()["repaired"]
    again = server.post(routes.PREDICT, {"data": implausible}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    (row,) = server.log_rows(request_id="idem-repaired-1")
    assert row["features"]["num_bank_accounts"] is None


def test_batch_rows_never_collide_with_a_client_key(server: Server, payloads: list[dict]) -> None:
    batch = server.post(
        routes.PREDICT_BATCH, {"data": payloads[8:10]}, headers={"X-Request-ID": "coll"}
    )
    single = server.post(routes.PREDICT, {"data": payloads[10]}, headers={"X-Request-ID": "coll-1"})
    assert batch.status_code == single.status_code == 200
    assert [row["customer_id"] for row in server.log_rows(request_id="coll#1")] == [
        payloads[9]["customer_id"]
    ]
    assert [row["customer_id"] for row in server.log_rows(request_id="coll-1")] == [
        payloads[10]["customer_id"]
    ]
    # A client cannot send a batch row's form as its key.
    taken = server.post(routes.PREDICT, {"data": payloads[10]}, headers={"X-Request-ID": "coll#1"})
    assert taken.status_code == 400 and "X-Request-ID" in taken.text

    # The batch retried: the same answers, no new rows; another body under its key: 409.
    again = server.post(
        routes.PREDICT_BATCH, {"data": payloads[8:10]}, headers={"X-Request-ID": "coll"}
    )
    assert again.status_code == 200 and again.json() == batch.json()
    longer = server.post(
        routes.PREDICT_BATCH, {"data": payloads[8:11]}, headers={"X-Request-ID": "coll"}
    )
    assert longer.status_code == 409
    shorter = server.post(
        routes.PREDICT_BATCH, {"data": payloads[8:9]}, headers={"X-Request-ID": "coll"}
    )
    assert shorter.status_code == 409 and "coll" in shorter.text
    logged = [row["request_id"] for row in server.log_rows() if row["request_id"][:5] == "coll#"]
    assert sorted(logged) == ["coll#0", "coll#1"]


def test_batch_keeps_order_and_equals_single_predictions(
    server: Server, payloads: list[dict]
) -> None:
    batch = payloads[:BATCH_LIMIT][::-1]
    response = server.post(routes.PREDICT_BATCH, {"data": batch})

    assert response.status_code == 200, response.text
    answers = response.json()
    assert [answer["customer_id"] for answer in answers] == [row["customer_id"] for row in batch]
    for payload, answer in zip(batch[:15], answers[:15], strict=True):
        single = server.post(routes.PREDICT, {"data": payload}).json()
        assert answer["predict"] == single["predict"]
        assert answer["confidence"] == pytest.approx(single["confidence"], rel=1e-12)
    request_id = response.headers["X-Request-ID"]
    logged = server.log_rows()
    batch_rows = [row for row in logged if row["request_id"].startswith(f"{request_id}#")]
    assert len(batch_rows) == len(batch)


# --- validation -------------------------------------------------------------------------


def _set(field: str, value: Any) -> Callable[[dict], dict]:
    def mutate(body: dict) -> dict:
        body["data"][field] = value
        return body

    return mutate


def _drop(field: str) -> Callable[[dict], dict]:
    def mutate(body: dict) -> dict:
        del body["data"][field]
        return body

    return mutate


INVALID_SINGLE = {
    "20-digit count": (_set("num_of_loan", 10**20), "num_of_loan"),
    "309-digit count": (_set("num_bank_accounts", int("9" * 309)), "num_bank_accounts"),
    "absurd amount": (_set("annual_income", 1e31), "annual_income"),
    "309-digit amount": (_set("outstanding_debt", -int("9" * 309)), "outstanding_debt"),
    "NaN token": (_set("annual_income", float("nan")), "annual_income"),
    "Infinity token": (_set("monthly_balance", float("inf")), "monthly_balance"),
    "-Infinity token": (_set("changed_credit_limit", float("-inf")), "changed_credit_limit"),
    "unknown credit_mix": (_set("credit_mix", "Excellent"), "credit_mix"),
    "unknown payment_of_min_amount": (
        _set("payment_of_min_amount", "Maybe"),
        "payment_of_min_amount",
    ),
    "unknown payment_behaviour": (_set("payment_behaviour", "!@9#%8"), "payment_behaviour"),
    "unknown occupation": (_set("occupation", "_______"), "occupation"),
    "unknown loan type": (_set("type_of_loan", "Auto Loan, and Yacht Loan"), "type_of_loan"),
    "missing feature": (_drop("interest_rate"), "interest_rate"),
    "number as string": (_set("age", "35"), "age"),
    "text for a number": (_set("annual_income", "lots"), "annual_income"),
    "boolean for a number": (_set("num_credit_card", True), "num_credit_card"),
    "fraction for a count": (_set("num_credit_card", 2.5), "num_credit_card"),
    "number for a category": (_set("credit_mix", 3), "credit_mix"),
    "unknown field": (_set("favourite_colour", "blue"), "favourite_colour"),
    "empty customer_id": (_set("customer_id", "   "), "customer_id"),
    "overlong customer_id": (_set("customer_id", "C" * 33), "customer_id"),
    "missing customer_id": (_drop("customer_id"), "customer_id"),
    "unknown top-level field": (lambda body: {**body, "debug": True}, "debug"),
    "no data": (lambda body: {}, "data"),
    "list where one row is due": (lambda body: {"data": [body["data"]]}, "data"),
}


@pytest.mark.parametrize("case", list(INVALID_SINGLE), ids=list(INVALID_SINGLE))
def test_bad_input_is_refused_naming_the_field(
    server: Server, payloads: list[dict], case: str
) -> None:
    mutate, field = INVALID_SINGLE[case]
    body = json.dumps(mutate({"data": dict(payloads[2])}))  # NaN/Infinity stay JSON tokens

    response = server.post(routes.PREDICT, body)

    assert response.status_code in (400, 422), response.text
    assert field in response.text
    assert server.post(routes.PREDICT, {"data": payloads[2]}).status_code == 200  # still serving


def test_malformed_json_is_refused(server: Server) -> None:
    response = server.post(routes.PREDICT, '{"data": {"customer_id": ')
    assert response.status_code == 400
    assert "json" in response.text.lower()


def test_every_feature_accepts_null(server: Server, payloads: list[dict]) -> None:
    row = {**payloads[3], **dict.fromkeys(MODEL_FEATURES)}
    response = server.post(routes.PREDICT, {"data": row})
    assert response.status_code == 200, response.text
    assert response.json()["predict"] in LABELS
    assert "repaired" not in response.json()


# Values the loader nulls for training: the API scores them as missing and says so.
IMPLAUSIBLE = {
    "num_bank_accounts": 1747,
    "annual_income": 23_800_000.0,
    "age": -500,
    "num_of_loan": -100,
    "interest_rate": 5773,
    "total_emi_per_month": 81_971.0,
    "amount_invested_monthly": 10_000.0,
    "monthly_balance": -3.33e26,
}


def test_implausible_values_are_scored_as_missing_and_listed(
    server: Server, payloads: list[dict]
) -> None:
    payload = plausible(payloads)[1]
    implausible = {**payload, **IMPLAUSIBLE}
    as_missing = {**payload, **dict.fromkeys(IMPLAUSIBLE)}
    in_model_order = [name for name in MODEL_FEATURES if name in IMPLAUSIBLE]

    answer = server.post(routes.PREDICT, {"data": implausible})
    same_as_null = server.post(routes.PREDICT, {"data": as_missing})
    batch = server.post(routes.PREDICT_BATCH, {"data": [payload, implausible, as_missing]})

    assert answer.status_code == same_as_null.status_code == batch.status_code == 200
    assert answer.json()["repaired"] == in_model_order
    assert "repaired" not in same_as_null.json()
    expected = same_as_null.json()
    assert {key: value for key, value in answer.json().items() if key != "repaired"} == expected
    first, repaired, nulled = batch.json()
    assert "repaired" not in first and "repaired" not in nulled
    assert repaired == {**expected, "repaired": in_model_order}
    assert nulled == expected
    # The log holds what was scored: the repaired values as null.
    (logged,) = server.log_rows(request_id=answer.headers["X-Request-ID"])
    assert logged["features"] == features_of(as_missing)
    batch_id = batch.headers["X-Request-ID"]
    (logged,) = server.log_rows(request_id=f"{batch_id}#1")
    assert logged["features"] == features_of(as_missing)


def test_the_loaded_shared_sample_is_accepted_in_full(
    server: Server, tags: ModelTags, kaggle_sample: Path, tmp_path: Path
) -> None:
    """Every row the loader stores can be scored by the API: none refused, and each answer
    equals the model's on the stored row."""
    from api.predictor import load_predictor

    store = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(store)
    try:
        load_kaggle_csv(kaggle_sample, engine, progress=False)
        stored = pd.read_sql_table("credit_score_features", engine).sort_values("id")
    finally:
        engine.dispose()
    assert len(stored) == 10_000 and stored[list(MODEL_FEATURES)].isna().any(axis=1).mean() > 0.1
    rows = [request_payload(row) for row in stored.to_dict(orient="records")]

    answers, statuses = [], Counter()
    for start in range(0, len(rows), BATCH_LIMIT):
        response = server.post(routes.PREDICT_BATCH, {"data": rows[start : start + BATCH_LIMIT]})
        statuses[response.status_code] += 1
        if response.status_code == 200:
            answers += response.json()
        else:
            pytest.fail(f"rows {start}.. refused: {response.text[:500]}")

    assert statuses == {200: len(rows) // BATCH_LIMIT}
    assert not [answer for answer in answers if "repaired" in answer]  # stored rows are clean
    predictor = load_predictor(tags.first)
    probabilities = predictor.bundle.model.predict_proba(
        prepare_model_input(stored, predictor.bundle.scalers)
    )
    labels = [predictor.bundle.model.classes_[index] for index in probabilities.argmax(axis=1)]
    assert [answer["predict"] for answer in answers] == [str(label) for label in labels]
    assert [answer["confidence"] for answer in answers] == pytest.approx(
        probabilities.max(axis=1).tolist(), rel=1e-12
    )


def test_bad_request_id_header_is_refused(server: Server, payloads: list[dict]) -> None:
    response = server.post(
        routes.PREDICT, {"data": payloads[0]}, headers={"X-Request-ID": "x" * 80}
    )
    assert response.status_code == 400
    assert "X-Request-ID" in response.text


def test_batch_validation_names_the_limit_and_the_row(server: Server, payloads: list[dict]) -> None:
    oversized = (payloads * 2)[: BATCH_LIMIT + 1]
    response = server.post(routes.PREDICT_BATCH, {"data": oversized})
    assert response.status_code in (400, 422)
    assert "data" in response.text and str(BATCH_LIMIT) in response.text

    empty = server.post(routes.PREDICT_BATCH, {"data": []})
    assert empty.status_code in (400, 422) and "data" in empty.text

    rows = [dict(row) for row in payloads[:5]]
    rows[3]["credit_mix"] = "Excellent"
    bad_row = server.post(routes.PREDICT_BATCH, {"data": rows})
    assert bad_row.status_code in (400, 422)
    detail = bad_row.json()["detail"]
    assert ["data", 3, "credit_mix"] in [error["loc"] for error in detail]

    # A body too big for any legal batch is refused before it is parsed.
    padded = [{**row, "type_of_loan": "Auto Loan" + " " * 4000} for row in payloads[:BATCH_LIMIT]]
    too_big = server.post(routes.PREDICT_BATCH, {"data": padded})
    assert too_big.status_code == 413
    assert str(BATCH_LIMIT) in too_big.text

    assert server.post(routes.PREDICT_BATCH, {"data": payloads[:3]}).status_code == 200


# --- metadata and health ----------------------------------------------------------------


def test_serve_runs_the_built_bento(server: Server) -> None:
    """`credit-platform serve` builds the service's Bento (once per code version) and runs it:
    the server process is `bentoml serve <bento tag>` and reports that tag."""
    import bentoml

    from credit_platform.core.bento import bento_tag

    tag = bento_tag()
    command = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert [b"bentoml", b"serve", tag.encode()] == command[2:5], command
    assert bentoml.bentos.get(tag).info.all_models == []  # models come from the store
    assert server.get(routes.METADATA).json()["bento_tag"] == tag


def test_metadata_and_health_endpoints(server: Server, tags: ModelTags) -> None:
    metadata = server.get(routes.METADATA).json()
    assert metadata["model_name"] == "credit_score_classifier"
    assert metadata["model_version"] == tags.first
    assert metadata["partition"] == "2025-01-15"
    assert metadata["params"]["depth"] == 4
    # the test metrics the model was saved with: accuracy, macro F1, recall, confusion matrix
    metrics = metadata["metrics"]
    assert 0 < metrics["test_accuracy"] <= 1 and 0 < metrics["test_macro_f1"] <= 1
    assert {"test_recall_Good", "test_recall_Standard", "test_recall_Poor"} <= set(metrics)
    confusion = metrics["test_confusion_matrix"]
    assert confusion["labels"] == ["Good", "Standard", "Poor"]
    assert sum(map(sum, confusion["rows"])) == 600  # the last fifth of the 3,000 sample rows
    assert datetime.fromisoformat(metadata["creation_time"]).tzinfo is not None
    assert datetime.fromisoformat(metadata["loaded_at"]).tzinfo is not None

    for path in (routes.HEALTHZ, routes.LIVEZ, routes.READYZ, routes.METRICS):
        assert server.get(path).status_code == 200, path
    assert "bentoml_service" in server.get(routes.METRICS).text


# --- reload, rollback, refusals ---------------------------------------------------------


def test_reload_needs_the_bearer_token(server: Server, tags: ModelTags) -> None:
    before = server.served_tag()
    assert server.reload(tags.second, token=None).status_code == 401
    assert server.reload(tags.second, token="wrong-token").status_code == 401
    basic = requests.post(
        f"{server.url}{routes.ADMIN_RELOAD}",
        headers={"Authorization": f"Basic {TOKEN}"},
        timeout=30,
    )
    assert basic.status_code == 401
    assert server.served_tag() == before


def test_reload_refuses_unknown_tags_and_broken_models(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    before = server.served_tag()

    unknown = server.reload("credit_score_classifier:doesnotexist")
    assert unknown.status_code == 404
    assert "doesnotexist" in unknown.text

    foreign = server.reload("some_other_model:v1")
    assert foreign.status_code == 404

    broken = server.reload(tags.broken)
    assert broken.status_code == 422
    assert "age (center" in broken.text and "scale 0.0" in broken.text

    bad_body = requests.post(
        f"{server.url}{routes.ADMIN_RELOAD}",
        data='{"tag": 7}',
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert bad_body.status_code == 400 and "tag" in bad_body.text

    assert server.served_tag() == before
    assert server.post(routes.PREDICT, {"data": payloads[0]}).status_code == 200


def test_reload_switches_models_and_rolls_back(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    switched = server.reload(tags.second)
    assert switched.status_code == 200, switched.text
    metadata = server.get(routes.METADATA).json()
    assert metadata["model_version"] == tags.second
    assert metadata["partition"] == "2025-01-16"
    created = datetime.fromisoformat(metadata["creation_time"])
    assert created.tzinfo is not None
    assert datetime.fromisoformat(switched.json()["creation_time"]) == created

    answer = server.post(routes.PREDICT, {"data": payloads[4]})
    (row,) = server.log_rows(request_id=answer.headers["X-Request-ID"])
    assert row["model_version"] == tags.second

    rolled_back = server.reload(tags.first)
    assert rolled_back.status_code == 200
    assert rolled_back.json()["previous_version"] == tags.second
    assert server.served_tag() == tags.first

    latest = server.reload()  # empty body: the newest saved model
    assert latest.status_code == 200, latest.text
    assert server.served_tag() == list_model_tags()[0]
    assert server.reload(tags.first).status_code == 200


def test_no_request_fails_while_models_are_swapped(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    stop_hammering = threading.Event()
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def hammer(offset: int) -> None:
        session = requests.Session()
        for number in range(3000):  # bounded even if the reloads hang
            if stop_hammering.is_set():
                break
            payload = payloads[(offset + number) % len(payloads)]
            response = session.post(
                f"{server.url}{routes.PREDICT}", json={"data": payload}, timeout=30
            )
            with lock:
                results.append((response.status_code, response.text))
        session.close()

    threads = [threading.Thread(target=hammer, args=(offset,)) for offset in range(3)]
    for thread in threads:
        thread.start()
    try:
        reloads = []
        for tag in (tags.second, tags.first, tags.second, tags.first, tags.second):
            time.sleep(0.2)
            reloads.append(server.reload(tag).status_code)
        time.sleep(0.2)
    finally:
        stop_hammering.set()
        for thread in threads:
            thread.join(60)

    assert reloads == [200] * 5
    failures = [(status, text) for status, text in results if status != 200]
    assert not failures, failures[:3]
    assert len(results) > 50
    assert {json.loads(text)["predict"] for _, text in results} <= set(LABELS)
    served_versions = {row["model_version"] for row in server.log_rows()}
    assert {tags.first, tags.second} <= served_versions
    assert server.served_tag() == tags.second


# --- without a server -------------------------------------------------------------------


def test_reload_refuses_when_no_admin_token_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.testclient import TestClient

    from api.service import admin_app

    monkeypatch.delenv("CREDIT_API_ADMIN_TOKEN", raising=False)
    with TestClient(admin_app) as client:
        response = client.post(routes.ADMIN_RELOAD, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "not configured" in response.json()["error"]


def test_serve_command_refuses_an_unknown_model_tag(tags: ModelTags) -> None:
    from click.testing import CliRunner

    from credit_platform.cli.serve import serve

    # A port of its own: were the tag found, the command would serve there, never on 3000.
    port = str(free_port())
    result = CliRunner().invoke(
        serve, ["--port", port, "--model-tag", "credit_score_classifier:missing"]
    )
    assert result.exit_code != 0
    assert "credit_score_classifier:missing" in result.output


def test_serve_waits_for_a_first_model(tags: ModelTags, tmp_path: Path) -> None:
    """`serve --wait-for-model` on an empty store waits instead of exiting (a new stack's
    API container), and serves the first model once it is saved."""
    import shutil

    import bentoml

    store = tmp_path / "bentoml"
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(store),
        "FEATURE_STORE_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "CREDIT_PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
        "CREDIT_API_WORKERS": "1",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("CREDIT_API_MODEL_TAG", None)
    output = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "credit_platform.cli.serve",
        "--port",
        str(port),
        "--wait-for-model",
        "0.5",
    ]
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "waiting for a model" not in output.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, output.read_text()
            time.sleep(0.2)
        time.sleep(1.5)  # several looks later it is still waiting, not gone
        assert process.poll() is None, output.read_text()
        assert "no credit_score_classifier model" in output.read_text()

        saved = bentoml.models.get(tags.first)  # the first training run saves a model
        version_dir = store / "models" / saved.tag.name / saved.tag.version
        shutil.copytree(saved.path, version_dir)
        (version_dir.parent / "latest").write_text(saved.tag.version)

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, output.read_text()
            try:
                answer = requests.get(f"http://127.0.0.1:{port}{routes.METADATA}", timeout=2)
                if answer.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.25)
        assert answer.json()["model_version"] == tags.first
    finally:
        stop(process)


# --- reasons ("explain": true) ----------------------------------------------------------


@pytest.fixture(scope="module")
def corrected_tag(sample: pd.DataFrame) -> str:
    """A model of the tuned preset's kind: derived features and a prior correction stored
    as its bias."""
    from credit_platform.core.training import apply_class_offsets

    model, scalers = train_tiny_model(sample, iterations=15, derived=True, seed=2)
    apply_class_offsets(model, [0.35, -0.2, 0.15])
    return save_model_bundle(
        model,
        scalers,
        partition="2025-01-17",
        metrics={"test_accuracy": 0.6, "test_macro_f1": 0.5},
        params={"iterations": 15, "derived": True},
    )


def served_raw_scores(tag: str, rows: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The raw scores of the model `tag` for rows as the service scores them (in-process)."""
    from api.predictor import load_predictor

    predictor = load_predictor(tag)
    model = predictor.bundle.model
    raw = model.predict(predictor.encode(rows), prediction_type="RawFormulaVal")
    return [str(label) for label in model.classes_], raw


def test_explained_answers_equal_the_unexplained_and_sum_to_the_raw_score(
    server: Server, tags: ModelTags, corrected_tag: str, payloads: list[dict]
) -> None:
    """For the plain model and for one with derived features and a bias: same class and
    confidence with and without "explain"; the reasons (all of them asked for) plus the
    base value are the served model's raw score of the class; both answers are logged, the
    explained one with its reasons."""
    before = server.served_tag()
    rows = payloads[20:30]
    try:
        # every reason asked for: the inputs, and also the ratios of a derived model
        inputs = len(MODEL_FEATURES)
        for tag, count in ((tags.first, inputs), (corrected_tag, inputs + len(RATIO_FEATURES))):
            assert server.reload(tag).status_code == 200
            classes, raw = served_raw_scores(tag, [features_of(row) for row in rows])
            for position, row in enumerate(rows):
                plain = server.post(routes.PREDICT, {"data": row})
                explained = server.post(
                    routes.PREDICT, {"data": row, "explain": True, "reasons": len(REASON_CODES)}
                )
                assert plain.status_code == explained.status_code == 200, explained.text
                body, answer = plain.json(), explained.json()
                assert "explanation" not in body
                assert answer["predict"] == body["predict"]
                assert answer["confidence"] == body["confidence"]
                assert answer.get("repaired") == body.get("repaired")
                explanation = answer["explanation"]
                assert explanation["label"] == answer["predict"]
                assert len(explanation["reasons"]) == count
                assert explanation["other_reasons"] == 0
                expected = raw[position, classes.index(answer["predict"])]
                total = explanation["base_value"] + sum(
                    reason["contribution"] for reason in explanation["reasons"]
                )
                assert total == pytest.approx(expected, abs=1e-9)
                assert explanation["raw_score"] == pytest.approx(expected, abs=1e-9)

                (plain_row,) = server.log_rows(request_id=plain.headers["X-Request-ID"])
                (explained_row,) = server.log_rows(request_id=explained.headers["X-Request-ID"])
                assert plain_row["reasons"] is None
                assert explained_row["reasons"] == explanation
                assert explained_row["model_version"] == tag
    finally:
        assert server.reload(before).status_code == 200


def test_the_default_explanation_shows_three_reasons_in_words(
    server: Server, payloads: list[dict]
) -> None:
    answer = server.post(routes.PREDICT, {"data": payloads[31], "explain": True})
    assert answer.status_code == 200, answer.text
    explanation = answer.json()["explanation"]
    reasons = explanation["reasons"]
    assert len(reasons) == 3
    assert [abs(r["contribution"]) for r in reasons] == sorted(
        (abs(r["contribution"]) for r in reasons), reverse=True
    )
    for reason in reasons:
        assert reason["feature"] in MODEL_FEATURES  # this model has no derived features
        assert reason["value"] == (payloads[31][reason["feature"]])
        assert reason["direction"] == ("raises" if reason["contribution"] > 0 else "lowers")
        assert explanation["label"] in reason["text"]
    shown = sum(r["contribution"] for r in reasons)
    assert explanation["base_value"] + shown + explanation["other_reasons"] == pytest.approx(
        explanation["raw_score"], abs=1e-9
    )


def test_an_explained_batch_equals_the_unexplained_batch(
    server: Server, payloads: list[dict]
) -> None:
    rows = payloads[:BATCH_LIMIT]
    plain = server.post(routes.PREDICT_BATCH, {"data": rows})
    explained = server.post(routes.PREDICT_BATCH, {"data": rows, "explain": True})
    assert plain.status_code == explained.status_code == 200, explained.text
    for body, answer in zip(plain.json(), explained.json(), strict=True):
        assert "explanation" not in body
        assert (answer["customer_id"], answer["predict"], answer["confidence"]) == (
            body["customer_id"],
            body["predict"],
            body["confidence"],
        )
        assert answer["explanation"]["label"] == answer["predict"]
        assert len(answer["explanation"]["reasons"]) == 3
    request_id = explained.headers["X-Request-ID"]
    logged = server.log_rows(request_id=f"{request_id}#7")
    assert logged[0]["reasons"] == explained.json()[7]["explanation"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"explain": "yes"}, "explain"),
        ({"explain": 1}, "explain"),
        ({"explain": True, "reasons": 0}, "reasons"),
        ({"explain": True, "reasons": 28}, "reasons"),
        ({"explain": True, "reasons": "3"}, "reasons"),
    ],
)
def test_a_bad_explain_request_is_refused_naming_the_field(
    server: Server, payloads: list[dict], extra: dict, field: str
) -> None:
    for route, data in ((routes.PREDICT, payloads[3]), (routes.PREDICT_BATCH, [payloads[3]])):
        response = server.post(route, {"data": data, **extra})
        assert response.status_code == 400, response.text
        assert field in response.text


def test_a_retried_explained_request_gets_the_logged_reasons(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    """The same key and body: the first answer with its reasons, even after a reload; the
    same key without "explain" (another body): 409."""
    before = server.served_tag()
    headers = {"X-Request-ID": "explained-retry-1"}
    body = {"data": payloads[33], "explain": True}
    first = server.post(routes.PREDICT, body, headers=headers)
    assert first.status_code == 200, first.text
    other = tags.second if before != tags.second else tags.first
    assert server.reload(other).status_code == 200
    try:
        again = server.post(routes.PREDICT, body, headers=headers)
    finally:
        assert server.reload(before).status_code == 200
    assert again.status_code == 200 and again.json() == first.json()
    plain = server.post(routes.PREDICT, {"data": payloads[33]}, headers=headers)
    assert plain.status_code == 409, plain.text
    more = server.post(routes.PREDICT, {**body, "reasons": 5}, headers=headers)
    assert more.status_code == 409, more.text
    assert len(server.log_rows(request_id="explained-retry-1")) == 1


# --- shutdown (last: it stops the module's server) --------------------------------------


def _metric_series(server: Server) -> list[str]:
    """The sample lines of /metrics (one per series), without the gauge BentoML labels with
    each worker's pid (it appears when a worker serves its first request)."""
    text = server.get(routes.METRICS).text
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _endpoint_labels(series: list[str]) -> set[str]:
    return {
        line.split('endpoint="', 1)[1].split('"', 1)[0] for line in series if 'endpoint="' in line
    }


def test_unknown_paths_share_one_metrics_label(server: Server, payloads: list[dict]) -> None:
    """Every path a client makes up used to add series to /metrics (3,000 random 404s: 1.4
    to 15.8 MB, 6.5 s to render); now they share one label, so 2,000 more random paths
    leave the number of series unchanged."""
    assert server.post(routes.PREDICT, {"data": payloads[0]}).status_code == 200
    for attempt in range(20):  # new connections: both workers serve unknown paths
        assert requests.get(f"{server.url}/warm-up-{attempt}", timeout=30).status_code == 404
    before = _metric_series(server)
    with requests.Session() as session:
        for attempt in range(2000):
            path = f"/scan/{os.urandom(6).hex()}/{attempt}"
            assert session.get(f"{server.url}{path}", timeout=30).status_code == 404
    for attempt in range(20):
        assert requests.get(f"{server.url}/after-{attempt}", timeout=30).status_code == 404
    after = _metric_series(server)

    def countable(series: list[str]) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in series if "pid=" not in line}

    assert countable(after) == countable(before)
    labels = _endpoint_labels(after)
    assert "<unmatched>" in labels and routes.PREDICT in labels
    assert not any(label.startswith(("/scan", "/warm-up", "/after")) for label in labels)


@pytest.mark.parametrize("share", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_non_finite_challenger_share_is_a_400(server: Server, share: str) -> None:
    response = server.post(
        routes.ADMIN_CHALLENGER,
        f'{{"tag": "credit_score_classifier:x", "role": "canary", "share": {share}}}',
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"] == ["share"]
    assert "finite" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("path", [routes.ADMIN_CHALLENGER, routes.ADMIN_RELOAD])
def test_an_admin_body_that_is_not_utf8_is_a_400(server: Server, path: str) -> None:
    response = server.post(
        path,
        b'\xff\xfe{"tag": "\xc3\x28"}',
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400, response.text
    assert "Invalid JSON" in response.text


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (routes.PREDICT, "multipart/form-data; boundary=xyz"),
        (routes.PREDICT_BATCH, "Multipart/Form-Data; boundary=xyz"),
        (routes.PREDICT, "application/x-www-form-urlencoded"),
        (routes.ADMIN_CHALLENGER, "multipart/form-data; boundary=xyz"),
    ],
)
def test_a_form_body_is_a_415(server: Server, path: str, content_type: str) -> None:
    body = b'--xyz\r\nContent-Disposition: form-data; name="data"\r\n\r\n{}\r\n--xyz--\r\n'
    response = requests.post(
        f"{server.url}{path}",
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["error"]


@pytest.mark.parametrize("customer_id", ["CUS\x00_1", "CUS_\n1", "\x7fCUS"])
def test_a_control_character_in_customer_id_is_a_400(
    server: Server, payloads: list[dict], customer_id: str
) -> None:
    request_id = f"control-{customer_id.encode().hex()}"
    response = server.post(
        routes.PREDICT,
        {"data": {**payloads[20], "customer_id": customer_id}},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 400, response.text
    assert "customer_id" in response.text and "control character" in response.text
    batch = server.post(
        routes.PREDICT_BATCH, {"data": [payloads[20], {**payloads[21], "customer_id": customer_id}]}
    )
    assert batch.status_code == 400 and "customer_id" in batch.text
    assert server.log_rows(request_id=request_id) == []


# Last: it stops the module's server.
def test_clean_shutdown_drains_the_log_and_exits(server: Server, payloads: list[dict]) -> None:
    answered = server.post(routes.PREDICT, {"data": payloads[5]})
    assert answered.status_code == 200
    stop(server.process)
    assert server.process.returncode == 0
    output = server.output.read_text()
    assert "Completed cleanup hook: drain_prediction_log" in output
    assert server.log_rows(request_id=answered.headers["X-Request-ID"])
