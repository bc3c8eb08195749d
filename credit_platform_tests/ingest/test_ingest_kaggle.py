"""The Kaggle loader on the shared sample: every dirty value kind repaired or nulled and
counted as the data README documents, raw Kaggle form equal to the cleaned form, nothing
lost silently, idempotent and atomic writes on SQLite and MariaDB, and the CLI."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from credit_platform.cli.seed import seed
from credit_platform.core.db import init_schema
from credit_platform.core.features import INTEGER_FEATURES, NUMERIC_FEATURES
from credit_platform.core.schema import credit_score, credit_score_features, customer_info
from credit_platform.ingest.cleaning import PLAUSIBLE_RANGES
from credit_platform.ingest.kaggle import clean_kaggle_frame, load_kaggle_csv, read_kaggle_csv
from credit_platform.ingest.writer import IngestError, IngestWriteError
from credit_platform_tests.contract_fixtures import nulled_in

SOURCE_TABLES = (customer_info, credit_score, credit_score_features)
# The headers of Kaggle's own train.csv, in its order.
KAGGLE_HEADERS = {
    "id": "ID",
    "customer_id": "Customer_ID",
    "month": "Month",
    "name": "Name",
    "age": "Age",
    "ssn": "SSN",
    "occupation": "Occupation",
    "annual_income": "Annual_Income",
    "monthly_inhand_salary": "Monthly_Inhand_Salary",
    "num_bank_accounts": "Num_Bank_Accounts",
    "num_credit_card": "Num_Credit_Card",
    "interest_rate": "Interest_Rate",
    "num_of_loan": "Num_of_Loan",
    "type_of_loan": "Type_of_Loan",
    "delay_from_due_date": "Delay_from_due_date",
    "num_of_delayed_payment": "Num_of_Delayed_Payment",
    "changed_credit_limit": "Changed_Credit_Limit",
    "num_credit_inquiries": "Num_Credit_Inquiries",
    "credit_mix": "Credit_Mix",
    "outstanding_debt": "Outstanding_Debt",
    "credit_utilization_ratio": "Credit_Utilization_Ratio",
    "credit_history_age": "Credit_History_Age",
    "payment_of_min_amount": "Payment_of_Min_Amount",
    "total_emi_per_month": "Total_EMI_per_month",
    "amount_invested_monthly": "Amount_invested_monthly",
    "payment_behaviour": "Payment_Behaviour",
    "monthly_balance": "Monthly_Balance",
    "credit_score": "Credit_Score",
}


@pytest.fixture(scope="module")
def raw_sample(kaggle_sample: Path) -> pd.DataFrame:
    return read_kaggle_csv(kaggle_sample)


@pytest.fixture(scope="module")
def cleaned_sample(raw_sample):
    return clean_kaggle_frame(raw_sample, 2025)


def _stored_rows(engine, table) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.id)).mappings().all()
    return [dict(row) for row in rows]


def _expected_rows(frame: pd.DataFrame) -> list[dict]:
    frame = frame.sort_values("id")
    plain = frame.astype("object").where(frame.notna(), None)
    return plain.to_dict("records")


def _plain(series: pd.Series) -> list:
    return series.astype("object").where(series.notna(), None).tolist()


def _row_counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SOURCE_TABLES
        }


def _small_csv(raw_sample: pd.DataFrame, folder: Path, rows: int) -> Path:
    path = folder / "small.csv"
    raw_sample.head(rows).to_csv(path, index=False)
    return path


# --- cleaning, no database -------------------------------------------------------------


def test_sample_dirty_values_are_nulled_with_the_documented_counts(cleaned_sample):
    frames, summary = cleaned_sample
    nulled = summary.nulled
    assert nulled[("age", "below_range")] == 84  # the -500 ages
    assert nulled[("age", "above_range")] == 168
    assert nulled[("num_of_loan", "below_range")] == 398  # the -100 loans
    assert nulled[("num_of_delayed_payment", "below_range")] == 67
    assert nulled[("num_bank_accounts", "below_range")] == 4
    assert nulled[("annual_income", "above_range")] == 94
    assert nulled[("amount_invested_monthly", "sentinel")] == 455
    assert nulled[("monthly_balance", "sentinel")] == 1
    assert nulled[("ssn", "bad_ssn")] == 554
    # The empty cells (placeholders before the partial cleaning) are reported as missing.
    assert summary.missing["credit_mix"] == 2073
    assert summary.missing["payment_behaviour"] == 823
    assert summary.missing["occupation"] == 707
    assert summary.missing["changed_credit_limit"] == 201
    assert summary.missing["type_of_loan"] == 1151
    features = frames.credit_score_features
    assert features["age"].isna().sum() == 84 + 168
    assert features["ssn"].isna().sum() == 554
    assert (features["payment_of_min_amount"] == "NM").sum() == 1147  # NM is a valid value
    assert features["payment_of_min_amount"].value_counts().to_dict() == {
        "Yes": 5286,
        "No": 3567,
        "NM": 1147,
    }


def test_every_kept_number_is_in_range_and_equal_to_the_source(raw_sample, cleaned_sample):
    frames, summary = cleaned_sample
    features = frames.credit_score_features.set_index("id")
    source = raw_sample.set_index("id").loc[features.index]
    for column in NUMERIC_FEATURES:
        kept = features[column].dropna().astype(float)
        low, high = PLAUSIBLE_RANGES[column]
        assert kept.between(low, high).all(), column
        if column == "credit_history_age":
            continue
        # The double nearest to the text, as Python and the API's JSON parser read it.
        original = source.loc[kept.index, column].map(float)
        assert (kept == original).all(), column
        # Every NULL is either missing in the source or counted by reason.
        assert features[column].isna().sum() == summary.missing[column] + nulled_in(
            summary, column
        ), column
    integer_kinds = {str(features[column].dtype) for column in INTEGER_FEATURES}
    assert integer_kinds == {"Int64"}


def test_credit_history_age_becomes_months(raw_sample, cleaned_sample):
    frames, summary = cleaned_sample
    features = frames.credit_score_features.set_index("id")
    assert raw_sample.loc[raw_sample["id"] == "0x188b9", "credit_history_age"].item() == (
        "21 Years and 5 Months"
    )
    assert features.loc["0x188b9", "credit_history_age"] == 21 * 12 + 5
    assert summary.repaired[("credit_history_age", "years_and_months")] == 10_000


def test_sample_rows_are_spread_over_august_deterministically(raw_sample, cleaned_sample):
    frames, _ = cleaned_sample
    dates = frames.credit_score["date"]
    assert min(dates) == date(2025, 8, 1) and max(dates) == date(2025, 8, 31)
    per_day = pd.Series(dates).value_counts()
    assert len(per_day) == 31 and per_day.min() > 200  # every daily partition gets data
    again, _ = clean_kaggle_frame(raw_sample.sample(frac=1, random_state=3), 2025)
    by_id = dict(zip(again.credit_score["id"], again.credit_score["date"], strict=True))
    assert all(by_id[i] == d for i, d in zip(frames.credit_score["id"], dates, strict=True))
    other_year, _ = clean_kaggle_frame(raw_sample.head(50), 2024)
    assert {d.year for d in other_year.credit_score["date"]} == {2024}


def test_the_three_tables_share_ids_and_rows(cleaned_sample):
    frames, summary = cleaned_sample
    ids = frames.credit_score["id"]
    assert ids.is_unique
    for table in SOURCE_TABLES:
        frame = frames.table_frame(table)
        assert list(frame.columns) == [column.name for column in table.columns]
        assert frame["id"].tolist() == ids.tolist()
    assert summary.rows_read == summary.rows_kept + summary.total_dropped == 10_000


def _redirty(raw: pd.DataFrame, clean_features: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Turn partly cleaned rows back into Kaggle's raw form; returns what was done."""
    dirty = raw.copy()
    kept = clean_features.set_index("id")
    underscored = {}
    for step, column in enumerate(
        ("age", "annual_income", "num_of_loan", "num_of_delayed_payment", "outstanding_debt")
    ):
        survives = dirty["id"].map(kept[column].notna()).astype(bool)
        chosen = survives & (dirty.index % (step + 2) == 0)
        dirty.loc[chosen, column] = dirty.loc[chosen, column] + "_"
        underscored[column] = int(chosen.sum())
    placeholders = {
        "credit_mix": "_",
        "occupation": "_______",
        "payment_behaviour": "!@9#%8",
        "changed_credit_limit": "_",
        "type_of_loan": "NA",
    }
    replaced = {}
    for column, placeholder in placeholders.items():
        empty = dirty[column] == ""
        dirty.loc[empty, column] = placeholder
        replaced[column] = int(empty.sum())
    dirty.loc[dirty["amount_invested_monthly"] == "10000.0", "amount_invested_monthly"] = (
        "__10000__"
    )
    dirty.loc[dirty["monthly_balance"].str.startswith("-3.33"), "monthly_balance"] = (
        "__-333333333333333333333333333__"
    )
    dirty = dirty.rename(columns=KAGGLE_HEADERS)[list(KAGGLE_HEADERS.values())]
    return dirty, {"underscored": underscored, "placeholders": replaced}


