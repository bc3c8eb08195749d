"""What users trust the pipeline for, under faults and repetition.

5. a feature-target materialization killed (SIGKILL) in the middle of its write leaves the
   partition as it was, and the re-run writes exactly the expected rows (real MariaDB);
6. sensors ticking again and again start nothing while nothing changes, and one new model
   starts exactly one deploy (the daemon's run-key rule applied to what the sensor asks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import (
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from bench.sample_requests import load_sample
from credit_platform.core.db import init_schema
from credit_platform.core.feature_target_sql import build_partition, window_start_for
from credit_platform.core.features import MODEL_FEATURES, TARGET
from credit_platform.core.schema import credit_score, credit_score_features
from credit_platform.core.schema import credit_score_features_target as target_table
from credit_platform.core.service_process import ServiceProcess
from credit_platform.core.settings import MODEL_NAME
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.sensors import deploy_sensor, new_data_sensor
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.model_fixtures import save_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPARED = ["id", "customer_id", "date", TARGET, *MODEL_FEATURES]

MATERIALIZE_ONE_PARTITION = """
import sys
from dagster import materialize
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.resources.feature_store import FeatureStoreResource

materialize(
    [credit_score_features_target],
    partition_key=sys.argv[2],
    resources={"feature_store": FeatureStoreResource(url=sys.argv[1])},
    run_config={"ops": {"credit_score_features_target": {"config": {"retention_days": 0}}}},
)
"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def partition_rows(engine: Engine, base_dt: date) -> pd.DataFrame:
    with engine.connect() as connection:
        result = connection.execute(
            select(*[target_table.c[name] for name in COMPARED]).where(
                target_table.c.base_dt == base_dt
            )
        )
        frame = pd.DataFrame(result.fetchall(), columns=COMPARED)
    return frame.sort_values(["id", "customer_id"]).reset_index(drop=True)


def expected_rows(engine: Engine, base_dt: date) -> pd.DataFrame:
    """The partition computed in pandas from the source tables, independently of the SQL."""
    with engine.connect() as connection:
        labels = pd.DataFrame(connection.execute(select(credit_score)).mappings().all())
        features = pd.DataFrame(connection.execute(select(credit_score_features)).mappings().all())
    labels["date"] = pd.to_datetime(labels["date"]).dt.date
    window = labels[(labels["date"] >= window_start_for(base_dt)) & (labels["date"] <= base_dt)]
    joined = window[["id", "customer_id", "date", TARGET]].merge(
        features[["id", "customer_id", *MODEL_FEATURES]], on=["id", "customer_id"]
    )
    return joined[COMPARED].sort_values(["id", "customer_id"]).reset_index(drop=True)


def build_waiting_on_lock(admin: Engine, database: str) -> int | None:
    """The connection id of a feature-target INSERT that has already deleted the old rows
    (inside its transaction) and now waits for a lock, else None."""
    with admin.connect() as connection:
        row = connection.execute(
            text(
                "SELECT p.ID, t.trx_rows_modified, t.trx_state "
                "FROM information_schema.PROCESSLIST p "
                "JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
                "WHERE p.DB = :db AND p.INFO LIKE 'INSERT INTO credit_score_features_target%'"
            ),
            {"db": database},
        ).first()
    if row is not None and row.trx_rows_modified > 0 and row.trx_state == "LOCK WAIT":
        return int(row.ID)
    return None


def connection_gone(admin: Engine, connection_id: int) -> bool:
    with admin.connect() as connection:
        return (
            connection.execute(
                text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"),
                {"id": connection_id},
            ).scalar_one()
            == 0
        )


# --- 5. interrupted pipeline -------------------------------------------------------------


