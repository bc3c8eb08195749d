"""Idempotent, chunked writes of the three source tables, and the load summary.

A row is inserted only if its id is absent (SQLite `ON CONFLICT DO NOTHING`, MariaDB
`ON DUPLICATE KEY UPDATE id = id`), so loading the same data twice writes nothing the
second time. MariaDB's `INSERT IGNORE` is deliberately not used: it also turns strict-mode
errors (too-long strings, bad dates) into warnings and stores truncated data.

Each chunk writes all three tables in one transaction: a failure leaves whole chunks only.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import partial

import pandas as pd
from sqlalchemy import Table, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from credit_platform.core.db import is_mariadb, redacted, run_transaction
from credit_platform.core.schema import credit_score, credit_score_features, customer_info
from credit_platform.ingest.cleaning import (
    PLAUSIBLE_RANGES,
    REASONS,
    SENTINEL_DESCRIPTIONS,
    CleaningLog,
)

SOURCE_TABLES: tuple[Table, ...] = (customer_info, credit_score, credit_score_features)
DEFAULT_CHUNK_ROWS = 2_000


class IngestError(ValueError):
    """The input cannot be loaded (unreadable file, wrong columns, bad arguments)."""


class IngestWriteError(RuntimeError):
    """Writing to the feature store failed; earlier chunks are committed, this one is not."""


@dataclass(frozen=True)
class SourceFrames:
    """Clean rows for the three source tables, aligned row by row (same ids, same order)."""

    customer_info: pd.DataFrame
    credit_score: pd.DataFrame
    credit_score_features: pd.DataFrame

    @classmethod
    def from_wide(cls, frame: pd.DataFrame) -> SourceFrames:
        """Project one frame holding every column onto the three tables' columns."""
        frame = frame.reset_index(drop=True)
        return cls(
            **{table.name: frame[[c.name for c in table.columns]].copy() for table in SOURCE_TABLES}
        )

    @classmethod
    def concat(cls, parts: list[SourceFrames]) -> SourceFrames:
        return cls(
            **{
                table.name: pd.concat(
                    [getattr(part, table.name) for part in parts], ignore_index=True
                )
                for table in SOURCE_TABLES
            }
        )

    def __len__(self) -> int:
        return len(self.credit_score)

    def table_frame(self, table: Table) -> pd.DataFrame:
        return getattr(self, table.name)


@dataclass
class IngestSummary:
    """What a load read, stored, repaired, nulled and dropped; `render()` is for people."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    rows_dropped: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    nulled: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    rows_written: dict[str, int] = field(default_factory=dict)
    first_date: date | None = None
    last_date: date | None = None
    seconds: float = 0.0

    def add_batch(self, rows_read: int, frames: SourceFrames, log: CleaningLog) -> None:
        """Account for one cleaned batch (its log must cover exactly these rows)."""
        self.rows_read += rows_read
        self.rows_kept += len(frames)
        self.rows_dropped.update(log.dropped)
        self.missing.update(log.missing)
        self.nulled.update(log.nulled)
        self.repaired.update(log.repaired)
        if len(frames):
            dates = frames.credit_score["date"]
            low, high = min(dates), max(dates)
            self.first_date = low if self.first_date is None else min(self.first_date, low)
            self.last_date = high if self.last_date is None else max(self.last_date, high)

    def merge(self, other: IngestSummary) -> None:
        """Add another part of the same load (a later chunk of the file)."""
        self.rows_read += other.rows_read
        self.rows_kept += other.rows_kept
        for mine, theirs in (
            (self.rows_dropped, other.rows_dropped),
            (self.missing, other.missing),
            (self.nulled, other.nulled),
            (self.repaired, other.repaired),
        ):
            mine.update(theirs)
        for name, count in other.rows_written.items():
            self.rows_written[name] = self.rows_written.get(name, 0) + count
        dates = [d for d in (self.first_date, other.first_date) if d is not None]
        self.first_date = min(dates) if dates else None
        dates = [d for d in (self.last_date, other.last_date) if d is not None]
        self.last_date = max(dates) if dates else None

    @property
    def total_dropped(self) -> int:
        return sum(self.rows_dropped.values())

    def render(self) -> str:
        lines = [f"source: {self.source}"]
        lines.append(
            f"rows read: {self.rows_read:,}   kept: {self.rows_kept:,}   "
            f"dropped: {self.total_dropped:,}"
        )
        if self.first_date is not None:
            lines.append(f"dates: {self.first_date} .. {self.last_date}")
        for table in SOURCE_TABLES:
            if table.name in self.rows_written:
                written = self.rows_written[table.name]
                lines.append(
                    f"  {table.name}: {written:,} written, "
                    f"{self.rows_kept - written:,} already present"
                )
        if self.rows_dropped:
            lines.append("rows dropped (cannot be stored):")
            lines.extend(
                f"  {reason}: {count:,}" for reason, count in sorted(self.rows_dropped.items())
            )
        for title, counter in (("values nulled", self.nulled), ("values repaired", self.repaired)):
            if counter:
                lines.append(f"{title} (column, reason, count):")
                lines.extend(
                    f"  {column:<26} {_describe(column, reason):<62} {count:>8,}"
                    for (column, reason), count in sorted(counter.items())
                )
        if self.missing:
            lines.append("values already missing in the source:")
            lines.extend(
                f"  {column:<26} {count:>8,}" for column, count in sorted(self.missing.items())
            )
        lines.append(f"time: {self.seconds:.2f} s")
        return "\n".join(lines)


def _describe(column: str, reason: str) -> str:
    if reason in ("below_range", "above_range") and column in PLAUSIBLE_RANGES:
        low, high = PLAUSIBLE_RANGES[column]
        side = "below" if reason == "below_range" else "above"
        return f"{reason}: {side} [{low:,} .. {high:,}], set to NULL"
    if reason == "sentinel" and column in SENTINEL_DESCRIPTIONS:
        return f"{reason}: {SENTINEL_DESCRIPTIONS[column]}, set to NULL"
    return f"{reason}: {REASONS.get(reason, reason)}"


def insert_if_absent(table: Table, dialect_name: str):
    """An INSERT that skips rows whose primary key already exists, for this dialect."""
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    if is_mariadb(dialect_name):
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update(id=statement.inserted.id)
    raise IngestError(f"unsupported feature store dialect {dialect_name!r} (SQLite or MariaDB)")


def _records(frame: pd.DataFrame) -> list[dict]:
    """Plain Python values (None for missing) in the order of the frame's columns."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        columns[name] = series.astype("object").where(series.notna(), None).tolist()
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


