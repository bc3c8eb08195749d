"""`credit_score_model`: grid-searched CatBoost, tracked in MLflow, saved to BentoML.

Each grid point is a nested MLflow run under one parent run per partition; the best on the
valid rows (refit on train + valid rows when the grid says so, logged in the parent run) is
scored once on the test rows, and those test metrics are what the parent run,
the new registered model version, the `credit_score_classifier` in the BentoML store (saved
with its scalers) and the asset's metadata report.

Decision and probability are kept apart (`core/answers.py`): the prior correction of the
`tuned` preset is saved beside the model as decision offsets (BentoML metadata, MLflow
`decision_offsets.json`), which choose the label; the model's own probabilities give the
confidence. Calibration (`core/calibration.py`): a temperature is fitted on the valid rows as
the chosen trial (fit on train rows only) scores them, and kept when it lowers the ECE of
the confidence served on them; it is stored in the served model's scale and bias (the
offsets divided by it too), so the API's `confidence` is the calibrated probability of the
answered class, and the answered class is unchanged. The test rows only report: ECE before
and after, a reliability diagram, the segment table (`core/fairness.py`) and the model card.

The drift reference is computed here, once, from the rows the served model was fit on (train,
plus valid when it was refit on both) and its predictions on the test rows, and stored with
it (MLflow artifact, BentoML metadata): monitoring compares a day's requests with what this
model saw, never with source tables that keep changing.
"""

import json
from typing import Any

import catboost
import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from credit_platform.core import settings
from credit_platform.core.answers import answer_figures, offsets_document
from credit_platform.core.calibration import (
    CALIBRATION_METHODS,
    apply_temperature,
    calibrate_temperature,
)
from credit_platform.core.charts import confusion_matrix_png, reliability_diagram_png
from credit_platform.core.fairness import segment_confusions, segment_markdown, segment_table
from credit_platform.core.features import TARGET
from credit_platform.core.model_card import ModelCardFacts, model_card_markdown
from credit_platform.core.model_input import Scalers, prepare_model_input
from credit_platform.core.model_store import save_model_bundle
from credit_platform.core.monitoring import (
    confusion_prediction_mix,
    profile_document,
    reference_profile,
)
from credit_platform.core.settings import MODEL_NAME
from credit_platform.core.training import (
    FitSettings,
    TrialResult,
    best_trial,
    confusion_document,
    confusion_markdown,
    evaluate,
    feature_importances,
    final_model,
    fit_trial,
    learning_curves,
    make_pool,
    markdown_table,
    mean_abs_shap,
    parameter_grid,
    predict_labels,
    preset_name,
)
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, TRAIN, VALID, side_rows
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource

MODEL_ARTIFACT = "model"
CONFUSION_MATRIX_IMAGE = "test_confusion_matrix.png"
DRIFT_REFERENCE_ARTIFACT = "drift_reference.json"
RELIABILITY_DIAGRAM_IMAGE = "test_reliability_diagram.png"
DECISION_OFFSETS_ARTIFACT = "decision_offsets.json"
CALIBRATION_ARTIFACT = "calibration.json"
SEGMENTS_ARTIFACT = "test_segments.json"
MODEL_CARD_ARTIFACT = "model_card.md"


def _grid_default(key: str) -> Any:
    """Default of a grid field: the CREDIT_TRAINING_GRID preset (`settings.TRAINING_GRIDS`,
    `tuned` unless set), read when the code location loads, so the launchpad shows it and a
    run launched without grid config uses it."""
    return settings.training_grid_preset()[key]


