"""The table of library patches (api/library_patches.py) matches the code and the pins, and
an unknown library version refuses to start or falls back, naming the patch."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from api import library_patches
from api.library_patches import (
    FALL_BACK,
    PATCHES,
    REFUSE,
    UnsupportedLibraryVersion,
    apply_library_patches,
    installed_version,
)
from credit_platform.core import routes

REPO_ROOT = Path(__file__).resolve().parents[2]

# Text that reaches into a library's internals: private modules, uvicorn's protocol
# classes and protocol table, BentoML's middleware classes.
INTERNAL = re.compile(
    r"\b_bentoml_impl\b|\bbentoml\._internal\b|\buvicorn\.protocols\b|\buvicorn\.config\b"
    r"|\bHttpToolsProtocol\b|\bTimeoutMiddleware\b|\b_start_asgi_task\b"
)


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{line}: not an exact pin"
        pins[requirement.name.lower()] = spec.version
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"])


def bento_pins() -> dict[str, str]:
    bentofile = yaml.safe_load((REPO_ROOT / "api" / "bentofile.yaml").read_text())
    return _pins(bentofile["python"]["packages"])


def test_every_patched_library_is_pinned_at_a_tested_version() -> None:
    for patch in PATCHES:
        for distribution, known in patch.tested.items():
            for where, pins in (("pyproject.toml", pyproject_pins()), ("bentofile", bento_pins())):
                assert distribution in pins, f"{patch.name}: {distribution} not pinned in {where}"
                assert pins[distribution] in known, (
                    f"{patch.name}: {where} pins {distribution}=={pins[distribution]}, the "
                    f"patch was tested with {sorted(known)}"
                )
            assert installed_version(distribution) in known


def test_uvicorn_and_starlette_are_pinned_although_bentoml_asks_only_a_floor() -> None:
    for name in ("uvicorn", "starlette", "bentoml", "httptools"):
        assert name in pyproject_pins()
        assert bento_pins()[name] == pyproject_pins()[name]


def test_every_entry_names_code_that_is_there() -> None:
    for patch in PATCHES:
        path = REPO_ROOT / patch.where.split(" ")[0]
        assert patch.needle in path.read_text(), f"{patch.name}: {patch.needle!r} not in {path}"
        assert patch.on_unknown in (REFUSE, FALL_BACK)
        assert patch.why and patch.supported_alternative
        for test in patch.tests:
            assert (REPO_ROOT / test.split("::")[0]).exists(), test


def test_every_internal_the_service_touches_has_an_entry() -> None:
    registered = {patch.where.split(" ")[0] for patch in PATCHES}
    touching = {
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "api").glob("*.py")
        if path.name != "library_patches.py" and INTERNAL.search(path.read_text())
    }
    assert touching, "the pattern finds nothing: it no longer matches the code"
    assert touching <= registered, f"unregistered internals in {sorted(touching - registered)}"


def test_the_readme_points_to_the_table() -> None:
    assert "api/library_patches.py" in (REPO_ROOT / "README.md").read_text()


def _versions_with(distribution: str, fake: str):
    def installed(name: str) -> str | None:
        return fake if name == distribution else installed_version(name)

    return installed


def test_known_versions_apply_every_patch() -> None:
    assert apply_library_patches() == {patch.name: True for patch in PATCHES}
    assert library_patches.applied(library_patches.CLIENT_ERROR_LOG)


def test_an_unknown_uvicorn_refuses_to_start_naming_the_patch() -> None:
    with pytest.raises(UnsupportedLibraryVersion) as refused:
        apply_library_patches(_versions_with("uvicorn", "0.99.0"))
    message = str(refused.value)
    assert "\n" not in message
    assert "uvicorn-request-limits" in message and "uvicorn 0.99.0" in message
    assert "api/request_limits.py" in message


def test_an_unknown_version_of_a_fall_back_patch_leaves_the_library_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        library_patches,
        "PATCHES",
        (
            library_patches.LibraryPatch(
                **{
                    **vars(library_patches.TIMEOUT_TIMERS),
                    "install": lambda: calls.append("installed"),
                }
            ),
            library_patches.CLIENT_ERROR_LOG,
        ),
    )
    try:
        with caplog.at_level(logging.WARNING, logger=library_patches.__name__):
            decided = apply_library_patches(_versions_with("bentoml", "1.5.0"))
        assert decided == {"bentoml-timeout-timers": False, "bentoml-client-error-log": False}
        assert calls == []
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 2
        assert "bentoml-timeout-timers" in lines[0] and "bentoml 1.5.0" in lines[0]
        assert FALL_BACK in lines[0]
        # Nothing attached to BentoML's logger: its own logging stays.
        logger = logging.getLogger(library_patches.BENTOML_HTTP_APP_LOGGER)
        before = list(logger.filters)
        assert not library_patches.filter_client_errors(logging.Filter())
        assert logger.filters == before
    finally:
        monkeypatch.undo()
        apply_library_patches()  # back to this process's real decision


def test_the_service_itself_refuses_an_unknown_uvicorn(tmp_path: Path) -> None:
    """A distribution record of another uvicorn version ahead on the path (the module
    itself unchanged): importing the service, as `bentoml serve` does first, fails with
    one line naming the patch."""
    fake = tmp_path / "site"
    info = fake / "uvicorn-0.99.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: uvicorn\nVersion: 0.99.0\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from importlib.metadata import version; assert version('uvicorn') == '0.99.0';"
        "import api.service"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(fake)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("api.library_patches.UnsupportedLibraryVersion: ")
    assert "uvicorn-request-limits" in last and "uvicorn 0.99.0" in last


def test_the_client_error_filter_turns_a_refused_request_into_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The entry the table names for BentoML's request-error logger: attached through the
    table, a client's bad field that BentoML logs (its own `log_exception`, at ERROR with a
    traceback) becomes one WARNING line naming the field; a server error stays an ERROR
    with its traceback."""
    from bentoml._internal.server.http_app import log_exception
    from pydantic import BaseModel, ValidationError
    from starlette.requests import Request

    from api.service import ClientErrorLogFilter

    class Body(BaseModel):
        age: int

    request = Request({"type": "http", "path": routes.PREDICT, "method": "POST", "headers": []})
    apply_library_patches()
    logger = logging.getLogger(library_patches.BENTOML_HTTP_APP_LOGGER)
    log_filter = ClientErrorLogFilter()
    assert library_patches.filter_client_errors(log_filter)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            try:
                Body.model_validate({"age": "old"})
            except ValidationError:
                log_exception(request)
            try:
                raise RuntimeError("the model broke")
            except RuntimeError:
                log_exception(request)
    finally:
        logger.removeFilter(log_filter)
    client, server = caplog.records
    assert client.levelname == "WARNING" and client.exc_info is None
    assert client.getMessage().startswith("Request to /predict [POST] refused: age: ")
    assert server.levelname == "ERROR" and server.exc_info is not None
