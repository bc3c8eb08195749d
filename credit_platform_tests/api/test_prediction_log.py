"""The group-commit prediction log on SQLite and MariaDB: shared commits, answers only after
durability, spool while the database is down, replay exactly once, drain on close."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine, make_url

from api.prediction_log import (
    BULK_LANE,
    SPOOL_PREFIX,
    LoggedAnswer,
    PredictionLogClosed,
    PredictionLogger,
    PredictionLogRow,
    PredictionLogUnavailable,
    RequestConflict,
)
from credit_platform.core.db import SchemaMismatch, init_schema, make_engine
from credit_platform.core.schema import credit_predictions_api_log as log_table
from credit_platform_tests.harness import TcpProxy


def database_down(log: PredictionLogger) -> bool:
    """Whether the writer currently counts its database as unreachable (and spools)."""
    return log._database_down


def make_row(request_id: str, confidence: float = 0.5) -> PredictionLogRow:
    return PredictionLogRow(
        request_id=request_id,
        customer_id="CUS_0x1",
        features={"age": 35, "occupation": None, "annual_income": 1234.5},
        prediction="Standard",
        confidence=confidence,
        elapsed_ms=0.2,
        model_version="credit_score_classifier:test",
        created_at=datetime(2025, 1, 15, 12, 0, 0, 123456),
    )


def logged_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(log_table.c.request_id)).scalars())
    finally:
        engine.dispose()


def unreachable_url() -> str:
    """A MariaDB URL on a local port nobody listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"mysql+pymysql://root:@127.0.0.1:{port}/mlops"


@pytest.fixture
def log_store(store_url: str) -> Iterator[str]:
    init_schema(store_url).dispose()
    yield store_url


@pytest.fixture
def commit_counter() -> Iterator[list[int]]:
    """Counts committed transactions on every engine in this process."""
    commits = [0]

    def count(_connection) -> None:
        commits[0] += 1

    event.listen(Engine, "commit", count)
    yield commits
    event.remove(Engine, "commit", count)


