"""Every setting the platform reads from the environment, with its embedded default.

One place names the variables and their defaults (everything under one local home
directory, no server needed). Where a process starts (the CLI, the Dagster code location)
`fill_defaults()` writes the defaults of unset variables into its environment, so Dagster
resources can take every value through `EnvVar`; the API reads the getters below.
"""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOME_ENV = "CREDIT_PLATFORM_HOME"
FEATURE_STORE_URL_ENV = "FEATURE_STORE_URL"
MLFLOW_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MLFLOW_EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
BENTOML_HOME_ENV = "BENTOML_HOME"
API_URL_ENV = "CREDIT_API_URL"
ADMIN_TOKEN_ENV = "CREDIT_API_ADMIN_TOKEN"
PARTITIONS_START_ENV = "CREDIT_PARTITIONS_START"
API_MODEL_TAG_ENV = "CREDIT_API_MODEL_TAG"
API_MAX_BATCH_ROWS_ENV = "CREDIT_API_MAX_BATCH_ROWS"
API_MAX_JOB_ROWS_ENV = "CREDIT_API_MAX_JOB_ROWS"
PREDICTION_SPOOL_DIR_ENV = "CREDIT_PREDICTION_SPOOL_DIR"
PREDICTION_LOG_TIMEOUT_ENV = "CREDIT_PREDICTION_LOG_TIMEOUT"
SCHEMA_LOCK_TIMEOUT_ENV = "CREDIT_SCHEMA_LOCK_TIMEOUT"
TRAINING_GRID_ENV = "CREDIT_TRAINING_GRID"
API_WORKERS_ENV = "CREDIT_API_WORKERS"
MLFLOW_UI_URL_ENV = "CREDIT_MLFLOW_UI_URL"
DAGSTER_HOME_ENV = "DAGSTER_HOME"

# The source checkout (or the Bento's src directory) that holds the packages, api/ and sql/.
REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_NAME = "credit_score_classifier"
DEFAULT_EXPERIMENT = "credit_score_classification"
DEFAULT_PARTITIONS_START = "2025-01-01"
# The named training grids of CREDIT_TRAINING_GRID and `credit-platform materialize --grid`,
# each a complete training config. A run launched without grid config (the UI's Materialize,
# a sensor, the CLI without --grid) trains on the CREDIT_TRAINING_GRID preset.
# The fit settings of the seed design: lr 0.3, one-vs-all loss, early stopping on valid
# accuracy after 50 rounds, no class weights, the trial with the best valid accuracy wins.
SEED_FIT: dict[str, Any] = {
    "learning_rate": 0.3,
    "loss_function": "MultiClassOneVsAll",
    "eval_metric": "Accuracy",
    "early_stopping_rounds": 50,
    "class_weights": "none",
    "selection_metric": "accuracy",
    "derived_features": False,
    "class_offset_strength": 0.0,
    "refit_on_train_valid": False,
}
TRAINING_GRIDS: dict[str, dict[str, Any]] = {
    # the 3 x 3 x 3 depth x rsm x l2 grid of the seed design
    "seed": {
        "depths": [4, 6, 8],
        "rsms": [0.5, 0.75, 1.0],
        "l2_leaf_regs": [1.0, 3.0, 5.0],
        "iterations": 2000,
        **SEED_FIT,
    },
    # two trials: demos, smoke runs, small machines
    "small": {
        "depths": [4, 6],
        "rsms": [1.0],
        "l2_leaf_regs": [3.0],
        "iterations": 300,
        **SEED_FIT,
    },
    # Measured better than the seed design on held-out rows (BENCHMARKS.md, model quality):
    # the seed's inputs plus the derived features, a softmax loss at a lower learning rate with
    # early stopping on valid log loss, a prior correction of the class scores instead of
    # class weights (strength 0.375: the best valid accuracy + macro F1 of 0 .. 0.625), depth
    # 6 (better than 4 and 8 on valid rows pooled over splits; choosing per partition between
    # them picked the worse one on test once in three), and the trial refit on train + valid.
    "tuned": {
        "depths": [6],
        "rsms": [1.0],
        "l2_leaf_regs": [3.0],
        "iterations": 3000,
        "learning_rate": 0.05,
        "loss_function": "MultiClass",
        "eval_metric": "MultiClass",
        "early_stopping_rounds": 200,
        "class_weights": "none",
        "selection_metric": "macro_f1",
        "derived_features": True,
        "class_offset_strength": 0.375,
        "refit_on_train_valid": True,
    },
}
DEFAULT_TRAINING_GRID = "tuned"
DEFAULT_API_PORT = 3000
DEFAULT_MLFLOW_UI_HOST = "127.0.0.1"
DEFAULT_MLFLOW_UI_PORT = 5000
DEFAULT_API_MAX_BATCH_ROWS = 5000
DEFAULT_API_MAX_JOB_ROWS = 200_000
DEFAULT_API_WORKERS = 2
DEFAULT_PREDICTION_LOG_TIMEOUT = 1.0
# A migration rebuilding a large table takes minutes; the processes starting meanwhile wait.
DEFAULT_SCHEMA_LOCK_TIMEOUT = 900.0


