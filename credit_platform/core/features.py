"""The model's input features, declared once.

Each input feature is one `Feature` record in `FEATURES`: its name, kind, what it means,
its plausible range (the data contract), the filler a source writes for "unknown", the
value a plausible applicant has (the API's smoke row) and how the synthetic generator draws
it. Everything else is derived from this tuple when the modules load: the name lists below,
the data contract's ranges and categories (`core.data_contract`), the store's columns
(`core.schema`, hence `sql/` through `credit-platform sql --write`), the API's request model
(`api.schemas`), the smoke row (`api.predictor`), the synthetic generator
(`ingest.synthetic`), the load-test and baseline bodies (`bench/`) and the test fixtures.
README "Adding a feature" walks through adding one.

Models are not tied to this tuple: a saved model scores with the features it was trained
on (its own `feature_names_`), so adding a feature here leaves every saved model serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TARGET = "credit_score"
LABELS: tuple[str, ...] = ("Good", "Standard", "Poor")

# Allowed values of the closed categories; anything else is rejected at the API and
# nulled (with a reason) by the loaders.
CREDIT_MIX_VALUES: tuple[str, ...] = ("Good", "Standard", "Bad")
PAYMENT_OF_MIN_AMOUNT_VALUES: tuple[str, ...] = ("Yes", "No", "NM")
PAYMENT_BEHAVIOUR_VALUES: tuple[str, ...] = (
    "High_spent_Small_value_payments",
    "High_spent_Medium_value_payments",
    "High_spent_Large_value_payments",
    "Low_spent_Small_value_payments",
    "Low_spent_Medium_value_payments",
    "Low_spent_Large_value_payments",
)
OCCUPATION_VALUES: tuple[str, ...] = (
    "Accountant",
    "Architect",
    "Developer",
    "Doctor",
    "Engineer",
    "Entrepreneur",
    "Journalist",
    "Lawyer",
    "Manager",
    "Mechanic",
    "Media_Manager",
    "Musician",
    "Scientist",
    "Teacher",
    "Writer",
)
LOAN_TYPES: tuple[str, ...] = (
    "Auto Loan",
    "Credit-Builder Loan",
    "Debt Consolidation Loan",
    "Home Equity Loan",
    "Mortgage Loan",
    "Not Specified",
    "Payday Loan",
    "Personal Loan",
    "Student Loan",
)

KINDS: tuple[str, ...] = ("integer", "float", "category", "text")
# The store's column for a closed value holds this many characters.
CATEGORY_LENGTH = 64


@dataclass(frozen=True)
class Filler:
    """A value a source writes for "unknown": exactly `equal`, or anything at or below
    `at_or_below`. It must lie outside the plausible range (the contract checks), so the
    serving path finds it by the range test alone."""

    description: str
    equal: float | None = None
    at_or_below: float | None = None


@dataclass(frozen=True)
class NormalDraw:
    """Synthetic draw of a number: per customer `mean + sd * z + risk * r`, with z a fresh
    standard normal and r the customer's hidden risk factor (positive `risk`: riskier
    customers have more of it), then per day `daily_sd * z'` added; clipped to [low, high]
    and rounded to whole numbers for integer features, to `digits` decimals otherwise."""

    mean: float
    sd: float
    low: float
    high: float
    risk: float = 0.0
    daily_sd: float = 0.0
    digits: int = 2


@dataclass(frozen=True)
class ChoiceDraw:
    """Synthetic draw of a closed category: one value per customer, with `shares` in the
    order of the feature's `values` (even shares when None)."""

    shares: tuple[float, ...] | None = None


@dataclass(frozen=True)
class HandWritten:
    """Drawn by `ingest.synthetic`'s own profile code (the seed's features, whose draws are
    tied to each other: salary from income, instalments from loans, history capped by
    age). A new feature declares a `NormalDraw` or `ChoiceDraw` instead."""


HAND_WRITTEN = HandWritten()


