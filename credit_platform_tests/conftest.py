"""Shared fixtures: an isolated platform home per test session, SQLite and MariaDB stores.

The suite is hermetic: before anything imports BentoML (which reads BENTOML_HOME once),
every platform variable a user may have set is cleared, the home, the BentoML store and the
Dagster instance go to a fresh temporary directory, and the prediction API's URL points at
a port this session holds without listening. So no test reaches `~/.credit_platform`,
port 3000 or a service it did not start (such as a demo left running).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from bench.isolation import SilentPort, pin_isolated_environment
from credit_platform.core import settings

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="credit_platform_test_home_"))
# Held (bound, never listening) for the whole session: the API URL every test inherits.
_SILENT_API_PORT = SilentPort()
pin_isolated_environment(_SESSION_HOME, _SILENT_API_PORT.url)
# One BentoML store serves the whole session: no deploy (a CLI or demo run included) deletes
# another test's model or Bento unless its test asks for retention.
os.environ[settings.RETENTION_KEEP_LAST_ENV] = "0"

MARIADB_SERVER_URL = os.environ.get(
    "CREDIT_TEST_MARIADB_URL", "mysql+pymysql://root:@127.0.0.1:3306"
)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KAGGLE_SAMPLE = SHARED_DATA / "kaggle_credit_train_sample.csv"


@pytest.fixture(scope="session")
def platform_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def unanswered_api_url() -> str:
    """The session's API URL: nothing answers there, and nothing can start there."""
    return _SILENT_API_PORT.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'feature_store.db'}"


def _mariadb_answers() -> str | None:
    """None when the server answers, else the reason."""
    from sqlalchemy import create_engine, text

    engine = create_engine(MARIADB_SERVER_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as error:  # any failure means: no usable server
        return str(error)
    finally:
        engine.dispose()


DROP_WAIT_SECONDS = 60


@pytest.fixture
def mariadb_url() -> str:
    """A fresh database on the real MariaDB server, dropped afterwards.

    Required under CI: there a missing server fails the test instead of skipping it.
    """
    from sqlalchemy import create_engine, text

    reason = _mariadb_answers()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(
                f"MariaDB is required in CI but {MARIADB_SERVER_URL} did not answer: {reason}"
            )
        pytest.skip(f"no MariaDB server answers at {MARIADB_SERVER_URL}: {reason}")
    name = f"credit_test_{uuid.uuid4().hex[:12]}"
    server = create_engine(MARIADB_SERVER_URL)
    with server.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield f"{MARIADB_SERVER_URL}/{name}"
    finally:
        with server.begin() as connection:
            # a transaction the test left open (a leaked connection) holds the tables'
            # metadata locks: fail the teardown after a while instead of hanging the suite
            connection.execute(text(f"SET SESSION lock_wait_timeout = {DROP_WAIT_SECONDS}"))
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on embedded SQLite and once on the real MariaDB server."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("mariadb_url")


@pytest.fixture(scope="session")
def kaggle_sample() -> Path:
    if not KAGGLE_SAMPLE.exists():
        pytest.fail(f"the shared Kaggle sample is missing at {KAGGLE_SAMPLE}")
    return KAGGLE_SAMPLE


@pytest.fixture
def cli_runner(tmp_path: Path):
    """A CliRunner whose environment changes (the CLI pins DAGSTER_HOME and an admin token)
    are undone after each invocation, so one test's CLI call cannot leak into another."""
    from click.testing import CliRunner

    return CliRunner(
        env={
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "CREDIT_API_ADMIN_TOKEN": "cli-19f2db27966029a21ce22881",
        }
    )