def platform_home() -> Path:
    """Root of every embedded default (SQLite files, MLflow artifacts, BentoML store)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".credit_platform").expanduser()


def default_feature_store_url() -> str:
    return f"sqlite:///{platform_home() / 'feature_store.db'}"


def feature_store_url() -> str:
    return os.environ.get(FEATURE_STORE_URL_ENV) or default_feature_store_url()


def default_mlflow_tracking_uri() -> str:
    return f"sqlite:///{platform_home() / 'mlflow.db'}"


def mlflow_tracking_uri() -> str:
    return os.environ.get(MLFLOW_TRACKING_URI_ENV) or default_mlflow_tracking_uri()


def dagster_home() -> Path:
    """The Dagster instance the CLI and `credit-platform ui` use (set by the CLI when unset)."""
    return Path(os.environ.get(DAGSTER_HOME_ENV) or platform_home() / "dagster").expanduser()


def mlflow_artifact_root() -> Path:
    return platform_home() / "mlartifacts"


def monitoring_reports_dir() -> Path:
    """Where `model_monitoring` writes its chart and HTML report of the monitored days."""
    return platform_home() / "reports" / "model_monitoring"


def mlflow_experiment_name() -> str:
    return os.environ.get(MLFLOW_EXPERIMENT_ENV) or DEFAULT_EXPERIMENT


def bentoml_home() -> Path:
    return Path(os.environ.get(BENTOML_HOME_ENV) or platform_home() / "bentoml").expanduser()


def api_url() -> str:
    return (os.environ.get(API_URL_ENV) or f"http://127.0.0.1:{DEFAULT_API_PORT}").rstrip("/")


def admin_token() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def mlflow_ui_url() -> str:
    """Base URL of the MLflow UI that asset metadata links to (`credit-platform mlflow-ui`
    listens there by default)."""
    default = f"http://{DEFAULT_MLFLOW_UI_HOST}:{DEFAULT_MLFLOW_UI_PORT}"
    return (os.environ.get(MLFLOW_UI_URL_ENV) or default).rstrip("/")


def local_admin_token() -> str:
    """The embedded default of CREDIT_API_ADMIN_TOKEN: one random token per platform home,
    kept (0600) under it, so every command of this machine can hot-swap a service that an
    earlier one started."""
    path = platform_home() / "run" / "admin_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def api_model_tag() -> str:
    """The model the prediction service loads at start (default: the newest saved one)."""
    return os.environ.get(API_MODEL_TAG_ENV) or f"{MODEL_NAME}:latest"


def api_model_tag_pinned() -> str | None:
    """The model CREDIT_API_MODEL_TAG names, None when it is unset or asks for the newest:
    a replica started with a pin serves it and makes it every replica's model; one without
    serves what the replicas' record names."""
    tag = (os.environ.get(API_MODEL_TAG_ENV) or "").strip()
    return None if not tag or tag == "latest" or tag.endswith(":latest") else tag


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return parse_positive_int(name, raw) if raw else default


def _positive_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    problem = f"{name} must be a positive number of seconds, not {raw!r}"
    try:
        value = float(raw)
    except ValueError as error:
        raise ValueError(problem) from error
    if not 0 < value < float("inf"):  # NaN fails this too
        raise ValueError(problem)
    return value


def api_max_batch_rows() -> int:
    """Upper bound on rows in one /predict_batch request."""
    return _positive_int(API_MAX_BATCH_ROWS_ENV, DEFAULT_API_MAX_BATCH_ROWS)


def api_max_job_rows() -> int:
    """Upper bound on rows in one asynchronous batch job (/predict_batch_job/submit)."""
    return _positive_int(API_MAX_JOB_ROWS_ENV, DEFAULT_API_MAX_JOB_ROWS)


