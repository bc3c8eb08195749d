"""What reason codes cost `credit_score_predictions`: the asset's `score_day` of one day with
and without `reasons=True`, alternating, on the same rows and model.

    .venv/bin/python -m bench.explain_batch [--customers 100000] [--rounds 2]

Data and model as `bench.batch_scoring` (one synthetic day on SQLite under the benchmark
home; the Kaggle partition's model, small grid). Each round scores the day once without
and once with reason codes (the order alternates), each replacing the day in one
transaction. The asset stores reason codes only when its run config asks
(`reason_codes`), because the issue allows them by default only if they cost at most 30%
of the asset's time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.batch_scoring import DAY, generate
from bench.common import bench_home, ensure_kaggle_model, machine, print_figures, write_results

OPT_IN_ABOVE = 0.30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-tag", default=None, help="default: the Kaggle small-grid model")
    args = parser.parse_args(argv)

    from credit_platform.core.batch_scoring import score_day
    from credit_platform.core.db import make_engine
    from credit_platform.core.model_store import load_model_bundle

    started_machine = machine()
    model_tag = args.model_tag or ensure_kaggle_model()
    home = bench_home() / "explain_batch"
    home.mkdir(parents=True, exist_ok=True)
    database = home / f"store_{args.customers}.db"
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    print(f"model: {model_tag}; generating {args.customers:,} customers", flush=True)
    generate(url, args.customers)
    bundle = load_model_bundle(model_tag)
    engine = make_engine(url)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    try:
        for number in range(args.rounds):
            for reasons in (False, True) if number % 2 == 0 else (True, False):
                began = time.perf_counter()
                with engine.begin() as connection:
                    result = score_day(connection, DAY, bundle, reasons=reasons)
                seconds[reasons].append(round(time.perf_counter() - began, 2))
                print(
                    f"round {number + 1}: reasons={reasons}: {seconds[reasons][-1]} s", flush=True
                )
    finally:
        engine.dispose()
        database.unlink(missing_ok=True)
    plain = statistics.median(seconds[False])
    explained = statistics.median(seconds[True])
    figures = {
        "model_tag": model_tag,
        "model_trees": int(bundle.model.tree_count_),
        "rows_scored": result.rows,
        "seconds_without_reasons": seconds[False],
        "seconds_with_reasons": seconds[True],
        "extra_cost_share": round(explained / plain - 1, 3),
        "reason_codes_us_per_row": round((explained - plain) * 1e6 / result.rows, 1),
        "opt_in": explained / plain - 1 > OPT_IN_ABOVE,
    }
    path = write_results(
        "explain_batch" if args.model_tag is None else "explain_batch_model",
        figures,
        command="python -m bench.explain_batch " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("reason codes in batch scoring", figures)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
