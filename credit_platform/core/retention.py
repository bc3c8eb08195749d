"""Retention of the BentoML store: which saved models and built Bentos may go.

Every training run saves a `credit_score_classifier` model and every change to the service
code builds a Bento; nothing else ever deletes them, so the store grows with every day
trained. The rule keeps what serves or may have to serve again at once, plus the newest
`keep_last` of each kind (CREDIT_RETENTION_KEEP_LAST; 0 keeps everything), and deletes the
rest:

- models: the MLflow champion; the previous champion (the model that served before the one
  serving now, which the rollback sensor redeploys, and the version the registry elects
  when the champion is rolled back); every model the service reports serving (champion,
  shadow, canary); a model whose training run may still be judging it (its MLflow version
  has no quality verdict yet and it is younger than `CHECK_GRACE`);
- Bentos: the one the service runs, the one the code here builds to (the next deploy or
  restart runs it), and the one that ran before the one running now.

The decision (`plan_models`, `plan_bentos`) is pure, so its rules are tested without a
store; `apply_plan` carries it out one item at a time and reports what it could not delete
instead of raising, since it runs after a deploy that has already succeeded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from credit_platform.core.model_store import saved_models
from credit_platform.core.settings import export_bentoml_home

# A model saved this recently without a quality verdict may be between its save and its
# check in a training run still going; after that it is an orphan of a failed run.
CHECK_GRACE = timedelta(hours=24)
TRASH_DIR = "retention-trash"

# Why an item is kept (the `retention_kept` metadata names every reason that applies).
CHAMPION = "MLflow champion"
PREVIOUS_CHAMPION = "previous champion (served before the one serving now)"
ROLLBACK_TARGET = "previous champion (the version a rollback of the champion elects)"
AWAITING_CHECK = "awaiting its quality check"
RUNNING_BENTO = "the Bento the service runs"
CURRENT_CODE = "the Bento of the current service code"
PREVIOUS_BENTO = "the Bento that ran before the one running now"
KEEP_ALL = "retention off (keep last 0)"


def served_reason(role: str) -> str:
    return f"served now as {role}"


def newest_reason(keep_last: int) -> str:
    return f"among the newest {keep_last}"


@dataclass(frozen=True)
class Stored:
    """A model or Bento in the store."""

    tag: str
    created: datetime  # timezone-aware, as BentoML records it
    mlflow_version: str | None = None  # the registered version a training run made


@dataclass(frozen=True)
class ModelsInUse:
    """What the platform may serve at once; every tag is a full BentoML model tag."""

    champion: str | None = None
    previous_champion: str | None = None
    rollback_target: str | None = None
    served: Mapping[str, str] = field(default_factory=dict)  # tag -> role
    unjudged_versions: frozenset[str] = frozenset()  # MLflow versions without a verdict


@dataclass(frozen=True)
class BentosInUse:
    running: str | None = None
    current_code: str | None = None
    previous: str | None = None


@dataclass(frozen=True)
class Plan:
    """Kept tags with their reasons and the tags to delete, each newest first."""

    kept: dict[str, list[str]]
    deleted: list[str]


def plan(stored: Iterable[Stored], protected: Mapping[str, Sequence[str]], keep_last: int) -> Plan:
    """Keep the protected items and the newest `keep_last` (all when 0); delete the rest."""
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, not {keep_last}")
    ordered = sorted(stored, key=lambda item: item.created, reverse=True)
    kept: dict[str, list[str]] = {}
    for rank, item in enumerate(ordered):
        reasons = list(protected.get(item.tag, ()))
        if keep_last == 0:
            reasons.append(KEEP_ALL)
        elif rank < keep_last:
            reasons.append(newest_reason(keep_last))
        if reasons:
            kept[item.tag] = reasons
    return Plan(kept=kept, deleted=[item.tag for item in ordered if item.tag not in kept])


def plan_models(
    stored: Iterable[Stored], in_use: ModelsInUse, keep_last: int, now: datetime
) -> Plan:
    """Which saved models to keep (and why) and which to delete (see the module docstring)."""
    stored = list(stored)
    protected: dict[str, list[str]] = {}

    def protect(tag: str | None, reason: str) -> None:
        if tag:
            protected.setdefault(tag, []).append(reason)

    protect(in_use.champion, CHAMPION)
    protect(in_use.previous_champion, PREVIOUS_CHAMPION)
    protect(in_use.rollback_target, ROLLBACK_TARGET)
    for tag, role in in_use.served.items():
        protect(tag, served_reason(role))
    for item in stored:
        if item.mlflow_version in in_use.unjudged_versions and now - item.created < CHECK_GRACE:
            protect(item.tag, AWAITING_CHECK)
    return plan(stored, protected, keep_last)


def plan_bentos(stored: Iterable[Stored], in_use: BentosInUse, keep_last: int) -> Plan:
    """Which built Bentos to keep (and why) and which to delete."""
    protected: dict[str, list[str]] = {}
    for tag, reason in (
        (in_use.running, RUNNING_BENTO),
        (in_use.current_code, CURRENT_CODE),
        (in_use.previous, PREVIOUS_BENTO),
    ):
        if tag:
            protected.setdefault(tag, []).append(reason)
    return plan(stored, protected, keep_last)


@dataclass(frozen=True)
class Outcome:
    deleted: list[str]
    failed: dict[str, str]  # tag -> why it could not be deleted


def apply_plan(decided: Plan, delete: Callable[[str], None]) -> Outcome:
    """Delete the plan's items one by one; a failure (permission, a file in use, gone
    meanwhile) is recorded with its reason and the others still go."""
    deleted: list[str] = []
    failed: dict[str, str] = {}
    for tag in decided.deleted:
        try:
            delete(tag)
        except Exception as error:  # any failure is reported, never raised: see docstring
            failed[tag] = f"{type(error).__name__}: {error}"
        else:
            deleted.append(tag)
    return Outcome(deleted=deleted, failed=failed)


def stored_models() -> list[Stored]:
    """Every saved `credit_score_classifier` with the MLflow version its run registered."""
    return [
        Stored(
            tag=str(model.tag),
            created=model.info.creation_time,
            mlflow_version=_text(model.info.metadata.get("mlflow_model_version")),
        )
        for model in saved_models()
    ]


def stored_bentos(name: str) -> list[Stored]:
    """Every built Bento of the service `name`."""
    export_bentoml_home()
    import bentoml

    try:
        bentos = bentoml.bentos.list(name)
    except bentoml.exceptions.NotFound:
        return []
    return [Stored(tag=str(bento.tag), created=bento.info.creation_time) for bento in bentos]


def delete_model(tag: str) -> None:
    export_bentoml_home()
    import bentoml

    remove_from_store(Path(bentoml.models.get(tag).path), trash_dir())


def delete_bento(tag: str) -> None:
    export_bentoml_home()
    import bentoml

    remove_from_store(Path(bentoml.bentos.get(tag).path), trash_dir())


def trash_dir() -> Path:
    """Where deleted items wait for their files to be removed: in the BentoML home, on the
    store's file system, so moving an item there is one rename."""
    return export_bentoml_home() / TRASH_DIR


