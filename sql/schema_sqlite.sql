-- Generated from credit_platform/core/schema.py by `credit-platform sql --write`, do not edit by hand.
-- An empty database at migration 0004_row_id_binary (`credit-platform init` upgrades an existing one).

CREATE TABLE credit_api_desired_model (
	service VARCHAR(64) NOT NULL,
	model_tag VARCHAR(128) NOT NULL,
	challenger JSON,
	updated_by VARCHAR(128) NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (service)
);

CREATE TABLE credit_api_replicas (
	replica_id VARCHAR(128) NOT NULL,
	hostname VARCHAR(255) NOT NULL,
	bento_tag VARCHAR(128),
	model_tag VARCHAR(128) NOT NULL,
	challenger JSON,
	desired_tag VARCHAR(128),
	problem VARCHAR(1000),
	poll_seconds FLOAT NOT NULL,
	stale_seconds FLOAT NOT NULL,
	started_at DATETIME NOT NULL,
	heartbeat_at DATETIME NOT NULL,
	PRIMARY KEY (replica_id)
);

CREATE TABLE credit_model_monitoring (
	day DATE NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	role VARCHAR(16) NOT NULL,
	metric VARCHAR(64) NOT NULL,
	feature VARCHAR(128) DEFAULT '' NOT NULL,
	value FLOAT,
	PRIMARY KEY (day, model_version, role, metric, feature)
);

CREATE TABLE credit_predictions_api_log (
	id INTEGER NOT NULL,
	request_id VARCHAR(64) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	features JSON NOT NULL,
	prediction VARCHAR(16) NOT NULL,
	confidence FLOAT NOT NULL,
	elapsed_ms FLOAT NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	role VARCHAR(16) DEFAULT 'champion' NOT NULL,
	created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
	reasons JSON,
	PRIMARY KEY (id),
	CONSTRAINT ck_credit_predictions_api_log_role CHECK (role IN ('champion', 'shadow', 'canary')),
	UNIQUE (request_id)
);

CREATE INDEX ix_credit_predictions_api_log_created_at ON credit_predictions_api_log (created_at);

CREATE TABLE credit_score (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	credit_score VARCHAR(16) NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_credit_score_customer ON credit_score (customer_id);

CREATE INDEX ix_credit_score_date ON credit_score (date);

CREATE TABLE credit_score_features (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	age INTEGER,
	occupation VARCHAR(64),
	annual_income FLOAT,
	monthly_inhand_salary FLOAT,
	num_bank_accounts INTEGER,
	num_credit_card INTEGER,
	interest_rate INTEGER,
	num_of_loan INTEGER,
	type_of_loan VARCHAR(255),
	delay_from_due_date INTEGER,
	num_of_delayed_payment INTEGER,
	changed_credit_limit FLOAT,
	num_credit_inquiries INTEGER,
	credit_mix VARCHAR(64),
	outstanding_debt FLOAT,
	credit_utilization_ratio FLOAT,
	credit_history_age INTEGER,
	payment_of_min_amount VARCHAR(64),
	total_emi_per_month FLOAT,
	amount_invested_monthly FLOAT,
	payment_behaviour VARCHAR(64),
	monthly_balance FLOAT,
	name VARCHAR(128),
	ssn VARCHAR(32),
	PRIMARY KEY (id)
);

CREATE INDEX ix_credit_score_features_customer_date ON credit_score_features (customer_id, date);

CREATE INDEX ix_credit_score_features_date_customer ON credit_score_features (date, customer_id);

CREATE TABLE credit_score_features_target (
	base_dt DATE NOT NULL,
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	age INTEGER,
	occupation VARCHAR(64),
	annual_income FLOAT,
	monthly_inhand_salary FLOAT,
	num_bank_accounts INTEGER,
	num_credit_card INTEGER,
	interest_rate INTEGER,
	num_of_loan INTEGER,
	type_of_loan VARCHAR(255),
	delay_from_due_date INTEGER,
	num_of_delayed_payment INTEGER,
	changed_credit_limit FLOAT,
	num_credit_inquiries INTEGER,
	credit_mix VARCHAR(64),
	outstanding_debt FLOAT,
	credit_utilization_ratio FLOAT,
	credit_history_age INTEGER,
	payment_of_min_amount VARCHAR(64),
	total_emi_per_month FLOAT,
	amount_invested_monthly FLOAT,
	payment_behaviour VARCHAR(64),
	monthly_balance FLOAT,
	credit_score VARCHAR(16) NOT NULL,
	PRIMARY KEY (base_dt, id, customer_id)
);

CREATE TABLE credit_score_predictions (
	score_dt DATE NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	prediction VARCHAR(16) NOT NULL,
	confidence_good FLOAT NOT NULL,
	confidence_standard FLOAT NOT NULL,
	confidence_poor FLOAT NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	reason_1 VARCHAR(64),
	reason_2 VARCHAR(64),
	reason_3 VARCHAR(64),
	PRIMARY KEY (score_dt, customer_id)
);

CREATE TABLE customer_info (
	id VARCHAR(32) NOT NULL,
	customer_id VARCHAR(32) NOT NULL,
	date DATE NOT NULL,
	name VARCHAR(128),
	ssn VARCHAR(32),
	PRIMARY KEY (id)
);

CREATE INDEX ix_customer_info_customer_date ON customer_info (customer_id, date);

CREATE TABLE credit_platform_alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT credit_platform_alembic_version_pkc PRIMARY KEY (version_num)
);

INSERT INTO credit_platform_alembic_version (version_num) VALUES ('0004_row_id_binary');