@dataclass(frozen=True)
class Feature:
    """One model input feature (see the module docstring for where each field is used).

    - `kind`: "integer" (whole numbers, INTEGER column), "float" (DOUBLE), "category" (a
      CatBoost categorical of closed `values`) or "text" (a CatBoost text feature: one of
      `values`, or with `listing` a comma list of them, as Kaggle writes loan types);
    - `unit`: what a number counts, for the API's field description;
    - `title`: the feature in words, for reasons and documentation;
    - `plausible`: inclusive range of believable values (numbers); outside it a value is
      made missing, at loading and at scoring alike;
    - `typical`: the range real data holds (numbers), from which load tests draw;
    - `example`: a plausible applicant's value (the smoke row every model must score);
    - `synthetic`: how the synthetic generator draws it;
    - `kaggle`: a column of the Kaggle CSV (a feature Kaggle lacks loads as missing).
    """

    name: str
    kind: str
    title: str
    example: Any
    synthetic: NormalDraw | ChoiceDraw | HandWritten
    unit: str = ""
    plausible: tuple[float, float] | None = None
    typical: tuple[float, float] | None = None
    values: tuple[str, ...] = ()
    listing: bool = False
    filler: Filler | None = None
    kaggle: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "float")

    def __post_init__(self) -> None:
        problems = []
        if not self.name.isidentifier() or self.name != self.name.lower():
            problems.append("the name must be a lower-case Python identifier")
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}")
        if self.numeric:
            if self.plausible is None or self.plausible[0] > self.plausible[1]:
                problems.append("a number needs a plausible (low, high) range")
            if self.values or self.listing:
                problems.append("a number takes no values")
            if isinstance(self.synthetic, ChoiceDraw):
                problems.append("a number is drawn by a NormalDraw")
        else:
            if not self.values:
                problems.append("a category or text feature needs its closed set of values")
            if self.plausible or self.typical or self.filler:
                problems.append("only numbers have ranges and fillers")
            if isinstance(self.synthetic, NormalDraw):
                problems.append("a category or text feature is drawn by a ChoiceDraw")
            if self.listing and self.kind != "text":
                problems.append("only a text feature is a listing")
            if not self.listing and max(map(len, self.values), default=0) > CATEGORY_LENGTH:
                problems.append(f"a value longer than {CATEGORY_LENGTH} characters")
        if self.numeric and self.plausible is not None:
            low, high = self.plausible
            if isinstance(self.example, bool) or not isinstance(self.example, int | float):
                problems.append("the example must be a number")
            elif not low <= self.example <= high:
                problems.append("the example must be a plausible value")
            filler = self.filler
            if filler is not None and (
                (filler.equal is not None and low <= filler.equal <= high)
                or (filler.at_or_below is not None and filler.at_or_below >= low)
            ):
                problems.append("a filler must lie outside the plausible range")
        if not self.numeric and not self.listing and self.example not in self.values:
            problems.append("the example must be one of the values")
        draw = self.synthetic
        shares = draw.shares if isinstance(draw, ChoiceDraw) else None
        if shares is not None and len(shares) != len(self.values):
            problems.append("ChoiceDraw needs one share per value")
        if isinstance(draw, NormalDraw) and self.plausible is not None:
            low, high = self.plausible
            if not low <= draw.low <= draw.high <= high:
                problems.append("the synthetic draw must stay inside the plausible range")
        if problems:
            raise ValueError(f"feature {self.name!r}: {'; '.join(problems)}")

    @property
    def typical_range(self) -> tuple[float, float]:
        """The numbers load tests draw from: `typical`, else the synthetic draw's bounds,
        else the plausible range."""
        if self.typical is not None:
            return self.typical
        if isinstance(self.synthetic, NormalDraw):
            return self.synthetic.low, self.synthetic.high
        assert self.plausible is not None
        return self.plausible


