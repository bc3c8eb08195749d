"""What users trust the prediction service for, under faults: real server processes, real
load, the real MariaDB (through a proxy the test can cut; the shared server is never
stopped).

1. durable answers: SIGKILL under load (database up, then down) loses no answered row;
2. database outage under load: no failed request, every answer logged once;
3. hot swap under load: ten reloads, no failure, each answer from one of the two models,
   /metadata the same from every worker after each reload;
4. bad input: property-based fuzzing from the service's own OpenAPI schema.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from bench.sample_requests import load_sample, valid_request_payloads
from credit_platform.core import routes
from credit_platform.core.bento import bento_tag
from credit_platform.core.data_contract import PLAUSIBLE_RANGES
from credit_platform.core.features import LABELS, MODEL_FEATURES
from credit_platform.core.schema import credit_predictions_api_log as log_table
from credit_platform.core.service_process import ServiceProcess
from credit_platform_tests.harness import LoadGenerator, Outcome, TcpProxy, worker_pids
from credit_platform_tests.model_fixtures import save_tiny_model
from credit_platform_tests.openapi_strategies import from_openapi

pytestmark = [pytest.mark.slow]

TOKEN = "reliability-admin-token"


@dataclass(frozen=True)
class Models:
    first: str
    second: str


@pytest.fixture(scope="module")
def sample(kaggle_sample: Path) -> pd.DataFrame:
    return load_sample(kaggle_sample, rows=2000)


@pytest.fixture(scope="module")
def payloads(sample: pd.DataFrame) -> list[dict]:
    return valid_request_payloads(sample, 120)


@pytest.fixture(scope="module")
def models(sample: pd.DataFrame) -> Models:
    return Models(
        first=save_tiny_model(sample, partition="2025-03-01", iterations=20, depth=4, seed=3),
        second=save_tiny_model(sample, partition="2025-03-02", iterations=12, depth=3, seed=4),
    )


def service_env(db_url: str, spool: Path, tag: str, **extra: str) -> dict[str, str]:
    return {
        "FEATURE_STORE_URL": db_url,
        "CREDIT_PREDICTION_SPOOL_DIR": str(spool),
        "CREDIT_API_MODEL_TAG": tag,
        "CREDIT_API_ADMIN_TOKEN": TOKEN,
        **extra,
    }


@pytest.fixture
def proxied_db(mariadb_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """The test's MariaDB database reached through a proxy the test can cut."""
    url = make_url(mariadb_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306)
    try:
        yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        proxy.close()


def logged_ids(db_url: str, prefix: str) -> Counter:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(log_table.c.request_id).where(log_table.c.request_id.like(f"{prefix}-%"))
            ).scalars()
            return Counter(rows)
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def assert_logged_exactly_once(db_url: str, prefix: str, answered: list[Outcome]) -> None:
    logged = logged_ids(db_url, prefix)
    missing = [o.request_id for o in answered if logged[o.request_id] == 0]
    assert not missing, f"{len(missing)} answered requests are not logged, e.g. {missing[:5]}"
    assert max(logged.values()) == 1  # the column is UNIQUE; a replay never duplicates


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("prediction_log-*.jsonl")) if spool.is_dir() else []


# --- 1. durable answers ------------------------------------------------------------------


