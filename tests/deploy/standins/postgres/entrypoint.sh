#!/bin/sh
# First start: initdb with the password (scram), create POSTGRES_DB; then run in the foreground.
set -e
mkdir -p "$PGDATA" /run/postgresql && chown postgres:postgres "$PGDATA" /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pw && chown postgres /tmp/pw
  su postgres -c "initdb -D $PGDATA -U $POSTGRES_USER --pwfile=/tmp/pw --auth-host=scram-sha-256 --auth-local=trust"
  rm /tmp/pw
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "pg_ctl -D $PGDATA -w start -o '-c listen_addresses='"
  [ "$POSTGRES_DB" = postgres ] || su postgres -c "psql -U $POSTGRES_USER -d postgres -c 'CREATE DATABASE \"$POSTGRES_DB\"'"
  su postgres -c "pg_ctl -D $PGDATA -w stop"
fi
exec su postgres -c "exec postgres -D $PGDATA -c listen_addresses=*"
