#!/usr/bin/env bash
# Runs every cordon fuzz target for a while and reports, per target, how many inputs it ran
# and how many crashes (crash-/timeout-/oom-/leak- artifacts) it found.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # default: 60 s each, every target built
#
# Builds once (`cargo fuzz build`, release with debug assertions and overflow checks), then
# runs the targets one after another (never two at once), each under `nice -n 10` with
# -max_total_time=SECONDS -rss_limit_mb=2048 -timeout=10. Exits 1 if any target crashed, 2 if
# the build or a run failed without a crash artifact. Works from any directory, without a
# terminal.
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none: `cargo fuzz -s` (none is faster, finds less)
#   FUZZ_JOBS       cargo build jobs (default 2)
#   FUZZ_NO_BUILD=1 run the binaries as last built (no rebuild after others' src/ edits)
#   CORDON_FUZZ_KNOWN  properties to stop checking, e.g. `no-ctl-in-target` for a finding
#                   reported but not fixed yet (see fuzz_targets/common/known.rs)
#
# Where things go (all under fuzz/, all git-ignored):
#   target/corpus/<target>/          libFuzzer's working corpus (grows run over run); the
#                                    committed seeds in corpus/<target>/ are only read
#   artifacts/<stamp>/<target>/      crash inputs of this run; reproduce one with
#                                    `fuzz/target/x86_64-unknown-linux-gnu/release/<target> FILE`
#   target/logs/<stamp>/<target>.log libFuzzer's output
# Committed inputs: corpus/<target>/ (seeds), dicts/ (token dictionaries, -dict), crashes/
# (inputs that broke cordon, with what each broke: crashes/README.md); corpus/ and
# crashes/ are replayed before fuzzing starts.
#
# Only a stable toolchain is here: cargo-fuzz's nightly flags are allowed by
# RUSTC_BOOTSTRAP=1, set for the build below only.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
sanitizer="${FUZZ_SANITIZER:-address}"
triple="x86_64-unknown-linux-gnu"
bindir="$here/target/$triple/release"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
logs="$here/target/logs/$stamp"
mkdir -p "$logs"

command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
}

cd "$here" || exit 2
build=(cargo fuzz build -s "$sanitizer" --codegen-units 16)
if [ "${FUZZ_NO_BUILD:-0}" = 1 ]; then
    echo "== build skipped (FUZZ_NO_BUILD=1)"
else
    echo "== build: ${build[*]}"
    build_start=$SECONDS
    if ! RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS="${FUZZ_JOBS:-2}" nice -n 10 "${build[@]}" \
        >"$logs/build.log" 2>&1; then
        tail -n 40 "$logs/build.log" >&2
        echo "build failed: $logs/build.log" >&2
        exit 2
    fi
    echo "   built in $((SECONDS - build_start)) s"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    # Every target of the crate.
    mapfile -t targets < <(cargo fuzz list 2>/dev/null)
fi

crashed=0
failed=0
rows=()
for t in "${targets[@]}"; do
    bin="$bindir/$t"
    if [ ! -x "$bin" ]; then
        rows+=("$(printf '%-16s %14s %8s %8s  %s' "$t" - - - "not built")")
        continue
    fi
    work="$here/target/corpus/$t"
    art="$here/artifacts/$stamp/$t"
    mkdir -p "$work" "$art"
    # Read, never written: the committed seeds, and the inputs that once broke cordon
    # (crashes/<target>/), so every run replays them first.
    seeds=()
    for d in "$here/corpus/$t" "$here/crashes/$t"; do
        [ -d "$d" ] && seeds+=("$d")
    done
    # A libFuzzer dictionary of the format's tokens: dicts/<target>.dict, or for
    # spec_yaml and spec_json the shared dicts/spec.dict.
    dict="$here/dicts/$t.dict"
    [ -f "$dict" ] || dict="$here/dicts/${t%%_*}.dict"
    dictarg=()
    [ -f "$dict" ] && dictarg=(-dict="$dict")
    log="$logs/$t.log"
    echo "== $t: ${secs} s"
    start=$SECONDS
    # The first corpus dir is the one libFuzzer writes new inputs to: the working one.
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}" nice -n 10 "$bin" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$art/" "${dictarg[@]}" "$work" "${seeds[@]}" </dev/null >"$log" 2>&1
    rc=$?
    took=$((SECONDS - start))
    execs="$(grep -a 'stat::number_of_executed_units:' "$log" | tail -n 1 | grep -o '[0-9]*$')"
    if [ -z "$execs" ]; then
        # No final stats (killed hard): the last status line's count, marked as such.
        execs="~$(grep -ao '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')"
    fi
    found="$(find "$art" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' \
        -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)"
    note=""
    if [ "$found" -gt 0 ]; then
        crashed=1
        note="$art"
    elif [ "$rc" -ne 0 ]; then
        failed=1
        note="exit $rc, no artifact: $log"
    else
        rmdir "$art" 2>/dev/null
    fi
    rows+=("$(printf '%-16s %14s %8s %8s  %s' "$t" "$execs" "$found" "${took}s" "$note")")
done
rmdir "$here/artifacts/$stamp" 2>/dev/null

echo
printf '%-16s %14s %8s %8s  %s\n' target executions crashes time notes
printf '%s\n' "${rows[@]}"
echo "(sanitizer: $sanitizer; known findings not checked: ${CORDON_FUZZ_KNOWN:-none}; logs: $logs)"
[ "$crashed" -ne 0 ] && exit 1
[ "$failed" -ne 0 ] && exit 2
exit 0
