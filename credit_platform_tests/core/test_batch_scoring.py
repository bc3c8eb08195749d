"""Batch scoring of one day: the same answers as the prediction API, whole customers per
chunk, the day replaced in one transaction, and clear refusals of bad input."""

import threading
from dataclasses import replace
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import func, insert, select

from api.predictor import Predictor
from bench.sample_requests import load_sample
from credit_platform.core import batch_scoring
from credit_platform.core.batch_scoring import (
    NoFeaturesForDay,
    ServedModelRecord,
    read_feature_chunks,
    score_day,
    served_on,
)
from credit_platform.core.db import init_schema, make_engine
from credit_platform.core.features import LABELS, MODEL_FEATURES
from credit_platform.core.model_store import load_model_bundle
from credit_platform.core.schema import (
    PREDICTION_CONFIDENCE_COLUMNS,
    credit_score_features,
    credit_score_predictions,
)
from credit_platform.ingest.kaggle import load_kaggle_csv
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.json_lines_fixtures import record_parses
from credit_platform_tests.legacy_stores import make_release_database
from credit_platform_tests.model_fixtures import save_tiny_model

DAY_ONE, DAY_TWO = date(2025, 3, 1), date(2025, 3, 2)
CUSTOMERS = 45


@pytest.fixture(scope="module")
def models(kaggle_sample):
    """Two tiny real models of different seeds, loaded from the BentoML store."""
    sample = load_sample(kaggle_sample, rows=600)
    first = save_tiny_model(sample, partition="2025-02-27", iterations=12, seed=1)
    second = save_tiny_model(sample, partition="2025-02-28", iterations=12, seed=2)
    return load_model_bundle(first), load_model_bundle(second)


@pytest.fixture
def store(store_url):
    engine = init_schema(store_url)
    seed_synthetic(engine, customers=CUSTOMERS, days=2, start=DAY_ONE, seed=3, progress=False)
    try:
        yield engine
    finally:
        engine.dispose()


def _predictions(engine, day: date) -> dict[str, dict]:
    table = credit_score_predictions
    with engine.connect() as connection:
        rows = connection.execute(select(table).where(table.c.score_dt == day)).mappings()
        return {row["customer_id"]: dict(row) for row in rows}


def _feature_rows(engine, day: date) -> dict[str, dict]:
    table = credit_score_features
    with engine.connect() as connection:
        rows = connection.execute(
            select(table).where(table.c.date == day).order_by(table.c.id)
        ).mappings()
        return {row["customer_id"]: dict(row) for row in rows}


def test_served_on_is_the_last_deployment_begun_before_the_day_ended():
    first = ServedModelRecord("m:a", datetime(2025, 3, 1, 9, tzinfo=UTC))
    second = ServedModelRecord("m:b", datetime(2025, 3, 2, 23, 59, tzinfo=UTC))
    third = ServedModelRecord("m:c", datetime(2025, 3, 3, 0, 0, tzinfo=UTC))
    deployments = [third, second, first]
    assert served_on(date(2025, 2, 28), deployments) is None
    assert served_on(date(2025, 3, 1), deployments) == first
    assert served_on(date(2025, 3, 2), deployments) == second  # deployed late that day
    assert served_on(date(2025, 3, 3), deployments) == third  # began at midnight


def test_scores_every_customer_of_the_day_as_the_api_would(store, models):
    bundle, _ = models
    with store.begin() as connection:
        result = score_day(connection, DAY_ONE, bundle, chunk_rows=7)
    features = _feature_rows(store, DAY_ONE)
    written = _predictions(store, DAY_ONE)
    assert result.rows == len(written) == len(features) > 0
    assert set(written) == set(features)
    assert not _predictions(store, DAY_TWO)
    predictor = Predictor(bundle)
    customers = sorted(features)
    answers = predictor.predict(
        [{name: features[c][name] for name in MODEL_FEATURES} for c in customers]
    )
    for customer, answer in zip(customers, answers, strict=True):
        row = written[customer]
        assert row["prediction"] == answer.label
        assert row[PREDICTION_CONFIDENCE_COLUMNS[answer.label]] == pytest.approx(
            answer.confidence, abs=1e-9
        )
        assert row["model_version"] == bundle.tag
        assert all(0.0 <= row[column] <= 1.0 for column in PREDICTION_CONFIDENCE_COLUMNS.values())
    assert sum(result.label_counts.values()) == result.rows
    assert set(result.label_counts) <= set(LABELS)


