"""`credit-platform simulate` against a real prediction service on a free port: every
request is sent once and logged once, labels lag one simulated day, and a rerun adds
nothing."""

import re
from collections import Counter
from datetime import date

import pytest
from sqlalchemy import func, select

from bench.sample_requests import load_sample
from credit_platform.cli.main import main
from credit_platform.cli.simulate import drift_start, run_simulation, simulated_days
from credit_platform.core import settings
from credit_platform.core.db import init_schema
from credit_platform.core.schema import (
    credit_predictions_api_log,
    credit_score,
    credit_score_features,
)
from credit_platform.core.service_process import ServiceProcess
from credit_platform.core.simulation_ids import PREFIX, simulation_request_id
from credit_platform.ingest.synthetic import Drift
from credit_platform_tests.model_fixtures import save_tiny_model

CUSTOMERS = 30
END = date(2025, 6, 3)
DAYS = simulated_days(3, END)  # 2025-06-01 .. 2025-06-03
SEED = 9
# "sim<seed>-<YYYYMMDD>-<chunk>", and "#<position>" for a batch's row.
SIMULATION_ID = re.compile(rf"^{PREFIX}(\d+)-(\d{{8}})-(\d+)(?:#\d+)?$")


def simulated_day(request_id: str) -> date | None:
    """The simulated day a logged request id names; None for ids no simulation sent."""
    match = SIMULATION_ID.match(request_id)
    if match is None:
        return None
    stamp = match.group(2)
    return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))


@pytest.fixture(scope="module")
def service(kaggle_sample, tmp_path_factory):
    """A prediction service whose log is the simulation's feature store (as deployed)."""
    workdir = tmp_path_factory.mktemp("simulate")
    url = f"sqlite:///{workdir / 'store.db'}"
    init_schema(url).dispose()
    tag = save_tiny_model(load_sample(kaggle_sample, rows=600), iterations=10, depth=3)
    process = ServiceProcess(
        {
            settings.FEATURE_STORE_URL_ENV: url,
            settings.PREDICTION_SPOOL_DIR_ENV: str(workdir / "spool"),
            settings.API_MODEL_TAG_ENV: tag,
            settings.API_WORKERS_ENV: "1",
            settings.ADMIN_TOKEN_ENV: "simulate-test-token",
        },
        workdir / "service.log",
    )
    try:
        process.wait_ready()
        yield process, url
    finally:
        process.stop()


def _label_days(connection) -> Counter:
    rows = connection.execute(
        select(credit_score.c.date, func.count()).group_by(credit_score.c.date)
    ).all()
    return Counter({date.fromisoformat(str(day)): count for day, count in rows})


def _logged(connection, prefix: str) -> list[tuple[str, str]]:
    log = credit_predictions_api_log
    return connection.execute(
        select(log.c.request_id, log.c.customer_id).where(log.c.request_id.like(f"{prefix}%"))
    ).all()


