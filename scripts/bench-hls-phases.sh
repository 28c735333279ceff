#!/usr/bin/env bash
# Where a server's CPU goes over a bench/reader run, by phase (issue 16's plain-HLS and
# HTTP-FLV figures): the ramp (the first RAMP_SECS while N viewers join at RAMP per second),
# the steady state (STEADY_SECS from RAMP_SECS + 1 s on) and the end (2 s after the reader
# exits), each `perf stat -e task-clock,context-switches` on the server's processes (nginx:
# master and workers). Never asserted: figures for BENCHMARKS.md.
#
# One fresh server per invocation (started as scripts/bench-hls.sh starts it), the harness
# publishing (`corecast-loadtest publish`, KBPS), the viewers started once the playlist lists a
# segment. MODE=phases (default) as above; MODE=strace: `strace -c -f` over the ramp instead;
# MODE=record: `perf record -g` over the ramp instead (a profile of the viewers' starts).
# MODE=memory: the server's resident memory before the viewers and RAMP_SECS + 3 s after they
# start, per viewer (it includes what the stream itself grew meanwhile: run N=1 to see that).
# AFTER=S starts the strace or the profile S seconds after the viewers (RAMP_SECS long): the
# steady state's with AFTER=6. NETNS=1 (as root): the publisher and the viewers run in a network
# namespace of their own over a veth pair, as in scripts/bench-hls.sh; with it SPLIT=N puts the
# server on CPUs 0..N-1 and the clients and their receive work on the others (bench-lib.sh's
# `split_up`), and MODE=record then profiles the server's CPUs whole (`perf record -a -C`: the
# kernel's work there in any context) instead of its processes.
#
# Usage: scripts/bench-hls-phases.sh corecast|nginx [N]
# Environment: KIND (hls | flv | rtmp; flv and rtmp for corecast only), RAMP (200),
# RAMP_SECS (5), STEADY_SECS (8), AFTER (0), DURATION (reader seconds, 20), KBPS (1000), GOP_FRAMES (60),
# PART_MS (200), CORES (0), BIN (release binaries, target/release), CORECAST (the node binary,
# default $BIN/corecast), OUT (target/bench-hls-phases). Needs perf (MODE=phases) or strace.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
server=${1:?usage: bench-hls-phases.sh corecast|nginx [N]}
n=${2:-1000}
KIND=${KIND:-hls}; RAMP=${RAMP:-200}; RAMP_SECS=${RAMP_SECS:-5}; STEADY_SECS=${STEADY_SECS:-8}
DURATION=${DURATION:-20}; KBPS=${KBPS:-1000}; GOP_FRAMES=${GOP_FRAMES:-60}
PART_MS=${PART_MS:-200}; CORES=${CORES:-0}; MODE=${MODE:-phases}; AFTER=${AFTER:-0}
BIN=${BIN:-target/release}; CORECAST=${CORECAST:-$BIN/corecast}
OUT=${OUT:-target/bench-hls-phases}
mkdir -p "$OUT"
case $server in corecast|nginx) ;; *) echo "bench-hls-phases: corecast or nginx" >&2; exit 1 ;; esac
# The servers exactly as bench-hls.sh starts them (its start_corecast and start_nginx).
eval "$(awk '/^start_(corecast|nginx)\(\) \{/{p=1} p{print} p&&/^  echo \$!$/{e=1;next} e&&/^}$/{p=0;e=0}' scripts/bench-hls.sh)"

trap netns_down EXIT
netns_up
split_up
rtmp=$(free_port); http=$(free_port)
pid=$("start_$server" "$rtmp" "$http")
pub=
cleanup() { kill $pub "$pid" 2>/dev/null || true; wait $pub "$pid" 2>/dev/null || true; netns_down; }
trap cleanup EXIT
wait_port "$rtmp"; wait_port "$http"
"${CLIENT[@]}" "$BIN/corecast-loadtest" publish "rtmp://$BENCH_HOST:$rtmp/live/bench" --bitrate-kbps "$KBPS" \
  --audio-kbps 64 --gop-frames "$GOP_FRAMES" --duration $((DURATION + 60)) --cores 1 --quiet \
  >/dev/null 2>"$OUT/publisher.err" &
