"""The served model in-process: model input built from small and large requests alike (equal
to the training transform of the same rows as loaded), implausible values scored as
missing and named, scalers that cannot scale refused at load, and concurrent single rows
scored in groups."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier

from api.predictor import (
    CoalescingScorer,
    ModelRefused,
    Predictor,
    ServedModel,
    as_scored,
    load_predictor,
)
from bench.sample_requests import load_sample, request_payload
from credit_platform.core.answers import OFFSETS_KEY, offsets_document, offsets_from_metadata
from credit_platform.core.calibration import (
    apply_temperature,
    calibrate_temperature,
    ece_from_bins,
    raw_scores,
    reliability_bins,
)
from credit_platform.core.features import MODEL_FEATURES, TARGET
from credit_platform.core.model_input import model_columns, prepare_model_input
from credit_platform.core.model_store import ModelBundle, save_model_bundle
from credit_platform.core.reasons import REASON_CODES
from credit_platform.core.training import (
    TrialParams,
    apply_class_offsets,
    fit_trial,
)
from credit_platform.defs.assets.split import TEST, TRAIN, VALID
from credit_platform_tests.contract_fixtures import as_loaded
from credit_platform_tests.model_fixtures import train_tiny_model
from credit_platform_tests.training_fixtures import (
    STRONG_PRIOR_CORRECTION,
    split_pools,
)

_NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def sample(kaggle_sample: Path) -> pd.DataFrame:
    return load_sample(kaggle_sample, rows=1500)


def bundle_of(model: Any, scalers: dict, tag: str) -> ModelBundle:
    return ModelBundle(
        tag=tag,
        model=model,
        scalers=scalers,
        metadata={"partition": "2025-01-15"},
        creation_time=datetime.now(UTC),
    )


@pytest.fixture(scope="module")
def trained(sample: pd.DataFrame) -> tuple[Any, dict]:
    return train_tiny_model(sample, iterations=15)


@pytest.fixture(scope="module")
def predictor(trained: tuple[Any, dict]) -> Predictor:
    model, scalers = trained
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:first"))


@pytest.fixture(scope="module")
def records(sample: pd.DataFrame) -> list[dict[str, Any]]:
    rows = sample.iloc[:300].to_dict(orient="records")
    return [
        {name: payload[name] for name in MODEL_FEATURES} for payload in map(request_payload, rows)
    ]


@pytest.mark.parametrize("count", [1, 2, 7, 300])
def test_model_input_equals_the_training_transform(
    predictor: Predictor, sample: pd.DataFrame, records: list[dict], count: int
) -> None:
    reference = prepare_model_input(as_loaded(sample.iloc[:count]), predictor.bundle.scalers)
    expected = predictor.bundle.model.predict_proba(reference)
    np.testing.assert_array_equal(predictor.probabilities(records[:count]), expected)


@pytest.fixture(scope="module")
def derived_predictor(sample: pd.DataFrame) -> Predictor:
    model, scalers = train_tiny_model(sample, iterations=15, derived=True)
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:derived"))


@pytest.mark.parametrize("count", [1, 300])
def test_a_model_with_derived_features_scores_as_training_does(
    derived_predictor: Predictor, sample: pd.DataFrame, records: list[dict], count: int
) -> None:
    model = derived_predictor.bundle.model
    assert list(model.feature_names_) == list(model_columns(derived=True))
    reference = prepare_model_input(
        as_loaded(sample.iloc[:count]), derived_predictor.bundle.scalers, derived=True
    )
    np.testing.assert_array_equal(
        derived_predictor.probabilities(records[:count]), model.predict_proba(reference)
    )
    # an implausible number is repaired before the ratios are taken from it
    row = {**records[0], "annual_income": 23_800_000.0}
    missing = {**records[0], "annual_income": None}
    np.testing.assert_array_equal(
        derived_predictor.probabilities([row]), derived_predictor.probabilities([missing])
    )
    assert derived_predictor.predict([row])[0].repaired == ("annual_income",)


def test_a_model_with_unknown_extra_features_is_refused(trained: tuple[Any, dict]) -> None:
    model, scalers = trained
    renamed = copy.deepcopy(model)
    renamed.set_feature_names([*MODEL_FEATURES[:-1], "shoe_size"])
    with pytest.raises(ModelRefused, match="shoe_size"):
        Predictor(bundle_of(renamed, scalers, "x:renamed"))


def test_scalers_that_cannot_scale_are_refused(trained: tuple[Any, dict]) -> None:
    model, scalers = trained
    for bad_scale in (0.0, float("nan"), float("inf")):
        broken = copy.deepcopy(scalers["outstanding_debt"])
        broken.scale_ = np.array([bad_scale])
        with pytest.raises(ModelRefused, match="outstanding_debt"):
            Predictor(bundle_of(model, {**scalers, "outstanding_debt": broken}, "x:broken"))


def test_concurrent_rows_share_one_model_call(predictor: Predictor, records: list[dict]) -> None:
    scorer = CoalescingScorer(ServedModel(predictor, loader=lambda tag: predictor))

    async def many() -> list:
        return await asyncio.gather(*(scorer.score(row) for row in records[:40]))

    answers = asyncio.run(many())

    assert scorer.groups == 1 and scorer.rows == 40
    expected = predictor.predict(records[:40])
    assert [prediction for _, prediction in answers] == expected
    assert all(used is predictor for used, _ in answers)


def test_a_lone_request_is_scored_at_once_and_groups_follow_a_reload(
    predictor: Predictor, trained: tuple[Any, dict], records: list[dict]
) -> None:
    model, scalers = trained
    second = Predictor(bundle_of(model, scalers, "credit_score_classifier:second"))
    served = ServedModel(predictor, loader=lambda tag: second)
    scorer = CoalescingScorer(served)

    async def one_then_reload_then_many() -> tuple:
        lone = await scorer.score(records[0])
        served.reload("second")
        later = await asyncio.gather(*(scorer.score(row) for row in records[1:5]))
        return lone, later

    (lone_model, lone_answer), later = asyncio.run(one_then_reload_then_many())

    assert lone_model is predictor and lone_answer == predictor.predict(records[:1])[0]
    assert {used.tag for used, _ in later} == {"credit_score_classifier:second"}
    assert scorer.groups == 2


def test_a_row_that_breaks_the_model_fails_only_its_own_request(
    predictor: Predictor, records: list[dict]
) -> None:
    scorer = CoalescingScorer(ServedModel(predictor))
    poison = {**records[1], "age": "not a number"}

    async def group() -> list:
        rows = [records[0], poison, records[2]]
        return await asyncio.gather(*(scorer.score(row) for row in rows), return_exceptions=True)

    first, failed, third = asyncio.run(group())

    assert isinstance(failed, ValueError)
    assert first[1] == predictor.predict([records[0]])[0]
    assert third[1] == predictor.predict([records[2]])[0]


def test_implausible_values_are_scored_as_missing_and_named(
    predictor: Predictor, records: list[dict]
) -> None:
    row = records[0]
    implausible = {
        **row,
        "num_bank_accounts": 1747,
        "annual_income": 23_800_000.0,
        "amount_invested_monthly": 10_000.0,
        "monthly_balance": -3.33e26,
        "age": -500,
    }
    as_missing = {**implausible, **dict.fromkeys(set(implausible) - {"customer_id"})}
    as_missing |= {name: row[name] for name in row if implausible[name] == row[name]}

    (answer,) = predictor.predict([implausible])

    assert answer.repaired == (
        "age",
        "annual_income",
        "num_bank_accounts",
        "amount_invested_monthly",
        "monthly_balance",
    )  # model order
    np.testing.assert_array_equal(
        predictor.probabilities([implausible]), predictor.probabilities([as_missing])
    )
    (missing_answer,) = predictor.predict([as_missing])
    assert (missing_answer.label, missing_answer.confidence) == (answer.label, answer.confidence)
    assert missing_answer.repaired == ()
    assert as_scored(implausible, answer) == as_missing
    # Values at the edges of the plausible range are kept.
    edges = {**row, "age": 14, "num_of_loan": 12, "monthly_balance": -50_000.0}
    assert predictor.predict([edges])[0].repaired == ()


# --- reasons ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrected_predictor(sample: pd.DataFrame) -> Predictor:
    """The tuned preset's kind of model: derived features and a prior correction stored as
    the model's bias."""
    from credit_platform.core.training import apply_class_offsets

    model, scalers = train_tiny_model(sample, iterations=15, derived=True)
    apply_class_offsets(model, [0.35, -0.2, 0.15])
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:corrected"))


