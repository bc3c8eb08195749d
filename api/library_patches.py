"""Every place the service reaches into a library's internals, in one table, checked at start.

BentoML, uvicorn and Starlette are pinned exactly (pyproject.toml and api/bentofile.yaml),
and each entry of `PATCHES` names the versions its code was written and tested against.
`apply_library_patches()` runs when `api.service` is imported (by `bentoml serve` before it
starts any worker, and by each worker): for an entry whose library is at a version it does
not know, it either refuses to start (`REFUSE`: without the patch the service would be
wrong or unsafe, e.g. without its request limits) or leaves the library's own behaviour in
place (`FALL_BACK`: the patch only makes it faster or quieter), with one line naming the
patch either way. Upgrading a pinned library means re-running the tests each entry names,
then adding the new version here; `credit_platform_tests/api/test_library_patches.py` fails
when a pin and this table disagree, or when code under `api/` reaches into an internal
that no entry names.

What was looked for before each patch was written: a supported way (configuration, a
documented hook) to get the same behaviour. `supported_alternative` says what exists and
why it does not do the job; where one did, it is used instead and the entry is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger(__name__)

REFUSE = "refuse to start"
FALL_BACK = "fall back to the library's own behaviour"

# BentoML's logger of request errors in the HTTP app (a private module's name).
BENTOML_HTTP_APP_LOGGER = "bentoml._internal.server.http_app"


class UnsupportedLibraryVersion(RuntimeError):
    """A library the service patches is at a version the patch was not tested against."""


@dataclass(frozen=True)
class LibraryPatch:
    name: str
    where: str  # the file (and object) that holds the patch
    needle: str  # text of that file that is the patch (tests check it is still there)
    touches: str  # the internals it depends on
    tested: Mapping[str, frozenset[str]]  # distribution -> versions known to work
    on_unknown: str  # REFUSE or FALL_BACK
    why: str
    supported_alternative: str
    tests: tuple[str, ...]
    install: Callable[[], object] | None = field(default=None, compare=False)


def _cancel_request_timers() -> object:
    from api.bentoml_patches import cancel_request_timers

    return cancel_request_timers()


def _install_request_limits() -> object:
    from api.request_limits import install_request_limits

    return install_request_limits()


def _bound_endpoint_labels() -> object:
    from api.metrics_labels import bound_endpoint_labels

    return bound_endpoint_labels()


BENTOML = {"bentoml": frozenset({"1.4.39"})}
UVICORN = {"uvicorn": frozenset({"0.55.0"}), "httptools": frozenset({"0.9.0"})}

TIMEOUT_TIMERS = LibraryPatch(
    name="bentoml-timeout-timers",
    where="api/bentoml_patches.py (cancel_request_timers)",
    needle="TimeoutMiddleware.__call__ = _call_with_cancelled_timer",
    touches="bentoml._internal.server.http.traffic.TimeoutMiddleware.__call__ and its "
    "_set_timer_out and timeout attributes",
    tested=BENTOML,
    on_unknown=FALL_BACK,
    why="BentoML arms a 60 s timer per request and never cancels it: some 60,000 live timers "
    "per worker at 1,000 requests/s, and full GC passes of 30-55 ms; p99 at 1,000-1,200/s "
    "went from about 85 to 35 ms with the timer cancelled once the response starts",
    supported_alternative="none: BentoML adds the middleware whenever traffic.timeout is "
    "set, and its config schema requires timeout > 0 (no way to turn it off or to pass our "
    "own); a longer timeout only keeps each timer alive longer",
    tests=(
        "credit_platform_tests/api/test_reliability_serving.py::"
        "test_request_timers_are_cancelled_once_the_response_starts",
    ),
    install=_cancel_request_timers,
)

REQUEST_LIMITS = LibraryPatch(
    name="uvicorn-request-limits",
    where="api/request_limits.py (LimitedHttpToolsProtocol, install_request_limits)",
    needle='uvicorn.config.HTTP_PROTOCOLS["auto"] = path',
    touches="uvicorn.config.HTTP_PROTOCOLS; HttpToolsProtocol's parser callbacks "
    "(on_message_begin, on_headers_complete, on_body, on_message_complete), its private "
    "_start_asgi_task, and its cycle, flow, url, headers, loop, transport and logger "
    "attributes",
    tested=UVICORN,
    on_unknown=REFUSE,
    why="uvicorn's httptools protocol bounds neither headers (grown by concatenation: a "
    "128 MiB header held a worker 18 s) nor bodies (100 MiB: worker RSS 347 MiB -> 2.85 GB, "
    "chunked bodies too) nor the time a header or body may take; the protocol answers "
    "431/413/408 before the application starts. Without it the service would run unbounded, "
    "so an unknown uvicorn refuses to start",
    supported_alternative="uvicorn.Config(http=<protocol class>) is uvicorn's supported "
    "hook, but BentoML builds the Config itself (_bentoml_impl/worker/service.py) without "
    "passing http; h11_max_incomplete_event_size bounds headers on the slower h11 protocol "
    "only, and nothing bounds header or body time; an ASGI middleware runs after the "
    "headers are parsed, too late for 431 and header time",
    tests=("credit_platform_tests/api/test_request_limits.py",),
    install=_install_request_limits,
)

CLIENT_ERROR_LOG = LibraryPatch(
    name="bentoml-client-error-log",
    where="api/service.py (ClientErrorLogFilter, attached in CreditScoreService.__init__)",
    needle="filter_client_errors(ClientErrorLogFilter())",
    touches=f"the logger name {BENTOML_HTTP_APP_LOGGER!r} and the exceptions BentoML logs "
    "there with exc_info",
    tested=BENTOML,
    on_unknown=FALL_BACK,
    why="BentoML logs every refused request (a client's bad field or header) at ERROR with "
    "a traceback; one WARNING line naming the field keeps real errors visible",
    supported_alternative="none: BentoML's logging configuration sets levels and the "
    "access log, not how a refused request is logged",
    tests=(
        "credit_platform_tests/api/test_library_patches.py::"
        "test_the_client_error_filter_turns_a_refused_request_into_one_warning",
    ),
)

BATCH_JOB_STORE = LibraryPatch(
    name="bentoml-task-store-removal",
    where="api/batch_jobs.py (remove_bentoml_task_store)",
    needle="from bentoml._internal.configuration.containers import BentoMLContainer",
    touches="bentoml._internal.configuration.containers.BentoMLContainer.result_store_file",
    tested=BENTOML,
    on_unknown=FALL_BACK,
    why="jobs live in the platform's own store (api/job_store.py); BentoML's task database "
    "left by an older release held every job's rows and answers readable by all (0644), so "
    "it is deleted at start, found where BentoML keeps it",
    supported_alternative="none in BentoML 1.4: the result store's path is configuration "
    "internal to BentoML; on another version the old file is left in place (it is no longer "
    "written)",
    tests=("credit_platform_tests/api/test_batch_jobs.py",),
    install=None,
)


METRICS_LABELS = LibraryPatch(
    name="bentoml-metrics-endpoint-labels",
    where="api/metrics_labels.py (bound_endpoint_labels)",
    needle="from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware",
    touches="bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware: its "
    "__call__, _setup and the scope path it labels request metrics with",
    tested=BENTOML,
    on_unknown=REFUSE,
    why="BentoML labels its request metrics with the raw path, so every made-up path adds "
    "series for the life of the process: 3,000 random 404s took /metrics from 1.4 to "
    "15.8 MB and 6.5 s to render, and 10,000 left it unable to answer within 60 s; a "
    "client could exhaust the service, so an unknown BentoML refuses to start",
    supported_alternative="none in BentoML 1.4: the metrics middleware is added by BentoML "
    "itself with no option for the label; prometheus_client cannot cap a label's values",
    tests=(
        "credit_platform_tests/api/test_api_service.py::test_unknown_paths_share_one_metrics_label",
    ),
    install=_bound_endpoint_labels,
)

PATCHES: tuple[LibraryPatch, ...] = (
    TIMEOUT_TIMERS,
    REQUEST_LIMITS,
    CLIENT_ERROR_LOG,
    METRICS_LABELS,
    BATCH_JOB_STORE,
)

# What apply_library_patches decided in this process: name -> applied.
_applied: dict[str, bool] = {}


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def version_problem(
    patch: LibraryPatch, installed: Callable[[str], str | None] = installed_version
) -> str | None:
    """Why the patch must not be applied here (None when every library it touches is at a
    version it was tested against)."""
    for distribution, known in sorted(patch.tested.items()):
        found = installed(distribution)
        if found not in known:
            return (
                f"{distribution} {found or '(not installed)'} is not a tested version "
                f"({', '.join(sorted(known))})"
            )
    return None


def apply_library_patches(
    installed: Callable[[str], str | None] = installed_version,
) -> dict[str, bool]:
    """Check every entry against the installed libraries and install those that pass.

    An entry at an unknown version raises `UnsupportedLibraryVersion` (REFUSE) or is left
    out with one warning (FALL_BACK); the line names the patch, the file and the library.
    Returns name -> applied. Idempotent.
    """
    decided: dict[str, bool] = {}
    for patch in PATCHES:
        problem = version_problem(patch, installed)
        if problem is not None:
            line = f"library patch {patch.name} in {patch.where}: {problem}"
            if patch.on_unknown == REFUSE:
                raise UnsupportedLibraryVersion(
                    f"{line}; the service refuses to start (see api/library_patches.py)"
                )
            logger.warning("%s; %s", line, FALL_BACK)
            decided[patch.name] = False
            continue
        if patch.install is not None:
            patch.install()
        decided[patch.name] = True
    _applied.clear()
    _applied.update(decided)
    return decided


def applied(patch: LibraryPatch) -> bool:
    """Whether `apply_library_patches` applied the entry in this process."""
    return _applied.get(patch.name, False)


def filter_client_errors(log_filter: logging.Filter) -> bool:
    """Attach the service's client-error filter to BentoML's HTTP app logger, when that
    entry was applied; False leaves BentoML's own logging."""
    if not applied(CLIENT_ERROR_LOG):
        return False
    logging.getLogger(BENTOML_HTTP_APP_LOGGER).addFilter(log_filter)
    return True
