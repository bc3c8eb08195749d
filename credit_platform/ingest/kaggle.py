"""Loader for the Kaggle "Credit score classification" CSV, raw or partly cleaned.

Accepts Kaggle's own file (Title_Case headers such as Customer_ID, `40_` numbers,
placeholders `_`, `_______`, `!@9#%8`, `__10000__`, "21 Years and 5 Months") and the
lower-case, partly cleaned form of the shared sample. Values are repaired or nulled by
the rules in `cleaning.py`, each counted by column and reason.

Kaggle rows carry a month name, not a date. Each row is placed on a day of that month of
`year` chosen by a stable hash of its id, so daily partitions have data and a reload puts
every row on the same day again.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import MappingProxyType

import pandas as pd
from sqlalchemy.engine import Engine
from tqdm import tqdm

from credit_platform.core.data_contract import LISTING_FEATURES
from credit_platform.core.features import (
    FEATURES,
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LABELS,
    TARGET,
)
from credit_platform.ingest.cleaning import (
    CATEGORY_VALUES,
    NAME_LENGTH,
    CleaningLog,
    apply_category_rule,
    apply_length_rule,
    apply_loan_list_rule,
    apply_ssn_rule,
    history_months_from_text,
    numbers_from_text,
    storable_rows,
    text_or_null,
)
from credit_platform.ingest.writer import (
    IngestError,
    IngestSummary,
    SourceFrames,
    SourceWriter,
)

# Records read, cleaned and written together (one transaction): memory is bounded by this.
DEFAULT_READ_CHUNK_ROWS = 10_000
# Kaggle's own features are required; a feature declared beyond them (`kaggle=False` in
# `core.features`) is read when a file has its column and is missing otherwise.
KAGGLE_FEATURES: tuple[str, ...] = tuple(feature.name for feature in FEATURES if feature.kaggle)
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "customer_id", "month", *KAGGLE_FEATURES, TARGET)
OTHER_FEATURES: tuple[str, ...] = tuple(feature.name for feature in FEATURES if not feature.kaggle)
OPTIONAL_COLUMNS: tuple[str, ...] = ("name", "ssn", *OTHER_FEATURES)
_KEY_COLUMNS = ("id", "customer_id", TARGET, "month")
# Month names Kaggle uses ("August"), their abbreviations and numbers, in lower case.
_MONTHS = MappingProxyType(
    {
        **{calendar.month_name[n].lower(): n for n in range(1, 13)},
        **{calendar.month_abbr[n].lower(): n for n in range(1, 13)},
        **{str(n): n for n in range(1, 13)},
    }
)


def normalised_columns(raw: pd.DataFrame) -> pd.DataFrame:
    """Lower-case, trimmed headers (Kaggle's Customer_ID -> customer_id); the wrong set of
    columns is an IngestError naming the unknown and the missing ones."""
    names = [str(name).strip().lstrip("\ufeff").lower() for name in raw.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise IngestError(f"columns appear more than once: {', '.join(repeated)}")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [
        original for original, name in zip(raw.columns, names, strict=True) if name not in known
    ]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    problems = []
    if missing:
        hint = " (labels are required)" if TARGET in missing else ""
        problems.append(f"missing required columns: {', '.join(missing)}{hint}")
    if unknown:
        problems.append(f"unknown columns: {', '.join(map(str, unknown))}")
    if problems:
        raise IngestError("; ".join(problems))
    renamed = raw.copy()
    renamed.columns = names
    return renamed


def day_of_month(row_id: str, year: int, month: int) -> int:
    """A stable day in the month for this id (sha256, not Python's salted hash())."""
    digest = hashlib.sha256(row_id.encode("utf-8")).digest()
    days = calendar.monthrange(year, month)[1]
    return 1 + int.from_bytes(digest[:8], "big") % days


def spread_dates(ids: pd.Series, months: pd.Series, year: int) -> pd.Series:
    """A date in `year` for each row: its month, on the day its id hashes to."""
    month_numbers = months.str.lower().map(dict(_MONTHS))
    dates = [
        None
        if pd.isna(month) or row_id is None
        else date(year, int(month), day_of_month(row_id, year, int(month)))
        for row_id, month in zip(ids, month_numbers, strict=True)
    ]
    return pd.Series(dates, index=ids.index, dtype="object")


def clean_kaggle_frame(
    raw: pd.DataFrame, year: int, *, seen_ids: set[str] | None = None
) -> tuple[SourceFrames, IngestSummary]:
    """Clean a Kaggle frame read with every column as text; no database involved.

    Rows that cannot be stored are dropped first (and counted), so the value counts
    describe exactly the rows that are kept. `seen_ids` carries the ids kept from earlier
    chunks of the same file (a repeat of one is dropped as a repeat) and is updated.
    """
    if not 1 <= year <= 9999:
        raise IngestError(f"year must be between 1 and 9999, got {year}")
    frame = normalised_columns(raw)
    log = CleaningLog()
    keys = pd.DataFrame(
        {key: text_or_null(key, frame[key], CleaningLog()) for key in _KEY_COLUMNS},
        index=frame.index,
    )
    keys["date"] = spread_dates(keys["id"], keys["month"], year)
    keep = storable_rows(keys, LABELS, log, seen_ids=seen_ids)
    frame, clean = frame.loc[keep], keys.loc[keep, ["id", "customer_id", "date", TARGET]].copy()
    for name in OTHER_FEATURES:
        if name not in frame.columns:
            frame[name] = pd.Series(None, index=frame.index, dtype="object")
    for name in INTEGER_FEATURES + FLOAT_FEATURES:
        if name == "credit_history_age":
            clean[name] = history_months_from_text(frame[name], log)
        else:
            clean[name] = numbers_from_text(name, frame[name], log)
    for name, allowed in CATEGORY_VALUES.items():
        clean[name] = apply_category_rule(name, text_or_null(name, frame[name], log), allowed, log)
    for name in LISTING_FEATURES:
        clean[name] = apply_loan_list_rule(text_or_null(name, frame[name], log), log)
    for name in ("name", "ssn"):
        if name not in frame.columns:
            clean[name] = pd.Series(None, index=frame.index, dtype="object")
            continue
        present = text_or_null(name, frame[name], log)
        if name == "ssn":
            clean[name] = apply_ssn_rule(present, log)
        else:
            clean[name] = apply_length_rule(name, present, NAME_LENGTH, log)
    frames = SourceFrames.from_wide(clean)
    summary = IngestSummary(source="kaggle")
    summary.add_batch(len(raw), frames, log)
    return frames, summary


def _unreadable(path: Path, error: Exception) -> IngestError:
    if isinstance(error, FileNotFoundError):
        return IngestError(f"cannot read {path}: no such file")
    if isinstance(error, IsADirectoryError):
        return IngestError(f"cannot read {path}: it is a directory")
    if isinstance(error, UnicodeDecodeError):
        return IngestError(f"cannot read {path}: it is not UTF-8 text ({error.reason})")
    return IngestError(f"cannot read {path} as CSV: {error}")


def check_csv_shape(path: str | Path) -> int:
    """Check a whole CSV before anything is stored: known columns, and every record with as
    many fields as the header. Returns the number of data records.

    A ragged record (a field too many or too few) would shift or drop columns silently, so
    it is an IngestError naming its line; the file is read as a stream.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise IngestError(f"cannot read {path}: the file is empty")
            normalised_columns(pd.DataFrame(columns=header))
            width, records = len(header), 0
            for record in reader:
                if not record:
                    continue  # a blank line, skipped when reading too
                if len(record) != width:
                    raise IngestError(
                        f"{path} line {reader.line_num}: {len(record)} fields where the header "
                        f"has {width}; nothing was loaded (fix or remove the line)"
                    )
                records += 1
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise _unreadable(path, error) from error
    return records


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The CSV in frames of `chunk_rows` records, every cell the exact text in the file."""
    try:
        with pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            index_col=False,
            chunksize=chunk_rows,
        ) as reader:
            yield from reader
    except pd.errors.EmptyDataError as error:
        raise IngestError(f"cannot read {path}: the file is empty") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise _unreadable(path, error) from error


def read_kaggle_csv(path: str | Path) -> pd.DataFrame:
    """The whole CSV with every cell as the exact text in the file (no NA guessing); ragged
    lines are refused as in `check_csv_shape`."""
    path = Path(path)
    check_csv_shape(path)
    return pd.concat(list(_csv_chunks(path, DEFAULT_READ_CHUNK_ROWS)), ignore_index=True)


def load_kaggle_csv(
    path: str | Path,
    engine: Engine,
    *,
    year: int = 2025,
    progress: bool = True,
    chunk_rows: int = DEFAULT_READ_CHUNK_ROWS,
) -> IngestSummary:
    """Read, clean and store a Kaggle CSV, streamed in chunks of `chunk_rows` records.

    The file's shape is checked whole first, so a bad header or a ragged line stores
    nothing. Then each chunk is cleaned and written in one transaction (memory stays
    bounded by the chunk, plus the set of ids kept so far, which finds repeats across
    chunks); the summary covers the whole file, the same for any chunk size.
    """
    if not 1 <= year <= 9999:
        raise IngestError(f"year must be between 1 and 9999, got {year}")
    if chunk_rows < 1:
        raise IngestError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    started = time.perf_counter()
    records = check_csv_shape(path)
    summary = IngestSummary(source=f"kaggle csv {path}")
    seen_ids: set[str] = set()
    bar = tqdm(
        total=records,
        desc="kaggle rows",
        unit="rows",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5,
    )
    with bar, SourceWriter(engine, chunk_rows=chunk_rows, progress=False) as writer:
        for raw in _csv_chunks(path, chunk_rows):
            frames, part = clean_kaggle_frame(raw, year, seen_ids=seen_ids)
            summary.merge(part)
            writer.write(frames)
            bar.update(len(raw))
    summary.rows_written = dict(writer.written)
    summary.seconds = time.perf_counter() - started
    return summary
