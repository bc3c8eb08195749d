"""The prediction service run as a child process in a session of its own.

`local_service` starts the embedded mode's background service with it; the tests and the
benchmarks start theirs the same way, on a free loopback port, and stop what they start.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from credit_platform.core import routes, settings
from credit_platform.core.processes import kill_tree

# Linux's default first port of its ephemeral range, where the range cannot be read.
EPHEMERAL_LOW_DEFAULT = 32768
# Ports below the ephemeral range a free port is drawn from (never the API's own 3000).
FREE_PORT_SPAN = 12000


def ephemeral_port_low() -> int:
    """The first port the kernel hands to outgoing connections and to bind(0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_LOW_DEFAULT


def free_port() -> int:
    """A port nothing listens on right now (for a service, a stub API, or a URL that must not
    answer), drawn below the ephemeral range: a port bind(0) hands out can be taken by an
    outgoing connection before the service binds it (seen in CI beside the Docker stack
    test: "Could not bind")."""
    high = ephemeral_port_low()
    low = max(settings.DEFAULT_API_PORT + 1, high - FREE_PORT_SPAN)
    for _ in range(200 if high - low > 100 else 0):
        port = random.randrange(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceNotReady(RuntimeError):
    """The service process exited, or did not answer /readyz in time."""


class ServiceProcess:
    """`credit-platform serve` (which runs the built Bento) in a new session, with its
    workers; or, with `command`, another server answering /readyz on `port` (a given
    Bento, the benchmarks' baseline). `cwd` is the checkout it runs from (another one's,
    for a benchmark comparing two)."""

    def __init__(
        self,
        env: dict[str, str],
        output: Path,
        port: int | None = None,
        command: Sequence[str] | None = None,
        cwd: Path = settings.REPO_ROOT,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = output
        if command is None:
            command = [sys.executable, "-m", "credit_platform.cli.serve", "--host", "127.0.0.1"]
            command += ["--port", str(self.port)]
        with output.open("a") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServiceNotReady(
                    f"the service exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                if requests.get(f"{self.url}{routes.READYZ}", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceNotReady(
                    f"the service was not ready in {timeout:.0f}s:\n{self.tail()}"
                )
            time.sleep(0.25)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL to the server and every worker at once: no drain, no cleanup, as when
        the machine loses power."""
        kill_tree(self.process.pid)
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
