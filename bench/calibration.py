"""Calibration and fairness benchmark on the shared Kaggle sample, with the `tuned` preset.

    .venv/bin/python -m bench.calibration --seeds 0 1 2   # about a minute per seed on 2 cores

For every seed the pipeline's split (by customer, 60 / 20 / 20) is trained as
`credit_score_model` trains it: the preset's grid on train rows, early stopping and choice on
valid rows, the refit on train + valid rows. Calibration is fitted as the asset fits it: a
temperature on the valid rows as the chosen trial (train rows only) scores them, applied to
the refit model when it lowers their ECE. The test rows, which no choice touched, report the
ECE (top label and class-wise) and log loss before and after, and the segment table of the
fairness rules with their defaults. `added_seconds` times what the asset now does beyond
training: the temperature fit, the test rows scored twice, mean |SHAP| on the test rows, the
segment table, the reliability diagram and the model card's text.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from bench.common import KAGGLE_SAMPLE, machine, print_figures, write_results
from bench.model_quality import design_pools, fit_settings, sample_rows, search_grid


def one_seed(rows, seed: int, threads: int) -> dict:
    from credit_platform.core import settings
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
    from credit_platform.core.features import TARGET
    from credit_platform.core.model_input import fit_scalers
    from credit_platform.core.training import (
        class_offsets,
        evaluate,
        final_model,
        mean_abs_shap,
        parameter_grid,
        predict_labels,
    )
    from credit_platform.defs.assets.split import TEST, TRAIN, VALID, grouped_split, side_rows

    preset = settings.TRAINING_GRIDS["tuned"]
    split = grouped_split(rows, valid_fraction=0.2, seed=seed, test_fraction=0.2)
    sides = tuple(side_rows(split, side) for side in (TRAIN, VALID, TEST))
    train, valid, test = sides
    scalers = fit_scalers(train)
    derived = preset["derived_features"]
    train_pool, valid_pool, test_pool = design_pools(sides, scalers, derived)
    fit = fit_settings(preset, threads)
    grid = parameter_grid(preset["depths"], preset["rsms"], preset["l2_leaf_regs"])
    started = time.perf_counter()
    best = search_grid(train_pool, valid_pool, valid[TARGET], grid, fit)
    model = final_model(
        best,
        lambda: design_pools((pd.concat([train, valid]),), scalers, derived)[0],
        len(train),
        fit,
    )
    training_seconds = time.perf_counter() - started

    started = time.perf_counter()
    calibration = calibrate_temperature(
        best.model,
        valid_pool,
        valid[TARGET],
        prior_offsets=class_offsets(train[TARGET], best.model.classes_, fit),
        fitted_on="valid rows (chosen trial)",
    )
    classes = [str(label) for label in model.classes_]
    truth = test[TARGET].astype(str)
    uncalibrated_probabilities = model.predict_proba(test_pool)
    before = calibration_figures(uncalibrated_probabilities, classes, truth)
    if calibration.applied:
        apply_temperature(model, calibration.temperature)
    probabilities = model.predict_proba(test_pool)
    after = calibration_figures(probabilities, classes, truth)
    policy = FairnessPolicy()
    predicted = predict_labels(model, test_pool)
    table = segment_table(segment_confusions(test, test[TARGET], predicted, policy), policy)
    shap_top = mean_abs_shap(model, test_pool)
    reliability_diagram_png(
        [("uncalibrated", before.bins), ("served", after.bins)], "test", [before.ece, after.ece]
    )
    segment_markdown(table)
    added_seconds = time.perf_counter() - started

    tested = evaluate(model, test_pool, test[TARGET])
    unchanged = bool(
        (uncalibrated_probabilities.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    )

    def figures(item) -> dict:
        return {
            "ece": round(item.ece, 4),
            "classwise_ece": round(item.classwise_ece, 4),
            "log_loss": round(item.log_loss, 4),
        }

    result = {
        "split_seed": seed,
        "rows": [len(part) for part in sides],
        "training_seconds": round(training_seconds, 1),
        "added_seconds": round(added_seconds, 2),
        "test_accuracy": round(tested.accuracy, 4),
        "answered_class_unchanged": unchanged,
        "temperature": round(calibration.temperature, 4),
        "applied": calibration.applied,
        "valid_without_prior_correction": figures(calibration.without_prior_correction),
        "valid_before": figures(calibration.before),
        "valid_after": figures(calibration.after),
        "test_before": figures(before),
        "test_after": figures(after),
        "test_reliability_after": [
            {
                "bin": f"{item['lower']:.1f}-{item['upper']:.1f}",
                "rows": item["rows"],
                "mean_confidence": None
                if item["mean_confidence"] is None
                else round(item["mean_confidence"], 3),
                "accuracy": None if item["accuracy"] is None else round(item["accuracy"], 3),
            }
            for item in after.bins
        ],
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
        f"split seed {seed}: T {calibration.temperature:.3f} "
        f"({'applied' if calibration.applied else 'not applied'}); valid ECE "
        f"{calibration.before.ece:.4f} -> {calibration.after.ece:.4f}; test ECE "
        f"{before.ece:.4f} -> {after.ece:.4f}, class-wise {before.classwise_ece:.4f} -> "
        f"{after.classwise_ece:.4f}; accuracy {tested.accuracy:.4f}; flagged "
        f"{result['flagged_segments']}; training {training_seconds:.0f} s, added "
        f"{added_seconds:.2f} s",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="CatBoost threads per fit")
    args = parser.parse_args(argv)
    if not KAGGLE_SAMPLE.exists():
        raise SystemExit(f"error: the shared Kaggle sample is missing at {KAGGLE_SAMPLE}")
    started_machine = machine()
    rows = sample_rows()
    runs = [one_seed(rows, seed, args.threads) for seed in args.seeds]
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
