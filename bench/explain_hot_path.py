"""The unexplained request's own Python work, this code against another checkout, in-process:
what reason codes added to the hot path, measured finely enough to compare with a 2%
budget on a machine too busy for a serving A/B to resolve it.

    .venv/bin/python -m bench.explain_hot_path --base-repo PATH [--rounds 3]

Per checkout, in a subprocess importing that checkout's code, the CPU time (process time,
median of 7 passes over 200 sample bodies) of the parts of one unexplained /predict that
the change touched: parse and validate the body (`PredictRequest`), the `Prediction`, the
log row and its MariaDB `INSERT` text, the answer's model and its JSON. The checkouts
alternate, `--rounds` times each. CatBoost, the event loop and the database are the same
code in both and are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import KAGGLE_SAMPLE, REPO_ROOT, machine, print_figures, write_results

_MEASURE = r"""
import json, statistics, sys, time
from datetime import datetime
from pathlib import Path
from bench.sample_requests import load_sample, valid_request_payloads
from api.schemas import PredictRequest, PredictionResponse
from api.prediction_log import PredictionLogRow, mariadb_insert_statements
from api.predictor import Prediction, as_scored

rows = valid_request_payloads(load_sample(Path(sys.argv[1]), rows=2000), 200)
bodies = [json.dumps({"data": row}).encode() for row in rows]
created = datetime(2025, 1, 1)


def one(body):
    data = PredictRequest.model_validate_json(body).data
    features = data.features()
    prediction = Prediction("Good", 0.7, ())
    row = PredictionLogRow(
        "request-id", data.customer_id, as_scored(features, prediction), prediction.label,
        prediction.confidence, 0.5, "credit_score_classifier:v", created, "champion",
    )
    mariadb_insert_statements([row])
    PredictionResponse(
        customer_id=data.customer_id, predict=prediction.label,
        confidence=prediction.confidence, repaired=list(prediction.repaired),
    ).model_dump_json()


def per_request_us():
    started = time.process_time()
    for _ in range(10):
        for body in bodies:
            one(body)
    return (time.process_time() - started) * 1e6 / (10 * len(bodies))


per_request_us()
print(json.dumps(statistics.median(per_request_us() for _ in range(7))))
"""


def measure(repo: Path) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(KAGGLE_SAMPLE)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"error: measuring {repo} failed:\n{completed.stderr[-2000:]}")
    return round(json.loads(completed.stdout.strip().splitlines()[-1]), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-repo", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    started_machine = machine()
    times: dict[str, list[float]] = {"this": [], "base": []}
    repos = {"this": REPO_ROOT, "base": args.base_repo.resolve()}
    for number in range(args.rounds):
        for name in ("this", "base") if number % 2 == 0 else ("base", "this"):
            times[name].append(measure(repos[name]))
            print(f"round {number + 1}: {name} {times[name][-1]} us", flush=True)
    this, base = statistics.median(times["this"]), statistics.median(times["base"])
    figures = {
        "base_repo": str(args.base_repo),
        "hot_path_us_per_request_this": times["this"],
        "hot_path_us_per_request_base": times["base"],
        "added_us_per_request": round(this - base, 2),
    }
    path = write_results(
        "explain_hot_path",
        figures,
        command="python -m bench.explain_hot_path " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("unexplained hot path", figures)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
