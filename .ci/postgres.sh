#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests (Debian's package) and print its URL.
# Needs root (as CI has); the tests that use it are skipped where it is not set up.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main start >&2 || true  # already running is fine
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname = 'reflexa'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role reflexa login password 'reflexa' createdb\"" >&2
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
echo "postgresql+psycopg://reflexa:reflexa@127.0.0.1:$port/postgres"
