"""The credit-score prediction service (BentoML 1.4, port 3000 by default).

Endpoints: POST /predict and /predict_batch (pydantic bodies, 400 naming the failing
field), GET /metadata (what is served), POST /admin/reload (bearer token; hot swap or
rollback to any saved tag), and BentoML's own /livez, /readyz, /healthz and /metrics
(/healthz and /livez answer 200 only while a model is loaded and the log writer runs).

Every answered prediction is in `credit_predictions_api_log` before its 2xx leaves: rows go
through the group-commit `PredictionLogger` (spooled to disk while the database is down).
A client may send `X-Request-ID` to make a retried request idempotent in the log; the
id used is echoed in the response header.

One worker per service: a reload swaps the model in the process that receives it, so with
several workers they would diverge. Scale with more service instances behind a balancer,
each told to reload.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from credit_platform import settings

settings.export_bentoml_home()  # BentoML reads BENTOML_HOME once, at import

import anyio.to_thread  # noqa: E402
import bentoml  # noqa: E402
from bentoml.exceptions import (  # noqa: E402
    BentoMLException,
    InvalidArgument,
    ServiceUnavailable,
)
from pydantic import ValidationError  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from api.prediction_log import (  # noqa: E402
    PredictionLogClosed,
    PredictionLogger,
    PredictionLogRow,
    PredictionLogUnavailable,
    utc_now,
)
from api.predictor import (  # noqa: E402
    ModelNotFound,
    ModelRefused,
    Predictor,
    ServedModel,
    load_predictor,
)
from api.schemas import (  # noqa: E402
    BatchPredictRequest,
    ModelMetadata,
    PredictionFeatures,
    PredictionResponse,
    PredictRequest,
    ReloadRequest,
)
from credit_platform.db import init_schema  # noqa: E402

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,48}$")
# Rows larger than this in a batch body can only be padding; refuse before parsing.
MAX_BYTES_PER_ROW = 4096
# Above this many rows a batch is scored off the event loop.
INLINE_ROWS = 64


def request_id_for(ctx: bentoml.Context) -> str:
    """The client's X-Request-ID when it is well-formed, else a fresh one."""
    supplied = ctx.request.headers.get(REQUEST_ID_HEADER)
    if supplied is None:
        return uuid.uuid4().hex
    if not _CLIENT_REQUEST_ID.match(supplied):
        raise InvalidArgument(
            f"{REQUEST_ID_HEADER} must be 1-48 characters of letters, digits and ._:-"
        )
    return supplied


def log_rows(
    request_id: str,
    rows: list[PredictionFeatures],
    responses: list[PredictionResponse],
    model_version: str,
    elapsed_ms: float,
    *,
    batch: bool,
) -> list[PredictionLogRow]:
    """One log row per answered row; a batch's rows get "<request id>-<position>"."""
    now = utc_now()
    return [
        PredictionLogRow(
            request_id=f"{request_id}-{position}" if batch else request_id,
            customer_id=row.customer_id,
            features=row.features(),
            prediction=response.predict,
            confidence=response.confidence,
            elapsed_ms=elapsed_ms,
            model_version=model_version,
            created_at=now,
        )
        for position, (row, response) in enumerate(zip(rows, responses, strict=True))
    ]


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every refused request at ERROR with a traceback; a client's mistake
    (bad field, bad header) needs one WARNING line naming it, so real errors stand out."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
            )
        elif isinstance(error, BentoMLException) and error.error_code < 500:
            problems = str(error)
        else:
            return True
        record.msg = "Request to %s [%s] refused: %s"
        record.args = (*(record.args or ()), problems[:500])
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


