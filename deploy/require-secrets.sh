#!/bin/sh
# Entrypoint of the stack's containers: refuses to start the command ("$@") while a secret
# is weak, so a copied example or a guessable value can never be deployed. Checks the secret
# variables below that are set in this container and the password of every database URL
# among the command's arguments (also as `--option=URL`) and in FEATURE_STORE_URL; then runs
# the command in its place.
#
#   require-secrets.sh mariadbd ...      (exits 78 naming the problem, or execs mariadbd)
#
# The one rule for a secret, also applied by `credit-platform serve` to the admin token
# (credit_platform/cli/serve.py runs this script). POSIX sh and awk only: it runs in the
# official MariaDB image too, which has no Python. A secret is weak when it
#   - is a placeholder ("change-me", "example", "your-password", ...),
#   - is shorter than MIN_LENGTH characters, or
#   - is guessable: once common words (password, admin, token, secret, test, ...) are
#     removed, fewer than MIN_STRENGTH letters or digits remain that do not merely repeat
#     or continue a run ("aaaa", "1234", "abcd", "4321") of the one before.
set -eu

MIN_LENGTH=16
MIN_STRENGTH=8
SECRET_VARIABLES="MARIADB_ROOT_PASSWORD MARIADB_PASSWORD DAGSTER_MYSQL_PASSWORD CREDIT_API_ADMIN_TOKEN"
problems=""

weakness() {  # $1 a secret: prints why it is weak, or nothing
    SECRET_VALUE="$1" awk -v min_length="$MIN_LENGTH" -v min_strength="$MIN_STRENGTH" '
    BEGIN {
        value = ENVIRON["SECRET_VALUE"]
        lower = tolower(value)
        normalized = lower
        gsub(/[^a-z0-9]/, "", normalized)
        if (normalized ~ /changeme|placeholder|replaceme|example|yourpassword|yourtoken/) {
            print "is a placeholder"; exit
        }
        if (length(value) < min_length) {
            print "is shorter than " min_length " characters"; exit
        }
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
        for (i = 1; i <= length(alphabet); i++) position[substr(alphabet, i, 1)] = i
        rest = lower
        gsub(/password|passwd|passw0rd|secret|admin|token|changeit|letmein|welcome|qwerty|azerty|asdf|zxcv|login|master|root|user|mariadb|mysql|dagster|mlflow|credit|platform|default|test|demo|pass|key/, " ", rest)
        strength = 0
        previous = ""
        for (i = 1; i <= length(rest); i++) {
            c = substr(rest, i, 1)
            if (!(c in position)) { previous = ""; continue }
            step = previous == "" ? 99 : position[c] - position[previous]
            if (step >= -1 && step <= 1) {
                previous = c; continue
            }
            strength++
            previous = c
        }
        if (strength < min_strength) {
            print "is guessable (common words, repeated or consecutive characters)"
        }
    }'
}

refuse_if_weak() {  # $1 what it is, $2 its value
    why=$(weakness "$2")
    if [ -n "$why" ]; then
        problems="$problems
  $1 $why"
    fi
}

url_password() {  # the password of [--option=]scheme://user:password@host..., else nothing
    printf '%s' "$1" |
        sed -n 's|^\([^:/@=]*=\)\{0,1\}[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:\([^@]*\)@.*$|\2|p'
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
