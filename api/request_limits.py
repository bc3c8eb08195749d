"""Request size and time limits of the prediction service, enforced in the HTTP protocol.

uvicorn's httptools protocol has no bound of its own: it grows a header by concatenation
(quadratic in its size), buffers any body and keeps a connection whose headers never end.
`LimitedHttpToolsProtocol` counts bytes as they arrive, before the parser sees them, and
answers 431 (request line and headers), 413 (a declared or a chunked body over the route's
limit) or 408 (headers not complete in time) itself: the application never starts for such a
request. `install_request_limits()` makes it the protocol of every uvicorn server this
process creates (BentoML's workers build theirs after importing the service).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from credit_platform.core import routes, settings

# After refusing a request, its remaining bytes are read and dropped for this long before
# the connection closes, so a client still sending can read the answer (a close with
# unread data would reset the connection and lose it).
LINGER_SECONDS = 2.0
# Timers fire within the loop's clock resolution; a deadline this close counts as reached.
_DEADLINE_SLACK = 0.05


def job_body_limit() -> int:
    """Bytes an asynchronous job's body may take: its row limit at the per-row bound."""
    return max(
        settings.api_max_body_bytes(), settings.api_max_job_rows() * settings.api_max_row_bytes()
    )


def batch_body_limit() -> int:
    """Bytes a /predict_batch body may take: a full batch of rows at the per-row bound."""
    return max(
        settings.api_max_body_bytes(), settings.api_max_batch_rows() * settings.api_max_row_bytes()
    )


def large_body_limits() -> dict[str, tuple[int, int]]:
    """The routes whose body may be larger than CREDIT_API_MAX_BODY_BYTES, each with its own
    limit in bytes and the rows that limit is made for; every other route keeps the general
    limit."""
    return {
        routes.PREDICT_BATCH: (batch_body_limit(), settings.api_max_batch_rows()),
        routes.JOB_SUBMIT: (job_body_limit(), settings.api_max_job_rows()),
    }


# A job's body is written to disk as it arrives, never held whole (see _start_asgi_task).
_STREAMED_PATH = routes.JOB_SUBMIT.encode()


