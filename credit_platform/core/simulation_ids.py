"""Request ids of `credit-platform simulate`: each names its seed, simulated day and chunk.

A simulation replays several days within minutes, so the prediction log's `created_at` is
the wall clock, not the simulated day; the id says which day a row belongs to. Ids stay
inside the API's client key alphabet (letters, digits, `._:-`, at most 48 characters), and a
repeated simulation sends the same ids, so the service answers it from the log instead of
logging its rows twice.
"""

from __future__ import annotations

from datetime import date

PREFIX = "sim"


def simulation_request_id(seed: int, day: date, chunk: int) -> str:
    """The X-Request-ID of chunk `chunk` (0, 1, ...) of simulated day `day`."""
    return f"{PREFIX}{seed}-{day:%Y%m%d}-{chunk:05d}"


def day_id_range(seed: int, day: date) -> tuple[str, str]:
    """[low, high): every log row id of simulated day `day` (its batches' rows "<id>#<n>",
    a shadow's "...@shadow") sorts in it, byte-wise, and no other day's does."""
    low = f"{PREFIX}{seed}-{day:%Y%m%d}-"
    return low, low[:-1] + "."  # "." follows "-" in ASCII
