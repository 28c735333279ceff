#!/usr/bin/env bash
# `make bench-compare`: Corecast next to nginx-rtmp, in one run, on this machine.
#
# For each server — Corecast (all cores), nginx-rtmp with 1 worker, nginx-rtmp with 2 workers
# and rtmp_auto_push — one publisher of the same deterministic synthetic H.264/AAC-shaped
# stream (the load-test harness's e2e source, real time) and N players, for N in PLAYERS.
# Measured per run: delivered Mbit/s, server CPU-seconds per delivered GB (utime+stime of all
# the server's processes from /proc), players that got a keyframe and saw no gap, bitrate
# ratio, RSS growth per player, time to first keyframe p50/p99, e2e latency. Then the floor
# (bench/floor: the same stream prepared once, written to the same harness players with one
# sendmsg per player per merge window), measured the same way, and the ratios.
#
# Everything binds 127.0.0.1; every run is bounded by DURATION. Results: target/bench-compare/.
# Environment: PLAYERS ("100 500 1000 2000"), DURATION (20), KBPS (1000), WINDOW_MS (Corecast's
# merge window, 100), CORES (Corecast executors, 0 = all CPUs), SERVERS ("corecast nginx-1 nginx-2
# floor"), ROUNDS (1; more repeats everything and the ratios use the means), CARGO.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${PLAYERS:-"100 500 1000 2000"}
DURATION=${DURATION:-20}
KBPS=${KBPS:-1000}
WINDOW_MS=${WINDOW_MS:-100}
CORES=${CORES:-0}
SERVERS=${SERVERS:-"corecast nginx-1 nginx-2 floor"}
ROUNDS=${ROUNDS:-1}
CARGO=${CARGO:-cargo}
OUT=target/bench-compare
mkdir -p "$OUT"

./scripts/install-deps.sh
command -v python3 >/dev/null || { echo "bench-compare: needs python3 (apt-get install python3)" >&2; exit 1; }
"$CARGO" build --release -p corecast-node -p corecast-loadtest -p corecast-floor
BIN=target/release


# Sum of utime+stime (seconds) and of RSS (KiB) over a process and its children.
pids_of() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }
cpu_of() {
  local total=0 tck; tck=$(getconf CLK_TCK)
  for p in $(pids_of "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    total=$(awk -v t="$total" '{print t + $14 + $15}' "/proc/$p/stat")
  done
  python3 -c "print($total / $tck)"
}
rss_of() {
  local total=0
  for p in $(pids_of "$1"); do
    [ -r "/proc/$p/status" ] || continue
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
  done
  echo "$total"
}

start_corecast() {
  local port=$1
  printf '[player]\nmerge_window_ms = %s\n[http]\nenabled = false\n[log]\nlevel = "warn"\n' "$WINDOW_MS" >"$OUT/corecast.toml"
  "$BIN/corecast" --config "$OUT/corecast.toml" --rtmp-listen "127.0.0.1:$port" --cores "$CORES" >/dev/null 2>"$OUT/corecast.log" &
  echo $!
}

start_nginx() {
  local port=$1 workers=$2 dir="$OUT/nginx-$2"
  mkdir -p "$dir/logs"
  local push="" 
  [ "$workers" -gt 1 ] && push="rtmp_auto_push on;"
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes $workers;
worker_rlimit_nofile 20000;
error_log $PWD/$dir/logs/error.log warn;
pid $PWD/$dir/nginx.pid;
events { worker_connections 10000; }
$push
rtmp {
  server {
    listen 127.0.0.1:$port;
    application live { live on; }
  }
}
CONF
  /usr/sbin/nginx -c "$PWD/$dir/nginx.conf" -p "$PWD/$dir" >/dev/null 2>&1 &
  echo $!
}


start_floor() {
  local port=$1 threads=$CORES
  [ "$threads" -gt 0 ] || threads=$(nproc)
  "$BIN/corecast-floor" --listen "127.0.0.1:$port" --seconds $((DURATION + 40)) --threads "$threads" \
    --bitrate-kbps "$KBPS" --audio-kbps 64 --merge-window-ms "$WINDOW_MS" >/dev/null 2>"$OUT/floor.log" &
  echo $!
}

run_one() { # server-label pid port players round
  local label=$1 pid=$2 port=$3 n=$4 round=$5 json="$OUT/$1-$4-r$5.json"
  local rss0 cpu0 cpu1 rss1 load
  # The floor serves its own copy of the stream: its players only play.
  if [ "$label" = floor ]; then
    load=(play)
  else
    load=(e2e --bitrate-kbps "$KBPS" --audio-kbps 64)
  fi
  rss0=$(rss_of "$pid")
  cpu0=$(cpu_of "$pid")
  timeout $((DURATION + 60)) "$BIN/corecast-loadtest" "${load[@]}" "rtmp://127.0.0.1:$port/live/bench" \
    -n "$n" --duration "$DURATION" --ramp 500 \
    --max-connections 5000 --quiet --json "$json" >/dev/null 2>"$OUT/$label-$n.err" || true
  cpu1=$(cpu_of "$pid")
  rss1=$(rss_of "$pid")
  python3 - "$json" "$label" "$n" "$cpu0" "$cpu1" "$rss0" "$rss1" "$round" >>"$OUT/results.jsonl" <<'PY'
import json, sys
path, label, n, cpu0, cpu1, rss0, rss1, rnd = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(json.dumps({"server": label, "players": int(n), "round": int(rnd), "error": str(e)}))
    sys.exit(0)
p = r["players"]
gb = r["throughput"]["bytes_in"] / 1e9
cpu = float(cpu1) - float(cpu0)
ok = p["with_keyframe"] - p["gaps"]["players_with_gaps"] - r["connections"]["dropped"]
ratio = p.get("bitrate_ratio") or {}
print(json.dumps({
    "server": label, "players": int(n), "round": int(rnd),
    "connected": p["connected"], "failed": r["connections"]["failed"],
    "players_ok": ok,
    "bitrate_ratio_min": ratio.get("min"), "bitrate_ratio_p50": ratio.get("p50"),
    "mbps": r["throughput"]["aggregate_mbps"],
    "cpu_s": round(cpu, 3), "cpu_s_per_gb": round(cpu / gb, 3) if gb > 0 else None,
    "rss_kib_per_player": round((int(rss1) - int(rss0)) / int(n), 1),
    "ttff_p50_ms": p["first_keyframe_ms"].get("p50"), "ttff_p99_ms": p["first_keyframe_ms"].get("p99"),
    "latency_p50_ms": (r.get("latency") or {}).get("p50_ms"), "latency_p99_ms": (r.get("latency") or {}).get("p99_ms"),
    "gaps": p["gaps"]["total"],
}))
PY
  tail -n 1 "$OUT/results.jsonl"
}

: >"$OUT/results.jsonl"
# Every run gets a fresh server, so its RSS growth and CPU belong to that run alone; the
# servers take turns at each N, so a drift in the machine's load hits all of them alike.
for round in $(seq 1 "$ROUNDS"); do
for n in $PLAYERS; do
  for server in $SERVERS; do
    port=$(free_port)
    case $server in
      corecast) pid=$(start_corecast "$port") ;;
      nginx-1) pid=$(start_nginx "$port" 1) ;;
      nginx-2) pid=$(start_nginx "$port" 2) ;;
      floor) pid=$(start_floor "$port") ;;
    esac
    trap 'kill '"$pid"' 2>/dev/null || true' EXIT
    wait_port "$port"
    run_one "$server" "$pid" "$port" "$n" "$round"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    trap - EXIT
  done
