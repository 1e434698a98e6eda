# A throwaway PostgreSQL for the tests. Sourced by scripts/test.sh (not executed).
#
# When PORTCULLIS_TEST_POSTGRES_URL is already set (a CI service, a local server) it is used
# as is: it must be a superuser URL, since each test creates and drops its own database.
# Otherwise: installs PostgreSQL with apt when no server binary is found, starts a private
# cluster in a temporary directory on a free loopback port (as the `postgres` OS user when
# run as root: PostgreSQL refuses to run as root), exports PORTCULLIS_TEST_POSTGRES_URL and
# stops and removes the cluster when the sourcing shell exits.
#
# Standalone use (keeps the cluster until the shell exits):
#   source scripts/services/postgres.sh && echo "$PORTCULLIS_TEST_POSTGRES_URL"

_pg_say() { printf '== %s\n' "$*"; }

_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

_pg_install() {
    local sudo=
    [[ $(id -u) -eq 0 ]] || sudo="sudo -n"
    _pg_say "installing PostgreSQL (apt: postgresql)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
        || { $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
            $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
}

# A TCP port nothing listens on right now (the kernel picks it).
_pg_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
_pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_pg_stop() {
    if [[ -n ${_PG_DATA:-} && -d $_PG_DATA ]]; then
        _pg_as_owner "$_PG_BIN/pg_ctl" -D "$_PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ -n ${_PG_DIR:-} ]]; then
        rm -rf "$_PG_DIR"
    fi
}

_pg_start() {
    _PG_BIN=$(_pg_bindir) || { _pg_install && _PG_BIN=$(_pg_bindir); } \
        || { echo "postgres.sh: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2; return 1; }
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "postgres.sh: running as root but there is no \`postgres\` user to own the cluster" >&2
        return 1
    fi
    _PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-pg.XXXXXX")
    _PG_DATA=$_PG_DIR/data
    local port password log
    port=$(_pg_free_port)
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    log=$_PG_DIR/postgres.log
    printf '%s\n' "$password" >"$_PG_DIR/pwfile"
    chmod 0755 "$_PG_DIR"
    chmod 0644 "$_PG_DIR/pwfile"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$_PG_DIR"
    fi
    _pg_as_owner "$_PG_BIN/initdb" -D "$_PG_DATA" -U portcullis --pwfile="$_PG_DIR/pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$_PG_DIR/initdb.log" 2>&1 \
        || { cat "$_PG_DIR/initdb.log" >&2; return 1; }
    rm -f "$_PG_DIR/pwfile"
    # Loopback only; the socket directory is ours. fsync off: a test cluster need not
    # survive a power cut, and the suite creates and drops many databases.
    _pg_as_owner "$_PG_BIN/pg_ctl" -D "$_PG_DATA" -l "$log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
        >/dev/null || { cat "$log" >&2; return 1; }
    export PORTCULLIS_TEST_POSTGRES_URL="postgres://portcullis:$password@127.0.0.1:$port/postgres"
    _pg_say "PostgreSQL $("$_PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $_PG_DATA)"
}

if [[ -z ${PORTCULLIS_TEST_POSTGRES_URL:-} ]]; then
    # Chained with whatever EXIT trap the sourcing shell (or another service script) set.
    _pg_prev_trap=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
    trap "_pg_stop; ${_pg_prev_trap}" EXIT
    _pg_start || { _pg_stop; echo "postgres.sh: could not start a test PostgreSQL" >&2; exit 1; }
else
    _pg_say "PostgreSQL from PORTCULLIS_TEST_POSTGRES_URL"
fi
