#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (or a number of executions), one
# after another, and fails with the crash artifact's path if any target crashes.
#
#   scripts/fuzz.sh                          # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh         # longer
#   FUZZ_RUNS=10000000 scripts/fuzz.sh       # a number of executions instead of a time
#   FUZZ_TARGETS="chunk_decoder flv_reader" scripts/fuzz.sh   # a subset
#
# Targets are discovered with `cargo fuzz list`, so a target added to fuzz/Cargo.toml is run
# without touching this script. Each target fuzzes a scratch corpus under target/fuzz-corpus/
# (kept between runs, so that later runs start where earlier ones stopped), seeded from
# fuzz/corpus/<target>/, which is only read: new finds never land in the committed corpus.
# Logs go to target/fuzz-logs/<target>.log, crashes to target/fuzz-artifacts/<target>/.
#
# Other knobs: FUZZ_SANITIZER (none; `address` for ASan, useful only if unsafe code appears
# in what the targets reach), FUZZ_EXTRA (more libFuzzer flags for every target), NICE (10).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_RUNS=${FUZZ_RUNS:-}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_EXTRA=${FUZZ_EXTRA:-}
NICE=${NICE:-10}
corpus_root=${FUZZ_CORPUS_DIR:-$root/target/fuzz-corpus}
log_root=${FUZZ_LOG_DIR:-$root/target/fuzz-logs}
artifact_root=${FUZZ_ARTIFACT_DIR:-$root/target/fuzz-artifacts}

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

# Extra libFuzzer flags for one target. A target missing here needs none.
target_flags() {
    case "$1" in
        # Its seeds (a 10 KB publish session) would raise libFuzzer's input limit to their
        # size; the re-encoding checks cost time per byte (per chunk at chunk size 1), and
        # everything they check shows at libFuzzer's usual 4 KB.
        chunk_roundtrip) echo "-max_len=4096" ;;
        *) echo "" ;;
    esac
}

cargo +nightly --version >/dev/null 2>&1 \
    || die "the nightly toolchain is missing: rustup toolchain install nightly"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz failed"
fi

# Every target, or the chosen ones (which must exist).
mapfile -t all_targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
[ "${#all_targets[@]}" -gt 0 ] || die "cargo fuzz list found no targets"
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
    for t in "${targets[@]}"; do
        printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t" || die "no fuzz target $t"
    done
else
    targets=("${all_targets[@]}")
fi

# One build for all targets: release with debug assertions and overflow checks (cargo-fuzz's
# default), so that an arithmetic overflow on peer input is a crash too.
build_flags=(--fuzz-dir fuzz -s "$FUZZ_SANITIZER" --debug-assertions)
echo "fuzz.sh: building ${#targets[@]} target(s) (sanitizer: $FUZZ_SANITIZER)" >&2
nice -n "$NICE" cargo +nightly fuzz build "${build_flags[@]}" \
    || die "cargo fuzz build failed"
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$root/fuzz/target/$triple/release

if [ -n "$FUZZ_RUNS" ]; then
    bound=(-runs="$FUZZ_RUNS")
    bound_text="$FUZZ_RUNS executions"
else
    bound=(-max_total_time="$FUZZ_SECONDS")
    bound_text="${FUZZ_SECONDS}s"
fi

mkdir -p "$log_root"
summary=()
crashes=()
for t in "${targets[@]}"; do
    corpus=$corpus_root/$t
    artifacts=$artifact_root/$t
    log=$log_root/$t.log
    seeds=$root/fuzz/corpus/$t
    mkdir -p "$corpus" "$artifacts"
    [ -d "$seeds" ] || seeds=
    read -r -a flags <<<"$(target_flags "$t") $FUZZ_EXTRA"
    echo "fuzz.sh: $t for $bound_text (log: $log)" >&2
    status=0
    # New inputs go to the first directory only; the seeds directory is read.
    nice -n "$NICE" "$bin_dir/$t" "${bound[@]}" "${flags[@]}" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "$corpus" ${seeds:+"$seeds"} >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    size=$(find "$corpus" -type f | wc -l)
    if [ "$status" -ne 0 ]; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        crashes+=("$t ${artifact:-(no artifact, see $log)}")
        summary+=("$(printf '%-20s CRASH  exit %s, see %s' "$t" "$status" "$log")")
        tail -n 40 "$log" >&2
    else
        summary+=("$(printf '%-20s %12s runs %8s exec/s  corpus %s files' \
            "$t" "${runs:-?}" "${rate:-?}" "$size")")
    fi
done

echo >&2
printf '%s\n' "${summary[@]}" >&2
if [ "${#crashes[@]}" -gt 0 ]; then
    echo >&2
    for c in "${crashes[@]}"; do
        echo "fuzz.sh: CRASH in ${c%% *}: ${c#* }" >&2
        echo "  reproduce: cargo run --manifest-path fuzz/Cargo.toml --example replay --" \
            "$c" >&2
    done
    exit 1
fi
