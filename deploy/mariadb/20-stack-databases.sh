# Sourced by the MariaDB image's entrypoint on the first start (empty data volume), after
# 10-feature-store-schema.sql has created the feature-store tables in MARIADB_DATABASE.
# Adds the databases of the Dagster instance and of the MLflow tracking server and gives
# MARIADB_USER every right on them (the image created that user for MARIADB_DATABASE only).
docker_process_sql --database=mysql <<-EOSQL
	CREATE DATABASE IF NOT EXISTS \`${DAGSTER_DATABASE}\` CHARACTER SET utf8mb4;
	CREATE DATABASE IF NOT EXISTS \`${MLFLOW_DATABASE}\` CHARACTER SET utf8mb4;
	GRANT ALL PRIVILEGES ON \`${DAGSTER_DATABASE}\`.* TO '${MARIADB_USER}'@'%';
	GRANT ALL PRIVILEGES ON \`${MLFLOW_DATABASE}\`.* TO '${MARIADB_USER}'@'%';
EOSQL
