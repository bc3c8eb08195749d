"""Seeded synthetic data: N customers x D days with Kaggle-like distributions.

Every value is a pure function of (seed, customer number, calendar date): random numbers
come from a counter-based hash, not from a stateful generator. So a rerun writes the same
rows (idempotent), a longer or wider run extends a shorter one with identical overlapping
rows, and any day can be generated on its own (the loader streams day by day).

Each customer has a base profile driven by a hidden risk factor; days add small drift.
Labels come from a latent score computed from the day's features (delays, delayed
payments, debt against salary, credit mix, interest rate, credit history, minimum-payment
behaviour, inquiries) plus noise, cut at fixed thresholds into roughly Kaggle's shares:
Standard 53 %, Poor 29 %, Good 18 %. Afterwards about 4 % of each feature is blanked and a
few values are corrupted the way Kaggle's are (-500 ages, -100 loans, the 10000 and
-3.33e26 sentinels, bad SSNs, ...), so the shared cleaning rules null and count them.

The seed's features are drawn by the code below, tied to each other (salary from income,
instalments from loans and salary, history capped by age). A feature declared later draws
as its declaration says (`NormalDraw`, `ChoiceDraw` in `core.features`), from random
streams named after it, so declaring one leaves every other column's values as they were.

A drift knob (`Drift`) changes the world from a chosen day on, for simulations that must
show a served model going stale; rows before that day are exactly those of a run without
drift. Each kind changes one thing, seeded like everything else:

- `income`: annual income and monthly salary fall to INCOME_DRIFT_FACTOR of their value
  (amounts derived from the salary, such as the EMI, follow; so do labels through debt
  against salary);
- `occupation`: customers take occupations from a new mix (DRIFTED_OCCUPATION_SHARES:
  mostly developers and entrepreneurs) instead of the even one;
- `label_rule`: the same features earn worse labels (the cut points of the latent score
  move down by LABEL_RULE_SHIFT), features unchanged: concept drift only labels reveal.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from credit_platform.core.data_contract import LISTING_FEATURES
from credit_platform.core.features import (
    FEATURES,
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LABELS,
    LOAN_TYPES,
    MODEL_FEATURES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    TARGET,
    ChoiceDraw,
    HandWritten,
    NormalDraw,
)
from credit_platform.ingest.cleaning import (
    CATEGORY_VALUES,
    NAME_LENGTH,
    CleaningLog,
    apply_category_rule,
    apply_length_rule,
    apply_loan_list_rule,
    apply_numeric_rules,
    apply_ssn_rule,
    storable_rows,
)
from credit_platform.ingest.writer import (
    DEFAULT_CHUNK_ROWS,
    IngestError,
    IngestSummary,
    SourceFrames,
    SourceWriter,
)

MAX_CUSTOMERS = 9_999_999
MAX_SEED = 2**32 - 1
MISSING_RATE = 0.04
CORRUPT_RATE = 0.004
BATCH_ROWS = 20_000  # rows generated and cleaned together (whole days)
# Cut points of the noisy latent score: its 18th and 71st percentiles, measured on 100,000
# generated rows (50,000 customers on 2025-01-01 and 2025-06-01).
GOOD_BELOW = -2.21
POOR_ABOVE = 1.41
# credit_history_age is given at this date and grows by a month every ~30.44 days.
HISTORY_REFERENCE = date(2025, 1, 1)

PAYMENT_BEHAVIOUR_SHARES = (0.123, 0.195, 0.147, 0.276, 0.148, 0.111)  # order of the values
_FIRST_NAMES = (
    "Aaron", "Adele", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines",
    "Jonas", "Kemi", "Lars", "Mina", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven",
    "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoltan",
)  # fmt: skip
_LAST_NAMES = (
    "Abbott", "Becker", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
    "Ito", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quinn", "Rossi", "Silva", "Tanaka", "Urban", "Varga", "Weber", "Yilmaz", "Zhang",
)  # fmt: skip

# The drift knob (see the module docstring).
DRIFT_KINDS: tuple[str, ...] = ("income", "occupation", "label_rule")
# Every kind alone and every combination of kinds ("income+label_rule", ...), in that order.
DRIFT_CHOICES: tuple[str, ...] = tuple(
    "+".join(kinds)
    for size in range(1, len(DRIFT_KINDS) + 1)
    for kinds in itertools.combinations(DRIFT_KINDS, size)
)
INCOME_DRIFT_FACTOR = 0.6
# Occupation shares after an occupation drift, in OCCUPATION_VALUES order: developers and
# entrepreneurs take 45 % and 25 %, the thirteen others share the rest evenly.
DRIFTED_OCCUPATION_SHARES = tuple(
    0.45 if name == "Developer" else 0.25 if name == "Entrepreneur" else 0.30 / 13
    for name in OCCUPATION_VALUES
)
LABEL_RULE_SHIFT = 0.8

# The features this module's own code draws (the seed's, tied to each other), and those
# drawn as their declaration says (`NormalDraw`, `ChoiceDraw` in `core.features`), each
# from random streams of its own, so declaring one changes no other column's values.
HAND_WRITTEN_FEATURES: tuple[str, ...] = tuple(
    feature.name for feature in FEATURES if isinstance(feature.synthetic, HandWritten)
)
DECLARED_DRAWS = {
    feature.name: feature
    for feature in FEATURES
    if isinstance(feature.synthetic, NormalDraw | ChoiceDraw)
}


@dataclass(frozen=True)
class Drift:
    """Change `kind` (one of DRIFT_KINDS, or several joined by "+", such as
    "income+label_rule": a shift of the features and of the labelling rule at once) for
    every row dated `start` or later."""

    kind: str
    start: date

    def __post_init__(self) -> None:
        unknown = [name for name in self.kinds if name not in DRIFT_KINDS]
        if unknown or not self.kind:
            raise IngestError(
                f"unknown drift kind {self.kind!r}: choose one of {', '.join(DRIFT_KINDS)}, "
                "or several joined by '+'"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this drift combines."""
        return tuple(self.kind.split("+"))

    def rows(self, kind: str, days: np.ndarray) -> np.ndarray:
        """Which rows (by day ordinal) this drift changes in the way `kind` names."""
        days = np.asarray(days)
        if kind not in self.kinds:
            return np.zeros(days.shape, dtype=bool)
        return days >= self.start.toordinal()

    def describe(self) -> str:
        return f"{self.kind} drift from {self.start}"


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each value (wrapping math)."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(30))
        values = values * np.uint64(0xBF58476D1CE4E5B9)
        values = values ^ (values >> np.uint64(27))
        values = values * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def _stream_key(seed: int, stream: str) -> np.ndarray:
    name = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "big")
    key = _mix(np.array([seed], dtype=np.uint64))
    return _mix(key ^ np.array([name], dtype=np.uint64))