def test_sigkill_under_load_loses_no_answered_row(
    tmp_path: Path, proxied_db: tuple[str, TcpProxy], payloads: list[dict], models: Models
) -> None:
    db_url, proxy = proxied_db
    spool = tmp_path / "spool"
    env = service_env(db_url, spool, models.first)
    output = tmp_path / "service.log"

    def serve_then_kill(prefix: str, min_requests: int, *, server_only: bool) -> list[Outcome]:
        service = ServiceProcess(env, output)
        service.wait_ready()
        workers = worker_pids(service)
        load = LoadGenerator(service.url, payloads, threads=4, prefix=prefix).start()
        try:
            wait_for(lambda: load.count() >= min_requests, 30, f"{min_requests} requests")
            if server_only:  # the workers must notice, drain and exit, not linger orphaned
                os.kill(service.process.pid, signal.SIGKILL)
                wait_for(lambda: not any(alive(pid) for pid in workers), 30, "workers to exit")
            service.kill()  # mid-load: requests in flight get no answer
        finally:
            service.kill()
            outcomes = load.stop()
        return [o for o in outcomes if o.status == 200]

    # Database up, the server process killed: answers left after their group commit.
    committed = serve_then_kill("kill-up", 300, server_only=True)
    # Database down, every process killed at once: answers left after the spool's fsync.
    proxy.cut()
    spooled = serve_then_kill("kill-down", 200, server_only=False)
    assert spool_files(spool), "rows answered during the outage must be in the spool"

    # Database back; a new service replays the spools the killed workers left.
    proxy.restore()
    service = ServiceProcess(env, output)
    try:
        service.wait_ready()
        wait_for(lambda: not spool_files(spool), 30, "the spool to be replayed")
    finally:
        service.stop()

    assert len(committed) > 100 and len(spooled) > 100
    assert_logged_exactly_once(db_url, "kill", committed + spooled)


# --- 2. database outage ------------------------------------------------------------------


def test_database_outage_under_load_fails_no_request(
    tmp_path: Path, proxied_db: tuple[str, TcpProxy], payloads: list[dict], models: Models
) -> None:
    db_url, proxy = proxied_db
    spool = tmp_path / "spool"
    service = ServiceProcess(service_env(db_url, spool, models.first), tmp_path / "service.log")
    service.wait_ready()
    load = LoadGenerator(service.url, payloads, threads=4, max_seconds=40).start()
    try:
        wait_for(lambda: load.count() >= 200, 20, "load before the outage")
        proxy.cut()
        time.sleep(4)
        during = load.count()
        proxy.restore()
        wait_for(lambda: load.count() >= during + 300, 20, "load after the outage")
    finally:
        outcomes = load.stop()
    try:
        failures = [o for o in outcomes if o.status != 200]
        assert not failures, f"{len(failures)} failed, e.g. {failures[:3]}"
        assert during > 200, "requests must keep being answered while the database is down"
        wait_for(
            lambda: sum(logged_ids(db_url, load.prefix).values()) >= len(outcomes),
            30,
            "the spooled rows to be replayed",
        )
        assert_logged_exactly_once(db_url, load.prefix, outcomes)
        assert not spool_files(spool)
        assert "spooling to" in service.tail(400)  # the outage really hit the log
    finally:
        service.stop()


def test_database_down_at_start_then_hung_neither_stalls_nor_loses_answers(
    tmp_path: Path, proxied_db: tuple[str, TcpProxy], payloads: list[dict], models: Models
) -> None:
    """Started while the database is down (its table not created yet), the service answers
    from the spool, creates the table and replays once the database answers. Then the
    database hangs (the proxy holds every byte): answers leave after the configured log
    timeout instead of the driver's 10-20 s, and everything is logged exactly once."""
    db_url, proxy = proxied_db
    spool = tmp_path / "spool"
    proxy.cut()
    service = ServiceProcess(
        service_env(db_url, spool, models.first, CREDIT_PREDICTION_LOG_TIMEOUT="0.5"),
        tmp_path / "service.log",
    )
    try:
        service.wait_ready()  # an outage is not a configuration error: still ready
        session = requests.Session()

        def predict(request_id: str, index: int) -> tuple[int, float]:
            started = time.monotonic()
            response = session.post(
                f"{service.url}{routes.PREDICT}",
                json={"data": payloads[index % len(payloads)]},
                headers={"X-Request-ID": request_id},
                timeout=60,
            )
            return response.status_code, time.monotonic() - started

        answered = []
        for number in range(10):
            status, _ = predict(f"start-down-{number}", number)
            assert status == 200
            answered.append(f"start-down-{number}")
        assert spool_files(spool), "answers during the outage must be spooled"

        proxy.restore()
        wait_for(lambda: not spool_files(spool), 30, "the table to be created and replayed")

        proxy.stall()
        waits = []
        for number in range(12):
            status, waited = predict(f"hung-{number}", number)
            assert status == 200
            answered.append(f"hung-{number}")
            waits.append(waited)
        assert max(waits) < 3.0, f"a hung database held answers for {max(waits):.1f} s"

        proxy.resume()
        wait_for(lambda: not spool_files(spool), 60, "the rows spooled while hung to be replayed")
        session.close()
    finally:
        service.stop()
        proxy.resume()
    logged = logged_ids(db_url, "start-down") + logged_ids(db_url, "hung")
    assert sorted(logged) == sorted(answered) and max(logged.values()) == 1
    assert "has not answered for 0.5 s" in service.tail(400)