@pytest.fixture(scope="module")
def raw_form_subset(raw_sample) -> pd.DataFrame:
    """Sample rows holding every dirty kind: sentinels, -500 ages, -100 loans, blanks."""
    picks = [
        raw_sample.head(40),
        raw_sample[raw_sample["amount_invested_monthly"] == "10000.0"].head(3),
        raw_sample[raw_sample["monthly_balance"].str.startswith("-3.33")],
        raw_sample[raw_sample["age"] == "-500"].head(2),
        raw_sample[raw_sample["num_of_loan"] == "-100"].head(2),
        raw_sample[raw_sample["credit_mix"] == ""].head(2),
        raw_sample[raw_sample["occupation"] == ""].head(2),
        raw_sample[raw_sample["payment_behaviour"] == ""].head(2),
        raw_sample[raw_sample["changed_credit_limit"] == ""].head(2),
    ]
    return pd.concat(picks).drop_duplicates("id").reset_index(drop=True)


def test_raw_kaggle_form_cleans_to_the_same_values(raw_form_subset, tmp_path):
    expected, expected_summary = clean_kaggle_frame(raw_form_subset, 2025)
    dirty, done = _redirty(raw_form_subset, expected.credit_score_features)
    path = tmp_path / "train.csv"
    dirty.to_csv(path, index=False)
    assert "Customer_ID" in path.read_text().splitlines()[0]
    assert "__10000__" in path.read_text() and "!@9#%8" in path.read_text()

    frames, summary = clean_kaggle_frame(read_kaggle_csv(path), 2025)

    for table in SOURCE_TABLES:
        pd.testing.assert_frame_equal(frames.table_frame(table), expected.table_frame(table))
    for column, count in done["underscored"].items():
        assert count > 0 and summary.repaired[(column, "trailing_underscore")] == count
    for column, count in done["placeholders"].items():
        assert count > 0 and summary.nulled[(column, "placeholder")] == count
        assert summary.missing[column] == 0
    assert summary.nulled[("amount_invested_monthly", "sentinel")] == 3
    assert summary.nulled[("monthly_balance", "sentinel")] == 1
    assert expected_summary.nulled[("amount_invested_monthly", "sentinel")] == 3


