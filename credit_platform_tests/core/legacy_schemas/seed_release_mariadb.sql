-- The feature store DDL of an earlier release (git show 8ace470:sql/schema_mariadb.sql): the
-- seed's five tables, an INT log id without role, request and customer ids compared
-- case-insensitively on MariaDB. Kept verbatim for the migration tests.
-- Generated from credit_platform/schema.py by `credit-platform init --print-ddl mariadb`, do not edit by hand.

CREATE TABLE IF NOT EXISTS credit_predictions_api_log (
	id INTEGER NOT NULL AUTO_INCREMENT,
	request_id VARCHAR(64) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	features JSON NOT NULL,
	prediction VARCHAR(16) NOT NULL,
	confidence DOUBLE NOT NULL,
	elapsed_ms DOUBLE NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	created_at DATETIME(6) NOT NULL DEFAULT (now()),
	PRIMARY KEY (id),
	UNIQUE (request_id)
);

CREATE INDEX IF NOT EXISTS ix_credit_predictions_api_log_created_at ON credit_predictions_api_log (created_at);

CREATE TABLE IF NOT EXISTS credit_score (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	credit_score VARCHAR(16) NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS ix_credit_score_customer ON credit_score (customer_id);

CREATE INDEX IF NOT EXISTS ix_credit_score_date ON credit_score (date);

CREATE TABLE IF NOT EXISTS credit_score_features (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	age INTEGER,
	occupation VARCHAR(64),
	annual_income DOUBLE,
	monthly_inhand_salary DOUBLE,
	num_bank_accounts INTEGER,
	num_credit_card INTEGER,
	interest_rate INTEGER,
	num_of_loan INTEGER,
	type_of_loan VARCHAR(255),
	delay_from_due_date INTEGER,
	num_of_delayed_payment INTEGER,
	changed_credit_limit DOUBLE,
	num_credit_inquiries INTEGER,
	credit_mix VARCHAR(64),
	outstanding_debt DOUBLE,
	credit_utilization_ratio DOUBLE,
	credit_history_age INTEGER,
	payment_of_min_amount VARCHAR(64),
	total_emi_per_month DOUBLE,
	amount_invested_monthly DOUBLE,
	payment_behaviour VARCHAR(64),
	monthly_balance DOUBLE,
	name VARCHAR(128),
	ssn VARCHAR(32),
	PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS ix_credit_score_features_customer_date ON credit_score_features (customer_id, date);

CREATE TABLE IF NOT EXISTS credit_score_features_target (
	base_dt DATE NOT NULL,
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	age INTEGER,
	occupation VARCHAR(64),
	annual_income DOUBLE,
	monthly_inhand_salary DOUBLE,
	num_bank_accounts INTEGER,
	num_credit_card INTEGER,
	interest_rate INTEGER,
	num_of_loan INTEGER,
	type_of_loan VARCHAR(255),
	delay_from_due_date INTEGER,
	num_of_delayed_payment INTEGER,
	changed_credit_limit DOUBLE,
	num_credit_inquiries INTEGER,
	credit_mix VARCHAR(64),
	outstanding_debt DOUBLE,
	credit_utilization_ratio DOUBLE,
	credit_history_age INTEGER,
	payment_of_min_amount VARCHAR(64),
	total_emi_per_month DOUBLE,
	amount_invested_monthly DOUBLE,
	payment_behaviour VARCHAR(64),
	monthly_balance DOUBLE,
	credit_score VARCHAR(16) NOT NULL,
	PRIMARY KEY (base_dt, id, customer_id)
);

CREATE TABLE IF NOT EXISTS customer_info (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	name VARCHAR(128),
	ssn VARCHAR(32),
	PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS ix_customer_info_customer_date ON customer_info (customer_id, date);
