"""The credit-score prediction service (BentoML 1.4, port 3000 by default).

Endpoints (paths in `core/routes.py`): POST /predict and /predict_batch (pydantic bodies,
400 naming the failing field), the asynchronous jobs under /predict_batch_job
(`api.batch_jobs`), GET /metadata (what is served), POST /admin/reload (bearer token; hot
swap or rollback to any saved tag), POST and DELETE /admin/challenger (a shadow or canary,
`api.challengers`), and BentoML's own /livez, /readyz, /healthz and /metrics (/healthz and
/livez answer 200 only while a model is loaded and the log writer runs).

Every answered prediction is in `credit_predictions_api_log` before its 2xx leaves: rows go
through the group-commit `PredictionLogger` (spooled to disk while the database is down,
slow or refusing the service; the latter fails /readyz). `X-Request-ID` is an idempotency
key (1-48 letters, digits and ._:-): the same key with the same body answers what the log
holds, with another body 409. The id used is echoed in the response header; a batch's
rows are logged as "<id>#<position>", a form no client key can take.

Several workers (CREDIT_API_WORKERS, default 2: one per core of a small machine): a reload
received by one reaches every other through `api.model_sync`, and answers once all serve
the new model. Several replicas (servers sharing the feature-store database): a reload
received by one is written to the desired-model record, which every replica follows
(`api.replica_sync`); /readyz answers 503 with the reason while a replica has not followed
for longer than CREDIT_API_MODEL_STALE_SECONDS.

Per-request OpenTelemetry spans (no exporter is configured by default) and BentoML's access
log are off for the prediction routes, since every prediction is logged to the database
anyway; turn them on with BentoML's own configuration, e.g.
`BENTOML_CONFIG_OPTIONS="services.credit_score_service.logging.access.enabled=true"`.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import hmac
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio
import anyio.to_thread
import bentoml
import orjson
from bentoml.exceptions import (
    BentoMLException,
    InvalidArgument,
    ServiceUnavailable,
)
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.batch_jobs import JobService, job_routes, job_store_from_settings
from api.challengers import (
    SHADOW,
    CanaryView,
    Challenger,
    ChallengerSlot,
    ChallengerSpec,
    ShadowRow,
    ShadowScorer,
    routes_to_canary,
)
from api.library_patches import apply_library_patches, filter_client_errors
from api.model_sync import (
    ModelSync,
    ReloadNotPropagated,
    ReloadSuperseded,
    process_identity,
    remove_dead_state_dirs,
)
from api.prediction_log import (
    BULK_LANE,
    IDS_FULL_FLAG,
    LoggedAnswer,
    PredictionLogClosed,
    PredictionLogger,
    PredictionLogRow,
    PredictionLogUnavailable,
    RequestConflict,
    utc_now,
)
from api.predictor import (
    CoalescingScorer,
    ModelNotFound,
    ModelRefused,
    Prediction,
    Predictor,
    ServedModel,
    as_scored,
    load_predictor,
)
from api.replica_sync import (
    RecordUnavailable,
    ReplicaFollower,
    ReplicaReadiness,
    describe_replica,
    drain_on_sigterm,
)
from api.request_limits import job_body_limit
from api.schemas import (
    BatchPredictRequest,
    ChallengerMetadata,
    ChallengerRequest,
    ModelMetadata,
    PredictionFeatures,
    PredictionResponse,
    PredictRequest,
    ReloadRequest,
)
from credit_platform.core import routes, settings
from credit_platform.core.reasons import DEFAULT_REASONS
from credit_platform.core.routes import REQUEST_ID_HEADER

# The request limits (431, 413, 408), BentoML's per-request timers and the bounded /metrics
# labels, each checked against the library versions it was tested with:
# api/library_patches.py lists every such patch.
apply_library_patches()

logger = logging.getLogger(__name__)

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,48}$")
# Joins a batch's request id and a row's position: outside the client key alphabet, so a
# batch row's id is never a key some other request may send.
BATCH_ROW_SEPARATOR = "#"
# Above this many rows a batch is scored off the event loop.
INLINE_ROWS = 64


def exit_with_server() -> None:
    """Ask Linux to send this worker SIGTERM when its server process dies. BentoML starts
    each worker in a session of its own, so a server killed by SIGKILL (or the OOM killer)
    would leave its workers orphaned, still answering on the port; with this they drain the
    prediction log and exit instead."""
    if not sys.platform.startswith("linux"):
        return
    server = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != server:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def running_bento() -> str | None:
    """The Bento this worker runs, as BentoML recorded it when it loaded the service
    (None when the service was imported from source)."""
    context = bentoml.server_context
    if not context.bento_name or context.bento_version == "not available":
        return None
    return f"{context.bento_name}:{context.bento_version}"


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


@dataclass(frozen=True)
class Scored:
    """A request's rows as scored: their model features (kept for the log) and answers."""

    features: list[dict[str, Any]]
    predictions: list[Prediction]