def test_a_log_database_refusing_the_service_fails_readiness(
    tmp_path: Path, mariadb_url: str, payloads: list[dict], models: Models
) -> None:
    """A wrong password is no outage: /readyz fails and the log says why, while answers go
    on (their rows spooled) and /livez stays up."""
    wrong = make_url(mariadb_url).set(password="not-the-password")
    spool = tmp_path / "spool"
    service = ServiceProcess(
        service_env(wrong.render_as_string(hide_password=False), spool, models.first),
        tmp_path / "service.log",
    )
    try:
        wait_for(lambda: answers(f"{service.url}{routes.LIVEZ}") == 200, 90, "the service to start")
        wait_for(lambda: answers(f"{service.url}{routes.READYZ}") == 503, 15, "/readyz to fail")
        response = requests.post(
            f"{service.url}{routes.PREDICT}", json={"data": payloads[0]}, timeout=30
        )
        assert response.status_code == 200
        assert spool_files(spool)
        output = service.tail(400)
        assert "refuses the service" in output and "Access denied" in output
        assert "not-the-password" not in output
    finally:
        service.stop()


def test_a_full_log_id_column_never_answers_without_a_row(
    tmp_path: Path, mariadb_url: str, payloads: list[dict], models: Models
) -> None:
    """Six /predict with the log's id two below the top of its type: two are answered and
    logged, the rest get 503; none is answered without its row. Every worker then says it
    is not ready, not only the one whose rows were refused (the requests share one
    connection, so one worker takes them all), and every worker is ready again once the
    table is fixed."""
    # The subject is a database that refuses rows, not one too slow to answer: a commit
    # slowed past the default 1 s by a busy disk (the Docker stack test builds images
    # beside the suite in CI) would spool the rows as an outage and answer them all.
    env = service_env(
        mariadb_url, tmp_path / "spool", models.first, CREDIT_PREDICTION_LOG_TIMEOUT="30"
    )
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.wait_ready()
        engine = create_engine(mariadb_url)
        with engine.begin() as connection:
            connection.execute(
                text(f"ALTER TABLE credit_predictions_api_log AUTO_INCREMENT={2**63 - 3}")
            )
        statuses = {}
        with requests.Session() as one_connection:
            for number in range(6):
                request_id = f"full-{number}"
                response = one_connection.post(
                    f"{service.url}{routes.PREDICT}",
                    json={"data": payloads[number]},
                    headers={"X-Request-ID": request_id},
                    timeout=30,
                )
                statuses[request_id] = response.status_code
        # Every prediction gets 503 now: the service says it is not ready (a balancer
        # routes around it), though alive, whichever worker answers /readyz.
        readiness = [answers(f"{service.url}{routes.READYZ}") for _ in range(20)]
        assert set(readiness) == {503}, (readiness, statuses, service.tail(3000))
        assert answers(f"{service.url}{routes.LIVEZ}") == 200
        answered = sorted(request_id for request_id, status in statuses.items() if status == 200)
        assert sorted(logged_ids(mariadb_url, "full")) == answered
        # The operator archives the rows at the top and resets the counter.
        with engine.begin() as connection:
            connection.execute(
                text("DELETE FROM credit_predictions_api_log WHERE id > :low"), {"low": 2**62}
            )
            connection.execute(text("ALTER TABLE credit_predictions_api_log AUTO_INCREMENT=1"))
        engine.dispose()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            readiness = [answers(f"{service.url}{routes.READYZ}") for _ in range(20)]
            if set(readiness) == {200}:
                break
            time.sleep(1)
        assert set(readiness) == {200}, readiness
    finally:
        service.stop()
    assert len(answered) == 3 and set(statuses.values()) == {200, 503}, statuses
    assert "Out of range" in service.tail(400) and "id column is full" in service.tail(400)