class TrainingConfig(Config):
    """The grid of depth × rsm × l2 and the fit settings (default: the CREDIT_TRAINING_GRID
    preset); tests shrink the grid and iterations."""

    depths: list[int] = Field(
        default=_grid_default("depths"), description="CatBoost tree depths to try."
    )
    rsms: list[float] = Field(
        default=_grid_default("rsms"),
        description="Feature subsampling (rsm) values to try.",
    )
    l2_leaf_regs: list[float] = Field(
        default=_grid_default("l2_leaf_regs"),
        description="L2 leaf regularisation values to try.",
    )
    iterations: int = Field(
        default=_grid_default("iterations"),
        ge=1,
        description="Upper bound on boosting rounds.",
    )
    learning_rate: float = Field(default=_grid_default("learning_rate"), gt=0)
    loss_function: str = Field(
        default=_grid_default("loss_function"),
        description="CatBoost loss: MultiClassOneVsAll or MultiClass.",
    )
    eval_metric: str = Field(
        default=_grid_default("eval_metric"),
        description="CatBoost metric on the valid rows that early stopping follows.",
    )
    early_stopping_rounds: int = Field(
        default=_grid_default("early_stopping_rounds"),
        ge=1,
        description="Stop after this many rounds without a better valid score.",
    )
    class_weights: str = Field(
        default=_grid_default("class_weights"),
        description="CatBoost auto_class_weights: none, Balanced or SqrtBalanced.",
    )
    selection_metric: str = Field(
        default=_grid_default("selection_metric"),
        description="Valid-row score that picks the best trial: accuracy or macro_f1.",
    )
    class_offset_strength: float = Field(
        default=_grid_default("class_offset_strength"),
        ge=0,
        le=2,
        description="Prior correction: add strength x log(largest class count / class "
        "count) to each class's raw score (0: none).",
    )
    refit_on_train_valid: bool = Field(
        default=_grid_default("refit_on_train_valid"),
        description="Serve the chosen trial refit on train + valid rows (its best rounds "
        "scaled by the row ratio) instead of the train-only model.",
    )
    derived_features: bool = Field(
        default=_grid_default("derived_features"),
        description="Add the features derived from the inputs (ratios, loan counts, the "
        "parts of payment_behaviour); the API computes them the same way.",
    )
    calibration: str = Field(
        default="temperature",
        description="temperature: fit one temperature on the valid rows (as the chosen "
        "trial scores them) and keep it in the served model when it lowers their ECE; none: "
        "serve the probabilities as trained.",
    )
    thread_count: int = Field(default=-1, description="CatBoost threads; -1 uses every core.")
    random_seed: int = Field(default=42)

    def grid_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in settings.TRAINING_GRIDS["seed"]}

    def fit_settings(self) -> FitSettings:
        return FitSettings(
            iterations=self.iterations,
            learning_rate=self.learning_rate,
            early_stopping_rounds=self.early_stopping_rounds,
            thread_count=self.thread_count,
            random_seed=self.random_seed,
            loss_function=self.loss_function,
            eval_metric=self.eval_metric,
            class_weights=self.class_weights,
            selection_metric=self.selection_metric,
            class_offset_strength=self.class_offset_strength,
            refit_on_train_valid=self.refit_on_train_valid,
        )


def _fixed_params(fit: FitSettings, derived: bool) -> dict[str, Any]:
    return {
        "derived_features": derived,
        "loss_function": fit.loss_function,
        "learning_rate": fit.learning_rate,
        "iterations": fit.iterations,
        "early_stopping_rounds": fit.early_stopping_rounds,
        "eval_metric": fit.eval_metric,
        "class_weights": fit.class_weights,
        "selection_metric": fit.selection_metric,
        "class_offset_strength": fit.class_offset_strength,
        "refit_on_train_valid": fit.refit_on_train_valid,
        "random_seed": fit.random_seed,
    }


def _trial_run_name(index: int, result_params: dict[str, Any]) -> str:
    described = " ".join(f"{name}={value}" for name, value in result_params.items())
    return f"trial-{index:02d} {described}"


