"""An isolated platform environment for a benchmark or the test suite.

Both run beside a user's demo: before BentoML is imported they clear every platform
variable, move the home, the BentoML store and the Dagster instance to a directory of their
own, and point the prediction API's URL at a port they hold without listening, so nothing
they run reaches `~/.credit_platform`, port 3000 or a service they did not start. Importing
this module changes nothing; `pin_isolated_environment` does.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from credit_platform.core import settings


class SilentPort:
    """A loopback port that is bound but never listens, held until `close()`.

    A connection to it is refused at once, and no other socket (a service a test starts, a
    user's demo) can take the port while it is held: the URL for settings that must reach
    no service at all.
    """

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._socket.close()


def platform_variables() -> list[str]:
    """Every environment variable the platform reads: the `*_ENV` names of core.settings
    (DAGSTER_HOME among them)."""
    return sorted(
        {
            value
            for name, value in vars(settings).items()
            if name.endswith("_ENV") and isinstance(value, str)
        }
    )


def pin_isolated_environment(home: Path, api_url: str) -> dict[str, str]:
    """Clear every platform variable a user may have set, then point the home, the BentoML
    store, the Dagster instance and the prediction API at what the caller owns.

    Tests and benchmarks call this before anything imports BentoML (which reads
    BENTOML_HOME once), so they never reach the default home, port 3000 or a user's
    service. Returns the environment for their subprocesses.
    """
    for name in platform_variables():
        os.environ.pop(name, None)
    os.environ.update(
        {
            settings.HOME_ENV: str(home),
            settings.BENTOML_HOME_ENV: str(home / "bentoml"),
            settings.DAGSTER_HOME_ENV: str(home / "dagster"),
            settings.API_URL_ENV: api_url,
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return dict(os.environ)
