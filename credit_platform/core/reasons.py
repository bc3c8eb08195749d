"""Reason codes: why the model gave an applicant its class, in words a person can check.

CatBoost computes exact SHAP values for its own trees (`get_feature_importance(type=
"ShapValues")`): per row and class, one contribution per model column plus the expected
value, summing to the model's raw score of that class (the model's bias included, in the
expected value). A model whose prior correction is kept beside it as decision offsets
(`core.answers`) is explained with the class's offset added to the expected value, so the
sum is the score the class was chosen on, as for a model holding the correction in its bias
(the contributions are the same either way: an offset is a constant of the class).
Reasons are stated in the applicant's terms:

- each declared input feature is a reason of its own;
- a derived feature made from one input counts toward that input (the loan counts toward
  `type_of_loan`, the two halves of `payment_behaviour` toward it): their contributions
  are summed, which keeps the sum exact;
- a ratio of two inputs (`debt_to_income`, ...) is a reason of its own, with its own text
  and both inputs beside its value: splitting it between numerator and denominator would
  need a rule SHAP does not give.

So every row's reason contributions plus the expected value equal the raw score of the
class, whichever reasons are shown. `REASON_TEXTS` is the one table of their texts; the
names come from `core.features` and `core.derived_features`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from credit_platform.core.derived_features import (
    DERIVED_FEATURES,
    LOAN_COUNT_FEATURES,
    LOANS_LISTED,
    PAYMENT_VALUE,
    RATIO_FEATURES,
    SPENT_LEVEL,
)
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    FEATURES,
    MODEL_FEATURES,
    TEXT_FEATURES,
)

# The reasons a model can give: the declared inputs, then the ratios of two inputs.
REASON_CODES: tuple[str, ...] = MODEL_FEATURES + tuple(RATIO_FEATURES)
# How many reasons an explained answer and a batch score carry unless asked otherwise.
DEFAULT_REASONS = 3
RAISES, LOWERS = "raises", "lowers"

# The input a derived feature is made from, when it is made from one.
_FOLDED_INTO: dict[str, str] = {
    **dict.fromkeys((*LOAN_COUNT_FEATURES, LOANS_LISTED), "type_of_loan"),
    SPENT_LEVEL: "payment_behaviour",
    PAYMENT_VALUE: "payment_behaviour",
}


def reason_of(column: str) -> str:
    """The reason a model column's contribution counts toward."""
    if column in MODEL_FEATURES or column in RATIO_FEATURES:
        return column
    try:
        return _FOLDED_INTO[column]
    except KeyError:
        raise KeyError(f"{column!r} is no model column a reason is known for") from None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(noun: str, plural: str | None = None) -> Callable[[float], str]:
    return lambda value: f"{value:.0f} {noun if value == 1 else plural or noun + 's'}"


def _days_late(value: float) -> str:
    if value < 0:
        return f"Payments {-value:.0f} days early on average"
    return f"Payments {value:.0f} days late on average"


def _history(value: float) -> str:
    years, months = divmod(int(round(value)), 12)
    return f"Credit history of {years} years and {months} months"


def _behaviour(value: str) -> str:
    parts = value.split("_")
    if len(parts) == 5:  # Low_spent_Small_value_payments
        return f"{parts[0]} spending with {parts[2].lower()}-value payments"
    return f"Payment behaviour {value}"


_MINIMUM_PAYMENT = {
    "Yes": "Paying only the minimum amount due",
    "No": "Paying more than the minimum amount due",
    "NM": "Minimum payments not recorded",
}


@dataclass(frozen=True)
class ReasonText:
    """How a reason reads: `describe(value)` for a known value, `missing` otherwise."""

    describe: Callable[[Any], str]
    missing: str


def _fixed(template: str) -> Callable[[Any], str]:
    return template.format


def _plain(title: str) -> ReasonText:
    """How a declared feature without a phrasing of its own reads: "Title: value"."""
    return ReasonText(
        lambda value: f"{title}: {value:,.6g}" if isinstance(value, float) else f"{title}: {value}",
        f"{title} not given",
    )


