"""The job store without a server: bodies read a chunk of rows at a time, bad bodies named,
quota and in-flight limits, retention, ownership, private files."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from api.job_store import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    BadJobBody,
    JobStore,
    JobTooLarge,
    NotJson,
    RequestKeyConflict,
    StoreFull,
    TooManyJobs,
    _exact_rows,
    _open_array,
    _Text,
    process_owner,
    read_chunks,
)


def _store(root: Path, **limits: float) -> JobStore:
    return JobStore(
        root,
        quota_bytes=int(limits.get("quota", 10_000_000)),
        in_flight=int(limits.get("in_flight", 4)),
        retention_seconds=limits.get("retention", 3600),
        chunk_chars=int(limits.get("chunk_chars", 20)),
    )


def iter_rows(source: BinaryIO) -> Iterator[str]:
    """The texts of the rows of a `{"data": [rows]}` body, read one at a time by the exact
    parser `read_chunks` falls back on; BadJobBody says what is wrong and where."""
    text = _Text(source)
    _open_array(text)
    yield from _exact_rows(text, 0)


def held_bytes(store: JobStore) -> int:
    """Bytes the store's jobs hold or have reserved, as its quota counts them."""
    with store._connect() as connection:
        return connection.execute(
            "SELECT COALESCE(SUM(reserved_bytes + stored_bytes), 0) FROM jobs"
        ).fetchone()[0]


def _rows(text: str) -> list[str]:
    return list(iter_rows(io.BytesIO(text.encode())))


def _parse(chunk: str, first: int) -> list:
    """A validator that only parses (the service's also checks every field)."""
    try:
        rows = json.loads(chunk)
    except json.JSONDecodeError as error:
        raise NotJson(str(error)) from error
    for position, row in enumerate(rows, start=first):
        if not isinstance(row, dict):  # as the service's validator names a row that is not
            raise BadJobBody(f"data[{position}] must be an object")
    return rows


def _chunks(body: bytes, chunk_chars: int = 20) -> list[tuple[int, list]]:
    return list(read_chunks(io.BytesIO(body), chunk_chars, _parse))


