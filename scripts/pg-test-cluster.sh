#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests (the livestream registry on PostgreSQL): Debian's
# postgresql binaries, a cluster initdb'd into DIR/pg, listening on 127.0.0.1:PORT and a unix
# socket in DIR only, trust authentication (loopback only), stopped by `stop` or, whatever
# happens to the test, after LIFETIME seconds (default 600) by a watchdog.
#
#   scripts/pg-test-cluster.sh start DIR PORT [LIFETIME]   # prints the connection URL
#   scripts/pg-test-cluster.sh restart DIR                  # as after a crash (immediate)
#   scripts/pg-test-cluster.sh stop DIR
#
# initdb refuses to run as root: as root the cluster belongs to the `postgres` user that
# Debian's package creates (DIR is opened for it to reach).
set -euo pipefail

bindir=""
for candidate in /usr/lib/postgresql/*/bin; do
  [ -x "$candidate/initdb" ] && bindir="$candidate"
done
if [ -z "$bindir" ]; then
  echo "pg-test-cluster: no PostgreSQL server (run scripts/install-deps.sh)" >&2
  exit 2
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR PORT [LIFETIME] | restart DIR | stop DIR" >&2; exit 2; }
data="$dir/pg"

case "$cmd" in
  start)
    port=${3:?port}
    lifetime=${4:-600}
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then
      chmod 755 "$dir"
      chown postgres "$data"
    fi
    chmod 700 "$data"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=50" start >/dev/null \
      || { cat "$data/server.log" >&2; exit 1; }
    # The watchdog: a test that dies without `stop` leaves no server running for long.
    nohup setsid bash -c "sleep $lifetime; '$0' stop '$dir'" >/dev/null 2>&1 &
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_owner "$bindir/pg_ctl" -D "$data" -m immediate -w -t 30 restart >/dev/null \
      || { cat "$data/server.log" >&2; exit 1; }
    ;;
  stop)
    if [ -f "$data/postmaster.pid" ]; then
      as_owner "$bindir/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start DIR PORT [LIFETIME] | restart DIR | stop DIR" >&2
    exit 2
    ;;
esac