def test_raw_text_forms_of_single_values():
    raw = pd.DataFrame({name: [""] * 4 for name in KAGGLE_HEADERS.values()}, dtype="object").assign(
        ID=["0x1", "0x2", "0x3", "0x4"],
        Customer_ID="CUS_1",
        Month=["January", "february", "Aug", "8"],
        Credit_Score="Good",
        Age=["28_", "_", "abc", "33.5"],
        Credit_History_Age=["NA", "5 Years and 0 Months", "37", "a while"],
        Num_of_Loan=["3_", "-100", "100", "2"],
        Type_of_Loan=["Auto Loan, and Payday Loan", "Space Loan", "Not Specified", ""],
        Credit_Mix=["Good", "_", "Excellent", "Bad"],
        SSN=["123-45-6789", "#F%$D@*&8", "", "12-345-6789"],
    )
    frames, summary = clean_kaggle_frame(raw, 2023)
    features = frames.credit_score_features
    assert _plain(features["age"]) == [28, None, None, None]
    assert summary.nulled[("age", "placeholder")] == 1
    assert summary.nulled[("age", "not_a_number")] == 1
    assert summary.nulled[("age", "not_an_integer")] == 1
    assert summary.repaired[("age", "trailing_underscore")] == 1
    assert _plain(features["credit_history_age"]) == [None, 60, 37, None]
    assert summary.nulled[("credit_history_age", "placeholder")] == 1
    assert summary.nulled[("credit_history_age", "unparseable")] == 1
    assert _plain(features["num_of_loan"]) == [3, None, None, 2]
    assert summary.nulled[("num_of_loan", "below_range")] == 1
    assert summary.nulled[("num_of_loan", "above_range")] == 1
    assert features["type_of_loan"].tolist()[0] == "Auto Loan, and Payday Loan"
    assert summary.nulled[("type_of_loan", "unknown_category")] == 1
    assert features["credit_mix"].tolist() == ["Good", None, None, "Bad"]
    assert summary.nulled[("credit_mix", "unknown_category")] == 1
    assert summary.nulled[("ssn", "bad_ssn")] == 2
    assert [d.month for d in frames.credit_score["date"]] == [1, 2, 8, 8]
    assert {d.year for d in frames.credit_score["date"]} == {2023}


