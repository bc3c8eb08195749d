"""One fix to BentoML 1.4 the service depends on for its latency under load.

BentoML's `TimeoutMiddleware` (traffic.timeout, 60 s by default) arms a timer per request
with `loop.call_later` and never cancels it once the response has started. Each timer
keeps a future, a context and a handle alive for the full timeout: at 1,000 requests/s a
worker carries some 60,000 of them, and every full pass of Python's garbage collector
walks them all, stalling each request in flight for tens of milliseconds (measured here:
gen-2 passes growing from 9 to 55 ms within a minute of load). The replacement below keeps
the middleware's behaviour (504 when no response has started in time) and cancels the
timer as soon as the response starts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse


async def _call_with_cancelled_timer(self: Any, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def send_and_disarm(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
            timer.cancel()
        await send(message)

    handler = asyncio.ensure_future(self.app(scope, receive, send_and_disarm))
    try:
        await waiter
    except TimeoutError:
        if handler.cancel():
            response = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await response(scope, receive, send)
    else:
        await handler
    finally:
        timer.cancel()


def cancel_request_timers() -> bool:
    """Install the fix (idempotent); False when this BentoML has no such middleware shape,
    in which case nothing is changed."""
    try:
        from bentoml._internal.server.http.traffic import TimeoutMiddleware
    except ImportError:
        return False
    if not hasattr(TimeoutMiddleware, "_set_timer_out"):
        return False
    TimeoutMiddleware.__call__ = _call_with_cancelled_timer  # type: ignore[method-assign]
    return True
