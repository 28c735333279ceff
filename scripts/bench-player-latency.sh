#!/usr/bin/env bash
# Latency in the browser: the player page (/play/live/bench) in headless Chromium, over LL-HLS
# (hls.js, low-latency mode) and over WebSocket-FLV (mpegts.js), p50 and p99.
#
# One ffmpeg publisher loops a generated 720p30 H.264/AAC file (1 s GOP) in real time (`-re`);
# node/tests/console/play.mjs opens the page, waits until the video has played 5 s, then
# samples every 250 ms for SECONDS:
# - LL-HLS "by the clock": Date.now() minus hls.js's `playingDate`, the wall-clock time of the
#   frame on screen from the playlist's EXT-X-PROGRAM-DATE-TIME. The node stamps a stream's
#   timeline with its clock when the first keyframe arrives, so with a real-time publisher
#   this is arrival at the node to display (same host, same clock); it leaves out the
#   encoder's own delay (none here: the file is copied, not encoded live).
# - LL-HLS hls.js `latency`: hls.js's estimate (live edge of the playlist minus position).
# - WebSocket-FLV: the video's buffer ahead of its position (FLV carries no clock, so this is
#   a lower bound on what the viewer is behind).
#
# - With NGINX=1, nginx-rtmp's HLS of the same publish (Debian's nginx + libnginx-mod-rtmp,
#   1 s fragments like Corecast's 1 s segments, files served by nginx with sendfile) in the
#   same page: nginx proxies /play/ to the node and answers /hls/live/bench/ from its HLS
#   folder, so the page is unchanged. Its playlists carry no PROGRAM-DATE-TIME, so only
#   hls.js's estimate is reported, which leaves out the fragment nginx-rtmp is still writing
#   (up to 1 s more).
#
# Usage: scripts/bench-player-latency.sh [SECONDS] [PART_MS]     (defaults 30, 200)
# CORECAST_BIN picks the binary (default target/release/corecast, else target/debug/corecast).
# Needs: ffmpeg, node, /usr/bin/chromium, `npm ci` in node/tests/console and in player/
# (scripts/install-deps.sh), python3. Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

SECONDS_RUN=${1:-30}
PART_MS=${2:-200}
BIN=${CORECAST_BIN:-}
if [ -z "$BIN" ]; then
  BIN=target/release/corecast
  [ -x "$BIN" ] || BIN=target/debug/corecast
fi
[ -x "$BIN" ] || { echo "bench-player-latency: build first: cargo build --release -p corecast-node" >&2; exit 1; }
[ -d node/tests/console/node_modules/playwright-core ] || { echo "bench-player-latency: run scripts/install-deps.sh (playwright-core)" >&2; exit 1; }
[ -f player/node_modules/hls.js/dist/hls.min.js ] || { echo "bench-player-latency: run npm ci --prefix player" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "bench-player-latency: making test media" >&2
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=44100" \
  -t 20 -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -b:v 2500k \
  -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$work/src.flv"

rtmp_port=$(free_port)
http_port=$(free_port)
cat >"$work/node.toml" <<EOF
[node]
cores = 1
[rtmp]
listen = "127.0.0.1:$rtmp_port"
[http]
listen = "127.0.0.1:$http_port"
[hls]
part_target_ms = $PART_MS
segment_target_ms = 1000
[player_page]
assets_dir = "$PWD/player/node_modules"
[log]
level = "warn"
EOF
"$BIN" --config "$work/node.toml" 2>"$work/node.log" &
pids+=($!)
wait_port "$http_port"
targets="rtmp://127.0.0.1:$rtmp_port/live/bench"
if [ "${NGINX:-0}" = 1 ]; then
  nginx_rtmp=$(free_port)
  nginx_http=$(free_port)
  mkdir -p "$work/nginx/logs" "$work/nginx-hls"
  # Run as root, nginx's workers would be `nobody`, who cannot write the HLS folder.
  user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
$user
daemon off;
master_process on;
worker_processes 1;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
rtmp {
  server {
    listen 127.0.0.1:$nginx_rtmp;
    application live { live on; hls on; hls_path $work/nginx-hls; hls_fragment 1s; hls_playlist_length 6s; }
  }
}
http {
  access_log off;
  sendfile on;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:$nginx_http;
    location /play/ { proxy_pass http://127.0.0.1:$http_port; }
    location = /hls/live/bench/index.m3u8 { alias $work/nginx-hls/bench.m3u8; add_header Cache-Control no-cache; }
    location /hls/live/bench/ { alias $work/nginx-hls/; }
  }
}
CONF
  /usr/sbin/nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>>"$work/nginx/logs/error.log" &
  pids+=($!)
  wait_port "$nginx_http"
  targets="$targets|rtmp://127.0.0.1:$nginx_rtmp/live/bench"
fi
# One publish to both servers (ffmpeg's tee muxer: the same packets, at the same moment).
tee_spec=$(echo "$targets" | sed 's/rtmp:/[f=flv]rtmp:/g')
ffmpeg -hide_banner -loglevel error -stream_loop -1 -re -i "$work/src.flv" -map 0 -c copy \
  -f tee "$tee_spec" </dev/null &
pids+=($!)

measure() {
  local label=$1 url=$2
  echo "bench-player-latency: $label for ${SECONDS_RUN}s" >&2
  (cd node/tests/console && timeout $((SECONDS_RUN + 120)) node play.mjs "$url" 5 "$SECONDS_RUN") >"$work/$label.json"
}
measure hls "http://127.0.0.1:$http_port/play/live/bench"
measure flv "http://127.0.0.1:$http_port/play/live/bench?via=flv"
if [ "${NGINX:-0}" = 1 ]; then
  measure nginx "http://127.0.0.1:$nginx_http/play/live/bench"
else
  echo '{"samples": []}' >"$work/nginx.json"
fi

python3 - "$work/hls.json" "$work/flv.json" "$work/nginx.json" "$BIN" "$PART_MS" "$SECONDS_RUN" <<'EOF'
import json, sys

def pct(values, p):
    values = sorted(v for v in values if isinstance(v, (int, float)))
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

hls, flv, nginx = (json.load(open(path)) for path in sys.argv[1:4])
binary, part_ms, seconds = sys.argv[4:7]
print(f"binary {binary}, part target {part_ms} ms, {seconds} s of samples every 250 ms each")
print(f"hls.js lowLatencyMode: {hls['lowLatencyMode']}, parts loaded: {hls['parts']}, target latency {hls['samples'][-1]['targetLatency'] if hls['samples'] else 'n/a'} s")
print("| what | samples | p50 (s) | p99 (s) |")
print("|---|---|---|---|")
for label, run, key in [
    ("LL-HLS, by the clock (PROGRAM-DATE-TIME)", hls, "clockLatency"),
    ("LL-HLS, hls.js latency estimate", hls, "latency"),
    ("WebSocket-FLV, buffer ahead (lower bound)", flv, "latency"),
    ("nginx-rtmp HLS, hls.js latency estimate (NGINX=1; leaves out up to 1 s)", nginx, "latency"),
]:
    if not run["samples"]:
        continue
    values = [s[key] for s in run["samples"]]
    print(f"| {label} | {len(values)} | {pct(values, 50):.2f} | {pct(values, 99):.2f} |")
EOF