def test_a_shadow_whose_rows_the_database_refuses_never_holds_the_champions(
    tmp_path: Path, mariadb_url: str, payloads: list[dict], models: Models
) -> None:
    """A trigger refuses the shadow's rows: before, the log went into outage mode and 2 of
    40 champion rows reached the database in 20 s; now every champion row is committed at
    once (nothing spooled) and the shadow's failures are counted."""
    spool = tmp_path / "spool"
    service = ServiceProcess(service_env(mariadb_url, spool, models.first), tmp_path / "log")
    try:
        service.wait_ready()
        engine = create_engine(mariadb_url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_shadow BEFORE INSERT ON credit_predictions_api_log "
                    "FOR EACH ROW IF NEW.role = 'shadow' THEN "
                    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no shadow rows'; END IF"
                )
            )
        engine.dispose()
        attached = requests.post(
            f"{service.url}{routes.ADMIN_CHALLENGER}",
            json={"tag": models.second, "role": "shadow"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert attached.status_code == 200, attached.text
        for number in range(40):
            response = requests.post(
                f"{service.url}{routes.PREDICT}",
                json={"data": payloads[number]},
                headers={"X-Request-ID": f"beside-shadow-{number}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
        # Answered after its commit or its spooling: with nothing spooled, every row is in.
        assert len(logged_ids(mariadb_url, "beside-shadow")) == 40
        assert not spool_files(spool)
        wait_for(
            lambda: (
                (requests.get(f"{service.url}{routes.METADATA}", timeout=5).json()["challenger"])[
                    "shadow"
                ]["errors"]
                > 0
            ),
            30,
            "the shadow's refused rows to be counted",
        )
        assert answers(f"{service.url}{routes.READYZ}") == 200
    finally:
        service.stop()


def answers(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


# --- 3. hot swap under load --------------------------------------------------------------


def test_ten_reloads_under_load(tmp_path: Path, payloads: list[dict], models: Models) -> None:
    from api.predictor import load_predictor

    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    service = ServiceProcess(
        service_env(db_url, tmp_path / "spool", models.first), tmp_path / "service.log"
    )
    service.wait_ready()
    assert len(worker_pids(service)) >= 2, "the swap must reach every worker"
    bento = requests.get(f"{service.url}{routes.METADATA}", timeout=10).json()["bento_tag"]
    assert bento == bento_tag()  # models are swapped into the running Bento
    load = LoadGenerator(service.url, payloads, threads=3, max_seconds=50).start()
    seen_metadata: set[str] = set()
    try:
        targets = [models.second, models.first] * 5
        for tag in targets:
            time.sleep(0.3)
            answer = requests.post(
                f"{service.url}{routes.ADMIN_RELOAD}",
                json={"tag": tag},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            # Whichever worker answers, it serves the new model once the reload returned.
            versions = {
                requests.get(f"{service.url}{routes.METADATA}", timeout=10).json()["model_version"]
                for _ in range(12)
            }
            assert versions == {tag}
            assert (
                requests.get(f"{service.url}{routes.METADATA}", timeout=10).json()["bento_tag"]
                == bento
            )
            seen_metadata |= versions
        time.sleep(0.3)
    finally:
        outcomes = load.stop()
        service.stop()

    failures = [o for o in outcomes if o.status != 200]
    assert not failures, failures[:3]
    assert len(outcomes) > 200
    predictors = [load_predictor(models.first), load_predictor(models.second)]
    for outcome in outcomes:
        features = {name: payloads[outcome.payload_index][name] for name in MODEL_FEATURES}
        possible = [predictor.predict([features])[0] for predictor in predictors]
        assert any(
            outcome.body["predict"] == p.label
            and outcome.body["confidence"] == pytest.approx(p.confidence, rel=1e-9)
            for p in possible
        ), (outcome, possible)
    engine = create_engine(db_url)
    with engine.connect() as connection:
        versions = Counter(connection.execute(select(log_table.c.model_version)).scalars())
    engine.dispose()
    assert set(versions) == {models.first, models.second}
    assert seen_metadata == {models.first, models.second}


# --- 4. bad input ------------------------------------------------------------------------


def request_bodies(openapi: dict, route: str):
    """Bodies valid against the route's published request schema."""
    body = openapi["paths"][route]["post"]["requestBody"]["content"]["application/json"]
    return from_openapi(body["schema"], openapi["components"])


def test_fuzzed_requests_never_break_the_service(
    tmp_path: Path, payloads: list[dict], models: Models
) -> None:
    from api.predictor import load_predictor

    service = ServiceProcess(
        service_env(
            f"sqlite:///{tmp_path / 'log.db'}",
            tmp_path / "spool",
            models.first,
            CREDIT_API_MAX_BATCH_ROWS="8",
        ),
        tmp_path / "service.log",
    )
    service.wait_ready()
    workers = worker_pids(service)
    session = requests.Session()
    try:
        openapi = session.get(f"{service.url}/docs.json", timeout=10).json()
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
            max_leaves=12,
        )
        valid_row = st.integers(0, len(payloads) - 1).map(payloads.__getitem__)

        def corrupted(row: dict, name: str, value: object) -> dict:
            return {**row, name: value}

        broken_row = st.builds(
            corrupted, valid_row, st.sampled_from(["customer_id", *MODEL_FEATURES]), json_values
        )
        bodies = {
            routes.PREDICT: st.one_of(
                request_bodies(openapi, routes.PREDICT),
                st.builds(lambda row: {"data": row}, broken_row),
                json_values,
            ),
            routes.PREDICT_BATCH: st.one_of(
                request_bodies(openapi, routes.PREDICT_BATCH),
                st.builds(
                    lambda rows: {"data": rows}, st.lists(broken_row | valid_row, max_size=10)
                ),
                json_values,
            ),
        }
        raw = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
        statuses: Counter = Counter()

        def check(route: str, data: bytes, request_id: str | None) -> None:
            headers = {"Content-Type": "application/json"}
            if request_id is not None:
                headers["X-Request-ID"] = request_id
            response = session.post(f"{service.url}{route}", data=data, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            assert response.status_code < 500, (route, data[:300], response.text[:300])
            if response.status_code == 200:
                answers = response.json()
                for answer in answers if isinstance(answers, list) else [answers]:
                    assert answer["predict"] in LABELS and 0 < answer["confidence"] <= 1

        header = st.none() | st.from_regex(r"\A[!-~]{1,60}\Z")
        limits = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}

        def fuzz(route: str) -> None:
            @settings(**limits, max_examples=120)
            @given(body=bodies[route], request_id=header)
            def fuzz_json(body: object, request_id: str | None) -> None:
                check(route, json.dumps(body).encode(), request_id)

            @settings(**limits, max_examples=40)
            @given(data=raw)
            def fuzz_bytes(data: bytes) -> None:
                check(route, data, None)

            fuzz_json()
            fuzz_bytes()

        fuzz(routes.PREDICT)
        fuzz(routes.PREDICT_BATCH)

        assert statuses[200] > 0 and sum(statuses.values()) >= 300, statuses
        # No worker died or was replaced, and the service still answers correctly.
        assert service.process.poll() is None and worker_pids(service) == workers
        answer = session.post(
            f"{service.url}{routes.PREDICT}", json={"data": payloads[0]}, timeout=10
        )
        assert answer.status_code == 200
        features = {name: payloads[0][name] for name in MODEL_FEATURES}
        expected = load_predictor(models.first).predict([features])[0]
        assert answer.json()["predict"] == expected.label
        assert answer.json()["confidence"] == pytest.approx(expected.confidence, rel=1e-9)
    finally:
        session.close()
        service.stop()


def test_absurd_numbers_are_refused_and_implausible_ones_repaired_with_the_mariadb_log(
    tmp_path: Path, mariadb_url: str, payloads: list[dict], models: Models
) -> None:
    """A 309-digit or 20-digit integer is a 400 naming the field, never a 500 (float
    overflow) or a 503 (a log row the database driver cannot encode); an implausible value
    is scored as missing, listed in the answer and logged as null."""
    service = ServiceProcess(
        service_env(mariadb_url, tmp_path / "spool", models.first), tmp_path / "service.log"
    )
    service.wait_ready()
    session = requests.Session()
    try:
        row = next(
            payload
            for payload in payloads
            if all(
                payload[name] is None or low <= payload[name] <= high
                for name, (low, high) in PLAUSIBLE_RANGES.items()
            )
        )
        absurd = {
            "num_of_loan": [int("9" * 309), 100000000000000000000],
            "num_bank_accounts": [-(10**20), 1e20],
            "age": [int("9" * 309)],
            "annual_income": [int("9" * 309), 1e31],
        }
        for field, values in absurd.items():
            for value in values:
                bad = {**row, field: value}
                for route, body in (
                    (routes.PREDICT, {"data": bad}),
                    (routes.PREDICT_BATCH, {"data": [bad]}),
                ):
                    response = session.post(f"{service.url}{route}", json=body, timeout=30)
                    assert response.status_code == 400, (route, field, response.text[:300])
                    assert field in response.text and "or null" in response.text

        answer = session.post(
            f"{service.url}{routes.PREDICT}",
            json={"data": {**row, "num_bank_accounts": 1747, "annual_income": 23_800_000.0}},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["repaired"] == ["annual_income", "num_bank_accounts"]
        engine = create_engine(mariadb_url)
        try:
            with engine.connect() as connection:
                logged = connection.execute(
                    select(log_table.c.features).where(
                        log_table.c.request_id == answer.headers["X-Request-ID"]
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        features = logged if isinstance(logged, dict) else json.loads(logged)
        assert features["num_bank_accounts"] is None and features["annual_income"] is None
        assert features["age"] == row["age"]
    finally:
        session.close()
        service.stop()


# --- the fix to BentoML's per-request timers (no server) ---------------------------------


def test_request_timers_are_cancelled_once_the_response_starts() -> None:
    import asyncio

    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    from api.bentoml_patches import cancel_request_timers

    assert cancel_request_timers()

    async def answer(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def hang(scope, receive, send) -> None:
        await asyncio.sleep(5)

    async def scenario() -> tuple[list, list, list]:
        loop = asyncio.get_running_loop()
        answered, timed_out = [], []

        async def record(into: list):
            async def send(message: dict) -> None:
                into.append(message)

            return send

        middleware = TimeoutMiddleware(answer, timeout=60)
        for _ in range(50):
            await middleware({"type": "http"}, None, await record(answered))
        armed = [handle for handle in loop._scheduled if not handle.cancelled()]
        await TimeoutMiddleware(hang, timeout=0.05)({"type": "http"}, None, await record(timed_out))
        return answered, armed, timed_out

    answered, armed, timed_out = asyncio.run(scenario())
    assert len(answered) == 100
    assert armed == []  # no 60 s timer outlives its request
    assert timed_out[0]["status"] == 504  # the timeout itself still works