# The model features in the order the store and the model use. Ranges come from the real
# Kaggle data: true values (`typical`) sit well inside the plausible ranges, and the values
# its author corrupted far outside them (noted per feature).
FEATURES: tuple[Feature, ...] = (
    # corrupted: -500, 169 .. 8,678
    Feature(
        "age", "integer", "Age", 35, HAND_WRITTEN,
        unit="years", plausible=(14, 100), typical=(14, 56), kaggle=True,
    ),
    Feature(
        "occupation", "category", "Occupation", "Scientist", HAND_WRITTEN,
        values=OCCUPATION_VALUES, kaggle=True,
    ),
    # corrupted: up to 23.8 million
    Feature(
        "annual_income", "float", "Annual income", 42_000.0, HAND_WRITTEN,
        unit="per year", plausible=(0, 200_000), typical=(7_006, 179_987), kaggle=True,
    ),
    Feature(
        "monthly_inhand_salary", "float", "Monthly take-home pay", 3_400.0, HAND_WRITTEN,
        unit="per month", plausible=(0, 20_000), typical=(303, 15_205), kaggle=True,
    ),
    # corrupted: -1, 26 .. 1,747
    Feature(
        "num_bank_accounts", "integer", "Number of bank accounts", 4, HAND_WRITTEN,
        unit="count", plausible=(0, 20), typical=(0, 11), kaggle=True,
    ),
    # corrupted: 21 .. 1,499
    Feature(
        "num_credit_card", "integer", "Number of credit cards", 4, HAND_WRITTEN,
        unit="count", plausible=(0, 20), typical=(0, 11), kaggle=True,
    ),
    # corrupted: 99 .. 5,773
    Feature(
        "interest_rate", "integer", "Interest rate", 11, HAND_WRITTEN,
        unit="percent", plausible=(0, 50), typical=(1, 34), kaggle=True,
    ),
    # corrupted: -100, 18 .. 1,495
    Feature(
        "num_of_loan", "integer", "Number of loans", 2, HAND_WRITTEN,
        unit="count", plausible=(0, 12), typical=(0, 9), kaggle=True,
    ),
    Feature(
        "type_of_loan", "text", "Loan types", "Auto Loan, and Personal Loan", HAND_WRITTEN,
        values=LOAN_TYPES, listing=True, kaggle=True,
    ),
    Feature(
        "delay_from_due_date", "integer", "Payment delay", 12, HAND_WRITTEN,
        unit="days; negative means paid early", plausible=(-30, 180), typical=(-5, 67),
        kaggle=True,
    ),
    # corrupted: -3 .. -1, 47 .. 4,281
    Feature(
        "num_of_delayed_payment", "integer", "Number of delayed payments", 8, HAND_WRITTEN,
        unit="count", plausible=(0, 40), typical=(0, 28), kaggle=True,
    ),
    Feature(
        "changed_credit_limit", "float", "Change of credit limit", 6.5, HAND_WRITTEN,
        unit="percent change", plausible=(-50, 100), typical=(-6.5, 35), kaggle=True,
    ),
    # corrupted: 46 .. 2,554
    Feature(
        "num_credit_inquiries", "integer", "Number of credit inquiries", 4, HAND_WRITTEN,
        unit="count", plausible=(0, 30), typical=(0, 17), kaggle=True,
    ),
    Feature(
        "credit_mix", "category", "Credit mix", "Standard", HAND_WRITTEN,
        values=CREDIT_MIX_VALUES, kaggle=True,
    ),
    Feature(
        "outstanding_debt", "float", "Outstanding debt", 1_250.0, HAND_WRITTEN,
        unit="amount", plausible=(0, 100_000), typical=(0.2, 5_000), kaggle=True,
    ),
    Feature(
        "credit_utilization_ratio", "float", "Credit utilization", 31.5, HAND_WRITTEN,
        unit="percent", plausible=(0, 100), typical=(20, 50), kaggle=True,
    ),
    Feature(
        "credit_history_age", "integer", "Length of credit history", 220, HAND_WRITTEN,
        unit="months", plausible=(0, 1_200), typical=(1, 404), kaggle=True,
    ),
    Feature(
        "payment_of_min_amount", "category", "Minimum payments", "No", HAND_WRITTEN,
        values=PAYMENT_OF_MIN_AMOUNT_VALUES, kaggle=True,
    ),
    # corrupted: whole numbers 2,004 .. 81,971 (above the salary)
    Feature(
        "total_emi_per_month", "float", "Monthly loan instalments", 80.0, HAND_WRITTEN,
        unit="per month", plausible=(0, 2_000), typical=(0, 1_779), kaggle=True,
    ),
    Feature(
        "amount_invested_monthly", "float", "Monthly investments", 150.0, HAND_WRITTEN,
        unit="per month", plausible=(0, 5_000), typical=(0, 1_888), kaggle=True,
        filler=Filler("10000 is Kaggle's filler", equal=10_000.0),  # "__10000__"
    ),
    Feature(
        "payment_behaviour", "text", "Payment behaviour", "Low_spent_Small_value_payments",
        HAND_WRITTEN, values=PAYMENT_BEHAVIOUR_VALUES, kaggle=True,
    ),
    Feature(
        "monthly_balance", "float", "Monthly balance", 320.0, HAND_WRITTEN,
        unit="per month", plausible=(-50_000, 50_000), typical=(0.7, 1_602), kaggle=True,
        # "__-333333333333333333333333333__"
        filler=Filler("<= -1e9 (Kaggle's -3.33e26 filler)", at_or_below=-1e9),
    ),
)  # fmt: skip

FEATURES_BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}


def _names(*kinds: str) -> tuple[str, ...]:
    return tuple(feature.name for feature in FEATURES if feature.kind in kinds)


# The model features in model order, and by kind (each list in that same order).
MODEL_FEATURES: tuple[str, ...] = tuple(FEATURES_BY_NAME)
INTEGER_FEATURES: tuple[str, ...] = _names("integer")
FLOAT_FEATURES: tuple[str, ...] = _names("float")
# Each numeric feature gets its own RobustScaler.
NUMERIC_FEATURES: tuple[str, ...] = _names("integer", "float")
CATEGORICAL_FEATURES: tuple[str, ...] = _names("category")
TEXT_FEATURES: tuple[str, ...] = _names("text")

if len(FEATURES_BY_NAME) != len(FEATURES):
    raise ValueError("a feature is declared twice")
if set(MODEL_FEATURES) & {"id", "customer_id", "date", "base_dt", "name", "ssn", TARGET}:
    raise ValueError("a feature takes the name of a key or label column")