def test_killed_materialization_keeps_the_previous_partition(mariadb_url: str) -> None:
    base_dt = date(2025, 4, 9)
    engine = init_schema(mariadb_url)
    seed_synthetic(engine, customers=40, days=40, start=date(2025, 3, 1), seed=2, progress=False)
    with engine.begin() as connection:
        build_partition(connection, base_dt, retention_days=0)
    before = partition_rows(engine, base_dt)
    assert len(before) > 500

    # New customers' labels arrive in the window: a finished rebuild would differ.
    seed_synthetic(engine, customers=55, days=40, start=date(2025, 3, 1), seed=2, progress=False)
    expected = expected_rows(engine, base_dt)
    assert len(expected) > len(before)

    admin = create_engine(mariadb_url)
    database = make_url(mariadb_url).database
    # Hold a lock on one label row of the window: the build's INSERT ... SELECT must read it
    # and waits, after its DELETE of the old partition already ran in its transaction.
    locker = engine.connect()
    lock = locker.begin()
    locker.execute(
        select(credit_score.c.id).where(credit_score.c.date == base_dt).with_for_update()
    )
    process = subprocess.Popen(
        [sys.executable, "-c", MATERIALIZE_ONE_PARTITION, mariadb_url, base_dt.isoformat()],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        found: list[int] = []
        wait_for(
            lambda: found.append(build_waiting_on_lock(admin, database)) or found[-1] is not None,
            60,
            "the build to be mid-write",
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        lock.rollback()
        locker.close()

    # The server notices the dead client and rolls its transaction back.
    wait_for(lambda: connection_gone(admin, found[-1]), 60, "the killed build's connection to end")
    pd.testing.assert_frame_equal(partition_rows(engine, base_dt), before)

    result = materialize(
        [credit_score_features_target],
        partition_key=base_dt.isoformat(),
        resources={"feature_store": FeatureStoreResource(url=mariadb_url)},
        run_config={"ops": {"credit_score_features_target": {"config": {"retention_days": 0}}}},
    )
    assert result.success
    rebuilt = partition_rows(engine, base_dt)
    pd.testing.assert_frame_equal(rebuilt, expected, check_dtype=False)
    assert not rebuilt.duplicated(["id", "customer_id"]).any()
    admin.dispose()
    engine.dispose()


# --- 6. sensors under repeat -------------------------------------------------------------


def requests_of(result: SensorResult | SkipReason) -> list:
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def test_new_data_sensor_repeats_nothing_and_requests_a_new_day_once(sqlite_url: str) -> None:
    engine = init_schema(sqlite_url)
    seed_synthetic(engine, customers=5, days=10, start=date(2025, 3, 1), seed=1, progress=False)
    resources = {"feature_store": FeatureStoreResource(url=sqlite_url)}
    cursor = None
    with instance_for_test() as instance:

        def ticks(count: int) -> list[str]:
            nonlocal cursor
            keys = []
            for _ in range(count):
                result = new_data_sensor(
                    build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                )
                keys += [request.run_key for request in requests_of(result)]
                cursor = getattr(result, "cursor", None) or cursor
            return keys

        assert ticks(30) == ["ct:2025-03-10"]  # the first tick takes the newest day, once
        seed_synthetic(engine, customers=5, days=11, start=date(2025, 3, 1), seed=1, progress=False)
        assert ticks(30) == ["ct:2025-03-11"]
    engine.dispose()


def test_deploy_sensor_repeats_nothing_and_deploys_a_new_model_once(
    tmp_path: Path, kaggle_sample: Path
) -> None:
    sample = load_sample(kaggle_sample, rows=1500)
    served = save_tiny_model(sample, partition="2025-03-09", iterations=10, seed=5)
    mlflow_tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="credit_score_sensor_repeat",
        artifact_location=(tmp_path / "mlartifacts").as_uri(),
    )
    client = mlflow_tracking.client()
    client.create_registered_model(MODEL_NAME)

    def pass_check(tag: str, partition: str) -> None:
        """What a model that passed its quality check leaves in the registry."""
        version = client.create_model_version(
            MODEL_NAME,
            source=(tmp_path / "mlartifacts").as_uri(),
            tags={"bento_tag": tag, "partition": partition, "quality_check": "passed"},
        )
        mlflow_tracking.set_champion(version.version)

    pass_check(served, "2025-03-09")
    token = "sensor-repeat-token"
    service = ServiceProcess(
        {
            "FEATURE_STORE_URL": f"sqlite:///{tmp_path / 'log.db'}",
            "CREDIT_PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
            "CREDIT_API_MODEL_TAG": served,
            "CREDIT_API_ADMIN_TOKEN": token,
            "CREDIT_API_WORKERS": "1",
        },
        tmp_path / "service.log",
    )
    try:
        service.wait_ready()
        prediction_service = PredictionServiceResource(api_url=service.url, admin_token=token)
        resources = {"mlflow_tracking": mlflow_tracking, "prediction_service": prediction_service}
        launched: list[str] = []
        cursor = None
        with instance_for_test() as instance:

            def ticks(count: int) -> None:
                """Evaluate the sensor `count` times; launch each run key once, as the
                daemon does, the launch being the deploy itself (a hot reload)."""
                nonlocal cursor
                for _ in range(count):
                    result = deploy_sensor(
                        build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                    )
                    cursor = getattr(result, "cursor", None) or cursor
                    for request in requests_of(result):
                        if request.run_key in launched:
                            continue
                        launched.append(request.run_key)
                        prediction_service.client().reload(
                            request.tags["credit_platform/model_tag"], token
                        )

            ticks(25)
            assert launched == []  # the champion is what the service serves

            newer = save_tiny_model(sample, partition="2025-03-10", iterations=12, seed=6)
            pass_check(newer, "2025-03-10")
            ticks(25)
            assert launched == [f"deploy:{newer}"]
            assert prediction_service.client().reported_model().tag == newer
    finally:
        service.stop()