class _Draws:
    """Random numbers as a function of (seed, stream name, day, customer number).

    `days` is one day number for every row, or a day number per row (several days at once).
    """

    def __init__(self, seed: int, customers: np.ndarray, days: int | np.ndarray = 0) -> None:
        self.seed = seed
        self.customers = np.asarray(customers).astype(np.uint64)
        self.days = np.asarray(days).astype(np.uint64)

    def uniform(self, stream: str) -> np.ndarray:
        key = _stream_key(self.seed, stream)
        with np.errstate(over="ignore"):
            bits = _mix(_mix(key ^ self.days) ^ (self.customers * _GOLDEN))
        return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, stream: str) -> np.ndarray:
        """Standard normal by Box-Muller from two independent uniform streams."""
        radius = np.sqrt(-2.0 * np.log(self.uniform(f"{stream}/radius")))
        return radius * np.cos(2.0 * np.pi * self.uniform(f"{stream}/angle"))

    def integers(self, stream: str, low: int, high: int) -> np.ndarray:
        """Integers in [low, high)."""
        return low + np.floor(self.uniform(stream) * (high - low)).astype(np.int64)

    def choice(self, stream: str, values: tuple, shares: tuple | None = None) -> np.ndarray:
        options = np.asarray(values, dtype=object)
        if shares is None:
            return options[self.integers(stream, 0, len(values))]
        edges = np.cumsum(shares) / np.sum(shares)
        return options[np.minimum(np.searchsorted(edges, self.uniform(stream)), len(values) - 1)]


