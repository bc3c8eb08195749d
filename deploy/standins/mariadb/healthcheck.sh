#!/bin/bash
# Healthcheck of the MariaDB stand-in image: the checks docker-compose.yml asks the
# official image's healthcheck.sh for. --connect: the server answers over TCP (so not the
# socket-only server of the first start); --innodb_initialized: InnoDB is up.
set -euo pipefail
client=(mariadb --no-defaults --protocol=tcp --host=127.0.0.1 --user=root
        "--password=${MARIADB_ROOT_PASSWORD:-}" --batch --skip-column-names)
for check in "$@"; do
    case "$check" in
        --connect) "${client[@]}" -e 'SELECT 1' >/dev/null ;;
        --innodb_initialized)
            case "$("${client[@]}" -e "SELECT support FROM information_schema.ENGINES
                    WHERE engine = 'InnoDB'")" in YES | DEFAULT) ;; *) exit 1 ;; esac ;;
        *) echo "healthcheck.sh: unknown check $check" >&2; exit 2 ;;
    esac
done
