"""Training benchmark: the seed's full grid (3 x 3 x 3 = 27 trials, lr 0.3, up to 2000
iterations, early stopping 50) on one partition built from the shared Kaggle sample.

    .venv/bin/python -m bench.training     # about 3-5 minutes; writes bench/results/training.json

It loads the sample into a fresh feature store in its own home (`credit-platform seed
kaggle`), then times `credit-platform materialize --partition 2025-08-31 --grid seed`: the
whole continuous-training job (feature-target build, split, scalers, the grid with every
trial an MLflow run, the BentoML save, the quality check). The partition's window holds all
10,000 rows (6,000 train, 2,000 valid, 2,000 test). Test accuracy and macro-F1 are the chosen
trial's on the test rows, valid ones what chose it; the grid's own time is the MLflow parent
run's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from bench.common import (
    KAGGLE_PARTITION,
    bench_home,
    ensure_kaggle_store,
    machine,
    newest_model_tag,
    print_figures,
    run_cli,
    write_results,
)

TARGET_SECONDS = 600


def grid_summary(tag: str) -> dict:
    """Trials and grid time from MLflow (the runs nested under the model's parent run)."""
    from mlflow import MlflowClient

    from credit_platform.core import settings
    from credit_platform.core.model_store import load_model_bundle

    bundle = load_model_bundle(tag)
    parent_id = bundle.metadata["mlflow_parent_run_id"]
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri())
    parent = client.get_run(parent_id)
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=1000,
    )
    iterations = sorted(int(run.data.metrics.get("best_iteration", -1)) + 1 for run in trials)
    return {
        "model_tag": tag,
        "trials": len(trials),
        "grid_seconds": round((parent.info.end_time - parent.info.start_time) / 1000, 1),
        "test_accuracy": round(float(bundle.metadata["metrics"]["test_accuracy"]), 4),
        "test_macro_f1": round(float(bundle.metadata["metrics"]["test_macro_f1"]), 4),
        "val_accuracy": round(float(bundle.metadata["validation_metrics"]["val_accuracy"]), 4),
        "val_macro_f1": round(float(bundle.metadata["validation_metrics"]["val_macro_f1"]), 4),
        "best_params": {
            key: bundle.metadata["params"][key] for key in ("depth", "rsm", "l2_leaf_reg")
        },
        "trees_per_trial_min_median_max": [
            iterations[0],
            iterations[len(iterations) // 2],
            iterations[-1],
        ],
        "fixed_params": {
            key: parent.data.params.get(key)
            for key in ("iterations", "early_stopping_rounds", "learning_rate", "loss_function")
        },
        "train_rows": int(parent.data.params.get("rows_train", 0)),
        "valid_rows": int(parent.data.params.get("rows_valid", 0)),
        "test_rows": int(parent.data.params.get("rows_test", 0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reuse-home", action="store_true", help="keep models and runs of earlier runs"
    )
    args = parser.parse_args(argv)
    started_machine = machine()
    home = bench_home() / "training"
    if home.exists() and not args.reuse_home:
        shutil.rmtree(home)
    # A home of its own: the serving benchmark's small-grid model never mixes in.
    os.environ.update(
        {
            "CREDIT_PLATFORM_HOME": str(home),
            "BENTOML_HOME": str(home / "bentoml"),
            "DAGSTER_HOME": str(home / "dagster"),
        }
    )
    ensure_kaggle_store()
    before = newest_model_tag()
    seconds = run_cli("materialize", "--partition", KAGGLE_PARTITION, "--grid", "seed")
    tag = newest_model_tag()
    if tag is None or tag == before:
        raise SystemExit("error: the training run saved no new model")
    figures = {"seconds": round(seconds, 1), "partition": KAGGLE_PARTITION, **grid_summary(tag)}
    figures["targets"] = {"seconds <= 600": seconds <= TARGET_SECONDS}
    path = write_results(
        "training",
        figures,
        command="python -m bench.training " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("training benchmark", figures)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
