#!/usr/bin/env bash
# `make loadtest`: builds release binaries, starts a local Corecast node on loopback, runs a
# scenario against it (default: loadtest/scenarios/default.toml, 1 synthetic 2.5 Mbit/s
# publisher + 200 players for 30 s) with the node's CPU and memory measured, writes
# target/loadtest/report.{json,html} and stops the node.
#
# Environment: SCENARIO (file), LISTEN (host:port, loopback), OUT (report folder),
# CARGO, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO=${CARGO:-cargo}
SCENARIO=${SCENARIO:-loadtest/scenarios/default.toml}
LISTEN=${LISTEN:-127.0.0.1:1935}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/loadtest}
host=${LISTEN%:*}
port=${LISTEN##*:}

# Corecast binds with SO_REUSEPORT: a second node on a busy port would share it silently and
# half the players would land on the other process. Refuse instead.
if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  echo "loadtest: something already listens on $LISTEN; stop it or set LISTEN=127.0.0.1:PORT" >&2
  exit 1
fi

"$CARGO" build --release -p corecast-node -p corecast-loadtest
mkdir -p "$OUT"
RUST_LOG=${RUST_LOG:-warn,corecast_node::server=info} \
  "$TARGET/release/corecast" --rtmp-listen "$LISTEN" --http-listen "$host:$((port + 1))" \
  2>"$OUT/corecast.log" &
node=$!
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true' EXIT

for _ in $(seq 1 200); do
  grep -q "corecast ready" "$OUT/corecast.log" && break
  if ! kill -0 "$node" 2>/dev/null; then
    echo "loadtest: the node did not start:" >&2
    cat "$OUT/corecast.log" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q "corecast ready" "$OUT/corecast.log" || { echo "loadtest: node not ready" >&2; exit 1; }

# A failed run (connections lost, a threshold crossed) still leaves its reports.
status=0
"$TARGET/release/corecast-loadtest" run --scenario "$SCENARIO" \
  --url "rtmp://$LISTEN/live/loadtest" --server-pid "$node" \
  --json "$OUT/report.json" --html "$OUT/report.html" || status=$?
echo "loadtest: reports in $OUT/report.json and $OUT/report.html"
exit "$status"
