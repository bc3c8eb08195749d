"""One model for every worker of a service: a reload received by one worker reaches all.

BentoML runs each worker in its own process, and `/admin/reload` lands on one of them.
The workers of one server (same parent process) share a small state directory:

- `desired.json` — the tag every worker must serve, written (atomically) by the worker
  that accepted a reload, after it loaded and smoke-tested the model itself;
- `worker-<pid>.json` — what each worker serves now (and a tag it failed to load, if any);
- `shadow-<pid>.json` — each worker's shadow counters, summed in `/metadata`.

Each worker polls `desired.json` (a stat every `poll_seconds`) and swaps off the request
path when it changes. The reloading worker answers only once every live worker reports the
new tag, so after a 200 every worker serves it and `/metadata` agrees whichever answers.
A worker that starts later (or is restarted) loads the desired tag, not its start tag.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from api.challengers import ChallengerSlot, ChallengerSpec, add_shadow_stats
from api.predictor import ModelNotFound, ModelRefused, Predictor, ServedModel
from credit_platform.core.processes import pid_alive, process_identity

logger = logging.getLogger(__name__)

DESIRED_FILE = "desired.json"
CHALLENGER_FILE = "challenger.json"  # the attached shadow or canary, {"tag": null} for none
SHADOW_STATS_PREFIX = "shadow-"  # shadow-<pid>.json: a worker's shadow counters
_WORKER_FILE = re.compile(r"^worker-(\d+)\.json$")
_STATE_DIR = re.compile(r"^api-workers-(\d+-\d+)$")


class ReloadNotPropagated(RuntimeError):
    """The reloading worker swapped, but not every worker followed in time."""


class ReloadSuperseded(RuntimeError):
    """A concurrent reload to another tag won while this one waited."""


@dataclass(frozen=True)
class WorkerState:
    pid: int
    tag: str
    failed_tag: str | None = None
    error: str | None = None
    challenger: dict | None = None  # the spec this worker's challenger runs under
    challenger_failed: dict | None = None  # a spec this worker could not attach
    challenger_error: str | None = None


def write_json(path: Path, payload: dict) -> None:
    """Write-then-rename, so a reader sees the old content or the new, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove_dead_state_dirs(run_dir: Path) -> None:
    """State directories of servers that are gone (their identity is in the name)."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        match = _STATE_DIR.match(path.name)
        if match:
            pid = int(match.group(1).split("-")[0])
            if not pid_alive(pid) or process_identity(pid) != match.group(1):
                shutil.rmtree(path, ignore_errors=True)


class ModelSync:
    """This worker's side of the agreement; `start()` begins following `desired.json`."""

    def __init__(
        self,
        served: ServedModel,
        state_dir: Path,
        poll_seconds: float = 0.1,
        challengers: ChallengerSlot | None = None,
    ) -> None:
        self.served = served
        self.challengers = challengers
        self._challenger_failed: tuple[dict, str] | None = None
        self.state_dir = Path(state_dir)
        self.poll_seconds = poll_seconds
        self.pid = os.getpid()
        self._lock = threading.Lock()  # one swap at a time in this process
        self._stop = threading.Event()
        self._failed: tuple[str, str] | None = None
        self._seen: tuple | None = None
        self._thread = threading.Thread(target=self._follow, name="model-sync", daemon=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def desired_path(self) -> Path:
        return self.state_dir / DESIRED_FILE

    @property
    def challenger_path(self) -> Path:
        return self.state_dir / CHALLENGER_FILE

    def desired_challenger(self) -> ChallengerSpec | None:
        return ChallengerSpec.from_dict(read_json(self.challenger_path))

    @property
    def worker_path(self) -> Path:
        return self.state_dir / f"worker-{self.pid}.json"

    def desired_tag(self) -> str | None:
        return self.desired_in(self.state_dir)

    @staticmethod
    def desired_in(state_dir: Path) -> str | None:
        desired = read_json(Path(state_dir) / DESIRED_FILE)
        return desired.get("tag") if desired else None

    def join(self) -> None:
        """At start: adopt the tag the other workers agreed on, or make ours the agreement
        when this worker is the first. Then report and start following."""
        try:
            fd = os.open(self.desired_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps({"tag": self.served.current.tag}))
        self._apply_desired()
        self._apply_challenger()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.worker_path.unlink(missing_ok=True)
        self.shadow_stats_path.unlink(missing_ok=True)

    @property
    def shadow_stats_path(self) -> Path:
        """Where this worker's shadow scorer publishes its counters."""
        return self.state_dir / f"{SHADOW_STATS_PREFIX}{self.pid}.json"

    def shadow_totals(self, own: dict) -> dict:
        """The shadow's counters over every live worker of the server: this worker's own
        (current) plus what the others last published. A request reaches one worker, so a
        single worker's counters are only its share of the traffic."""
        parts = [own]
        for state in self.workers():
            if state.pid != self.pid:
                other = read_json(self.state_dir / f"{SHADOW_STATS_PREFIX}{state.pid}.json")
                parts.append(other or {})
        return add_shadow_stats(parts)

    def workers(self) -> list[WorkerState]:
        """The live workers of this server and what each serves."""
        found = []
        for path in sorted(self.state_dir.iterdir()):
            match = _WORKER_FILE.match(path.name)
            if not match or not pid_alive(int(match.group(1))):
                continue
            state = read_json(path)
            if state:
                found.append(WorkerState(pid=int(match.group(1)), **state))
        return found

    # --- reload (the worker that received /admin/reload) ---------------------------------

    def reload(
        self,
        tag: str | None,
        timeout: float = 120.0,
        publish: Callable[[str], None] | None = None,
    ) -> tuple[Predictor, Predictor]:
        """Load and smoke-test here, publish, wait until every live worker serves it.
        `publish(tag)` runs once the model passed here and before any worker swaps (the
        other replicas' record); what it raises aborts the reload with nothing changed.
        Raises ModelNotFound/ModelRefused (nothing changed), ReloadSuperseded, or
        ReloadNotPropagated; a model another worker refuses is rolled back everywhere."""
        with self._lock:
            previous, current = self.served.reload(tag, before_swap=publish)
            write_json(self.desired_path, {"tag": current.tag})
            self._report()
        deadline = time.monotonic() + timeout
        while True:
            if self.desired_tag() != current.tag:
                raise ReloadSuperseded(
                    f"a concurrent reload to {self.desired_tag()} replaced {current.tag}"
                )
            states = self.workers()
            refused = [state for state in states if state.failed_tag == current.tag]
            if refused:
                self._roll_back(previous.tag)
                if publish is not None:
                    try:
                        publish(previous.tag)
                    except Exception:
                        logger.exception("cannot publish the rollback to %s", previous.tag)
                state = refused[0]
                raise ModelRefused(
                    f"worker {state.pid} could not load {current.tag}: {state.error}; "
                    f"every worker is back on {previous.tag}"
                )
            lagging = [state for state in states if state.tag != current.tag]
            if not lagging:
                return previous, current
            if time.monotonic() > deadline:
                raise ReloadNotPropagated(
                    f"{current.tag} is published, but after {timeout:.0f}s worker(s) "
                    + ", ".join(f"{state.pid} ({state.tag})" for state in lagging)
                    + " still serve another model"
                )
            time.sleep(0.02)

    def _roll_back(self, tag: str) -> None:
        with self._lock:
            write_json(self.desired_path, {"tag": tag})
            self.served.reload(tag)
            self._report()

    # --- following (every worker) --------------------------------------------------------

    def _report(self) -> None:
        state: dict = {"tag": self.served.current.tag}
        if self._failed is not None:
            state["failed_tag"], state["error"] = self._failed
        if self.challengers is not None:
            spec = self.challengers.spec
            state["challenger"] = spec.as_dict() if spec else None
            if self._challenger_failed is not None:
                state["challenger_failed"], state["challenger_error"] = self._challenger_failed
        write_json(self.worker_path, state)

    def _apply_desired(self) -> None:
        with self._lock:
            tag = self.desired_tag()
            already_failed = self._failed is not None and self._failed[0] == tag
            if tag and tag != self.served.current.tag and not already_failed:
                try:
                    previous, current = self.served.reload(tag)
                except (ModelNotFound, ModelRefused) as error:
                    logger.error("worker %s cannot serve %s: %s", self.pid, tag, error)
                    self._failed = (tag, str(error))
                else:
                    self._failed = None
                    logger.info(
                        "worker %s follows the reload: %s -> %s",
                        self.pid,
                        previous.tag,
                        current.tag,
                    )
            self._report()

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rename is a new inode

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            seen = (self._stamp(self.desired_path), self._stamp(self.challenger_path))
            if seen == self._seen or seen[0] is None:
                continue
            self._seen = seen
            try:
                self._apply_desired()
                self._apply_challenger()
            except Exception:  # never let the follower die: the next change retries
                logger.exception("worker %s failed to follow the desired model", self.pid)

    # --- challenger (shadow or canary) ---------------------------------------------------

    def _apply_challenger(self) -> None:
        if self.challengers is None:
            return
        with self._lock:
            spec = self.desired_challenger()
            failed = self._challenger_failed
            if spec == self.challengers.spec or (
                failed is not None and spec is not None and failed[0] == spec.as_dict()
            ):
                return
            try:
                self.challengers.attach(spec)
            except (ModelNotFound, ModelRefused, ValueError) as error:
                logger.error("worker %s cannot attach %s: %s", self.pid, spec, error)
                self.challengers.refused(spec, error)
                self._challenger_failed = (spec.as_dict(), str(error))
            else:
                self._challenger_failed = None
            self._report()

    def set_challenger(
        self,
        spec: ChallengerSpec | None,
        timeout: float = 120.0,
        publish: Callable[[ChallengerSpec | None], None] | None = None,
    ) -> tuple[ChallengerSpec | None, ChallengerSpec | None]:
        """Attach `spec` (None detaches) here, publish it, and wait until every live worker
        runs it; returns (previous, new). `publish(spec)` runs once it attached here (the
        other replicas' record); what it raises detaches it again, nothing changed. Raises
        what `ChallengerSlot.attach` raises (nothing changed), ReloadSuperseded,
        ReloadNotPropagated, or ModelRefused when another worker cannot load it (every
        worker is then back on the previous challenger)."""
        if self.challengers is None:
            raise RuntimeError("this service has no challenger slot")
        with self._lock:
            previous = self.challengers.attach(spec)
            if publish is not None:
                try:
                    publish(spec)
                except BaseException:
                    self.challengers.attach(previous)
                    raise
            self._challenger_failed = None
            write_json(self.challenger_path, spec.as_dict() if spec else {"tag": None})
            self._report()
        wanted = spec.as_dict() if spec else None
        deadline = time.monotonic() + timeout
        while True:
            if self.desired_challenger() != spec:
                raise ReloadSuperseded(f"a concurrent change replaced the challenger {spec}")
            states = self.workers()
            refused = [state for state in states if state.challenger_failed == wanted]
            if wanted is not None and refused:
                with self._lock:
                    write_json(
                        self.challenger_path, previous.as_dict() if previous else {"tag": None}
                    )
                    self.challengers.attach(previous)
                    self._report()
                raise ModelRefused(
                    f"worker {refused[0].pid} could not attach {spec.tag}: "
                    f"{refused[0].challenger_error}; the previous challenger stays"
                )
            if all(state.challenger == wanted for state in states):
                return previous, spec
            if time.monotonic() > deadline:
                raise ReloadNotPropagated(
                    f"challenger {spec} is published, but after {timeout:.0f}s not every "
                    "worker runs it"
                )
            time.sleep(0.02)
