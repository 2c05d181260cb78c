#!/bin/sh
# First start: create the cluster with POSTGRES_USER as superuser (password POSTGRES_PASSWORD) and the
# database POSTGRES_DB, like the official image does; later starts go straight to the server.
set -eu
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # Socket only while we set up, so the healthcheck (TCP) stays red until the real server is up.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\"" > /dev/null
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "db-entrypoint: initialised $PGDATA (database $POSTGRES_DB, superuser $POSTGRES_USER)"
fi
exec "$@"
