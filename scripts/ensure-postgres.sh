#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 with trust auth for local TCP and a
# database `test`, as the PostgreSQL tests expect (CRISP_RELAY_TEST_DATABASE_URL, see README).
# A no-op where one already runs (this machine's, CI's); otherwise installs Debian's postgresql,
# starts its cluster, trusts 127.0.0.1 and creates `test`. Needs root (apt-get) to install.
set -euo pipefail

answers() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! answers; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
  if [ -z "$cluster" ]; then
    pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main
    cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
  fi
  read -r version name <<<"$cluster"
  hba="/etc/postgresql/$version/$name/pg_hba.conf"
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster "$version" "$name" start || pg_ctlcluster "$version" "$name" reload
  for _ in $(seq 1 30); do answers && break; sleep 1; done
fi
answers || { echo "PostgreSQL does not answer at 127.0.0.1:5432" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -d test -Atqc 'SELECT 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test'
fi
echo "PostgreSQL answers: $(psql -h 127.0.0.1 -U postgres -d test -Atqc 'SHOW server_version')"
