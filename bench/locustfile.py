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
integer; this API refuses values a lender would refuse), from the feature declaration
(`bench/applicants.py`): each number evenly over the range real data holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from locust import HttpUser, between, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench.applicants import random_applicant  # noqa: E402
from credit_platform.core import routes  # noqa: E402


class CreditScoreUser(HttpUser):
    wait_time = between(1, 5)

    @task
    def predict(self) -> None:
        self.client.post(routes.PREDICT, json={"data": random_applicant()})
