"""Every setting reaches every process of the stack that reads it.

In the stack a process sees only the variables its container is given: the services get
their compose `environment`, and a run container gets only the run launcher's `env_vars`
(deploy/dagster/dagster.yaml), read from the daemon's environment. The native stack test
cannot see a gap (there every process inherits the whole environment), and a gap fails
silently in production (a setting in .env that changes nothing; a run container that
cannot load its instance: DAGSTER_MAX_CONCURRENT_RUNS once). So the table in
credit_platform/core/settings.py (SETTINGS: each variable and the kinds of process that
read it) is checked against both files here.
"""

from __future__ import annotations

import pytest
import yaml

from credit_platform.core import settings
from credit_platform_tests.stack_fixtures import (
    STACK_DAGSTER_DIR,
    env_references,
    filled_env_file,
    interpolate,
    load_compose,
)

# The compose services that run each kind of process. The daemon is among the Dagster
# ones: the run launcher takes every run container's variables from its environment.
SERVICES_OF = {
    settings.DAGSTER_PROCESS: ("dagster-user-code", "dagster-daemon"),
    settings.API_PROCESS: ("api",),
}


@pytest.fixture(scope="module")
def services() -> dict:
    return interpolate(load_compose(), filled_env_file())["services"]


@pytest.fixture(scope="module")
def instance() -> dict:
    return yaml.safe_load((STACK_DAGSTER_DIR / "dagster.yaml").read_text())


def test_the_table_names_every_setting_of_the_settings_module():
    declared = {name for name, value in vars(settings).items() if name.endswith("_ENV")}
    names = {getattr(settings, name) for name in declared}
    tabled = [setting.name for setting in settings.SETTINGS]
    assert len(tabled) == len(set(tabled)), "a setting is in the table twice"
    assert names == set(tabled), f"missing from SETTINGS: {sorted(names - set(tabled))}"
    for setting in settings.SETTINGS:
        assert setting.readers, f"{setting.name} is read by no process"
        assert setting.readers <= set(SERVICES_OF), setting


def settings_read_by(reader: str) -> list[str]:
    """The variables the processes of kind `reader` read, in the table's order."""
    return [setting.name for setting in settings.SETTINGS if reader in setting.readers]


@pytest.mark.parametrize("reader", sorted(SERVICES_OF))
def test_each_service_gets_every_setting_its_process_reads(services, reader):
    for service in SERVICES_OF[reader]:
        environment = services[service].get("environment") or {}
        missing = [name for name in settings_read_by(reader) if name not in environment]
        assert missing == [], f"{service} never gets {missing}"


def test_every_run_container_gets_every_setting_the_dagster_code_reads(instance):
    passed = set(instance["run_launcher"]["config"]["env_vars"])
    missing = [n for n in settings_read_by(settings.DAGSTER_PROCESS) if n not in passed]
    assert missing == [], f"run containers never get {missing} (run_launcher.env_vars)"


def test_every_run_container_gets_what_its_instance_config_reads(instance):
    """A run container loads the instance from this very dagster.yaml: each `{env: NAME}`
    in it must be passed, or the run dies before its first step."""
    passed = set(instance["run_launcher"]["config"]["env_vars"])
    missing = sorted(env_references(instance) - passed)
    assert missing == [], f"run containers cannot load the instance without {missing}"


def test_the_daemon_has_a_value_for_every_variable_it_passes_to_runs(services, instance):
    environment = services["dagster-daemon"].get("environment") or {}
    passed = instance["run_launcher"]["config"]["env_vars"]
    bare = [entry for entry in passed if "=" not in entry and entry not in environment]
    assert bare == [], f"the daemon has no {bare} to hand to run containers"


def test_a_monitoring_setting_in_env_reaches_sensors_and_runs():
    """The case the production stack once ignored: the threshold set in .env."""
    compose = interpolate(load_compose(), filled_env_file(MONITORING_PSI_THRESHOLD="0.35"))
    for service in SERVICES_OF[settings.DAGSTER_PROCESS]:
        environment = compose["services"][service]["environment"]
        assert environment[settings.MONITORING_PSI_THRESHOLD_ENV] == "0.35", service
