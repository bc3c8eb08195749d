"""Model-quality benchmark: how far a reported test metric may be from unseen rows, and the
platform's tuned training against a seed-style CatBoost on the same rows.

    .venv/bin/python -m bench.model_quality --seeds 0 1 2   # minutes per seed on 2 cores

The shared Kaggle sample is read through the project's own loader (`ingest.kaggle`). For
every seed the pipeline's own split (`grouped_split`: by customer, stratified by each
customer's newest label; the sample has one row per customer) makes train / valid / test; both
designs fit on the same train rows, early-stop and choose on the same valid rows, and are
scored once on the same untouched test rows:

- seed style: the 3 x 3 x 3 depth x rsm x l2 grid at lr 0.3, MultiClassOneVsAll, early
  stopping 50 on valid accuracy, the best valid accuracy wins (the "seed" preset);
- tuned: the platform's default preset ("tuned"): with the derived features, a prior
  correction of the class scores and the final model refit on train + valid rows (the
  test rows still play no part in any choice).

Across seeds the test rows are different unseen samples, so the spread of the test metric
is the estimate of how far one partition's reported figure is from truly unseen data; the
gap between the chosen trial's valid score and its test score is the optimism of reporting
the rows that picked the model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd

from bench.common import KAGGLE_SAMPLE, machine, print_figures, write_results

TARGETS = {"accuracy_gain": 0.01, "macro_f1_gain": 0.02, "recall_good": 0.50}


def sample_rows():
    """The shared sample's labelled rows as the feature-target table holds them."""
    from credit_platform.defs.assets.split import typed_rows
    from credit_platform.ingest.kaggle import clean_kaggle_frame, read_kaggle_csv

    frames, _ = clean_kaggle_frame(read_kaggle_csv(KAGGLE_SAMPLE), 2025)
    labels = frames.credit_score[["id", "customer_id", "credit_score"]]
    return typed_rows(frames.credit_score_features.merge(labels, on=["id", "customer_id"]))


def fit_settings(preset: dict, threads: int):
    from credit_platform.core.training import FitSettings

    return FitSettings(
        iterations=preset["iterations"],
        learning_rate=preset["learning_rate"],
        early_stopping_rounds=preset["early_stopping_rounds"],
        thread_count=threads,
        loss_function=preset["loss_function"],
        eval_metric=preset["eval_metric"],
        class_weights=preset["class_weights"],
        selection_metric=preset["selection_metric"],
        class_offset_strength=preset["class_offset_strength"],
        refit_on_train_valid=preset["refit_on_train_valid"],
    )


def design_pools(split_rows, scalers, derived: bool):
    """Train, valid and test pools of one split, with or without the derived features."""
    from credit_platform.core.features import TARGET
    from credit_platform.core.model_input import prepare_model_input
    from credit_platform.core.training import make_pool

    return tuple(
        make_pool(prepare_model_input(part, scalers, derived=derived), part[TARGET])
        for part in split_rows
    )


def search_grid(train, valid, valid_labels, grid, fit):
    """Every grid point fit on train and early-stopped on valid, without MLflow; the best by
    the fit's selection metric on valid (the test rows play no part), as the asset chooses."""
    from credit_platform.core.training import best_trial, fit_trial

    return best_trial(
        (fit_trial(train, valid, valid_labels, params, fit) for params in grid),
        fit.selection_metric,
    )


def one_design(name: str, split_rows, scalers, threads: int) -> dict:
    from credit_platform.core import settings
    from credit_platform.core.features import TARGET
    from credit_platform.core.training import evaluate, final_model, parameter_grid

    preset = settings.TRAINING_GRIDS[name]
    derived = preset["derived_features"]
    pools = design_pools(split_rows, scalers, derived)
    train_pool, valid_pool, test_pool = pools
    _, valid, test = split_rows

    def train_valid_pool():
        return design_pools((pd.concat(split_rows[:2]),), scalers, derived)[0]

    grid = parameter_grid(preset["depths"], preset["rsms"], preset["l2_leaf_regs"])
    fit = fit_settings(preset, threads)
    started = time.perf_counter()
    best = search_grid(train_pool, valid_pool, valid[TARGET], grid, fit)
    model, offsets = final_model(best, train_valid_pool, len(split_rows[0]), fit)
    seconds = time.perf_counter() - started
    tested = evaluate(model, test_pool, test[TARGET], offsets)
    return {
        "trials": len(grid),
        "derived_features": derived,
        "class_offset_strength": fit.class_offset_strength,
        "refit_on_train_valid": fit.refit_on_train_valid,
        "final_iterations": int(model.tree_count_),
        "seconds": round(seconds, 1),
        "chosen": best.params.as_dict(),
        "best_iteration": best.best_iteration,
        "valid_accuracy": round(best.evaluation.accuracy, 4),
        "valid_macro_f1": round(best.evaluation.macro_f1, 4),
        **{name: round(value, 4) for name, value in tested.metrics("test").items()},
        "test_confusion_matrix": tested.confusion_rows(),
    }


