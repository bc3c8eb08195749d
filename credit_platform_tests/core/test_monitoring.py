"""Monitoring's pure computation: the label join, PSI, live metrics and the day's report,
on hand-made rows whose answers are known."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from credit_platform.core.calibration import ece_from_bins, reliability_bins
from credit_platform.core.fairness import FairnessPolicy
from credit_platform.core.features import LABELS, MODEL_FEATURES, NUMERIC_FEATURES, TARGET
from credit_platform.core.monitoring import (
    DRIFT_SKIPPED,
    FEATURE_PSI,
    LABELLED,
    LIVE_ACCURACY,
    LIVE_ECE,
    LIVE_MACRO_F1,
    MISSING,
    PREDICTION_MIX_PSI,
    PREDICTION_SHARE,
    REQUESTS,
    SEGMENT_ACCURACY,
    SEGMENT_FLAGGED,
    SEGMENT_GOOD_RATE,
    SEGMENT_LABELLED,
    TEST_ACCURACY,
    UNREADABLE_FEATURES,
    DayMonitor,
    DriftSkipped,
    ModelReference,
    category_counts,
    decode_log_chunk,
    features_frame,
    first_labels,
    held_out_prediction_mix,
    loan_types,
    numeric_bin_counts,
    profile_document,
    profile_from_document,
    psi,
    quality_from_confusion,
    quantile_edges,
    reference_profile,
    segment_feature_name,
    segment_recall_metric,
)

DAY = date(2025, 3, 10)


def test_first_labels_takes_each_customers_earliest_label_inside_the_horizon():
    labels = pd.DataFrame(
        [
            ("a", date(2025, 3, 9), "Poor"),  # before the prediction: never judges it
            ("a", date(2025, 3, 12), "Good"),  # the first inside the window
            ("a", date(2025, 3, 11), "Standard"),  # earlier still: this one wins
            ("b", date(2025, 3, 10), "Poor"),  # the prediction's own day counts
            ("c", date(2025, 4, 20), "Good"),  # beyond the 30-day horizon
            ("d", date(2025, 4, 9), "Good"),  # the horizon's last day counts
        ],
        columns=["customer_id", "date", TARGET],
    )
    judged = first_labels(labels, DAY, horizon_days=30)
    assert judged.to_dict() == {"a": "Standard", "b": "Poor", "d": "Good"}
    assert first_labels(labels.iloc[0:0], DAY, 30).empty


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    same = psi({"x": 10, "y": 30}, {"x": 100, "y": 300})
    assert same == pytest.approx(0.0, abs=1e-12)
    small = psi({"x": 50, "y": 50}, {"x": 55, "y": 45})
    large = psi({"x": 50, "y": 50}, {"x": 90, "y": 10})
    assert 0 < small < 0.1 < 0.2 < large
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert large == pytest.approx(expected)


def test_psi_of_a_bin_empty_on_one_side_is_finite_and_none_when_a_side_is_empty():
    value = psi({"x": 100}, {"x": 50, "new": 50})
    assert np.isfinite(value) and value > 1
    assert psi({}, {"x": 1}) is None
    assert psi({"x": 1}, {}) is None


def test_numeric_bins_come_from_reference_quantiles_and_count_missing_values():
    reference = np.arange(1, 101, dtype=float)
    edges = quantile_edges(reference)
    assert len(edges) == 9
    counts = numeric_bin_counts(reference, edges)
    assert sum(v for k, v in counts.items() if k != MISSING) == 100
    assert max(v for k, v in counts.items() if k != MISSING) <= 11  # about 10 per bin
    shifted = numeric_bin_counts(np.array([1000.0, 1001.0, np.nan, np.inf]), edges)
    assert shifted[len(edges)] == 2 and shifted[MISSING] == 2  # the top bin; nan and inf
    # a feature with few distinct values gets few bins; one with no value, none
    assert len(quantile_edges(np.array([1.0, 1.0, 2.0, 2.0]))) <= 2
    assert quantile_edges(np.array([np.nan, np.nan])).size == 0


def test_categories_count_nulls_as_missing_and_loan_lists_by_loan_type():
    assert category_counts("credit_mix", ["Good", None, "Good", "Bad"]) == {
        "Good": 2,
        "Bad": 1,
        MISSING: 1,
    }
    assert loan_types("Auto Loan, and Payday Loan") == ["Auto Loan", "Payday Loan"]
    assert loan_types("") == [] and loan_types(None) == []
    counts = category_counts("type_of_loan", ["Auto Loan, and Payday Loan", "Auto Loan", None])
    assert counts == {"Auto Loan": 2, "Payday Loan": 1, MISSING: 1}


def test_live_metrics_match_sklearn_and_are_unknown_without_labels():
    truth = ["Good", "Good", "Standard", "Poor", "Poor", "Poor"]
    predicted = ["Good", "Standard", "Standard", "Poor", "Good", "Poor"]
    confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        confusion[LABELS.index(t), LABELS.index(p)] += 1
    labelled, accuracy, macro_f1 = quality_from_confusion(confusion)
    assert labelled == 6
    assert accuracy == pytest.approx(4 / 6)
    expected = f1_score(truth, predicted, labels=list(LABELS), average="macro", zero_division=0)
    assert macro_f1 == pytest.approx(expected)
    assert quality_from_confusion(np.zeros((3, 3), dtype=int)) == (0, None, None)


def test_held_out_prediction_mix_reads_the_confusion_matrix_columns():
    metadata = {
        "metrics": {
            "test_confusion_matrix": {
                "labels": list(LABELS),
                "rows": [[5, 1, 0], [2, 6, 0], [0, 1, 3]],
            }
        }
    }
    assert held_out_prediction_mix(metadata) == {"Good": 7.0, "Standard": 8.0, "Poor": 3.0}
    assert held_out_prediction_mix({"metrics": {}}) is None
    broken = {"metrics": {"test_confusion_matrix": {"labels": ["Good"], "rows": [[1, 2]]}}}
    assert held_out_prediction_mix(broken) is None


def test_features_frame_survives_nulls_bad_json_and_wrong_types():
    texts = [
        json.dumps(dict.fromkeys(MODEL_FEATURES)),  # every feature null (repaired)
        json.dumps({"age": 30, "occupation": "Doctor"}),  # features absent
        "{not json",
        "null",
        json.dumps({"age": "thirty"}),  # a text where a number belongs
        {"age": 41},  # already decoded
    ]
    frame, unreadable = features_frame(texts)
    assert list(unreadable) == [False, False, True, True, False, False]
    assert frame["age"].iloc[1] == 30 and frame["age"].iloc[5] == 41
    assert frame["age"].isna().tolist() == [True, False, True, True, True, False]
    assert frame["occupation"].tolist()[:2] == [None, "Doctor"]


def _training_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    frame = pd.DataFrame({name: generator.normal(50, 10, rows) for name in NUMERIC_FEATURES})
    frame["occupation"] = generator.choice(["Doctor", "Lawyer"], rows)
    frame["credit_mix"] = generator.choice(["Good", "Bad"], rows)
    frame["payment_of_min_amount"] = generator.choice(["Yes", "No"], rows)
    frame["type_of_loan"] = generator.choice(["Auto Loan", "Auto Loan, and Payday Loan"], rows)
    frame["payment_behaviour"] = "Low_spent_Small_value_payments"
    frame[TARGET] = generator.choice(list(LABELS), rows)
    return frame


def test_a_stored_profile_reads_back_as_the_profile_it_was_made_from():
    frame = _training_frame()
    frame.loc[::7, "age"] = np.nan
    frame.loc[::9, "occupation"] = None
    profile = reference_profile(frame, {"Good": 3.0, "Standard": 5.0, "Poor": 2.0})
    document = profile_document(profile)
    # plain JSON: it goes to MLflow as an artifact and into BentoML's metadata as it is
    again = profile_from_document(json.loads(json.dumps(document)))

    assert again.rows == profile.rows == 400
    assert again.prediction_mix == profile.prediction_mix
    assert again.counts == profile.counts
    assert again.counts["age"][MISSING] == 58
    for name in NUMERIC_FEATURES:
        np.testing.assert_array_equal(again.edges[name], profile.edges[name])
    # the same requests get the same bins and the same PSI from either
    today = _training_frame(seed=5)
    for name in NUMERIC_FEATURES:
        values = today[name].to_numpy(dtype=float)
        assert numeric_bin_counts(values, again.edges[name]) == numeric_bin_counts(
            values, profile.edges[name]
        )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": 99}, "format 1"),
        ("not a mapping", "format 1"),
        ({"format": 1, "rows": 3}, "malformed drift reference"),
    ],
)
def test_a_profile_document_of_another_shape_is_refused_by_name(document, message):
    with pytest.raises(ValueError, match=message):
        profile_from_document(document)


def test_a_stored_profile_missing_a_feature_is_refused():
    document = profile_document(reference_profile(_training_frame()))
    del document["numeric"]["age"]
    with pytest.raises(ValueError, match="age"):
        profile_from_document(document)


def test_a_reference_stored_before_a_feature_was_declared_reads_without_it():
    """A model trained before a feature was declared has a reference without it (and, from
    before references listed their features, no list): it reads, and drift is measured
    on the features it holds."""
    document = profile_document(reference_profile(_training_frame()))
    assert sorted(document["features"]) == sorted(MODEL_FEATURES)
    del document["features"]
    del document["numeric"]["monthly_balance"]
    del document["categories"]["payment_behaviour"]
    profile = profile_from_document(document)
    assert "monthly_balance" not in profile.edges
    assert set(profile.counts) == set(MODEL_FEATURES) - {"monthly_balance", "payment_behaviour"}
    assert sorted(profile_document(profile)["features"]) == sorted(profile.counts)


def _log_chunk(features: pd.DataFrame, version: str, role: str, predictions, customers):
    records = features[list(MODEL_FEATURES)].to_dict(orient="records")
    return pd.DataFrame(
        {
            "customer_id": customers,
            "features": [json.dumps(record) for record in records],
            "prediction": predictions,
            "elapsed_ms": np.linspace(1, 100, len(records)),
            "model_version": version,
            "role": role,
        }
    )


def _value(rows, version, role, metric, feature=""):
    (match,) = [
        row["value"]
        for row in rows
        if (row["model_version"], row["role"], row["metric"], row["feature"])
        == (version, role, metric, feature)
    ]
    return match


def test_the_day_report_per_version_and_role_with_drift_quality_and_skips():
    training = _training_frame()
    reference = ModelReference(reference_profile(training), test_accuracy=0.7, partition="x")
    labels = pd.Series({"c0": "Good", "c1": "Poor"})
    references = {"m:new": reference, "m:gone": DriftSkipped("not in the store")}
    monitor = DayMonitor(DAY, labels, references.__getitem__)
    steady = training.iloc[:100]
    drifted = training.iloc[:100].copy()
    drifted["age"] = drifted["age"] + 40  # far above every training value
    customers = [f"c{i}" for i in range(100)]
    monitor.add_chunk(
        decode_log_chunk(_log_chunk(steady, "m:new", "champion", ["Good"] * 100, customers))
    )
    monitor.add_chunk(
        decode_log_chunk(_log_chunk(drifted, "m:new", "shadow", ["Poor"] * 100, customers))
    )
    monitor.add_chunk(
        decode_log_chunk(
            _log_chunk(steady.iloc[:10], "m:gone", "canary", ["Good"] * 10, customers[:10])
        )
    )
    rows = monitor.rows()

    assert _value(rows, "m:new", "champion", REQUESTS) == 100
    assert _value(rows, "m:new", "all", REQUESTS) == 200
    assert _value(rows, "all", "all", REQUESTS) == 210
    # c0 is Good, c1 Poor: the champion got c0 right, the shadow c1
    assert _value(rows, "m:new", "champion", LABELLED) == 2
    assert _value(rows, "m:new", "champion", LIVE_ACCURACY) == pytest.approx(0.5)
    assert _value(rows, "m:new", "all", LIVE_ACCURACY) == pytest.approx(0.5)
    assert _value(rows, "m:new", "shadow", PREDICTION_SHARE, "Poor") == 1.0
    assert _value(rows, "m:new", "champion", TEST_ACCURACY) == 0.7
    assert _value(rows, "m:new", "champion", FEATURE_PSI, "age") < 0.2
    assert _value(rows, "m:new", "shadow", FEATURE_PSI, "age") > 1.0
    assert _value(rows, "m:new", "shadow", FEATURE_PSI, "annual_income") < 0.2
    assert _value(rows, "m:new", "shadow", PREDICTION_MIX_PSI) > 1.0
    # the version no longer in the store: counted, its drift skipped
    assert _value(rows, "m:gone", "canary", REQUESTS) == 10
    assert _value(rows, "m:gone", "canary", DRIFT_SKIPPED) == 1
    assert not [r for r in rows if r["model_version"] == "m:gone" and r["metric"] == FEATURE_PSI]


def test_a_day_without_labels_reports_accuracy_as_unknown_and_bad_rows_are_counted():
    training = _training_frame()
    reference = ModelReference(reference_profile(training), test_accuracy=None, partition="x")
    monitor = DayMonitor(DAY, pd.Series(dtype=object), {"m": reference}.__getitem__)
    chunk = _log_chunk(training.iloc[:5], "m", "champion", ["Good"] * 5, list("abcde"))
    chunk.loc[0, "features"] = "{broken"
    chunk.loc[1, "elapsed_ms"] = None
    monitor.add_chunk(decode_log_chunk(chunk))
    rows = monitor.rows()
    assert _value(rows, "m", "champion", LABELLED) == 0
    assert _value(rows, "m", "champion", LIVE_ACCURACY) is None
    assert _value(rows, "m", "champion", LIVE_MACRO_F1) is None
    assert _value(rows, "m", "champion", UNREADABLE_FEATURES) == 1
    assert _value(rows, "m", "champion", REQUESTS) == 5
    assert DayMonitor(DAY, pd.Series(dtype=object), {}.__getitem__).rows() == []


def test_odd_values_in_logged_features_are_counted_never_a_crash():
    frame, unreadable = features_frame(
        [
            {"age": True, "occupation": ["a", "list"], "annual_income": {"an": "object"}},
            {"age": 7, "occupation": 3},
        ]
    )
    assert not unreadable.any()
    assert pd.isna(frame["age"].iloc[0]) and frame["age"].iloc[1] == 7  # a boolean is no age
    assert frame["annual_income"].isna().all()
    counts = category_counts("occupation", frame["occupation"])
    assert counts == {"['a', 'list']": 1, "3": 1}


def test_live_calibration_and_segments_of_labelled_predictions():
    training = _training_frame()
    reference = ModelReference(reference_profile(training), test_accuracy=0.7, partition="x")
    rows = 200
    generator = np.random.default_rng(3)
    features = training.iloc[:rows].copy()
    features["age"] = np.where(np.arange(rows) < 100, 20.0, 45.0)  # under 25, then 40-60
    truth = np.where(np.arange(rows) % 2 == 0, "Good", "Standard")
    # the young are never answered Good; the others are answered right
    predicted = np.where(np.arange(rows) < 100, "Standard", truth)
    confidence = generator.uniform(0.4, 1.0, rows)
    customers = [f"c{index}" for index in range(rows)]
    labels = pd.Series(truth[:150], index=customers[:150])  # the last 50 not labelled yet
    policy = FairnessPolicy(segments=("age", "occupation"), min_segment_rows=20)
    monitor = DayMonitor(DAY, labels, {"m": reference}.__getitem__, policy)
    for start in (0, 120):  # two chunks: the tallies add up
        chunk = _log_chunk(
            features.iloc[start : start + 120 if start == 0 else rows],
            "m",
            "champion",
            list(predicted[start : 120 if start == 0 else rows]),
            customers[start : 120 if start == 0 else rows],
        )
        chunk["confidence"] = confidence[start : 120 if start == 0 else rows]
        monitor.add_chunk(decode_log_chunk(chunk))
    report = monitor.rows()

    labelled = np.arange(rows) < 150
    expected = ece_from_bins(reliability_bins(confidence[labelled], (predicted == truth)[labelled]))
    assert _value(report, "m", "champion", LIVE_ECE) == pytest.approx(expected)
    assert _value(report, "m", "all", LIVE_ECE) == pytest.approx(expected)
    young = segment_feature_name("age", "under 25")
    older = segment_feature_name("age", "40-60")
    assert _value(report, "m", "champion", SEGMENT_LABELLED, young) == 100
    assert _value(report, "m", "champion", SEGMENT_LABELLED, older) == 50
    assert _value(report, "m", "champion", SEGMENT_GOOD_RATE, young) == 0.0
    assert _value(report, "m", "champion", SEGMENT_GOOD_RATE, older) == pytest.approx(0.5)
    assert _value(report, "m", "champion", SEGMENT_ACCURACY, young) == pytest.approx(0.5)
    assert _value(report, "m", "champion", segment_recall_metric("Good"), young) == 0.0
    assert _value(report, "m", "champion", segment_recall_metric("Good"), older) == 1.0
    assert _value(report, "m", "champion", SEGMENT_FLAGGED, young) == 1
    assert _value(report, "m", "champion", SEGMENT_FLAGGED, older) == 0
    # without a policy no segment is reported; without labels no ECE
    plain = DayMonitor(DAY, pd.Series(dtype=object), {"m": reference}.__getitem__)
    chunk = _log_chunk(features.iloc[:5], "m", "champion", ["Good"] * 5, customers[:5])
    plain.add_chunk(decode_log_chunk(chunk))  # an older reader's rows: no confidence column
    plain_rows = plain.rows()
    assert _value(plain_rows, "m", "champion", LIVE_ECE) is None
    assert not [row for row in plain_rows if row["metric"].startswith("segment_")]
