#!/usr/bin/env bash
# Issue 16's CPU ratios over several rounds: scripts/bench-hls.sh ROUNDS times (each round a
# fresh server per run, Corecast's and nginx's runs one after the other), then every ratio the
# rounds printed, per round, with its mean, its range and the pooled ratio (all rounds' CPU
# over all their bytes, on each side). On a shared VM one round's ratio moves by ±30 % from
# round to round (BENCHMARKS.md, sessions 10 and 11); what is claimed must hold over rounds.
# Never asserted: figures for BENCHMARKS.md.
#
# Environment: ROUNDS (5), RUNS (plain), READER (1: both readers), OUT
# (target/bench-hls-rounds: round-N/ with each round's summary.md and rows.jsonl, and
# rounds.md); everything else (DURATION, CORES, NGINX_WORKERS, KBPS, CORECAST, CARGO, ...)
# goes to bench-hls.sh as it is. The build is made once, before the first round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-target/bench-hls-rounds}
export RUNS=${RUNS:-plain} READER=${READER:-1}
mkdir -p "$OUT"
CARGO=${CARGO:-cargo}
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$OUT/round-$round"
  echo "bench-hls-rounds: round $round of $ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  # Later rounds do not build again: the first one did.
  OUT="$OUT/round-$round" CARGO=$CARGO scripts/bench-hls.sh >/dev/null
  CARGO=true
done

python3 - "$OUT" "$ROUNDS" >"$OUT/rounds.md" <<'PY'
import json, os, sys
out, rounds = sys.argv[1], int(sys.argv[2])
# (label, Corecast's run, its reference run, CPU figure): the ratios bench-hls.sh's summary
# prints. "cpu_s" is the server's own CPU; "machine_cpu_s" the whole machine's, clients included.
PAIRS = [
    ("plain HLS ÷ nginx, harness", "plain-corecast", "plain-nginx", "cpu_s"),
    ("plain HLS ÷ nginx, reader", "plain-corecast-reader", "plain-nginx-reader", "cpu_s"),
    ("plain HLS ÷ nginx, harness, whole machine", "plain-corecast", "plain-nginx", "machine_cpu_s"),
    ("plain HLS ÷ nginx, reader, whole machine", "plain-corecast-reader", "plain-nginx-reader",
     "machine_cpu_s"),
    # SPLIT only: the busy time of the servers' own CPUs.
    ("plain HLS ÷ nginx, harness, servers' CPUs", "plain-corecast", "plain-nginx",
     "server_cpu_busy_s"),
    ("plain HLS ÷ nginx, reader, servers' CPUs", "plain-corecast-reader", "plain-nginx-reader",
     "server_cpu_busy_s"),
    ("LL-HLS ÷ plain HLS", "ll-corecast", "plain-corecast", "cpu_s"),
    ("HTTP-FLV ÷ RTMP, harness", "flv-corecast", "rtmp-corecast", "cpu_s"),
    ("HTTP-FLV ÷ RTMP, reader", "flv-corecast-reader", "rtmp-corecast-reader", "cpu_s"),
]
per_round = []
for n in range(1, rounds + 1):
    path = os.path.join(out, f"round-{n}", "rows.jsonl")
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[r["run"]] = r
    per_round.append(rows)
env = {k: os.environ.get(k, "-")
       for k in ("DURATION", "CORES", "NGINX_WORKERS", "KBPS", "PLAIN_VIEWERS", "NETNS", "SPLIT")}
print(f"{rounds} rounds of scripts/bench-hls.sh; " + ", ".join(f"{k}={v}" for k, v in env.items())
      + " (- : bench-hls.sh's default). CPU-s per GB, the run over its reference = ratio.\n")
print("| ratio | per round | mean | range | pooled |")
print("|---|---|---|---|---|")
for label, a, b, cpu in PAIRS:
    per_gb = cpu + "_per_gb"
    cells, ratios, sums = [], [], [0.0, 0.0, 0.0, 0.0]
    for rows in per_round:
        x, y = rows.get(a, {}), rows.get(b, {})
        if not x.get(per_gb) or not y.get(per_gb):
            continue
        ratio = x[per_gb] / y[per_gb]
        ratios.append(ratio)
        cells.append(f"{x[per_gb]:.3f} / {y[per_gb]:.3f} = {ratio:.2f}")
        for i, row in enumerate((x, y)):
            sums[2 * i] += row[cpu]
            sums[2 * i + 1] += row["gb"]
    if not ratios:
        continue
    # A run that moved almost nothing rounds its GB (or CPU) to 0: no pooled value then.
    pooled = f"{(sums[0] / sums[1]) / (sums[2] / sums[3]):.2f}" if all(sums) else "-"
    print(f"| {label} | {' · '.join(cells)} | {sum(ratios) / len(ratios):.2f} "
          f"| {min(ratios):.2f}–{max(ratios):.2f} | {pooled} |")
PY
cat "$OUT/rounds.md"
echo "bench-hls-rounds: $OUT/rounds.md, each round in $OUT/round-N/"
