"""Challenger models beside the champion: shadow and canary serving.

A challenger is a saved model attached to the running service with a role:

- **shadow**: every answered request is also scored by it, off the response path (a thread
  of its own scores queued rows in groups); only the champion answers. Its predictions go
  to the same prediction log as the champion's, role `shadow`, under the request's row id
  plus `SHADOW_SUFFIX`, a form no client key can take, so each is logged at most once and
  a client's retry never logs it twice.
- **canary**: a share of the traffic (at most `MAX_CANARY_SHARE`) is answered by it,
  chosen by a stable hash of `customer_id`, so a customer keeps the same model for the
  whole canary; those rows are logged with role `canary`.

The attachment is agreed by every worker of a server through `api.model_sync`, as a reload
is; a worker that cannot load the challenger keeps serving the champion alone and says why
in /metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.predictor import Predictor, as_scored
from credit_platform.core.schema import MODEL_ROLES, SHADOW_ROW_SUFFIX

logger = logging.getLogger(__name__)

CHAMPION, SHADOW, CANARY = MODEL_ROLES
CHALLENGER_ROLES = (SHADOW, CANARY)
MAX_CANARY_SHARE = 0.5
SHADOW_SUFFIX = SHADOW_ROW_SUFFIX
# Rows waiting for the shadow beyond this are not scored by it (counted as skipped): a slow
# shadow must never grow a worker's memory without bound.
SHADOW_MAX_BACKLOG = 20_000
# Rows the shadow scores in one model call at most.
SHADOW_GROUP_ROWS = 2048
# How soon a changed counter reaches this worker's stats file, which the other workers
# of the server add to their own in /metadata.
SHADOW_STATS_PUBLISH_SECONDS = 0.2
SHADOW_COUNTERS = ("scored", "skipped", "errors", "backlog")


def add_shadow_stats(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shadow's work summed over the workers of a server (each scores the rows its own
    requests answered): counters added, the first last_error kept, `workers` counted."""
    total: dict[str, Any] = {
        name: sum(int(p.get(name) or 0) for p in parts) for name in SHADOW_COUNTERS
    }
    total["last_error"] = next((p["last_error"] for p in parts if p.get("last_error")), None)
    total["workers"] = len(parts)
    return total


@dataclass(frozen=True)
class ChallengerSpec:
    """What to attach: a model tag, its role, and (canary) the share of customers it answers."""

    tag: str
    role: str
    share: float = 0.0

    def __post_init__(self) -> None:
        if self.role not in CHALLENGER_ROLES:
            roles = " or ".join(CHALLENGER_ROLES)
            raise ValueError(f"role must be {roles}, not {self.role!r}")
        if self.role == SHADOW:
            object.__setattr__(self, "share", 0.0)  # scores every request, answers none
        elif not 0.0 <= self.share <= MAX_CANARY_SHARE:
            raise ValueError(
                f"share must be between 0 and {MAX_CANARY_SHARE} for a canary, not {self.share}"
            )

    @property
    def answered_share(self) -> float:
        """The share of requests this challenger answers (a shadow answers none)."""
        return self.share if self.role == CANARY else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "role": self.role, "share": self.answered_share}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any] | None) -> ChallengerSpec | None:
        if not payload or not payload.get("tag"):
            return None
        return cls(str(payload["tag"]), str(payload["role"]), float(payload.get("share") or 0))


@dataclass(frozen=True)
class Challenger:
    spec: ChallengerSpec
    predictor: Predictor


