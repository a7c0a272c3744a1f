#!/usr/bin/env bash
# Repeats the measurements in RESULTS.md: small pure-Python PyPI projects (sdists, their own
# test suites), `cordon testgen` driven by the offline model of ../shared/llm/local-model.sh.
#
#   examples/testgen/measure.sh                      all projects, default settings
#   PROJECTS="schema==0.7.7" ITER=1 GAPS=3 examples/testgen/measure.sh
#
# Needs: a built cordon (cargo build), the image cordon/python:3.11, pip (for the sdists).
# Everything a target's code does runs in the sandbox; this script only downloads, unpacks,
# runs cordon and summarizes the JSON reports.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CORDON=${CORDON:-$ROOT/target/debug/cordon}
WORK=${WORK:-$HERE/work}
LLM=${LLM:-$ROOT/../shared/llm/local-model.sh}
PROJECTS=${PROJECTS:-"schema==0.7.7 isodate==0.7.2 cachetools==5.5.0 inflection==0.5.1"}
ITER=${ITER:-2}
GAPS=${GAPS:-4}
FIX=${FIX:-2}

[ -x "$CORDON" ] || { echo "build cordon first (cargo build), or set CORDON" >&2; exit 2; }
if [ -z "${OPENAI_BASE_URL:-}" ]; then
  "$LLM" start >/dev/null
  export OPENAI_BASE_URL=http://127.0.0.1:18080/v1 OPENAI_API_KEY=local
fi
mkdir -p "$WORK/dl" "$WORK/src" "$WORK/runs"
for spec in $PROJECTS; do
  name=${spec%%==*}
  ver=${spec##*==}
  src="$WORK/src/$name-$ver"
  if [ ! -d "$src" ]; then
    pip download -q --no-deps --no-binary :all: "$spec" -d "$WORK/dl"
    tar xzf "$WORK/dl/$name-$ver.tar.gz" -C "$WORK/src"
  fi
  rm -rf "$WORK/runs/$name"
  echo "== $spec" >&2
  "$CORDON" testgen "$src" --target-coverage 100 --max-iterations "$ITER" \
    --gaps-per-iteration "$GAPS" --fix-attempts "$FIX" --report "$WORK/runs/$name" 2> "$WORK/runs/$name.log" || true
  tail -2 "$WORK/runs/$name.log" >&2
done
python3 "$HERE/summarize.py" "$WORK"/runs/*/report.json
