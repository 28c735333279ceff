#!/usr/bin/env bash
# `make bench-scaling`: what one hot stream delivers from a node on 1 core and on 2 cores.
#
# The node runs pinned (taskset) to CPU 0 with `--cores 1`, then to CPUs 0-1 with `--cores 2`;
# the load-test harness runs pinned to the other CPUs. For each node size, one publisher of
# the synthetic stream and N players, for N in STEPS, until the node stops holding every
# player at full bitrate. Its capacity is the delivered Mbit/s of the largest N it held (every
# player connected, got a key frame, saw no gap, was not dropped, and got at least 98 % of
# the source bitrate). Prints both capacities and their ratio.
#
# It needs a machine where the harness has CPUs of its own: at least 4 CPUs (2 for the node,
# 2 or more for the harness). On fewer, the harness shares CPUs with the node and the figure
# measures the harness, so it refuses unless FORCE=1 (for a smoke run of the script).
#
# Everything binds 127.0.0.1; every run is bounded by DURATION. Results: target/bench-scaling/.
# Environment: STEPS ("1000 2000 3000 4000 6000 8000 12000 16000"), KBPS (2500), DURATION (15),
# WINDOW_MS (100), FORCE, CARGO.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

STEPS=${STEPS:-"1000 2000 3000 4000 6000 8000 12000 16000"}
KBPS=${KBPS:-2500}
DURATION=${DURATION:-15}
WINDOW_MS=${WINDOW_MS:-100}
CARGO=${CARGO:-cargo}
OUT=target/bench-scaling
CPUS=$(nproc)

if [ "$CPUS" -lt 4 ] && [ "${FORCE:-0}" != 1 ]; then
  echo "bench-scaling: needs at least 4 CPUs (2 for the node, the rest for the harness); this machine has $CPUS." >&2
  echo "bench-scaling: FORCE=1 runs it anyway, but then the harness competes with the node." >&2
  exit 2
fi
command -v taskset >/dev/null || { echo "bench-scaling: needs taskset (apt-get install util-linux)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-scaling: needs python3" >&2; exit 1; }
mkdir -p "$OUT"
"$CARGO" build --release -p corecast-node -p corecast-loadtest
BIN=target/release
ulimit -n 65536 2>/dev/null || true


printf '[player]\nmerge_window_ms = %s\n[http]\nenabled = false\n[log]\nlevel = "warn"\n%s' "$WINDOW_MS" "$BENCH_LIMITS" >"$OUT/corecast.toml"
: >"$OUT/results.jsonl"
for cores in 1 2; do
  node_cpus=$([ "$cores" = 1 ] && echo 0 || echo 0-1)
  harness_first=$cores
  [ "$harness_first" -lt "$CPUS" ] || harness_first=0 # FORCE on a tiny machine: share
  harness_cpus="$harness_first-$((CPUS - 1))"
  harness_cores=$((CPUS - harness_first))
  for n in $STEPS; do
    port=$(free_port)
    taskset -c "$node_cpus" "$BIN/corecast" --config "$OUT/corecast.toml" \
      --rtmp-listen "127.0.0.1:$port" --cores "$cores" >/dev/null 2>"$OUT/corecast-$cores.log" &
    pid=$!
    trap 'kill '"$pid"' 2>/dev/null || true' EXIT
    wait_port "$port"
    json="$OUT/cores$cores-$n.json"
    taskset -c "$harness_cpus" timeout $((DURATION + 120)) "$BIN/corecast-loadtest" e2e \
      "rtmp://127.0.0.1:$port/live/scaling" -n "$n" --duration "$DURATION" --bitrate-kbps "$KBPS" \
      --audio-kbps 128 --ramp 2000 --cores "$harness_cores" --max-connections $((n + 10)) \
      --server-pid "$pid" --quiet --json "$json" >/dev/null 2>"$OUT/cores$cores-$n.err" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    held=$(python3 - "$json" "$cores" "$n" <<'PY' | tee -a "$OUT/results.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"])'
import json, sys
path, cores, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    r = json.load(open(path))
except Exception as e:
    print(json.dumps({"cores": cores, "players": n, "held": False, "error": str(e)}))
    sys.exit(0)
p = r["players"]
ok = p["with_keyframe"] - p["gaps"]["players_with_gaps"] - r["connections"]["dropped"]
ratio = (p.get("bitrate_ratio") or {}).get("min") or 0
server = r.get("server") or {}
held = p["connected"] == n and ok == n and r["connections"]["failed"] == 0 and ratio >= 0.98
print(json.dumps({
    "cores": cores, "players": n, "held": held, "players_ok": ok,
    "bitrate_ratio_min": ratio, "mbps": r["throughput"]["aggregate_mbps"],
    "server_cpu_pct": server.get("cpu_pct"), "cpu_s_per_gb": server.get("cpu_secs_per_gb"),
}))
PY
)
    tail -n 1 "$OUT/results.jsonl"
    [ "$held" = True ] || break
  done
done

python3 - "$OUT/results.jsonl" "$KBPS" "$DURATION" "$CPUS" >"$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
kbps, duration, cpus = sys.argv[2:]
print(f"One stream at {kbps} kbit/s, {duration} s per step, {cpus} CPUs (node pinned to 1 or 2, harness on the rest).\n")
print("| node cores | players | held | ok | bitrate ratio min | Mbit/s | node CPU % | CPU-s/GB |")
print("|---|---|---|---|---|---|---|---|")
def f(v, d):
    return "-" if v is None else f"{v:.{d}f}"
for r in rows:
    print(f"| {r['cores']} | {r['players']} | {r['held']} | {r.get('players_ok', '-')} | {f(r.get('bitrate_ratio_min'), 3)} | {f(r.get('mbps'), 0)} | {f(r.get('server_cpu_pct'), 0)} | {f(r.get('cpu_s_per_gb'), 2)} |")
cap = {c: max([r["mbps"] for r in rows if r["cores"] == c and r["held"]], default=None) for c in (1, 2)}
saturated = {c: any(not r["held"] for r in rows if r["cores"] == c) for c in (1, 2)}
print()
for c in (1, 2):
    print(f"- capacity on {c} core{'s' if c > 1 else ''}: {f(cap[c], 0) if cap[c] is not None else 'none held'} Mbit/s"
          + ("" if saturated[c] else " (never saturated: a lower bound)"))
if not saturated[1]:
    print("- 1 core held every step: no ratio; add larger STEPS")
elif cap[1] and cap[2]:
    bound = "" if saturated[2] else " (a lower bound: 2 cores held every step; add larger STEPS)"
    print(f"- 2 cores / 1 core: **{cap[2] / cap[1]:.2f}x**{bound}")
PY
cat "$OUT/summary.md"
echo "bench-scaling: $OUT/summary.md, raw rows in $OUT/results.jsonl"
