"""Every setting the platform reads from the environment, with its embedded default.

One place names the variables; resources, the CLI and the API read them through the
functions here, so the defaults (everything under one local home directory, no
server needed) cannot diverge between components.
"""

from __future__ import annotations

import os
from pathlib import Path

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
PREDICTION_SPOOL_DIR_ENV = "CREDIT_PREDICTION_SPOOL_DIR"
TRAINING_GRID_ENV = "CREDIT_TRAINING_GRID"
API_WORKERS_ENV = "CREDIT_API_WORKERS"

# The source checkout (or the Bento's src directory) that holds the packages, api/ and sql/.
REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_NAME = "credit_score_classifier"
DEFAULT_EXPERIMENT = "credit_score_classification"
DEFAULT_PARTITIONS_START = "2025-01-01"
# Named training grids (values in credit_platform.defs.assets.model.GRID_PRESETS): "seed" is the
# 3 x 3 x 3 depth x rsm x l2 grid, "small" two trials for demos, UI smoke runs and small machines.
TRAINING_GRIDS = ("seed", "small")
DEFAULT_TRAINING_GRID = "seed"
DEFAULT_API_PORT = 3000
DEFAULT_API_MAX_BATCH_ROWS = 5000
DEFAULT_API_WORKERS = 2


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


def mlflow_artifact_root() -> Path:
    return platform_home() / "mlartifacts"


def mlflow_experiment_name() -> str:
    return os.environ.get(MLFLOW_EXPERIMENT_ENV) or DEFAULT_EXPERIMENT


def bentoml_home() -> Path:
    return Path(os.environ.get(BENTOML_HOME_ENV) or platform_home() / "bentoml").expanduser()


def api_url() -> str:
    return (os.environ.get(API_URL_ENV) or f"http://127.0.0.1:{DEFAULT_API_PORT}").rstrip("/")


def admin_token() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def api_model_tag() -> str:
    """The model the prediction service loads at start (default: the newest saved one)."""
    return os.environ.get(API_MODEL_TAG_ENV) or f"{MODEL_NAME}:latest"


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    problem = f"{name} must be a positive integer, not {raw!r}"
    try:
        value = int(raw)
    except ValueError as error:
        raise ValueError(problem) from error
    if value < 1:
        raise ValueError(problem)
    return value


def api_max_batch_rows() -> int:
    """Upper bound on rows in one /predict_batch request."""
    return _positive_int(API_MAX_BATCH_ROWS_ENV, DEFAULT_API_MAX_BATCH_ROWS)


def api_workers() -> int:
    """Worker processes of one prediction service (a reload reaches every one of them)."""
    return _positive_int(API_WORKERS_ENV, DEFAULT_API_WORKERS)


# Request limits of the prediction service (api/request_limits.py enforces them).
API_MAX_HEADER_BYTES_ENV = "CREDIT_API_MAX_HEADER_BYTES"
API_MAX_BODY_BYTES_ENV = "CREDIT_API_MAX_BODY_BYTES"
API_MAX_ROW_BYTES_ENV = "CREDIT_API_MAX_ROW_BYTES"
API_HEADER_TIMEOUT_ENV = "CREDIT_API_HEADER_TIMEOUT_SECONDS"
DEFAULT_API_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_API_MAX_BODY_BYTES = 64 * 1024
DEFAULT_API_MAX_ROW_BYTES = 4096
DEFAULT_API_HEADER_TIMEOUT_SECONDS = 10.0


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
    raw = os.environ.get(API_HEADER_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_API_HEADER_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{API_HEADER_TIMEOUT_ENV} must be a positive number, not {raw!r}")
    return value


def api_worker_state_dir(server_identity: str) -> Path:
    """Where the workers of one running service agree on the model to serve (see
    `api.model_sync`); `server_identity` names the server process."""
    return platform_home() / "run" / f"api-workers-{server_identity}"


def prediction_spool_dir() -> Path:
    """Where the prediction log spools rows (fsync'd JSON lines) while the database is down."""
    raw = os.environ.get(PREDICTION_SPOOL_DIR_ENV)
    return Path(raw).expanduser() if raw else platform_home() / "spool"


def training_grid() -> str:
    """The grid a training run uses when its run config names none (e.g. Materialize in the UI)."""
    name = os.environ.get(TRAINING_GRID_ENV) or DEFAULT_TRAINING_GRID
    if name not in TRAINING_GRIDS:
        raise ValueError(
            f"{TRAINING_GRID_ENV} must be one of {', '.join(TRAINING_GRIDS)}, not {name!r}"
        )
    return name


def partitions_start() -> str:
    return os.environ.get(PARTITIONS_START_ENV) or DEFAULT_PARTITIONS_START


def export_bentoml_home() -> Path:
    """BentoML reads BENTOML_HOME once, when it is first imported: pin it before that."""
    home = bentoml_home()
    os.environ.setdefault(BENTOML_HOME_ENV, str(home))
    return Path(os.environ[BENTOML_HOME_ENV])