def test_unstorable_rows_are_dropped_and_counted_never_silently(raw_sample):
    raw = raw_sample.head(10).copy()
    raw.loc[0, "id"] = ""
    raw.loc[1, "customer_id"] = "  "
    raw.loc[2, "credit_score"] = ""
    raw.loc[3, "credit_score"] = "Excellent"
    raw.loc[4, "month"] = "Smarch"
    raw.loc[6, "id"] = raw.loc[5, "id"]
    frames, summary = clean_kaggle_frame(raw, 2025)
    assert dict(summary.rows_dropped) == {
        "missing id": 1,
        "missing customer_id": 1,
        "missing credit_score label": 1,
        "credit_score not one of Good, Standard, Poor": 1,
        "missing or unknown month": 1,
        "id repeated within the input": 1,
    }
    assert len(frames) == summary.rows_kept == 4
    assert summary.rows_read == summary.rows_kept + summary.total_dropped
    assert frames.credit_score["id"].tolist() == raw.loc[[5, 7, 8, 9], "id"].tolist()
    rendered = summary.render()
    assert "rows dropped" in rendered and "Smarch" not in rendered
    assert "missing or unknown month: 1" in rendered


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(favourite_colour="blue"), "unknown columns: favourite_colour"),
        (lambda f: f.drop(columns=["age", "ssn"]), "missing required columns: age"),
        (lambda f: f.drop(columns=["credit_score"]), "labels are required"),
        (lambda f: f.assign(**{"Unnamed: 0": "1"}), "unknown columns: Unnamed: 0"),
    ],
)
def test_wrong_columns_are_named_in_the_error(raw_sample, change, message):
    with pytest.raises(IngestError, match=message):
        clean_kaggle_frame(change(raw_sample.head(5)), 2025)


# --- database ---------------------------------------------------------------------------