API_JOB_DIR_ENV = "CREDIT_API_JOB_DIR"
API_JOB_STORE_BYTES_ENV = "CREDIT_API_JOB_STORE_BYTES"
API_JOBS_IN_FLIGHT_ENV = "CREDIT_API_JOBS_IN_FLIGHT"
API_JOB_RETENTION_ENV = "CREDIT_API_JOB_RETENTION_SECONDS"
DEFAULT_API_JOB_STORE_BYTES = 2 * 1024**3
DEFAULT_API_JOBS_IN_FLIGHT = 4
DEFAULT_API_JOB_RETENTION_SECONDS = 24 * 3600.0


def api_job_dir() -> Path:
    """The store of asynchronous batch jobs (`api/job_store.py`): their rows while they run,
    their answers for the retention period, and an index of every job. Replicas that share
    it (the stack's shared volume) answer for each other's jobs."""
    raw = os.environ.get(API_JOB_DIR_ENV)
    return Path(raw).expanduser() if raw else platform_home() / "api-jobs"


def api_job_store_bytes() -> int:
    """Bytes the job store may hold: running jobs count twice their body (rows and answers),
    ended ones their answers."""
    return _positive_int(API_JOB_STORE_BYTES_ENV, DEFAULT_API_JOB_STORE_BYTES)


def api_jobs_in_flight() -> int:
    """Jobs that may be receiving or running at once, over every worker and replica sharing
    the job store (429 beyond)."""
    return _positive_int(API_JOBS_IN_FLIGHT_ENV, DEFAULT_API_JOBS_IN_FLIGHT)


def api_job_retention_seconds() -> float:
    """How long an ended job's answers (or failure) are kept."""
    return _positive_seconds(API_JOB_RETENTION_ENV, DEFAULT_API_JOB_RETENTION_SECONDS)


def api_workers() -> int:
    """Worker processes of one prediction service (a reload reaches every one of them)."""
    return _positive_int(API_WORKERS_ENV, DEFAULT_API_WORKERS)


# Request limits of the prediction service (api/request_limits.py enforces them).
API_MAX_HEADER_BYTES_ENV = "CREDIT_API_MAX_HEADER_BYTES"
API_MAX_BODY_BYTES_ENV = "CREDIT_API_MAX_BODY_BYTES"
API_MAX_ROW_BYTES_ENV = "CREDIT_API_MAX_ROW_BYTES"
API_HEADER_TIMEOUT_ENV = "CREDIT_API_HEADER_TIMEOUT_SECONDS"
API_BODY_TIMEOUT_ENV = "CREDIT_API_BODY_TIMEOUT_SECONDS"
DEFAULT_API_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_API_MAX_BODY_BYTES = 64 * 1024
DEFAULT_API_MAX_ROW_BYTES = 4096
DEFAULT_API_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_API_BODY_TIMEOUT_SECONDS = 30.0


def api_max_header_bytes() -> int:
    """Bytes a request line and its headers may take together (431 above)."""
    return _positive_int(API_MAX_HEADER_BYTES_ENV, DEFAULT_API_MAX_HEADER_BYTES)


def api_max_body_bytes() -> int:
    """Bytes a request body may take on every route but /predict_batch (413 above)."""
    return _positive_int(API_MAX_BODY_BYTES_ENV, DEFAULT_API_MAX_BODY_BYTES)


def api_max_row_bytes() -> int:
    """Bytes one row of a /predict_batch body may take: the batch body limit is this times
    the batch row limit (at least the body limit of the other routes)."""
    return _positive_int(API_MAX_ROW_BYTES_ENV, DEFAULT_API_MAX_ROW_BYTES)


def api_header_timeout_seconds() -> float:
    """Seconds a client may take to send a request line and headers, counted from its
    first byte (or from the connection, for its first request); then it is disconnected."""
    return _positive_seconds(API_HEADER_TIMEOUT_ENV, DEFAULT_API_HEADER_TIMEOUT_SECONDS)


def api_body_timeout_seconds() -> float:
    """Seconds a client may take to send a request body, counted from the end of its
    headers; then it is answered 408 and disconnected (a body trickled byte by byte must
    not hold a connection and a half-read request forever)."""
    return _positive_seconds(API_BODY_TIMEOUT_ENV, DEFAULT_API_BODY_TIMEOUT_SECONDS)


# Replicas of the prediction service (`api.replica_sync`): each follows the desired-model
# record in the feature store, polling it this often, and answers /readyz 503 once it has
# been unable to read the record, or to serve the model it names, for longer than the bound.
API_MODEL_POLL_SECONDS_ENV = "CREDIT_API_MODEL_POLL_SECONDS"
API_MODEL_STALE_SECONDS_ENV = "CREDIT_API_MODEL_STALE_SECONDS"
DEFAULT_API_MODEL_POLL_SECONDS = 2.0
DEFAULT_API_MODEL_STALE_SECONDS = 60.0