class BatchBodyLimit:
    """Refuses a /predict_batch body whose declared size cannot be a legal batch (413),
    so an oversized request never gets parsed."""

    def __init__(self, app: ASGIApp, path: str = "/predict_batch") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == self.path:
            limit = settings.api_max_batch_rows() * MAX_BYTES_PER_ROW
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    response = JSONResponse(
                        {
                            "error": f"request body of {int(value)} bytes is over the limit "
                            f"of {limit} bytes for a batch of at most "
                            f"{settings.api_max_batch_rows()} rows",
                            "detail": [{"loc": ["data"], "msg": "batch too large"}],
                        },
                        status_code=413,
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# --- /metadata and /admin/reload: plain Starlette routes mounted beside the APIs -------


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def authorization_problem(header: str | None, expected: str | None) -> JSONResponse | None:
    """None when `header` carries the admin token, else the response refusing the call."""
    if not expected:
        return _error(
            403,
            f"the admin token is not configured: set {settings.ADMIN_TOKEN_ENV} "
            "in the service's environment to enable /admin/reload",
        )
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        response = _error(401, "a valid 'Authorization: Bearer <admin token>' header is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return None


async def metadata_endpoint(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    return JSONResponse(service.model_metadata().model_dump())


async def reload_endpoint(request: Request) -> JSONResponse:
    refused = authorization_problem(request.headers.get("authorization"), settings.admin_token())
    if refused is not None:
        return refused
    body = await request.body()
    try:
        reload_request = (
            ReloadRequest.model_validate_json(body) if body.strip() else ReloadRequest()
        )
    except ValidationError as error:
        return _error(
            400,
            'the body must be empty or {"tag": "credit_score_classifier:<version>"}',
            detail=json.loads(error.json(include_url=False, include_context=False)),
        )
    service = bentoml.get_current_service()
    try:
        previous, current = await anyio.to_thread.run_sync(
            service.served_model.reload, reload_request.tag
        )
    except ModelNotFound as error:
        return _error(404, str(error), serving=service.served_model.current.tag)
    except ModelRefused as error:
        return _error(422, f"model refused: {error}", serving=service.served_model.current.tag)
    logger.info("model reloaded: %s -> %s", previous.tag, current.tag)
    return JSONResponse(
        {
            "status": "reloaded",
            "previous_version": previous.tag,
            "changed": previous.tag != current.tag,
            **current.metadata(),
        }
    )


admin_app = Starlette(
    routes=[
        Route("/metadata", metadata_endpoint, methods=["GET", "POST"]),
        Route("/admin/reload", reload_endpoint, methods=["POST"]),
    ]
)


@bentoml.asgi_app(admin_app, path="/")
@bentoml.service(
    name="credit_score_service",
    workers=1,
    traffic={"timeout": 60},
)
class CreditScoreService:
    """Serves `credit_score_classifier` models from the BentoML store."""

    def __init__(self) -> None:
        logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorLogFilter())
        tag = settings.api_model_tag()
        try:
            predictor = load_predictor(tag)
        except (ModelNotFound, ModelRefused) as error:
            raise RuntimeError(f"the prediction service cannot start: {error}") from error
        self.served_model = ServedModel(predictor, load_predictor)
        url = settings.feature_store_url()
        try:
            init_schema(url).dispose()
        except Exception as error:  # never fatal: the log spools until the database is back
            logger.warning("prediction log database not ready (%s); rows will be spooled", error)
        self.prediction_log = PredictionLogger(url, settings.prediction_spool_dir())
        logger.info("serving %s", predictor.tag)
        gc.collect()
        gc.freeze()  # the loaded model never moves again: keep it out of GC passes

    def __is_alive__(self) -> bool:
        return self.prediction_log.alive

    def __is_ready__(self) -> bool:
        return self.prediction_log.alive

    @bentoml.on_shutdown
    def drain_prediction_log(self) -> None:
        self.prediction_log.close()

    def model_metadata(self) -> ModelMetadata:
        return ModelMetadata(**self.served_model.current.metadata())

    async def _record(self, rows: list[PredictionLogRow]) -> None:
        try:
            await asyncio.wrap_future(self.prediction_log.submit(rows))
        except (PredictionLogClosed, PredictionLogUnavailable) as error:
            logger.error("prediction not answered, its log row cannot be kept: %s", error)
            raise ServiceUnavailable(str(error)) from error

    @staticmethod
    def _score(predictor: Predictor, rows: list[PredictionFeatures]) -> list[PredictionResponse]:
        predictions = predictor.predict([row.features() for row in rows])
        return [
            PredictionResponse(
                customer_id=row.customer_id,
                predict=prediction.label,
                confidence=prediction.confidence,
            )
            for row, prediction in zip(rows, predictions, strict=True)
        ]

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    async def predict(self, data: PredictionFeatures, ctx: bentoml.Context) -> PredictionResponse:
        """Score one applicant."""
        started = time.perf_counter()
        request_id = request_id_for(ctx)
        predictor = self.served_model.current  # this request stays on this model
        (response,) = self._score(predictor, [data])
        elapsed_ms = (time.perf_counter() - started) * 1000
        await self._record(
            log_rows(request_id, [data], [response], predictor.tag, elapsed_ms, batch=False)
        )
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @bentoml.api(route="/predict_batch", input_spec=BatchPredictRequest)
    async def predict_batch(
        self, data: list[PredictionFeatures], ctx: bentoml.Context
    ) -> list[PredictionResponse]:
        """Score many applicants in one model call; answers keep the request's order."""
        started = time.perf_counter()
        request_id = request_id_for(ctx)
        predictor = self.served_model.current
        if len(data) <= INLINE_ROWS:
            responses = self._score(predictor, data)
        else:
            responses = await anyio.to_thread.run_sync(self._score, predictor, data)
        elapsed_ms = (time.perf_counter() - started) * 1000
        await self._record(
            log_rows(request_id, data, responses, predictor.tag, elapsed_ms, batch=True)
        )
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return responses


CreditScoreService.add_asgi_middleware(BatchBodyLimit)