pub=$!
case $server/$KIND in
  corecast/hls) url=http://$BENCH_HOST:$http/hls/live/bench/plain.m3u8; list=$url ;;
  corecast/flv) url=http://$BENCH_HOST:$http/live/bench.flv ;;
  corecast/rtmp) url=rtmp://$BENCH_HOST:$rtmp/live/bench ;;
  nginx/hls) url=http://$BENCH_HOST:$http/hls/bench.m3u8; list=$url ;;
  *) echo "bench-hls-phases: KIND=$KIND is for corecast only" >&2; exit 1 ;;
esac
[ "$server" = corecast ] && list=${list:-http://$BENCH_HOST:$http/hls/live/bench/plain.m3u8}
wait_segment "$list" || exit 1
pids=$pid
[ "$server" = nginx ] && pids="$pid $(pgrep -P "$pid" | tr '\n' ' ')"
list_pids=$(echo $pids | tr ' ' ',')
label="$OUT/$server-$KIND-$n"
stat() { perf stat -e task-clock,context-switches -p "$list_pids" -o "$label.$1" -- sleep "$2" 2>/dev/null; }
if [ "$MODE" = strace ]; then
  # shellcheck disable=SC2046
  ( sleep "$AFTER"
    timeout -s INT "$RAMP_SECS" strace -c -f $(printf -- '-p %s ' $pids) -o "$label.strace" 2>/dev/null ) &
elif [ "$MODE" = memory ]; then
  rss_of "$pid" > "$label.rss"
elif [ "$MODE" = record ]; then
  ( sleep "$AFTER"
    if [ -n "$SERVER_CPUS" ]; then target=(-a -C "$SERVER_CPUS"); else target=(-p "$list_pids"); fi
    perf record -q -F 2999 -g "${target[@]}" -o "$label.perf" -- sleep "$RAMP_SECS" 2>/dev/null ) &
else
  stat ramp "$RAMP_SECS" &
fi
timeout $((DURATION + 60)) "${CLIENT[@]}" "$BIN/corecast-reader" "$url" -n "$n" --duration-secs "$DURATION" \
  --ramp "$RAMP" --setup-timeout-secs 15 --json "$label.json" >/dev/null 2>"$label.err" &
reader=$!
if [ "$MODE" = phases ]; then
  sleep $((RAMP_SECS + 1)); stat steady "$STEADY_SECS"
elif [ "$MODE" = memory ]; then
  sleep $((RAMP_SECS + 3)); rss_of "$pid" >> "$label.rss"
fi
wait $reader || true
wait
[ "$MODE" = phases ] && { sleep 0.5; stat end 2; }
python3 - "$label" "$MODE" <<'PY'
import json, re, sys
label, mode = sys.argv[1:]
r = json.load(open(label + ".json"))
print(f"{label}: {r['players'] - r['failed']}/{r['players']} viewers played, {r['bytes']/1e9:.3f} GB counted")
if mode == "strace":
    print(open(label + ".strace").read())
elif mode == "memory":
    before, during = (int(x) for x in open(label + ".rss").read().split())
    n = r["players"]
    print(f"  resident: {before} KiB before the viewers, {during} KiB with them: "
          f"{(during - before) / n:.1f} KiB per viewer")
elif mode == "record":
    print(f"perf report -i {label}.perf --no-children --sort symbol")
else:
    for phase in ("ramp", "steady", "end"):
        text = open(f"{label}.{phase}").read()
        # "<not counted>": the processes did not run in that phase.
        ms = re.search(r"([\d.,]+)\s+msec task-clock", text)
        cs = re.search(r"([\d,]+)\s+context-switches", text)
        ms = ms.group(1).replace(",", "") if ms else "0"
        cs = cs.group(1).replace(",", "") if cs else "0"
        print(f"  {phase}: task-clock {ms} ms, context switches {cs}")
PY