def api_model_poll_seconds() -> float:
    """Seconds between two reads of the desired-model record by one replica (and between
    two heartbeats it writes)."""
    return _positive_seconds(API_MODEL_POLL_SECONDS_ENV, DEFAULT_API_MODEL_POLL_SECONDS)


def api_model_stale_seconds() -> float:
    """How long a replica may go on serving another model than the record names (or without
    reading the record) before /readyz takes it out of its balancer's rotation."""
    return _positive_seconds(API_MODEL_STALE_SECONDS_ENV, DEFAULT_API_MODEL_STALE_SECONDS)


# A replica told to stop (SIGTERM: `docker stop`, a scale-down) first answers /readyz 503
# for this long while it serves as before, so its balancer takes it out of rotation before
# it stops accepting connections (`api.replica_sync.drain_on_sigterm`). 0 stops at once
# (a service with no balancer in front).
API_DRAIN_SECONDS_ENV = "CREDIT_API_DRAIN_SECONDS"
DEFAULT_API_DRAIN_SECONDS = 0.0


def api_drain_seconds() -> float:
    """Seconds a replica told to stop keeps serving, out of its balancer's rotation, before
    it stops accepting connections."""
    raw = os.environ.get(API_DRAIN_SECONDS_ENV)
    if not raw:
        return DEFAULT_API_DRAIN_SECONDS
    return parse_non_negative_number(API_DRAIN_SECONDS_ENV, raw)


def api_worker_state_dir(server_identity: str) -> Path:
    """Where the workers of one running service agree on the model to serve (see
    `api.model_sync`); `server_identity` names the server process."""
    return platform_home() / "run" / f"api-workers-{server_identity}"


def prediction_spool_dir() -> Path:
    """Where the prediction log spools rows (fsync'd JSON lines) while the database is down."""
    raw = os.environ.get(PREDICTION_SPOOL_DIR_ENV)
    return Path(raw).expanduser() if raw else platform_home() / "spool"


def prediction_log_timeout() -> float:
    """Seconds a request waits for the log database before its rows go to the spool instead
    (a hung database then delays answers by this much, not by the driver's timeouts)."""
    return _positive_seconds(PREDICTION_LOG_TIMEOUT_ENV, DEFAULT_PREDICTION_LOG_TIMEOUT)


def schema_lock_timeout() -> float:
    """Seconds a process waits for another's migration of the feature store before it fails
    saying so (a waiter logs every half minute while it waits)."""
    return _positive_seconds(SCHEMA_LOCK_TIMEOUT_ENV, DEFAULT_SCHEMA_LOCK_TIMEOUT)


def training_grid() -> str:
    """The grid a training run uses when its run config names none (e.g. Materialize in the UI)."""
    name = os.environ.get(TRAINING_GRID_ENV) or DEFAULT_TRAINING_GRID
    if name not in TRAINING_GRIDS:
        raise ValueError(
            f"{TRAINING_GRID_ENV} must be one of {', '.join(TRAINING_GRIDS)}, not {name!r}"
        )
    return name


def training_grid_preset(name: str | None = None) -> dict[str, Any]:
    """A copy of the named grid (default: the CREDIT_TRAINING_GRID one) as training config."""
    name = name or training_grid()
    if name not in TRAINING_GRIDS:
        raise ValueError(f"unknown grid {name!r}: choose one of {', '.join(TRAINING_GRIDS)}")
    return copy.deepcopy(TRAINING_GRIDS[name])


def partitions_start() -> str:
    return os.environ.get(PARTITIONS_START_ENV) or DEFAULT_PARTITIONS_START