def test_simulation_sends_each_row_once_and_labels_lag_a_day(service):
    process, url = service
    engine = init_schema(url)
    seen_labels: dict[date, Counter] = {}

    def after_day(report) -> None:
        with engine.connect() as connection:
            seen_labels[report.day] = _label_days(connection)

    try:
        reports = run_simulation(
            engine,
            process.url,
            customers=CUSTOMERS,
            days=3,
            end=END,
            seed=SEED,
            drift=Drift("occupation", DAYS[1]),
            chunk_rows=12,
            echo=lambda line: None,
            after_day=after_day,
        )
        assert [report.day for report in reports] == DAYS
        assert [report.drifted for report in reports] == [False, True, True]
        # Labels of a day arrive only once the simulation has reached the next day.
        assert set(seen_labels[DAYS[0]]) == set()
        assert set(seen_labels[DAYS[1]]) == {DAYS[0]}
        assert set(seen_labels[DAYS[2]]) == {DAYS[0], DAYS[1]}
        with engine.connect() as connection:
            features = connection.execute(
                select(credit_score_features.c.date, credit_score_features.c.customer_id)
            ).all()
            logged = _logged(connection, f"sim{SEED}-")
            labels = _label_days(connection)
        assert labels == Counter({day: reports[n].feature_rows for n, day in enumerate(DAYS[:2])})
        # Every feature row was sent once and is in the log once, under its day's ids.
        expected = Counter((date.fromisoformat(str(day)), customer) for day, customer in features)
        assert sum(report.rows_sent for report in reports) == len(features) > 2.5 * CUSTOMERS
        assert Counter((simulated_day(rid), customer) for rid, customer in logged) == expected
        assert len({rid for rid, _ in logged}) == len(logged)
        # Each simulated day's log rows are dated that day, as monitoring reads the log.
        log = credit_predictions_api_log
        with engine.connect() as connection:
            stamps = connection.execute(select(log.c.request_id, log.c.created_at)).all()
        assert {(simulated_day(rid), stamp.date()) for rid, stamp in stamps} == {
            (day, day) for day in DAYS
        }
        assert [report.log_rows_dated for report in reports] == [
            report.rows_sent for report in reports
        ]
        assert reports[0].request_ids[:2] == [
            simulation_request_id(SEED, DAYS[0], 0),
            simulation_request_id(SEED, DAYS[0], 1),
        ]
        assert all(sum(report.predictions.values()) == report.rows_sent for report in reports)

        # The same simulation again: nothing new is stored or logged.
        again = run_simulation(
            engine,
            process.url,
            customers=CUSTOMERS,
            days=3,
            end=END,
            seed=SEED,
            drift=Drift("occupation", DAYS[1]),
            chunk_rows=12,
            echo=lambda line: None,
        )
        assert [report.features_written for report in again] == [0, 0, 0]
        assert [report.labels_written for report in again] == [0, 0, 0]
        with engine.connect() as connection:
            assert len(_logged(connection, f"sim{SEED}-")) == len(logged)
    finally:
        engine.dispose()


def test_the_command_prints_each_day(service, cli_runner):
    process, url = service
    result = cli_runner.invoke(
        main,
        [
            "simulate",
            "--days=2",
            "--customers=5",
            "--end=2025-07-02",
            "--seed=11",
            "--drift-from=1",
            "--drift-kind=income",
            f"--api-url={process.url}",
            f"--db-url={url}",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "income drift from 2025-07-02" in lines[0]
    assert lines[1].startswith("2025-07-01: features 5 (5 new), sent 5 rows in 1 request(s)")
    assert "no labels due yet" in lines[1]
    assert lines[2].startswith("2025-07-02 (drift): features 5")
    assert "labels of 2025-07-01: 5 written" in lines[2]
    assert "labels of 2025-07-02 are due tomorrow" in lines[3]


def test_a_refused_request_stops_the_simulation_naming_it(service, cli_runner):
    """The same seed and days with another drift: the service refuses the changed bodies."""
    process, url = service
    common = [
        "simulate",
        "--days=1",
        "--customers=4",
        "--end=2025-08-01",
        "--seed=12",
        f"--api-url={process.url}",
        f"--db-url={url}",
    ]
    assert cli_runner.invoke(main, common).exit_code == 0
    result = cli_runner.invoke(main, [*common, "--drift-from=0", "--drift-kind=income"])
    assert result.exit_code == 1
    assert "sim12-20250801-00000" in result.output and "409" in result.output


def test_drift_from_takes_an_offset_or_a_date_inside_the_days():
    assert drift_start("0", DAYS) == DAYS[0]
    assert drift_start("2", DAYS) == DAYS[2]
    assert drift_start("2025-06-02", DAYS) == DAYS[1]
    assert drift_start(None, DAYS) is None
    for bad in ("3", "-1", "2025-05-31", "tuesday"):
        with pytest.raises(Exception, match="--drift-from"):
            drift_start(bad, DAYS)
