"""Bounded input on a real server process (one worker, so a stalled worker would show):
oversized headers get 431 at once, oversized bodies 413 before they are buffered or parsed
(declared or streamed with Transfer-Encoding: chunked), clients that never finish their
headers are disconnected after the header timeout, and requests within the limits, a full
batch included, are answered as before.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from bench.sample_requests import load_sample, valid_request_payloads
from credit_platform.core import routes, settings
from credit_platform.core.service_process import ServiceProcess
from credit_platform_tests.harness import worker_pids
from credit_platform_tests.model_fixtures import save_tiny_model

pytestmark = [pytest.mark.slow]

BATCH_ROWS = 40
ROW_BYTES = 2048
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = settings.DEFAULT_API_MAX_HEADER_BYTES
MAX_BODY_BYTES = settings.DEFAULT_API_MAX_BODY_BYTES
MIB = 1024 * 1024


@dataclass
class Service:
    process: ServiceProcess
    payloads: list[dict]

    @property
    def port(self) -> int:
        return self.process.port

    def predict_seconds(self) -> float:
        """Seconds a normal /predict takes to be answered (200 asserted)."""
        started = time.monotonic()
        response = requests.post(
            f"{self.process.url}{routes.PREDICT}", json={"data": self.payloads[0]}, timeout=30
        )
        assert response.status_code == 200, response.text
        return time.monotonic() - started

    def worker_peak_rss(self) -> int:
        """The worker's peak resident memory so far (VmHWM), in bytes."""
        (worker,) = worker_pids(self.process)
        for line in Path(f"/proc/{worker}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def service(kaggle_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    sample = load_sample(kaggle_sample, rows=600)
    tag = save_tiny_model(sample, partition="2025-04-01", iterations=10, depth=3)
    workdir = tmp_path_factory.mktemp("limits")
    process = ServiceProcess(
        {
            settings.FEATURE_STORE_URL_ENV: f"sqlite:///{workdir / 'log.db'}",
            settings.PREDICTION_SPOOL_DIR_ENV: str(workdir / "spool"),
            settings.API_MODEL_TAG_ENV: tag,
            settings.API_WORKERS_ENV: "1",
            settings.ADMIN_TOKEN_ENV: "limits-5c0e7a92d4b13f68a9e2",
            settings.API_MAX_BATCH_ROWS_ENV: str(BATCH_ROWS),
            settings.API_MAX_ROW_BYTES_ENV: str(ROW_BYTES),
            settings.API_HEADER_TIMEOUT_ENV: str(HEADER_TIMEOUT),
            settings.API_BODY_TIMEOUT_ENV: str(BODY_TIMEOUT),
        },
        workdir / "service.log",
    )
    try:
        process.wait_ready()
        yield Service(process, valid_request_payloads(sample, BATCH_ROWS))
    finally:
        process.stop()


@dataclass
class RawExchange:
    """One request written on a raw socket by a thread while the caller reads the answer,
    as a client that keeps sending after the server has answered would."""

    port: int
    head: bytes
    body: Iterable[bytes] = ()
    sent: int = 0
    send_error: str | None = None
    _sender: threading.Thread | None = field(default=None, repr=False)

    def run(self, timeout: float) -> tuple[int | None, bytes, float]:
        """(status or None when the server closed without answering, answer, seconds)."""
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        started = time.monotonic()
        self._sender = threading.Thread(target=self._send, args=(connection,), daemon=True)
        self._sender.start()
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                piece = connection.recv(65536)
                if not piece:
                    break
                answer += piece
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(rest) < length:
                piece = connection.recv(65536)
                if not piece:
                    break
                rest += piece
            elapsed = time.monotonic() - started
        except OSError:
            elapsed = time.monotonic() - started
        finally:
            connection.close()
            self._sender.join(timeout)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        return status, answer, elapsed

    def _send(self, connection: socket.socket) -> None:
        try:
            connection.sendall(self.head)
            self.sent += len(self.head)
            for piece in self.body:
                connection.sendall(piece)
                self.sent += len(piece)
        except OSError as error:  # the server closed after answering
            self.send_error = str(error)


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield piece


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Transfer-Encoding: chunked framing, ending with the last chunk."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def test_an_oversized_header_gets_431_at_once_and_the_worker_keeps_answering(
    service: Service,
) -> None:
    service.predict_seconds()  # warm
    flood = RawExchange(
        service.port,
        b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ",
        repeated(b"a" * MIB, 128 * MIB),
    )
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(flood.run(timeout=30)))
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while flood.sent < 4 * MIB and time.monotonic() < deadline and reader.is_alive():
            time.sleep(0.01)
        # While the header is still arriving, the one worker answers others promptly.
        latencies = [service.predict_seconds() for _ in range(5)]
    finally:
        reader.join(40)
    status, answer, elapsed = outcome[0]
    assert status == 431, answer[:300]
    assert str(MAX_HEADER_BYTES).encode() in answer
    assert elapsed < 3.0, f"431 came after {elapsed:.1f} s"
    assert max(latencies) < 1.0, f"other requests waited up to {max(latencies):.2f} s"
    assert service.predict_seconds() < 1.0