@asset(
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="continuous_training",
    kinds={"catboost", "mlflow", "bentoml"},
    description=(
        "CatBoost grid search (depth × rsm × l2_leaf_reg) tracked in MLflow; the best trial "
        "on the valid rows is scored once on the test rows, registered as "
        f"{MODEL_NAME} and saved to BentoML with those test metrics."
    ),
)
def credit_score_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    mlflow_tracking: MlflowTrackingResource,
    fairness_policy: FairnessPolicyResource,
    train_valid_split: pd.DataFrame,
    scalers: Scalers,
) -> Output[dict[str, Any]]:
    import mlflow
    from mlflow.models import infer_signature

    partition = context.partition_key
    if config.calibration not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
            f"not {config.calibration!r}"
        )
    policy = fairness_policy.policy
    train, valid, test = (side_rows(train_valid_split, side) for side in (TRAIN, VALID, TEST))
    if test.empty:
        raise ValueError(
            f"partition {partition}: the stored split has no test rows; materialize "
            "train_valid_split again"
        )
    derived = config.derived_features
    train_input = prepare_model_input(train, scalers, derived=derived)
    valid_input = prepare_model_input(valid, scalers, derived=derived)
    train_pool = make_pool(train_input, train[TARGET])
    valid_pool = make_pool(valid_input, valid[TARGET])
    grid = parameter_grid(config.depths, config.rsms, config.l2_leaf_regs)
    fit = config.fit_settings()
    fixed = _fixed_params(fit, derived)
    tags = {"dagster_run_id": context.run.run_id, "partition": partition}
    requirements = [f"catboost=={catboost.__version__}"]  # skips a slow inference subprocess

    with mlflow_tracking.start_run(f"credit_score_model/{partition}", tags=tags) as parent:
        mlflow.log_params(
            {
                **fixed,
                "grid_depths": json.dumps(config.depths),
                "grid_rsms": json.dumps(config.rsms),
                "grid_l2_leaf_regs": json.dumps(config.l2_leaf_regs),
                "rows_train": len(train),
                "rows_valid": len(valid),
                "rows_test": len(test),
            }
        )
        best: TrialResult | None = None
        best_run_id = best_model_uri = ""
        signature = None
        for index, params in enumerate(grid):
            name = _trial_run_name(index, params.as_dict())
            with mlflow_tracking.start_run(name, tags=tags, nested=True) as trial_run:
                result = fit_trial(train_pool, valid_pool, valid[TARGET], params, fit)
                mlflow.log_params({**params.as_dict(), **fixed})
                mlflow.log_metrics(result.metrics)
                mlflow_tracking.log_step_metrics(
                    trial_run.info.run_id, learning_curves(result.model)
                )
                if signature is None:
                    sample = valid_input.head(5)
                    signature = infer_signature(sample, result.model.predict_proba(sample))
                logged = mlflow.catboost.log_model(
                    result.model,
                    name=MODEL_ARTIFACT,
                    signature=signature,
                    pip_requirements=requirements,
                )
            context.log.info(
                "%s: val_accuracy %.4f, macro F1 %.4f, best iteration %s",
                name,
                result.evaluation.accuracy,
                result.evaluation.macro_f1,
                result.best_iteration,
            )
            if best is None or best_trial([best, result], fit.selection_metric) is result:
                best, best_run_id, best_model_uri = result, trial_run.info.run_id, logged.model_uri
        assert best is not None  # parameter_grid never returns an empty grid

        # With refit_on_train_valid the served model is the chosen trial refit on train +
        # valid rows: logged in the parent run, and that is the version registered.
        # Calibration is fitted on the valid rows as the chosen trial scores them: that
        # model never fit on them (early stopping and the choice of trial did use them).
        # The refit has seen them, so its temperature is the trial's, carried over.
        calibration = calibrate_temperature(
            best.model,
            valid_pool,
            valid[TARGET],
            method=config.calibration,
            offsets=best.offsets,
            fitted_on="valid rows (chosen trial)",
        )
        model, offsets = final_model(
            best,
            lambda: make_pool(
                pd.concat([train_input, valid_input]), pd.concat([train[TARGET], valid[TARGET]])
            ),
            len(train),
            fit,
        )
        refit = model is not best.model
        test_input = prepare_model_input(test, scalers, derived=derived)
        test_pool = make_pool(test_input)
        test_uncalibrated, test_prior_corrected = answer_figures(
            model, test_pool, test[TARGET], offsets
        )
        if calibration.applied:
            apply_temperature(model, calibration.temperature)
        served_offsets = calibration.served_offsets(offsets)
        if refit or calibration.applied:
            best_model_uri = mlflow.catboost.log_model(
                model, name=MODEL_ARTIFACT, signature=signature, pip_requirements=requirements
            ).model_uri
        if refit:
            mlflow.log_metric("final_iterations", model.tree_count_)
            mlflow_tracking.log_step_metrics(parent.info.run_id, learning_curves(model))

        # The one use of the test rows: report the chosen model.
        tested = evaluate(model, test_pool, test[TARGET], served_offsets)
        test_calibrated, _ = answer_figures(model, test_pool, test[TARGET], served_offsets)
        metrics = tested.metrics("test")
        calibration_metrics = _calibration_metrics(
            calibration, test_uncalibrated, test_calibrated, test_prior_corrected
        )
        predicted = predict_labels(model, test_pool, served_offsets)
        segments = segment_table(segment_confusions(test, test[TARGET], predicted, policy), policy)
        shap_top = mean_abs_shap(model, test_pool)
        params = {**best.params.as_dict(), **fixed, "calibration": config.calibration}
        confusion = confusion_markdown(tested)
        importances = markdown_table(["feature", "importance"], feature_importances(model))
        fit_rows = train if model is best.model else pd.concat([train, valid])
        drift_reference = profile_document(
            reference_profile(fit_rows, confusion_prediction_mix(confusion_document(tested)))
        )
        mlflow.log_metrics({**metrics, **best.metrics, **calibration_metrics})
        offsets_entry = offsets_document(model.classes_, served_offsets)
        mlflow.log_dict(
            {
                **calibration.document(),
                "served_decision_offsets": offsets_entry,
                "test_uncalibrated": test_uncalibrated.as_dict(),
                "test_prior_corrected": (
                    None if test_prior_corrected is None else test_prior_corrected.as_dict()
                ),
                "test": test_calibrated.as_dict(),
            },
            CALIBRATION_ARTIFACT,
        )
        if offsets_entry is not None:
            mlflow.log_dict(offsets_entry, DECISION_OFFSETS_ARTIFACT)
        mlflow_tracking.log_png(
            parent.info.run_id,
            reliability_diagram_png(
                [
                    ("uncalibrated", test_uncalibrated.bins),
                    (
                        f"temperature {calibration.temperature:.2f}"
                        if calibration.applied
                        else "served (not calibrated)",
                        test_calibrated.bins,
                    ),
                ],
                f"test rows of {partition}",
                [test_uncalibrated.ece, test_calibrated.ece],
            ),
            RELIABILITY_DIAGRAM_IMAGE,
        )
        mlflow.log_dict({"policy": policy.document(), "segments": segments}, SEGMENTS_ARTIFACT)
        segments_md = segment_markdown(segments)
        mlflow.log_text(segments_md, "test_segments.md")
        mlflow.log_dict(drift_reference, DRIFT_REFERENCE_ARTIFACT)
        mlflow.log_dict(confusion_document(tested), "test_confusion_matrix.json")
        mlflow.log_text(confusion, "confusion_matrix.md")
        mlflow_tracking.log_png(
            parent.info.run_id,
            confusion_matrix_png(
                tested.labels, tested.confusion_rows(), f"test rows of {partition}"
            ),
            CONFUSION_MATRIX_IMAGE,
        )
        mlflow.log_text(importances, "feature_importance.md")

        version = mlflow_tracking.register_model(
            best_model_uri,
            MODEL_NAME,
            tags={
                **tags,
                "test_accuracy": f"{tested.accuracy:.6f}",
                "test_macro_f1": f"{tested.macro_f1:.6f}",
                "trial_run_id": best_run_id,
            },
        )
        bento_tag = save_model_bundle(
            model,
            scalers,
            partition=partition,
            metrics=metrics,
            params=params,
            confusion=confusion_document(tested),
            validation_metrics=best.metrics,
            drift_reference=drift_reference,
            decision_offsets=served_offsets,
            extra={
                "mlflow_run_id": best_run_id,
                "mlflow_parent_run_id": parent.info.run_id,
                "mlflow_model_version": str(version.version),
                "dagster_run_id": context.run.run_id,
            },
        )
        mlflow_tracking.client().set_model_version_tag(
            MODEL_NAME, version.version, "bento_tag", bento_tag
        )
        mlflow.set_tags({"bento_tag": bento_tag, "best_trial_run_id": best_run_id})
        sides = train_valid_split[SPLIT_COLUMN]
        card = model_card_markdown(
            ModelCardFacts(
                model_tag=bento_tag,
                partition=partition,
                mlflow_model_version=str(version.version),
                window=_window(train_valid_split),
                split_rows={side: int((sides == side).sum()) for side in (TRAIN, VALID, TEST)},
                split_customers={
                    side: int(train_valid_split.loc[sides == side, "customer_id"].nunique())
                    for side in (TRAIN, VALID, TEST)
                },
                split_method=_split_method(train_valid_split),
                metrics=metrics,
                validation_metrics=best.metrics,
                confusion_markdown=confusion,
                calibration=calibration,
                test_before=test_uncalibrated,
                test_after=test_calibrated,
                segments=segments,
                policy=policy,
                shap_top=shap_top,
                preset=preset_name(config.grid_fields(), settings.TRAINING_GRIDS),
                params=params,
            )
        )
        mlflow.log_text(card, MODEL_CARD_ARTIFACT)

    context.log.info("best %s -> %s, MLflow version %s", params, bento_tag, version.version)
    summary = {
        "bento_tag": bento_tag,
        "partition": partition,
        "mlflow_run_id": best_run_id,
        "mlflow_parent_run_id": parent.info.run_id,
        "mlflow_model_name": MODEL_NAME,
        "mlflow_model_version": str(version.version),
        "metrics": metrics,
        "validation_metrics": best.metrics,
        "params": params,
        "trials": len(grid),
        "calibration": {
            "applied": calibration.applied,
            "temperature": calibration.temperature,
            **calibration_metrics,
        },
    }
    return Output(
        summary,
        metadata={
            "model_tag": bento_tag,  # the BentoML model's tag (not a Bento's)
            "mlflow_run_id": best_run_id,
            "mlflow_parent_run_id": parent.info.run_id,
            "mlflow_run": MetadataValue.url(mlflow_tracking.run_url(best_run_id)),
            "mlflow_parent_run": MetadataValue.url(mlflow_tracking.run_url(parent.info.run_id)),
            "mlflow_model_version": MetadataValue.text(str(version.version)),
            "best_params": MetadataValue.json(params),
            **{name: MetadataValue.float(value) for name, value in metrics.items()},
            "val_accuracy": MetadataValue.float(best.evaluation.accuracy),
            "val_macro_f1": MetadataValue.float(best.evaluation.macro_f1),
            "best_iteration": MetadataValue.int(best.best_iteration),
            "trials": MetadataValue.int(len(grid)),
            "confusion_matrix": MetadataValue.md(confusion),
            "feature_importance": MetadataValue.md(importances),
            "rows_train": MetadataValue.int(len(train)),
            "rows_valid": MetadataValue.int(len(valid)),
            "rows_test": MetadataValue.int(len(test)),
            "drift_reference_rows": MetadataValue.int(len(fit_rows)),
            **{name: MetadataValue.float(value) for name, value in calibration_metrics.items()},
            "calibration": MetadataValue.text(calibration.reason),
            "calibration_applied": MetadataValue.bool(calibration.applied),
            "test_segments": MetadataValue.md(segments_md),
            "model_card": MetadataValue.md(card),
            "model_card_artifact": MetadataValue.url(
                mlflow_tracking.artifact_url(parent.info.run_id, MODEL_CARD_ARTIFACT)
            ),
            "reliability_diagram": MetadataValue.url(
                mlflow_tracking.artifact_url(parent.info.run_id, RELIABILITY_DIAGRAM_IMAGE)
            ),
        },
    )


