"""Test helpers for the training assets: synthetic partitions, resources, a tiny grid.

Labels follow a score built from a few features (plus some noise), so a model trained on
them reaches a meaningful validation accuracy in a handful of boosting rounds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import Pool
from dagster import FilesystemIOManager, materialize
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from credit_platform.core.db import init_schema
from credit_platform.core.features import (
    CREDIT_MIX_VALUES,
    FEATURES,
    LOAN_TYPES,
    MODEL_FEATURES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    PAYMENT_OF_MIN_AMOUNT_VALUES,
    TARGET,
    Feature,
)
from credit_platform.core.local_service import stop_service
from credit_platform.core.model_input import fit_scalers, prepare_model_input
from credit_platform.core.schema import credit_score_features_target
from credit_platform.core.service_process import free_port
from credit_platform.core.settings import ADMIN_TOKEN_ENV
from credit_platform.core.training import FitSettings, make_pool
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, TRAIN, VALID, grouped_split
from credit_platform.defs.checks import credit_score_model_quality
from credit_platform.defs.io_managers import PartitionedParquetIOManager
from credit_platform.defs.jobs import CONTINUOUS_TRAINING_ASSETS
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.model_retention import ModelRetentionResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.ingest.synthetic import seed_synthetic


def declared_column(feature: Feature, rng: np.random.Generator, rows: int) -> list:
    """Random values of a declared feature the fixture's own columns do not cover: evenly
    over the range real data holds, or evenly among the values (no value in a listing)."""
    if feature.numeric:
        low, high = feature.typical_range
        if feature.kind == "integer":
            return rng.integers(int(low), int(high) + 1, rows).tolist()
        return rng.uniform(low, high, rows).round(2).tolist()
    if feature.listing:
        return [None] * rows
    return rng.choice(feature.values, rows).tolist()


def synthetic_partition(base_dt: date, rows: int = 300, seed: int = 7) -> pd.DataFrame:
    """`rows` labelled rows for base_dt, with every table column, a few values missing."""
    rng = np.random.default_rng(seed)
    delay = rng.integers(0, 60, rows)
    delayed_payments = rng.integers(0, 25, rows)
    credit_mix = rng.choice(CREDIT_MIX_VALUES, rows)
    debt = rng.gamma(2.0, 700.0, rows)
    score = (
        delay / 20
        + delayed_payments / 8
        + debt / 1500
        + np.select([credit_mix == "Good", credit_mix == "Bad"], [-1.5, 1.5], 0.0)
        + rng.normal(0.0, 0.35, rows)
    )
    low, high = np.quantile(score, [0.3, 0.75])
    label = np.where(score < low, "Good", np.where(score < high, "Standard", "Poor"))
    frame = pd.DataFrame(
        {
            "base_dt": base_dt,
            "id": [f"0x{index:05x}" for index in range(rows)],
            "customer_id": [f"CUS_0x{index % (rows // 2 or 1):04x}" for index in range(rows)],
            "date": [base_dt - timedelta(days=int(offset)) for offset in rng.integers(0, 28, rows)],
            "age": rng.integers(18, 70, rows),
            "occupation": rng.choice(OCCUPATION_VALUES, rows),
            "annual_income": rng.gamma(2.0, 25_000.0, rows),
            "monthly_inhand_salary": rng.gamma(2.0, 2_000.0, rows),
            "num_bank_accounts": rng.integers(0, 11, rows),
            "num_credit_card": rng.integers(0, 11, rows),
            "interest_rate": rng.integers(1, 34, rows),
            "num_of_loan": rng.integers(0, 9, rows),
            "type_of_loan": [
                ", ".join(rng.choice(LOAN_TYPES, int(count), replace=False))
                for count in rng.integers(1, 4, rows)
            ],
            "delay_from_due_date": delay,
            "num_of_delayed_payment": delayed_payments,
            "changed_credit_limit": rng.normal(10.0, 6.0, rows),
            "num_credit_inquiries": rng.integers(0, 17, rows),
            "credit_mix": credit_mix,
            "outstanding_debt": debt,
            "credit_utilization_ratio": rng.uniform(20.0, 45.0, rows),
            "credit_history_age": rng.integers(12, 400, rows),
            "payment_of_min_amount": rng.choice(PAYMENT_OF_MIN_AMOUNT_VALUES, rows),
            "total_emi_per_month": rng.gamma(2.0, 60.0, rows),
            "amount_invested_monthly": rng.gamma(2.0, 100.0, rows),
            "payment_behaviour": rng.choice(PAYMENT_BEHAVIOUR_VALUES, rows),
            "monthly_balance": rng.normal(400.0, 150.0, rows),
            "credit_score": label,
        }
    )
    # Declared features beyond the ones above follow the declaration (from a generator of
    # their own, so the columns above stay the same whatever is declared).
    extra = np.random.default_rng(seed + 1)
    for feature in FEATURES:
        if feature.name not in frame:
            frame.insert(
                len(frame.columns) - 1, feature.name, declared_column(feature, extra, rows)
            )
    # Dirty data the store really holds: a few missing numbers and categories.
    frame = frame.astype({name: "object" for name in MODEL_FEATURES})
    for name in ("annual_income", "num_of_delayed_payment", "occupation", "type_of_loan"):
        frame.loc[rng.random(rows) < 0.05, name] = None
    return frame


def insert_partition(engine: Engine, frame: pd.DataFrame) -> None:
    """Write the rows with the schema's table (the store the asset reads from)."""
    records = [
        {key: _plain(value) for key, value in record.items()}
        for record in frame.to_dict(orient="records")
    ]
    with engine.begin() as connection:
        connection.execute(insert(credit_score_features_target), records)


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def training_resources(tmp_path: Path, feature_store_url: str) -> dict:
    """The resources the training assets need, all under tmp_path except the BentoML store
    (pinned per test session by conftest)."""
    return {
        "feature_store": FeatureStoreResource(url=feature_store_url),
        "prediction_service": PredictionServiceResource(),
        "parquet_io_manager": PartitionedParquetIOManager(base_dir=str(tmp_path / "storage")),
        "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "dagster_storage")),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            experiment_name="credit_score_tests",
            artifact_location=(tmp_path / "mlartifacts").as_uri(),
        ),
        # the session's BentoML store holds every module's models: a deploy deletes none
        # unless its test asks (credit_platform_tests/defs/test_retention.py)
        "model_retention": ModelRetentionResource(keep_last="0"),
        "fairness_policy": FairnessPolicyResource(),
    }


