-- Generated from credit_platform/feature_target_sql.py by `credit-platform sql --write`.
-- Run in one transaction per base day; :base_dt is the partition day, :window_start
-- is base_dt minus one calendar month, :retention_cutoff is base_dt minus the
-- retention days (the last statement is skipped when retention is off).

-- 1. drop the partition being rebuilt (exact replace)
DELETE FROM credit_score_features_target WHERE credit_score_features_target.base_dt = :base_dt;

-- 2. labels of the window joined to their features
INSERT INTO credit_score_features_target (base_dt, id, customer_id, date, age, occupation, annual_income, monthly_inhand_salary, num_bank_accounts, num_credit_card, interest_rate, num_of_loan, type_of_loan, delay_from_due_date, num_of_delayed_payment, changed_credit_limit, num_credit_inquiries, credit_mix, outstanding_debt, credit_utilization_ratio, credit_history_age, payment_of_min_amount, total_emi_per_month, amount_invested_monthly, payment_behaviour, monthly_balance, credit_score) SELECT :base_dt AS base_dt, labels.id, labels.customer_id, labels.date, feats.age, feats.occupation, feats.annual_income, feats.monthly_inhand_salary, feats.num_bank_accounts, feats.num_credit_card, feats.interest_rate, feats.num_of_loan, feats.type_of_loan, feats.delay_from_due_date, feats.num_of_delayed_payment, feats.changed_credit_limit, feats.num_credit_inquiries, feats.credit_mix, feats.outstanding_debt, feats.credit_utilization_ratio, feats.credit_history_age, feats.payment_of_min_amount, feats.total_emi_per_month, feats.amount_invested_monthly, feats.payment_behaviour, feats.monthly_balance, labels.credit_score
FROM credit_score AS labels JOIN credit_score_features AS feats ON feats.id = labels.id AND feats.customer_id = labels.customer_id
WHERE labels.date BETWEEN :window_start AND :base_dt;

-- 3. retention of old base days
DELETE FROM credit_score_features_target WHERE credit_score_features_target.base_dt <= :retention_cutoff;