def _calibration_metrics(
    calibration, test_uncalibrated, test_calibrated, test_prior_corrected
) -> dict[str, float]:
    """The calibration's figures as MLflow metrics and float metadata (absent ones left
    out): the ECE of the served confidence on the test rows with and without the
    temperature, on the valid rows before and after it, the ECE had the probabilities of
    the prior-corrected scores been served (valid and test rows), and the temperature."""
    figures = {
        "test_ece": test_calibrated.ece,
        "test_classwise_ece": test_calibrated.classwise_ece,
        "test_log_loss": test_calibrated.log_loss,
        "test_ece_uncalibrated": test_uncalibrated.ece,
        "test_log_loss_uncalibrated": test_uncalibrated.log_loss,
        "val_ece_before_calibration": calibration.before.ece if calibration.before else None,
        "val_ece_after_calibration": calibration.after.ece if calibration.after else None,
        "val_ece_prior_corrected": (
            calibration.prior_corrected.ece if calibration.prior_corrected else None
        ),
        "test_ece_prior_corrected": test_prior_corrected.ece if test_prior_corrected else None,
        "calibration_temperature": calibration.temperature if calibration.applied else 1.0,
    }
    return {name: float(value) for name, value in figures.items() if value is not None}


def _split_method(split: pd.DataFrame) -> str:
    """How the sides were cut, read off the rows (out of time when every test row is newer
    than every train and valid row)."""
    method = "by customer (no customer on two sides), stratified by each customer's label"
    dates = pd.to_datetime(split["date"])
    tested = split[SPLIT_COLUMN] == TEST
    if tested.any() and (~tested).any() and dates[tested].min() > dates[~tested].max():
        return f"{method}, out of time (test rows dated from {dates[tested].min().date()})"
    return method


def _window(split: pd.DataFrame) -> tuple[str, str]:
    dates = pd.to_datetime(split["date"])
    return str(dates.min().date()), str(dates.max().date())