def test_full_sample_load_is_complete_and_idempotent(store_url, kaggle_sample, cleaned_sample):
    engine = init_schema(store_url)
    try:
        first = load_kaggle_csv(kaggle_sample, engine, progress=False)
        assert first.rows_written == {table.name: 10_000 for table in SOURCE_TABLES}
        assert first.rows_read == first.rows_kept + first.total_dropped == 10_000
        assert _row_counts(engine) == {table.name: 10_000 for table in SOURCE_TABLES}
        assert first.seconds < 20

        second = load_kaggle_csv(kaggle_sample, engine, progress=False)
        assert second.rows_written == {table.name: 0 for table in SOURCE_TABLES}
        assert _row_counts(engine) == {table.name: 10_000 for table in SOURCE_TABLES}
        assert "0 written, 10,000 already present" in second.render()

        frames, _ = cleaned_sample
        stored = _stored_rows(engine, credit_score_features)
        assert stored == _expected_rows(frames.credit_score_features)
        assert _stored_rows(engine, credit_score) == _expected_rows(frames.credit_score)
        by_id = {row["id"]: row for row in stored}
        assert by_id["0x188b9"]["credit_history_age"] == 257
        assert isinstance(by_id["0x188b9"]["age"], int)
        with engine.connect() as connection:
            nulls = connection.execute(
                text("SELECT COUNT(*) FROM credit_score_features WHERE age IS NULL")
            ).scalar_one()
        assert nulls == 84 + 168
    finally:
        engine.dispose()


def test_raw_kaggle_csv_loads_to_the_same_stored_values(store_url, raw_form_subset, tmp_path):
    expected, _ = clean_kaggle_frame(raw_form_subset, 2025)
    dirty, _ = _redirty(raw_form_subset, expected.credit_score_features)
    path = tmp_path / "train.csv"
    dirty.to_csv(path, index=False)
    engine = init_schema(store_url)
    try:
        summary = load_kaggle_csv(path, engine, progress=False)
        assert summary.rows_written["credit_score_features"] == len(raw_form_subset)
        for table in SOURCE_TABLES:
            assert _stored_rows(engine, table) == _expected_rows(expected.table_frame(table))
    finally:
        engine.dispose()


def test_row_ids_differing_only_in_case_are_two_rows(store_url, raw_sample, tmp_path):
    """ "0x1a2b" and "0X1A2B" are two rows on MariaDB as on SQLite (before the id columns
    compared bytes, MariaDB took the second for the first and the loader skipped it)."""
    rows = raw_sample.head(2).copy()
    rows.iloc[1, rows.columns.get_loc("id")] = rows.iloc[0]["id"].upper()
    assert rows.iloc[1]["id"] != rows.iloc[0]["id"]
    path = tmp_path / "cases.csv"
    rows.to_csv(path, index=False)
    expected, _ = clean_kaggle_frame(rows, 2025)
    engine = init_schema(store_url)
    try:
        summary = load_kaggle_csv(path, engine, progress=False)
        assert summary.rows_written == {table.name: 2 for table in SOURCE_TABLES}
        for table in SOURCE_TABLES:
            assert _stored_rows(engine, table) == _expected_rows(expected.table_frame(table))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(extra="1"), "unknown columns: extra"),
        (lambda f: f.drop(columns=["monthly_balance"]), "missing required columns"),
    ],
)
def test_bad_columns_write_nothing(store_url, raw_sample, tmp_path, change, message):
    path = tmp_path / "bad.csv"
    change(raw_sample.head(20)).to_csv(path, index=False)
    engine = init_schema(store_url)
    try:
        with pytest.raises(IngestError, match=message):
            load_kaggle_csv(path, engine, progress=False)
        assert _row_counts(engine) == {table.name: 0 for table in SOURCE_TABLES}
    finally:
        engine.dispose()


