#!/bin/sh
# Write pgbouncer.ini and the user list from the environment, then run PgBouncer in the foreground.
#   DB_HOST, DB_PORT            the PostgreSQL server (default db:5432)
#   POSTGRES_USER/_PASSWORD     the one role the workers use; clients must give this password (scram)
#   PGBOUNCER_LISTEN, PGBOUNCER_PORT, PGBOUNCER_POOL_SIZE, PGBOUNCER_MAX_CLIENTS
# Transaction pooling: a server connection is lent for one transaction. The workers keep nothing in
# a session (transaction-scoped locks only, no SET, no prepared statements), which this needs.
set -eu
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
conf="${PGBOUNCER_CONF_DIR:-/run/pgbouncer}"
umask 077
printf '"%s" "%s"\n' "$POSTGRES_USER" "$POSTGRES_PASSWORD" > "$conf/userlist.txt"
cat > "$conf/pgbouncer.ini" <<INI
[databases]
* = host=${DB_HOST:-db} port=${DB_PORT:-5432}

[pgbouncer]
listen_addr = ${PGBOUNCER_LISTEN:-0.0.0.0}
listen_port = ${PGBOUNCER_PORT:-6432}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $conf/userlist.txt
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL_SIZE:-30}
max_db_connections = ${PGBOUNCER_POOL_SIZE:-30}
max_client_conn = ${PGBOUNCER_MAX_CLIENTS:-2000}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile =
INI
exec pgbouncer "$conf/pgbouncer.ini"
