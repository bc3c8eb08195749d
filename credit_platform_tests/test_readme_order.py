"""The README's two commands in order: the demo leaves its prediction service on
127.0.0.1:3000, then the test command runs. The suite must neither talk to that service nor
use the default home, and must stay green.

This is the one test that binds port 3000: when the port is free it starts a decoy there
that answers like a demo whose champion no test model can match, and stops it afterwards;
when something already listens there (a user's demo), it is used as it is. The decoy
notes which process sent each request, so a request from elsewhere on the machine (another
checkout's suite) is told apart from one the suite under test sent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import requests

from bench.isolation import pin_isolated_environment, platform_variables
from credit_platform.core import routes, settings

DEMO_HOST = "127.0.0.1"
DEMO_PORT = settings.DEFAULT_API_PORT
# The tests whose outcome depends on what answers at the API's URL: the champion judged by
# the model check, deploys and both sensors.
SENSITIVE_TESTS = (
    "credit_platform_tests/defs/test_pipeline.py",
    "credit_platform_tests/defs/test_model_check.py",
    "credit_platform_tests/defs/test_deploy.py",
    "credit_platform_tests/defs/test_reliability_pipeline.py::"
    "test_new_data_sensor_repeats_nothing_and_requests_a_new_day_once",
    "credit_platform_tests/defs/test_reliability_pipeline.py::"
    "test_deploy_sensor_repeats_nothing_and_deploys_a_new_model_once",
)
DECOY_METADATA = {
    "model_name": settings.MODEL_NAME,
    "model_version": f"{settings.MODEL_NAME}:demochampion",
    "bento_tag": "credit_score_service:demochampion",
    "partition": "2099-12-31",
    "params": {"depth": 6},
    # Far better than anything a test trains: a test judged against it fails.
    "metrics": {"val_accuracy": 0.9999, "val_macro_f1": 0.9999, "test_accuracy": 0.9999},
}


@dataclass(frozen=True)
class Received:
    """One request to the decoy and the sending process with its ancestors (empty when the
    sender could not be found)."""

    request: str
    senders: tuple[int, ...]


@dataclass
class Decoy:
    """A stand-in for the demo's service: every request it receives is recorded."""

    server: ThreadingHTTPServer | None
    requests: list[Received] = field(default_factory=list)

    def sent_by(self, pid: int) -> list[str]:
        """The requests sent by process `pid` or a descendant (or by an unknown sender)."""
        return [r.request for r in self.requests if not r.senders or pid in r.senders]


def _sender_chain(client: tuple[str, int]) -> tuple[int, ...]:
    """The process that owns the client end of a loopback connection, and its ancestors."""
    for connection in psutil.net_connections(kind="tcp4"):
        local = connection.laddr
        if connection.pid and local and (local.ip, local.port) == tuple(client[:2]):
            try:
                process = psutil.Process(connection.pid)
                return (process.pid, *(parent.pid for parent in process.parents()))
            except psutil.Error:
                return ()
    return ()


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _handler(record: list[Received]) -> type[BaseHTTPRequestHandler]:
    class DemoLikeHandler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            record.append(Received(f"GET {self.path}", _sender_chain(self.client_address)))
            if self.path == routes.METADATA:
                created = datetime.now(UTC).isoformat()
                self._answer(200, {**DECOY_METADATA, "creation_time": created})
            elif self.path in (routes.READYZ, routes.HEALTHZ, routes.LIVEZ):
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            record.append(Received(f"POST {self.path}", _sender_chain(self.client_address)))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path == routes.ADMIN_RELOAD:
                self._answer(200, {"model_version": DECOY_METADATA["model_version"]})
            else:
                self._answer(404, {"error": "not found"})

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
            return

    return DemoLikeHandler


@pytest.fixture
def demo_on_port_3000() -> Iterator[Decoy]:
    """What the demo leaves behind: a service answering on 127.0.0.1:3000."""
    if _listening(DEMO_HOST, DEMO_PORT):
        yield Decoy(server=None)  # a user's own demo: used as it is, never stopped
        return
    decoy = Decoy(server=None)
    try:
        decoy.server = ThreadingHTTPServer((DEMO_HOST, DEMO_PORT), _handler(decoy.requests))
    except OSError as error:
        if not _listening(DEMO_HOST, DEMO_PORT):
            pytest.fail(f"port {DEMO_PORT} is neither free nor answering: {error}")
        yield Decoy(server=None)  # taken meanwhile by a real service: use it as it is
        return
    thread = threading.Thread(target=decoy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield decoy
    finally:
        decoy.server.shutdown()
        decoy.server.server_close()
        thread.join(timeout=10)


def test_the_suite_stays_green_beside_a_demo_left_on_port_3000(demo_on_port_3000, tmp_path):
    if demo_on_port_3000.server is not None:
        # The decoy answers as a demo would (the test would prove nothing otherwise).
        reported = requests.get(
            f"http://{DEMO_HOST}:{DEMO_PORT}{routes.METADATA}", timeout=5
        ).json()
        assert reported["metrics"]["val_accuracy"] > 0.99
        demo_on_port_3000.requests.clear()
    user_home = tmp_path / "user_home"
    user_home.mkdir()
    # A user's shell: none of the platform's variables set, the default home under $HOME.
    env = {name: value for name, value in os.environ.items() if name not in platform_variables()}
    env["HOME"] = str(user_home)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SENSITIVE_TESTS]
    with subprocess.Popen(
        command,
        cwd=settings.REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as suite:
        try:
            stdout, stderr = suite.communicate(timeout=1500)
        except subprocess.TimeoutExpired:
            suite.kill()
            stdout, stderr = suite.communicate()
    output = stdout[-6000:] + stderr[-3000:]
    assert suite.returncode == 0, output
    assert " passed" in stdout and " failed" not in stdout, output
    if demo_on_port_3000.server is not None:
        ours = demo_on_port_3000.sent_by(suite.pid)
        assert ours == [], f"the suite talked to the service on port {DEMO_PORT}: {ours}"
    assert not (user_home / ".credit_platform").exists(), "the suite used the default home"


def test_the_isolated_environment_drops_every_setting_a_user_exported(tmp_path, monkeypatch):
    """A user who exported the demo's settings (its URL, its home, its token) does not
    lead a test or a benchmark to them."""
    exported = {name: f"user-value-of-{name}" for name in platform_variables()}
    exported[settings.API_URL_ENV] = f"http://{DEMO_HOST}:{DEMO_PORT}"
    exported[settings.HOME_ENV] = str(Path.home() / ".credit_platform")
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    pinned = pin_isolated_environment(home, "http://127.0.0.1:9")
    assert settings.api_url() == "http://127.0.0.1:9"
    assert settings.platform_home() == home
    assert settings.bentoml_home() == home / "bentoml"
    assert settings.feature_store_url() == f"sqlite:///{home / 'feature_store.db'}"
    assert settings.mlflow_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.prediction_spool_dir() == home / "spool"
    assert settings.admin_token() is None
    assert pinned["DAGSTER_HOME"] == str(home / "dagster")
    leaked = [name for name in platform_variables() if pinned.get(name) == exported[name]]
    assert leaked == []
