-- Generated from credit_platform/core/schema.py by `credit-platform sql --write`, do not edit by hand.
-- An empty database at migration 0004_row_id_binary (`credit-platform init` upgrades an existing one).

CREATE TABLE credit_api_desired_model (
	service VARCHAR(64) NOT NULL,
	model_tag VARCHAR(128) NOT NULL,
	challenger JSON,
	updated_by VARCHAR(128) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	PRIMARY KEY (service)
)CHARSET=utf8mb4;

CREATE TABLE credit_api_replicas (
	replica_id VARCHAR(128) NOT NULL,
	hostname VARCHAR(255) NOT NULL,
	bento_tag VARCHAR(128),
	model_tag VARCHAR(128) NOT NULL,
	challenger JSON,
	desired_tag VARCHAR(128),
	problem VARCHAR(1000),
	poll_seconds DOUBLE NOT NULL,
	stale_seconds DOUBLE NOT NULL,
	started_at DATETIME(6) NOT NULL,
	heartbeat_at DATETIME(6) NOT NULL,
	PRIMARY KEY (replica_id)
)CHARSET=utf8mb4;

CREATE TABLE credit_model_monitoring (
	day DATE NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	role VARCHAR(16) NOT NULL,
	metric VARCHAR(64) NOT NULL,
	feature VARCHAR(128) NOT NULL DEFAULT '',
	value DOUBLE,
	PRIMARY KEY (day, model_version, role, metric, feature)
)CHARSET=utf8mb4;

CREATE TABLE credit_predictions_api_log (
	id BIGINT NOT NULL AUTO_INCREMENT,
	request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	features JSON NOT NULL,
	prediction VARCHAR(16) NOT NULL,
	confidence DOUBLE NOT NULL,
	elapsed_ms DOUBLE NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	role VARCHAR(16) NOT NULL DEFAULT 'champion',
	created_at DATETIME(6) NOT NULL DEFAULT (now()),
	reasons JSON,
	PRIMARY KEY (id),
	CONSTRAINT ck_credit_predictions_api_log_role CHECK (role IN ('champion', 'shadow', 'canary')),
	UNIQUE (request_id)
)CHARSET=utf8mb4;

CREATE INDEX ix_credit_predictions_api_log_created_at ON credit_predictions_api_log (created_at);

CREATE TABLE credit_score (
	id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	date DATE NOT NULL,
	credit_score VARCHAR(16) NOT NULL,
	PRIMARY KEY (id)
)CHARSET=utf8mb4;

CREATE INDEX ix_credit_score_customer ON credit_score (customer_id);

CREATE INDEX ix_credit_score_date ON credit_score (date);

CREATE TABLE credit_score_features (
	id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
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
)CHARSET=utf8mb4;

CREATE INDEX ix_credit_score_features_customer_date ON credit_score_features (customer_id, date);

CREATE INDEX ix_credit_score_features_date_customer ON credit_score_features (date, customer_id);

CREATE TABLE credit_score_features_target (
	base_dt DATE NOT NULL,
	id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
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
)CHARSET=utf8mb4;

CREATE TABLE credit_score_predictions (
	score_dt DATE NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	prediction VARCHAR(16) NOT NULL,
	confidence_good DOUBLE NOT NULL,
	confidence_standard DOUBLE NOT NULL,
	confidence_poor DOUBLE NOT NULL,
	model_version VARCHAR(128) NOT NULL,
	reason_1 VARCHAR(64),
	reason_2 VARCHAR(64),
	reason_3 VARCHAR(64),
	PRIMARY KEY (score_dt, customer_id)
)CHARSET=utf8mb4;

CREATE TABLE customer_info (
	id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	customer_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	date DATE NOT NULL,
	name VARCHAR(128),
	ssn VARCHAR(32),
	PRIMARY KEY (id)
)CHARSET=utf8mb4;

CREATE INDEX ix_customer_info_customer_date ON customer_info (customer_id, date);

CREATE TABLE credit_platform_alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT credit_platform_alembic_version_pkc PRIMARY KEY (version_num)
);

INSERT INTO credit_platform_alembic_version (version_num) VALUES ('0004_row_id_binary');
