"""The prediction service's URL paths and its request-id header, named once.

The service declares its routes with these names, its request limits pick a body limit by
them, and the platform's clients, the benchmarks and the tests call them: a path renamed
here is renamed everywhere. Core holds them because both sides import core (api/ and the
Dagster code never import each other).
"""

from __future__ import annotations

PREDICT = "/predict"
PREDICT_BATCH = "/predict_batch"
# The asynchronous batch job: submit a body of rows, poll its status, get its answers.
JOB_SUBMIT = "/predict_batch_job/submit"
JOB_STATUS = "/predict_batch_job/status"
JOB_GET = "/predict_batch_job/get"
METADATA = "/metadata"
ADMIN_RELOAD = "/admin/reload"
ADMIN_CHALLENGER = "/admin/challenger"
# BentoML's own routes.
LIVEZ = "/livez"
READYZ = "/readyz"
HEALTHZ = "/healthz"
METRICS = "/metrics"

# The idempotency key of a prediction, echoed in the answer.
REQUEST_ID_HEADER = "X-Request-ID"
