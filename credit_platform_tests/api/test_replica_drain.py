"""A replica told to stop leaves its balancer's rotation before it stops accepting:
SIGTERM turns /readyz 503 at once, every other request is served as before, and the
server's own SIGTERM handler (uvicorn's) runs only when the drain time is up.
(test_stack_docker.py stops a replica under load behind HAProxy and loses no request.)"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import orjson
import pytest

from api import replica_sync
from api.replica_sync import DRAINING_REASON, ReplicaReadiness, drain_on_sigterm
from credit_platform.core import routes, settings


async def _ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def _get(path: str) -> tuple[int, bytes]:
    """GET `path` through the readiness middleware in front of an app that answers 200."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    asyncio.run(ReplicaReadiness(_ok)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def server_handler():
    """A stand-in for uvicorn's SIGTERM handler, installed as the running server has it;
    records when it is called. The process's own handler and the drain state come back."""
    calls: list[float] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(time.monotonic()))
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, previous)
        replica_sync._draining.clear()


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigterm_fails_readiness_first_and_stops_the_server_after_the_drain(server_handler):
    assert drain_on_sigterm(0.6)
    assert _get(routes.READYZ) == (200, b"served")
    told = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    _wait(replica_sync._draining.is_set)
    status, body = _get(routes.READYZ)
    assert status == 503 and orjson.loads(body) == {"ready": False, "reason": DRAINING_REASON}
    # Still serving: predictions and everything else answer as before.
    assert _get(routes.PREDICT) == (200, b"served")
    assert server_handler == [], "the server was stopped before the balancer could notice"
    # A second SIGTERM (a supervisor repeating itself) does not cut the drain short.
    os.kill(os.getpid(), signal.SIGTERM)
    _wait(lambda: server_handler != [])
    assert server_handler[0] - told >= 0.6
    time.sleep(0.7)
    assert len(server_handler) == 1


def test_no_drain_time_leaves_sigterm_to_the_server(server_handler):
    handler = signal.getsignal(signal.SIGTERM)
    assert not drain_on_sigterm(0)
    assert signal.getsignal(signal.SIGTERM) is handler
    os.kill(os.getpid(), signal.SIGTERM)
    _wait(lambda: server_handler != [])
    assert not replica_sync._draining.is_set()
    assert _get(routes.READYZ) == (200, b"served")


def test_only_the_main_thread_can_take_over_sigterm(server_handler):
    installed: list[bool] = []
    thread = threading.Thread(target=lambda: installed.append(drain_on_sigterm(5)))
    thread.start()
    thread.join()
    assert installed == [False]


def test_the_drain_time_is_a_non_negative_setting(monkeypatch):
    monkeypatch.delenv(settings.API_DRAIN_SECONDS_ENV, raising=False)
    assert settings.api_drain_seconds() == 0.0
    monkeypatch.setenv(settings.API_DRAIN_SECONDS_ENV, "8")
    assert settings.api_drain_seconds() == 8.0
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv(settings.API_DRAIN_SECONDS_ENV, bad)
        with pytest.raises(ValueError, match=settings.API_DRAIN_SECONDS_ENV):
            settings.api_drain_seconds()
