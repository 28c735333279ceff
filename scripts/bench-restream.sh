#!/usr/bin/env bash
# Restream vs players: the node's CPU-seconds per delivered GB when it pushes one stream to N
# targets, against the same node serving the stream to N players (issue 17: at most 1.5x).
#
# One ffmpeg publisher loops a generated H.264/AAC file at about BITRATE_KBPS into node A (the
# one measured). "players": N rtmpdump players of A for SECONDS (bytes counted by `wc -c`).
# "targets": A pushes the stream to N [[restream.targets]] on a second node B (the sink, like
# the players not measured); bytes are A's corecast_restream_bytes_total. Both over plain RTMP,
# then both over RTMPS (players to A's [rtmps]; targets to B's [rtmps], trusting a private CA).
# A's user+system CPU (/proc/PID/stat) is read at the start and end of the window; both modes
# carry the same publisher, whose share is in both figures. before_window is A's CPU rate in
# the 5 s before the window (the publisher alone for players, publisher and targets else).
#
# Usage: scripts/bench-restream.sh [N] [SECONDS] [BITRATE_KBPS] [CORES]
# Needs: a release build (cargo build --release -p corecast-node), ffmpeg, rtmpdump, openssl,
# curl, python3. Loopback only; every process it starts is stopped at the end. On a shared
# machine, A, B, the publisher and the players share the CPUs: compare ratios, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

N=${1:-100}
SECONDS_RUN=${2:-20}
KBPS=${3:-2000}
CORES=${4:-1}
BIN=${CORECAST_BIN:-target/release/corecast}
[ -x "$BIN" ] || { echo "bench-restream: build first: cargo build --release -p corecast-node" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "bench-restream: making ${KBPS} kbit/s test media and a private CA" >&2
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=44100" \
  -t 10 -c:v libx264 -preset ultrafast -tune zerolatency -g 60 \
  -b:v "${KBPS}k" -minrate "${KBPS}k" -maxrate "${KBPS}k" -bufsize "$((KBPS / 2))k" \
  -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$work/src.flv"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/leaf.ext" -out "$work/cert.pem" 2>/dev/null

# A node config: RTMP and RTMPS on free ports, HTTP for /metrics, then "$extra".
node_config() {
  local rtmp=$1 rtmps=$2 http=$3 extra=$4
  cat <<EOF
[rtmp]
listen = "127.0.0.1:$rtmp"
[rtmps]
enabled = true
listen = "127.0.0.1:$rtmps"
cert_chain_path = "$work/cert.pem"
private_key_path = "$work/key.pem"
[http]
listen = "127.0.0.1:$http"
[stream]
max_streams_per_address = 10000
[log]
level = "warn"
$extra
EOF
}

restream_bytes() {
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^corecast_restream_bytes_total/ {s += $2} END {printf "%.0f\n", s + 0}'
}

run() {
  local scheme=$1 mode=$2
  local a_rtmp a_rtmps a_http b_rtmp b_rtmps b_http targets="" b=""
  a_rtmp=$(free_port); a_rtmps=$(free_port); a_http=$(free_port)
  if [ "$mode" = targets ]; then
    b_rtmp=$(free_port); b_rtmps=$(free_port); b_http=$(free_port)
    node_config "$b_rtmp" "$b_rtmps" "$b_http" "" >"$work/b.toml"
    "$BIN" --config "$work/b.toml" --cores "$CORES" 2>"$work/b-$scheme.log" &
    b=$!
    pids+=("$b")
    wait_port "$b_rtmp"
    local port=$b_rtmp
    [ "$scheme" = rtmps ] && port=$b_rtmps
    for i in $(seq 1 "$N"); do
      targets+="[[restream.targets]]
id = \"t$i\"
app = \"live\"
stream = \"bench\"
url = \"$scheme://127.0.0.1:$port/live/t$i\"
ca_file = \"$work/ca.pem\"
"
    done
  fi
  node_config "$a_rtmp" "$a_rtmps" "$a_http" "$targets" >"$work/a.toml"
  "$BIN" --config "$work/a.toml" --cores "$CORES" 2>"$work/a-$scheme-$mode.log" &
  local node=$!
  pids+=("$node")
  wait_port "$a_rtmp"
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$work/src.flv" -c copy \
    -f flv "rtmp://127.0.0.1:$a_rtmp/live/bench" </dev/null &
  local publisher=$!
  pids+=("$publisher")
  sleep 3

  local c0 c1 c2 t1 t2 bytes b1 b2
  c0=$(cpu_ticks "$node")
  sleep 5
  if [ "$mode" = targets ]; then
    # The targets run since the publish: the window measures them in their steady state.
    c1=$(cpu_ticks "$node"); b1=$(restream_bytes "$a_http"); t1=$(date +%s.%N)
    sleep "$SECONDS_RUN"
    c2=$(cpu_ticks "$node"); b2=$(restream_bytes "$a_http"); t2=$(date +%s.%N)
    bytes=$((b2 - b1))
  else
    c1=$(cpu_ticks "$node"); t1=$(date +%s.%N)
    local port=$a_rtmp players=()
    [ "$scheme" = rtmps ] && port=$a_rtmps
    for i in $(seq 1 "$N"); do
      ( timeout -s INT "$SECONDS_RUN" rtmpdump --live -q -r "$scheme://127.0.0.1:$port/live/bench" -o - 2>/dev/null |
          wc -c >"$work/$scheme.$i" ) &
      players+=($!)
    done
    wait "${players[@]}" || true
    t2=$(date +%s.%N); c2=$(cpu_ticks "$node")
    bytes=$(cat "$work/$scheme".* | awk '{s += $1} END {print s}')
  fi
  local live=""
  [ "$mode" = targets ] && live=$(curl -fsS "http://127.0.0.1:$a_http/metrics" |
    grep -c '^corecast_restream_state{state="live",target="t[0-9]*"} 1' || true)
  kill "$publisher" "$node" ${b:+"$b"} 2>/dev/null || true
  wait "$publisher" "$node" ${b:+"$b"} 2>/dev/null || true
  awk -v scheme="$scheme" -v mode="$mode" -v bytes="$bytes" -v c0="$c0" -v c1="$c1" -v c2="$c2" \
      -v hz="$hz" -v t1="$t1" -v t2="$t2" -v n="$N" -v live="$live" 'BEGIN {
    wall = t2 - t1; cpu = (c2 - c1) / hz; gb = bytes / 1e9;
    warm = (c1 - c0) / hz / 5;
    printf "%-5s %-7s n=%d%s wall=%.1fs delivered=%.3f GB (%.1f MB/s) node_cpu=%.2fs before_window=%.3f cpu-s/s cpu_per_GB=%.2f\n",
      scheme, mode, n, (live == "" ? "" : " live=" live), wall, gb, bytes / wall / 1e6, cpu, warm, (gb > 0 ? cpu / gb : 0) }' |
    tee -a "$work/results"
}

echo "bench-restream: ${N} targets vs ${N} players x ${SECONDS_RUN} s, ${CORES} core(s) each node, $(nproc) CPUs" >&2
for scheme in rtmp rtmps; do
  run "$scheme" players
  run "$scheme" targets
done
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^cpu_per_GB=/) { split($i, kv, "="); v[$1 " " $2] = kv[2] } }
  END {
    split("rtmp rtmps", schemes, " ");
    for (k = 1; k <= 2; k++) { sc = schemes[k]; p = v[sc " players"]; t = v[sc " targets"];
      if (p > 0) printf "%s: targets/players CPU per GB = %.2f (target <= 1.5)\n", sc, t / p } }' "$work/results"
