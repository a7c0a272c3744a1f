#!/usr/bin/env bash
# Repeats the measurements in RESULTS.md: modules of small pure-Python PyPI projects (sdists,
# their own test suites), `cordon testgen PROJECT --only MODULE` driven by the offline model of
# ../shared/llm/local-model.sh.
#
#   examples/testgen/measure.sh                      the four modules of RESULTS.md
#   MODULES="pathspec==0.12.1:pathspec/util.py" examples/testgen/measure.sh
#   MODULES="schema==0.7.7:" BUDGET=900 examples/testgen/measure.sh   # a whole project
#   SELECT=1 MODULES="click==8.1.7:" examples/testgen/measure.sh      # baseline per file only
#
# Each entry is SPEC:PATH (PATH relative to the unpacked sdist; empty for the whole project).
# Needs: a built cordon (cargo build), the image cordon/python:3.11, pip (for the sdists).
# Everything a target's code does runs in the sandbox; this script only downloads, unpacks,
# runs cordon, records the load average and summarizes the JSON reports.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CORDON=${CORDON:-$ROOT/target/debug/cordon}
WORK=${WORK:-$HERE/work}
LLM=${LLM:-$ROOT/../shared/llm/local-model.sh}
MODULES=${MODULES:-"astor==0.8.1:astor/node_util.py pathspec==0.12.1:pathspec/util.py click==8.1.7:src/click/decorators.py click==8.1.7:src/click/_termui_impl.py"}
# The settings of runs N to R in RESULTS.md: up to 6 rounds of 4 gaps, one fix round, up to 5
# candidates per gap, so that the time budget, not the candidate count, ends a module.
ITER=${ITER:-6}
CANDIDATES=${CANDIDATES:-5}
GAPS=${GAPS:-4}
FIX=${FIX:-1}
# Seconds after which no new gap is started (the final combined run follows): 15 minutes per
# module in all, on 2 shared cores.
BUDGET=${BUDGET:-720}
SELECT=${SELECT:-}
# The host's CA bundle for the dependency install (`prepare`): needed behind a TLS-intercepting
# proxy, as on the machine RESULTS.md comes from, and harmless elsewhere. CA_BUNDLE= for none.
CA_BUNDLE=${CA_BUNDLE-host}

[ -x "$CORDON" ] || { echo "build cordon first (cargo build), or set CORDON" >&2; exit 2; }
if [ -z "${OPENAI_BASE_URL:-}" ]; then
  "$LLM" start >/dev/null
  export OPENAI_BASE_URL=http://127.0.0.1:18080/v1 OPENAI_API_KEY=local
fi
mkdir -p "$WORK/dl" "$WORK/src" "$WORK/runs"
reports=()
for entry in $MODULES; do
  spec=${entry%%:*}
  module=${entry#*:}
  name=${spec%%==*}
  ver=${spec##*==}
  src="$WORK/src/$name-$ver"
  if [ ! -d "$src" ]; then
    pip download -q --no-deps --no-binary :all: "$spec" -d "$WORK/dl"
    tar xzf "$WORK/dl/$name-$ver.tar.gz" -C "$WORK/src"
  fi
  slug=$name${module:+-$(basename "${module%.py}")}
  out="$WORK/runs/$slug"
  rm -rf "$out"
  if [ -n "$SELECT" ]; then
    # Baseline only: the per-file coverage of the project's own suite, to choose modules.
    "$CORDON" testgen "$src" ${CA_BUNDLE:+--ca-bundle "$CA_BUNDLE"} --max-iterations 0 --report "$out" 2> "$out.log" || true
    python3 "$HERE/summarize.py" --files "$out/report.json"
    continue
  fi
  echo "== $spec ${module:-(whole project)}" >&2
  extra=()
  [ -n "$module" ] && extra=(--only "$module")
  [ -n "$CA_BUNDLE" ] && extra+=(--ca-bundle "$CA_BUNDLE")
  uptime > "$out.load"
  "$CORDON" testgen "$src" "${extra[@]}" --target-coverage 100 --max-iterations "$ITER" \
    --gaps-per-iteration "$GAPS" --fix-attempts "$FIX" --candidates-per-gap "$CANDIDATES" --time-budget "$BUDGET" \
    --report "$out" 2> "$out.log" || true
  uptime >> "$out.load"
  tail -2 "$out.log" >&2
  reports+=("$out/report.json")
done
[ -z "$SELECT" ] && python3 "$HERE/summarize.py" "${reports[@]}"
exit 0
