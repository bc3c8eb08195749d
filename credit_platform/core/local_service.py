"""The prediction service as a background process on this machine (embedded mode): a
deploy or the demo starts it on a built Bento, `credit-platform stop` stops it.

Its pid and log live under the platform home (`run/api-<port>.pid`, `.log`), so a later
command can stop or restart the process an earlier one started."""

import os
import secrets
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

from credit_platform.core import settings
from credit_platform.core.bento import serve_bento_command, serve_bento_environment
from credit_platform.core.service_client import ServiceError
from credit_platform.core.service_process import ServiceNotReady, ServiceProcess

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


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


def started_here(api_url: str) -> bool:
    """Whether the service at `api_url` is a background process this machine's commands
    started (and so may stop and start again)."""
    if not is_local(api_url):
        return False
    path = pid_file(api_port(api_url))
    if not path.exists():
        return False
    try:
        os.kill(int(path.read_text().strip() or 0), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def start_service(
    api_url: str, bento_tag: str, model_tag: str, *, wait_seconds: float = 120.0
) -> int:
    """Run the Bento `bento_tag` serving `model_tag` in the background, in a session of its
    own so that it outlives the command that started it, and wait until it is ready;
    returns its pid."""
    if not is_local(api_url):
        raise ServiceError(
            f"the prediction service at {api_url} is down and is not on this machine: "
            "start it where it runs (e.g. `docker compose up -d api`)"
        )
    port = api_port(api_url)
    host = urlparse(api_url).hostname or "127.0.0.1"
    host = "127.0.0.1" if host == "localhost" else host
    log_path = log_file(port)
    process = ServiceProcess(
        env=serve_bento_environment(model_tag),
        output=log_path,
        port=port,
        command=serve_bento_command(bento_tag, host, port),
    )
    pid_file(port).write_text(str(process.process.pid))
    try:
        process.wait_ready(wait_seconds)
    except ServiceNotReady as error:
        pid_file(port).unlink(missing_ok=True)
        raise ServiceError(f"the prediction service did not start: {error}") from error
    return process.process.pid


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

    path = run_dir() / "admin_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    token = path.read_text().strip()
    os.environ[settings.ADMIN_TOKEN_ENV] = token
    return token