def test_a_failed_chunk_leaves_whole_chunks_only_and_a_rerun_completes(
    sqlite_url, raw_sample, tmp_path
):
    path = _small_csv(raw_sample, tmp_path, 250)
    poisoned = raw_sample.loc[150, "id"]  # in the second chunk of 100
    engine = init_schema(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON credit_score_features "
                    f"WHEN NEW.id = '{poisoned}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        with pytest.raises(IngestWriteError, match="after 1 committed chunk"):
            load_kaggle_csv(path, engine, progress=False, chunk_rows=100)
        # customer_info and credit_score rows of the failed chunk were rolled back too.
        assert _row_counts(engine) == {table.name: 100 for table in SOURCE_TABLES}
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse"))
        rerun = load_kaggle_csv(path, engine, progress=False, chunk_rows=100)
        assert rerun.rows_written == {table.name: 150 for table in SOURCE_TABLES}
        assert _row_counts(engine) == {table.name: 250 for table in SOURCE_TABLES}
    finally:
        engine.dispose()


def test_progress_can_be_silenced(sqlite_url, raw_sample, tmp_path, capsys):
    path = _small_csv(raw_sample, tmp_path, 30)
    engine = init_schema(sqlite_url)
    try:
        load_kaggle_csv(path, engine, progress=False)
        assert capsys.readouterr().err == ""
        load_kaggle_csv(path, engine, progress=True, year=2024)
        assert "30/30" in capsys.readouterr().err
    finally:
        engine.dispose()


# --- CLI --------------------------------------------------------------------------------


def test_cli_loads_prints_the_summary_and_is_idempotent(sqlite_url, raw_sample, tmp_path):
    path = _small_csv(raw_sample, tmp_path, 120)
    runner = CliRunner()
    args = ["kaggle", str(path), "--db-url", sqlite_url, "--year", "2024", "--quiet"]
    result = runner.invoke(seed, args)
    assert result.exit_code == 0, result.output
    assert "credit_score: 120 written, 0 already present" in result.stdout
    assert "dates: 2024-08-01 .. 2024-08-31" in result.stdout
    assert result.stderr == ""
    again = runner.invoke(seed, args)
    assert again.exit_code == 0
    assert "credit_score_features: 0 written, 120 already present" in again.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "the file is empty"),
        ("a,b\n1,2\n", "missing required columns"),
    ],
)
def test_cli_bad_csv_is_one_clear_line(sqlite_url, tmp_path, content, message):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(seed, ["kaggle", str(path), "--db-url", sqlite_url])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_cli_unreachable_database_is_one_clear_line(raw_sample, tmp_path):
    path = _small_csv(raw_sample, tmp_path, 5)
    url = "mysql+pymysql://root:secret@127.0.0.1:1/mlops"
    result = CliRunner().invoke(seed, ["kaggle", str(path), "--db-url", url, "--quiet"])
    assert result.exit_code == 1
    assert "cannot reach" in result.stderr and "127.0.0.1:1" in result.stderr
    assert "secret" not in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


# --- ragged lines, empty loads, chunked streaming -------------------------------------------


