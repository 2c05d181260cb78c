# What the end-to-end scripts check through the SQL views, sourced by each after it defines
# `log`, `fail` and `sql` (a psql that prints one unaligned value) and sets WAIT_LIMIT_S.

# Poll every POLL_S seconds until `sql` returns exactly "t", or fail after WAIT_LIMIT_S.
wait_for() {
    local what="$1" query="$2" start=$SECONDS
    until [ "$(sql "$query" 2>/dev/null)" = "t" ]; do
        [ $((SECONDS - start)) -lt "$WAIT_LIMIT_S" ] || fail "timed out waiting for: $what"
        sleep "${POLL_S:-3}"
    done
}

# One named check: the query must return exactly "t".
check() {
    local what="$1" query="$2" got
    got="$(sql "$query")"
    [ "$got" = "t" ] || fail "$what (query returned '$got')"
    log "ok  $what"
}
