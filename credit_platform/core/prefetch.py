"""Read ahead on a thread: the next chunks are fetched while the caller works on this one.

The bulk reads spend most of their time waiting for the database server and in Arrow's
parser, both outside the GIL, so a reader thread overlaps them with the caller's pandas,
CatBoost and writes on the other core.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
_DONE = object()


def prefetched(produce: Callable[[], Iterator[Item]], ahead: int = 2) -> Iterator[Item]:
    """The items of `produce()`, iterated on a thread up to `ahead` items in advance. An
    error in the thread is raised here, at the item where it happened; leaving the loop
    early stops the thread (after the item it is reading) and waits for it."""
    items: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as error:  # handed to the caller, raised there
            items.put(error)

    reader = threading.Thread(target=run, name="prefetch-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put
            with contextlib.suppress(queue.Empty):
                items.get(timeout=0.2)
        reader.join()