def test_a_customer_with_two_rows_on_the_day_is_scored_once_on_the_newest(store, models):
    bundle, _ = models
    features = _feature_rows(store, DAY_ONE)
    customer = sorted(features)[3]
    extra = {**features[customer], "id": features[customer]["id"] + "z", "age": 99}
    with store.begin() as connection:
        connection.execute(insert(credit_score_features), [extra])
    with store.connect() as connection:
        chunks = list(read_feature_chunks(connection, DAY_ONE, chunk_rows=4))
    # Whole customers per chunk: the customer's two rows arrive together.
    holding = [chunk for chunk in chunks if customer in set(chunk["customer_id"])]
    assert len(holding) == 1 and (holding[0]["customer_id"] == customer).sum() == 2
    assert sum(len(chunk) for chunk in chunks) == len(features) + 1
    with store.begin() as connection:
        result = score_day(connection, DAY_ONE, bundle, chunk_rows=4)
    assert result.duplicate_feature_rows == 1
    assert result.rows == len(features)
    expected = Predictor(bundle).predict([{name: extra[name] for name in MODEL_FEATURES}])[0]
    assert _predictions(store, DAY_ONE)[customer]["prediction"] == expected.label


def test_rescoring_replaces_the_day_only(store, models):
    first, second = models
    with store.begin() as connection:
        score_day(connection, DAY_ONE, first)
        score_day(connection, DAY_TWO, first)
    with store.begin() as connection:
        again = score_day(connection, DAY_ONE, second)
    assert again.replaced_rows == again.rows
    assert {row["model_version"] for row in _predictions(store, DAY_ONE).values()} == {second.tag}
    assert {row["model_version"] for row in _predictions(store, DAY_TWO).values()} == {first.tag}
    with store.connect() as connection:
        total = connection.execute(
            select(func.count()).select_from(credit_score_predictions)
        ).scalar_one()
    assert total == 2 * again.rows


def test_a_day_without_features_fails_naming_it_and_writes_nothing(store, models):
    bundle, _ = models
    with store.begin() as connection:
        score_day(connection, DAY_ONE, bundle)
    before = _predictions(store, DAY_ONE)
    with pytest.raises(NoFeaturesForDay, match="2025-03-05"), store.begin() as connection:
        score_day(connection, date(2025, 3, 5), bundle)
    assert _predictions(store, DAY_ONE) == before