def _loan_listing(kinds: list[str]) -> str | None:
    """Kaggle's way of writing a loan list: "A", "A, and B", "A, B, and C"."""
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds[0]
    return ", ".join(kinds[:-1]) + ", and " + kinds[-1]


def customer_profiles(customers: np.ndarray, seed: int) -> pd.DataFrame:
    """The stable part of each customer (indexed like `customers`)."""
    draw = _Draws(seed, customers)
    risk = draw.normal("risk")
    age = np.clip(np.round(35 + 10 * draw.normal("age") - 2 * risk), 18, 56)
    income = np.clip(np.exp(np.log(37_000) + 0.75 * draw.normal("income") - 0.15 * risk),
                     7_000, 180_000)  # fmt: skip
    salary = income / 12 * (0.78 + 0.1 * draw.uniform("salary"))
    loans = np.clip(np.round(3.5 + 2 * draw.normal("loans") + risk), 0, 9).astype(int)
    kind_index = np.stack([draw.integers(f"loan_kind_{k}", 0, len(LOAN_TYPES)) for k in range(9)])
    listings = [
        _loan_listing([LOAN_TYPES[kind_index[k, row]] for k in range(count)])
        for row, count in enumerate(loans)
    ]
    mix_score = risk + 0.8 * draw.normal("mix")
    credit_mix = np.where(mix_score < -0.65, "Good", np.where(mix_score > 0.9, "Bad", "Standard"))
    min_score = risk + 0.9 * draw.normal("min_amount")
    min_amount = np.where(min_score > -0.05, "Yes", "No")
    min_amount = np.where(draw.uniform("min_amount_nm") < 0.12, "NM", min_amount)
    history_cap = (age - 14) * 12
    history = np.clip(np.round(225 - 60 * risk + 70 * draw.normal("history")), 1, history_cap)
    ssn = [
        f"{a:03d}-{b:02d}-{c:04d}"
        for a, b, c in zip(
            draw.integers("ssn_a", 1, 900), draw.integers("ssn_b", 1, 100),
            draw.integers("ssn_c", 1, 10_000), strict=True,
        )
    ]  # fmt: skip
    names = (
        draw.choice("first_name", _FIRST_NAMES).astype(str)
        + " "
        + draw.choice("last_name", _LAST_NAMES).astype(str)
    )
    return pd.DataFrame(
        {
            "customer": customers,
            "risk": risk,
            "noise": draw.normal("label_noise"),
            "age": age.astype(int),
            "occupation": draw.choice("occupation", OCCUPATION_VALUES),
            "annual_income": np.round(income, 2),
            "monthly_inhand_salary": salary,
            "num_bank_accounts": np.clip(np.round(5.5 + 2.5 * draw.normal("banks") + risk), 0, 11),
            "num_credit_card": np.clip(
                np.round(5.5 + 2 * draw.normal("cards") + 0.8 * risk), 0, 11
            ),
            "interest_rate": np.clip(np.round(14 + 6 * draw.normal("rate") + 5 * risk), 1, 34),
            "num_of_loan": loans,
            "type_of_loan": listings,
            "delay_from_due_date": np.clip(18 + 10 * draw.normal("delay") + 9 * risk, -5, 62),
            "num_of_delayed_payment": np.clip(13 + 4 * draw.normal("delayed") + 4 * risk, 0, 26),
            "changed_credit_limit": np.clip(10 + 5 * draw.normal("limit") + 2 * risk, -6, 35),
            "num_credit_inquiries": np.clip(6 + 3 * draw.normal("inquiries") + 2.5 * risk, 0, 16),
            "credit_mix": credit_mix,
            "outstanding_debt": np.clip(
                np.exp(np.log(1_100) + 0.7 * draw.normal("debt") + 0.35 * risk), 0.25, 4_990
            ),
            "credit_utilization_ratio": np.clip(32 + 5 * draw.normal("utilization"), 20, 48),
            "history_at_reference": history,
            "payment_of_min_amount": min_amount,
            "emi_share": 0.006 + 0.012 * draw.uniform("emi"),
            "invest_share": 0.06 * np.exp(0.6 * draw.normal("invest")),
            "payment_behaviour": draw.choice(
                "behaviour", PAYMENT_BEHAVIOUR_VALUES, PAYMENT_BEHAVIOUR_SHARES
            ),
            "name": names,
            "ssn": ssn,
            **{
                _profile_column(name): _declared_profile(feature, draw, risk)
                for name, feature in DECLARED_DRAWS.items()
            },
        }
    )


