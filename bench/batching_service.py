"""The benchmark's service for `bench.batching`: one real model, two ways to score the single
rows of concurrent requests, side by side in one server (2 workers, as the service runs).

- `POST /coalesced` `{"data": {row}}`: the service's own `CoalescingScorer` (one CatBoost
  call per event-loop iteration for every row queued in it), as `/predict` scores.
- `POST /adaptive` and `/adaptive_loose` `{"data": [row]}`: BentoML's adaptive batching
  (`@bentoml.api(batchable=True, max_batch_size=..., max_latency_ms=...)`, 20 ms and 1 s):
  BentoML's dispatcher gathers the rows of concurrent requests and calls the API once per
  batch.

Neither logs its answers: the benchmark compares the scoring paths only. Bench-only code,
never part of the Bento.
"""

from __future__ import annotations

from credit_platform.core import settings

settings.export_bentoml_home()  # BentoML reads BENTOML_HOME once, at import

import bentoml  # noqa: E402

from api.library_patches import apply_library_patches  # noqa: E402
from api.predictor import CoalescingScorer, ServedModel, load_predictor  # noqa: E402
from api.schemas import PredictionFeatures, PredictionResponse, PredictRequest  # noqa: E402

apply_library_patches()  # as the service: its timers and request limits

MAX_BATCH_SIZE = 64
# BentoML's dispatcher refuses a request (503, "process is overloaded") when it expects to
# exceed max_latency_ms: a tight bound (the p99 budget's share) and a loose one (no shedding).
MAX_LATENCY_MS = 20
LOOSE_LATENCY_MS = 1000


def _answer(row: PredictionFeatures, prediction) -> PredictionResponse:
    return PredictionResponse(
        customer_id=row.customer_id,
        predict=prediction.label,
        confidence=prediction.confidence,
        repaired=list(prediction.repaired),
    )


@bentoml.service(
    name="batching_bench",
    workers=2,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/coalesced$", "/adaptive$"]},
)
class BatchingBench:
    def __init__(self) -> None:
        self.served = ServedModel(load_predictor(settings.api_model_tag()))
        self.scorer = CoalescingScorer(self.served)
        self.adaptive_calls = 0
        self.adaptive_rows = 0

    @bentoml.api(route="/coalesced", input_spec=PredictRequest)
    async def coalesced(self, data: PredictionFeatures) -> PredictionResponse:
        _, prediction = await self.scorer.score(data.features())
        return _answer(data, prediction)

    @bentoml.api(
        route="/adaptive",
        batchable=True,
        max_batch_size=MAX_BATCH_SIZE,
        max_latency_ms=MAX_LATENCY_MS,
    )
    async def adaptive(self, data: list[PredictionFeatures]) -> list[PredictionResponse]:
        self.adaptive_calls += 1
        self.adaptive_rows += len(data)
        predictions = self.served.current.predict([row.features() for row in data])
        return [_answer(row, prediction) for row, prediction in zip(data, predictions, strict=True)]

    @bentoml.api(
        route="/adaptive_loose",
        batchable=True,
        max_batch_size=MAX_BATCH_SIZE,
        max_latency_ms=LOOSE_LATENCY_MS,
    )
    async def adaptive_loose(self, data: list[PredictionFeatures]) -> list[PredictionResponse]:
        return await self.adaptive(data)

    @bentoml.api(route="/batch_sizes")
    def batch_sizes(self) -> dict:
        """Rows per scoring call in this worker, for both paths."""
        return {
            "coalesced_groups": self.scorer.groups,
            "coalesced_rows": self.scorer.rows,
            "adaptive_calls": self.adaptive_calls,
            "adaptive_rows": self.adaptive_rows,
        }