# Model monitoring (`model_monitoring`, its checks, the retrain and rollback sensors).
MONITORING_PSI_THRESHOLD_ENV = "CREDIT_MONITORING_PSI_THRESHOLD"
MONITORING_ACCURACY_TOLERANCE_ENV = "CREDIT_MONITORING_ACCURACY_TOLERANCE"
MONITORING_MIN_LABELLED_ENV = "CREDIT_MONITORING_MIN_LABELLED"
MONITORING_LABEL_HORIZON_DAYS_ENV = "CREDIT_MONITORING_LABEL_HORIZON_DAYS"
RETRAIN_COOLDOWN_SECONDS_ENV = "CREDIT_RETRAIN_COOLDOWN_SECONDS"
ROLLBACK_TOLERANCE_ENV = "CREDIT_ROLLBACK_TOLERANCE"
ROLLBACK_MIN_LABELLED_ENV = "CREDIT_ROLLBACK_MIN_LABELLED"
CHALLENGER_MARGIN_ENV = "CREDIT_CHALLENGER_MARGIN"
CHALLENGER_MIN_LABELLED_ENV = "CREDIT_CHALLENGER_MIN_LABELLED"
# PSI above 0.2 is the usual "significant shift" line; 0.1-0.2 is "moderate".
DEFAULT_MONITORING_PSI_THRESHOLD = 0.2
DEFAULT_MONITORING_ACCURACY_TOLERANCE = 0.05
DEFAULT_MONITORING_MIN_LABELLED = 200
# A prediction of day D is judged by the customer's first label dated D .. D + horizon.
DEFAULT_MONITORING_LABEL_HORIZON_DAYS = 30
DEFAULT_RETRAIN_COOLDOWN_SECONDS = 6 * 3600
DEFAULT_ROLLBACK_TOLERANCE = 0.03
DEFAULT_ROLLBACK_MIN_LABELLED = 200
DEFAULT_CHALLENGER_MARGIN = 0.01
DEFAULT_CHALLENGER_MIN_LABELLED = 200


def parse_non_negative_number(name: str, raw: str) -> float:
    """`raw`, the value of setting `name`, as a finite number >= 0 (ValueError naming it)."""
    problem = f"{name} must be a non-negative number, not {raw!r}"
    try:
        value = float(raw)
    except ValueError as error:
        raise ValueError(problem) from error
    if not 0 <= value < float("inf"):  # NaN fails this too
        raise ValueError(problem)
    return value


def parse_positive_int(name: str, raw: str) -> int:
    """`raw`, the value of setting `name`, as an integer >= 1 (ValueError naming it)."""
    return _parse_int(name, raw, 1, "a positive integer")


def parse_non_negative_int(name: str, raw: str) -> int:
    """`raw`, the value of setting `name`, as an integer >= 0 (ValueError naming it)."""
    return _parse_int(name, raw, 0, "a non-negative integer")


def _parse_int(name: str, raw: str, minimum: int, kind: str) -> int:
    problem = f"{name} must be {kind}, not {raw!r}"
    try:
        value = int(raw)
    except ValueError as error:
        raise ValueError(problem) from error
    if value < minimum:
        raise ValueError(problem)
    return value


def _non_negative_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return parse_non_negative_number(name, raw) if raw else default


def monitoring_psi_threshold() -> float:
    """PSI above which a feature (or the prediction mix) counts as drifted (a WARN)."""
    return _non_negative_number(MONITORING_PSI_THRESHOLD_ENV, DEFAULT_MONITORING_PSI_THRESHOLD)


def monitoring_accuracy_tolerance() -> float:
    """How far live accuracy may fall below the model's test accuracy (an ERROR beyond)."""
    return _non_negative_number(
        MONITORING_ACCURACY_TOLERANCE_ENV, DEFAULT_MONITORING_ACCURACY_TOLERANCE
    )


def monitoring_min_labelled() -> int:
    """Labelled predictions a day needs before its live accuracy is judged."""
    return _positive_int(MONITORING_MIN_LABELLED_ENV, DEFAULT_MONITORING_MIN_LABELLED)


def monitoring_label_horizon_days() -> int:
    """Days after a prediction within which a label of its customer still judges it."""
    return _positive_int(MONITORING_LABEL_HORIZON_DAYS_ENV, DEFAULT_MONITORING_LABEL_HORIZON_DAYS)


def retrain_cooldown_seconds() -> int:
    """Least time between two retraining runs the retrain sensor requests."""
    return _positive_int(RETRAIN_COOLDOWN_SECONDS_ENV, DEFAULT_RETRAIN_COOLDOWN_SECONDS)


def rollback_tolerance() -> float:
    """How much worse live accuracy a new model may have than its predecessor on the same
    days before the rollback sensor redeploys the predecessor."""
    return _non_negative_number(ROLLBACK_TOLERANCE_ENV, DEFAULT_ROLLBACK_TOLERANCE)


def rollback_min_labelled() -> int:
    """Labelled predictions each of the two models needs on the shared days for a rollback."""
    return _positive_int(ROLLBACK_MIN_LABELLED_ENV, DEFAULT_ROLLBACK_MIN_LABELLED)


def challenger_margin() -> float:
    """How much better (or worse) a shadow's or canary's live accuracy must be than the
    champion's, on the same days, before the challenger sensor promotes (or detaches) it."""
    return _non_negative_number(CHALLENGER_MARGIN_ENV, DEFAULT_CHALLENGER_MARGIN)


