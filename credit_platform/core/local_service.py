"""The prediction service as a background process of this machine (embedded mode).

A deploy or the demo starts it on a built Bento; `credit-platform stop` stops it.

Its pid and log live under the platform home (`run/api-<port>.pid`, `.log`), so a later
command can stop or restart the process an earlier one started. The pid file is that record
of ownership: a service on the port may be one a user runs by hand, which a deploy must not
restart. A pid in the file counts only while its process was created before the file was
written (psutil's start time), so a pid reused by an unrelated process is never signalled."""

from pathlib import Path
from urllib.parse import urlparse

import psutil

from credit_platform.core import settings
from credit_platform.core.bento import serve_bento_command, serve_bento_environment
from credit_platform.core.processes import pid_alive, terminate_tree
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


# A process's start time (clock ticks since a boot time counted in whole seconds) may read
# up to a second late against the file's modification time.
_START_TIME_SLACK_SECONDS = 1.0


def recorded_pid(port: int) -> int | None:
    """The pid of the service `start_service` started on `port`, while it runs; None when
    there is none, it exited, or its pid now belongs to a process started after it."""
    path = pid_file(port)
    try:
        pid = int(path.read_text().strip() or 0)
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return pid if created <= written + _START_TIME_SLACK_SECONDS else None


def started_here(api_url: str) -> bool:
    """Whether the service at `api_url` is a background process this machine's commands
    started (and so may stop and start again)."""
    return is_local(api_url) and recorded_pid(api_port(api_url)) is not None


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


def stop_service(port: int, *, wait_seconds: float = 30.0) -> bool:
    """Stop a service started by `start_service`: SIGTERM to the server, which drains its
    prediction log and stops its workers; SIGKILL to the server and its workers only if
    they are not gone after `wait_seconds`. Returns whether one was running."""
    pid = recorded_pid(port)
    pid_file(port).unlink(missing_ok=True)
    if pid is None:
        return False
    return terminate_tree(pid, wait_seconds=wait_seconds)
