"""The service's paths are named once, in `core/routes.py`.

The service declares each of them, a route with a larger body limit is one the service has,
and no module of the package, the benchmarks or the tests spells a path out again: a route
renamed in one place only would otherwise fall back silently to the general body limit, or
send its clients to a 404."""

from __future__ import annotations

import ast
from pathlib import Path

from api.request_limits import large_body_limits
from credit_platform.core import routes

REPO_ROOT = Path(__file__).resolve().parents[2]
BENTOML_OWN = {routes.LIVEZ, routes.READYZ, routes.HEALTHZ, routes.METRICS}


def declared_paths() -> set[str]:
    """Every path the service itself declares: its BentoML APIs and the Starlette routes it
    mounts beside them."""
    from api.service import CreditScoreService, admin_app

    paths = {api_method.route for api_method in CreditScoreService.apis.values()}
    for app, prefix, _ in CreditScoreService.mount_apps:
        assert app is admin_app and prefix == "/", "a mounted app this test does not read"
    return paths | {route.path for route in admin_app.routes}


def named_paths() -> set[str]:
    return {
        value
        for name, value in vars(routes).items()
        if name.isupper() and isinstance(value, str) and value.startswith("/")
    }


def test_every_route_with_a_larger_body_limit_is_a_route_of_the_service() -> None:
    assert large_body_limits(), "no route has a limit of its own"
    assert set(large_body_limits()) <= declared_paths()


def test_the_service_declares_exactly_the_named_paths_besides_bentomls_own() -> None:
    assert declared_paths() == named_paths() - BENTOML_OWN


def spelled_out_paths(source: str, where: str, paths: set[str]) -> list[str]:
    """String constants of `source` (f-string pieces included) that are a named path, alone
    or with a query string."""
    found = [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source, filename=where))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.split("?", 1)[0] in paths
    ]
    return [f"{where}:{line} {value!r}" for line, value in sorted(found)]


def test_no_module_spells_out_a_path_of_the_service() -> None:
    paths = named_paths()
    sources = [
        *(REPO_ROOT / "credit_platform").rglob("*.py"),
        *(REPO_ROOT / "api").glob("*.py"),
        *(REPO_ROOT / "bench").glob("*.py"),  # not bench/baseline: the seed's own service
        *(REPO_ROOT / "credit_platform_tests").rglob("*.py"),
    ]
    found = []
    for path in sources:
        if path != REPO_ROOT / "credit_platform" / "core" / "routes.py":
            where = str(path.relative_to(REPO_ROOT))
            found += spelled_out_paths(path.read_text(), where, paths)
    assert found == []


def test_the_walk_finds_a_spelled_out_path() -> None:
    source = (
        'URL = f"{base}/predict_batch_job/submit"\nOTHER = "/metadata?x=1"\nNOTE = "/predicted"\n'
    )
    assert spelled_out_paths(source, "x.py", named_paths()) == [
        "x.py:1 '/predict_batch_job/submit'",
        "x.py:2 '/metadata?x=1'",
    ]