class SourceWriter:
    """Writes SourceFrames in chunks; counts the rows each table really received.

    `tables` picks which of the three tables to write (default all): a simulation writes a
    day's features when the day happens and its labels a day later."""

    def __init__(
        self,
        engine: Engine,
        *,
        total_rows: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        progress: bool = True,
        description: str = "writing",
        tables: tuple[Table, ...] = SOURCE_TABLES,
    ) -> None:
        if chunk_rows < 1:
            raise IngestError(f"chunk_rows must be at least 1, got {chunk_rows}")
        unknown = [table.name for table in tables if table not in SOURCE_TABLES]
        if not tables or unknown:
            raise IngestError(f"tables must be source tables, not {unknown or 'none'}")
        self.engine = engine
        self.chunk_rows = chunk_rows
        self.tables = tables
        self.written = {table.name: 0 for table in tables}
        self.chunks_committed = 0
        self._statements = {
            table.name: insert_if_absent(table, engine.dialect.name) for table in tables
        }
        self._bar = tqdm(
            total=total_rows,
            desc=description,
            unit="rows",
            file=sys.stderr,
            disable=not progress,
            mininterval=0.5,
        )

    def __enter__(self) -> SourceWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._bar.close()

    def write(self, frames: SourceFrames) -> None:
        first = self.tables[0].name
        counted = credit_score.name if credit_score.name in self.written else first
        for start in range(0, len(frames), self.chunk_rows):
            stop = start + self.chunk_rows
            chunk = {t.name: frames.table_frame(t).iloc[start:stop] for t in self.tables}
            try:
                # a lock conflict with a day being built at the same time reruns the chunk
                counts = run_transaction(self.engine, partial(self._write_chunk, chunk=chunk))
            except SQLAlchemyError as error:
                where = redacted(self.engine.url.render_as_string(hide_password=False))
                reason = getattr(error, "orig", None) or error
                raise IngestWriteError(
                    f"writing to the feature store at {where} failed after "
                    f"{self.chunks_committed} committed chunk(s) "
                    f"({self.written[counted]:,} new {counted} rows); the failed chunk was "
                    f"rolled back and a rerun resumes where this stopped: {reason}"
                ) from error
            for name, count in counts.items():
                self.written[name] += count
            self.chunks_committed += 1
            self._bar.update(len(chunk[first]))

    def _write_chunk(self, connection: Connection, chunk: dict[str, pd.DataFrame]) -> dict:
        """Each table's new rows of one chunk; returns how many each table took."""
        return {
            table.name: self._write_table(connection, table, chunk[table.name])
            for table in self.tables
        }

    def _write_table(self, connection: Connection, table: Table, frame: pd.DataFrame) -> int:
        """Insert the rows whose id is absent; returns how many that was."""
        ids = frame["id"].tolist()
        present = set(connection.scalars(select(table.c.id).where(table.c.id.in_(ids))))
        fresh = frame[~frame["id"].isin(present)] if present else frame
        if len(fresh):
            connection.execute(self._statements[table.name], _records(fresh))
        return len(fresh)
