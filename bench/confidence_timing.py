"""In-process time of `Predictor.predict` before and after the answer rule of `core.answers`.

    .venv/bin/python -m bench.confidence_timing --models /tmp/models --before before.py

The served model is the `tuned` preset's refit of split seed 0 as `bench.calibration
--models` keeps it. "before" is the predictor of the main branch (a file given with
`--before`, e.g. `git show main:api/predictor.py > before.py`) serving the model with the
prior correction in its bias; "after" is this branch's predictor serving the same model with
the correction kept beside it (decision offsets in the metadata), and also with it in the
bias (a bundle saved before, answered through `predict_proba` as on main). Each run times
one row (many calls) and 1,000 rows (fewer calls); the variants alternate within every run,
and the median (and the minimum) over runs is reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine, print_figures, write_results
from bench.model_quality import fit_settings, sample_rows


def _module_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _per_call(predict, rows, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        predict(rows)
    return (time.perf_counter() - started) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--single-calls", type=int, default=2000)
    parser.add_argument("--batch-calls", type=int, default=20)
    args = parser.parse_args(argv)

    import pandas as pd
    from catboost import CatBoostClassifier

    from api.predictor import Predictor
    from credit_platform.core import settings
    from credit_platform.core.answers import OFFSETS_KEY, offsets_document
    from credit_platform.core.features import MODEL_FEATURES, TARGET
    from credit_platform.core.model_input import fit_scalers
    from credit_platform.core.model_store import ModelBundle
    from credit_platform.core.training import apply_class_offsets, class_offsets
    from credit_platform.defs.assets.split import TEST, TRAIN, VALID, grouped_split, side_rows

    started_machine = machine()
    before_module = _module_from(args.before, "predictor_before")
    rows = sample_rows()
    split = grouped_split(rows, valid_fraction=0.2, seed=0, test_fraction=0.2)
    train, valid, test = (side_rows(split, side) for side in (TRAIN, VALID, TEST))
    scalers = fit_scalers(train)
    path = str(args.models / "seed0" / "refit.cbm")
    plain = CatBoostClassifier().load_model(path)
    biased = CatBoostClassifier().load_model(path)
    fit = fit_settings(settings.TRAINING_GRIDS["tuned"], 1)
    offsets = class_offsets(pd.concat([train, valid])[TARGET], plain.classes_, fit)
    apply_class_offsets(biased, offsets)
    now = datetime.now(UTC)
    apart_bundle = ModelBundle(
        "credit_score_classifier:apart",
        plain,
        scalers,
        {OFFSETS_KEY: offsets_document(plain.classes_, offsets)},
        now,
    )
    bias_bundle = ModelBundle("credit_score_classifier:bias", biased, scalers, {}, now)
    variants = {
        "before (main, correction in the bias)": before_module.Predictor(bias_bundle),
        "after (offsets apart)": Predictor(apart_bundle),
        "after (old bundle, correction in the bias)": Predictor(bias_bundle),
    }
    records = [
        {name: None if pd.isna(value) else value for name, value in row.items()}
        for row in test[list(MODEL_FEATURES)].head(1000).to_dict(orient="records")
    ]
    labels = {name: [p.label for p in v.predict(records)] for name, v in variants.items()}
    same = len({tuple(value) for value in labels.values()}) == 1
    timings: dict[str, dict[str, list[float]]] = {
        name: {"one_row_us": [], "rows_1000_ms": []} for name in variants
    }
    for run in range(args.runs):
        for name, predictor in variants.items():
            one = _per_call(predictor.predict, records[:1], args.single_calls)
            batch = _per_call(predictor.predict, records, args.batch_calls)
            timings[name]["one_row_us"].append(one * 1e6)
            timings[name]["rows_1000_ms"].append(batch * 1e3)
        print(f"run {run + 1}/{args.runs} done", flush=True)
    medians = {
        name: {key: round(statistics.median(values), 2) for key, values in series.items()}
        for name, series in timings.items()
    }
    figures = {
        "model": path,
        "trees": int(plain.tree_count_),
        "labels_identical": same,
        "runs": args.runs,
        "single_calls": args.single_calls,
        "batch_calls": args.batch_calls,
        "medians": medians,
        "minimums": {
            name: {key: round(min(values), 2) for key, values in series.items()}
            for name, series in timings.items()
        },
        "all_runs": {
            name: {key: [round(value, 2) for value in values] for key, values in series.items()}
            for name, series in timings.items()
        },
    }
    written = write_results(
        "confidence_timing",
        figures,
        command="python -m bench.confidence_timing " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    for name, values in medians.items():
        print_figures(name, values)
    print(f"labels identical: {same}; written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