# Phrasings of the reasons, by code; a declared feature missing here reads as `_plain`
# makes it from the feature's title.
_PHRASED: dict[str, ReasonText] = {
    "age": ReasonText(_fixed("Age of {:.0f} years"), "Age not given"),
    "occupation": ReasonText(
        lambda value: f"Occupation {value.replace('_', ' ')}", "Occupation not given"
    ),
    "annual_income": ReasonText(_fixed("Annual income of {:,.0f}"), "Annual income not given"),
    "monthly_inhand_salary": ReasonText(
        _fixed("Monthly take-home pay of {:,.0f}"), "Monthly take-home pay not given"
    ),
    "num_bank_accounts": ReasonText(_count("bank account"), "Number of bank accounts not given"),
    "num_credit_card": ReasonText(_count("credit card"), "Number of credit cards not given"),
    "interest_rate": ReasonText(_fixed("Interest rate of {:.0f}%"), "Interest rate not given"),
    "num_of_loan": ReasonText(_count("loan"), "Number of loans not given"),
    "type_of_loan": ReasonText(lambda value: f"Loans held: {value}", "No loan type listed"),
    "delay_from_due_date": ReasonText(_days_late, "Payment delay not given"),
    "num_of_delayed_payment": ReasonText(
        _count("delayed payment"), "Number of delayed payments not given"
    ),
    "changed_credit_limit": ReasonText(
        _fixed("Credit limit changed by {:+.1f}%"), "Change of credit limit not given"
    ),
    "num_credit_inquiries": ReasonText(
        _count("credit inquiry", "credit inquiries"), "Number of credit inquiries not given"
    ),
    "credit_mix": ReasonText(_fixed("Credit mix rated {}"), "Credit mix not rated"),
    "outstanding_debt": ReasonText(
        _fixed("Outstanding debt of {:,.0f}"), "Outstanding debt not given"
    ),
    "credit_utilization_ratio": ReasonText(
        _fixed("Credit utilization of {:.1f}%"), "Credit utilization not given"
    ),
    "credit_history_age": ReasonText(_history, "Length of credit history not given"),
    "payment_of_min_amount": ReasonText(
        lambda value: _MINIMUM_PAYMENT.get(value, f"Minimum payment: {value}"),
        "Minimum payments not given",
    ),
    "total_emi_per_month": ReasonText(
        _fixed("Monthly loan instalments of {:,.0f}"), "Monthly loan instalments not given"
    ),
    "amount_invested_monthly": ReasonText(
        _fixed("Monthly investments of {:,.0f}"), "Monthly investments not given"
    ),
    "payment_behaviour": ReasonText(_behaviour, "Payment behaviour not given"),
    "monthly_balance": ReasonText(
        _fixed("Monthly balance of {:,.0f}"), "Monthly balance not given"
    ),
    "debt_to_income": ReasonText(
        _fixed("Outstanding debt at {:.0%} of annual income"),
        "Debt against income unknown (income missing)",
    ),
    "debt_to_salary": ReasonText(
        _fixed("Outstanding debt at {:.1f} times monthly take-home pay"),
        "Debt against take-home pay unknown (pay missing)",
    ),
    "emi_to_salary": ReasonText(
        _fixed("Loan instalments at {:.0%} of monthly take-home pay"),
        "Instalments against take-home pay unknown (pay missing)",
    ),
    "invested_to_salary": ReasonText(
        _fixed("Investments at {:.0%} of monthly take-home pay"),
        "Investments against take-home pay unknown (pay missing)",
    ),
    "balance_to_salary": ReasonText(
        _fixed("Monthly balance at {:.0%} of monthly take-home pay"),
        "Balance against take-home pay unknown (pay missing)",
    ),
}

# The one table of reason texts: one entry per code in REASON_CODES, in that order.
REASON_TEXTS: dict[str, ReasonText] = {
    code: _PHRASED.get(code) or _plain(FEATURES[MODEL_FEATURES.index(code)].title)
    for code in REASON_CODES
}

assert set(_PHRASED) <= set(REASON_CODES), "a phrasing for no reason code"
assert all(reason_of(name) in REASON_CODES for name in DERIVED_FEATURES)


def describe(code: str, value: Any) -> str:
    """The reason's description for the applicant's value (None when missing)."""
    text = REASON_TEXTS[code]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return text.missing
    if code in CATEGORICAL_FEATURES or code in TEXT_FEATURES:
        return text.describe(str(value)) if str(value).strip() else text.missing
    return text.describe(float(value))


def reason_text(code: str, value: Any, label: str, contribution: float) -> str:
    """e.g. "Payments 45 days late on average (makes Poor more likely)"."""
    return (
        f"{describe(code, value)} (makes {label} {'more' if contribution > 0 else 'less'} likely)"
    )


