# Corecast: the two commands are `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config/corecast.toml

.PHONY: run build test deps lint fmt bench bench-compare loadtest fuzz-check clean

## Build (release, LTO) and start a node on the default config (rtmp://0.0.0.0:1935).
run:
	$(CARGO) run --release -p corecast-node --bin corecast -- --config $(CONFIG)

build:
	$(CARGO) build --release --workspace

## Install what the tests need (ffmpeg, rtmpdump, nginx-rtmp) and run every test.
test: deps
	$(CARGO) test --workspace

deps:
	./scripts/install-deps.sh

## Format check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Criterion micro-benchmarks (chunk codec, AMF0, fan-out).
bench:
	$(CARGO) bench --workspace

clean:
	$(CARGO) clean
