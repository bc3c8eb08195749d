"""Seed 004's Locust load test, for people who use Locust: 100 users started 5 a second,
each posting a random applicant to /predict and then waiting 1-5 s.

Locust is not a dependency of the platform; install it beside it, e.g. in its own venv:

    python3.11 -m venv /tmp/locust-venv && /tmp/locust-venv/bin/pip install locust==2.43.1
    /tmp/locust-venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:3000 \
        --headless --users 100 --spawn-rate 5 --run-time 120s --csv bench/results/locust

With 1-5 s between requests, 100 users offer about 100 / 3 s = 33 requests/s whatever the
service can do: this measures latency and failures at the seed's load, not capacity (the
wrk benchmark, `python -m bench.serving`, measures that). The seed recorded 32.3 RPS,
p99 430 ms and 4 failures in 3,618 requests (0.11%).

The applicants are drawn at random within the API's validation rules (the seed drew any
integer; this API refuses values a lender would refuse), from the feature contract.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from locust import HttpUser, between, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from credit_platform.core import routes  # noqa: E402
from credit_platform.core.features import (  # noqa: E402
    CREDIT_MIX_VALUES,
    LOAN_TYPES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    PAYMENT_OF_MIN_AMOUNT_VALUES,
)


def random_applicant() -> dict:
    loans = random.sample(LOAN_TYPES, random.randint(0, 4))
    income = round(random.uniform(7_000, 180_000), 2)
    return {
        "customer_id": f"CUS_{random.randint(1, 100_000):06d}",
        "age": random.randint(18, 70),
        "occupation": random.choice(OCCUPATION_VALUES),
        "annual_income": income,
        "monthly_inhand_salary": round(income / 12 * random.uniform(0.7, 0.9), 2),
        "num_bank_accounts": random.randint(0, 10),
        "num_credit_card": random.randint(0, 10),
        "interest_rate": random.randint(1, 34),
        "num_of_loan": len(loans),
        "type_of_loan": ", ".join(loans) if loans else None,
        "delay_from_due_date": random.randint(0, 60),
        "num_of_delayed_payment": random.randint(0, 25),
        "changed_credit_limit": round(random.uniform(-5, 30), 2),
        "num_credit_inquiries": random.randint(0, 17),
        "credit_mix": random.choice(CREDIT_MIX_VALUES),
        "outstanding_debt": round(random.uniform(0, 5_000), 2),
        "credit_utilization_ratio": round(random.uniform(20, 50), 2),
        "credit_history_age": random.randint(1, 400),
        "payment_of_min_amount": random.choice(PAYMENT_OF_MIN_AMOUNT_VALUES),
        "total_emi_per_month": round(random.uniform(0, 500), 2),
        "amount_invested_monthly": round(random.uniform(0, 1_000), 2),
        "payment_behaviour": random.choice(PAYMENT_BEHAVIOUR_VALUES),
        "monthly_balance": round(random.uniform(0, 1_500), 2),
    }


class CreditScoreUser(HttpUser):
    wait_time = between(1, 5)

    @task
    def predict(self) -> None:
        self.client.post(routes.PREDICT, json={"data": random_applicant()})
