"""Calibration: the ECE by hand, the live tally that must agree with it, and temperature
scaling of a real CatBoost model whose prior correction made its probabilities worse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier

from credit_platform.core.calibration import (
    apply_temperature,
    calibrate_temperature,
    calibration_figures,
    classwise_ece,
    ece_from_bins,
    probabilities_from_scores,
    raw_scores,
    reliability_bins,
    top_label,
)
from credit_platform.core.features import TARGET
from credit_platform.core.monitoring import calibration_counts, ece_from_counts
from credit_platform.core.training import (
    FitSettings,
    TrialParams,
    class_offsets,
    fit_trial,
)
from credit_platform.defs.assets.split import TEST, TRAIN, VALID
from credit_platform_tests.training_fixtures import (
    STRONG_PRIOR_CORRECTION,
    split_pools,
)


def test_the_ece_is_the_rows_weighted_gap_between_confidence_and_hit_rate():
    # ten rows at 0.95 with nine right (gap 0.05), ten at 0.65 with three right (gap 0.35)
    confidence = np.array([0.95] * 10 + [0.65] * 10)
    correct = np.array([True] * 9 + [False] + [True] * 3 + [False] * 7)
    bins = reliability_bins(confidence, correct)
    assert [item["rows"] for item in bins] == [0] * 6 + [10, 0, 0, 10]
    assert bins[6]["accuracy"] == pytest.approx(0.3)
    assert bins[0]["mean_confidence"] is None
    assert ece_from_bins(bins) == pytest.approx(0.2)
    # a confidence of exactly 1.0 falls in the last bin
    assert reliability_bins(np.array([1.0]), np.array([True]))[-1]["rows"] == 1
    assert ece_from_bins(reliability_bins(np.array([]), np.array([]))) is None
    # the monitoring's tally of the same rows gives the same ECE, merged or not
    counts = calibration_counts(confidence[:7], correct[:7]) + calibration_counts(
        confidence[7:], correct[7:]
    )
    assert ece_from_counts(counts) == pytest.approx(0.2)
    # a missing or impossible confidence is left out of the live tally
    odd = calibration_counts(np.array([np.nan, 1.5, 0.95]), np.array([True, True, True]))
    assert odd[0].sum() == 1


def test_top_label_and_classwise_ece():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    confidence, correct = top_label(probabilities, ["Good", "Poor", "Standard"], ["Good"] * 3)
    np.testing.assert_allclose(confidence, [0.7, 0.6, 0.6])
    assert correct.tolist() == [True, False, False]
    # class Good: 0.7 (a Good row), 0.1 and 0.2 (Good rows too) -> bins 7, 1, 2
    # gaps 0.3, 0.9, 0.8 -> 2/3; Poor: 0.2, 0.6, 0.2, none Poor -> (0.2+0.6+0.2)/3;
    # Standard: 0.1, 0.3, 0.6 -> (0.1+0.3+0.6)/3
    expected = np.mean([(0.3 + 0.9 + 0.8) / 3, 1.0 / 3, 1.0 / 3])
    assert classwise_ece(
        probabilities, ["Good", "Poor", "Standard"], ["Good"] * 3
    ) == pytest.approx(expected)
    figures = calibration_figures(probabilities, ["Good", "Poor", "Standard"], ["Good"] * 3)
    assert figures.rows == 3
    # an answered class other than the most probable one (a prior correction chose it):
    # its probability is the confidence, and it is right when it is the true class
    answered = np.array([0, 0, 2])
    confidence, correct = top_label(
        probabilities, ["Good", "Poor", "Standard"], ["Good"] * 3, answered
    )
    np.testing.assert_allclose(confidence, [0.7, 0.1, 0.6])
    assert correct.tolist() == [True, True, False]
    chosen = calibration_figures(
        probabilities, ["Good", "Poor", "Standard"], ["Good"] * 3, answered=answered
    )
    assert chosen.ece == pytest.approx(ece_from_bins(reliability_bins(confidence, correct)))
    assert chosen.classwise_ece == pytest.approx(figures.classwise_ece)
    assert figures.log_loss == pytest.approx(-np.mean(np.log([0.7, 0.1, 0.2])))


def test_calibration_improves_the_ece_on_the_valid_rows_and_the_correction_only_decides(
    tmp_path,
):
    sides, pools, _ = split_pools()
    fit = STRONG_PRIOR_CORRECTION
    trial = fit_trial(
        pools[TRAIN], pools[VALID], sides[VALID][TARGET], TrialParams(4, 1.0, 3.0), fit
    )
    model = trial.model
    offsets = class_offsets(sides[TRAIN][TARGET], model.classes_, fit)
    assert trial.offsets == pytest.approx(offsets) and max(offsets) > 0
    # the offsets are kept beside the model, not in it
    _, bias = model.get_scale_and_bias()
    assert not np.any(np.asarray(bias) == pytest.approx(offsets))
    calibration = calibrate_temperature(
        model, pools[VALID], sides[VALID][TARGET], offsets=trial.offsets
    )
    valid_truth = sides[VALID][TARGET]
    scores = raw_scores(model, pools[VALID])
    answered = (scores + np.asarray(offsets)).argmax(axis=1)
    own = model.predict_proba(pools[VALID])
    # every figure is of the answered class, the argmax of the corrected scores
    assert calibration.before.ece == pytest.approx(
        calibration_figures(own, model.classes_, valid_truth, answered=answered).ece
    )
    assert (answered != own.argmax(axis=1)).any()  # the correction does change answers
    # the probabilities of the corrected scores are worse than the model's own
    corrected = calibration.prior_corrected
    assert corrected is not None
    assert calibration.before.classwise_ece < corrected.classwise_ece
    assert calibration.before.log_loss < corrected.log_loss
    # the temperature is applied only where it lowers the valid rows' ECE, and it does here
    assert calibration.applied
    assert calibration.after.ece < calibration.before.ece - 0.01
    assert calibration.after.log_loss < calibration.before.log_loss
    # the served confidence is no worse calibrated than the uncorrected model's answers,
    # and better than the corrected probabilities (what the bias-held correction served)
    uncorrected = calibration_figures(own, model.classes_, valid_truth)
    assert calibration.after.ece <= uncorrected.ece
    assert calibration.after.ece < corrected.ece

    test_answers = (raw_scores(model, pools[TEST]) + np.asarray(offsets)).argmax(axis=1)
    test_before = model.predict_proba(pools[TEST])
    apply_temperature(model, calibration.temperature)
    served = calibration.served_offsets()
    assert served == pytest.approx(np.asarray(offsets) / calibration.temperature)
    valid_after = model.predict_proba(pools[VALID])
    # the model itself now gives the calibrated probabilities ...
    np.testing.assert_allclose(
        valid_after,
        probabilities_from_scores(scores / calibration.temperature, "MultiClass"),
        atol=1e-9,
    )
    assert calibration_figures(
        valid_after, model.classes_, valid_truth, answered=answered
    ).ece == pytest.approx(calibration.after.ece)
    # ... and with the offsets over T, the same answered class on every row
    np.testing.assert_array_equal(
        (raw_scores(model, pools[VALID]) + np.asarray(served)).argmax(axis=1), answered
    )
    test_scores = raw_scores(model, pools[TEST])
    np.testing.assert_array_equal((test_scores + np.asarray(served)).argmax(axis=1), test_answers)
    # rows no choice touched agree: the test rows' ECE falls too
    truth = sides[TEST][TARGET]
    test_after = model.predict_proba(pools[TEST])
    assert (
        calibration_figures(test_after, model.classes_, truth, answered=test_answers).ece
        < calibration_figures(test_before, model.classes_, truth, answered=test_answers).ece
    )
    # and the temperature is part of the model file
    model.save_model(str(tmp_path / "calibrated.cbm"))
    loaded = CatBoostClassifier().load_model(str(tmp_path / "calibrated.cbm"))
    np.testing.assert_array_equal(loaded.predict_proba(pools[VALID]), valid_after)


def test_a_one_vs_all_model_is_calibrated_by_its_sigmoids():
    sides, pools, _ = split_pools(rows=1500, seed=3)
    fit = FitSettings(iterations=200, thread_count=2, learning_rate=0.3)
    trial = fit_trial(
        pools[TRAIN], pools[VALID], sides[VALID][TARGET], TrialParams(4, 1.0, 3.0), fit
    )
    scores = raw_scores(trial.model, pools[VALID])
    np.testing.assert_allclose(
        probabilities_from_scores(scores, "MultiClassOneVsAll"),
        trial.model.predict_proba(pools[VALID]),
        atol=1e-12,
    )
    calibration = calibrate_temperature(trial.model, pools[VALID], sides[VALID][TARGET])
    assert calibration.prior_corrected is None  # the seed fit has no correction
    if calibration.applied:
        assert calibration.after.ece < calibration.before.ece
    before = trial.model.predict_proba(pools[VALID]).argmax(axis=1)
    apply_temperature(trial.model, calibration.temperature)
    assert (trial.model.predict_proba(pools[VALID]).argmax(axis=1) == before).all()


def test_calibration_off_changes_nothing_and_bad_input_is_refused():
    sides, pools, _ = split_pools(rows=600, seed=5)
    trial = fit_trial(
        pools[TRAIN],
        pools[VALID],
        sides[VALID][TARGET],
        TrialParams(4, 1.0, 3.0),
        FitSettings(iterations=30, thread_count=2),
    )
    off = calibrate_temperature(trial.model, pools[VALID], sides[VALID][TARGET], method="none")
    assert not off.applied and off.temperature == 1.0 and off.after is None
    assert off.before.rows == len(sides[VALID])
    with pytest.raises(ValueError, match="calibration method"):
        calibrate_temperature(trial.model, pools[VALID], sides[VALID][TARGET], method="isotonic")
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(trial.model, 0.0)
    with pytest.raises(ValueError, match="loss"):
        probabilities_from_scores(np.zeros((1, 3)), "RMSE")
    assert pd.Series(off.document()["before"]["bins"]).map(len).eq(5).all()