def _profile_column(name: str) -> str:
    """A declared draw's stable part in the profiles (apart from the day's value)."""
    return f"declared/{name}"


def _declared_profile(feature, draw: _Draws, risk: np.ndarray) -> np.ndarray:
    """The customer's own part of a declared draw: the number before its daily move, or
    the category."""
    spec = feature.synthetic
    if isinstance(spec, ChoiceDraw):
        return draw.choice(f"declared/{feature.name}", feature.values, spec.shares)
    return spec.mean + spec.sd * draw.normal(f"declared/{feature.name}") + spec.risk * risk


def _declared_values(feature, profile: np.ndarray, draw: _Draws) -> np.ndarray:
    """A declared feature's value on each row's day, within its draw's bounds."""
    spec = feature.synthetic
    if isinstance(spec, ChoiceDraw):
        return profile
    values = profile.astype(float)
    if spec.daily_sd:
        values = values + spec.daily_sd * draw.normal(f"declared/{feature.name}/day")
    values = np.clip(values, spec.low, spec.high)
    if feature.kind == "integer":
        return np.round(values).astype(int)
    return np.round(values, spec.digits)


def _drifted_profiles(
    profiles: pd.DataFrame, days: np.ndarray, seed: int, drift: Drift | None
) -> pd.DataFrame:
    """The profiles as they are on each row's day under `drift` (unchanged without one)."""
    if drift is None:
        return profiles
    profiles = profiles.copy()
    poorer = drift.rows("income", days)
    if poorer.any():
        for name in ("annual_income", "monthly_inhand_salary"):
            values = profiles[name].to_numpy(dtype=float)
            profiles[name] = np.where(poorer, np.round(values * INCOME_DRIFT_FACTOR, 2), values)
    moved = drift.rows("occupation", days)
    if moved.any():
        # One new occupation per customer (not per day): a drawn job stays the same.
        stable = _Draws(seed, profiles["customer"].to_numpy())
        new = stable.choice("drift/occupation", OCCUPATION_VALUES, DRIFTED_OCCUPATION_SHARES)
        profiles["occupation"] = np.where(moved, new, profiles["occupation"].to_numpy())
    return profiles


