"""The synthetic generator's drift knob: each kind changes its named distribution, only from
the chosen day, and leaves every other column as a run without drift has it."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from credit_platform.ingest.synthetic import (
    DRIFT_CHOICES,
    DRIFT_KINDS,
    INCOME_DRIFT_FACTOR,
    Drift,
    generate_synthetic,
)
from credit_platform.ingest.writer import IngestError

CUSTOMERS = 3_000
START = date(2025, 5, 1)  # days: 2025-05-01 (no drift yet) and 2025-05-02 (drift)
DRIFT_DAY = date(2025, 5, 2)
SEED = 21


def _wide(frames) -> pd.DataFrame:
    wide = frames.credit_score_features.merge(frames.credit_score[["id", "credit_score"]], on="id")
    return wide.set_index("id").sort_index()


@pytest.fixture(scope="module")
def plain() -> pd.DataFrame:
    return _wide(generate_synthetic(CUSTOMERS, 2, START, seed=SEED))


def _drifted(kind: str) -> pd.DataFrame:
    return _wide(generate_synthetic(CUSTOMERS, 2, START, seed=SEED, drift=Drift(kind, DRIFT_DAY)))


def _day(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    return frame[frame["date"] == day]


def _same(left: pd.Series, right: pd.Series) -> bool:
    return (
        left.astype(object)
        .where(left.notna(), None)
        .equals(right.astype(object).where(right.notna(), None))
    )


def _unchanged_columns(plain: pd.DataFrame, drifted: pd.DataFrame) -> set[str]:
    return {name for name in plain.columns if _same(plain[name], drifted[name])}


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_rows_before_the_drift_day_are_those_of_a_run_without_drift(plain, kind):
    drifted = _drifted(kind)
    before, before_plain = _day(drifted, START), _day(plain, START)
    assert len(before) > 0.9 * CUSTOMERS
    assert _unchanged_columns(before_plain, before) == set(plain.columns)


def test_income_drift_lowers_income_and_salary_from_the_day(plain):
    drifted = _day(_drifted("income"), DRIFT_DAY)
    reference = _day(plain, DRIFT_DAY)
    for name in ("annual_income", "monthly_inhand_salary"):
        ratio = drifted[name].astype(float).median() / reference[name].astype(float).median()
        assert ratio == pytest.approx(INCOME_DRIFT_FACTOR, abs=0.02), name
    unchanged = _unchanged_columns(reference, drifted)
    assert {"age", "occupation", "credit_mix", "num_of_loan", "outstanding_debt"} <= unchanged
    assert "annual_income" not in unchanged


def test_occupation_drift_moves_the_mix_and_nothing_else(plain):
    drifted = _day(_drifted("occupation"), DRIFT_DAY)
    reference = _day(plain, DRIFT_DAY)
    shares = drifted["occupation"].value_counts(normalize=True)
    before = reference["occupation"].value_counts(normalize=True)
    assert shares["Developer"] == pytest.approx(0.45, abs=0.04)
    assert shares["Entrepreneur"] == pytest.approx(0.25, abs=0.04)
    assert before["Developer"] < 0.1
    assert _unchanged_columns(reference, drifted) == set(plain.columns) - {"occupation"}


def test_label_rule_drift_makes_labels_worse_on_the_same_features(plain):
    drifted = _day(_drifted("label_rule"), DRIFT_DAY)
    reference = _day(plain, DRIFT_DAY)
    assert _unchanged_columns(reference, drifted) == set(plain.columns) - {"credit_score"}
    poor = (drifted["credit_score"] == "Poor").mean()
    poor_before = (reference["credit_score"] == "Poor").mean()
    good = (drifted["credit_score"] == "Good").mean()
    good_before = (reference["credit_score"] == "Good").mean()
    assert poor > poor_before + 0.10
    assert good < good_before - 0.05
    # Only downgrades: no row's label improves.
    order = {"Good": 0, "Standard": 1, "Poor": 2}
    assert np.all(
        drifted["credit_score"].map(order).to_numpy() >= reference["credit_score"].map(order)
    )


def test_a_combined_drift_makes_each_of_its_changes_and_only_those(plain):
    """An income and label-rule drift: the features of an income drift, and labels worse
    than the income drift alone gives."""
    combined = _day(_drifted("income+label_rule"), DRIFT_DAY)
    income = _day(_drifted("income"), DRIFT_DAY)
    reference = _day(plain, DRIFT_DAY)
    features = [name for name in plain.columns if name != "credit_score"]
    assert _unchanged_columns(income[features], combined[features]) == set(features)
    assert not _same(income["credit_score"], combined["credit_score"])
    order = {"Good": 0, "Standard": 1, "Poor": 2}
    assert np.all(
        combined["credit_score"].map(order).to_numpy() >= income["credit_score"].map(order)
    )
    assert (combined["credit_score"] == "Poor").mean() > (
        reference["credit_score"] == "Poor"
    ).mean() + 0.10
    assert Drift("income+label_rule", DRIFT_DAY).kinds == ("income", "label_rule")
    assert "income+label_rule" in DRIFT_CHOICES and "label_rule" in DRIFT_CHOICES


def test_an_unknown_drift_kind_is_refused_by_name():
    with pytest.raises(IngestError, match="unknown drift kind 'weather'.*income"):
        Drift("weather", DRIFT_DAY)
    with pytest.raises(IngestError, match="unknown drift kind 'income\\+weather'"):
        Drift("income+weather", DRIFT_DAY)
    with pytest.raises(IngestError, match="unknown drift kind ''"):
        Drift("", DRIFT_DAY)


def test_seed_synthetic_command_takes_the_drift_knob(cli_runner, sqlite_url):
    from sqlalchemy import create_engine, func, select

    from credit_platform.cli.main import main
    from credit_platform.core.schema import credit_score_features

    arguments = ["seed", "synthetic", "--customers=400", "--days=2", "--start=2025-05-01"]
    result = cli_runner.invoke(
        main,
        [*arguments, "--drift-from=2025-05-02", "--drift-kind=occupation+label_rule", "--quiet"]
        + [f"--db-url={sqlite_url}"],
    )
    assert result.exit_code == 0, result.output
    assert "occupation+label_rule drift from 2025-05-02" in result.output
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            table = credit_score_features
            shares = dict(
                connection.execute(
                    select(table.c.date, func.avg(table.c.occupation == "Developer"))
                    .where(table.c.occupation.is_not(None))
                    .group_by(table.c.date)
                ).all()
            )
    finally:
        engine.dispose()
    before, after = (shares[day] for day in sorted(shares))
    assert before < 0.15 < 0.35 < after
