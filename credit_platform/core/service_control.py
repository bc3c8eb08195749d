"""Talking to the running prediction service, starting and stopping it, building Bentos.

A running service is hot-swapped through `/admin/reload`, never rebuilt; one that is down
is started with the model to serve."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import requests

from credit_platform.core import settings

REPO_ROOT = settings.REPO_ROOT
BENTOFILE = REPO_ROOT / "api" / "bentofile.yaml"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class DeployError(RuntimeError):
    """The service could not be made to serve the requested model."""


@dataclass(frozen=True)
class ReportedModel:
    """What the service says it serves (GET /metadata)."""

    tag: str
    creation_time: datetime  # timezone-aware
    partition: str | None
    metrics: dict


def parse_creation_time(value: str) -> datetime:
    """ISO 8601 from /metadata as an aware datetime; a naive one is refused, not guessed."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"creation_time {value!r} has no timezone")
    return parsed


class ServiceClient:
    """HTTP calls to the prediction API with short timeouts (sensor ticks must stay light)."""

    def __init__(self, api_url: str, timeout: float = 2.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def is_up(self) -> bool:
        try:
            return requests.get(f"{self.api_url}/readyz", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False

    def reported_model(self) -> ReportedModel | None:
        """None when the service does not answer or reports no usable model (a body that
        is not JSON, or lacks the version or its creation time)."""
        try:
            response = requests.get(f"{self.api_url}/metadata", timeout=self.timeout)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        try:
            body = response.json()
            return ReportedModel(
                tag=body["model_version"],
                creation_time=parse_creation_time(body["creation_time"]),
                partition=body.get("partition"),
                metrics=dict(body.get("metrics") or {}),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def reload(self, tag: str, token: str | None) -> dict:
        """Hot-swap the served model; raises DeployError with the service's own reason."""
        if not token:
            raise DeployError(
                f"cannot reload {self.api_url}: {settings.ADMIN_TOKEN_ENV} is not set for the "
                "deployer (it must match the service's)"
            )
        try:
            response = requests.post(
                f"{self.api_url}/admin/reload",
                json={"tag": tag},
                headers={"Authorization": f"Bearer {token}"},
                timeout=max(self.timeout, 120.0),
            )
        except requests.RequestException as error:
            raise DeployError(f"reload of {tag} at {self.api_url} failed: {error}") from error
        if response.status_code != 200:
            raise DeployError(
                f"{self.api_url} refused to reload {tag} "
                f"(HTTP {response.status_code}): {response.text[:500]}"
            )
        return response.json()


def is_local(api_url: str) -> bool:
    return (urlparse(api_url).hostname or "") in LOCAL_HOSTS


def api_port(api_url: str) -> int:
    return urlparse(api_url).port or 80


def run_dir() -> Path:
    path = settings.platform_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_file(port: int) -> Path:
    return run_dir() / f"api-{port}.pid"


def log_file(port: int) -> Path:
    return run_dir() / f"api-{port}.log"


def start_service(api_url: str, tag: str, *, wait_seconds: float = 120.0) -> int:
    """Start `credit-platform serve` for `tag` in the background (a deploy while the
    API is down) and wait until it is ready; returns its pid."""
    if not is_local(api_url):
        raise DeployError(
            f"the prediction service at {api_url} is down and is not on this machine: "
            "start it where it runs (e.g. `docker compose up -d api`)"
        )
    port = api_port(api_url)
    host = urlparse(api_url).hostname or "127.0.0.1"
    command = [
        sys.executable,
        "-m",
        "credit_platform.cli.main",
        "serve",
        "--host",
        "127.0.0.1" if host == "localhost" else host,
        "--port",
        str(port),
        "--model-tag",
        tag,
    ]
    log_path = log_file(port)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, settings.BENTOML_HOME_ENV: str(settings.bentoml_home())},
            start_new_session=True,  # outlives the run that started it, as a deployment should
        )
    pid_file(port).write_text(str(process.pid))
    client = ServiceClient(api_url)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(
                f"the prediction service exited with code {process.returncode} while starting; "
                f"see {log_path}"
            )
        if client.is_up():
            return process.pid
        time.sleep(0.5)
    stop_service(port)
    raise DeployError(
        f"the prediction service was not ready within {wait_seconds:.0f}s; see {log_path}"
    )


def _has_exited(pid: int) -> bool:
    """True once `pid` is gone; reaps it when it is our own child (else it stays a zombie)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:  # not our child: ask the kernel whether it still exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def stop_service(port: int, *, wait_seconds: float = 30.0) -> bool:
    """Stop a service started by `start_service`: SIGTERM to the server, which drains its
    prediction log and stops its workers; SIGKILL to the whole group only if it hangs.
    Returns whether one was running."""
    path = pid_file(port)
    if not path.exists():
        return False
    pid = int(path.read_text().strip() or 0)
    path.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait_seconds
    while not _has_exited(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return True


def build_bento(model_tag: str) -> str:
    """Build the service from api/bentofile.yaml with `model_tag` packed in; the Bento's
    version is the model's, so a model is built once. Returns the Bento tag."""
    settings.export_bentoml_home()
    import bentoml
    import yaml
    from bentoml._internal.bento.build_config import BentoEnvSchema
    from bentoml.exceptions import NotFound

    options = yaml.safe_load(BENTOFILE.read_text())
    version = model_tag.split(":", 1)[1]
    name = options.get("name", "credit_score_service")
    try:
        return str(bentoml.bentos.get(f"{name}:{version}").tag)
    except NotFound:
        pass
    options["envs"] = [BentoEnvSchema(**item) for item in options.get("envs", [])]
    options["labels"] = {**options.get("labels", {}), "model_version": version}
    bento = bentoml.bentos.build(
        **options, models=[model_tag], version=version, build_ctx=str(REPO_ROOT)
    )
    return str(bento.tag)