def _answer(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return b"".join(
        [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded headers, bodies, header time and body
    time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_header_bytes = settings.api_max_header_bytes()
        self._max_body_bytes = settings.api_max_body_bytes()
        self._large_body_limits = {
            path.encode(): limits for path, limits in large_body_limits().items()
        }
        self._header_timeout = settings.api_header_timeout_seconds()
        self._body_timeout = settings.api_body_timeout_seconds()
        self._reading_headers = True  # the bytes arriving belong to a request line or headers
        self._header_bytes = 0
        self._headers_since: float | None = None  # when the current headers began
        self._body_limit = 0
        self._body_rows: int | None = None  # the route's row limit, for the 413 message
        self._body_bytes = 0
        self._body_since: float | None = None  # when the current body's headers ended
        self._chunked = False
        self._streamed = False  # a job body: the application writes it to disk as it arrives
        self._held: tuple[Any, Any] | None = None  # a chunked request waiting for its body
        self._refused = False
        self._watch: asyncio.TimerHandle | None = None

    # --- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_since = self.loop.time()
        self._watch = self.loop.call_later(self._header_timeout, self._watch_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._held = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: the rest of a refused request is dropped unparsed
        if self._reading_headers:
            seen = self._header_bytes + len(data)
            if seen > self._max_header_bytes:
                end = data.find(b"\r\n\r\n")
                if end < 0 or self._header_bytes + end + 4 > self._max_header_bytes:
                    self._refuse(
                        431,
                        "the request line and headers are over the limit of "
                        f"{self._max_header_bytes} bytes",
                    )
                    return
            self._header_bytes = seen
        HttpToolsProtocol.data_received(self, data)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused request's leftovers are not a new bad request
            super().send_400_response(msg)

    def _watch_deadlines(self) -> None:
        """Disconnects a client whose headers are not complete `header_timeout` seconds
        after they began, or whose body is not complete `body_timeout` seconds after its
        headers ended; one timer per connection, re-armed only when it fires."""
        self._watch = None
        if self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        since = self._headers_since
        if since is not None and now >= since + self._header_timeout - _DEADLINE_SLACK:
            if self._header_bytes:
                self.transport.write(
                    _answer(
                        408,
                        f"the request headers did not arrive within {self._header_timeout:g} s",
                    )
                )
            self.transport.close()
            return
        body_since = self._body_since
        if body_since is not None and now >= body_since + self._body_timeout - _DEADLINE_SLACK:
            self._body_timed_out()
            return
        if since is not None:
            wake = since + self._header_timeout
        elif body_since is not None:
            wake = body_since + self._body_timeout
        else:
            wake = now + self._header_timeout
        self._watch = self.loop.call_at(wake, self._watch_deadlines)

    def _body_timed_out(self) -> None:
        """408 and close; only the close when the application has begun its answer (it
        may answer before reading the body, e.g. a 404)."""
        message = f"the request body did not arrive within {self._body_timeout:g} s"
        if not self.cycle.response_started:
            self.logger.warning("request timed out (408): %s", message)
            self.transport.write(_answer(408, message))
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answers `status` at once, then drops what the client still sends for a short
        while before closing."""
        self._refused = True
        self._held = None
        self._headers_since = None
        self.logger.warning("request refused (%d): %s", status, message)
        self.transport.write(_answer(status, message))
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if self._headers_since is None:
            self._headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._reading_headers = False
        self._headers_since = None
        path = self.url.split(b"?", 1)[0]
        limit, rows = self._large_body_limits.get(path, (self._max_body_bytes, None))
        declared = None
        chunked = False
        for name, value in self.headers:
            if name == b"content-length":
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > limit:
            self._refuse(413, self._body_message(declared, limit, rows))
            return
        self._body_limit = limit
        self._body_rows = rows
        self._body_bytes = 0
        self._chunked = chunked
        self._streamed = path == _STREAMED_PATH
        if chunked or (declared is not None and declared > 0):
            self._body_since = self.loop.time()
        HttpToolsProtocol.on_headers_complete(self)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._chunked and not self._streamed and cycle is self.cycle and cycle.more_body:
            # A streamed body of unknown size: the application starts once it is complete
            # and within the limit (on_message_complete), never on part of it. A job's body
            # (up to the job limit, 819 MB by default) is not held: the job routes write it
            # to disk as it arrives and read it back in chunks; a body over the limit is
            # still refused here, and the application sees the client disconnect.
            self._held = (cycle, app)
            if cycle.waiting_for_100_continue:  # the client waits for this before sending
                cycle.waiting_for_100_continue = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._body_limit:
            self._refuse(413, self._body_message(None, self._body_limit, self._body_rows))
            return
        if self._held is not None:
            self.cycle.body += body  # bounded by the limit; read on without pausing
            return
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._body_since = None
        HttpToolsProtocol.on_message_complete(self)
        if self._held is not None:
            held, self._held = self._held, None
            HttpToolsProtocol._start_asgi_task(self, *held)
        self._reading_headers = True
        self._header_bytes = 0

    @staticmethod
    def _body_message(declared: int | None, limit: int, rows: int | None) -> str:
        size = f"of {declared} bytes " if declared is not None else ""
        message = f"the request body {size}is over the limit of {limit} bytes"
        if rows is not None:
            message += (
                f" for a batch of at most {rows} rows ({settings.api_max_row_bytes()} bytes a row)"
            )
        return message


def install_request_limits() -> bool:
    """Make `LimitedHttpToolsProtocol` the HTTP protocol of uvicorn servers configured
    from now on in this process (idempotent)."""
    path = f"{LimitedHttpToolsProtocol.__module__}:{LimitedHttpToolsProtocol.__qualname__}"
    uvicorn.config.HTTP_PROTOCOLS["auto"] = path
    uvicorn.config.HTTP_PROTOCOLS["httptools"] = path
    return True
