#!/usr/bin/env bash
# Per-request cost of plain HLS in the node, as counts that repeat on a loaded machine (issue
# 16): one node (`--cores 1`), one synthetic publish (corecast-loadtest, 1000 kbit/s), then a
# fixed number of plain HLS requests on keep-alive connections (scripts/hls_requests.py: C
# connections, R rounds of playlist, playlist, newest segment) after one warm-up round.
#   MODE=callgrind: the node under valgrind's callgrind, counters zeroed before the requests
#                   and dumped after: user-space instructions (Ir) per request;
#   MODE=strace:    `strace -c -f` attached for the requests: syscalls per request;
#   MODE=cpu:       utime+stime of the node over the requests (noisy on a shared machine).
# Usage: [MODE=callgrind] [C=20] [R=30] scripts/bench-hls-requests.sh NODE-BINARY LABEL
# Results: target/bench-hls-requests/LABEL/. Needs python3, curl, valgrind or strace.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
BIN=$1 LABEL=$2 MODE=${MODE:-callgrind} C=${C:-20} R=${R:-30}
LOADTEST=${LOADTEST:-$(dirname "$BIN")/corecast-loadtest}
[ -x "$LOADTEST" ] || LOADTEST=target/release/corecast-loadtest
D=target/bench-hls-requests/$LABEL
rm -rf "$D"; mkdir -p "$D"
rtmp=$(free_port); http=$(free_port)
printf '[http]\nmax_connections_per_core = 1024\n[log]\nlevel = "warn"\n' >"$D/corecast.toml"
wrap=()
[ "$MODE" = callgrind ] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" --dump-instr=no)
"${wrap[@]}" "$BIN" --config "$D/corecast.toml" --rtmp-listen "127.0.0.1:$rtmp" \
  --http-listen "127.0.0.1:$http" --cores 1 >/dev/null 2>"$D/node.log" &
node=$!
pub=""
trap 'kill $node $pub 2>/dev/null || true' EXIT
for _ in 1 2 3 4 5 6; do wait_port "$rtmp" 2>/dev/null && break; done
wait_port "$http"
"$LOADTEST" publish "rtmp://127.0.0.1:$rtmp/live/bench" --bitrate-kbps 1000 --duration 300 \
  >/dev/null 2>"$D/publish.log" &
pub=$!
url=/hls/live/bench/plain.m3u8
for _ in $(seq 100); do
  [ "$(curl -s --max-time 5 "http://127.0.0.1:$http$url" | grep -c '^s' || true)" -ge 2 ] && break
  sleep 0.5
done
python3 scripts/hls_requests.py 127.0.0.1 "$http" "$url" "$C" 1 >/dev/null
ticks() { sed 's/.*) //' "/proc/$node/stat" | awk '{print $12 + $13}'; }
case $MODE in
  callgrind) callgrind_control -z "$node" >/dev/null ;;
  strace) strace -c -f -p "$node" -o "$D/strace.txt" & tracer=$!; sleep 1 ;;
esac
t0=$(ticks)
python3 scripts/hls_requests.py 127.0.0.1 "$http" "$url" "$C" "$R" | tee "$D/client.txt"
t1=$(ticks)
req=$(sed 's/requests=\([0-9]*\).*/\1/' "$D/client.txt")
case $MODE in
  callgrind)
    callgrind_control -d "$node" >/dev/null; sleep 1
    ir=$(callgrind_annotate "$(ls -t "$D"/cg.out.* | head -1)" 2>/dev/null \
      | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    echo "$LABEL: Ir per request $((ir / req)) ($ir over $req requests)" ;;
  strace)
    kill -INT "$tracer"; wait "$tracer" || true
    echo "$LABEL: syscalls per request"
    awk -v r="$req" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "  %s %.2f\n", $NF, $4 / r}' \
      "$D/strace.txt" | sort -k2 -nr | head -12 ;;
  *)
    echo "$LABEL: CPU-s $(( t1 - t0 )) ticks of $(getconf CLK_TCK)/s over $req requests (load $(cut -d' ' -f1-3 /proc/loadavg))" ;;
esac
