#!/bin/sh
# Entrypoint of the stack's containers: refuses to start the command ("$@") while a secret
# is empty, shorter than 16 characters or a placeholder such as the "change-me" of old
# .env files, so a copied example can never be deployed. Checks the secret variables
# below that are set in this container and the password of every database URL among the
# command's arguments and in FEATURE_STORE_URL; then runs the command in its place.
#
#   require-secrets.sh mariadbd ...      (exits 78 naming the problem, or execs mariadbd)
set -eu

MIN_LENGTH=16
SECRET_VARIABLES="MARIADB_ROOT_PASSWORD MARIADB_PASSWORD DAGSTER_MYSQL_PASSWORD CREDIT_API_ADMIN_TOKEN"
problems=""

refuse_if_weak() {  # $1 what it is, $2 its value
    normalized=$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]' | tr -cd '[:alnum:]')
    case "$normalized" in
        *changeme* | *placeholder* | *replaceme* | *example* | *yourpassword* | *yourtoken*)
            problems="$problems
  $1 is a placeholder" ;;
        *)
            if [ "${#2}" -lt "$MIN_LENGTH" ]; then
                problems="$problems
  $1 is shorter than $MIN_LENGTH characters"
            fi ;;
    esac
}

url_password() {  # the password of scheme://user:password@host..., else nothing
    printf '%s' "$1" | sed -n 's|^[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:\([^@]*\)@.*$|\1|p'
}

for name in $SECRET_VARIABLES; do
    if eval "[ -n \"\${$name+set}\" ]"; then
        eval "value=\${$name}"
        refuse_if_weak "$name" "$value"
    fi
done
if [ -n "${FEATURE_STORE_URL:-}" ] && [ -n "$(url_password "$FEATURE_STORE_URL")" ]; then
    refuse_if_weak "the password in FEATURE_STORE_URL" "$(url_password "$FEATURE_STORE_URL")"
fi
for argument in "$@"; do
    password=$(url_password "$argument")
    if [ -n "$password" ]; then
        refuse_if_weak "the password in the database URL of the command" "$password"
    fi
done

if [ -n "$problems" ]; then
    echo "refusing to start ${1:-the service}:$problems" >&2
    echo "Set each one in .env to a random value of at least $MIN_LENGTH letters, digits, '-' or '_'" \
        "(e.g. openssl rand -hex 24) and recreate the stack." >&2
    exit 78
fi
exec "$@"