def canary_bucket(customer_id: str) -> float:
    """A customer's fixed place in [0, 1): the same customer always lands in the same place,
    on every worker and after every restart (Python's own hash is salted per process)."""
    digest = hashlib.blake2b(customer_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def routes_to_canary(challenger: Challenger | None, customer_id: str) -> bool:
    return (
        challenger is not None
        and challenger.spec.role == CANARY
        and canary_bucket(customer_id) < challenger.spec.share
    )


@dataclass(frozen=True)
class ShadowRow:
    """An answered row for the shadow to score: its log id, customer and features."""

    row_id: str
    customer_id: str
    features: dict[str, Any]


class ShadowScorer:
    """Scores answered rows with the shadow model on a thread of its own and logs them.

    `offer` only appends to a queue: the request never waits for the shadow and never fails
    because of it (a shadow that raises or stalls costs its own rows, counted, not
    answers). `close` scores and logs what is queued before the log itself closes."""

    def __init__(
        self,
        current_shadow: Callable[[], Challenger | None],
        submit: Callable[[list], Future],
        make_row: Callable[..., Any],
        max_backlog: int = SHADOW_MAX_BACKLOG,
        stats_path: Path | None = None,
    ) -> None:
        self._current_shadow = current_shadow
        self._stats_path = stats_path
        self._published: dict[str, Any] | None = None
        self._submit = submit
        self._make_row = make_row
        self._max_backlog = max_backlog
        self._queue: deque[ShadowRow] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self.scored = 0  # rows scored and handed to the log
        self.skipped = 0  # rows not scored: backlog full, or no shadow attached any more
        self.errors = 0  # rows the shadow model failed on, or the log refused
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def offer(self, rows: Sequence[ShadowRow]) -> None:
        with self._wake:
            if self._closing or len(self._queue) + len(rows) > self._max_backlog:
                self.skipped += len(rows)
                return
            self._queue.extend(rows)
            self._wake.notify()

    def backlog(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "skipped": self.skipped,
            "errors": self.errors,
            "backlog": self.backlog(),
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 30.0) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    def publish(self) -> None:
        """Write this worker's counters for the other workers when they changed (atomically:
        a reader sees the old file or the new one)."""
        if self._stats_path is None:
            return
        stats = self.stats()
        if stats == self._published:
            return
        temporary = self._stats_path.with_name(f".{self._stats_path.name}.tmp")
        try:
            temporary.write_text(json.dumps(stats))
            os.replace(temporary, self._stats_path)
        except OSError as error:  # the counters are a report: never fail scoring for them
            logger.warning("cannot publish the shadow's counters: %s", error)
            return
        self._published = stats

    def _take(self) -> list[ShadowRow] | None:
        """The next group of rows; [] after an idle wait (time to publish the counters, which
        offers and the log's callbacks move); None once closing with nothing left."""
        with self._wake:
            if not self._queue and not self._closing:
                self._wake.wait(SHADOW_STATS_PUBLISH_SECONDS)
            if not self._queue:
                return None if self._closing else []
            count = min(len(self._queue), SHADOW_GROUP_ROWS)
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while (rows := self._take()) is not None:
            if not rows:
                self.publish()  # outside the lock: an offer never waits for the file
                continue
            try:
                self._score(rows)
            except Exception as error:  # never let the thread die: count and go on
                self._failed(len(rows), error)
        self.publish()

    def _score(self, rows: list[ShadowRow]) -> None:
        shadow = self._current_shadow()
        if shadow is None or shadow.spec.role != SHADOW:
            self.skipped += len(rows)
            return
        started = time.perf_counter()
        predictions = shadow.predictor.predict([row.features for row in rows])
        elapsed_ms = (time.perf_counter() - started) * 1000
        log_rows = [
            self._make_row(
                row.row_id + SHADOW_SUFFIX,
                row.customer_id,
                as_scored(row.features, prediction),
                prediction,
                elapsed_ms,
                shadow.predictor.tag,
                SHADOW,
            )
            for row, prediction in zip(rows, predictions, strict=True)
        ]
        future = self._submit(log_rows)
        count = len(log_rows)

        def logged(done: Future) -> None:
            error = done.exception()
            if error is None:
                self.scored += count
            else:
                self._failed(count, error)

        future.add_done_callback(logged)

    def _failed(self, count: int, error: BaseException) -> None:
        self.errors += count
        message = f"{type(error).__name__}: {error}"
        if message != self.last_error:  # one line per new kind of failure, not per row
            logger.warning("shadow scoring of %d row(s) failed: %s", count, message)
        self.last_error = message


class ChallengerSlot:
    """This worker's challenger, if any, and why it has none when one was asked for."""

    def __init__(self, loader: Callable[[str | None], Predictor], champion: Callable[[], str]):
        self._loader = loader
        self._champion = champion
        self._lock = threading.Lock()
        self.current: Challenger | None = None
        self.problem: str | None = None  # why the asked-for challenger is not attached

    @property
    def spec(self) -> ChallengerSpec | None:
        current = self.current
        return current.spec if current else None

    def attach(self, spec: ChallengerSpec | None) -> ChallengerSpec | None:
        """Load and smoke-test `spec`'s model (None detaches), then make it the challenger;
        returns the previous spec. Raises ValueError for the champion's own tag, and the
        loader's ModelNotFound/ModelRefused; the previous challenger stays on any failure."""
        with self._lock:
            previous = self.spec
            if spec is None:
                self.current, self.problem = None, None
                return previous
            if spec.tag == self._champion():
                raise ValueError(f"{spec.tag} is the champion already; it cannot challenge itself")
            predictor = self._loader(spec.tag)
            predictor.role = spec.role
            self.current, self.problem = Challenger(spec, predictor), None
            return previous

    def refused(self, spec: ChallengerSpec, error: BaseException) -> None:
        """Record why `spec` could not be attached here; the champion serves alone."""
        with self._lock:
            self.current = None
            self.problem = f"{spec.role} {spec.tag} is not attached: {error}"


class CanaryView:
    """What the canary's scorer scores with: the canary model while one is attached, else
    the champion (a request routed to a canary detached meanwhile is the champion's)."""

    def __init__(self, slot: ChallengerSlot, champion: Callable[[], Predictor]) -> None:
        self._slot = slot
        self._champion = champion

    @property
    def current(self) -> Predictor:
        challenger = self._slot.current
        if challenger is not None and challenger.spec.role == CANARY:
            return challenger.predictor
        return self._champion()
