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
import hashlib
import time
from datetime import date
from pathlib import Path
from types import MappingProxyType

import pandas as pd
from sqlalchemy.engine import Engine

from credit_platform.core.features import (
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LABELS,
    MODEL_FEATURES,
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
    DEFAULT_CHUNK_ROWS,
    IngestError,
    IngestSummary,
    SourceFrames,
    SourceWriter,
)

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "customer_id", "month", *MODEL_FEATURES, TARGET)
OPTIONAL_COLUMNS: tuple[str, ...] = ("name", "ssn")
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


def clean_kaggle_frame(raw: pd.DataFrame, year: int) -> tuple[SourceFrames, IngestSummary]:
    """Clean a Kaggle frame read with every column as text; no database involved.

    Rows that cannot be stored are dropped first (and counted), so the value counts
    describe exactly the rows that are kept.
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
    keep = storable_rows(keys, LABELS, log)
    frame, clean = frame.loc[keep], keys.loc[keep, ["id", "customer_id", "date", TARGET]].copy()
    for name in INTEGER_FEATURES + FLOAT_FEATURES:
        if name == "credit_history_age":
            clean[name] = history_months_from_text(frame[name], log)
        else:
            clean[name] = numbers_from_text(name, frame[name], log)
    for name, allowed in CATEGORY_VALUES.items():
        clean[name] = apply_category_rule(name, text_or_null(name, frame[name], log), allowed, log)
    clean["type_of_loan"] = apply_loan_list_rule(
        text_or_null("type_of_loan", frame["type_of_loan"], log), log
    )
    for name in OPTIONAL_COLUMNS:
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


def read_kaggle_csv(path: str | Path) -> pd.DataFrame:
    """The CSV with every cell as the exact text in the file (no NA guessing)."""
    path = Path(path)
    try:
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig"
        )
    except FileNotFoundError as error:
        raise IngestError(f"cannot read {path}: no such file") from error
    except IsADirectoryError as error:
        raise IngestError(f"cannot read {path}: it is a directory") from error
    except pd.errors.EmptyDataError as error:
        raise IngestError(f"cannot read {path}: the file is empty") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise IngestError(f"cannot read {path} as CSV: {error}") from error


def load_kaggle_csv(
    path: str | Path,
    engine: Engine,
    *,
    year: int = 2025,
    progress: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Read, clean and store a Kaggle CSV; nothing is written unless the whole file cleans."""
    started = time.perf_counter()
    frames, summary = clean_kaggle_frame(read_kaggle_csv(path), year)
    summary.source = f"kaggle csv {path}"
    with SourceWriter(
        engine,
        total_rows=len(frames),
        chunk_rows=chunk_rows,
        progress=progress,
        description="kaggle rows",
    ) as writer:
        writer.write(frames)
    summary.rows_written = dict(writer.written)
    summary.seconds = time.perf_counter() - started
    return summary