def _true_values(
    profiles: pd.DataFrame, days: np.ndarray, seed: int, drift: Drift | None = None
) -> pd.DataFrame:
    """Real values of each row's customer (`profiles`, one row per output row) on the
    row's day (`days`, ordinals): the profile plus small day-to-day drift, and from its
    start day the drift knob's change."""
    profiles = _drifted_profiles(profiles, days, seed, drift)
    draw = _Draws(seed, profiles["customer"].to_numpy(), days)
    rows = len(profiles)

    def wobble(stream: str, scale: float) -> np.ndarray:
        return 1 + scale * draw.normal(stream)

    def step(stream: str) -> np.ndarray:
        """-1, 0 or +1: a count that occasionally moves by one."""
        u = draw.uniform(stream)
        return np.where(u < 0.05, -1, np.where(u > 0.95, 1, 0))

    months_since_reference = np.floor((days - HISTORY_REFERENCE.toordinal()) / 30.44)
    salary = profiles["monthly_inhand_salary"].to_numpy()
    loans = profiles["num_of_loan"].to_numpy()
    emi = np.clip(loans * salary * profiles["emi_share"] * wobble("emi", 0.01), 0, 1_700)
    invested = np.clip(salary * profiles["invest_share"] * wobble("invest", 0.08), 0, 1_850)
    balance = np.clip(0.12 * salary + 150 + 60 * draw.normal("balance"), 1, 1_550)
    behaviour = np.where(
        draw.uniform("behaviour_change") < 0.2,
        draw.choice("behaviour_today", PAYMENT_BEHAVIOUR_VALUES, PAYMENT_BEHAVIOUR_SHARES),
        profiles["payment_behaviour"].to_numpy(),
    )
    columns = dict(
        {
            "age": profiles["age"].to_numpy(),
            "occupation": profiles["occupation"].to_numpy(),
            "annual_income": profiles["annual_income"].to_numpy(),
            "monthly_inhand_salary": salary,
            "num_bank_accounts": profiles["num_bank_accounts"].to_numpy(),
            "num_credit_card": profiles["num_credit_card"].to_numpy(),
            "interest_rate": profiles["interest_rate"].to_numpy(),
            "num_of_loan": loans,
            "type_of_loan": profiles["type_of_loan"].to_numpy(),
            "delay_from_due_date": np.clip(
                np.round(profiles["delay_from_due_date"] + 2 * draw.normal("delay")), -5, 67
            ),
            "num_of_delayed_payment": np.clip(
                np.round(profiles["num_of_delayed_payment"]) + step("delayed"), 0, 28
            ),
            "changed_credit_limit": np.round(
                profiles["changed_credit_limit"] + 0.3 * draw.normal("limit"), 2
            ),
            "num_credit_inquiries": np.clip(
                np.round(profiles["num_credit_inquiries"]) + step("inquiries"), 0, 17
            ),
            "credit_mix": profiles["credit_mix"].to_numpy(),
            "outstanding_debt": np.round(profiles["outstanding_debt"] * wobble("debt", 0.02), 2),
            "credit_utilization_ratio": np.clip(
                profiles["credit_utilization_ratio"] + 2 * draw.normal("utilization"), 20, 50
            ),
            "credit_history_age": np.maximum(
                profiles["history_at_reference"] + months_since_reference, 1
            ),
            "payment_of_min_amount": profiles["payment_of_min_amount"].to_numpy(),
            "total_emi_per_month": emi,
            "amount_invested_monthly": invested,
            "payment_behaviour": behaviour,
            "monthly_balance": balance,
        },
        **{
            name: _declared_values(feature, profiles[_profile_column(name)].to_numpy(), draw)
            for name, feature in DECLARED_DRAWS.items()
        },
    )
    values = pd.DataFrame({name: columns[name] for name in MODEL_FEATURES}, index=range(rows))
    shifted = drift.rows("label_rule", days) if drift else np.zeros(rows, dtype=bool)
    values[TARGET] = _labels(
        values, profiles["noise"].to_numpy(), draw.normal("label_day"), shifted
    )
    return values


def latent_score(values: pd.DataFrame) -> np.ndarray:
    """Credit risk from the features (higher is worse), before noise."""
    debt_to_salary = np.log(values["outstanding_debt"] / values["monthly_inhand_salary"])
    mix = values["credit_mix"].map({"Good": -0.8, "Standard": 0.0, "Bad": 0.8})
    min_amount = values["payment_of_min_amount"].map({"Yes": 0.4, "No": -0.3, "NM": 0.0})
    return (
        0.04 * (values["delay_from_due_date"] - 18)
        + 0.08 * (values["num_of_delayed_payment"] - 13)
        + 0.25 * debt_to_salary
        + mix
        + 0.05 * (values["interest_rate"] - 14)
        - 0.006 * (values["credit_history_age"] - 225)
        + min_amount
        + 0.05 * (values["num_credit_inquiries"] - 6)
    ).to_numpy(dtype=float)