def test_headers_within_the_limit_are_served(service: Service) -> None:
    big_but_legal = {"X-Trace": "t" * (MAX_HEADER_BYTES // 2), "Cookie": "c" * 4000}
    response = requests.post(
        f"{service.process.url}{routes.PREDICT}",
        json={"data": service.payloads[0]},
        headers=big_but_legal,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    too_big = requests.post(
        f"{service.process.url}{routes.PREDICT}",
        json={"data": service.payloads[0]},
        headers={"X-Trace": "t" * (MAX_HEADER_BYTES + 1)},
        timeout=30,
    )
    assert too_big.status_code == 431


def test_an_oversized_predict_body_gets_413_without_being_buffered(service: Service) -> None:
    service.predict_seconds()
    peak_before = service.worker_peak_rss()
    body_size = 100 * MIB
    exchange = RawExchange(
        service.port,
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % body_size,
        repeated(b" " * MIB, body_size),
    )
    status, answer, elapsed = exchange.run(timeout=30)
    assert status == 413, answer[:300]
    assert str(MAX_BODY_BYTES).encode() in answer
    assert elapsed < 3.0
    growth = service.worker_peak_rss() - peak_before
    assert growth < 20 * MIB, f"the worker's peak memory grew by {growth / MIB:.0f} MiB"
    assert service.predict_seconds() < 1.0


def _batch_body(rows: list[dict]) -> bytes:
    return json.dumps({"data": rows}).encode()


def test_a_chunked_body_over_the_batch_limit_gets_413(service: Service) -> None:
    limit = BATCH_ROWS * ROW_BYTES
    row = json.dumps(service.payloads[0]).encode()
    pieces = [b'{"data": [', *([row + b", "] * (2 * limit // len(row))), row + b"]}"]
    peak_before = service.worker_peak_rss()
    exchange = RawExchange(
        service.port,
        b"POST /predict_batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        chunked(pieces),
    )
    status, answer, _ = exchange.run(timeout=30)
    assert status == 413, answer[:300]
    assert str(limit).encode() in answer and str(BATCH_ROWS).encode() in answer

    # Streamed without end, it is refused once the limit is passed, never buffered whole.
    endless = RawExchange(
        service.port,
        b"POST /predict_batch HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        chunked(repeated(b" " * 65536, 200 * MIB)),
    )
    status, answer, elapsed = endless.run(timeout=30)
    assert status == 413 and elapsed < 3.0, answer[:300]
    growth = service.worker_peak_rss() - peak_before
    assert growth < 20 * MIB, f"the worker's peak memory grew by {growth / MIB:.0f} MiB"


def test_requests_within_the_limits_are_answered_as_before(service: Service) -> None:
    url = service.process.url
    # A full batch of real rows fits the batch limit, sent whole or streamed.
    full = _batch_body(service.payloads[:BATCH_ROWS])
    assert len(full) < BATCH_ROWS * ROW_BYTES
    headers = {"Content-Type": "application/json"}
    whole = requests.post(f"{url}{routes.PREDICT_BATCH}", data=full, headers=headers, timeout=30)
    assert whole.status_code == 200, whole.text
    streamed = requests.post(
        f"{url}{routes.PREDICT_BATCH}",
        data=(full[i : i + 1000] for i in range(0, len(full), 1000)),
        headers=headers,
        timeout=30,
    )
    assert streamed.status_code == 200, streamed.text
    assert streamed.json() == whole.json()
    assert len(whole.json()) == BATCH_ROWS

    # A streamed body within the limit on another route, and keep-alive across requests.
    with requests.Session() as session:
        for payload in service.payloads[:3]:
            one = json.dumps({"data": payload}).encode()
            answer = session.post(
                f"{url}{routes.PREDICT}",
                data=iter([one[:50], one[50:]]),
                headers=headers,
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["customer_id"] == payload["customer_id"]
        assert session.get(f"{url}{routes.METADATA}", timeout=30).status_code == 200
    # An empty /admin/reload body still reaches the route (401 without the token).
    assert requests.post(f"{url}{routes.ADMIN_RELOAD}", timeout=30).status_code == 401


def _open_slow_header_sockets(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        connection = socket.socket()
        connection.setblocking(True)
        connection.settimeout(10)
        connection.connect(("127.0.0.1", port))
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(connection)
    return sockets


def test_slow_header_sockets_are_closed_after_the_timeout(service: Service) -> None:
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(10_000, soft_limit - 1_000)
    assert count >= 1_000, f"the open-file limit ({soft_limit}) is too low for this test"
    started = time.monotonic()
    sockets = _open_slow_header_sockets(service.port, count)
    try:
        opened = time.monotonic() - started
        # They hold no worker: a normal request is answered while they wait.
        assert service.predict_seconds() < 1.0
        selector = selectors.DefaultSelector()
        for connection in sockets:
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
        open_sockets = set(sockets)
        deadline = time.monotonic() + HEADER_TIMEOUT + opened + 15
        statuses: set[bytes] = set()
        while open_sockets and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                connection = key.fileobj
                try:
                    data = connection.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                if data:
                    statuses.add(data.split(b"\r\n", 1)[0])
                    continue
                selector.unregister(connection)
                open_sockets.discard(connection)  # type: ignore[arg-type]
        assert not open_sockets, (
            f"{len(open_sockets)} of {count} slow-header connections still open "
            f"{HEADER_TIMEOUT:g} s + {opened + 15:.0f} s after they started"
        )
        assert statuses == {b"HTTP/1.1 408 Request Timeout"}
        elapsed = time.monotonic() - started
        assert elapsed >= HEADER_TIMEOUT - 0.1, "closed before the timeout"
    finally:
        for connection in sockets:
            connection.close()
    assert service.predict_seconds() < 1.0


def test_a_keep_alive_client_that_stalls_in_its_next_headers_is_closed(service: Service) -> None:
    connection = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    try:
        connection.sendall(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(rest) < length:
            rest += connection.recv(65536)
        connection.sendall(b"GET /metadata HTTP/1.1\r\nHo")  # and nothing more
        started = time.monotonic()
        tail = b""
        while piece := connection.recv(65536):
            tail += piece
        waited = time.monotonic() - started
    finally:
        connection.close()
    assert tail.startswith(b"HTTP/1.1 408 "), tail[:200]
    assert HEADER_TIMEOUT - 0.1 <= waited < 2 * HEADER_TIMEOUT + 1.0, f"closed after {waited:.1f} s"


def test_a_chunked_body_sent_after_100_continue_is_answered(service: Service) -> None:
    body = json.dumps({"data": service.payloads[0]}).encode()
    connection = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    try:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = connection.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        connection.sendall(b"".join(chunked([body[:100], body[100:]])))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
    finally:
        connection.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def _stall_in_body(port: int, head: bytes, first_piece: bytes) -> tuple[bytes, float]:
    """Send headers and the first piece of a body, then nothing; (what the server sent
    until it closed, seconds from the piece to the close)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        connection.sendall(head + first_piece)
        started = time.monotonic()
        answer = b""
        while piece := connection.recv(65536):
            answer += piece
        return answer, time.monotonic() - started
    finally:
        connection.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_stops_arriving_gets_408_and_is_closed(service: Service, framing) -> None:
    """A client that declares (or streams) a body and stops sending it mid-way is answered
    408 and disconnected once the body timeout has passed; meanwhile the worker answers."""
    if framing == "chunked":
        head = (
            b"POST /predict_batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b'a\r\n{"data": [\r\n'  # one chunk of ten bytes, then nothing
    else:
        head = (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        piece = b'{"data": {'
    outcome: list[tuple[bytes, float]] = []
    stalled = threading.Thread(
        target=lambda: outcome.append(_stall_in_body(service.port, head, piece))
    )
    stalled.start()
    time.sleep(0.3)
    assert service.predict_seconds() < 1.0  # the worker is not held by the stalled body
    stalled.join(30)
    ((answer, waited),) = outcome
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body did not arrive within" in answer
    assert BODY_TIMEOUT - 0.2 <= waited < BODY_TIMEOUT + HEADER_TIMEOUT + 1.0, waited