def challenger_min_labelled() -> int:
    """Labelled predictions the challenger and the champion each need before a decision."""
    return _positive_int(CHALLENGER_MIN_LABELLED_ENV, DEFAULT_CHALLENGER_MIN_LABELLED)


# Retention of the BentoML store (`core/retention.py`): besides the models and Bentos in
# use, the newest this many of each are kept; 0 keeps everything.
RETENTION_KEEP_LAST_ENV = "CREDIT_RETENTION_KEEP_LAST"
DEFAULT_RETENTION_KEEP_LAST = 5


def retention_keep_last() -> int:
    """How many of the newest models (and Bentos) retention keeps besides those in use."""
    raw = os.environ.get(RETENTION_KEEP_LAST_ENV)
    if not raw:
        return DEFAULT_RETENTION_KEEP_LAST
    return parse_non_negative_int(RETENTION_KEEP_LAST_ENV, raw)


# Fairness and segments (`core/fairness.py`): the features whose segments are compared (age
# in bands, a categorical feature by value) by the check on `credit_score_model`, the model
# card and `model_monitoring`, and the thresholds of the two rules that flag a segment.
FAIRNESS_SEGMENTS_ENV = "CREDIT_FAIRNESS_SEGMENTS"
FAIRNESS_AGE_BANDS_ENV = "CREDIT_FAIRNESS_AGE_BANDS"
FAIRNESS_MIN_RATE_RATIO_ENV = "CREDIT_FAIRNESS_MIN_RATE_RATIO"
FAIRNESS_MAX_ACCURACY_GAP_ENV = "CREDIT_FAIRNESS_MAX_ACCURACY_GAP"
FAIRNESS_MIN_SEGMENT_ROWS_ENV = "CREDIT_FAIRNESS_MIN_SEGMENT_ROWS"
FAIRNESS_MAX_P_VALUE_ENV = "CREDIT_FAIRNESS_MAX_P_VALUE"
DEFAULT_FAIRNESS_SEGMENTS = "age,occupation"
DEFAULT_FAIRNESS_AGE_BANDS = "25,40,60"
DEFAULT_FAIRNESS_MIN_RATE_RATIO = 0.8
DEFAULT_FAIRNESS_MAX_ACCURACY_GAP = 0.05
DEFAULT_FAIRNESS_MIN_SEGMENT_ROWS = 30
DEFAULT_FAIRNESS_MAX_P_VALUE = 0.05
# age in bands; the categorical features (core.features.CATEGORICAL_FEATURES) by value
FAIRNESS_SEGMENT_FEATURES = ("age", "occupation", "credit_mix", "payment_of_min_amount")