def _labels(
    values: pd.DataFrame,
    customer_noise: np.ndarray,
    day_noise: np.ndarray,
    shifted: np.ndarray | None = None,
) -> np.ndarray:
    """Labels cut from the noisy latent score; `shifted` rows use cut points lowered by
    LABEL_RULE_SHIFT (the label-rule drift: the same score earns a worse label)."""
    score = latent_score(values) + 0.8 * customer_noise + 0.4 * day_noise
    shift = np.where(shifted, LABEL_RULE_SHIFT, 0.0) if shifted is not None else 0.0
    good_below, poor_above = GOOD_BELOW - shift, POOR_ABOVE - shift
    return np.where(score < good_below, "Good", np.where(score > poor_above, "Poor", "Standard"))


def _corrupt(values: pd.DataFrame, draw: _Draws) -> pd.DataFrame:
    """Kaggle's kinds of damage, each in a few rows; then ~4 % of each feature blanked."""
    values = values.astype({name: "object" for name in MODEL_FEATURES})
    rows = len(values)

    def hit(stream: str, rate: float = CORRUPT_RATE) -> np.ndarray:
        return draw.uniform(f"corrupt/{stream}") < rate

    def huge(stream: str, low: float, high: float) -> np.ndarray:
        return np.round(low + (high - low) * draw.uniform(f"corrupt/{stream}/size"))

    age_bad = np.where(draw.uniform("corrupt/age/kind") < 0.4, -500, huge("age", 101, 8_700))
    corruptions = {
        "age": (hit("age"), age_bad),
        "num_bank_accounts": (hit("banks"), huge("banks", 26, 1_750)),
        "num_credit_card": (hit("cards"), huge("cards", 21, 1_500)),
        "interest_rate": (hit("rate"), huge("rate", 99, 5_800)),
        "num_of_loan": (hit("loans"), np.full(rows, -100)),
        "num_of_delayed_payment": (hit("delayed"), -huge("delayed_negative", 1, 3)),
        "num_credit_inquiries": (hit("inquiries"), huge("inquiries", 46, 2_600)),
        "annual_income": (hit("income"), values["annual_income"].to_numpy() * 100.0),
        "total_emi_per_month": (hit("emi"), huge("emi", 2_004, 82_000)),
        "amount_invested_monthly": (hit("invest", 0.03), np.full(rows, 10_000.0)),
        "monthly_balance": (hit("balance", 0.001), np.full(rows, -3.333333333333333e26)),
        "credit_mix": (hit("mix"), np.full(rows, "_", dtype=object)),
        "ssn": (hit("ssn", 0.01), np.full(rows, "#F%$D@*&8", dtype=object)),
    }
    for name, (mask, bad) in corruptions.items():
        values.loc[mask, name] = bad[mask]
    for name in (*MODEL_FEATURES, "name"):
        values.loc[draw.uniform(f"missing/{name}") < MISSING_RATE, name] = None
    return values


def _clean(values: pd.DataFrame, log: CleaningLog) -> pd.DataFrame:
    """The same rules as the Kaggle loader, on typed values instead of text."""
    clean = values[["id", "customer_id", "date", TARGET]].copy()
    for name in INTEGER_FEATURES + FLOAT_FEATURES:
        log.count_missing(name, values[name])
        clean[name] = apply_numeric_rules(name, values[name], log)
    for name, options in CATEGORY_VALUES.items():
        log.count_missing(name, values[name])
        clean[name] = apply_category_rule(name, values[name], options, log)
    for name in LISTING_FEATURES:
        log.count_missing(name, values[name])
        clean[name] = apply_loan_list_rule(values[name], log)
    log.count_missing("name", values["name"])
    clean["name"] = apply_length_rule("name", values["name"], NAME_LENGTH, log)
    log.count_missing("ssn", values["ssn"])
    clean["ssn"] = apply_ssn_rule(values["ssn"], log)
    return clean.loc[storable_rows(clean, LABELS, log)]


def _check_arguments(customers: int, days: int, seed: int) -> None:
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise IngestError(f"customers must be between 1 and {MAX_CUSTOMERS:,}, got {customers}")
    if days < 1:
        raise IngestError(f"days must be at least 1, got {days}")
    if not 0 <= seed <= MAX_SEED:
        raise IngestError(f"seed must be between 0 and {MAX_SEED}, got {seed}")


