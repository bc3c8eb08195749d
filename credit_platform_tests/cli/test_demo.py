"""The README's main command, run as a user runs it: a fresh home, no servers."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import requests

from credit_platform.core import routes, settings
from credit_platform.core.bento import bento_tag
from credit_platform.core.service_process import free_port


def test_demo_trains_deploys_and_answers(tmp_path):
    port = free_port()
    # A user's shell: none of the platform's variables set (this session's are not inherited).
    inherited = set(settings.embedded_defaults()) | {settings.DAGSTER_HOME_ENV}
    env = {
        **{k: v for k, v in os.environ.items() if k not in inherited},
        "CREDIT_PLATFORM_HOME": str(tmp_path / "home"),
        "CREDIT_API_URL": f"http://127.0.0.1:{port}",
    }
    command = [sys.executable, "-m", "credit_platform.cli.main"]
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    try:
        done = subprocess.run(
            [*command, "demo", "--customers", "60", "--days", "33"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "sample prediction for" in out
        assert f"curl -s -X POST http://127.0.0.1:{port}{routes.PREDICT}" in out
        metadata = requests.get(f"http://127.0.0.1:{port}{routes.METADATA}", timeout=5).json()
        # The synthetic days end yesterday (UTC): the newest partition, which the UI's
        # default partition views and launch range show.
        assert metadata["partition"] == yesterday.isoformat()
        assert f"continuous training for partition {yesterday}" in out
        assert metadata["model_version"] in out
        # The service runs the built Bento of this code, and the demo names it.
        assert metadata["bento_tag"] == bento_tag()
        assert metadata["bento_tag"] in out
        # The run is recorded in the instance the UI reads.
        assert (tmp_path / "home" / "dagster" / "history").exists()
        assert (tmp_path / "home" / "mlflow.db").exists()
    finally:
        stopped = subprocess.run(
            [*command, "stop", "--port", str(port)], env=env, capture_output=True, text=True
        )
        assert stopped.returncode == 0, stopped.stderr
