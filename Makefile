# Corecast: the two commands are `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config/corecast.toml

.PHONY: run player-deps build test deps lint fmt bench bench-compare bench-scaling bench-memory bench-callgrind bench-hls loadtest fuzz clean

## Build (release, LTO) and start a node on the default config (rtmp://0.0.0.0:1935). The
## player page's scripts (hls.js, mpegts.js) are installed from npm first when missing.
run: player-deps
	$(CARGO) run --release -p corecast-node --bin corecast -- --config $(CONFIG)

## The player page's scripts at the versions player/package-lock.json pins, only when missing
## (so `make run` works offline once they are installed). Without them (no npm, no network)
## the node still runs and its player page says what to install.
player-deps:
	@if [ ! -f player/node_modules/hls.js/dist/hls.min.js ] || [ ! -f player/node_modules/mpegts.js/dist/mpegts.js ]; then \
	  if command -v npm >/dev/null 2>&1; then \
	    npm ci --prefix player --no-audit --no-fund || echo "make: npm ci --prefix player failed: the player page stays unavailable" >&2; \
	  else echo "make: npm not found: the player page stays unavailable (apt-get install npm)" >&2; fi; \
	fi

build:
	$(CARGO) build --release --workspace

## Install what the tests need (ffmpeg, rtmpdump, nginx-rtmp, prometheus) and run every
## test, including a replay of the fuzz corpus through every fuzz target.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	$(CARGO) test --manifest-path fuzz/Cargo.toml

deps:
	./scripts/install-deps.sh

## Format check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Criterion micro-benchmarks (chunk codec, AMF0, fan-out).
bench:
	$(CARGO) bench --workspace

## Every fuzz target in turn, FUZZ_SECONDS (60) each, on nightly; installs cargo-fuzz when
## missing and fails with the crash artifact's path. See fuzz/README.md.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

## Default load scenario (loadtest/scenarios/default.toml) against a local release node.
loadtest:
	./loadtest/scripts/loadtest.sh

## Corecast vs nginx-rtmp (1 worker; 2 workers + rtmp_auto_push) and the floor, each read by the
## harness and by corecast-reader, at 1 and 2.6 Mbit/s (SERVERS, READERS, BITRATES select).
bench-compare:
	./scripts/bench-compare.sh

## Browser delivery: LL-HLS latency against nginx-rtmp's HLS; CPU per GB of plain HLS against
## nginx (sendfile), LL-HLS against plain HLS, HTTP-FLV against RTMP (BENCHMARKS.md).
bench-hls:
	./scripts/bench-hls.sh

## One hot stream on 1 vs 2 pinned cores, to saturation (needs 4+ CPUs).
bench-scaling:
	./scripts/bench-scaling.sh

## RSS per connected player, Corecast and nginx-rtmp, both readers (PLAYERS, SERVERS, READERS).
bench-memory:
	./scripts/bench-memory.sh

## User-space instructions (callgrind) or syscalls (MODE=strace) per delivered MB, Corecast vs
## the floor, at 100 and 333 ms windows (needs valgrind); MODE=iovecs: iovecs per sendmsg.
bench-callgrind:
	./scripts/bench-callgrind.sh

clean:
	$(CARGO) clean
