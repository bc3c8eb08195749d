"""Test tools for a running prediction service: a TCP proxy that can cut it off its
database or stall it, a load generator that records every answer, and its worker pids.

They bind to 127.0.0.1 on free ports and stop what they start.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from credit_platform.core import routes
from credit_platform.core.processes import descendants
from credit_platform.core.service_process import ServiceProcess, free_port


def worker_pids(service: ServiceProcess) -> set[int]:
    """The server's descendant processes (its workers)."""
    return set(descendants(service.process.pid))


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` closes every connection and stops
    listening (clients get "connection refused", as when a server is down); `restore()`
    listens again on the same port. `stall()` keeps every connection open but forwards
    nothing, either way (as a hung server: clients wait for their timeouts); `resume()`
    delivers what was held and forwards again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = True
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
            self._closed = False
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        self._flowing.set()  # held data goes nowhere: its sockets are closed below
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._flowing.wait()
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Outcome:
    request_id: str
    payload_index: int
    status: int | None  # None: no HTTP answer (connection refused or reset)
    body: Any = None
    error: str | None = None  # what the client saw when there was no answer
    sent_at: float = 0.0  # time.monotonic() when the request first went out
    seconds: float = 0.0  # until the answer or the failure


@dataclass
class LoadGenerator:
    """Client threads posting /predict with a unique X-Request-ID each, until stopped, at
    most `max_requests` per thread and `max_seconds` in all."""

    url: str
    payloads: Sequence[dict]
    threads: int = 4
    max_requests: int = 5000
    max_seconds: float = 60.0
    timeout: float = 30.0
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    outcomes: list[Outcome] = field(default_factory=list)
    path: str = routes.PREDICT
    body: Callable[[dict], dict] = lambda payload: {"data": payload}
    resends: int = 2  # times a request with no answer is sent again (same X-Request-ID)
    resent: list[tuple[str, str]] = field(default_factory=list)  # (request id, why)

    _NO_ANSWER = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(number,), daemon=True)
            for number in range(self.threads)
        ]

    def start(self) -> LoadGenerator:
        self._deadline = time.monotonic() + self.max_seconds
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 10)
        return self.outcomes

    def _run(self, number: int) -> None:
        session = requests.Session()
        for count in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                break
            request_id = f"{self.prefix}-{number}-{count}"
            index = (number * 7919 + count) % len(self.payloads)
            payload = self.payloads[index]
            data = json.dumps(self.body(payload))
            sent_at = time.monotonic()
            resends = 0
            try:
                while True:
                    try:
                        response = self._post(session, request_id, data)
                        break
                    except self._NO_ANSWER as error:
                        # A keep-alive connection the server closed just as this request
                        # went out (idle timeout, recycling) fails with no answer; a client
                        # sends it again on a new connection under the same X-Request-ID,
                        # so a request the service did answer gets its logged answer, never
                        # a second row. A stall (read timeout) is not resent: it fails.
                        session.close()
                        session = requests.Session()
                        if resends >= self.resends:
                            raise
                        resends += 1
                        with self._lock:
                            self.resent.append((request_id, f"{type(error).__name__}: {error}"))
                        time.sleep(0.05 * resends)
            except requests.RequestException as error:
                outcome = Outcome(
                    request_id,
                    index,
                    None,
                    error=f"{type(error).__name__}: {error}",
                    sent_at=sent_at,
                    seconds=time.monotonic() - sent_at,
                )
                session.close()
                session = requests.Session()
                time.sleep(0.05)  # the service is gone: do not spin
            else:
                body = response.json() if response.status_code == 200 else response.text
                outcome = Outcome(
                    request_id,
                    index,
                    response.status_code,
                    body,
                    sent_at=sent_at,
                    seconds=time.monotonic() - sent_at,
                )
            with self._lock:
                self.outcomes.append(outcome)
        session.close()

    def _post(self, session: requests.Session, request_id: str, data: str) -> requests.Response:
        return session.post(
            f"{self.url}{self.path}",
            data=data,
            headers={"Content-Type": "application/json", "X-Request-ID": request_id},
            timeout=self.timeout,
        )

    def answered(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == 200]

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)
