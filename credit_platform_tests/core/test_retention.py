"""The retention rules on plain facts: what is in use is kept whatever its age, then the
newest N; the rest is deleted, and a deletion that fails is reported, not raised."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credit_platform.core import settings
from credit_platform.core.retention import (
    AWAITING_CHECK,
    CHAMPION,
    CHECK_GRACE,
    CURRENT_CODE,
    KEEP_ALL,
    PREVIOUS_BENTO,
    PREVIOUS_CHAMPION,
    ROLLBACK_TARGET,
    RUNNING_BENTO,
    BentosInUse,
    ModelsInUse,
    Stored,
    apply_plan,
    empty_trash,
    newest_reason,
    plan,
    plan_bentos,
    plan_models,
    remove_from_store,
    served_reason,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def make_undeletable(path: Path) -> bool:
    """Make a directory impossible to move or empty: immutable for root (who ignores
    permissions), read-only for anyone else. False where that cannot be done (a file system
    without immutable files)."""
    if os.geteuid() == 0:
        return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    path.chmod(0o500)
    return True


def make_deletable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o700)


@contextmanager
def undeletable(path: Path) -> Iterator[bool]:
    """`make_undeletable` while inside; yields whether it could be done."""
    blocked = make_undeletable(path)
    try:
        yield blocked
    finally:
        if blocked:
            make_deletable(path)


def _models(count: int, *, hours_apart: float = 30.0) -> list[Stored]:
    """m0 (oldest) .. m<count-1> (newest), each registered as MLflow version i + 1."""
    return [
        Stored(
            tag=f"{settings.MODEL_NAME}:m{index}",
            created=NOW - timedelta(hours=hours_apart * (count - index)),
            mlflow_version=str(index + 1),
        )
        for index in range(count)
    ]


def _tag(index: int) -> str:
    return f"{settings.MODEL_NAME}:m{index}"


def test_models_in_use_are_kept_whatever_their_age_then_the_newest_n():
    stored = _models(10)
    in_use = ModelsInUse(
        champion=_tag(5),
        previous_champion=_tag(1),
        rollback_target=_tag(2),
        served={_tag(5): "champion", _tag(0): "shadow", _tag(3): "canary"},
    )
    decided = plan_models(reversed(stored), in_use, keep_last=2, now=NOW)
    assert decided.kept == {
        _tag(9): [newest_reason(2)],
        _tag(8): [newest_reason(2)],
        _tag(5): [CHAMPION, served_reason("champion")],
        _tag(3): [served_reason("canary")],
        _tag(2): [ROLLBACK_TARGET],
        _tag(1): [PREVIOUS_CHAMPION],
        _tag(0): [served_reason("shadow")],
    }
    assert list(decided.kept) == [_tag(i) for i in (9, 8, 5, 3, 2, 1, 0)]  # newest first
    assert decided.deleted == [_tag(7), _tag(6), _tag(4)]


def test_a_protected_model_among_the_newest_takes_no_extra_place():
    """The newest N are counted over every model: the champion being new keeps no older
    model in its stead."""
    stored = _models(4)
    decided = plan_models(stored, ModelsInUse(champion=_tag(3)), keep_last=2, now=NOW)
    assert decided.kept == {_tag(3): [CHAMPION, newest_reason(2)], _tag(2): [newest_reason(2)]}
    assert decided.deleted == [_tag(1), _tag(0)]


def test_keep_last_zero_keeps_everything():
    stored = _models(4)
    decided = plan_models(stored, ModelsInUse(champion=_tag(1)), keep_last=0, now=NOW)
    assert decided.deleted == []
    assert decided.kept[_tag(1)] == [CHAMPION, KEEP_ALL]
    assert all(KEEP_ALL in reasons for reasons in decided.kept.values())
    with pytest.raises(ValueError, match="keep_last must be >= 0"):
        plan(stored, {}, keep_last=-1)


def test_a_young_model_without_a_verdict_is_kept_an_old_one_is_an_orphan():
    """Between its save and its quality check a model has no verdict; past the grace its
    run has failed and the model is not kept for that reason."""
    young = Stored(f"{settings.MODEL_NAME}:young", NOW - timedelta(minutes=5), "11")
    orphan = Stored(f"{settings.MODEL_NAME}:orphan", NOW - CHECK_GRACE - timedelta(1), "12")
    judged = Stored(f"{settings.MODEL_NAME}:judged", NOW - timedelta(minutes=10), "13")
    newest = Stored(f"{settings.MODEL_NAME}:newest", NOW - timedelta(minutes=1), "14")
    in_use = ModelsInUse(unjudged_versions=frozenset({"11", "12"}))
    decided = plan_models([young, orphan, judged, newest], in_use, keep_last=1, now=NOW)
    assert decided.kept == {newest.tag: [newest_reason(1)], young.tag: [AWAITING_CHECK]}
    assert decided.deleted == [judged.tag, orphan.tag]


def test_bentos_the_service_runs_the_code_builds_and_ran_before_are_kept():
    stored = [
        Stored(f"credit_score_service:b{index}", NOW - timedelta(days=10 - index))
        for index in range(6)
    ]
    in_use = BentosInUse(
        running="credit_score_service:b0",
        current_code="credit_score_service:b2",
        previous="credit_score_service:b1",
    )
    decided = plan_bentos(stored, in_use, keep_last=1)
    assert decided.kept == {
        "credit_score_service:b5": [newest_reason(1)],
        "credit_score_service:b2": [CURRENT_CODE],
        "credit_score_service:b1": [PREVIOUS_BENTO],
        "credit_score_service:b0": [RUNNING_BENTO],
    }
    assert decided.deleted == ["credit_score_service:b4", "credit_score_service:b3"]


def test_a_failed_deletion_is_reported_and_the_others_still_go():
    decided = plan_models(_models(4), ModelsInUse(), keep_last=1, now=NOW)
    gone = []

    def delete(tag: str) -> None:
        if tag == _tag(1):
            raise PermissionError(f"[Errno 1] Operation not permitted: '{tag}'")
        gone.append(tag)

    outcome = apply_plan(decided, delete)
    assert gone == outcome.deleted == [_tag(2), _tag(0)]
    assert list(outcome.failed) == [_tag(1)]
    assert outcome.failed[_tag(1)].startswith("PermissionError: [Errno 1]")


def test_the_setting_defaults_to_five_and_refuses_what_is_not_a_count(monkeypatch, tmp_path):
    for name in settings.embedded_defaults():  # fill_defaults below writes them: undo it
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path))
    assert settings.retention_keep_last() == settings.DEFAULT_RETENTION_KEEP_LAST == 5
    monkeypatch.setenv(settings.RETENTION_KEEP_LAST_ENV, "0")
    assert settings.retention_keep_last() == 0
    for bad in ("-1", "three", "2.5"):
        monkeypatch.setenv(settings.RETENTION_KEEP_LAST_ENV, bad)
        with pytest.raises(ValueError, match="CREDIT_RETENTION_KEEP_LAST must be a non-neg"):
            settings.retention_keep_last()
        with pytest.raises(ValueError, match="CREDIT_RETENTION_KEEP_LAST"):
            settings.fill_defaults()  # a process refuses to start with it


def _store_item(root: Path) -> Path:
    """`<root>/models/<name>/<version>` with a file and a folder of files, as BentoML lays
    an item out."""
    item = root / "models" / settings.MODEL_NAME / "v1"
    (item / "data").mkdir(parents=True)
    (item / "model.yaml").write_text("name: x\n")
    (item / "data" / "weights.bin").write_bytes(b"0" * 64)
    return item


def test_an_item_that_cannot_be_moved_out_stays_whole_in_the_store(tmp_path):
    item, trash = _store_item(tmp_path), tmp_path / "trash"
    with undeletable(item) as blocked:
        if not blocked:
            pytest.skip("this file system cannot make a directory undeletable for root")
        with pytest.raises(PermissionError):
            remove_from_store(item, trash)
    assert (item / "model.yaml").is_file() and (item / "data" / "weights.bin").is_file()
    assert list(trash.iterdir()) == []


def test_files_that_cannot_be_removed_leave_the_store_and_go_with_a_later_prune(tmp_path):
    item, trash = _store_item(tmp_path), tmp_path / "trash"
    if not make_undeletable(item / "data"):
        pytest.skip("this file system cannot make a directory undeletable for root")
    with pytest.raises(OSError, match="out of the store, but its files are left in"):
        remove_from_store(item, trash)
    assert not item.exists()  # the store no longer lists it
    (left,) = trash.iterdir()
    assert set(empty_trash(trash)) == {str(left)}  # still stuck, reported
    make_deletable(left / "data")
    assert empty_trash(trash) == {}
    assert list(trash.iterdir()) == []
