#!/bin/bash
# Entrypoint of the MariaDB stand-in image (see ../mariadb.Dockerfile). On the first start
# with an empty data directory it creates the system tables, the root password
# (MARIADB_ROOT_PASSWORD), the database MARIADB_DATABASE and the user MARIADB_USER /
# MARIADB_PASSWORD with every right on it, then runs /docker-entrypoint-initdb.d/*.sql (in
# MARIADB_DATABASE) and sources *.sh (which may call docker_process_sql), in name order,
# against a server that listens on its socket only. Then it execs the server.
set -euo pipefail

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

# Arguments that are options go to the server, as with the official image.
if [ "${1:0:1}" = "-" ]; then
    set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
    exec "$@"
fi

docker_process_sql() {  # SQL on stdin, as root over the socket; extra client options in "$@"
    mariadb --no-defaults --protocol=socket --socket="$SOCKET" --user=root "$@"
}

first_start() {
    for name in MARIADB_ROOT_PASSWORD MARIADB_DATABASE MARIADB_USER MARIADB_PASSWORD; do
        if [ -z "${!name:-}" ]; then
            echo "docker-entrypoint.sh: $name must be set for the first start" >&2
            exit 1
        fi
    done
    echo "initializing the data directory"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    "$@" --user=mysql --skip-networking --socket="$SOCKET" &
    local server=$!
    for _ in $(seq 1 60); do
        mariadb-admin --no-defaults --protocol=socket --socket="$SOCKET" --user=root ping \
            >/dev/null 2>&1 && break
        sleep 1
    done
    docker_process_sql --database=mysql <<-EOSQL
	CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;
	CREATE USER '${MARIADB_USER}'@'%' IDENTIFIED BY '${MARIADB_PASSWORD}';
	GRANT ALL PRIVILEGES ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';
	EOSQL
    local script
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql) echo "running $script"; docker_process_sql --database="$MARIADB_DATABASE" < "$script" ;;
            *.sh) echo "sourcing $script"; . "$script" ;;
            *) ;;
        esac
    done
    # Root last: everything above ran as the password-less root of the socket. The root
    # entries install-db made for 127.0.0.1, ::1 and the host name have no password and
    # would win over root@'%' for TCP clients: only localhost (socket) and '%' stay.
    docker_process_sql --database=mysql <<-EOSQL
	CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}';
	GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
	ALTER USER 'root'@'localhost' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}';
	DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '%');
	FLUSH PRIVILEGES;
	EOSQL
    kill "$server"
    wait "$server" || true
    echo "initialized"
}

mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$DATADIR"
if [ ! -d "$DATADIR/mysql" ]; then
    first_start "$@"
fi
exec "$@" --user=mysql