class _FailsOnSecondCall:
    """A real model that breaks after scoring one chunk (a worker killed mid-way)."""

    def __init__(self, model) -> None:
        self._model = model
        self.classes_ = model.classes_
        self.calls = 0

    def predict_proba(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("scoring broke on the second chunk")
        return self._model.predict_proba(*args, **kwargs)


def test_a_failure_part_way_keeps_the_previous_predictions(store, models):
    first, second = models
    with store.begin() as connection:
        score_day(connection, DAY_ONE, first)
    before = _predictions(store, DAY_ONE)
    broken = replace(second, model=_FailsOnSecondCall(second.model))
    with pytest.raises(RuntimeError, match="second chunk") as failure, store.begin() as connection:
        score_day(connection, DAY_ONE, broken, chunk_rows=10)
    assert _predictions(store, DAY_ONE) == before
    # the failure stopped the read-ahead (MariaDB) at once, though its traceback, which
    # holds the scoring's frame, is still alive: no reader keeps a connection and a snapshot
    assert failure.value is not None
    assert not [thread for thread in threading.enumerate() if thread.name == "prefetch-reader"]


def test_a_store_made_before_the_scoring_index_gets_it(store_url):
    """Stores created before batch scoring (and before migrations: the seed release's tables)
    lack the (date, customer_id) index it reads by; opening them adds it."""
    from sqlalchemy import inspect

    make_release_database(store_url, "seed_release")
    engine = make_engine(store_url)
    try:
        names = {index["name"] for index in inspect(engine).get_indexes("credit_score_features")}
        assert "ix_credit_score_features_date_customer" not in names
    finally:
        engine.dispose()
    engine = init_schema(store_url)
    try:
        names = {index["name"] for index in inspect(engine).get_indexes("credit_score_features")}
        assert "ix_credit_score_features_date_customer" in names
    finally:
        engine.dispose()


def test_customer_ids_differing_only_in_case_are_paged_and_scored_apart(store, models):
    """Ids differing only in case or by a trailing space ("CASE_a", "case_a", "Case_A",
    "case_a ", ...) are different customers: keyset pages over customer_id (read ahead on a
    thread on MariaDB) return each one's rows once, whatever page they straddle, and the day
    gets a prediction for each (MariaDB once compared them case-insensitively: one key, and
    `customer_id > :after` skipped the others; utf8mb4_bin would still pad the space)."""
    bundle, _ = models
    features = _feature_rows(store, DAY_ONE)
    template = features[sorted(features)[0]]
    variants = ["CASE_a", "case_a", "Case_A", "CASE_A", "cAse_a", "case_a "]
    extra = [
        {**template, "id": f"v{n}", "customer_id": customer, "age": 20 + n}
        for n, customer in enumerate(variants)
    ]
    extra.append({**template, "id": "v9", "customer_id": "case_a", "age": 60})  # two rows
    with store.begin() as connection:
        connection.execute(insert(credit_score_features), extra)
    expected_rows = len(features) + len(extra)
    for chunk_rows in (1, 2, 3, 5):
        with store.connect() as connection:
            chunks = list(read_feature_chunks(connection, DAY_ONE, chunk_rows=chunk_rows))
        ids = [row_id for chunk in chunks for row_id in chunk["id"]]
        assert len(ids) == len(set(ids)) == expected_rows, chunk_rows
        owners = [set(chunk["customer_id"]) for chunk in chunks]
        for customer in variants:  # whole customers per chunk
            assert sum(customer in owner for owner in owners) == 1, (chunk_rows, customer)
    with store.begin() as connection:
        result = score_day(connection, DAY_ONE, bundle, chunk_rows=2)
    written = _predictions(store, DAY_ONE)
    assert set(variants) <= set(written)
    assert result.rows == len(written) == len(features) + len(variants)
    assert result.duplicate_feature_rows == 1
    newest = {row["customer_id"]: row for row in sorted(extra, key=lambda row: row["id"])}
    predictor = Predictor(bundle)
    for customer, row in newest.items():  # "case_a" is scored on its newer row (id v9)
        answer = predictor.predict([{name: row[name] for name in MODEL_FEATURES}])[0]
        assert written[customer]["prediction"] == answer.label
        assert written[customer][PREDICTION_CONFIDENCE_COLUMNS[answer.label]] == pytest.approx(
            answer.confidence, abs=1e-9
        )


ODD_CUSTOMER = "c\"q\\u'😀顧"  # a quote, a backslash, an apostrophe, an emoji, CJK


@pytest.mark.mariadb
def test_mariadb_json_lines_read_what_the_ordinary_statement_reads(
    mariadb_url, kaggle_sample, models, monkeypatch
):
    """The real sample as the loader stores it (nulls, repaired values, loan lists): every
    day read as JSON lines equals the same day read row by row; a page whose value does not
    parse is read the ordinary way; and the write stores each probability exactly."""
    engine = init_schema(mariadb_url)
    load_kaggle_csv(kaggle_sample, engine, progress=False)
    with engine.connect() as connection:
        days = connection.execute(
            select(credit_score_features.c.date, func.count())
            .group_by(credit_score_features.c.date)
            .order_by(func.count().desc())
        ).all()
        busiest = days[0][0]
        row = dict(
            connection.execute(
                select(credit_score_features).where(credit_score_features.c.date == busiest)
            )
            .mappings()
            .first()
        )
    odd = {**row, "id": "odd-1", "customer_id": ODD_CUSTOMER, "occupation": 'say "x" \\ 😀'}
    with engine.begin() as connection:
        connection.execute(insert(credit_score_features), [odd])

    parsed = record_parses(monkeypatch, batch_scoring)
    with engine.connect() as connection:
        fast = {day: _read_all(connection, day) for day, _ in days}
    assert parsed and all(parsed)
    monkeypatch.setattr(batch_scoring, "parse_lines", lambda lines, count, schema: None)
    with engine.connect() as connection:
        for day, count in days:
            ordinary = _read_all(connection, day)
            assert len(ordinary) == count + (day == busiest)
            pd.testing.assert_frame_equal(fast[day], ordinary)
    assert ODD_CUSTOMER in set(fast[busiest]["customer_id"])
    monkeypatch.undo()

    bundle, _ = models
    with engine.begin() as connection:
        result = score_day(connection, busiest, bundle, chunk_rows=500)
    unique = fast[busiest].drop_duplicates("customer_id", keep="last")
    probabilities = batch_scoring.score_frame(bundle, unique).probabilities
    written = _predictions(engine, busiest)
    engine.dispose()
    assert result.rows == len(unique) == len(written)
    for customer, expected in zip(unique["customer_id"], probabilities, strict=True):
        stored = written[customer]
        assert [stored[PREDICTION_CONFIDENCE_COLUMNS[label]] for label in LABELS] == list(expected)
        assert stored["prediction"] == LABELS[int(expected.argmax())]


def _read_all(connection, day) -> pd.DataFrame:
    chunks = list(read_feature_chunks(connection, day, chunk_rows=300))
    return pd.concat(chunks, ignore_index=True)


@pytest.fixture(scope="module")
def corrected_bundle(kaggle_sample):
    """A model of the tuned preset's kind: derived features, a prior correction as bias."""
    from credit_platform.core.model_store import save_model_bundle
    from credit_platform.core.training import apply_class_offsets
    from credit_platform_tests.model_fixtures import train_tiny_model

    model, scalers = train_tiny_model(
        load_sample(kaggle_sample, rows=600), iterations=12, derived=True, seed=4
    )
    apply_class_offsets(model, [0.3, -0.1, 0.2])
    tag = save_model_bundle(
        model, scalers, partition="2025-02-26", metrics={"test_accuracy": 0.5}, params={}
    )
    return load_model_bundle(tag)


@pytest.fixture(scope="module")
def offsets_bundle(kaggle_sample):
    """The same kind of model as trained now: the prior correction kept beside it, in its
    metadata, choosing the label; large enough to change answers."""
    from credit_platform.core.model_store import save_model_bundle
    from credit_platform_tests.model_fixtures import train_tiny_model

    model, scalers = train_tiny_model(
        load_sample(kaggle_sample, rows=600), iterations=12, derived=True, seed=4
    )
    tag = save_model_bundle(
        model,
        scalers,
        partition="2025-02-26",
        metrics={"test_accuracy": 0.5},
        params={},
        decision_offsets=[0.6, -0.4, 0.3],
    )
    return load_model_bundle(tag)


@pytest.mark.parametrize("which", ["plain", "corrected", "offsets"])
def test_reason_codes_are_the_top_reasons_the_api_gives(
    store, models, corrected_bundle, offsets_bundle, which
):
    """With reason codes, each customer's reason_1..3 are the three reasons the API's
    explanation of the same row shows first; without them the columns are NULL. The
    predictions are the API's either way (a model with derived features included, one with
    its prior correction in its bias, one with it kept beside as decision offsets)."""
    bundle = {"plain": models[0], "corrected": corrected_bundle, "offsets": offsets_bundle}[which]
    with store.begin() as connection:
        result = score_day(connection, DAY_ONE, bundle, chunk_rows=7, reasons=True)
    written = _predictions(store, DAY_ONE)
    features = _feature_rows(store, DAY_ONE)
    customers = sorted(features)
    assert result.rows == len(written) == len(customers)
    predictor = Predictor(bundle)
    rows = [{name: features[c][name] for name in MODEL_FEATURES} for c in customers]
    answers = predictor.explain(rows, predictor.predict(rows), reasons=3)
    for customer, answer in zip(customers, answers, strict=True):
        row = written[customer]
        assert row["prediction"] == answer.label
        assert row[PREDICTION_CONFIDENCE_COLUMNS[answer.label]] == pytest.approx(
            answer.confidence, abs=1e-9
        )
        shown = [reason["feature"] for reason in answer.explanation["reasons"]]
        assert [row["reason_1"], row["reason_2"], row["reason_3"]] == shown
    if which == "offsets":  # the offsets chose labels other than the most probable
        most_probable = [
            max(LABELS, key=lambda label: row[PREDICTION_CONFIDENCE_COLUMNS[label]])
            for row in written.values()
        ]
        assert [row["prediction"] for row in written.values()] != most_probable

    with store.begin() as connection:
        score_day(connection, DAY_ONE, bundle, chunk_rows=7)
    assert all(
        row["reason_1"] is None and row["reason_2"] is None and row["reason_3"] is None
        for row in _predictions(store, DAY_ONE).values()
    )