class ReasonMap:
    """Sums a model's SHAP columns into reasons, for models with or without the derived
    features (built once per served model)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.codes = tuple(code for code in REASON_CODES if code in self._reasons(columns))
        index = {code: position for position, code in enumerate(self.codes)}
        self.matrix = np.zeros((len(self.columns), len(self.codes)))
        for position, column in enumerate(self.columns):
            self.matrix[position, index[reason_of(column)]] = 1.0
        # Where a ratio reason's own value sits in the model input.
        self.ratio_positions = {
            code: self.columns.index(code) for code in self.codes if code in RATIO_FEATURES
        }

    @staticmethod
    def _reasons(columns: Sequence[str]) -> set[str]:
        return {reason_of(column) for column in columns}

    def contributions(self, shap_values: np.ndarray) -> np.ndarray:
        """(rows, columns) SHAP values of one class -> (rows, reasons)."""
        return shap_values @ self.matrix


@dataclass(frozen=True)
class RowExplanation:
    """One row's explanation for one class: its raw score, the expected value, and every
    reason's contribution (summing with the expected value to the raw score)."""

    label: str
    raw_score: float
    base_value: float
    codes: tuple[str, ...]
    contributions: np.ndarray  # one per code
    values: tuple[Any, ...]  # the applicant's value per code (None when missing)
    inputs: Mapping[str, Mapping[str, Any]]  # a ratio's two inputs

    def top(self, count: int) -> list[int]:
        """Positions of the `count` largest contributions by size (ties: REASON_CODES order)."""
        order = np.argsort(-np.abs(self.contributions), kind="stable")
        return [int(position) for position in order[:count]]

    def document(self, count: int = DEFAULT_REASONS) -> dict[str, Any]:
        """The answer's and the log's explanation: the top `count` reasons, the rest summed
        in `other_reasons`, so base_value + reasons + other_reasons = raw_score."""
        shown = self.top(count)
        reasons = []
        for position in shown:
            code = self.codes[position]
            contribution = float(self.contributions[position])
            reason: dict[str, Any] = {
                "feature": code,
                "value": self.values[position],
                "direction": RAISES if contribution > 0 else LOWERS,
                "contribution": contribution,
                "text": reason_text(code, self.values[position], self.label, contribution),
                "inputs": dict(self.inputs[code]) if code in self.inputs else None,
            }
            reasons.append(reason)
        rest = (
            float(np.delete(self.contributions, shown).sum())
            if len(shown) < len(self.codes)
            else 0.0
        )
        return {
            "label": self.label,
            "raw_score": self.raw_score,
            "base_value": self.base_value,
            "reasons": reasons,
            "other_reasons": rest,
        }


def class_shap(shap_values: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """Per row, the SHAP values (columns + expected value) of the class given for it.
    CatBoost gives (rows, classes, columns + 1) for several classes and (rows, columns + 1)
    for a two-class model, whose raw score is the second class's (the first's is its
    negation)."""
    rows = np.arange(len(class_index))
    if shap_values.ndim == 3:
        return shap_values[rows, class_index, :]
    sign = np.where(np.asarray(class_index) == 1, 1.0, -1.0)
    return shap_values * sign[:, None]


def explain_rows(
    reason_map: ReasonMap,
    shap_values: np.ndarray,
    class_index: Sequence[int],
    labels: Sequence[str],
    features: Sequence[Mapping[str, Any]],
    ratio_values: np.ndarray | None = None,
    base_offsets: np.ndarray | None = None,
) -> list[RowExplanation]:
    """Every row's explanation for its class. `features` are the rows' input values as
    scored (repaired ones None); `ratio_values` the model input's ratio columns, in
    `reason_map.ratio_positions` order, when the model has them; `base_offsets` per row the
    decision offset of its class, added to the expected value (and so to the raw score)."""
    chosen = class_shap(np.asarray(shap_values, dtype="float64"), np.asarray(class_index))
    by_reason = reason_map.contributions(chosen[:, :-1])
    base = chosen[:, -1]
    if base_offsets is not None:
        base = base + np.asarray(base_offsets, dtype="float64")
    raw = base + chosen[:, :-1].sum(axis=1)
    ratio_codes = list(reason_map.ratio_positions)
    explanations = []
    for row, row_features in enumerate(features):
        ratios = {
            code: _number(ratio_values[row, position]) if ratio_values is not None else None
            for position, code in enumerate(ratio_codes)
        }
        values = tuple(
            ratios[code] if code in ratios else row_features.get(code) for code in reason_map.codes
        )
        inputs = {
            code: {name: row_features.get(name) for name in RATIO_FEATURES[code]}
            for code in ratio_codes
        }
        explanations.append(
            RowExplanation(
                label=labels[row],
                raw_score=float(raw[row]),
                base_value=float(base[row]),
                codes=reason_map.codes,
                contributions=by_reason[row],
                values=values,
                inputs=inputs,
            )
        )
    return explanations