@pytest.fixture(scope="module")
def apart_predictor(sample: pd.DataFrame) -> Predictor:
    """The same model as `corrected_predictor`, trained now: the correction kept beside it
    as decision offsets in its metadata, its bias untouched."""
    model, scalers = train_tiny_model(sample, iterations=15, derived=True)
    bundle = bundle_of(model, scalers, "credit_score_classifier:apart")
    offsets = offsets_document(model.classes_, [0.35, -0.2, 0.15])
    return Predictor(replace(bundle, metadata={**bundle.metadata, OFFSETS_KEY: offsets}))


@pytest.mark.parametrize("which", ["predictor", "corrected_predictor", "apart_predictor"])
def test_an_explained_answer_equals_the_unexplained_one(
    which: str, request: pytest.FixtureRequest, records: list[dict]
) -> None:
    served: Predictor = request.getfixturevalue(which)
    rows = [*records[:120], {**records[0], "annual_income": 23_800_000.0}]  # one repaired
    plain = served.predict(rows)
    explained = served.explain(rows, plain, reasons=3)
    assert [(p.label, p.confidence, p.repaired) for p in explained] == [
        (p.label, p.confidence, p.repaired) for p in plain
    ]
    assert all(p.explanation is None for p in plain)
    for prediction in explained:
        document = prediction.explanation
        assert document is not None and document["label"] == prediction.label
        assert len(document["reasons"]) == 3
    # the repaired income is explained as missing, as it was scored
    (income,) = [
        reason
        for reason in served.explain(rows[-1:], plain[-1:], reasons=len(REASON_CODES))[
            0
        ].explanation["reasons"]
        if reason["feature"] == "annual_income"
    ]
    assert income["value"] is None and income["text"].startswith("Annual income not given")