def row_id(request_id: str, position: int, *, batch: bool) -> str:
    """A row's log id: the request id, or "<request id>#<position>" for a batch's rows."""
    return f"{request_id}{BATCH_ROW_SEPARATOR}{position}" if batch else request_id


def log_rows(
    request_id: str,
    rows: list[PredictionFeatures],
    scored: Scored,
    predictors: Sequence[Predictor],
    elapsed_ms: float,
    *,
    batch: bool,
    first_position: int = 0,
) -> list[PredictionLogRow]:
    """One log row per answered row, with the model (and its role) that answered it; a
    job's chunk numbers its rows from `first_position`."""
    now = utc_now()
    return [
        PredictionLogRow(
            row_id(request_id, first_position + position, batch=batch),
            row.customer_id,
            row_features,
            prediction.label,
            prediction.confidence,
            elapsed_ms,
            predictor.tag,
            now,
            predictor.role,
            prediction.explanation,
        )
        for position, (row, row_features, prediction, predictor) in enumerate(
            zip(rows, scored.features, scored.predictions, predictors, strict=True)
        )
    ]


def shadow_log_row(
    row_id: str,
    customer_id: str,
    features: dict[str, Any],
    prediction: Prediction,
    elapsed_ms: float,
    model_version: str,
    role: str,
) -> PredictionLogRow:
    return PredictionLogRow(
        row_id,
        customer_id,
        features,
        prediction.label,
        prediction.confidence,
        elapsed_ms,
        model_version,
        utc_now(),
        role,
    )


def logged_again(scored: Scored, answers: list[LoggedAnswer]) -> Scored:
    """The answers the log holds for a request sent before (same key, same body); the
    repaired fields are the fresh ones, since the same body is repaired the same way."""
    return Scored(
        scored.features,
        [
            Prediction(
                label=answer.prediction,
                confidence=answer.confidence,
                repaired=fresh.repaired,
                explanation=answer.reasons,
            )
            for answer, fresh in zip(answers, scored.predictions, strict=True)
        ],
    )


def batch_response(rows: list[PredictionFeatures], scored: Scored) -> Response:
    """The /predict_batch answer as JSON, built here: BentoML would dump a list of response
    models twice (to Python, then to JSON with the standard library), a large share of a
    1,000-row request. Same body as the `list[PredictionResponse]` the route declares."""
    answers = [
        {
            "customer_id": row.customer_id,
            "predict": prediction.label,
            "confidence": prediction.confidence,
        }
        for row, prediction in zip(rows, scored.predictions, strict=True)
    ]
    for answer, prediction in zip(answers, scored.predictions, strict=True):
        if prediction.repaired:
            answer["repaired"] = prediction.repaired
        if prediction.explanation is not None:
            answer["explanation"] = prediction.explanation
    return Response(orjson.dumps(answers), media_type="application/json")


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


