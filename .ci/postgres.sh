#!/usr/bin/env bash
# Start a PostgreSQL server on loopback from Debian's packages (installing them if needed) and
# create the test database. Prints the SQLAlchemy URL for VGRPO_TEST_POSTGRES_URL. Idempotent.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
read -r version cluster < <(pg_lsclusters -h | awk 'NR == 1 {print $1, $2}')
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  cluster=main
  pg_createcluster "$version" "$cluster" >&2
fi
pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true
port=$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $3}')
for _ in $(seq 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p $port" && break
  sleep 1
done
su postgres -c "psql -q -p $port -d postgres" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vgrpo') THEN
    CREATE ROLE vgrpo LOGIN PASSWORD 'vgrpo' CREATEDB;
  END IF;
END \$\$;
SQL
su postgres -c "psql -p $port -d postgres -tAc \"SELECT 1 FROM pg_database WHERE datname = 'vgrpo_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port -O vgrpo vgrpo_test" >&2
echo "postgresql+psycopg://vgrpo:vgrpo@127.0.0.1:$port/vgrpo_test"