@pytest.mark.parametrize("which", ["predictor", "corrected_predictor", "apart_predictor"])
def test_reasons_sum_to_the_served_models_raw_score(
    which: str, request: pytest.FixtureRequest, records: list[dict]
) -> None:
    """SHAP's identity against the model as served: its raw score (bias included, and the
    decision offset of a correction kept beside the model) of the predicted class, computed
    from the served input of each row."""
    served: Predictor = request.getfixturevalue(which)
    rows = records[:150]
    explained = served.explain(rows, served.predict(rows), reasons=len(REASON_CODES))
    raw = served.bundle.model.predict(served.encode(rows), prediction_type="RawFormulaVal")
    offsets = offsets_from_metadata(served.bundle.metadata, served.bundle.model.classes_)
    assert (offsets is not None) == (which == "apart_predictor")
    if offsets is not None:
        raw = raw + offsets
    classes = [str(label) for label in served.bundle.model.classes_]
    for row, prediction in enumerate(explained):
        document = prediction.explanation
        assert document["other_reasons"] == 0.0
        total = document["base_value"] + sum(r["contribution"] for r in document["reasons"])
        expected = raw[row, classes.index(prediction.label)]
        assert total == pytest.approx(expected, abs=1e-9)
        assert document["raw_score"] == pytest.approx(expected, abs=1e-9)
        # the predicted class has the largest raw score: the answer and the reasons agree
        assert expected == pytest.approx(raw[row].max())


def test_a_correction_kept_apart_answers_and_explains_as_in_the_bias_with_its_own_confidence(
    corrected_predictor: Predictor, apart_predictor: Predictor, records: list[dict]
) -> None:
    """The same model with the same correction, in its bias (saved before) or beside it (now):
    the same labels and the same explanations; the confidence is the model's own probability
    of the label instead of the corrected one."""
    rows = records[:200]
    before = corrected_predictor.predict(rows)
    after = apart_predictor.predict(rows)
    assert [p.label for p in after] == [p.label for p in before]
    own = apart_predictor.bundle.model.predict_proba(apart_predictor.encode(rows))
    classes = [str(label) for label in apart_predictor.bundle.model.classes_]
    np.testing.assert_allclose(
        [p.confidence for p in after],
        [own[row, classes.index(p.label)] for row, p in enumerate(after)],
        rtol=0,
        atol=1e-12,
    )
    assert [p.confidence for p in after] != pytest.approx([p.confidence for p in before])
    for old, new in zip(
        corrected_predictor.explain(rows, before), apart_predictor.explain(rows, after), strict=True
    ):
        for key in ("raw_score", "base_value", "other_reasons"):
            assert new.explanation[key] == pytest.approx(old.explanation[key], abs=1e-9)
        assert [r["feature"] for r in new.explanation["reasons"]] == [
            r["feature"] for r in old.explanation["reasons"]
        ]


@pytest.fixture(scope="module")
def corrected_split():
    """A MultiClass model fit as training fits it, with a strong prior correction, and the
    rows it did not learn from."""
    sides, pools, scalers = split_pools()
    trial = fit_trial(
        pools[TRAIN],
        pools[VALID],
        sides[VALID][TARGET],
        TrialParams(4, 1.0, 3.0),
        STRONG_PRIOR_CORRECTION,
    )
    return sides, pools, scalers, trial


def _served_ece(predictor: Predictor, rows: pd.DataFrame) -> tuple[float, list[str]]:
    """Top-label ECE of what the predictor answers for `rows`, and the labels answered."""
    records = [
        {name: None if pd.isna(value) else value for name, value in row.items()}
        for row in rows[list(MODEL_FEATURES)].to_dict(orient="records")
    ]
    answers = predictor.predict(records)
    labels = [answer.label for answer in answers]
    ece = ece_from_bins(
        reliability_bins(
            np.array([answer.confidence for answer in answers]),
            np.array(labels) == rows[TARGET].astype(str).to_numpy(),
        )
    )
    return ece, labels