class _Trickle(io.RawIOBase):
    """A stream that gives a few bytes per read, as a slow disk or socket would."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.at = data, size, 0

    def read(self, _: int = -1) -> bytes:
        piece = self.data[self.at : self.at + self.size]
        self.at += len(piece)
        return piece


def test_rows_are_read_one_at_a_time_across_any_read_boundary() -> None:
    rows = [{"customer_id": f"C{n}", "note": 'é😀 ,]}\\"', "n": n * 1.5} for n in range(7)]
    body = json.dumps({"data": rows}, ensure_ascii=False, indent=2).encode()
    for size in (1, 2, 3, 7, 64, len(body)):
        found = [json.loads(raw) for raw in iter_rows(_Trickle(body, size))]  # type: ignore[arg-type]
        assert found == rows, size


@pytest.mark.parametrize("chunk_chars", [1, 20, 45, 1000])
def test_chunks_hold_every_row_once_in_order_even_when_a_boundary_is_guessed_wrong(
    chunk_chars: int,
) -> None:
    # "}, {" inside a string and between nested objects: where a chunk may not end.
    rows = [
        {"customer_id": f"C{n}", "note": "a}, {b" if n % 3 == 0 else "x", "n": n} for n in range(12)
    ]
    rows[5]["nested"] = [{"a": 1}, {"b": 2}]
    for body in (
        json.dumps({"data": rows}).encode(),
        json.dumps({"data": rows}, indent=3).encode(),
    ):
        chunks = _chunks(body, chunk_chars)
        assert [row for _, chunk in chunks for row in chunk] == rows
        assert [first for first, _ in chunks] == [
            sum(len(chunk) for _, chunk in chunks[:number]) for number in range(len(chunks))
        ]
    plain = [{"customer_id": f"C{n}", "n": n} for n in range(12)]
    assert len(_chunks(json.dumps({"data": plain}).encode(), 40)) > 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("", "'{' expected at character 0"),
        ("[]", "'{' expected"),
        ('{"rows": []}', "unexpected key 'rows'"),
        ('{"data": {}}', "data must be a list of rows"),
        ('{"data": []}', "at least one row"),
        ('{"data": [{"a": 1}, 7]}', "data[1] must be an object"),
        ('{"data": [{"a": 1} {"a": 2}]}', "',' or ']' after data[0]"),
        ('{"data": [{"a": 1}, {"a": tru}]}', "data[1] is not valid JSON"),
        ('{"data": [{"a": 1}], "x": 1}', 'no key but "data"'),
        ('{"data": [{"a": 1}]} []', "something follows it"),
        ('{"data": [{"a": 1}]', "'}' expected"),
    ],
)
def test_a_malformed_body_is_refused_saying_where(body: str, named: str) -> None:
    with pytest.raises(BadJobBody) as refused:
        _rows(body)
    assert named in str(refused.value)
    for chunk_chars in (1, 1000):  # chunked the same way the service reads a job
        with pytest.raises(BadJobBody) as refused:
            _chunks(body.encode(), chunk_chars)
        assert named in str(refused.value)


def test_a_body_is_split_into_chunks_on_disk_and_checked(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs", chunk_chars=20)
    task_id = store.reserve(1000)
    with store.body_file(task_id) as sink:
        sink.write(json.dumps({"data": [{"n": n} for n in range(8)]}).encode())
    seen: list[int] = []

    def validate(chunk: str, first: int) -> list:
        seen.append(first)
        return _parse(chunk, first)

    rows = store.split_body(task_id, validate, lambda rows: json.dumps(rows).encode(), 10)
    assert rows == 8 and seen == [0, 3, 6]  # '{"n": 0}, ' is 10 characters: 3 a chunk
    chunks = [json.loads(line) for line in store.chunks(task_id)]
    assert [len(chunk) for chunk in chunks] == [3, 3, 2]
    assert [row["n"] for chunk in chunks for row in chunk] == list(range(8))
    assert not (store.job_dir(task_id) / "body.json").exists()  # read once, then removed

    too_many = store.reserve(1000)
    with store.body_file(too_many) as sink:
        sink.write(json.dumps({"data": [{"n": n} for n in range(11)]}).encode())
    with pytest.raises(BadJobBody) as refused:
        store.split_body(too_many, _parse, lambda rows: b"[]", max_rows=10)
    assert refused.value.status == 413 and "at most 10 rows" in str(refused.value)


def test_files_are_private(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs")
    task_id = store.reserve(100)
    with store.body_file(task_id) as sink:
        sink.write(b'{"data": [{"n": 1}]}')
    store.split_body(task_id, _parse, lambda rows: b"[]", max_rows=10)
    with store.result_file(task_id) as sink:
        sink.write(b"[]")
    for path in (store.index, *store.job_dir(task_id).iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (store.root, store.job_dir(task_id)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_jobs_in_flight_and_bytes_are_bounded(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs", quota=1000, in_flight=2)
    with pytest.raises(JobTooLarge) as too_large:
        store.reserve(501)  # twice its body (rows and answers) exceeds the whole quota
    assert too_large.value.status == 413 and "CREDIT_API_JOB_STORE_BYTES" in str(too_large.value)
    first = store.reserve(300)
    with pytest.raises(StoreFull) as full:
        store.reserve(250)  # 600 held + 500 > 1000
    assert full.value.status == 507 and full.value.retry_after
    second = store.reserve(100)
    with pytest.raises(TooManyJobs) as busy:
        store.reserve(10)
    assert busy.value.status == 429 and busy.value.retry_after
    assert "CREDIT_API_JOBS_IN_FLIGHT=2" in str(busy.value)
    # An ended job holds its answers only, and leaves the in-flight count.
    store.accept(first, 1, "digest", None)
    with store.result_file(first) as sink:
        sink.write(b"x" * 40)
    assert store.complete(first)
    store.drop(second)
    assert held_bytes(store) == 40
    store.reserve(480)
    # A streamed body reserves room for the largest; accepted, it holds twice its size.
    streamed = _store(tmp_path / "streamed", quota=1000)
    task_id = streamed.reserve(500)
    streamed.accept(task_id, 1, "digest", None, body_bytes=100)
    assert held_bytes(streamed) == 200


def test_ended_jobs_expire_and_their_files_go(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs", retention=60)
    task_id = store.reserve(10)
    store.accept(task_id, 1, "digest", None)
    with store.result_file(task_id) as sink:
        sink.write(b"[]")
    store.complete(task_id)
    stray = store.job_dir("f" * 32)
    stray.mkdir()  # a directory the index does not name (a crash between the two)
    assert store.remove_expired(now=time.time() + 30) == []
    assert store.get(task_id).status == COMPLETED
    assert store.remove_expired(now=time.time() + 61) == [task_id]
    assert store.get(task_id) is None
    assert not store.job_dir(task_id).exists() and not stray.exists()


def test_a_request_key_names_one_job(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs")
    first = store.reserve(10)
    assert store.accept(first, 1, "body-a", "key-1") is None
    again = store.reserve(10)
    assert store.accept(again, 1, "body-a", "key-1") == first  # the same job
    assert store.get(again) is None and not store.job_dir(again).exists()
    other = store.reserve(10)
    with pytest.raises(RequestKeyConflict, match="key-1"):
        store.accept(other, 1, "body-b", "key-1")


def test_a_job_whose_owner_is_gone_is_failed_saying_why(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = process_owner(child.pid)
    finally:
        child.kill()
        child.wait()
    task_id = store.reserve(10)
    store.accept(task_id, 1, "digest", None)
    with store._connect(write=True) as connection:
        connection.execute("UPDATE jobs SET owner = ? WHERE task_id = ?", (owner, task_id))
    assert store.settle_orphans() == [task_id]
    running = store.reserve(10)  # owned by this (live) process
    store.accept(running, 1, "digest", None)
    assert store.settle_orphans() == []
    failed = store.get(task_id)
    assert failed.status == FAILED and f"pid {child.pid}" in failed.error
    assert "exited before it completed" in failed.error
    assert store.get(running).status == IN_PROGRESS
    assert store.abandon_own("the service shut down while it ran") == [running]
    assert "shut down" in store.get(running).error


def test_a_store_made_before_keeps_its_jobs(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs")
    task_id = store.reserve(10)
    store.accept(task_id, 1, "digest", None)
    with store.result_file(task_id) as sink:
        sink.write(b"[1]")
    store.complete(task_id)
    os.chmod(store.index, 0o644)  # as an older release left it
    reopened = _store(tmp_path / "jobs")
    assert reopened.get(task_id).status == COMPLETED
    assert stat.S_IMODE(reopened.index.stat().st_mode) == 0o600
    with reopened.open_result(task_id) as result:
        assert result.read() == b"[1]"
    assert reopened.get("../" + task_id) is None and reopened.get("a" * 300) is None


def test_stored_rows_give_the_scorer_what_the_checked_rows_give(kaggle_sample: Path) -> None:
    from api.batch_jobs import check_rows, store_rows, stored_rows
    from bench.sample_requests import load_sample, valid_request_payloads

    payloads = valid_request_payloads(load_sample(kaggle_sample), 300)
    checked = check_rows(json.dumps(payloads), 0)
    stored = stored_rows(store_rows(checked))
    assert [(row.customer_id, row.features()) for row in stored] == [
        (row.customer_id, row.features()) for row in checked
    ]
    bad = [*payloads[:3], {**payloads[3], "age": "old"}]
    with pytest.raises(BadJobBody, match=r"data\[1003\]\.age"):
        check_rows(json.dumps(bad), 1000)  # named by its position in the job
    with pytest.raises(NotJson):
        check_rows('[{"customer_id": "a}', 0)
