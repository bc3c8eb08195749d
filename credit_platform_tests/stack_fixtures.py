"""Reading the production stack (docker-compose.yml, .env.example, deploy/) for the tests.

The compose file is the one place each service's command line and healthcheck are written.
The native stack test does not keep its own copy: it reads them here, interpolates the
compose variables the way `docker compose` does (from .env.example), and swaps the
in-network addresses and container paths for local ones (`NativeAddresses`).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.docker_stack import (  # noqa: F401  (the stack tests read them from here)
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    SECRET_SETTINGS,
    filled_env_file,
    read_env_file,
)

STACK_DAGSTER_DIR = REPO_ROOT / "deploy" / "dagster"
REQUIRE_SECRETS = REPO_ROOT / "deploy" / "require-secrets.sh"
VENV_BIN = Path(sys.executable).parent

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, and $$.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_BARE_VARIABLE = re.compile(r"(?<!\$)\$[A-Za-z_]")


class UnsetVariable(KeyError):
    """A compose variable has neither a value nor a default."""


def load_compose() -> dict[str, Any]:
    """The compose file as YAML (anchors and `<<` merges resolved), not yet interpolated."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def strings_in(node: Any) -> Iterator[str]:
    """Every string value (and mapping key) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def variables_used(node: Any) -> set[str]:
    """Names of the compose variables a YAML tree interpolates."""
    return {match[1] for text in strings_in(node) for match in _VARIABLE.finditer(text) if match[1]}


def bare_variables(node: Any) -> list[str]:
    """`$NAME` without braces: compose would interpolate it, usually by mistake."""
    return [text for text in strings_in(node) if _BARE_VARIABLE.search(text)]


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """The tree with compose variables substituted from `env`; an unset variable without a
    default raises UnsetVariable (compose would warn and use an empty string)."""
    if isinstance(node, str):
        return _VARIABLE.sub(lambda match: _substitute(match, env), node)
    if isinstance(node, Mapping):
        return {interpolate(key, env): interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def _substitute(match: re.Match, env: Mapping[str, str]) -> str:
    if match[0] == "$$":
        return "$"
    name, operator, argument = match[1], match[2], match[3]
    value = env.get(name)
    missing = value is None or (value == "" and operator is not None and operator.startswith(":"))
    if not missing:
        return value
    if operator in ("-", ":-"):
        return argument
    if operator in ("?", ":?"):
        raise UnsetVariable(f"{name}: {argument}")
    raise UnsetVariable(f"{name} is not set and has no default")


def env_references(node: Any) -> set[str]:
    """Names in Dagster's `{env: NAME}` config values."""
    if isinstance(node, Mapping):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(item) for item in node))
    return set()


def healthcheck_command(service: Mapping[str, Any]) -> list[str]:
    """The exec form of a service's healthcheck (["CMD", ...] without "CMD")."""
    test = service["healthcheck"]["test"]
    if not isinstance(test, list) or test[0] != "CMD":
        raise ValueError(f"healthcheck {test!r} is not in exec form ['CMD', ...]")
    return list(test[1:])


def command_port(command: list[str]) -> int | None:
    """The value of -p/--port in a command line."""
    for option, value in zip(command, command[1:], strict=False):
        if option in ("-p", "--port"):
            return int(value)
    return None


def dependencies(service: Mapping[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition} (the short list form means service_started)."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def copy_stack_dagster_home(target: Path) -> Path:
    """DAGSTER_HOME as the image builds it: deploy/dagster's files copied verbatim."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(STACK_DAGSTER_DIR / name, target / name)
    return target


@dataclass
class NativeAddresses:
    """Where the stack's in-network places are when its services run on this machine.

    `endpoints` maps "host:port" as the containers write it (service name or localhost and
    the container port) to "127.0.0.1:<free port>"; `paths` maps container paths to local
    directories (the longest prefix wins); `ports` maps container ports to local ones;
    `overrides` replaces environment variables that hold a bare host or port.
    """

    endpoints: dict[str, str]
    paths: dict[str, str]
    ports: dict[int, int]
    overrides: dict[str, str]

    def text(self, value: str) -> str:
        for container, local in sorted(self.endpoints.items(), key=lambda item: -len(item[0])):
            value = value.replace(container, local)
        for container, local in sorted(self.paths.items(), key=lambda item: -len(item[0])):
            if value == container or value.startswith(container + "/"):
                return local + value[len(container) :]
        return value

    def leftovers(self, env: Mapping[str, str], argv: list[str], hosts: list[str]) -> list[str]:
        """Environment values and arguments still naming a container host or path."""
        found = [value for value in env.values() if value in hosts]
        for value in [*env.values(), *argv]:
            if any(f"{host}:" in value for host in hosts) or value.startswith(
                ("/var/lib/", "/opt/")
            ):
                found.append(value)
        return found

    def command(self, argv: list[str]) -> list[str]:
        """A container command line as it runs here: programs from this virtualenv, the
        listen address 127.0.0.1, each container port swapped for its local one."""
        program = argv[0]
        if program == "python":
            native = [sys.executable]
        elif (VENV_BIN / program).exists():
            native = [str(VENV_BIN / program)]
        else:
            raise FileNotFoundError(f"{program} is not installed in {VENV_BIN}")
        previous = None
        for token in argv[1:]:
            if previous in ("-h", "--host"):
                native.append("127.0.0.1")
            elif previous in ("-p", "--port"):
                if int(token) not in self.ports:
                    raise KeyError(f"no local port mapped for container port {token} in {argv}")
                native.append(str(self.ports[int(token)]))
            else:
                native.append(self.text(token))
            previous = token
        return native

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        return {
            name: self.overrides[name] if name in self.overrides else self.text(str(value))
            for name, value in env.items()
        }
