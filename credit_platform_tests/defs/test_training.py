"""Grid search, MLflow tracking and the BentoML hand-off of `credit_score_model`: valid rows
choose the trial, test rows report it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from dagster import materialize

from api.predictor import Predictor
from credit_platform.core import settings
from credit_platform.core.answers import OFFSETS_KEY, AnswerRule
from credit_platform.core.calibration import calibration_figures
from credit_platform.core.db import init_schema
from credit_platform.core.features import LABELS, MODEL_FEATURES, NUMERIC_FEATURES, TARGET
from credit_platform.core.model_input import fit_scalers, prepare_model_input, uses_derived_features
from credit_platform.core.model_store import list_model_tags, load_model_bundle
from credit_platform.core.settings import MODEL_NAME
from credit_platform.core.training import (
    Evaluation,
    FitSettings,
    TrialParams,
    TrialResult,
    apply_class_offsets,
    best_trial,
    class_offsets,
    final_model,
    fit_trial,
    learning_curves,
    make_pool,
    markdown_table,
    parameter_grid,
    predict_labels,
)
from credit_platform.defs.assets.model import (
    CALIBRATION_ARTIFACT,
    CONFUSION_MATRIX_IMAGE,
    DECISION_OFFSETS_ARTIFACT,
    MODEL_CARD_ARTIFACT,
    RELIABILITY_DIAGRAM_IMAGE,
    SEGMENTS_ARTIFACT,
    credit_score_model,
)
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, TRAIN, VALID, grouped_split
from credit_platform.defs.assets.split import train_valid_split as split_asset
from credit_platform.defs.resources.mlflow_tracking import (
    EXPERIMENT_KIND_TAG,
    MAX_METRICS_PER_BATCH,
    MODEL_TRAINING_KIND,
    ExperimentDeleted,
    MlflowTrackingResource,
)
from credit_platform_tests.training_fixtures import (
    insert_partition,
    synthetic_partition,
    tiny_grid,
    training_resources,
)

DAY = date(2025, 1, 31)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARTITION = DAY.isoformat()
MODEL_METADATA_KEYS = {
    "model_tag",
    "mlflow_run_id",
    "mlflow_parent_run_id",
    "mlflow_run",
    "mlflow_model_version",
    "best_params",
    "test_accuracy",
    "test_macro_f1",
    "test_recall_Good",
    "test_recall_Standard",
    "test_recall_Poor",
    "val_accuracy",
    "val_macro_f1",
    "trials",
    "confusion_matrix",
    "feature_importance",
    "rows_train",
    "rows_valid",
    "rows_test",
    "test_ece",
    "test_ece_uncalibrated",
    "val_ece_before_calibration",
    "calibration_temperature",
    "calibration",
    "calibration_applied",
    "test_segments",
    "model_card",
    "model_card_artifact",
    "reliability_diagram",
}


def test_parameter_grid_is_the_full_product_in_a_stable_order():
    grid = parameter_grid([4, 6, 8], [0.5, 0.75, 1.0], [1, 3, 5])
    assert len(grid) == 27
    assert len(set(grid)) == 27
    assert grid[0] == TrialParams(depth=4, rsm=0.5, l2_leaf_reg=1.0)
    assert grid[-1] == TrialParams(depth=8, rsm=1.0, l2_leaf_reg=5.0)
    with pytest.raises(ValueError, match="depths"):
        parameter_grid([], [0.5], [1])
    with pytest.raises(ValueError, match="rsm"):
        parameter_grid([4], [1.5], [1])


def test_evaluation_reports_recall_per_label():
    confusion = np.array([[8, 2, 0], [1, 6, 3], [0, 0, 0]])
    evaluation = Evaluation(accuracy=0.7, macro_f1=0.5, confusion=confusion)
    assert evaluation.recall == {"Good": 0.8, "Standard": 0.6, "Poor": 0.0}
    assert evaluation.metrics("test") == {
        "test_accuracy": 0.7,
        "test_macro_f1": 0.5,
        "test_recall_Good": 0.8,
        "test_recall_Standard": 0.6,
        "test_recall_Poor": 0.0,
    }


def _result(accuracy: float, macro_f1: float) -> TrialResult:
    evaluation = Evaluation(accuracy=accuracy, macro_f1=macro_f1, confusion=np.zeros((3, 3)))
    return TrialResult(
        params=TrialParams(4, 1.0, 3.0), model=None, evaluation=evaluation, best_iteration=1
    )


def test_best_trial_is_highest_accuracy_then_f1_then_first():
    low, high, high_better_f1, high_again = (
        _result(0.6, 0.9),
        _result(0.7, 0.5),
        _result(0.7, 0.6),
        _result(0.7, 0.6),
    )
    assert best_trial([low, high]) is high
    assert best_trial([high, high_better_f1, low]) is high_better_f1
    assert best_trial([high_better_f1, high_again]) is high_better_f1
    with pytest.raises(ValueError):
        best_trial([])


def test_best_trial_can_be_chosen_by_macro_f1():
    accurate, balanced = _result(0.7, 0.5), _result(0.68, 0.6)
    assert best_trial([accurate, balanced]) is accurate
    assert best_trial([accurate, balanced], "macro_f1") is balanced
    with pytest.raises(ValueError, match="metric"):
        best_trial([accurate], "recall")
    with pytest.raises(ValueError, match="selection_metric"):
        FitSettings(selection_metric="recall")
    with pytest.raises(ValueError, match="class_weights"):
        FitSettings(class_weights="heavy")


def test_the_seed_grid_stays_selectable():
    seed = settings.TRAINING_GRIDS["seed"]
    assert (seed["depths"], seed["rsms"], seed["l2_leaf_regs"]) == (
        [4, 6, 8],
        [0.5, 0.75, 1.0],
        [1.0, 3.0, 5.0],
    )
    assert seed["learning_rate"] == 0.3 and seed["loss_function"] == "MultiClassOneVsAll"
    assert seed["early_stopping_rounds"] == 50 and seed["selection_metric"] == "accuracy"
    # the seed design takes the inputs as they are, and serves its train-only model
    assert not seed["derived_features"] and not seed["refit_on_train_valid"]
    assert seed["class_offset_strength"] == 0 and seed["class_weights"] == "none"
    assert set(settings.TRAINING_GRIDS) == set(settings.TRAINING_GRIDS)


def test_markdown_table_escapes_cell_separators():
    table = markdown_table(["name", "value"], [("a|b", 0.123456), ("c", 2)])
    assert table.splitlines() == [
        "| name | value |",
        "| --- | --- |",
        "| a\\|b | 0.1235 |",
        "| c | 2 |",
    ]


def test_a_trial_learns_the_labels_from_prepared_input():
    split = grouped_split(synthetic_partition(DAY, rows=400), valid_fraction=0.2, seed=42)
    train = split[split[SPLIT_COLUMN] == TRAIN]
    valid = split[split[SPLIT_COLUMN] == VALID]
    fitted = fit_scalers(train)
    train_pool = make_pool(prepare_model_input(train, fitted), train[TARGET])
    valid_pool = make_pool(prepare_model_input(valid, fitted), valid[TARGET])

    result = fit_trial(
        train_pool,
        valid_pool,
        valid[TARGET],
        TrialParams(depth=4, rsm=1.0, l2_leaf_reg=3.0),
        FitSettings(iterations=60, early_stopping_rounds=10, thread_count=2),
    )

    majority = valid[TARGET].value_counts(normalize=True).max()
    assert result.evaluation.accuracy > majority + 0.1
    assert result.evaluation.confusion.sum() == len(valid)
    assert 0 <= result.best_iteration < 60
    assert set(result.model.classes_) == set(LABELS)
    assert list(result.model.feature_names_) == list(MODEL_FEATURES)
    # one value per iteration run (early stopping stops at best + 10), train and valid
    curves = learning_curves(result.model)
    loss = FitSettings().loss_function
    iterations = result.model.get_evals_result()["learn"][loss]
    assert len(curves[f"curve_train_{loss}"]) == len(iterations) > result.best_iteration
    assert len(curves[f"curve_valid_{loss}"]) == len(iterations)
    assert curves[f"curve_valid_{loss}"][0] > min(curves[f"curve_valid_{loss}"])
    assert "curve_valid_Accuracy" in curves


def _synthetic_pools(rows: int = 400):
    split = grouped_split(synthetic_partition(DAY, rows=rows), valid_fraction=0.2, seed=42)
    train = split[split[SPLIT_COLUMN] == TRAIN]
    valid = split[split[SPLIT_COLUMN] == VALID]
    fitted = fit_scalers(train)
    train_input = prepare_model_input(train, fitted, derived=True)
    valid_input = prepare_model_input(valid, fitted, derived=True)
    both = make_pool(
        pd.concat([train_input, valid_input]), pd.concat([train[TARGET], valid[TARGET]])
    )
    return (
        train,
        valid,
        make_pool(train_input, train[TARGET]),
        make_pool(valid_input, valid[TARGET]),
        both,
    )


def test_class_offsets_raise_rarer_classes_by_their_prior():
    labels = ["Standard"] * 50 + ["Poor"] * 25 + ["Good"] * 10
    offsets = class_offsets(
        labels, ["Good", "Poor", "Standard"], FitSettings(class_offset_strength=0.5)
    )
    assert offsets == pytest.approx([0.5 * np.log(5), 0.5 * np.log(2), 0.0])
    assert class_offsets(labels, ["Good", "Poor", "Standard"], FitSettings()) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="Poor"):
        class_offsets(
            ["Good", "Standard"], ["Good", "Poor", "Standard"], FitSettings(class_offset_strength=1)
        )
    with pytest.raises(ValueError, match="class_offset_strength"):
        FitSettings(class_offset_strength=-0.5)


def test_a_trial_with_class_offsets_answers_the_shifted_scores_with_its_own_probabilities(
    tmp_path,
):
    train, valid, train_pool, valid_pool, _ = _synthetic_pools()
    params = TrialParams(depth=4, rsm=1.0, l2_leaf_reg=3.0)
    plain_fit = FitSettings(
        iterations=40, loss_function="MultiClass", eval_metric="MultiClass", thread_count=2
    )
    shifted_fit = FitSettings(**{**plain_fit.__dict__, "class_offset_strength": 1.0})
    plain = fit_trial(train_pool, valid_pool, valid[TARGET], params, plain_fit)
    shifted = fit_trial(train_pool, valid_pool, valid[TARGET], params, shifted_fit)

    offsets = np.array(class_offsets(train[TARGET], shifted.model.classes_, shifted_fit))
    assert offsets.max() > 0 and plain.offsets == ()
    assert shifted.offsets == pytest.approx(offsets)
    # the model is the plain one: the correction is not in its probabilities ...
    np.testing.assert_allclose(
        shifted.model.predict_proba(valid_pool), plain.model.predict_proba(valid_pool)
    )
    # ... it chooses the label: the trial is evaluated on argmax(scores + offsets)
    scores = shifted.model.predict(valid_pool, prediction_type="RawFormulaVal")
    answered = np.asarray(shifted.model.classes_)[(scores + offsets).argmax(axis=1)]
    np.testing.assert_array_equal(
        predict_labels(shifted.model, valid_pool, shifted.offsets), answered
    )
    assert shifted.evaluation.accuracy == pytest.approx(
        (answered == valid[TARGET].to_numpy()).mean()
    )
    # Put in the bias (as models were saved before), the offsets shift the softmax and
    # travel in the model file.
    apply_class_offsets(shifted.model, offsets)
    expected = plain.model.predict_proba(valid_pool) * np.exp(offsets)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shifted.model.predict_proba(valid_pool), expected, rtol=1e-9)
    shifted.model.save_model(str(tmp_path / "shifted.cbm"))
    loaded = type(shifted.model)().load_model(str(tmp_path / "shifted.cbm"))
    np.testing.assert_array_equal(
        loaded.predict_proba(valid_pool), shifted.model.predict_proba(valid_pool)
    )


def test_the_final_model_is_the_chosen_trial_refit_on_train_and_valid_rows():
    train, valid, train_pool, valid_pool, both = _synthetic_pools()
    fit = FitSettings(
        iterations=80,
        early_stopping_rounds=10,
        learning_rate=0.2,
        loss_function="MultiClass",
        eval_metric="MultiClass",
        thread_count=2,
        class_offset_strength=0.4,
        refit_on_train_valid=True,
    )
    chosen = fit_trial(train_pool, valid_pool, valid[TARGET], TrialParams(4, 1.0, 3.0), fit)
    kept = final_model(chosen, lambda: both, len(train), FitSettings())
    assert kept.model is chosen.model and kept.offsets == chosen.offsets

    refit, offsets = final_model(chosen, lambda: both, len(train), fit)
    assert refit is not chosen.model
    rounds = round((chosen.best_iteration + 1) * (len(train) + len(valid)) / len(train))
    assert refit.tree_count_ == rounds > chosen.best_iteration + 1
    assert refit.get_params()["depth"] == 4
    assert list(refit.feature_names_) == list(chosen.model.feature_names_)
    # its offsets are counted on the rows it was fit on, and kept out of its bias
    assert offsets == pytest.approx(class_offsets(both.get_label(), refit.classes_, fit))
    _, bias = refit.get_scale_and_bias()
    assert np.asarray(bias) != pytest.approx(offsets)


def _materialize_partition(tmp_path, sqlite_url, partition: str, seed: int):
    engine = init_schema(sqlite_url)
    insert_partition(engine, synthetic_partition(date.fromisoformat(partition), 300, seed))
    engine.dispose()
    return materialize(
        [split_asset, scalers, credit_score_model],
        partition_key=partition,
        resources=training_resources(tmp_path, sqlite_url),
        run_config={"ops": {"credit_score_model": {"config": tiny_grid()}}},
    )


def test_training_tracks_every_trial_and_hands_the_best_to_bentoml(tmp_path, sqlite_url):
    tags_before = set(list_model_tags())
    result = _materialize_partition(tmp_path, sqlite_url, PARTITION, seed=7)

    summary = result.output_for_node("credit_score_model")
    fitted_scalers = result.output_for_node("scalers")
    tracking = training_resources(tmp_path, sqlite_url)["mlflow_tracking"]
    client = tracking.client()

    # One experiment, one FINISHED parent with a FINISHED child per grid point.
    experiments = client.search_experiments()
    assert [e.name for e in experiments if e.name != "Default"] == ["credit_score_tests"]
    runs = client.search_runs([tracking.experiment_id()])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 2
    (parent,) = parents
    assert parent.info.run_name == f"credit_score_model/{PARTITION}"
    assert parent.data.tags["partition"] == PARTITION
    assert parent.data.tags["dagster_run_id"] == result.run_id
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    for child in children:
        assert {"val_accuracy", "val_macro_f1", "best_iteration"} <= set(child.data.metrics)
        assert {"depth", "rsm", "l2_leaf_reg"} <= set(child.data.params)
    # The default grid (the `tuned` preset unless CREDIT_TRAINING_GRID says otherwise) picks
    # its trial by its selection metric on the valid rows.
    preset = settings.TRAINING_GRIDS[settings.training_grid()]
    first, second = (
        ("val_macro_f1", "val_accuracy")
        if preset["selection_metric"] == "macro_f1"
        else ("val_accuracy", "val_macro_f1")
    )
    best_child = max(children, key=lambda run: (run.data.metrics[first], run.data.metrics[second]))
    assert summary["mlflow_run_id"] == best_child.info.run_id
    assert summary["validation_metrics"]["val_accuracy"] == pytest.approx(
        best_child.data.metrics["val_accuracy"]
    )
    assert summary["trials"] == 2
    # The parent run reports the chosen trial's test metrics, and its confusion matrix.
    for name in ("test_accuracy", "test_macro_f1", "test_recall_Good"):
        assert parent.data.metrics[name] == pytest.approx(summary["metrics"][name])
    confusion = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/test_confusion_matrix.json")
    assert confusion["labels"] == list(LABELS)
    image = client.download_artifacts(parent.info.run_id, CONFUSION_MATRIX_IMAGE, str(tmp_path))
    assert Path(image).read_bytes()[:8] == PNG_SIGNATURE
    # Learning curves: per iteration, train and valid, as step metrics of every trial.
    experiment = client.get_experiment(tracking.experiment_id())
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    loss = preset["loss_function"]
    for child in children:
        curves = {name for name in child.data.metrics if name.startswith("curve_")}
        assert {f"curve_train_{loss}", f"curve_valid_{loss}"} <= curves, curves
        history = client.get_metric_history(child.info.run_id, f"curve_valid_{loss}")
        assert sorted(m.step for m in history) == list(range(len(history)))
        assert len(history) > 1

    # A new registered version, tagged with the partition and the BentoML tag.
    version = client.get_model_version(MODEL_NAME, summary["mlflow_model_version"])
    # the version is the served model: the chosen trial's, or its refit on train + valid rows
    # (logged in the parent run)
    refits = preset["refit_on_train_valid"]
    assert version.run_id == (parent.info.run_id if refits else best_child.info.run_id)
    assert ("final_iterations" in parent.data.metrics) == refits
    assert version.tags["partition"] == PARTITION
    assert version.tags["bento_tag"] == summary["bento_tag"]

    # The BentoML store holds the same model with the scalers it was trained with.
    assert summary["bento_tag"] not in tags_before
    assert summary["bento_tag"] in list_model_tags()
    bundle = load_model_bundle(summary["bento_tag"])
    assert bundle.partition == PARTITION
    for name, value in summary["metrics"].items():
        assert bundle.metadata["metrics"][name] == pytest.approx(value)
    assert bundle.metadata["metrics"]["test_confusion_matrix"] == confusion
    assert bundle.metadata["validation_metrics"]["val_accuracy"] == pytest.approx(
        summary["validation_metrics"]["val_accuracy"]
    )
    assert bundle.metadata["params"]["depth"] == summary["params"]["depth"]
    assert bundle.metadata["params"]["learning_rate"] == preset["learning_rate"]
    assert bundle.metadata["params"]["class_weights"] == preset["class_weights"]
    for key in ("derived_features", "class_offset_strength", "refit_on_train_valid"):
        assert bundle.metadata["params"][key] == preset[key]
    assert uses_derived_features(bundle.model) == preset["derived_features"]
    assert bundle.metadata["mlflow_run_id"] == best_child.info.run_id
    assert bundle.metadata["mlflow_model_version"] == summary["mlflow_model_version"]
    assert bundle.metadata["dagster_run_id"] == result.run_id
    for name in NUMERIC_FEATURES:
        assert bundle.scalers[name].center_[0] == fitted_scalers[name].center_[0]
        assert bundle.scalers[name].scale_[0] == fitted_scalers[name].scale_[0]
    stored = pd.read_parquet(tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet")
    # The reported accuracy is the saved model's on the stored split's test rows.
    test = stored[stored[SPLIT_COLUMN] == TEST]
    assert sum(confusion["rows"], []) and sum(map(sum, confusion["rows"])) == len(test)
    derived = uses_derived_features(bundle.model)
    test_input = prepare_model_input(test, bundle.scalers, derived=derived)
    # A prior correction is kept beside the model (its metadata), in the saved model's score
    # units; the label is chosen with it, the probabilities are the model's own.
    rule = AnswerRule.of(bundle.model, bundle.metadata)
    assert (rule.offsets is not None) == bool(preset["class_offset_strength"])
    probabilities, answered = rule.answer(bundle.model, test_input)
    if rule.offsets is None:
        np.testing.assert_array_equal(probabilities, bundle.model.predict_proba(test_input))
    else:
        np.testing.assert_allclose(probabilities, bundle.model.predict_proba(test_input))
        scores = bundle.model.predict(test_input, prediction_type="RawFormulaVal")
        np.testing.assert_array_equal(answered, (scores + rule.offsets).argmax(axis=1))
    predicted = np.asarray(bundle.model.classes_)[answered]
    assert (predicted == test[TARGET].to_numpy()).mean() == pytest.approx(
        summary["metrics"]["test_accuracy"]
    )
    # The API's predictor scores the saved model (derived features, class offsets and all)
    # exactly as the model does in process.
    records = [
        {name: None if pd.isna(row[name]) else row[name] for name in MODEL_FEATURES}
        for row in test.to_dict(orient="records")
    ]
    served = Predictor(bundle)
    np.testing.assert_allclose(served.probabilities(records), probabilities, rtol=0, atol=1e-12)
    assert [answer.label for answer in served.predict(records)] == predicted.tolist()

    (materialization,) = result.asset_materializations_for_node("credit_score_model")
    metadata = materialization.metadata
    assert set(metadata) >= MODEL_METADATA_KEYS
    _assert_calibrated_and_carded(
        metadata, summary, parent, client, tmp_path, bundle, test, probabilities, answered
    )
    assert metadata["model_tag"].value == summary["bento_tag"]
    assert "bento_tag" not in metadata  # it holds a model's tag, not a Bento's
    assert metadata["trials"].value == 2
    assert metadata["test_accuracy"].value == summary["metrics"]["test_accuracy"]
    sizes = [metadata[f"rows_{side}"].value for side in ("train", "valid", "test")]
    assert sum(sizes) == 300 and min(sizes) >= 55
    assert "| Good |" in metadata["confusion_matrix"].value
    assert metadata["feature_importance"].value.count("\n") == 11  # header, rule, top 10

    # A second partition reuses the experiment: still one, now with two parent runs.
    _materialize_partition(tmp_path, sqlite_url, "2025-02-01", seed=8)
    assert [e.name for e in client.search_experiments() if e.name != "Default"] == [
        "credit_score_tests"
    ]
    runs = client.search_runs([tracking.experiment_id()])
    assert sum("mlflow.parentRunId" not in run.data.tags for run in runs) == 2
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 2


def _tracking(tmp_path) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="resource_tests",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def test_failed_runs_are_closed_as_failed(tmp_path):
    tracking = _tracking(tmp_path)
    with pytest.raises(RuntimeError, match="trial broke"), tracking.start_run("parent") as parent:
        with tracking.start_run("ok-trial", nested=True) as ok_trial:
            pass
        with tracking.start_run("bad-trial", nested=True) as bad_trial:
            raise RuntimeError("trial broke")

    client = tracking.client()
    assert client.get_run(ok_trial.info.run_id).info.status == "FINISHED"
    assert client.get_run(bad_trial.info.run_id).info.status == "FAILED"
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    experiment = client.get_experiment(tracking.experiment_id())
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
    assert mlflow.active_run() is None


def test_a_deleted_experiment_is_reported_not_recreated(tmp_path):
    tracking = _tracking(tmp_path)
    experiment_id = tracking.experiment_id()
    tracking.client().delete_experiment(experiment_id)
    with pytest.raises(ExperimentDeleted, match="restore"):
        tracking.experiment_id()
    assert tracking.client().get_experiment(experiment_id).lifecycle_stage == "deleted"


def test_an_interrupted_run_is_closed_as_killed(tmp_path):
    tracking = _tracking(tmp_path)
    with pytest.raises(KeyboardInterrupt), tracking.start_run("interrupted") as run:
        raise KeyboardInterrupt
    assert tracking.client().get_run(run.info.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_a_local_store_keeps_artifacts_under_the_platform_home(tmp_path):
    tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="defaults"
    )
    experiment = tracking.client().get_experiment(tracking.experiment_id())
    assert experiment.artifact_location == settings.mlflow_artifact_root().as_uri()
    assert tracking.experiment_id() == experiment.experiment_id  # found, not created again


def test_the_experiment_is_marked_as_model_training_and_curves_are_step_metrics(tmp_path):
    tracking = _tracking(tmp_path)
    client = tracking.client()
    # An experiment made before the kind was set (MLflow 3 would open it as GenAI) gets it.
    old = client.create_experiment("resource_tests")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert tracking.experiment_id() == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    fresh = _tracking(tmp_path / "fresh")
    tags = fresh.client().get_experiment(fresh.experiment_id()).tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND

    steps = MAX_METRICS_PER_BATCH + 300  # more values than one batch takes
    with tracking.start_run("curves") as run:
        logged = tracking.log_step_metrics(
            run.info.run_id,
            {"curve_train_x": [1.0 / (n + 1) for n in range(steps)], "curve_valid_x": [0.5, 0.4]},
        )
        tracking.log_png(run.info.run_id, PNG_SIGNATURE + b"rest", "images/tiny.png")
    assert logged == steps + 2
    history = client.get_metric_history(run.info.run_id, "curve_train_x")
    assert sorted(m.step for m in history) == list(range(steps))
    assert {m.step: m.value for m in history}[9] == pytest.approx(0.1)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images")] == ["images/tiny.png"]


def _assert_calibrated_and_carded(
    metadata, summary, parent, client, tmp_path, bundle, test, served, answered
):
    """Calibration travels in the saved model, its figures are in the metadata and MLflow,
    and the model card is an artifact of the parent run linked from the asset."""
    calibration = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/{CALIBRATION_ARTIFACT}")
    applied = calibration["applied"]
    assert metadata["calibration_applied"].value == applied == summary["calibration"]["applied"]
    before = calibration["before"]["ece"]
    assert metadata["val_ece_before_calibration"].value == pytest.approx(before)
    if applied:
        # applied only where it lowers the valid rows' ECE, and the model carries it
        assert calibration["after"]["ece"] < before
        assert metadata["calibration_temperature"].value == pytest.approx(
            calibration["temperature"]
        )
    else:
        assert metadata["calibration_temperature"].value == 1.0
    # the served probabilities of the answered labels are the ones the test ECE reports
    served_ece = calibration_figures(
        served, bundle.model.classes_, test[TARGET], answered=answered
    ).ece
    assert metadata["test_ece"].value == pytest.approx(served_ece)
    assert parent.data.metrics["test_ece"] == pytest.approx(served_ece)
    assert calibration["test"]["ece"] == pytest.approx(served_ece)
    if not applied:
        assert metadata["test_ece_uncalibrated"].value == pytest.approx(served_ece)
    offsets = bundle.metadata.get(OFFSETS_KEY)
    if offsets is not None:
        # the correction's own probabilities are reported beside, never served
        assert {"val_ece_prior_corrected", "test_ece_prior_corrected"} <= set(metadata)
        assert calibration["served_decision_offsets"] == offsets
        logged = mlflow.artifacts.load_dict(
            f"{parent.info.artifact_uri}/{DECISION_OFFSETS_ARTIFACT}"
        )
        assert logged == offsets
    image = client.download_artifacts(parent.info.run_id, RELIABILITY_DIAGRAM_IMAGE, str(tmp_path))
    assert Path(image).read_bytes()[:8] == PNG_SIGNATURE
    segments = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/{SEGMENTS_ARTIFACT}")
    ages = [row for row in segments["segments"] if row["feature"] == "age"]
    assert sum(row["rows"] for row in ages) == len(test)
    assert "| age | under 25 |" in metadata["test_segments"].value
    card = client.download_artifacts(parent.info.run_id, MODEL_CARD_ARTIFACT, str(tmp_path))
    text = Path(card).read_text()
    assert text == metadata["model_card"].value
    for heading in (
        "## Data",
        "## Metrics on the test rows",
        "## Calibration",
        "## Segments (test rows)",
        "## What drives the answers",
        "## Training",
        "## Intended use",
        "## Known limits",
    ):
        assert heading in text
    assert summary["bento_tag"] in text
    assert f"| test | {len(test)} |" in text
    assert "Preset `custom`" in text  # the tiny grid is none of the presets
    shap_section = text.split("## What drives the answers")[1].split("## Training")[0]
    shap_lines = [line for line in shap_section.splitlines() if line.startswith("| ")]
    assert len(shap_lines) == 12  # header, rule, the top 10
    assert all(line.split(" | ")[0][2:] in bundle.model.feature_names_ for line in shap_lines[2:])
    assert metadata["model_card_artifact"].value.endswith(
        f"/runs/{parent.info.run_id}/artifactPath/{MODEL_CARD_ARTIFACT}"
    )