def synthetic_days(
    profiles: pd.DataFrame,
    days: list[date],
    seed: int,
    log: CleaningLog,
    drift: Drift | None = None,
) -> tuple[SourceFrames, int]:
    """Cleaned rows of every profiled customer on each of `days` (day-major order), and
    how many rows were generated."""
    count = len(profiles)
    rows = profiles.iloc[np.tile(np.arange(count), len(days))].reset_index(drop=True)
    ordinals = np.repeat([day.toordinal() for day in days], count)
    values = _true_values(rows, ordinals, seed, drift)
    customer = pd.Series([f"{number:07d}" for number in profiles["customer"]] * len(days))
    stamp = pd.Series(np.repeat([f"{day:%Y%m%d}" for day in days], count))
    values["id"] = f"syn{seed}-" + customer + "-" + stamp
    values["customer_id"] = f"SYN{seed}-" + customer
    values["date"] = np.repeat(np.array(days, dtype=object), count)
    values["name"] = rows["name"].to_numpy()
    values["ssn"] = rows["ssn"].to_numpy()
    damaged = _corrupt(values, _Draws(seed, rows["customer"].to_numpy(), ordinals))
    return SourceFrames.from_wide(_clean(damaged, log)), len(values)


def _day_batches(customers: int, days: int, start: date) -> list[list[date]]:
    """Consecutive days grouped so that one batch holds about BATCH_ROWS rows."""
    per_batch = max(1, BATCH_ROWS // customers)
    every_day = [start + timedelta(days=offset) for offset in range(days)]
    return [every_day[i : i + per_batch] for i in range(0, days, per_batch)]


def build_synthetic(
    customers: int, days: int, start: date, seed: int = 0, drift: Drift | None = None
) -> tuple[SourceFrames, IngestSummary]:
    """All rows of the run, cleaned, with the summary of what cleaning did."""
    _check_arguments(customers, days, seed)
    profiles = customer_profiles(np.arange(1, customers + 1), seed)
    summary = IngestSummary(source=_describe_run(customers, days, start, seed, drift))
    parts = []
    for batch in _day_batches(customers, days, start):
        log = CleaningLog()
        frames, generated = synthetic_days(profiles, batch, seed, log, drift)
        summary.add_batch(generated, frames, log)
        parts.append(frames)
    return SourceFrames.concat(parts), summary


def generate_synthetic(
    customers: int, days: int, start: date, seed: int = 0, drift: Drift | None = None
) -> SourceFrames:
    """Pure: the cleaned rows of `customers` x `days` starting at `start`, for this seed
    (and drift)."""
    return build_synthetic(customers, days, start, seed, drift)[0]


def _describe_run(
    customers: int, days: int, start: date, seed: int, drift: Drift | None = None
) -> str:
    last = start + timedelta(days=days - 1)
    described = (
        f"synthetic: {customers:,} customers x {days:,} days ({start} .. {last}), seed {seed}"
    )
    return f"{described}, {drift.describe()}" if drift else described


def seed_synthetic(
    engine: Engine,
    *,
    customers: int,
    days: int,
    start: date,
    seed: int = 0,
    progress: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    drift: Drift | None = None,
) -> IngestSummary:
    """Generate and store the run a few days at a time (memory stays at one batch)."""
    started = time.perf_counter()
    _check_arguments(customers, days, seed)
    profiles = customer_profiles(np.arange(1, customers + 1), seed)
    summary = IngestSummary(source=_describe_run(customers, days, start, seed, drift))
    with SourceWriter(
        engine,
        total_rows=customers * days,
        chunk_rows=chunk_rows,
        progress=progress,
        description="synthetic rows",
    ) as writer:
        for batch in _day_batches(customers, days, start):
            log = CleaningLog()
            frames, generated = synthetic_days(profiles, batch, seed, log, drift)
            summary.add_batch(generated, frames, log)
            writer.write(frames)
    summary.rows_written = dict(writer.written)
    summary.seconds = time.perf_counter() - started
    return summary


# Every declared feature is drawn, by this module's code or by its declaration.
assert set(HAND_WRITTEN_FEATURES) | set(DECLARED_DRAWS) == set(MODEL_FEATURES)
