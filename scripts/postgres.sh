#!/usr/bin/env bash
# Make a PostgreSQL server available on loopback for llmrec's tests, and print its SQLAlchemy URL on stdout.
#
#   export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)
#
# On a Debian machine where we are root: installs Debian's `postgresql` package when `pg_ctlcluster` is missing,
# creates the `main` cluster of the newest installed version when there is none, starts it, and creates the role
# `llmrec` (password `llmrec`) and the database `llmrec_test` when they are absent. Idempotent (safe to run again
# while the server is up) and quiet: stdout carries only the URL; the log of a failed step goes to stderr.
set -euo pipefail

ROLE=llmrec
PASSWORD=llmrec
DATABASE=llmrec_test
LOG=$(mktemp -t llmrec-postgres.XXXXXX)
trap 'rm -f "$LOG"' EXIT

die() {
    echo "scripts/postgres.sh: $*" >&2
    if [[ -s "$LOG" ]]; then
        echo "--- output of the failed step ---" >&2
        cat "$LOG" >&2
    fi
    exit 1
}

# Run a step with its output in $LOG; on failure show it and stop.
quiet() {
    "$@" >"$LOG" 2>&1 || die "'$*' failed"
}

# Run a command as the postgres superuser (peer authentication over the Unix socket).
as_postgres() {
    if command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and we are not root: install Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update -qq
    quiet apt-get install -y -qq postgresql
fi

# The newest cluster named "main"; create one for the newest installed server version when there is none.
cluster=$(pg_lsclusters --no-header 2>/dev/null | awk '$2 == "main"' | sort -V -k1,1 | tail -n 1 || true)
if [[ -z "$cluster" ]]; then
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$version" ]] || die "no PostgreSQL server version found under /usr/lib/postgresql"
    quiet pg_createcluster "$version" main
    cluster=$(pg_lsclusters --no-header | awk -v v="$version" '$1 == v && $2 == "main"')
fi
read -r version _ port status _ <<<"$cluster"

if [[ "$status" != online* ]]; then
    quiet pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || die "PostgreSQL $version/main did not accept connections on 127.0.0.1:$port"

psql_admin() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" "$@"
}

quiet psql_admin -d postgres -c "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
    END IF;
END \$\$;"
exists=$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" 2>"$LOG") ||
    die "could not list databases"
if [[ "$exists" != 1 ]]; then
    quiet as_postgres createdb -p "$port" -O "$ROLE" "$DATABASE"
fi

echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$port/$DATABASE"