def test_group_commit_shares_transactions_and_answers_after_commit(
    log_store: str, tmp_path: Path, commit_counter: list[int]
) -> None:
    log = PredictionLogger(log_store, tmp_path / "spool")
    try:
        # Answer-after-commit: once a future resolves, another connection sees the row.
        for number in range(3):
            log.write([make_row(f"sync-{number}")])
            assert f"sync-{number}" in logged_ids(log_store)

        commit_counter[0] = 0
        futures = []
        lock = threading.Lock()

        def client(worker: int) -> None:
            for number in range(250):
                future = log.submit([make_row(f"w{worker}-{number}")])
                with lock:
                    futures.append(future)

        threads = [threading.Thread(target=client, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for future in futures:
            future.result(timeout=30)
    finally:
        log.close()

    ids = logged_ids(log_store)
    assert len(ids) == 2003 == len(set(ids))
    # One commit per row would be 2,000; group commit needs a handful (500 rows each at most).
    assert 4 <= commit_counter[0] <= 100
    assert log.stats.spooled_rows == 0


def test_close_drains_every_queued_row(log_store: str, tmp_path: Path) -> None:
    log = PredictionLogger(log_store, tmp_path / "spool", max_wait_seconds=0.05)
    futures = [log.submit([make_row(f"drain-{number}")]) for number in range(1500)]
    log.close()

    assert all(future.done() and future.exception() is None for future in futures)
    assert len(logged_ids(log_store)) == 1500
    with pytest.raises(PredictionLogClosed):
        log.submit([make_row("too-late")])


def test_same_request_id_is_logged_once(log_store: str, tmp_path: Path) -> None:
    log = PredictionLogger(log_store, tmp_path / "spool")
    try:
        assert log.write([make_row("dup", 0.4)]) is None
        # A retried request: the same rows again answer what the log holds.
        (again,) = log.write([make_row("dup", 0.9)])
        assert again == LoggedAnswer("Standard", 0.4, "credit_score_classifier:test")
        # Another body under a logged id is a conflict, not a silently dropped row.
        with pytest.raises(RequestConflict, match="dup"):
            log.write([replace(make_row("dup"), customer_id="CUS_0x2")])
        with pytest.raises(RequestConflict):
            log.write([replace(make_row("dup"), features={"age": 36})])
        # Twice in one group commit: the first is logged, the second gets its answer.
        first = log.submit([make_row("twin", 0.1)])
        second = log.submit([make_row("twin", 0.2)])
        other = log.submit([make_row("neighbour", 0.3)])
        assert first.result(timeout=30) is None and other.result(timeout=30) is None
        assert second.result(timeout=30) == [
            LoggedAnswer("Standard", 0.1, "credit_score_classifier:test")
        ]
    finally:
        log.close()

    assert sorted(logged_ids(log_store)) == ["dup", "neighbour", "twin"]
    engine = make_engine(log_store)
    with engine.connect() as connection:
        kept = connection.execute(
            select(log_table.c.confidence).where(log_table.c.request_id == "dup")
        ).scalar_one()
    engine.dispose()
    assert kept == pytest.approx(0.4)  # the first write wins, the retry changes nothing


def test_outage_spools_with_fsync_then_replays_every_row_exactly_once(
    log_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr("api.prediction_log.os.fsync", recording_fsync)

    down = PredictionLogger(unreachable_url(), spool_dir, retry_interval_seconds=60)
    try:
        for number in range(30):
            rows = [make_row(f"outage-{number}-{part}") for part in range(10)]
            down.write(rows, timeout=30)
            # Answered only once the rows are in the spool file and synced to disk.
            spooled = down.spool_path.read_text().splitlines()
            assert {row.request_id for row in rows} <= {
                PredictionLogRow.from_json(line).request_id for line in spooled
            }
            assert synced and synced[-1] == str(down.spool_path)
        assert database_down(down)
    finally:
        down.close()
    assert down.stats.spooled_rows == 300 and down.stats.committed_rows == 0
    spool_copy = tmp_path / "spool-copy.jsonl"
    shutil.copy(down.spool_path, spool_copy)

    back = PredictionLogger(log_store, spool_dir)  # the database is reachable again
    back.close()
    ids = logged_ids(log_store)
    assert len(ids) == 300 == len(set(ids))
    assert back.stats.replayed_rows == 300
    assert not down.spool_path.exists()

    # A crash after the commit but before the spool was removed: the replay repeats.
    shutil.copy(spool_copy, down.spool_path)
    again = PredictionLogger(log_store, spool_dir)
    again.close()
    assert len(logged_ids(log_store)) == 300
    assert not down.spool_path.exists()


def test_creates_its_table_and_recovers_when_the_database_comes_back(
    mariadb_url: str, tmp_path: Path
) -> None:
    """Started while the database is down (fresh: no table yet), the log answers from the
    spool, keeps trying, creates the table once the server answers and replays every row."""
    url = make_url(mariadb_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306)
    proxy.cut()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    log = PredictionLogger(proxied, tmp_path / "spool", retry_interval_seconds=0.2)
    try:
        log.write([make_row(f"early-{number}") for number in range(50)])
        assert database_down(log) and log.spool_path.exists()
        assert log.problem is None  # an outage, not a configuration error

        proxy.restore()
        deadline = time.monotonic() + 15
        while database_down(log) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not database_down(log), "the writer never found the database back"
        log.write([make_row("late")])
    finally:
        log.close()
        proxy.close()

    ids = logged_ids(mariadb_url)
    assert sorted(ids) == sorted([f"early-{number}" for number in range(50)] + ["late"])
    assert not list((tmp_path / "spool").glob(f"{SPOOL_PREFIX}*"))


def test_creates_its_table_on_a_fresh_database(sqlite_url: str, tmp_path: Path) -> None:
    log = PredictionLogger(sqlite_url, tmp_path / "spool")
    log.write([make_row("first")])
    log.close()
    assert logged_ids(sqlite_url) == ["first"]
    assert log.stats.spooled_rows == 0


def test_replays_spools_left_by_dead_processes_but_not_live_ones(
    log_store: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(finished.stdout)
    dead_spool = spool_dir / f"{SPOOL_PREFIX}{dead_pid}.jsonl"
    lines = [make_row(f"orphan-{number}").to_json() for number in range(5)]
    # The killed process was cut short in the middle of its last line (never answered).
    dead_spool.write_text("\n".join(lines) + '\n{"request_id": "cut-sh')
    live_spool = spool_dir / f"{SPOOL_PREFIX}{os.getppid()}.jsonl"
    live_spool.write_text(make_row("still-being-written").to_json() + "\n")

    log = PredictionLogger(log_store, spool_dir)
    log.close()

    assert sorted(logged_ids(log_store)) == [f"orphan-{number}" for number in range(5)]
    assert not dead_spool.exists()
    assert live_spool.exists()  # its owner is alive and replays it itself


def test_replay_never_seals_over_a_spool_left_by_an_earlier_process_of_this_pid(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A restarted container often has the pid of the one that crashed mid-replay: the sealed
    file that process left is replayed, not overwritten by this process's own spool."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    left = spool_dir / f"{SPOOL_PREFIX}{os.getpid()}.1.jsonl"
    left.write_text(make_row("left-by-crash").to_json() + "\n")
    (spool_dir / f"{SPOOL_PREFIX}{os.getpid()}.jsonl").write_text(make_row("own").to_json() + "\n")

    log = PredictionLogger(sqlite_url, spool_dir)
    log.close()
    assert sorted(logged_ids(sqlite_url)) == ["left-by-crash", "own"]
    assert not list(spool_dir.glob(f"{SPOOL_PREFIX}*"))


def test_a_spool_another_worker_replayed_first_is_no_outage(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker finds a dead process's spool; the one that replays it second finds it
    gone, which must not count as a database failure."""
    gone = tmp_path / "spool" / f"{SPOOL_PREFIX}1.jsonl"
    monkeypatch.setattr(PredictionLogger, "_spool_files", lambda self: [gone])
    log = PredictionLogger(sqlite_url, tmp_path / "spool")
    try:
        assert log.write([make_row("after")]) is None
        assert not database_down(log) and log.stats.database_failures == 0
    finally:
        log.close()
    assert logged_ids(sqlite_url) == ["after"]


def test_row_round_trips_through_the_spool_format() -> None:
    row = make_row("round-trip", 0.625)
    assert PredictionLogRow.from_json(row.to_json()) == row


def test_logged_row_keeps_every_column(log_store: str, tmp_path: Path) -> None:
    row = make_row("columns", 0.8125)
    log = PredictionLogger(log_store, tmp_path / "spool")
    log.write([row])
    log.close()
    engine = make_engine(log_store)
    with engine.connect() as connection:
        stored = connection.execute(select(log_table)).mappings().one()
    engine.dispose()
    assert stored["request_id"] == row.request_id
    assert stored["customer_id"] == row.customer_id
    assert stored["features"] == row.features
    assert stored["prediction"] == row.prediction
    assert stored["confidence"] == pytest.approx(row.confidence)
    assert stored["elapsed_ms"] == pytest.approx(row.elapsed_ms)
    assert stored["model_version"] == row.model_version
    assert stored["created_at"] == row.created_at  # the request's time, not the insert's


REASONS = {
    "label": "Poor",
    "raw_score": 1.25,
    "base_value": -0.5,
    "reasons": [
        {
            "feature": "delay_from_due_date",
            "value": 45,
            "direction": "raises",
            "contribution": 1.0,
            "text": "Payments 45 days late on average (makes Poor more likely) \\ 'quoted'",
            "inputs": None,
        }
    ],
    "other_reasons": 0.75,
}


def test_reasons_are_logged_with_the_row_and_null_without(log_store: str, tmp_path: Path) -> None:
    explained = make_row("explained", 0.7)
    explained.reasons = REASONS
    plain = make_row("plain", 0.7)
    log = PredictionLogger(log_store, tmp_path / "spool")
    assert log.write([explained, plain]) is None
    log.close()
    engine = make_engine(log_store)
    with engine.connect() as connection:
        stored = dict(connection.execute(select(log_table.c.request_id, log_table.c.reasons)).all())
        nulls = connection.execute(
            select(log_table.c.request_id).where(log_table.c.reasons.is_(None))
        ).scalars()
        assert list(nulls) == ["plain"]  # SQL NULL, not the JSON text null
    engine.dispose()
    assert stored == {"explained": REASONS, "plain": None}
    assert PredictionLogRow.from_json(explained.to_json()) == explained


def test_a_retry_must_ask_for_the_same_explanation(log_store: str, tmp_path: Path) -> None:
    explained = make_row("retry-explained", 0.7)
    explained.reasons = REASONS
    log = PredictionLogger(log_store, tmp_path / "spool")
    try:
        assert log.write([explained]) is None
        (answer,) = log.write([explained])  # the same request again: the logged answer
        assert answer.reasons == REASONS and answer.prediction == "Standard"
        with pytest.raises(RequestConflict):
            log.write([make_row("retry-explained", 0.7)])  # without the explanation
        fewer = make_row("retry-explained", 0.7)
        fewer.reasons = {**REASONS, "reasons": []}
        with pytest.raises(RequestConflict):
            log.write([fewer])
    finally:
        log.close()


def test_a_row_the_database_refuses_fails_alone_and_logging_goes_on(
    log_store: str, tmp_path: Path
) -> None:
    log = PredictionLogger(log_store, tmp_path / "spool")
    try:
        poison = replace(make_row("poison"), features={"not JSON": {1, 2}})
        futures = [log.submit([make_row(f"good-{number}")]) for number in range(20)]
        refused = log.submit([poison])
        futures += [log.submit([make_row(f"after-{number}")]) for number in range(20)]

        with pytest.raises(PredictionLogUnavailable):
            refused.result(timeout=30)
        for future in futures:
            future.result(timeout=30)
        assert not database_down(log)
    finally:
        log.close()
    assert len(logged_ids(log_store)) == 40
    assert not log.spool_path.exists()


def test_replay_sets_aside_rows_the_database_refuses(sqlite_url: str, tmp_path: Path) -> None:
    init_schema(sqlite_url).dispose()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    spool = spool_dir / f"{SPOOL_PREFIX}{os.getpid()}.jsonl"
    refused = replace(make_row("no-label"), prediction=None)  # violates NOT NULL
    rows = [make_row("kept-1"), refused, make_row("kept-2")]
    spool.write_text("".join(row.to_json() + "\n" for row in rows))

    log = PredictionLogger(sqlite_url, spool_dir)
    log.close()

    assert sorted(logged_ids(sqlite_url)) == ["kept-1", "kept-2"]
    assert not spool.exists()
    (rejected,) = [json.loads(line) for line in log.rejected_path.read_text().splitlines()]
    assert rejected["row"]["request_id"] == "no-label"
    assert "NOT NULL" in rejected["error"]
    assert not database_down(log)  # one bad row does not stop the log


NASTY_TEXT = "it's \"quoted\" \\ back\\slash 100% %s %(x)s \x00 nul\nline ü 😀 '); DROP TABLE t; --"


@pytest.mark.parametrize("sql_mode", ["default", "NO_BACKSLASH_ESCAPES"])
def test_mariadb_literal_inserts_keep_every_character(
    mariadb_url: str, tmp_path: Path, sql_mode: str
) -> None:
    """On MariaDB rows go in as literal values the log renders itself: quotes, backslashes,
    percent signs, NUL and non-ASCII text must arrive unchanged, whatever the server's
    sql_mode says about backslashes."""
    init_schema(mariadb_url).dispose()
    url = mariadb_url
    if sql_mode != "default":
        url += "?init_command=" + quote(f"SET SESSION sql_mode = '{sql_mode}'")
    row = replace(
        make_row("nasty-1"),
        customer_id=NASTY_TEXT[:32],
        features={"text": NASTY_TEXT, "number": -1.5e-7, "count": 3, "missing": None},
        model_version=f"credit_score_classifier:{NASTY_TEXT}",
    )
    log = PredictionLogger(url, tmp_path / "spool")
    log.write([row, make_row("plain-2")])
    log.close()

    assert log.stats.committed_rows == 2 and log.stats.spooled_rows == 0
    engine = make_engine(mariadb_url)
    with engine.connect() as connection:
        stored = (
            connection.execute(select(log_table).where(log_table.c.request_id == "nasty-1"))
            .mappings()
            .one()
        )
    engine.dispose()
    assert stored["customer_id"] == row.customer_id
    assert stored["features"] == row.features
    assert stored["model_version"] == row.model_version
    assert stored["created_at"] == row.created_at


def test_large_batches_are_split_into_statements_of_one_transaction(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit_counter: list[int]
) -> None:
    import api.prediction_log as prediction_log

    init_schema(mariadb_url).dispose()
    monkeypatch.setattr(prediction_log, "MAX_STATEMENT_BYTES", 1_000)
    rows = [make_row(f"split-{number}") for number in range(40)]
    statements = prediction_log.mariadb_insert_statements(rows)
    assert len(statements) >= 8 and all(len(statement) <= 1_000 for statement in statements)

    log = PredictionLogger(mariadb_url, tmp_path / "spool", max_batch_rows=1_000)
    log.write([make_row("warm-up")])  # the table is checked before the first insert
    commits_before = commit_counter[0]
    log.write(rows)
    log.close()
    assert commit_counter[0] - commits_before == 1
    assert sorted(logged_ids(mariadb_url)) == sorted(["warm-up"] + [r.request_id for r in rows])


@pytest.mark.parametrize(
    "poison",
    [
        {"confidence": float("nan")},
        {"elapsed_ms": float("inf")},
        {"features": {"age": float("nan")}},
        {"customer_id": 12345},
        {"customer_id": "CUS_\ud800"},
        {"features": {"occupation": "\udfff"}},
    ],
    ids=[
        "nan confidence",
        "infinite elapsed",
        "nan feature",
        "number as customer id",
        "lone surrogate in a column",
        "lone surrogate in the features",
    ],
)
def test_a_row_that_cannot_be_stored_fails_alone_on_mariadb(
    mariadb_url: str, tmp_path: Path, poison: dict
) -> None:
    init_schema(mariadb_url).dispose()
    log = PredictionLogger(mariadb_url, tmp_path / "spool")
    try:
        good = log.submit([make_row("good-1")])
        refused = log.submit([replace(make_row("bad"), **poison)])
        with pytest.raises(PredictionLogUnavailable, match="refused"):
            refused.result(timeout=30)
        good.result(timeout=30)
        log.write([make_row("good-2")])
        assert not database_down(log)
    finally:
        log.close()
    assert sorted(logged_ids(mariadb_url)) == ["good-1", "good-2"]


# --- no database error is ever swallowed ---------------------------------------------------


def id_column_type(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                    "DATABASE() AND TABLE_NAME = 'credit_predictions_api_log' "
                    "AND COLUMN_NAME = 'id'"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_full_id_column_fails_requests_instead_of_losing_rows(
    mariadb_url: str, tmp_path: Path
) -> None:
    """Near the top of the id type, every request either has its row or gets an error:
    never an answer with no row."""
    init_schema(mariadb_url).dispose()
    column_type = id_column_type(mariadb_url)
    top = {"int": 2**31 - 1, "bigint": 2**63 - 1}[column_type]
    engine = make_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE credit_predictions_api_log AUTO_INCREMENT={top - 2}"))
    engine.dispose()

    log = PredictionLogger(mariadb_url, tmp_path / "spool", retry_interval_seconds=0.2)
    answered, refused = [], []
    try:
        for number in range(6):
            try:
                log.write([make_row(f"near-top-{number}")])
            except PredictionLogUnavailable as error:
                refused.append(str(error))
            else:
                answered.append(f"near-top-{number}")
        logged = sorted(logged_ids(mariadb_url))
        # Every row is refused now: not ready (the service's /readyz fails), saying why ...
        assert not log.ready and "id column is full" in (log.problem or "")
        engine = make_engine(mariadb_url)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE TABLE credit_predictions_api_log"))
        engine.dispose()
        # ... until the table takes rows again (found by a probe, with no request).
        deadline = time.monotonic() + 30
        while not log.ready and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.ready and log.problem is None
        assert logged_ids(mariadb_url) == []  # the probe row was rolled back
    finally:
        log.close()

    assert logged == answered  # every answer has its row
    assert len(answered) == 3 and len(refused) == 3
    assert "Out of range" in refused[0]
    assert column_type == "bigint"  # 2^31 rows is under a day at the batch rate


@pytest.mark.parametrize("sql_mode", ["server default", "lax"])
@pytest.mark.parametrize(
    "too_big",
    [
        {"customer_id": "C" * 40},
        {"prediction": "Standard-and-then-some"},
        {"model_version": "credit_score_classifier:" + "v" * 200},
        {"role": "champion-of-the-world"},
    ],
    ids=["customer_id", "prediction", "model_version", "role"],
)
def test_values_that_do_not_fit_are_refused_not_truncated(
    mariadb_url: str, tmp_path: Path, sql_mode: str, too_big: dict
) -> None:
    """Even on a server whose sql_mode is not strict, the log's sessions are: a value that
    does not fit fails its request instead of being stored cut short."""
    init_schema(mariadb_url).dispose()
    url = mariadb_url
    if sql_mode == "lax":
        url += "?init_command=" + quote("SET SESSION sql_mode = ''")
    log = PredictionLogger(url, tmp_path / "spool")
    try:
        with pytest.raises(PredictionLogUnavailable, match="refused"):
            log.write([replace(make_row("too-big"), **too_big)])
        log.write([make_row("fits")])
    finally:
        log.close()
    assert logged_ids(mariadb_url) == ["fits"]


def test_request_ids_are_case_sensitive_on_mariadb(mariadb_url: str, tmp_path: Path) -> None:
    init_schema(mariadb_url).dispose()
    log = PredictionLogger(mariadb_url, tmp_path / "spool")
    try:
        assert log.write([make_row("CaseTest-1")]) is None
        assert log.write([replace(make_row("casetest-1"), customer_id="CUS_0x2")]) is None
    finally:
        log.close()
    assert sorted(logged_ids(mariadb_url)) == ["CaseTest-1", "casetest-1"]


def test_a_conflicting_row_met_in_a_replay_is_set_aside(sqlite_url: str, tmp_path: Path) -> None:
    """While the database was down another worker answered other rows under a logged id:
    the replay keeps that row in the rejected file, and the identical one it skips."""
    init_schema(sqlite_url).dispose()
    log = PredictionLogger(sqlite_url, tmp_path / "spool")
    log.write([make_row("shared")])
    log.close()
    spool = tmp_path / "spool" / f"{SPOOL_PREFIX}{os.getpid()}.jsonl"
    spool.parent.mkdir(exist_ok=True)
    rows = [make_row("shared"), replace(make_row("shared"), customer_id="CUS_0x9"), make_row("new")]
    spool.write_text("".join(row.to_json() + "\n" for row in rows))

    log = PredictionLogger(sqlite_url, tmp_path / "spool")
    log.close()
    assert sorted(logged_ids(sqlite_url)) == ["new", "shared"]
    (rejected,) = [json.loads(line) for line in log.rejected_path.read_text().splitlines()]
    assert rejected["row"]["customer_id"] == "CUS_0x9" and "another request" in rejected["error"]


# --- outages at start, bad configuration, concurrent creation ------------------------------


def test_a_permanent_error_is_reported_and_rows_are_kept(mariadb_url: str, tmp_path: Path) -> None:
    """A bad password or a missing database is no outage: `problem` says so (the service's
    readiness fails on it), the rows wait in the spool, and they are replayed once fixed."""
    url = make_url(mariadb_url)
    wrong_password = url.set(password="not-the-password").render_as_string(hide_password=False)
    log = PredictionLogger(wrong_password, tmp_path / "spool-password")
    try:
        log.write([make_row("bad-password")])
        assert log.problem and "1045" in log.problem and "Access denied" in log.problem
        assert not log.ready and log.alive
    finally:
        log.close()

    missing = url.set(database=f"{url.database}_missing")
    log = PredictionLogger(
        missing.render_as_string(hide_password=False),
        tmp_path / "spool-database",
        retry_interval_seconds=0.2,
    )
    try:
        log.write([make_row("no-database")])
        assert log.problem and "1049" in log.problem and "Unknown database" in log.problem
        assert log.spool_path.exists()
        server = make_engine(url.set(database="").render_as_string(hide_password=False))
        with server.begin() as connection:
            connection.execute(text(f"CREATE DATABASE `{missing.database}` CHARACTER SET utf8mb4"))
        try:
            deadline = time.monotonic() + 15
            while (log.problem or database_down(log)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert log.problem is None and not database_down(log) and log.ready
            log.write([make_row("fixed")])
            log.close()
            assert sorted(logged_ids(missing.render_as_string(hide_password=False))) == [
                "fixed",
                "no-database",
            ]
        finally:
            with server.begin() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS `{missing.database}`"))
            server.dispose()
    finally:
        log.close()


def test_processes_starting_together_do_not_race_on_create_table(store_url: str) -> None:
    """Workers of one service create the schema at the same moment on a fresh database."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        try:
            init_schema(store_url).dispose()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]


# --- charset --------------------------------------------------------------------------------


@pytest.fixture
def latin1_url(mariadb_url: str) -> Iterator[str]:
    """A database whose default character set is latin1."""
    url = make_url(mariadb_url)
    name = f"{url.database}_latin1"
    server = make_engine(url.set(database="").render_as_string(hide_password=False))
    with server.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET latin1"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def test_a_latin1_database_still_stores_emoji_and_cjk(latin1_url: str, tmp_path: Path) -> None:
    customer = "顧客_😀_Ölçü"
    init_schema(latin1_url).dispose()
    log = PredictionLogger(latin1_url, tmp_path / "spool")
    log.write([replace(make_row("unicode"), customer_id=customer, features={"名前": "😀"})])
    log.close()
    engine = make_engine(latin1_url)
    with engine.connect() as connection:
        stored = connection.execute(select(log_table)).mappings().one()
    engine.dispose()
    assert stored["customer_id"] == customer
    assert stored["features"] == {"名前": "😀"}


def test_a_table_that_would_store_question_marks_is_refused(
    latin1_url: str, tmp_path: Path
) -> None:
    engine = make_engine(latin1_url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE customer_info (id VARCHAR(32) PRIMARY KEY, customer_id "
                 "VARCHAR(32) NOT NULL, date DATE NOT NULL, name VARCHAR(128), ssn VARCHAR(32))")
        )  # fmt: skip
    engine.dispose()
    with pytest.raises(SchemaMismatch, match=r"customer_info.*latin1.*CONVERT TO CHARACTER SET"):
        init_schema(latin1_url).dispose()
    log = PredictionLogger(latin1_url, tmp_path / "spool")
    log.write([make_row("kept")])  # answered from the spool
    log.close()
    assert log.problem and "customer_info" in log.problem
    assert log.spool_path.exists()


# --- a hung database -------------------------------------------------------------------------


def test_a_hung_database_delays_answers_by_the_timeout_only(
    mariadb_url: str, tmp_path: Path
) -> None:
    """The server stops answering (the proxy holds every byte): after timeout_seconds the
    rows go to the spool and the callers return; once it answers, the spool is replayed and
    every row is logged exactly once."""
    init_schema(mariadb_url).dispose()
    url = make_url(mariadb_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306)
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    log = PredictionLogger(
        proxied, tmp_path / "spool", timeout_seconds=0.5, retry_interval_seconds=0.5
    )
    try:
        log.write([make_row("before")])
        proxy.stall()
        waits = []
        for number in range(4):
            started = time.monotonic()
            futures = [log.submit([make_row(f"hung-{number}-{part}")]) for part in range(5)]
            for future in futures:
                assert future.result(timeout=30) is None
            waits.append(time.monotonic() - started)
        assert max(waits) < 2.5, waits  # the driver's own timeouts are 10 s
        assert log.stats.stalls >= 1 and log.stats.spooled_rows >= 20
        proxy.resume()
        deadline = time.monotonic() + 40
        while (database_down(log) or log.spool_path.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.write([make_row("after")])
    finally:
        log.close()
        proxy.close()
    expected = ["after", "before"] + [f"hung-{n}-{p}" for n in range(4) for p in range(5)]
    assert sorted(logged_ids(mariadb_url)) == sorted(expected)
    assert not list((tmp_path / "spool").glob(f"{SPOOL_PREFIX}*"))


# --- hardening (issue 22): idempotency, refused and slow writers, a full id column ----------


def batch_rows(request_id: str, count: int) -> list[PredictionLogRow]:
    return [
        replace(make_row(f"{request_id}#{position}"), customer_id=f"CUS_{position}")
        for position in range(count)
    ]


def test_a_shorter_batch_under_a_batch_id_is_a_conflict(log_store: str, tmp_path: Path) -> None:
    """A 1-row batch sent under the id of a 2-row batch is another request: 409, not the
    first row's logged answer."""
    log = PredictionLogger(log_store, tmp_path / "spool")
    try:
        assert log.write(batch_rows("pair", 2)) is None
        assert len(log.write(batch_rows("pair", 2))) == 2  # the same batch again
        with pytest.raises(RequestConflict, match="pair"):
            log.write(batch_rows("pair", 1))
        with pytest.raises(RequestConflict, match="pair"):
            log.write(batch_rows("pair", 3))
        assert log.write(batch_rows("single", 1)) is None
        assert len(log.write(batch_rows("single", 1))) == 1
    finally:
        log.close()
    assert sorted(logged_ids(log_store)) == ["pair#0", "pair#1", "single#0"]


def test_replay_keeps_the_first_request_under_an_id(sqlite_url: str, tmp_path: Path) -> None:
    """During an outage bodies A, B, A were answered under one id, B by another worker whose
    spool was replayed first: the log keeps A (the first request) and B goes to the
    rejected file, so neither answer is lost."""
    init_schema(sqlite_url).dispose()
    first_at = datetime(2025, 1, 15, 12, 0, 0)
    body_a = replace(make_row("abba"), created_at=first_at)
    body_b = replace(make_row("abba"), customer_id="CUS_0xB", created_at=first_at.replace(second=1))
    again_a = replace(body_a, created_at=first_at.replace(second=2), confidence=0.9)
    log = PredictionLogger(sqlite_url, tmp_path / "other-worker")
    log.write([body_b])
    log.close()
    spool = tmp_path / "spool" / f"{SPOOL_PREFIX}{os.getpid()}.jsonl"
    spool.parent.mkdir()
    spool.write_text("".join(row.to_json() + "\n" for row in (body_a, again_a)))

    log = PredictionLogger(sqlite_url, tmp_path / "spool")
    log.close()
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        kept = connection.execute(select(log_table).where(log_table.c.request_id == "abba")).one()
    engine.dispose()
    assert kept.customer_id == body_a.customer_id and kept.confidence == pytest.approx(0.5)
    (rejected,) = [json.loads(line) for line in log.rejected_path.read_text().splitlines()]
    assert rejected["row"]["customer_id"] == "CUS_0xB" and "first" in rejected["error"]
    assert not spool.exists()


@pytest.fixture
def shadow_refused_url(mariadb_url: str) -> str:
    """A log table whose trigger refuses shadow rows (SIGNAL: MariaDB error 1644, which the
    driver classifies as neither a constraint nor bad data)."""
    init_schema(mariadb_url).dispose()
    engine = make_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_shadow BEFORE INSERT ON credit_predictions_api_log "
                "FOR EACH ROW IF NEW.role = 'shadow' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no shadow rows here'; END IF"
            )
        )
    engine.dispose()
    return mariadb_url


def test_refused_shadow_rows_never_send_the_log_into_an_outage(
    shadow_refused_url: str, tmp_path: Path
) -> None:
    """Before: the refusal counted as an outage, every later row went to the spool and its
    replay failed on the shadow rows again (2 of 40 champion rows reached the database in
    20 s). Now the shadow rows fail alone and the champion rows are committed."""
    log = PredictionLogger(shadow_refused_url, tmp_path / "spool")
    try:
        futures = []
        for number in range(40):
            futures.append(log.submit([make_row(f"champion-{number}")]))
            if number % 10 == 0:
                shadow = replace(make_row(f"champion-{number}@shadow"), role="shadow")
                futures.append(log.submit([shadow]))
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30))
            except PredictionLogUnavailable as error:
                outcomes.append(error)
    finally:
        log.close()
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(refused) == 4 and all("no shadow rows here" in str(e) for e in refused)
    assert sorted(logged_ids(shadow_refused_url)) == sorted(f"champion-{n}" for n in range(40))
    assert log.stats.spooled_rows == 0 and log.stats.database_failures == 0


def test_spooled_rows_the_database_refuses_never_block_the_replay(
    shadow_refused_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool" / f"{SPOOL_PREFIX}{os.getpid()}.jsonl"
    spool.parent.mkdir()
    rows = [make_row(f"spooled-{number}") for number in range(6)]
    rows.insert(3, replace(make_row("spooled-2@shadow"), role="shadow"))
    spool.write_text("".join(row.to_json() + "\n" for row in rows))

    log = PredictionLogger(shadow_refused_url, tmp_path / "spool")
    log.close()
    assert sorted(logged_ids(shadow_refused_url)) == [f"spooled-{n}" for n in range(6)]
    (rejected,) = [json.loads(line) for line in log.rejected_path.read_text().splitlines()]
    assert rejected["row"]["request_id"] == "spooled-2@shadow"
    assert not spool.exists()


def test_a_large_insert_is_not_taken_for_a_hung_database(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 150,000-row job's insert takes longer than the timeout meant for a few rows: the
    watchdog allows a call time by the rows in flight (1 s per 20,000) instead of spooling
    it as an outage. Every commit here takes 0.6 s (a stand-in that stores nothing, so the
    machine's speed cannot move the result); the timeout is 0.2 s."""
    init_schema(sqlite_url).dispose()

    def slow_commit(self, requests):
        time.sleep(0.6)
        return [None] * len(requests)

    monkeypatch.setattr(PredictionLogger, "_commit_requests", slow_commit)
    log = PredictionLogger(sqlite_url, tmp_path / "spool", timeout_seconds=0.2)
    try:
        assert log.write(batch_rows("big-job", 20_000), timeout=120) is None
        assert log.stats.stalls == 0 and log.stats.spooled_rows == 0
        log.write([make_row("one-row")])  # a few rows get the short timeout: spooled
        assert log.stats.stalls == 1 and log.stats.spooled_rows == 1
    finally:
        log.close()


def test_lanes_keep_spools_of_their_own(sqlite_url: str, tmp_path: Path) -> None:
    """A bulk lane's spool is replayed by the bulk lane only, and the other way round."""
    init_schema(sqlite_url).dispose()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / f"{SPOOL_PREFIX}{os.getpid()}.jsonl").write_text(make_row("main").to_json() + "\n")
    bulk_spool = spool_dir / f"{SPOOL_PREFIX}{BULK_LANE}-{os.getpid()}.jsonl"
    bulk_spool.write_text(make_row("bulk").to_json() + "\n")
    main = PredictionLogger(sqlite_url, spool_dir)
    main.close()
    assert logged_ids(sqlite_url) == ["main"] and bulk_spool.exists()
    bulk = PredictionLogger(sqlite_url, spool_dir, lane=BULK_LANE)
    bulk.close()
    assert sorted(logged_ids(sqlite_url)) == ["bulk", "main"]
    assert not list(spool_dir.glob(f"{SPOOL_PREFIX}*"))
