"""Calibration and fairness benchmark on the shared Kaggle sample, with the `tuned` preset.

    .venv/bin/python -m bench.calibration --seeds 0 1 2   # a few minutes per seed on 2 cores

For every seed the pipeline's split (by customer, 60 / 20 / 20) is trained as
`credit_score_model` trains it: the preset's grid on train rows, early stopping and choice on
valid rows, the refit on train + valid rows. The prior correction is then served two ways
from the very same trained models, so only the serving rule differs:

- `bias` (how models were saved before): the offsets in the model's bias, a temperature
  fitted on the corrected scores of the chosen trial on the valid rows, kept when it lowers
  their ECE; `confidence` is the largest probability of the corrected scores.
- `apart` (now, `core.answers`): the offsets kept beside the model choose the label, the
  temperature is fitted on the model's own scores, kept when it lowers the valid rows' ECE
  of the confidence served; `confidence` is the model's own probability of the label.

Both answer argmax(scores + offsets), so accuracy and macro-F1 must be identical (checked
row by row). Every ECE is the top-label ECE of what the API returns: the answered label and
its confidence. The valid rows are those the temperature was chosen on; the test rows, which
no choice touched, report. `--models DIR` keeps the trained models (trial and refit, without
any correction in their bias) per seed, and reuses them when there.

The test rows also give the segment table of the fairness rules with their defaults, and
`added_seconds` times what the asset does beyond training: the temperature fit, the test
rows' figures, mean |SHAP| on the test rows, the segment table, the diagram.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import KAGGLE_SAMPLE, machine, print_figures, write_results
from bench.model_quality import design_pools, fit_settings, sample_rows, search_grid


def trained_models(rows, seed: int, threads: int, models: Path | None):
    """(sides, pools, trial model, its best iteration, refit model, training seconds, reused)
    of one split; the models carry no correction."""
    from catboost import CatBoostClassifier

    from credit_platform.core import settings
    from credit_platform.core.features import TARGET
    from credit_platform.core.model_input import fit_scalers
    from credit_platform.core.training import final_model, parameter_grid
    from credit_platform.defs.assets.split import TEST, TRAIN, VALID, grouped_split, side_rows

    preset = settings.TRAINING_GRIDS["tuned"]
    split = grouped_split(rows, valid_fraction=0.2, seed=seed, test_fraction=0.2)
    sides = tuple(side_rows(split, side) for side in (TRAIN, VALID, TEST))
    train, valid, _ = sides
    scalers = fit_scalers(train)
    derived = preset["derived_features"]
    pools = design_pools(sides, scalers, derived)
    folder = None if models is None else models / f"seed{seed}"
    if folder is not None and (folder / "refit.cbm").exists():
        trial = CatBoostClassifier().load_model(str(folder / "trial.cbm"))
        refit = CatBoostClassifier().load_model(str(folder / "refit.cbm"))
        return sides, pools, trial, refit, None, True
    fit = fit_settings(preset, threads)
    grid = parameter_grid(preset["depths"], preset["rsms"], preset["l2_leaf_regs"])
    started = time.perf_counter()
    best = search_grid(pools[0], pools[1], valid[TARGET], grid, fit)
    refit, _ = final_model(
        best,
        lambda: design_pools((pd.concat([train, valid]),), scalers, derived)[0],
        len(train),
        fit,
    )
    seconds = time.perf_counter() - started
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        best.model.save_model(str(folder / "trial.cbm"))
        refit.save_model(str(folder / "refit.cbm"))
    return sides, pools, best.model, refit, seconds, False


def _copy_of(model):
    """An independent copy through a model file (CatBoost's `copy` of a model with text
    features is not safe to save)."""
    from catboost import CatBoostClassifier

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "model.cbm")
        model.save_model(path)
        return CatBoostClassifier().load_model(path)


def one_seed(rows, seed: int, threads: int, models: Path | None) -> dict:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    from credit_platform.core import settings
    from credit_platform.core.answers import answer_figures
    from credit_platform.core.calibration import (
        apply_temperature,
        calibrate_temperature,
        calibration_figures,
    )
    from credit_platform.core.charts import reliability_diagram_png
    from credit_platform.core.fairness import (
        FairnessPolicy,
        flagged,
        segment_confusions,
        segment_markdown,
        segment_table,
    )
    from credit_platform.core.features import LABELS, TARGET
    from credit_platform.core.training import (
        apply_class_offsets,
        class_offsets,
        mean_abs_shap,
        predict_labels,
    )

    preset = settings.TRAINING_GRIDS["tuned"]
    fit = fit_settings(preset, threads)
    sides, pools, trial, refit, training_seconds, reused = trained_models(
        rows, seed, threads, models
    )
    train, valid, test = sides
    _, valid_pool, test_pool = pools
    trial_offsets = class_offsets(train[TARGET], trial.classes_, fit)
    refit_offsets = class_offsets(pd.concat([train, valid])[TARGET], refit.classes_, fit)

    # before: the correction in the bias, the temperature fitted on the corrected scores
    trial_bias, refit_bias = _copy_of(trial), _copy_of(refit)
    apply_class_offsets(trial_bias, trial_offsets)
    apply_class_offsets(refit_bias, refit_offsets)
    bias_calibration = calibrate_temperature(trial_bias, valid_pool, valid[TARGET])
    bias_valid = bias_calibration.after if bias_calibration.applied else bias_calibration.before
    if bias_calibration.applied:
        apply_temperature(refit_bias, bias_calibration.temperature)
    bias_test, _ = answer_figures(refit_bias, test_pool, test[TARGET])

    # after: the offsets apart, the temperature fitted on the model's own scores
    started = time.perf_counter()
    calibration = calibrate_temperature(
        trial, valid_pool, valid[TARGET], offsets=trial_offsets, fitted_on="valid rows"
    )
    apart_valid = calibration.after if calibration.applied else calibration.before
    uncalibrated, prior_corrected = answer_figures(refit, test_pool, test[TARGET], refit_offsets)
    if calibration.applied:
        apply_temperature(refit, calibration.temperature)
    served_offsets = calibration.served_offsets(refit_offsets)
    apart_test, _ = answer_figures(refit, test_pool, test[TARGET], served_offsets)
    predicted = predict_labels(refit, test_pool, served_offsets)
    policy = FairnessPolicy()
    table = segment_table(segment_confusions(test, test[TARGET], predicted, policy), policy)
    shap_top = mean_abs_shap(refit, test_pool)
    reliability_diagram_png(
        [("bias", bias_test.bins), ("apart", apart_test.bins)],
        "test",
        [bias_test.ece, apart_test.ece],
    )
    segment_markdown(table)
    added_seconds = time.perf_counter() - started

    # the label rule is the same: every answer, hence every score, is identical
    before_labels = predict_labels(refit_bias, test_pool)
    valid_same = bool(
        (
            predict_labels(trial_bias, valid_pool)
            == predict_labels(trial, valid_pool, trial_offsets)
        ).all()
    )
    truth = test[TARGET].astype(str).to_numpy()

    def scores(labels) -> dict:
        return {
            "accuracy": round(float(accuracy_score(truth, labels)), 4),
            "macro_f1": round(
                float(f1_score(truth, labels, labels=list(LABELS), average="macro")), 4
            ),
        }

    def figures(item) -> dict | None:
        if item is None:
            return None
        return {
            "ece": round(item.ece, 4),
            "classwise_ece": round(item.classwise_ece, 4),
            "log_loss": round(item.log_loss, 4),
        }

    def bins(item) -> list[dict]:
        return [
            {
                "bin": f"{row['lower']:.1f}-{row['upper']:.1f}",
                "rows": row["rows"],
                "mean_confidence": None
                if row["mean_confidence"] is None
                else round(row["mean_confidence"], 3),
                "accuracy": None if row["accuracy"] is None else round(row["accuracy"], 3),
            }
            for row in item.bins
        ]

    # how often the correction answers a class that is not the most probable one
    own = refit.predict_proba(test_pool)
    not_most_probable = float((np.asarray(refit.classes_)[own.argmax(axis=1)] != predicted).mean())
    result = {
        "split_seed": seed,
        "rows": [len(part) for part in sides],
        "models_reused": reused,
        "training_seconds": None if training_seconds is None else round(training_seconds, 1),
        "added_seconds": round(added_seconds, 2),
        "offsets": {
            "classes": [str(label) for label in refit.classes_],
            "trial": [round(value, 4) for value in trial_offsets],
            "refit": [round(value, 4) for value in refit_offsets],
        },
        "labels_identical": {
            "valid": valid_same,
            "test": bool((before_labels == predicted).all()),
        },
        "test_scores": {"bias": scores(before_labels), "apart": scores(predicted)},
        "answers_not_most_probable": round(not_most_probable, 4),
        "bias": {
            "temperature": round(bias_calibration.temperature, 4),
            "applied": bias_calibration.applied,
            "valid": figures(bias_valid),
            "test": figures(bias_test),
        },
        "apart": {
            "temperature": round(calibration.temperature, 4),
            "applied": calibration.applied,
            "valid_uncalibrated": figures(calibration.before),
            "valid_calibrated": figures(calibration.after),
            "valid": figures(apart_valid),
            "valid_prior_corrected": figures(calibration.prior_corrected),
            "valid_without_correction": figures(
                calibration_figures(trial.predict_proba(valid_pool), trial.classes_, valid[TARGET])
            ),
            "test_uncalibrated": figures(uncalibrated),
            "test_prior_corrected": figures(prior_corrected),
            "test": figures(apart_test),
        },
        "test_reliability": {"bias": bins(bias_test), "apart": bins(apart_test)},
        "flagged_segments": [
            {"feature": row["feature"], "segment": row["segment"], "flags": row["flags"]}
            for row in flagged(table)
        ],
        "segments": [
            {
                key: round(value, 4) if isinstance(value, float) else value
                for key, value in row.items()
            }
            for row in table
        ],
        "shap_top": [(name, round(value, 4)) for name, value in shap_top],
    }
    print(
        f"split seed {seed}: served ECE valid {bias_valid.ece:.4f} -> {apart_valid.ece:.4f}, "
        f"test {bias_test.ece:.4f} -> {apart_test.ece:.4f} (T bias "
        f"{bias_calibration.temperature:.3f} {'kept' if bias_calibration.applied else 'not kept'}"
        f", apart {calibration.temperature:.3f} "
        f"{'kept' if calibration.applied else 'not kept'}); labels identical "
        f"{result['labels_identical']}; test {result['test_scores']}; flagged "
        f"{result['flagged_segments']}; added {added_seconds:.2f} s",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="CatBoost threads per fit")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="keep the trained models here per seed, and reuse them when there",
    )
    args = parser.parse_args(argv)
    if not KAGGLE_SAMPLE.exists():
        raise SystemExit(f"error: the shared Kaggle sample is missing at {KAGGLE_SAMPLE}")
    started_machine = machine()
    rows = sample_rows()
    runs = [one_seed(rows, seed, args.threads, args.models) for seed in args.seeds]
    figures = {"sample": str(KAGGLE_SAMPLE.name), "seeds": args.seeds, "runs": runs}
    path = write_results(
        "calibration",
        figures,
        command="python -m bench.calibration " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("calibration benchmark", {"seeds": len(runs)})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