def one_seed(rows, seed: int, threads: int) -> dict:
    from credit_platform.core.model_input import fit_scalers
    from credit_platform.defs.assets.split import TEST, TRAIN, VALID, grouped_split, side_rows

    split = grouped_split(rows, valid_fraction=0.2, seed=seed, test_fraction=0.2)
    sides = tuple(side_rows(split, side) for side in (TRAIN, VALID, TEST))
    scalers = fit_scalers(sides[0])
    result = {"split_seed": seed, "rows": [len(part) for part in sides]}
    for name in ("seed", "tuned"):
        result[name] = one_design(name, sides, scalers, threads)
        print(
            f"split seed {seed}, {name:>5} design: test accuracy "
            f"{result[name]['test_accuracy']:.4f}, "
            f"macro-F1 {result[name]['test_macro_f1']:.4f}, recall Good "
            f"{result[name]['test_recall_Good']:.4f} (valid accuracy "
            f"{result[name]['valid_accuracy']:.4f}; {result[name]['seconds']:.0f} s)",
            flush=True,
        )
    return result


def spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for design in ("seed", "tuned"):
        summary[design] = {
            metric: spread([run[design][metric] for run in runs])
            for metric in (
                "test_accuracy",
                "test_macro_f1",
                "test_recall_Good",
                "valid_accuracy",
                "valid_macro_f1",
            )
        }
        summary[design]["valid_minus_test_accuracy"] = spread(
            [run[design]["valid_accuracy"] - run[design]["test_accuracy"] for run in runs]
        )
    gains = {
        "accuracy_gain": [r["tuned"]["test_accuracy"] - r["seed"]["test_accuracy"] for r in runs],
        "macro_f1_gain": [r["tuned"]["test_macro_f1"] - r["seed"]["test_macro_f1"] for r in runs],
    }
    summary["tuned_minus_seed"] = {name: spread(values) for name, values in gains.items()}
    summary["targets_met_on_mean"] = {
        "accuracy +0.01": summary["tuned_minus_seed"]["accuracy_gain"]["mean"]
        >= TARGETS["accuracy_gain"],
        "macro-F1 +0.02": summary["tuned_minus_seed"]["macro_f1_gain"]["mean"]
        >= TARGETS["macro_f1_gain"],
        "recall Good >= 0.50": summary["tuned"]["test_recall_Good"]["mean"]
        >= TARGETS["recall_good"],
    }
    summary["targets_met_every_seed"] = {
        "accuracy +0.01": min(gains["accuracy_gain"]) >= TARGETS["accuracy_gain"],
        "macro-F1 +0.02": min(gains["macro_f1_gain"]) >= TARGETS["macro_f1_gain"],
        "recall Good >= 0.50": min(r["tuned"]["test_recall_Good"] for r in runs)
        >= TARGETS["recall_good"],
    }
    return summary


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
    summary = summarise(runs)
    figures = {"sample": str(KAGGLE_SAMPLE.name), "seeds": args.seeds, "summary": summary}
    figures["runs"] = runs
    path = write_results(
        "model_quality",
        figures,
        command="python -m bench.model_quality " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("model quality benchmark", {"seeds": len(runs)})
    for design in ("seed", "tuned", "tuned_minus_seed"):
        for metric, values in summary[design].items():
            print(f"  {design:>16} {metric:<28} {values}")
    print(f"  targets met on the mean: {summary['targets_met_on_mean']}")
    print(f"  targets met every seed:  {summary['targets_met_every_seed']}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
