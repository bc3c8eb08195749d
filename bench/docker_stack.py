"""Driving the production stack (docker-compose.yml) in a real Docker engine: for the
stack test (credit_platform_tests/stack/test_stack_docker.py) and the stack benchmark
(bench/stack.py), so both read .env.example and run compose the same way.

`docker_stack_available` says whether an engine with compose v2 answers (scripts/
docker_setup.sh makes one where it can); `base_images` picks, for each base image, the
official one where it is present or can be pulled, else the stand-in built from Debian by
deploy/standins/build.sh; `ComposeStack` runs `docker compose` with the test's own .env
(random secrets, free ports) and reads what the stack did: service states, runs through
the Dagster GraphQL API, rows through the MariaDB client inside its container.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# The secrets of .env: empty in .env.example, filled in by whoever deploys.
SECRET_SETTINGS = ("MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD", "API_ADMIN_TOKEN")
PROJECT = "credit_platform"  # the compose file's `name:`
STANDIN_PREFIX = "credit-platform-standin"
# The compose variable that picks each base image, and the official image it names.
BASE_IMAGES = {
    "PYTHON_BASE_IMAGE": "python:3.11-slim",
    "MARIADB_IMAGE": "mariadb:10.11",
    "HAPROXY_IMAGE": "haproxy:2.6",
}
STANDINS_BUILD = REPO_ROOT / "deploy" / "standins" / "build.sh"
# Volumes and network the compose file names without the project prefix.
NAMED_VOLUMES = (
    "credit_platform_mariadb",
    "credit_platform_mlflow_artifacts",
    "credit_platform_data",
    "credit_platform_dagster_storage",
)


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """NAME=value lines of a compose .env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        if not separator or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{path.name}:{number} is not NAME=value: {line!r}")
        values[name] = value
    return values


def filled_env_file(**overrides: str) -> dict[str, str]:
    """.env as an operator makes it from .env.example: each secret a fresh random value."""
    values = read_env_file()
    values.update({name: secrets.token_hex(24) for name in SECRET_SETTINGS})
    values.update(overrides)
    return values


# The image the stack test builds, and the lock a background `prepare` holds while it builds
# it (scripts/test.sh starts one under CI, so the build overlaps the rest of the suite).
TEST_IMAGE = "credit-platform:stack-test"
PREPARE_LOCK = Path("/tmp/credit_platform_stack_prepare.lock")


class StackError(AssertionError):
    """A docker or compose command failed; the message holds its output."""


