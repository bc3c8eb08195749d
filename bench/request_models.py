"""CPU a /predict request spends in its request and response models, in-process: what the
explain/reasons fields, the customer id's pattern and the explanation field cost every
unexplained request. Runs against whichever checkout is first on PYTHONPATH, so two trees
can be compared side by side:

    PYTHONPATH=/path/to/old .venv/bin/python bench/request_models.py old results.jsonl
    PYTHONPATH=.            .venv/bin/python bench/request_models.py new results.jsonl

Each call appends one JSON line (medians of 7 runs of 20,000) to the results file.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

APPLICANT = {
    "customer_id": "CUS_0001",
    "age": 35,
    "occupation": "Doctor",
    "annual_income": 48014.39,
    "monthly_inhand_salary": 3345.2,
    "num_bank_accounts": 8,
    "num_credit_card": 5,
    "interest_rate": 21,
    "num_of_loan": 4,
    "type_of_loan": "Personal Loan",
    "delay_from_due_date": 45,
    "num_of_delayed_payment": 24,
    "changed_credit_limit": 15.62,
    "num_credit_inquiries": 11,
    "credit_mix": "Standard",
    "outstanding_debt": 2912.66,
    "credit_utilization_ratio": 34.6,
    "credit_history_age": 199,
    "payment_of_min_amount": "Yes",
    "total_emi_per_month": 170.69,
    "amount_invested_monthly": 215.06,
    "payment_behaviour": "High_spent_Medium_value_payments",
    "monthly_balance": 608.93,
}
CALLS = 20_000


def microseconds_per_call(call: Callable[[], object]) -> float:
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(CALLS):
            call()
        runs.append((time.perf_counter() - started) / CALLS * 1e6)
    return round(statistics.median(runs), 2)


def main() -> int:
    label, results = sys.argv[1], Path(sys.argv[2])
    from api.schemas import PredictionResponse, PredictRequest

    body = json.dumps({"data": APPLICANT}).encode()
    figures = {
        "code": label,
        "request_validation_us": microseconds_per_call(
            lambda: PredictRequest.model_validate_json(body)
        ),
        "response_build_and_dump_us": microseconds_per_call(
            lambda: PredictionResponse(
                customer_id="CUS_0001", predict="Good", confidence=0.7, repaired=[]
            ).model_dump(mode="json")
        ),
    }
    print(json.dumps(figures))
    with results.open("a") as sink:
        sink.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