class KeepAliveRecycler:
    """Asks a keep-alive client to reconnect once its connection is `max_age_seconds` old
    (as nginx's keepalive_time does). The workers share one listening socket, and a
    connection stays with the worker that accepted it: a few long-lived connections (a
    batch client, a load generator) can all land on one worker while the other idles. On
    reconnecting, the worker that is free to accept takes the connection, so load spreads."""

    def __init__(self, app: ASGIApp, max_age_seconds: float = 5.0) -> None:
        self.app = app
        self.max_age_seconds = max_age_seconds
        self._opened: dict[tuple[str, int], float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        opened = self._opened.setdefault((client[0], client[1]), now)
        if now - opened < self.max_age_seconds:
            await self.app(scope, receive, send)
            return
        del self._opened[(client[0], client[1])]
        if len(self._opened) > 4096:  # forget closed connections; a live one just restarts
            self._opened = {
                key: at for key, at in self._opened.items() if now - at < self.max_age_seconds
            }

        async def send_with_close(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_close)


class FormBodiesRefused:
    """415 for a form body (multipart/form-data, application/x-www-form-urlencoded: what
    `curl -d` sends by default). BentoML hands those to its form parser, which fails with a
    500 on this service's JSON models; every route here takes JSON."""

    FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "GET":
            for name, value in scope["headers"]:
                if name == b"content-type":
                    if value.split(b";", 1)[0].strip().lower() in self.FORM_TYPES:
                        response = _error(
                            415,
                            f"Content-Type {value.split(b';', 1)[0].decode('latin-1')!r} is "
                            "not supported: send the body as JSON with "
                            "'Content-Type: application/json'",
                        )
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


# --- /metadata and /admin/reload: plain Starlette routes mounted beside the APIs -------


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def validation_detail(error: ValidationError) -> list[dict[str, Any]]:
    """What failed and where, without the input values: a NaN, an infinity or bytes that are
    not UTF-8 cannot be written back as JSON."""
    return [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


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
            detail=validation_detail(error),
        )
    service = bentoml.get_current_service()
    try:
        previous, current = await anyio.to_thread.run_sync(
            functools.partial(
                service.model_sync.reload,
                reload_request.tag,
                publish=service.replica.publish_model,
            )
        )
    except RecordUnavailable as error:
        return _error(503, str(error), serving=service.served_model.current.tag)
    except ModelNotFound as error:
        return _error(404, str(error), serving=service.served_model.current.tag)
    except ModelRefused as error:
        return _error(422, f"model refused: {error}", serving=service.served_model.current.tag)
    except ReloadSuperseded as error:
        return _error(409, str(error), serving=service.served_model.current.tag)
    except ReloadNotPropagated as error:
        return _error(504, str(error), serving=service.served_model.current.tag)
    logger.info("model reloaded: %s -> %s", previous.tag, current.tag)
    await service.report_replica()
    return JSONResponse(
        {
            "status": "reloaded",
            "previous_version": previous.tag,
            "changed": previous.tag != current.tag,
            **current.metadata(),
        }
    )


async def challenger_endpoint(request: Request) -> JSONResponse:
    """POST attaches a shadow or canary ({"tag", "role", "share"}); DELETE detaches it."""
    refused = authorization_problem(request.headers.get("authorization"), settings.admin_token())
    if refused is not None:
        return refused
    spec: ChallengerSpec | None = None
    if request.method == "POST":
        try:
            asked = ChallengerRequest.model_validate_json(await request.body())
            spec = ChallengerSpec(asked.tag, asked.role, asked.share)
        except (ValidationError, ValueError) as error:
            detail = validation_detail(error) if isinstance(error, ValidationError) else str(error)
            return _error(
                400,
                'the body must be {"tag": "<model tag>", "role": "shadow" or "canary", '
                '"share": <0 to 0.5, the canary\'s share of customers>}',
                detail=detail,
            )
    service = bentoml.get_current_service()
    serving = service.served_model.current.tag
    try:
        previous, current = await anyio.to_thread.run_sync(
            functools.partial(
                service.model_sync.set_challenger, spec, publish=service.replica.publish_challenger
            )
        )
    except RecordUnavailable as error:
        return _error(503, str(error), serving=serving)
    except ModelNotFound as error:
        return _error(404, str(error), serving=serving)
    except ValueError as error:  # the champion's own tag
        return _error(409, str(error), serving=serving)
    except ModelRefused as error:
        return _error(422, f"challenger refused: {error}", serving=serving)
    except ReloadSuperseded as error:
        return _error(409, str(error), serving=serving)
    except ReloadNotPropagated as error:
        return _error(504, str(error), serving=serving)
    logger.info("challenger changed: %s -> %s", previous, current)
    await service.report_replica()
    metadata = service.model_metadata()
    return JSONResponse(
        {
            "status": "attached" if current else "detached",
            "previous": previous.as_dict() if previous else None,
            "challenger": metadata.challenger.model_dump() if metadata.challenger else None,
            "champion_share": metadata.champion_share,
        }
    )


def _jobs() -> JobService:
    return bentoml.get_current_service().jobs


admin_app = Starlette(
    routes=[
        *job_routes(_jobs),
        Route(routes.METADATA, metadata_endpoint, methods=["GET", "POST"]),
        Route(routes.ADMIN_RELOAD, reload_endpoint, methods=["POST"]),
        Route(routes.ADMIN_CHALLENGER, challenger_endpoint, methods=["POST", "DELETE"]),
    ]
)


@bentoml.asgi_app(admin_app, path="/")
@bentoml.service(
    name="credit_score_service",
    workers=settings.api_workers(),
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [f"{routes.PREDICT}$", f"{routes.PREDICT_BATCH}$"]},
)
class CreditScoreService:
    """Serves `credit_score_classifier` models from the BentoML store."""

    def __init__(self) -> None:
        exit_with_server()
        filter_client_errors(ClientErrorLogFilter())
        # Shared by the workers of this server (their parent process).
        state_dir = settings.api_worker_state_dir(process_identity(os.getppid()))
        remove_dead_state_dirs(state_dir.parent)
        agreed_tag = ModelSync.desired_in(state_dir)
        pinned = settings.api_model_tag_pinned()
        # The first worker of a replica serves the pinned model (and publishes it to the
        # other replicas), else the model the replicas' record names; a later worker (a
        # restart) serves what its replica's workers agreed on.
        predictor = self._initial_predictor(
            agreed_tag or pinned or ReplicaFollower.recorded_tag(settings.feature_store_url())
        )
        if pinned and not agreed_tag:  # loaded and smoke-tested: the pin itself
            ReplicaFollower.publish_pin(settings.feature_store_url(), predictor.tag)
        self.served_model = ServedModel(predictor, load_predictor)
        self.challengers = ChallengerSlot(load_predictor, lambda: self.served_model.current.tag)
        self.scorer = CoalescingScorer(self.served_model)
        # Explanations run on worker threads one at a time per worker (made on first use,
        # in the event loop): a burst of explained requests then queues for that thread
        # instead of taking every core share from the unexplained requests.
        self._explain_limiter: anyio.CapacityLimiter | None = None
        self.canary_scorer = CoalescingScorer(
            CanaryView(self.challengers, lambda: self.served_model.current)
        )
        self.model_sync = ModelSync(self.served_model, state_dir, challengers=self.challengers)
        self.model_sync.join()
        # The log creates its table itself, retrying (and spooling) until the database answers.
        self.prediction_log = PredictionLogger(
            settings.feature_store_url(),
            settings.prediction_spool_dir(),
            timeout_seconds=settings.prediction_log_timeout(),
            ids_full_flag=state_dir / IDS_FULL_FLAG,
        )
        # A shadow's rows and a batch job's go through a writer of their own: a slow or
        # refused bulk insert never holds the answers of /predict and /predict_batch. It
        # starts once the first has made the table, so the two never contend for it.
        self.prediction_log.wait_started(timeout=30)
        self.bulk_log = PredictionLogger(
            settings.feature_store_url(),
            settings.prediction_spool_dir(),
            timeout_seconds=settings.prediction_log_timeout(),
            lane=BULK_LANE,
            ids_full_flag=state_dir / IDS_FULL_FLAG,
        )
        self.shadow = ShadowScorer(
            lambda: self.challengers.current,
            self.bulk_log.submit,
            shadow_log_row,
            stats_path=self.model_sync.shadow_stats_path,
        )
        self.replica = ReplicaFollower(
            self.model_sync,
            settings.feature_store_url(),
            poll_seconds=settings.api_model_poll_seconds(),
            stale_seconds=settings.api_model_stale_seconds(),
            bento_tag=running_bento(),
        )
        self.replica.start()
        self.jobs = JobService(
            job_store_from_settings(),
            self.answer_job_chunk,
            request_key=_CLIENT_REQUEST_ID,
            max_rows=settings.api_max_job_rows(),
            max_body_bytes=job_body_limit(),
        )
        self.jobs.start()
        # Behind a balancer: leave its rotation before the listener closes (SIGTERM).
        drain_on_sigterm(settings.api_drain_seconds())
        logger.info("serving %s", predictor.tag)
        gc.collect()
        gc.freeze()  # the loaded model never moves again: keep it out of GC passes

    @staticmethod
    def _initial_predictor(agreed_tag: str | None) -> Predictor:
        """The model agreed on (by the replica's workers, the pin, or the replicas' record),
        else the configured one."""
        if agreed_tag:
            try:
                return load_predictor(agreed_tag)
            except (ModelNotFound, ModelRefused) as error:
                logger.error("cannot load %s, which was agreed on: %s", agreed_tag, error)
        try:
            return load_predictor(settings.api_model_tag())
        except (ModelNotFound, ModelRefused) as error:
            raise RuntimeError(f"the prediction service cannot start: {error}") from error

    def __is_alive__(self) -> bool:
        return self.prediction_log.alive and self.bulk_log.alive

    def __is_ready__(self) -> bool:
        """Ready once the log has tried its table; not while the log database refuses the
        service for good (bad password, missing database or privilege: answers still go
        out then, their rows to the spool), nor while it refuses every row (its id column
        is full: requests get 503 then)."""
        return self.prediction_log.ready and self.bulk_log.ready

    @bentoml.on_shutdown
    def drain_prediction_log(self) -> None:
        self.jobs.stop()
        self.replica.stop()
        self.model_sync.stop()
        self.shadow.close()  # its queued rows go to the log before the log closes
        self.bulk_log.close()
        self.prediction_log.close()

    def model_metadata(self) -> ModelMetadata:
        challenger = self.challengers.current
        return ModelMetadata(
            **self.served_model.current.metadata(),
            bento_tag=running_bento(),
            champion_share=1.0 - (challenger.spec.answered_share if challenger else 0.0),
            challenger=self._challenger_metadata(challenger),
            challenger_problem=self.challengers.problem,
            replica=describe_replica(self.replica),
        )

    async def report_replica(self) -> None:
        """The replica's heartbeat at once after an admin change, so a deploy waiting for
        every replica need not wait a poll for this one (a failure waits for the next)."""
        try:
            await anyio.to_thread.run_sync(self.replica.report)
        except Exception as error:
            logger.warning("cannot report the replica after the change: %s", error)

    def _challenger_metadata(self, challenger: Challenger | None) -> ChallengerMetadata | None:
        if challenger is None:
            return None
        described = challenger.predictor.metadata()
        return ChallengerMetadata(
            role=challenger.spec.role,
            model_version=challenger.spec.tag,
            share=challenger.spec.answered_share,
            partition=described["partition"],
            metrics=described["metrics"],
            loaded_at=described["loaded_at"],
            shadow=(
                self.model_sync.shadow_totals(self.shadow.stats())
                if challenger.spec.role == SHADOW
                else None
            ),
        )

    def _offer_shadow(
        self,
        challenger: Challenger | None,
        request_id: str,
        rows: list[PredictionFeatures],
        features: list[dict[str, Any]],
        *,
        batch: bool,
        first_position: int = 0,
    ) -> None:
        """Answered rows to the shadow, if one is attached: queued, never awaited."""
        if challenger is None or challenger.spec.role != SHADOW:
            return
        self.shadow.offer(
            [
                ShadowRow(
                    row_id(request_id, first_position + position, batch=batch),
                    row.customer_id,
                    row_features,
                )
                for position, (row, row_features) in enumerate(zip(rows, features, strict=True))
            ]
        )

    async def _record(
        self, rows: list[PredictionLogRow], *, bulk: bool = False
    ) -> list[LoggedAnswer] | None:
        """Log the rows (a job's through the bulk writer); the logged answers instead when
        the request was answered before."""
        log = self.bulk_log if bulk else self.prediction_log
        try:
            return await asyncio.wrap_future(log.submit(rows))
        except RequestConflict as error:
            raise BentoMLException(
                f"{REQUEST_ID_HEADER} conflict: {error}; send a new id for a new request",
                error_code=HTTPStatus.CONFLICT,
            ) from error
        except (PredictionLogClosed, PredictionLogUnavailable) as error:
            logger.error("prediction not answered, its log row cannot be kept: %s", error)
            raise ServiceUnavailable(str(error)) from error

    @staticmethod
    def _score(
        champion: Predictor,
        challenger: Challenger | None,
        rows: list[PredictionFeatures],
        reasons: int | None = None,
    ) -> tuple[list[Predictor], list[dict[str, Any]], Scored]:
        """Each row scored by its model (the canary's customers by the canary), one model
        call per model, and explained by that model when `reasons` is given; returns the
        model of each row, the raw features, and the scores."""
        features = [row.features() for row in rows]
        predictors = [
            challenger.predictor if routes_to_canary(challenger, row.customer_id) else champion
            for row in rows
        ]
        predictions: list[Prediction | None] = [None] * len(rows)
        for predictor in {id(p): p for p in predictors}.values():
            positions = [i for i, p in enumerate(predictors) if p is predictor]
            scored = predictor.predict([features[i] for i in positions])
            if reasons is not None:
                scored = predictor.explain([features[i] for i in positions], scored, reasons)
            for position, prediction in zip(positions, scored, strict=True):
                predictions[position] = prediction
        done: list[Prediction] = predictions  # type: ignore[assignment]
        return predictors, features, Scored(list(map(as_scored, features, done)), done)

    def _explanations(self) -> anyio.CapacityLimiter:
        """The one thread of this worker that explanations take turns on."""
        if self._explain_limiter is None:
            self._explain_limiter = anyio.CapacityLimiter(1)
        return self._explain_limiter

    @bentoml.api(route=routes.PREDICT, input_spec=PredictRequest)
    async def predict(
        self,
        data: PredictionFeatures,
        ctx: bentoml.Context,
        explain: bool = False,
        reasons: int = DEFAULT_REASONS,
    ) -> PredictionResponse:
        """Score one applicant; with "explain": true, give the reasons for its label."""
        started = time.perf_counter()
        request_id = request_id_for(ctx)
        features = data.features()
        challenger = self.challengers.current
        canary = routes_to_canary(challenger, data.customer_id)
        # Scored with the rows of concurrent requests; the answer names the model used.
        predictor, prediction = await (self.canary_scorer if canary else self.scorer).score(
            features
        )
        if explain:  # by the model that answered, off the event loop (CatBoost frees the GIL)
            (prediction,) = await anyio.to_thread.run_sync(
                predictor.explain,
                [features],
                [prediction],
                reasons,
                limiter=self._explanations(),
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        scored = Scored([as_scored(features, prediction)], [prediction])
        logged = await self._record(
            log_rows(request_id, [data], scored, [predictor], elapsed_ms, batch=False)
        )
        if logged is not None:  # a retry: the answer given the first time
            (prediction,) = logged_again(scored, logged).predictions
        else:
            self._offer_shadow(challenger, request_id, [data], [features], batch=False)
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return PredictionResponse(
            customer_id=data.customer_id,
            predict=prediction.label,
            confidence=prediction.confidence,
            repaired=list(prediction.repaired),
            explanation=prediction.explanation,
        )

    @bentoml.api(route=routes.PREDICT_BATCH, input_spec=BatchPredictRequest)
    async def predict_batch(
        self,
        data: list[PredictionFeatures],
        ctx: bentoml.Context,
        explain: bool = False,
        reasons: int = DEFAULT_REASONS,
    ) -> list[PredictionResponse]:
        """Score many applicants in one model call; answers keep the request's order. With
        "explain": true, each answer gives the reasons for its label."""
        started = time.perf_counter()
        request_id = request_id_for(ctx)
        answer = await self._answer_rows(request_id, data, started, reasons if explain else None)
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return answer  # type: ignore[return-value]

    async def answer_job_chunk(
        self, request_id: str, data: list[PredictionFeatures], first_position: int
    ) -> bytes:
        """A chunk of an asynchronous job's rows (`api.batch_jobs`), answered and logged as
        /predict_batch does, its rows numbered from `first_position`: the answers' JSON."""
        started = time.perf_counter()
        response = await self._answer_rows(
            request_id, data, started, first_position=first_position, bulk=True
        )
        return bytes(response.body)

    async def _answer_rows(
        self,
        request_id: str,
        data: list[PredictionFeatures],
        started: float,
        reasons: int | None = None,
        *,
        first_position: int = 0,
        bulk: bool = False,
    ) -> Response:
        """A batch's rows scored (off the event loop when many), logged under
        "<request id>#<position>" before the answer leaves (or the logged answers of a
        request sent before), offered to a shadow, and answered in order."""
        champion = self.served_model.current
        challenger = self.challengers.current
        if len(data) <= INLINE_ROWS and reasons is None:
            predictors, features, scored = self._score(champion, challenger, data)
        else:
            predictors, features, scored = await anyio.to_thread.run_sync(
                self._score,
                champion,
                challenger,
                data,
                reasons,
                limiter=None if reasons is None else self._explanations(),
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        logged = await self._record(
            log_rows(
                request_id,
                data,
                scored,
                predictors,
                elapsed_ms,
                batch=True,
                first_position=first_position,
            ),
            bulk=bulk,
        )
        if logged is not None:
            scored = logged_again(scored, logged)
        else:
            self._offer_shadow(
                challenger, request_id, data, features, batch=True, first_position=first_position
            )
        return batch_response(data, scored)


CreditScoreService.add_asgi_middleware(KeepAliveRecycler)
CreditScoreService.add_asgi_middleware(FormBodiesRefused)
CreditScoreService.add_asgi_middleware(ReplicaReadiness)