def parse_segments(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of segment features (ValueError naming the setting)."""
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = [part for part in names if part not in FAIRNESS_SEGMENT_FEATURES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"{name} must list distinct features among {', '.join(FAIRNESS_SEGMENT_FEATURES)}, "
            f"not {raw!r}"
        )
    return names


def parse_band_edges(name: str, raw: str) -> tuple[float, ...]:
    """Comma-separated increasing numbers, the edges between bands (ValueError naming it)."""
    problem = (
        f"{name} must be increasing numbers separated by commas, such as 25,40,60, not {raw!r}"
    )
    try:
        edges = tuple(float(part) for part in raw.split(","))
    except ValueError as error:
        raise ValueError(problem) from error
    if not edges or any(not low < high for low, high in zip(edges, edges[1:], strict=False)):
        raise ValueError(problem)
    if any(edge != edge or edge in (float("inf"), float("-inf")) for edge in edges):
        raise ValueError(problem)
    return edges


def parse_ratio(name: str, raw: str) -> float:
    """A number in (0, 1] (ValueError naming the setting)."""
    value = parse_non_negative_number(name, raw)
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], not {raw!r}")
    return value


def fairness_segments() -> tuple[str, ...]:
    raw = os.environ.get(FAIRNESS_SEGMENTS_ENV)
    return parse_segments(FAIRNESS_SEGMENTS_ENV, raw or DEFAULT_FAIRNESS_SEGMENTS)


def fairness_age_bands() -> tuple[float, ...]:
    raw = os.environ.get(FAIRNESS_AGE_BANDS_ENV)
    return parse_band_edges(FAIRNESS_AGE_BANDS_ENV, raw or DEFAULT_FAIRNESS_AGE_BANDS)


def fairness_min_rate_ratio() -> float:
    """The four-fifths rule: a segment's rate of Good must be at least this share of the
    best segment's."""
    raw = os.environ.get(FAIRNESS_MIN_RATE_RATIO_ENV)
    return parse_ratio(FAIRNESS_MIN_RATE_RATIO_ENV, raw) if raw else DEFAULT_FAIRNESS_MIN_RATE_RATIO


def fairness_max_accuracy_gap() -> float:
    """How far below the whole's accuracy a segment's may be."""
    return _non_negative_number(FAIRNESS_MAX_ACCURACY_GAP_ENV, DEFAULT_FAIRNESS_MAX_ACCURACY_GAP)


def fairness_min_segment_rows() -> int:
    """Rows (labelled predictions, live) a segment needs before the rules judge it."""
    return _positive_int(FAIRNESS_MIN_SEGMENT_ROWS_ENV, DEFAULT_FAIRNESS_MIN_SEGMENT_ROWS)


def fairness_max_p_value() -> float:
    """A shortfall flags a segment only when a one-sided z-test gives at most this p-value
    divided by the number of tests (two per judged segment: Bonferroni)."""
    raw = os.environ.get(FAIRNESS_MAX_P_VALUE_ENV)
    return parse_ratio(FAIRNESS_MAX_P_VALUE_ENV, raw) if raw else DEFAULT_FAIRNESS_MAX_P_VALUE


def fairness_defaults() -> dict[str, Callable[[], str]]:
    """The fairness variables with their defaults, each read (and so validated) once."""
    return {
        FAIRNESS_SEGMENTS_ENV: lambda: ",".join(fairness_segments()),
        FAIRNESS_AGE_BANDS_ENV: lambda: ",".join(f"{edge:g}" for edge in fairness_age_bands()),
        FAIRNESS_MIN_RATE_RATIO_ENV: lambda: str(fairness_min_rate_ratio()),
        FAIRNESS_MAX_ACCURACY_GAP_ENV: lambda: str(fairness_max_accuracy_gap()),
        FAIRNESS_MIN_SEGMENT_ROWS_ENV: lambda: str(fairness_min_segment_rows()),
        FAIRNESS_MAX_P_VALUE_ENV: lambda: str(fairness_max_p_value()),
    }


def monitoring_defaults() -> dict[str, Callable[[], str]]:
    """The monitoring variables with their defaults, each read (and so validated) once."""
    return {
        MONITORING_PSI_THRESHOLD_ENV: lambda: str(monitoring_psi_threshold()),
        MONITORING_ACCURACY_TOLERANCE_ENV: lambda: str(monitoring_accuracy_tolerance()),
        MONITORING_MIN_LABELLED_ENV: lambda: str(monitoring_min_labelled()),
        MONITORING_LABEL_HORIZON_DAYS_ENV: lambda: str(monitoring_label_horizon_days()),
        RETRAIN_COOLDOWN_SECONDS_ENV: lambda: str(retrain_cooldown_seconds()),
        ROLLBACK_TOLERANCE_ENV: lambda: str(rollback_tolerance()),
        ROLLBACK_MIN_LABELLED_ENV: lambda: str(rollback_min_labelled()),
        CHALLENGER_MARGIN_ENV: lambda: str(challenger_margin()),
        CHALLENGER_MIN_LABELLED_ENV: lambda: str(challenger_min_labelled()),
    }


def embedded_defaults() -> dict[str, Callable[[], str]]:
    """The variables `fill_defaults` sets, each with the function giving its default (the
    home first: the others derive from it)."""
    return {
        HOME_ENV: lambda: str(platform_home()),
        FEATURE_STORE_URL_ENV: default_feature_store_url,
        MLFLOW_TRACKING_URI_ENV: default_mlflow_tracking_uri,
        MLFLOW_EXPERIMENT_ENV: lambda: DEFAULT_EXPERIMENT,
        MLFLOW_UI_URL_ENV: mlflow_ui_url,
        BENTOML_HOME_ENV: lambda: str(bentoml_home()),
        API_URL_ENV: api_url,
        ADMIN_TOKEN_ENV: local_admin_token,
        PARTITIONS_START_ENV: lambda: DEFAULT_PARTITIONS_START,
        TRAINING_GRID_ENV: lambda: DEFAULT_TRAINING_GRID,
        **monitoring_defaults(),
        RETENTION_KEEP_LAST_ENV: lambda: str(retention_keep_last()),
        **fairness_defaults(),
    }


def fill_defaults() -> dict[str, str]:
    """Write the embedded default of every unset platform variable into this process's
    environment (children inherit it) and return the values now in force.

    Called where a process starts (the CLI, the code location's definitions module), so
    Dagster resources can take each value through `EnvVar` (the UI shows where it comes
    from and never prints a secret); a variable already set always wins.
    """
    defaults = embedded_defaults()
    for name, default in defaults.items():
        if not os.environ.get(name):
            os.environ[name] = default()
    training_grid()  # a misspelt grid name fails here, where the process starts
    for read in monitoring_defaults().values():
        read()  # so does a malformed threshold
    retention_keep_last()  # and a malformed retention count
    for read in fairness_defaults().values():
        read()  # and a malformed fairness segment list or threshold
    return {name: os.environ[name] for name in defaults}


def export_bentoml_home() -> Path:
    """BentoML reads BENTOML_HOME once, when it is first imported: pin it before that."""
    home = bentoml_home()
    os.environ.setdefault(BENTOML_HOME_ENV, str(home))
    return Path(os.environ[BENTOML_HOME_ENV])


# --- who reads what ---------------------------------------------------------------------
# The production stack runs the platform's code in two kinds of process, and each must get
# every setting it reads: `docker-compose.yml` and the run launcher's `env_vars` in
# deploy/dagster/dagster.yaml are checked against this table
# (credit_platform_tests/stack/test_settings_reach_processes.py), so a setting added here
# without them fails a test instead of being silently ignored in production.
API_PROCESS = "api"  # each prediction-service replica (`credit-platform serve`)
DAGSTER_PROCESS = "dagster"  # the Dagster code: its code server (sensors) and every run


@dataclass(frozen=True)
class Setting:
    """One environment variable and the processes whose code reads it."""

    name: str
    readers: frozenset[str]


def _read_by(*readers: str) -> frozenset[str]:
    return frozenset(readers)


_BOTH = _read_by(API_PROCESS, DAGSTER_PROCESS)
SETTINGS: tuple[Setting, ...] = (
    Setting(HOME_ENV, _BOTH),
    Setting(FEATURE_STORE_URL_ENV, _BOTH),
    Setting(SCHEMA_LOCK_TIMEOUT_ENV, _BOTH),
    Setting(BENTOML_HOME_ENV, _BOTH),
    Setting(ADMIN_TOKEN_ENV, _BOTH),
    Setting(MLFLOW_TRACKING_URI_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(MLFLOW_EXPERIMENT_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(MLFLOW_UI_URL_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(API_URL_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(PARTITIONS_START_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(TRAINING_GRID_ENV, _read_by(DAGSTER_PROCESS)),
    Setting(DAGSTER_HOME_ENV, _read_by(DAGSTER_PROCESS)),
    *(Setting(name, _read_by(DAGSTER_PROCESS)) for name in monitoring_defaults()),
    Setting(RETENTION_KEEP_LAST_ENV, _read_by(DAGSTER_PROCESS)),
    *(Setting(name, _read_by(DAGSTER_PROCESS)) for name in fairness_defaults()),
    Setting(API_MODEL_TAG_ENV, _read_by(API_PROCESS)),
    Setting(API_WORKERS_ENV, _read_by(API_PROCESS)),
    Setting(API_MODEL_POLL_SECONDS_ENV, _read_by(API_PROCESS)),
    Setting(API_MODEL_STALE_SECONDS_ENV, _read_by(API_PROCESS)),
    Setting(API_DRAIN_SECONDS_ENV, _read_by(API_PROCESS)),
    Setting(API_MAX_BATCH_ROWS_ENV, _read_by(API_PROCESS)),
    Setting(API_MAX_JOB_ROWS_ENV, _read_by(API_PROCESS)),
    Setting(API_JOB_DIR_ENV, _read_by(API_PROCESS)),
    Setting(API_JOB_STORE_BYTES_ENV, _read_by(API_PROCESS)),
    Setting(API_JOBS_IN_FLIGHT_ENV, _read_by(API_PROCESS)),
    Setting(API_JOB_RETENTION_ENV, _read_by(API_PROCESS)),
    Setting(PREDICTION_SPOOL_DIR_ENV, _read_by(API_PROCESS)),
    Setting(PREDICTION_LOG_TIMEOUT_ENV, _read_by(API_PROCESS)),
    Setting(API_MAX_HEADER_BYTES_ENV, _read_by(API_PROCESS)),
    Setting(API_MAX_BODY_BYTES_ENV, _read_by(API_PROCESS)),
    Setting(API_MAX_ROW_BYTES_ENV, _read_by(API_PROCESS)),
    Setting(API_HEADER_TIMEOUT_ENV, _read_by(API_PROCESS)),
    Setting(API_BODY_TIMEOUT_ENV, _read_by(API_PROCESS)),
)