def _csv_lines(raw_sample: pd.DataFrame, folder: Path, rows: int) -> list[str]:
    """The first `rows` sample rows as CSV text lines (line 1 the header, row i on line i + 2)."""
    text_form = raw_sample.head(rows).to_csv(index=False)
    lines = text_form.splitlines()
    assert len(lines) == rows + 1, "a sample value spans lines; pick other rows"
    return lines


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("ragged", "fields"),
    [(lambda line: line + ",surplus", 29), (lambda line: line.rsplit(",", 1)[0], 27)],
    ids=["a field too many", "a field too few"],
)
def test_cli_refuses_a_ragged_line_by_its_number_and_stores_nothing(
    store_url, raw_sample, tmp_path, ragged, fields
):
    lines = _csv_lines(raw_sample, tmp_path, 300)
    lines[151] = ragged(lines[151])  # line 152 of the file, in the second chunk of 100
    path = _write_lines(tmp_path / "ragged.csv", lines)
    result = CliRunner().invoke(
        seed, ["kaggle", str(path), "--db-url", store_url, "--chunk-rows", "100", "--quiet"]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert f"line 152: {fields} fields where the header has 28" in result.stderr
    assert result.stderr.count("\n") == 1
    engine = init_schema(store_url)
    try:
        assert _row_counts(engine) == {table.name: 0 for table in SOURCE_TABLES}
    finally:
        engine.dispose()


def test_cli_refuses_a_file_whose_every_line_has_an_extra_field(sqlite_url, raw_sample, tmp_path):
    """One field too many on every data line would shift every column by one (the first
    field taken as an index) and drop every row; it is refused at its first line."""
    lines = _csv_lines(raw_sample, tmp_path, 50)
    shifted = [lines[0]] + [f"{number},{line}" for number, line in enumerate(lines[1:])]
    path = _write_lines(tmp_path / "shifted.csv", shifted)
    result = CliRunner().invoke(seed, ["kaggle", str(path), "--db-url", sqlite_url, "--quiet"])
    assert result.exit_code == 1, result.output
    assert "line 2: 29 fields where the header has 28" in result.stderr
    engine = init_schema(sqlite_url)
    try:
        assert _row_counts(engine) == {table.name: 0 for table in SOURCE_TABLES}
    finally:
        engine.dispose()


def test_cli_load_that_keeps_no_row_exits_non_zero(sqlite_url, raw_sample, tmp_path):
    path = tmp_path / "unlabelled.csv"
    raw_sample.head(40).assign(credit_score="Unknown").to_csv(path, index=False)
    result = CliRunner().invoke(seed, ["kaggle", str(path), "--db-url", sqlite_url, "--quiet"])
    assert result.exit_code == 1, result.output
    assert "rows read: 40   kept: 0   dropped: 40" in result.stdout
    assert result.stderr.startswith("error: no row could be stored (40 read; dropped by reason:")
    assert "credit_score not one of Good, Standard, Poor: 40" in result.stderr


def _summary_without_time(summary) -> str:
    return "\n".join(line for line in summary.render().splitlines() if not line.startswith("time:"))


def test_a_multi_chunk_load_stores_and_reports_exactly_what_a_one_chunk_load_does(
    store_url, raw_sample, tmp_path
):
    """The whole shared sample, plus rows repeating ids from far earlier chunks (with other
    labels), loaded in one chunk and in chunks of 997 rows: same rows, same summary."""
    repeats = raw_sample.head(25).assign(credit_score="Poor", age="33")
    repeats.loc[repeats.index[:5], "credit_score"] = "Unknown"  # dropped for the label first
    path = tmp_path / "sample_with_repeats.csv"
    pd.concat([raw_sample, repeats], ignore_index=True).to_csv(path, index=False)
    one_store = init_schema(f"sqlite:///{tmp_path / 'one_chunk.db'}")
    many_store = init_schema(store_url)
    try:
        one = load_kaggle_csv(path, one_store, progress=False, chunk_rows=20_000)
        many = load_kaggle_csv(path, many_store, progress=False, chunk_rows=997)
        assert one.rows_read == many.rows_read == 10_025
        assert one.rows_dropped["id repeated within the input"] == 20
        assert _summary_without_time(many) == _summary_without_time(one)
        assert many.rows_written == one.rows_written == {t.name: 10_000 for t in SOURCE_TABLES}
        for table in SOURCE_TABLES:
            assert _stored_rows(many_store, table) == _stored_rows(one_store, table)
        # The sample's own rows were kept, not the later repeats of their ids.
        first = raw_sample.loc[0]
        stored = {row["id"]: row for row in _stored_rows(many_store, credit_score)}
        assert stored[first["id"]]["credit_score"] == first["credit_score"]
        again = load_kaggle_csv(path, many_store, progress=False, chunk_rows=997)
        assert again.rows_written == {table.name: 0 for table in SOURCE_TABLES}
    finally:
        one_store.dispose()
        many_store.dispose()