def _copy_of(model: CatBoostClassifier, folder: Path) -> CatBoostClassifier:
    """An independent copy through the model file (CatBoost's own `copy` of a model with text
    features saves a file that crashes the process when loaded)."""
    path = folder / "copy.cbm"
    model.save_model(str(path))
    return CatBoostClassifier().load_model(str(path))


def test_with_a_prior_correction_the_served_confidence_is_calibrated(
    corrected_split, tmp_path: Path
) -> None:
    """Calibration improves the ECE on the valid rows where applied, and with a prior
    correction the API's confidence is no worse calibrated there than the uncorrected
    model's, while the label is the argmax of the corrected scores."""
    sides, pools, scalers, trial = corrected_split
    valid = sides[VALID]
    offsets = np.asarray(trial.offsets)
    assert offsets.max() > 0
    scores = raw_scores(trial.model, pools[VALID])
    classes = np.asarray([str(label) for label in trial.model.classes_])
    corrected_labels = classes[(scores + offsets).argmax(axis=1)].tolist()

    # now: offsets beside the model, the temperature fitted on its own scores
    model = _copy_of(trial.model, tmp_path)
    calibration = calibrate_temperature(model, pools[VALID], valid[TARGET], offsets=offsets)
    if calibration.applied:
        assert calibration.after.ece < calibration.before.ece
        apply_temperature(model, calibration.temperature)
    metadata = {OFFSETS_KEY: offsets_document(classes, calibration.served_offsets())}
    apart = Predictor(ModelBundle("credit_score_classifier:apart", model, scalers, metadata, _NOW))
    apart_ece, apart_labels = _served_ece(apart, valid)
    assert apart_labels == corrected_labels

    # the model without any correction, answering its own most probable class
    plain = Predictor(bundle_of(trial.model, scalers, "credit_score_classifier:plain"))
    plain_ece, plain_labels = _served_ece(plain, valid)
    assert plain_labels != corrected_labels  # the correction does change answers
    assert apart_ece <= plain_ece

    # before: the correction in the bias, a temperature fitted on the corrected scores
    biased = _copy_of(trial.model, tmp_path)
    apply_class_offsets(biased, offsets)
    old = calibrate_temperature(biased, pools[VALID], valid[TARGET])
    if old.applied:
        apply_temperature(biased, old.temperature)
    before = Predictor(bundle_of(biased, scalers, "credit_score_classifier:biased"))
    before_ece, before_labels = _served_ece(before, valid)
    assert before_labels == corrected_labels  # the same answers ...
    assert apart_ece < before_ece  # ... with a better calibrated confidence


def test_a_model_saved_with_the_correction_in_its_bias_loads_and_scores_as_before(
    corrected_split, tmp_path: Path
) -> None:
    """A bundle saved before the offsets were kept apart (the correction in the model's bias,
    no offsets in its metadata) answers the argmax of predict_proba with that probability; a
    bundle saved now carries its offsets in its metadata through the store."""
    sides, pools, scalers, trial = corrected_split
    rows = sides[TEST]
    records = [
        {name: None if pd.isna(value) else value for name, value in row.items()}
        for row in rows[list(MODEL_FEATURES)].to_dict(orient="records")
    ]
    biased = _copy_of(trial.model, tmp_path)
    apply_class_offsets(biased, trial.offsets)
    old_tag = save_model_bundle(
        biased, scalers, partition="2025-02-01", metrics={"test_accuracy": 0.5}, params={}
    )
    old = load_predictor(old_tag)
    assert OFFSETS_KEY not in old.bundle.metadata
    probabilities = biased.predict_proba(old.encode(records))
    classes = [str(label) for label in biased.classes_]
    answers = old.predict(records)
    assert [answer.label for answer in answers] == [
        classes[index] for index in probabilities.argmax(axis=1)
    ]
    np.testing.assert_array_equal(
        [answer.confidence for answer in answers], probabilities.max(axis=1)
    )
    np.testing.assert_array_equal(old.probabilities(records), probabilities)

    new_tag = save_model_bundle(
        trial.model,
        scalers,
        partition="2025-02-01",
        metrics={"test_accuracy": 0.5},
        params={},
        decision_offsets=trial.offsets,
    )
    new = load_predictor(new_tag)
    assert new.bundle.metadata[OFFSETS_KEY] == offsets_document(classes, trial.offsets)
    assert [answer.label for answer in new.predict(records)] == [a.label for a in answers]
    # offsets for other classes than the model's are refused at load
    wrong = {OFFSETS_KEY: {"classes": ["Good", "Poor", "Bad"], "offsets": [1.0, 0.5, 0.0]}}
    with pytest.raises(ModelRefused, match="decision offsets"):
        Predictor(replace(new.bundle, metadata={**new.bundle.metadata, **wrong}))
