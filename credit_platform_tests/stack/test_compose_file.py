"""The production stack's files, checked the way `docker compose config` and a first
`docker compose up` would find their mistakes, in seconds and without Docker:
healthchecks and start order, variables, paths, ports, and the Dagster instance the
containers run (test_stack_docker.py runs the stack itself).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from credit_platform.core import settings
from credit_platform.core.service_process import free_port
from credit_platform_tests.stack_fixtures import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    REQUIRE_SECRETS,
    SECRET_SETTINGS,
    STACK_DAGSTER_DIR,
    VENV_BIN,
    UnsetVariable,
    bare_variables,
    command_port,
    dependencies,
    env_references,
    filled_env_file,
    healthcheck_command,
    interpolate,
    load_compose,
    read_env_file,
    variables_used,
)

DAGSTER_SERVICES = ("dagster-user-code", "dagster-webserver", "dagster-daemon")
# Services of third-party images (the project's image runs every other one).
THIRD_PARTY = ("mariadb", "api-gateway", "docker-proxy")
HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
DOCKER_PROXY_CONFIG = REPO_ROOT / "deploy" / "docker-proxy" / "haproxy.cfg"
DOCKER_SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    """The compose file as `docker compose` sees it with .env made from .env.example."""
    return interpolate(raw, filled_env_file())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _stack_dagster_config(name: str) -> dict:
    return yaml.safe_load((STACK_DAGSTER_DIR / name).read_text())


def test_the_stack_has_every_service_of_the_design(services):
    assert set(services) == {
        "mariadb",
        "mlflow",
        "dagster-user-code",
        "dagster-webserver",
        "dagster-daemon",
        "api",
        "api-gateway",
        "docker-proxy",
    }


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(services):
    for name, service in services.items():
        assert healthcheck_command(service), f"{name} has an empty healthcheck"
        for dependency, condition in dependencies(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if (name, dependency) == ("api-gateway", "api"):
                # Replicas wait for a first model; the balancer's own checks pick the ready.
                assert condition == "service_started"
                continue
            assert condition == "service_healthy", (
                f"{name} starts when {dependency} is merely {condition}"
            )
    # The order a first start needs: the database, then the servers that use it.
    assert "mariadb" in dependencies(services["mlflow"])
    assert "mariadb" in dependencies(services["api"])
    assert "dagster-user-code" in dependencies(services["dagster-webserver"])
    assert {"dagster-user-code", "dagster-webserver", "mlflow", "docker-proxy"} <= set(
        dependencies(services["dagster-daemon"])
    )
    assert "docker-proxy" in dependencies(services["dagster-webserver"])


def _networks(service: dict) -> set[str]:
    return set(service.get("networks") or ["default"])


def test_only_the_docker_proxy_holds_the_docker_socket(raw, services):
    """The socket is root on the host: one container mounts it, HAProxy without any
    capability, filtering the API down to what DockerRunLauncher calls; the daemon (launch,
    monitoring) and the webserver (terminate) reach that proxy, on a network nothing else
    joins; no service of the platform's image runs as root."""
    holders = {
        name
        for name, service in services.items()
        for volume in service.get("volumes", [])
        if volume.split(":", 1)[0] == DOCKER_SOCKET
    }
    assert holders == {"docker-proxy"}
    proxy = services["docker-proxy"]
    assert f"{DOCKER_SOCKET}:{DOCKER_SOCKET}" in proxy["volumes"]
    assert proxy["cap_drop"] == ["ALL"] and proxy["read_only"] is True
    assert "no-new-privileges:true" in proxy["security_opt"]
    assert proxy["image"] == services["api-gateway"]["image"]
    assert (
        "./deploy/docker-proxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in (raw["services"]["docker-proxy"]["volumes"])
    )
    # The image a create may name is the one run containers start from.
    image = services["dagster-user-code"]["environment"]["DAGSTER_CURRENT_IMAGE"]
    assert proxy["environment"]["CREDIT_PLATFORM_IMAGE"] == image
    assert "${CREDIT_PLATFORM_IMAGE}" in DOCKER_PROXY_CONFIG.read_text()
    assert _networks(proxy) == {"docker_api"}
    assert raw["networks"]["docker_api"]["internal"] is True
    for name, service in services.items():
        reaches = "docker_api" in _networks(service)
        assert reaches == (name in ("docker-proxy", "dagster-daemon", "dagster-webserver")), name
        if name in ("dagster-daemon", "dagster-webserver"):
            assert service["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
            assert dependencies(service)["docker-proxy"] == "service_healthy"
        else:
            assert "DOCKER_HOST" not in (service.get("environment") or {}), name
        if name not in THIRD_PARTY:
            assert "user" not in service, f"{name} overrides the image's unprivileged user"
    # The proxy listens where DOCKER_HOST points, and its healthcheck asks the engine.
    assert "bind :2375\n" in DOCKER_PROXY_CONFIG.read_text()
    assert "/dev/tcp/127.0.0.1/2375" in " ".join(healthcheck_command(proxy))
    # Run containers do not get DOCKER_HOST (the launcher passes only env_vars).
    run_env = _stack_dagster_config("dagster.yaml")["run_launcher"]["config"]["env_vars"]
    assert "DOCKER_HOST" not in run_env
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert "\nUSER credit\n" in dockerfile


def test_every_variable_the_compose_file_uses_is_in_env_example(raw):
    defined = read_env_file()
    missing = sorted(variables_used(raw) - set(defined))
    assert not missing, f"used in {COMPOSE_FILE.name} but not in {ENV_EXAMPLE.name}: {missing}"
    unused = sorted(set(defined) - variables_used(raw))
    assert not unused, f"{ENV_EXAMPLE.name} defines settings nothing uses: {unused}"
    assert not bare_variables(raw), f"$NAME without braces: {bare_variables(raw)}"
    interpolate(raw, filled_env_file())  # raises on a ${NAME:?} left without a value


def test_env_example_cannot_change_embedded_mode():
    """`dagster dev` loads .env from the directory it starts in (the repository root for
    `credit-platform ui`): a stack .env must not point embedded mode at the stack."""
    platform_names = {value for name, value in vars(settings).items() if name.endswith("_ENV")} | {
        "DAGSTER_HOME"
    }
    clashes = sorted(platform_names & set(read_env_file()))
    assert not clashes, f"{ENV_EXAMPLE.name} sets platform settings directly: {clashes}"
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().split(), ".env holds secrets"


def test_every_build_file_and_mounted_path_exists(services, compose):
    declared_volumes = set(compose["volumes"])
    for name, service in services.items():
        if "build" in service:
            context = REPO_ROOT / service["build"]["context"]
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: no Dockerfile at {dockerfile}"
        else:
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image} unpinned"
            assert not image.endswith(":latest"), f"{name}: image {image} unpinned"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
            elif not source.startswith("/"):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_python_services_share_one_image_built_from_the_repo(services):
    python_services = [name for name in services if name not in THIRD_PARTY]
    images = {services[name]["image"] for name in python_services}
    assert len(images) == 1, images
    (image,) = images
    dockerfile = REPO_ROOT / services["api"]["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "ARG PYTHON_BASE=python:3.11-slim" in text and "FROM ${PYTHON_BASE}" in text
    assert services["api"]["build"]["args"]["PYTHON_BASE"] == "python:3.11-slim"
    assert "pyproject.toml" in text, "the image installs the pinned dependencies"
    # Run containers start from the code server's image.
    assert services["dagster-user-code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == image
    # DAGSTER_HOME of the containers is where the image puts deploy/dagster's files.
    dagster_home = services["dagster-webserver"]["environment"]["DAGSTER_HOME"]
    assert f"DAGSTER_HOME={dagster_home}" in text
    assert "deploy/dagster/dagster.yaml deploy/dagster/workspace.yaml" in text
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["working_dir"] == dagster_home, name


def test_the_api_serves_the_bento_that_deploys_build(services, compose):
    """The api container runs `credit-platform serve`, which builds the service's Bento into
    BENTOML_HOME (a no-op when a deploy already built that code) and execs `bentoml serve
    <bento tag>`: the same image and the same BentoML store as the code server and the run
    containers where deploys build it."""
    from credit_platform.cli.serve import serve

    api, code = services["api"], services["dagster-user-code"]
    assert api["image"] == code["image"]
    assert api["command"][:2] == ["credit-platform", "serve"]
    serve.make_context("serve", list(api["command"][2:]))  # options the command accepts
    home = api["environment"]["BENTOML_HOME"]
    assert code["environment"]["BENTOML_HOME"] == home

    def store_mount(volumes: list[str]) -> str:
        """ "<volume name>:<path>" of the mount that holds BENTOML_HOME."""
        (mount,) = [v for v in volumes if home.startswith(v.split(":")[1].rstrip("/") + "/")]
        volume, path = mount.split(":")[:2]
        return f"{compose['volumes'][volume].get('name', volume)}:{path}"

    assert store_mount(api["volumes"]) == store_mount(code["volumes"])
    launcher = _stack_dagster_config("dagster.yaml")["run_launcher"]["config"]
    assert store_mount(code["volumes"]) in launcher["container_kwargs"]["volumes"]


def test_published_ports_are_distinct_and_reach_the_listening_port(services):
    host_ports: dict[str, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            host, container = str(mapping).rsplit(":", 1)
            assert host not in host_ports, f"{name} and {host_ports[host]} both publish {host}"
            host_ports[host] = name
            if name == "api-gateway":
                assert f"bind :{container}\n" in HAPROXY_CONFIG.read_text()
                continue
            assert command_port(service["command"]) == int(container), (
                f"{name} publishes container port {container} but listens elsewhere"
            )
        if name in THIRD_PARTY:
            continue
        listen = command_port(service["command"])
        check = " ".join(healthcheck_command(service))
        if listen is not None:
            assert f":{listen}/" in check or f"-p {listen}" in check, (
                f"{name}'s healthcheck does not probe port {listen}: {check}"
            )
    assert len(host_ports) == 3, "the Dagster UI, the MLflow UI and the API are published"


def test_mariadb_initializes_the_feature_store_and_the_stack_databases(services):
    mariadb = services["mariadb"]
    init = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in mariadb["volumes"]
        if "/docker-entrypoint-initdb.d/" in volume
    }
    assert sorted(init.values()) == [
        "./deploy/mariadb/20-stack-databases.sh",
        "./sql/schema_mariadb.sql",
    ]
    script = (REPO_ROOT / "deploy/mariadb/20-stack-databases.sh").read_text()
    for name in re.findall(r"\$\{(\w+)\}", script):
        assert name in mariadb["environment"], f"the init script needs {name} in mariadb's env"
    # The databases the other services connect to are the ones the server creates.
    env = services["dagster-daemon"]["environment"]
    assert env["DAGSTER_MYSQL_DB"] == mariadb["environment"]["DAGSTER_DATABASE"]
    assert env["FEATURE_STORE_URL"].endswith("/" + mariadb["environment"]["MARIADB_DATABASE"])
    backend = services["mlflow"]["command"].index("--backend-store-uri") + 1
    assert services["mlflow"]["command"][backend].endswith(
        "/" + mariadb["environment"]["MLFLOW_DATABASE"]
    )


def test_dagster_services_get_every_variable_the_instance_config_reads(services):
    needed = env_references(_stack_dagster_config("dagster.yaml")) | env_references(
        _stack_dagster_config("workspace.yaml")
    )
    assert {"DAGSTER_MYSQL_HOST", "DAGSTER_CODE_SERVER_HOST"} <= needed
    for name in DAGSTER_SERVICES:
        missing = sorted(needed - set(services[name]["environment"]))
        assert not missing, f"{name} lacks {missing}"


def test_instance_config_validates_with_the_stack_environment(services, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for name, value in services["dagster-daemon"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    config, _ = dagster_instance_config(str(STACK_DAGSTER_DIR))
    assert "mysql" in config["storage"], "instance storage is on the database server"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["run_launcher"]["module"] == "dagster_docker"


def test_run_containers_get_the_network_settings_and_volumes_they_need(compose, services):
    launcher = _stack_dagster_config("dagster.yaml")["run_launcher"]["config"]
    assert launcher["network"] == compose["networks"]["default"]["name"]
    daemon_env = services["dagster-daemon"]["environment"]
    # The launcher copies each listed variable from the daemon's own environment.
    missing = [name for name in launcher["env_vars"] if "=" not in name and name not in daemon_env]
    assert not missing, f"the daemon cannot pass {missing} to run containers"
    platform_settings = {
        settings.FEATURE_STORE_URL_ENV,
        settings.MLFLOW_TRACKING_URI_ENV,
        settings.BENTOML_HOME_ENV,
        settings.API_URL_ENV,
        settings.ADMIN_TOKEN_ENV,
        settings.HOME_ENV,
        settings.PARTITIONS_START_ENV,
        settings.TRAINING_GRID_ENV,
    }
    assert platform_settings <= set(launcher["env_vars"])
    instance_vars = env_references(_stack_dagster_config("dagster.yaml")["storage"])
    assert instance_vars <= set(launcher["env_vars"]), "runs open the instance storage too"

    names = {spec["name"]: key for key, spec in compose["volumes"].items()}
    mounts = {}
    for volume in launcher["container_kwargs"]["volumes"]:
        name, path = volume.split(":")[:2]
        assert name in names, f"run containers mount {name}, which compose does not create"
        mounts[names[name]] = path
    # Mounted where the long-running services mount them.
    code_server_volumes = services["dagster-user-code"]["volumes"]
    assert f"platform_data:{mounts['platform_data']}" in code_server_volumes
    assert (
        f"dagster_storage:{mounts['dagster_storage']}" in services["dagster-webserver"]["volumes"]
    )
    assert daemon_env[settings.BENTOML_HOME_ENV].startswith(mounts["platform_data"] + "/")


def test_workspaces_serve_their_modes(services):
    embedded = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert "python_module" in embedded["load_from"][0], "`dagster dev` loads the code itself"
    stack = _stack_dagster_config("workspace.yaml")["load_from"][0]["grpc_server"]
    command = services["dagster-user-code"]["command"]
    assert stack["location_name"] == command[command.index("--location-name") + 1]
    env = services["dagster-webserver"]["environment"]
    assert env[stack["host"]["env"]] == "dagster-user-code"
    assert int(env[stack["port"]["env"]]) == command_port(command)
    assert (
        not (REPO_ROOT / "dagster.yaml").exists()
        or "mysql" not in (REPO_ROOT / "dagster.yaml").read_text()
    ), "a root dagster.yaml is read by `dagster dev` without DAGSTER_HOME"


def test_secrets_come_from_env_not_from_the_compose_file(raw):
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "TOKEN")):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), (
                    f"{name}: {key} is written into the compose file instead of .env"
                )


def test_every_program_a_service_runs_is_installed_by_the_pinned_project(services):
    """The image installs what .venv installs (pyproject.toml), so the commands and the
    healthchecks name programs that exist here too."""
    for name, service in services.items():
        if name in THIRD_PARTY:
            continue
        for command in (service["command"], healthcheck_command(service)):
            program = command[0]
            assert program == "python" or (VENV_BIN / program).exists(), (
                f"{name} runs {program}, which the project does not install"
            )


# --- exposure and secrets -----------------------------------------------------------------

# What .env.example held before secrets became mandatory: each must be refused.
OLD_PLACEHOLDERS = {
    "MARIADB_ROOT_PASSWORD": "change-me-root",
    "MARIADB_PASSWORD": "change-me",
    "API_ADMIN_TOKEN": "change-me-token",
}


def _published(services: dict) -> dict[str, list[str]]:
    return {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}


def test_published_ports_bind_to_localhost_unless_the_operator_opts_out(raw):
    """The Dagster UI, MLflow and the prediction routes authenticate no one: by default
    they are reachable from this host only; BIND_ADDRESS opens them deliberately."""
    example = filled_env_file()
    assert example["BIND_ADDRESS"] == "127.0.0.1"
    without = {name: value for name, value in example.items() if name != "BIND_ADDRESS"}
    for env in (example, without):
        published = _published(interpolate(raw, env)["services"])
        assert set(published) == {"mlflow", "dagster-webserver", "api-gateway"}
        for name, mappings in published.items():
            for mapping in mappings:
                assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"
    opened = _published(interpolate(raw, filled_env_file(BIND_ADDRESS="0.0.0.0"))["services"])
    assert all(str(m).startswith("0.0.0.0:") for ms in opened.values() for m in ms)
    readme = (REPO_ROOT / "README.md").read_text()
    assert "BIND_ADDRESS" in readme and "BIND_ADDRESS" in ENV_EXAMPLE.read_text()


def test_env_example_holds_no_usable_secret(raw):
    example = read_env_file()
    secret_like = {name for name in example if re.search(r"PASSWORD|TOKEN|SECRET", name)}
    assert secret_like == set(SECRET_SETTINGS)
    for name in SECRET_SETTINGS:
        assert example[name] == "", f"{ENV_EXAMPLE.name} gives {name} a value"
    # A .env copied without filling them in stops `docker compose` before any container.
    with pytest.raises(UnsetVariable, match="API_ADMIN_TOKEN|MARIADB"):
        interpolate(raw, example)


def _script_variables() -> set[str]:
    match = re.search(r'^SECRET_VARIABLES="([^"]*)"', REQUIRE_SECRETS.read_text(), re.M)
    assert match, f"{REQUIRE_SECRETS.name} lists no SECRET_VARIABLES"
    return set(match[1].split())


def test_every_container_starts_through_the_secret_check(raw, services):
    dockerfile = (REPO_ROOT / services["api"]["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["sh", "/opt/credit_platform/deploy/require-secrets.sh"]' in dockerfile
    for name, service in raw["services"].items():
        if name in THIRD_PARTY:
            continue
        assert "build" in service and "entrypoint" not in service, (
            f"{name} does not start through the image's entrypoint"
        )
    mariadb = services["mariadb"]
    assert mariadb["entrypoint"] == [
        "sh",
        "/usr/local/bin/require-secrets.sh",
        "docker-entrypoint.sh",
    ]
    assert "./deploy/require-secrets.sh:/usr/local/bin/require-secrets.sh:ro" in mariadb["volumes"]
    # Every secret a container receives is one the script checks.
    received = {
        key
        for service in services.values()
        for key in (service.get("environment") or {})
        if re.search(r"PASSWORD|TOKEN|SECRET", key)
    }
    assert received <= _script_variables(), received - _script_variables()


def _run_check(raw: dict, name: str, env_file: dict[str, str]):
    """deploy/require-secrets.sh run as the container runs it, with the service's
    environment and arguments; `echo` stands in for the program. Returns the completed
    process and the arguments echoed when the check passes."""
    spec = interpolate(raw, env_file)["services"][name]
    env = {"PATH": os.environ["PATH"]}
    env.update({key: str(value) for key, value in (spec.get("environment") or {}).items()})
    arguments = [str(argument) for argument in (spec.get("command") or [])[1:]]
    done = subprocess.run(
        ["sh", str(REQUIRE_SECRETS), "echo", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done, arguments


@pytest.mark.parametrize(
    "name", ["mariadb", "mlflow", "dagster-user-code", "dagster-webserver", "dagster-daemon", "api"]
)
def test_each_service_refuses_placeholder_and_short_secrets(raw, name):
    refused, _ = _run_check(raw, name, filled_env_file(**OLD_PLACEHOLDERS))
    assert refused.returncode == 78, refused
    assert "is a placeholder" in refused.stderr and refused.stdout == ""
    short = {secret: "abc123" for secret in SECRET_SETTINGS}
    refused, _ = _run_check(raw, name, filled_env_file(**short))
    assert refused.returncode == 78 and "shorter than 16" in refused.stderr, refused
    started, arguments = _run_check(raw, name, filled_env_file())
    assert started.returncode == 0 and started.stderr == "", started
    assert started.stdout.split() == arguments


def test_serve_refuses_a_placeholder_admin_token(services, tmp_path):
    """The api service's own command, run here as its container runs it (through the
    entrypoint and straight), refuses the old example's token at once instead of waiting
    for a model and serving with it."""
    command = list(services["api"]["command"])
    assert command[:2] == ["credit-platform", "serve"] and "--wait-for-model" in command
    native = [str(VENV_BIN / command[0]), *command[1:]]
    native[native.index("--host") + 1] = "127.0.0.1"
    native[native.index("--port") + 1] = str(free_port())
    env = {
        **os.environ,
        "CREDIT_API_ADMIN_TOKEN": OLD_PLACEHOLDERS["API_ADMIN_TOKEN"],
        "CREDIT_PLATFORM_HOME": str(tmp_path / "home"),
    }
    for argv in (native, ["sh", str(REQUIRE_SECRETS), *native]):
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, done
        assert "CREDIT_API_ADMIN_TOKEN" in done.stderr and "placeholder" in done.stderr
        assert time.monotonic() - started < 30
    env["CREDIT_API_ADMIN_TOKEN"] = "short-token"
    done = subprocess.run(native, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "shorter than 16 characters" in done.stderr, done


GUESSABLE_SECRETS = ("aaaaaaaaaaaaaaaa", "password12345678", "admin-token-admin")


@pytest.mark.parametrize("weak", GUESSABLE_SECRETS)
@pytest.mark.parametrize("name", ["mariadb", "mlflow", "dagster-webserver", "api"])
def test_each_service_refuses_guessable_secrets(raw, name, weak):
    """Long enough, no placeholder word, yet guessable: refused like a placeholder."""
    refused, _ = _run_check(raw, name, filled_env_file(**dict.fromkeys(SECRET_SETTINGS, weak)))
    assert refused.returncode == 78, refused
    assert "is guessable" in refused.stderr and refused.stdout == ""


@pytest.mark.parametrize(
    "argument",
    [
        "--backend-store-uri=mysql+pymysql://mlops:password12345678@mariadb:3306/mlflow",
        "backend_uri=mysql+pymysql://mlops:admin-token-admin@mariadb:3306/mlflow",
        "mysql+pymysql://mlops:aaaaaaaaaaaaaaaa@mariadb:3306/mlflow",
    ],
)
def test_a_database_url_in_an_option_is_checked_too(argument):
    done = subprocess.run(
        ["sh", str(REQUIRE_SECRETS), "echo", argument],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78, done
    assert "the password in the database URL of the command is guessable" in done.stderr


def test_serve_refuses_a_guessable_admin_token(services, tmp_path):
    """serve applies the script's rule itself (it runs the script), so the same tokens are
    refused however the service is started."""
    command = list(services["api"]["command"])
    native = [str(VENV_BIN / command[0]), *command[1:]]
    native[native.index("--host") + 1] = "127.0.0.1"
    native[native.index("--port") + 1] = str(free_port())
    for weak in GUESSABLE_SECRETS:
        env = {
            **os.environ,
            "CREDIT_API_ADMIN_TOKEN": weak,
            "CREDIT_PLATFORM_HOME": str(tmp_path / "home"),
        }
        done = subprocess.run(native, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, done
        assert "CREDIT_API_ADMIN_TOKEN is guessable" in done.stderr, done.stderr
