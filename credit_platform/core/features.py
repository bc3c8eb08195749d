"""The model's feature contract: one list of names and kinds shared by the store,
training and serving, so that a column can never drift between them."""

from __future__ import annotations

# Integer-valued counts and ages; stored as INTEGER, nullable (dirty values are nulled).
INTEGER_FEATURES: tuple[str, ...] = (
    "age",
    "num_bank_accounts",
    "num_credit_card",
    "interest_rate",
    "num_of_loan",
    "delay_from_due_date",
    "num_of_delayed_payment",
    "num_credit_inquiries",
    "credit_history_age",  # months
)

# Real-valued amounts and ratios; stored as DOUBLE.
FLOAT_FEATURES: tuple[str, ...] = (
    "annual_income",
    "monthly_inhand_salary",
    "changed_credit_limit",
    "outstanding_debt",
    "credit_utilization_ratio",
    "total_emi_per_month",
    "amount_invested_monthly",
    "monthly_balance",
)

# The order the seed lists them in; each gets its own RobustScaler.
NUMERIC_FEATURES: tuple[str, ...] = (
    "age",
    "annual_income",
    "monthly_inhand_salary",
    "num_bank_accounts",
    "num_credit_card",
    "interest_rate",
    "num_of_loan",
    "delay_from_due_date",
    "num_of_delayed_payment",
    "changed_credit_limit",
    "num_credit_inquiries",
    "outstanding_debt",
    "credit_utilization_ratio",
    "credit_history_age",
    "total_emi_per_month",
    "amount_invested_monthly",
    "monthly_balance",
)

CATEGORICAL_FEATURES: tuple[str, ...] = ("occupation", "credit_mix", "payment_of_min_amount")
TEXT_FEATURES: tuple[str, ...] = ("type_of_loan", "payment_behaviour")

# The 22 model features in the order the store and the model use.
MODEL_FEATURES: tuple[str, ...] = (
    "age",
    "occupation",
    "annual_income",
    "monthly_inhand_salary",
    "num_bank_accounts",
    "num_credit_card",
    "interest_rate",
    "num_of_loan",
    "type_of_loan",
    "delay_from_due_date",
    "num_of_delayed_payment",
    "changed_credit_limit",
    "num_credit_inquiries",
    "credit_mix",
    "outstanding_debt",
    "credit_utilization_ratio",
    "credit_history_age",
    "payment_of_min_amount",
    "total_emi_per_month",
    "amount_invested_monthly",
    "payment_behaviour",
    "monthly_balance",
)

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

assert len(MODEL_FEATURES) == 22
assert set(MODEL_FEATURES) == set(NUMERIC_FEATURES) | set(CATEGORICAL_FEATURES) | set(TEXT_FEATURES)
assert set(NUMERIC_FEATURES) == set(INTEGER_FEATURES) | set(FLOAT_FEATURES)