@contextmanager
def deploy_platform(tmp_path: Path, token: str) -> Iterator[tuple[dict, int]]:
    """(resources, port) for deploy tests: a seeded SQLite store, the training resources,
    and a prediction service resource on a free port where nothing runs yet, whose admin
    token the service a deploy starts inherits. The service is stopped at the end."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=50, days=36, start=date(2025, 1, 1), seed=5, progress=False)
    engine.dispose()
    port = free_port()
    resources = training_resources(tmp_path, url)
    resources["prediction_service"] = PredictionServiceResource(
        api_url=f"http://127.0.0.1:{port}", admin_token=token, timeout_seconds=2.0
    )
    previous_token = os.environ.get(ADMIN_TOKEN_ENV)
    os.environ[ADMIN_TOKEN_ENV] = token
    try:
        yield resources, port
    finally:
        stop_service(port)
        if previous_token is None:
            os.environ.pop(ADMIN_TOKEN_ENV, None)
        else:
            os.environ[ADMIN_TOKEN_ENV] = previous_token


def tiny_grid(iterations: int = 30) -> dict:
    """Run config for a two-trial grid: seconds instead of the seed grid's minutes."""
    return {
        "depths": [4],
        "rsms": [0.5, 1.0],
        "l2_leaf_regs": [3.0],
        "iterations": iterations,
        "thread_count": 2,
    }


def train_and_check(resources: dict, instance, partition: str, grid: dict, min_accuracy: float):
    """The continuous-training assets and the blocking quality check for one partition, in
    `instance`, judged with `min_accuracy` and no champion tolerance."""
    return materialize(
        [*CONTINUOUS_TRAINING_ASSETS, credit_score_model_quality],
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config={
            "ops": {
                "credit_score_model": {"config": grid},
                "credit_score_model_credit_score_model_quality": {
                    "config": {"min_accuracy": min_accuracy, "tolerance": 1.0}
                },
            }
        },
    )


# Ages drawn evenly from the four default bands (under 25, 25-40, 40-60, 60 and over), so
# every band has rows enough to be judged by the fairness rules.
AGE_BANDS_DRAWN = ((18, 25), (25, 40), (40, 60), (60, 76))


def age_banded_partition(
    base_dt: date, rows: int, seed: int, *, biased_band: tuple[int, int] | None = None
) -> pd.DataFrame:
    """`synthetic_partition` with ages spread evenly over the age bands; with
    `biased_band` (low, high), a biased label rule for that band: none of its customers is
    graded Good (their Good labels become Standard), whatever their features say."""
    frame = synthetic_partition(base_dt, rows=rows, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    bands = rng.integers(0, len(AGE_BANDS_DRAWN), rows)
    frame["age"] = [int(rng.integers(*AGE_BANDS_DRAWN[band])) for band in bands]
    if biased_band is not None:
        low, high = biased_band
        inside = (frame["age"] >= low) & (frame["age"] < high)
        frame.loc[inside & (frame["credit_score"] == "Good"), "credit_score"] = "Standard"
    return frame


# MultiClass, fit as training fits it, with a strong prior correction (decision offsets).
STRONG_PRIOR_CORRECTION = FitSettings(
    iterations=300,
    learning_rate=0.1,
    early_stopping_rounds=40,
    loss_function="MultiClass",
    eval_metric="MultiClass",
    thread_count=2,
    class_offset_strength=2.0,
)


def split_pools(
    rows: int = 3000, seed: int = 11
) -> tuple[dict[str, pd.DataFrame], dict[str, Pool], dict]:
    """A synthetic partition split by customer into train, valid and test, the scalers fit
    on train, and each side's CatBoost pool with the derived features."""
    split = grouped_split(
        synthetic_partition(date(2025, 2, 1), rows=rows, seed=seed), valid_fraction=0.2, seed=42
    )
    sides = {side: split[split[SPLIT_COLUMN] == side] for side in (TRAIN, VALID, TEST)}
    scalers = fit_scalers(sides[TRAIN])
    pools = {
        side: make_pool(prepare_model_input(frame, scalers, derived=True), frame[TARGET])
        for side, frame in sides.items()
    }
    return sides, pools, scalers