def remove_from_store(path: Path, trash: Path) -> None:
    """Delete one store item (`<store>/<name>/<version>`) so that a failure leaves the store
    whole. BentoML's own delete removes the files in place, and one it cannot remove leaves
    a version without its `model.yaml` that makes every later listing of the name fail. Here
    the item is first renamed out of the store (a refusal changes nothing); BentoML repoints
    the name's `latest` by itself when it finds the version gone; then the files are
    removed, and any left are retried by `empty_trash`."""
    trash.mkdir(parents=True, exist_ok=True)
    moved = trash / f"{path.parent.parent.name}-{path.parent.name}-{path.name}"
    path.rename(moved)
    try:
        shutil.rmtree(moved)
    except OSError as error:
        raise OSError(
            f"out of the store, but its files are left in {moved} (the next prune retries): {error}"
        ) from error


def empty_trash(trash: Path) -> dict[str, str]:
    """Remove what earlier deletions left in the trash; returns path -> why it stays."""
    left: dict[str, str] = {}
    for item in sorted(trash.iterdir()) if trash.is_dir() else []:
        try:
            shutil.rmtree(item)
        except OSError as error:
            left[str(item)] = f"{type(error).__name__}: {error}"
    return left


def _text(value: object) -> str | None:
    return None if value is None else str(value)
