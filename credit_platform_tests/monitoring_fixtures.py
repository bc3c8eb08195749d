"""Test helpers for model monitoring: a feature store with synthetic customers, a served
model trained on one of its partitions, and prediction-log rows written by the service's
own log writer (`api.prediction_log.PredictionLogger`).

Predictions are chosen, not scored, so the live accuracy a test expects is known exactly:
each customer's label of the logged day is the label that judges it (the first label in the
join window), and a row is made right or wrong against it.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from api.prediction_log import PredictionLogger, PredictionLogRow
from credit_platform.core.db import init_schema
from credit_platform.core.features import LABELS, MODEL_FEATURES, NUMERIC_FEATURES, TARGET
from credit_platform.core.model_input import prepare_model_input
from credit_platform.core.model_store import load_model_bundle
from credit_platform.core.monitoring_store import read_training_rows
from credit_platform.core.schema import credit_score, credit_score_features
from credit_platform.core.training import make_pool, predict_labels
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.model_fixtures import save_tiny_model

GOOD_DAY = date(2025, 2, 3)  # requests like the training window, the model's own answers
BAD_DAY = date(2025, 2, 4)  # shifted features, every prediction wrong
GONE = "credit_score_classifier:no_longer_stored"  # a model version not in the store
SEED_START = date(2025, 1, 1)
SEED_DAYS = 40  # labels up to 2025-02-09
TRAINING_PARTITION = "2025-01-31"


def day_rows(engine, day: date) -> pd.DataFrame:
    """Every customer's features and label of `day` (customer_id, the model features, label)."""
    feats, labels = credit_score_features, credit_score
    statement = (
        select(feats.c.customer_id, *[feats.c[name] for name in MODEL_FEATURES], labels.c[TARGET])
        .select_from(feats.join(labels, feats.c.id == labels.c.id))
        .where(feats.c.date == day)
        .order_by(feats.c.customer_id)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return pd.DataFrame(rows, columns=["customer_id", *MODEL_FEATURES, TARGET])


def wrong_label(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def log_rows(
    frame: pd.DataFrame,
    *,
    day: date,
    model_version: str,
    role: str = "champion",
    right: bool = True,
    prefix: str = "r",
    shift: dict[str, float] | None = None,
    hour: int = 12,
    predictions: list[str] | None = None,
) -> list[PredictionLogRow]:
    """One log row per customer of `frame`, created on `day`: the prediction is the given
    one, else the customer's label (`right`) or another one; `shift` adds to numeric
    features (drift)."""
    rows = []
    at = datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)
    for position, record in enumerate(frame.to_dict(orient="records")):
        features = {name: _plain(record[name]) for name in MODEL_FEATURES}
        for name, delta in (shift or {}).items():
            if features[name] is not None:
                features[name] = features[name] + delta
        label = record[TARGET]
        if predictions is not None:
            answer = predictions[position]
        else:
            answer = label if right else wrong_label(label)
        rows.append(
            PredictionLogRow(
                request_id=f"{prefix}-{day.isoformat()}-{position}",
                customer_id=record["customer_id"],
                features=features,
                prediction=answer,
                confidence=0.7,
                elapsed_ms=5.0 + position % 20,
                model_version=model_version,
                created_at=at + timedelta(seconds=position),
                role=role,
            )
        )
    return rows


def write_log(url: str, spool_dir: Path, rows: list[PredictionLogRow]) -> None:
    """Write rows with the service's log writer and wait until they are committed."""
    logger = PredictionLogger(url, spool_dir)
    try:
        logger.write(rows)
    finally:
        logger.close()


def null_some_features(rows: list[PredictionLogRow], every: int = 25) -> None:
    """Make two features missing on every `every`-th row, as repaired requests log them."""
    for row in rows[::every]:
        row.features = {**row.features, "monthly_balance": None, "credit_mix": None}


def monitoring_resources(url: str, **policy: str) -> dict[str, Any]:
    settings = {"min_labelled": "20", "retrain_cooldown_seconds": "3600", **policy}
    return {
        "feature_store": FeatureStoreResource(url=url),
        "monitoring_policy": MonitoringPolicyResource(**settings),
        "fairness_policy": FairnessPolicyResource(),
    }


def train_served_model(engine, partition: str = TRAINING_PARTITION) -> str:
    """A tiny real model trained on the store's rows of `partition` (as the pipeline would
    train it), saved to the session's BentoML store; returns its tag."""
    frame = read_training_rows(engine, date.fromisoformat(partition))
    for name in NUMERIC_FEATURES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return save_tiny_model(frame.sample(frac=1.0, random_state=0), partition=partition)


def model_predictions(tag: str, frame: pd.DataFrame) -> list[str]:
    """What model `tag` answers for the rows of `frame` (as the service scores them)."""
    bundle = load_model_bundle(tag)
    typed = frame.copy()
    for name in NUMERIC_FEATURES:
        typed[name] = pd.to_numeric(typed[name], errors="coerce").astype("float64")
    pool = make_pool(prepare_model_input(typed, bundle.scalers))
    return [str(label) for label in predict_labels(bundle.model, pool)]


def seed_store(url: str, customers: int = 300):
    engine = init_schema(url)
    seed_synthetic(
        engine, customers=customers, days=SEED_DAYS, start=SEED_START, seed=3, progress=False
    )
    return engine


def write_good_and_bad_days(url: str, tmp_path: Path, served_tag: str) -> float:
    """The good day (the model's own answers, a few repaired fields, and a shadow model no
    longer in the store) and the bad day (shifted features, wrong answers); returns the
    good day's true accuracy."""
    engine = init_schema(url)
    try:
        today = day_rows(engine, GOOD_DAY)
        answers = model_predictions(served_tag, today)
        good = log_rows(today, day=GOOD_DAY, model_version=served_tag, predictions=answers)
        null_some_features(good)
        shadow = log_rows(
            today.iloc[:40],
            day=GOOD_DAY,
            model_version=GONE,
            role="shadow",
            right=False,
            prefix="s",
        )
        bad = log_rows(
            day_rows(engine, BAD_DAY),
            day=BAD_DAY,
            model_version=served_tag,
            right=False,
            shift={"age": 25.0, "outstanding_debt": 3000.0, "interest_rate": 20.0},
        )
    finally:
        engine.dispose()
    write_log(url, tmp_path / "spool", good + shadow + bad)
    return float((pd.Series(answers) == today[TARGET].to_numpy()).mean())