done
done

python3 - "$OUT/results.jsonl" "$WINDOW_MS" "$KBPS" "$DURATION" >"$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
window, kbps, duration = sys.argv[2:]
rounds = sorted({r.get("round", 1) for r in rows})
players = sorted({r["players"] for r in rows})
servers = [x for x in ["corecast", "nginx-1", "nginx-2", "floor"] if any(r["server"] == x for r in rows)]
def f(v, d=2):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def get(s, n, rnd):
    return next((r for r in rows if (r["server"], r["players"], r.get("round", 1)) == (s, n, rnd)), None)
def mean_cpu(s, n):
    v = [r["cpu_s_per_gb"] for r in rows if (r["server"], r["players"]) == (s, n) and r.get("cpu_s_per_gb")]
    return sum(v) / len(v) if v else None
print(f"Stream {kbps} kbit/s, {duration} s per run, Corecast merge window {window} ms, {len(rounds)} round(s).\n")
print("| players | server | round | connected | ok | bitrate ratio min/p50 | Mbit/s | CPU-s/GB | RSS KiB/player | TTFF p50/p99 ms | latency p50/p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in players:
    for s in servers:
        for rnd in rounds:
            r = get(s, n, rnd)
            if not r or "error" in r:
                print(f"| {n} | {s} | {rnd} | error | | | | | | | |"); continue
            print(f"| {n} | {s} | {rnd} | {r['connected']} | {r['players_ok']} | {f(r['bitrate_ratio_min'],3)}/{f(r['bitrate_ratio_p50'],3)} | {f(r['mbps'],0)} | {f(r['cpu_s_per_gb'])} | {f(r['rss_kib_per_player'],1)} | {f(r['ttff_p50_ms'],1)}/{f(r['ttff_p99_ms'],1)} | {f(r['latency_p50_ms'],1)}/{f(r['latency_p99_ms'],1)} |")
print()
print("CPU-s per GB: the mean over the rounds; the ratios divide those means.\n")
print("| players | Corecast CPU-s/GB | ÷ nginx 1 worker | ÷ nginx 2 workers | ÷ floor | floor CPU-s/GB | ÷ floor per round |")
print("|---|---|---|---|---|---|---|")
for n in players:
    c = mean_cpu("corecast", n)
    def ratio(s):
        o = mean_cpu(s, n)
        return "-" if not c or not o else f"{c / o:.2f}"
    per_round = []
    for rnd in rounds:
        a, b = get("corecast", n, rnd), get("floor", n, rnd)
        if a and b and a.get("cpu_s_per_gb") and b.get("cpu_s_per_gb"):
            per_round.append(f"{a['cpu_s_per_gb'] / b['cpu_s_per_gb']:.2f}")
    print(f"| {n} | {f(c)} | {ratio('nginx-1')} | {ratio('nginx-2')} | {ratio('floor')} | {f(mean_cpu('floor', n))} | {' '.join(per_round) or '-'} |")
PY
cat "$OUT/summary.md"
echo "bench-compare: $OUT/summary.md, raw rows in $OUT/results.jsonl"