def run(argv: Sequence[str], timeout: float = 600, check: bool = True, **kwargs):
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise StackError(
            f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout[-4000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    return done


def docker_stack_available() -> str | None:
    """None when `docker` and `docker compose` v2 reach an engine, else why not."""
    try:
        if run(["docker", "info"], timeout=30, check=False).returncode != 0:
            return "no Docker engine answers (bash scripts/docker_setup.sh starts one)"
        if run(["docker", "compose", "version"], timeout=30, check=False).returncode != 0:
            return "docker compose v2 is missing (bash scripts/docker_setup.sh installs it)"
    except FileNotFoundError:
        return "the docker command is missing (bash scripts/docker_setup.sh installs it)"
    return None


def _image_present(image: str) -> bool:
    return run(["docker", "image", "inspect", image], check=False).returncode == 0


def base_images() -> dict[str, str]:
    """Each base-image variable's value: the official image where it is here or can be
    pulled, else its stand-in (built now, once, when any is needed)."""
    chosen: dict[str, str] = {}
    for variable, official in BASE_IMAGES.items():
        if (
            _image_present(official)
            or run(["docker", "pull", official], timeout=300, check=False).returncode == 0
        ):
            chosen[variable] = official
        else:
            chosen[variable] = f"{STANDIN_PREFIX}/{official}"
    if any(value.startswith(STANDIN_PREFIX) for value in chosen.values()):
        run(["bash", str(STANDINS_BUILD)], timeout=1200)
    return chosen


def pip_ca_bundle() -> str:
    """The CA bundle this machine's pip trusts (a TLS-inspecting proxy's), or ''."""
    done = run(["python3", "-m", "pip", "config", "list"], check=False)
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip().endswith(".cert"):
            path = Path(value.strip().strip("'\""))
            if path.is_file():
                return str(path)
    return ""


def leftover_project_objects() -> list[str]:
    """Containers and volumes of a `credit_platform` stack already on this engine (a
    user's): the test never touches them."""
    containers = run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
    ).stdout.split()
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    return [f"container {c}" for c in containers] + [
        f"volume {v}" for v in volumes if v in NAMED_VOLUMES
    ]


@dataclass
class ComposeStack:
    """One run of the compose file with its own .env in `workdir`."""

    workdir: Path
    settings: dict[str, str]
    project_dir: Path = REPO_ROOT  # a checkout holding docker-compose.yml and deploy/
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, workdir: Path, project_dir: Path = REPO_ROOT, **overrides: str) -> ComposeStack:
        settings = filled_env_file(**overrides)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return cls(workdir=workdir, settings=settings, project_dir=project_dir)

    # --- docker compose --------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 900, check: bool = True):
        argv = [
            "docker",
            "compose",
            "--project-directory",
            str(self.project_dir),
            "--env-file",
            str(self.workdir / ".env"),
            "-f",
            str(self.project_dir / COMPOSE_FILE.name),
            *args,
        ]
        return run(argv, timeout=timeout, check=check)

    def timed(self, label: str, *args: str, timeout: float = 1800):
        started = time.monotonic()
        done = self.compose(*args, timeout=timeout)
        self.timings[label] = round(time.monotonic() - started, 1)
        return done

    def exec(self, service: str, *argv: str, timeout: float = 600, check: bool = True):
        return self.compose("exec", "-T", service, *argv, timeout=timeout, check=check)

    def containers(self, service: str | None = None, all_states: bool = False) -> list[dict]:
        """`docker compose ps` rows (Service, State, Health, Name, ID ...)."""
        args = ["ps", "--format", "json"] + (["--all"] if all_states else [])
        out = self.compose(*args, *([service] if service else [])).stdout
        rows = []
        for line in out.splitlines():
            line = line.strip()
            if not line:
                continue
            parsed = json.loads(line)
            rows.extend(parsed if isinstance(parsed, list) else [parsed])
        return rows

    def wait_healthy(self, services: Sequence[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            rows = self.containers()
            states = {
                name: [
                    row.get("Health") or row.get("State") for row in rows if row["Service"] == name
                ]
                for name in services
            }
            if all(values and all(v == "healthy" for v in values) for values in states.values()):
                return
            time.sleep(3)
        raise StackError(f"not healthy after {timeout:.0f} s: {states}\n{self.logs(*services)}")

    def logs(self, *services: str, tail: int = 60) -> str:
        return self.compose(
            "logs", "--no-color", "--tail", str(tail), *services, check=False
        ).stdout

    def port(self, variable: str) -> int:
        return int(self.settings[variable])

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.port(variable)}"

    # --- MariaDB inside the stack ------------------------------------------------------
    def sql(self, statement: str, database: str | None = None) -> list[list[str]]:
        """Rows of a statement run by the MariaDB client in the mariadb container."""
        done = self.exec(
            "mariadb",
            "mariadb",
            "--user=root",
            f"--password={self.settings['MARIADB_ROOT_PASSWORD']}",
            "--batch",
            "--skip-column-names",
            f"--database={database or self.settings['MARIADB_DATABASE']}",
            "--execute",
            statement,
        )
        return [line.split("\t") for line in done.stdout.splitlines()]

    # --- Dagster through its GraphQL API --------------------------------------------------
    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        response = requests.post(
            f"{self.url('DAGSTER_UI_PORT')}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=60,
        )
        if response.status_code != 200:
            raise StackError(f"GraphQL answered {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            raise StackError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(self, job: str | None = None) -> list[dict]:
        """Every run (newest first) with its status and tags."""
        query = """
        query Runs($filter: RunsFilter) {
          runsOrError(filter: $filter) {
            ... on Runs { results { runId jobName status tags { key value } } }
          }
        }"""
        filter_ = {"pipelineName": job} if job else {}
        results = self.graphql(query, {"filter": filter_})["runsOrError"]["results"]
        for result in results:
            result["tags"] = {tag["key"]: tag["value"] for tag in result["tags"]}
        return results

    def wait_for_runs(
        self,
        select,
        count: int = 1,
        timeout: float = 600,
        statuses: tuple[str, ...] = ("SUCCESS",),
    ) -> list[dict]:
        """Waits until `count` runs chosen by `select(run)` have finished; fails naming the
        runs when one ends in another state than `statuses`."""
        deadline = time.monotonic() + timeout
        chosen: list[dict] = []
        while time.monotonic() < deadline:
            chosen = [run_ for run_ in self.runs() if select(run_)]
            finished = [r for r in chosen if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            unexpected = [r for r in finished if r["status"] not in statuses]
            if unexpected:
                raise StackError(f"runs ended {unexpected}\n{self.run_failure(unexpected[0])}")
            if len(finished) >= count:
                return finished
            time.sleep(5)
        raise StackError(
            f"{count} runs not finished after {timeout:.0f} s: "
            f"{[(r['runId'], r['jobName'], r['status']) for r in chosen]}\n"
            f"{self.logs('dagster-daemon')}"
        )

    def run_failure(self, run_: dict) -> str:
        """Why a run failed: its step and run failure messages, else the daemon's log."""
        query = """
        query Events($runId: ID!) {
          logsForRun(runId: $runId) {
            ... on EventConnection {
              events {
                __typename
                ... on ExecutionStepFailureEvent {
                  stepKey
                  error { message causes { className message stack } }
                }
                ... on RunFailureEvent { message }
                ... on EngineEvent { message }
              }
            }
          }
        }"""
        try:
            events = self.graphql(query, {"runId": run_["runId"]})["logsForRun"]["events"]
        except (StackError, requests.RequestException) as error:
            return f"(the run's events could not be read: {error})\n{self.logs('dagster-daemon')}"
        lines = []
        for event in events:
            if event["__typename"] == "ExecutionStepFailureEvent":
                error = event["error"]
                lines.append(f"step {event['stepKey']} failed: {error['message']}")
                # Dagster's message only says the op failed; the causes say why.
                for cause in error.get("causes") or []:
                    lines.append(f"  caused by {cause['className']}: {cause['message']}")
                    lines.extend(f"    {frame.rstrip()}" for frame in cause["stack"][-6:])
            elif event["__typename"] in ("RunFailureEvent", "EngineEvent"):
                lines.append(f"{event['__typename']}: {event['message']}")
        return "\n".join(lines)[-6000:]

    def materialized(self, run_id: str) -> set[str]:
        """The asset keys a run materialized ("a/b" for a multi-part key)."""
        query = """
        query Events($runId: ID!) {
          logsForRun(runId: $runId) {
            ... on EventConnection {
              events { ... on MaterializationEvent { assetKey { path } } }
            }
          }
        }"""
        events = self.graphql(query, {"runId": run_id})["logsForRun"]["events"]
        return {"/".join(event["assetKey"]["path"]) for event in events if event.get("assetKey")}

    def launch(self, job: str, tags: Mapping[str, str] | None = None) -> None:
        """Launches a job as the UI's Launchpad does (queued; the daemon starts it in a
        container of its own)."""
        self.exec(
            "dagster-daemon",
            "dagster",
            "job",
            "launch",
            "-w",
            "workspace.yaml",
            "-j",
            job,
            *(["--tags", json.dumps(dict(tags))] if tags else []),
        )

    def terminate(self, run_id: str) -> str:
        """Terminates a run as the UI's Terminate button does: the webserver asks the run
        launcher to stop the run's container. Returns the mutation's result type."""
        query = """
        mutation Terminate($runId: String!) {
          terminateRun(runId: $runId) {
            __typename
            ... on TerminateRunFailure { message }
            ... on PythonError { message }
          }
        }"""
        result = self.graphql(query, {"runId": run_id})["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise StackError(f"terminateRun answered {result}")
        return result["__typename"]

    def launch_partition(self, job: str, partition: str) -> None:
        self.launch(job, {"dagster/partition": partition})

    def stored_models(self) -> set[str]:
        """The model tags in the stack's BentoML store (the shared volume)."""
        done = self.exec("dagster-user-code", "bentoml", "models", "list", "-o", "json")
        return {model["tag"] for model in json.loads(done.stdout)}


@contextlib.contextmanager
def prepare_lock():
    """Held while images are prepared: the stack test waits for a background build."""
    with PREPARE_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_images(workdir: Path, image: str = TEST_IMAGE) -> dict[str, str]:
    """The base images chosen (stand-ins built where needed) and the project image built
    with them, as the stack test will ask for it; returns the base-image variables."""
    with prepare_lock():
        images = base_images()
        stack = ComposeStack.create(
            workdir, CREDIT_PLATFORM_IMAGE=image, PIP_CA_BUNDLE=pip_ca_bundle(), **images
        )
        stack.compose("build", "api", timeout=1800)
        return images


if __name__ == "__main__":  # python -m bench.docker_stack prepare
    import sys
    import tempfile

    if sys.argv[1:] != ["prepare"]:
        raise SystemExit("usage: python -m bench.docker_stack prepare")
    missing = docker_stack_available()
    if missing:
        raise SystemExit(f"error: {missing}")
    chosen = prepare_images(Path(tempfile.mkdtemp(prefix="credit_stack_prepare_")))
    print(f"prepared {TEST_IMAGE} on {chosen}")
