"""Read-ahead on a thread: items in order, the reader's error raised at its item, and a
loop left early stops the reader instead of leaving it blocked."""

import threading

import pytest

from credit_platform.core.prefetch import prefetched


def test_items_arrive_in_order_and_an_error_is_raised_where_it_happened():
    def produce():
        yield from range(5)
        raise OSError("the database went away")

    seen = []
    with pytest.raises(OSError, match="went away"):
        for item in prefetched(produce):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_leaving_early_stops_the_reader():
    produced = []
    finished = threading.Event()

    def produce():
        try:
            for item in range(1_000):
                produced.append(item)
                yield item
        finally:
            finished.set()

    for item in prefetched(produce, ahead=2):
        if item == 3:
            break
    assert finished.wait(5)
    assert len(produced) <= 3 + 1 + 2 + 1  # the items taken, the queue, one in hand
    assert not [t for t in threading.enumerate() if t.name == "prefetch-reader"]
