"""One model for every replica of the service: a reload received by one replica reaches all.

Replicas (containers behind a balancer) share the feature-store database and the BentoML
model store, nothing else. `api.model_sync` already makes the workers of one replica agree
through files; this module makes the replicas agree through the desired-model record
(`credit_platform.core.model_record`):

- `/admin/reload` and `/admin/challenger` on any replica load and smoke-test the model
  there, then write the record, then swap every worker of that replica;
- in each replica one worker (the holder of a file lock in the replica's state directory)
  reads the record every `poll_seconds`; when it names another model or challenger, it
  applies it through `ModelSync` (every worker swaps off the request path), retrying with a
  growing pause when the model cannot be loaded; it also reports the replica (heartbeat);
- it writes how it is doing to `replica.json` beside the workers' files, and every worker's
  `/readyz` answers 503 with the reason once the replica could not read the record, or has
  served another model than the record names, for longer than `stale_seconds`. A database
  that blips for less than that costs nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.challengers import ChallengerSpec
from api.model_sync import (
    ModelSync,
    ReloadNotPropagated,
    ReloadSuperseded,
    process_identity,
    read_json,
    write_json,
)
from api.predictor import ModelNotFound, ModelRefused
from credit_platform.core import model_record
from credit_platform.core.db import FeatureStoreUnavailable, make_engine
from credit_platform.core.routes import READYZ
from credit_platform.core.schema import REPLICA_ID_LENGTH

logger = logging.getLogger(__name__)

STATE_FILE = "replica.json"
LEADER_LOCK = "replica-leader.lock"
# A model that failed to load is tried again after a poll interval, the pause doubling up
# to a quarter of the bound (at most this): a model missing from the store may arrive, and
# a replica that can follow again is back in rotation soon after; a broken model costs a
# load per try.
RETRY_MAX_SECONDS = 30.0
# Errors of the database that say "the record cannot be read now".
DATABASE_ERRORS = (SQLAlchemyError, FeatureStoreUnavailable, OSError)
# The model-side failures that leave a replica on its old model.
APPLY_ERRORS = (ModelNotFound, ModelRefused, ReloadNotPropagated, ReloadSuperseded, ValueError)


class RecordUnavailable(RuntimeError):
    """The record could not be written: the other replicas would not follow."""


def replica_identity() -> str:
    """Host name plus this server's "<pid>-<start time>": stable for the life of the server
    (every worker computes the same), new when it restarts."""
    return f"{socket.gethostname()}/{process_identity(os.getppid())}"[:REPLICA_ID_LENGTH]


def readiness_problem(state_dir: Path, stale_seconds: float, now: float | None = None):
    """Why this replica must leave its balancer's rotation, or None. Read by every worker
    from what the following worker wrote."""
    state = read_json(Path(state_dir) / STATE_FILE)
    if not state:
        return None  # not polled yet: the model loaded at start is the record's
    now = time.time() if now is None else now
    unread = now - state["checked_at"]
    if unread > stale_seconds:
        why = state.get("problem") or "the replica's follower has stalled"
        return (
            f"the desired-model record has not been read for {unread:.0f}s "
            f"(bound {stale_seconds:.0f}s): {why}"
        )
    behind_since = state.get("behind_since")
    if behind_since is not None and now - behind_since > stale_seconds:
        why = state.get("problem") or f"it still serves {state.get('serving')}"
        return (
            f"the record names {state.get('desired')}, and for {now - behind_since:.0f}s "
            f"(bound {stale_seconds:.0f}s) this replica has not served it: {why}"
        )
    return None


class ReplicaFollower:
    """This worker's side of the replicas' agreement (every worker has one; the one that
    holds the lock follows and reports)."""

    def __init__(
        self,
        model_sync: ModelSync,
        database_url: str,
        *,
        poll_seconds: float,
        stale_seconds: float,
        bento_tag: str | None,
        replica_id: str | None = None,
    ) -> None:
        self.model_sync = model_sync
        self.poll_seconds = poll_seconds
        self.stale_seconds = stale_seconds
        self.bento_tag = bento_tag
        self.replica_id = replica_id or replica_identity()
        self.hostname = socket.gethostname()
        self._database_url = database_url
        self._engine: Engine | None = None
        self._tables_checked = False
        self._lock_file: IO[str] | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._follow_once,), daemon=True),
            threading.Thread(target=self._loop, args=(self._heartbeat_once,), daemon=True),
        ]
        # What the follower found (the heartbeat thread reads it).
        self._checked_at = time.time()
        self._desired: str | None = None
        self._behind_since: float | None = None
        self._problem: str | None = None
        self._challenger_problem: str | None = None
        self._retry: dict[str, tuple[int, float, str]] = {}  # key -> (failures, next try, why)
        self._agreed_tag = model_sync.served.current.tag
        self._agreed_challenger: dict | None = None

    @property
    def state_path(self) -> Path:
        return self.model_sync.state_dir / STATE_FILE

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self._database_url)
        return self._engine

    @staticmethod
    def recorded_tag(database_url: str) -> str | None:
        """The record's model, read once as a replica starts (None when there is none or
        the database does not answer: the replica then starts on its configured model and
        the follower swaps when it can read the record)."""
        engine = make_engine(database_url)
        try:
            record = model_record.read_desired(engine)
        except DATABASE_ERRORS as error:
            logger.warning("cannot read the desired-model record at start: %s", error)
            return None
        finally:
            engine.dispose()
        return record.model_tag if record else None

    @staticmethod
    def publish_pin(database_url: str, tag: str) -> None:
        """Make the model a replica was started with (CREDIT_API_MODEL_TAG, loaded and
        smoke-tested) every replica's, now or never: published later, once the database
        answers again, it would undo a deploy made meanwhile. Not published, the pin serves
        until the replica reads the record."""
        engine = make_engine(database_url)
        try:
            model_record.publish_model(engine, tag, replica_identity())
        except DATABASE_ERRORS as error:
            logger.warning("the pinned model %s is not published to the replicas: %s", tag, error)
        finally:
            engine.dispose()

    def start(self) -> None:
        global _follower
        _follower = self  # this worker's /readyz asks it
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop following; the leader removes the replica's row so no deploy waits for it."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(10)
        if self._lock_file is not None:
            try:
                model_record.forget_replica(self.engine(), self.replica_id)
            except DATABASE_ERRORS as error:
                logger.warning("cannot remove replica %s's row: %s", self.replica_id, error)
            self._lock_file.close()
            self._lock_file = None
        if self._engine is not None:
            self._engine.dispose()

    def readiness_problem(self) -> str | None:
        return readiness_problem(self.model_sync.state_dir, self.stale_seconds)

    # --- the admin routes of any worker --------------------------------------------------

    def publish_model(self, tag: str) -> None:
        """Write the record for a reload (before any worker swaps)."""
        try:
            model_record.publish_model(self.engine(), tag, self.replica_id)
        except DATABASE_ERRORS as error:
            raise RecordUnavailable(
                f"cannot write the desired-model record, so the other replicas would not "
                f"follow; nothing changed: {error}"
            ) from error

    def publish_challenger(self, spec: ChallengerSpec | None) -> None:
        try:
            model_record.publish_challenger(
                self.engine(),
                spec.as_dict() if spec else None,
                self.model_sync.served.current.tag,
                self.replica_id,
            )
        except DATABASE_ERRORS as error:
            raise RecordUnavailable(
                f"cannot write the desired-model record, so the other replicas would not "
                f"follow; nothing changed: {error}"
            ) from error

    def report(self) -> None:
        """Write the replica's heartbeat now (after a reload, so a deploy waits no poll)."""
        model_record.heartbeat(self.engine(), self._state())

    # --- the following worker ------------------------------------------------------------

    def _loop(self, step) -> None:
        # The first step waits a poll: a replica starts on the record's model already, and
        # its prediction log creates the tables (these two with them) meanwhile.
        while not self._stop.wait(self.poll_seconds):
            if self._lead():
                try:
                    step()
                except Exception:  # never let a follower die: the next poll retries
                    logger.exception("replica %s: %s failed", self.replica_id, step.__name__)

    def _lead(self) -> bool:
        """Whether this worker follows for the replica (the first to lock; the next one
        takes over when it dies, as the kernel drops its lock)."""
        if self._lock_file is not None:
            return True
        handle = open(self.model_sync.state_dir / LEADER_LOCK, "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        logger.info("worker %s follows the desired-model record", os.getpid())
        return True

    def _heartbeat_once(self) -> None:
        try:
            self.report()
        except DATABASE_ERRORS as error:
            logger.warning("replica %s cannot report: %s", self.replica_id, error)

    def _follow_once(self) -> None:
        now = time.time()
        try:
            record = self._read_record()
        except DATABASE_ERRORS as error:
            self._problem = f"cannot read the desired-model record: {error}"
            logger.warning("replica %s %s", self.replica_id, self._problem)
            self._write_state()
            return
        self._checked_at = now
        self._desired = record.model_tag
        self._problem = self._follow_model(record.model_tag)
        self._challenger_problem = self._follow_challenger(record.challenger)
        if self._agreed() == record.model_tag:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = now
        self._write_state()

    def _read_record(self) -> model_record.DesiredModel:
        engine = self.engine()
        if not self._tables_checked:
            # Normally the prediction log created every table by now; take the schema lock
            # (which the log's writer waits for) only when these two are missing.
            try:
                model_record.read_desired(engine)
            except SQLAlchemyError:
                model_record.create_record_tables(engine)
            model_record.forget_silent_replicas(engine)
            self._tables_checked = True
        record = model_record.read_desired(engine)
        if record is None:  # the first replica: its model is the agreement
            model_record.publish_model_if_absent(
                engine, self.model_sync.served.current.tag, self.replica_id
            )
            record = model_record.read_desired(engine)
        return record

    def _retry_due(self, key: str) -> str | None:
        """None when `key` may be tried now, else why it failed last time."""
        failures = self._retry.get(key)
        if failures is None or time.time() >= failures[1]:
            return None
        return failures[2]

    def _failed(self, key: str, why: str) -> str:
        count = self._retry.get(key, (0, 0.0, ""))[0] + 1
        cap = min(RETRY_MAX_SECONDS, max(self.poll_seconds, self.stale_seconds / 4))
        pause = min(cap, self.poll_seconds * 2 ** (count - 1))
        self._retry[key] = (count, time.time() + pause, why)
        logger.error("replica %s: %s (next try in %.0fs)", self.replica_id, why, pause)
        return why

    def _follow_model(self, tag: str) -> str | None:
        """Swap every worker to `tag` when the replica agreed on another; the reason when it
        cannot (yet)."""
        key = f"model:{tag}"
        if self.model_sync.desired_tag() == tag:
            self._retry.pop(key, None)
            refused = [w for w in self.model_sync.workers() if w.failed_tag == tag]
            return (
                f"worker {refused[0].pid} cannot load {tag}: {refused[0].error}"
                if refused
                else None
            )
        waiting = self._retry_due(key)
        if waiting is not None:
            return waiting
        try:
            previous, current = self.model_sync.reload(tag)
        except APPLY_ERRORS as error:
            return self._failed(key, f"cannot serve {tag}: {error}")
        self._retry.pop(key, None)
        logger.info(
            "replica %s follows the record: %s -> %s", self.replica_id, previous.tag, current.tag
        )
        return None

    def _follow_challenger(self, wanted: dict | None) -> str | None:
        """Attach the record's shadow or canary (or detach) when this replica runs another;
        a challenger that cannot attach is reported, but never makes the replica unready:
        the champion answers without it."""
        if self.model_sync.challengers is None:
            return None
        try:
            spec = ChallengerSpec.from_dict(wanted)
        except (KeyError, TypeError, ValueError) as error:
            return f"the record's challenger {wanted!r} is malformed: {error}"
        if self.model_sync.desired_challenger() == spec:
            return None
        key = f"challenger:{spec.as_dict() if spec else None}"
        waiting = self._retry_due(key)
        if waiting is not None:
            return waiting
        try:
            self.model_sync.set_challenger(spec)
        except APPLY_ERRORS as error:
            return self._failed(key, f"cannot attach the challenger {spec}: {error}")
        self._retry.pop(key, None)
        return None

    def _agreed(self) -> str:
        """The model every live worker of the replica serves (the last such while they
        disagree, mid-swap)."""
        states = self.model_sync.workers()
        tags = {state.tag for state in states}
        if len(tags) == 1:
            self._agreed_tag = tags.pop()
            challengers = [state.challenger for state in states]
            if all(challenger == challengers[0] for challenger in challengers):
                self._agreed_challenger = challengers[0]
        return self._agreed_tag

    def _write_state(self) -> None:
        write_json(
            self.state_path,
            {
                "checked_at": self._checked_at,
                "desired": self._desired,
                "serving": self._agreed_tag,
                "behind_since": self._behind_since,
                "problem": self._problem,
            },
        )

    def _state(self) -> model_record.ReplicaState:
        problems = [p for p in (self._problem, self._challenger_problem) if p]
        unready = self.readiness_problem()
        if unready:
            problems.insert(0, f"not ready: {unready}")
        return model_record.ReplicaState(
            replica_id=self.replica_id,
            hostname=self.hostname,
            bento_tag=self.bento_tag,
            model_tag=self._agreed(),
            challenger=self._agreed_challenger,
            desired_tag=self._desired,
            problem="; ".join(problems) or None,
            poll_seconds=self.poll_seconds,
            stale_seconds=self.stale_seconds,
        )


# The follower of this worker process, for the readiness middleware (set by `start`).
_follower: ReplicaFollower | None = None
# Set once this worker was told to stop and drains (`drain_on_sigterm`).
_draining = threading.Event()
DRAINING_REASON = "stopping: out of the balancer's rotation before the worker stops"


def drain_on_sigterm(seconds: float) -> bool:
    """Makes SIGTERM (`docker stop`, a scale-down) stop this worker only after `seconds` in
    which it serves as before but answers /readyz 503; returns whether it did.

    The workers of a replica accept on one listening socket that BentoML's supervisor
    (circus) holds open until every worker has exited. A worker that stopped accepting at
    once would leave a socket the kernel still completes connections on, with nobody to
    answer them: a balancer that had not yet noticed (its health checks come every few
    seconds) would send requests there that hang until the supervisor exits or is killed.
    With `seconds` longer than the balancer takes to mark the replica down, the replica
    leaves the rotation with every request it was sent answered, and only then does the
    worker stop accepting, finish what it holds and drain its prediction log.

    Call it in the running server (the service's start-up, on the main thread): uvicorn has
    installed its SIGTERM handler by then, and it is what this calls when the time is up. 0
    seconds leaves SIGTERM alone."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return False
    stop = signal.getsignal(signal.SIGTERM)
    if not callable(stop):
        return False

    def drain(signum: int) -> None:
        logger.warning("told to stop: /readyz answers 503 for %.1f s, then it stops", seconds)
        time.sleep(seconds)
        stop(signum, None)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if _draining.is_set():
            return
        _draining.set()
        threading.Thread(target=drain, args=(signum,), name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


class ReplicaReadiness:
    """Answers GET /readyz with 503 and the reason while the worker drains before it stops
    or the replica is past its bound; otherwise BentoML's own readiness answers (the
    prediction log's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == READYZ:
            follower = _follower
            if _draining.is_set():
                problem: str | None = DRAINING_REASON
            else:
                problem = follower.readiness_problem() if follower is not None else None
            if problem is not None:
                body = orjson.dumps({"ready": False, "reason": problem})
                headers = [(b"content-type", b"application/json")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def describe_replica(follower: ReplicaFollower | None) -> dict[str, Any] | None:
    """This replica as /metadata shows it."""
    if follower is None:
        return None
    return {
        "replica": follower.replica_id,
        "desired_model": (read_json(follower.state_path) or {}).get("desired"),
        "not_ready": follower.readiness_problem(),
    }
