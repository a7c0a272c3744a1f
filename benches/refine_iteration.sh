#!/usr/bin/env bash
# A refine-loop iteration on a project with real PyPI dependencies (attrs, python-dateutil,
# six, tabulate): the job cordon runs each time a generated test changes.
#
#   benches/refine_iteration.sh [ROUNDS]        (default 5; needs PyPI reachable)
#
# Measured in one run, interleaved:
#   cached     cordon run with `prepare` cached: container start + workspace + pytest + collect
#   reinstall  cordon run whose dependency key changes every time (pip install each iteration)
#   exec-only  the same pytest command alone in an already-running container of the cached
#              environment image (docker exec): the floor a refine iteration is measured against
# Prints medians and the ratios cached/exec-only (target <= 1.2) and reinstall/cached.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
CORDON=${CORDON:-./target/release/cordon}
[ -x "$CORDON" ] || CORDON=./target/debug/cordon
[ -x "$CORDON" ] || { echo "build cordon first (cargo build --release)" >&2; exit 2; }

work=$(mktemp -d /tmp/cordon-refine-XXXXXX)
trap 'docker rm -f cordon-bench-warm >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cp -r benches/refine-project "$work/repo"
TEST_CMD="python -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml tests"
spec() { # $1: requirements file name to key on
  cat <<YAML
workspace: { source: ./repo }
prepare:
  run: pip install --no-input --disable-pip-version-check -r $1
  cache_key_files: [$1]
  allow_hosts: [pypi.org, files.pythonhosted.org]
  ca_bundle: host
steps:
  - { name: test, run: "$TEST_CMD", timeout: 120s }
artifacts: [/out/junit.xml]
limits: { cpus: 1, memory: 1GiB, pids: 256, scratch: 256MiB }
YAML
}
spec requirements.txt > "$work/cached.yaml"
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
run_job() { # $1 spec
  "$CORDON" run "$1" --json --out "$work/out-$RANDOM$RANDOM" > "$work/last.json" 2>"$work/last.err" || {
    echo "job failed:" >&2; tail -20 "$work/last.err" >&2; cat "$work/last.json" >&2; exit 1; }
}

echo "warming: building the environment once, starting a warm container" >&2
run_job "$work/cached.yaml"
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["environment"]["image"])' "$work/last.json")
docker rm -f cordon-bench-warm >/dev/null 2>&1 || true
docker run -d --name cordon-bench-warm --user 1000:1000 --network none --read-only \
  --tmpfs /tmp:uid=1000 --tmpfs /out:uid=1000 --tmpfs /workspace:uid=1000,exec \
  -w /workspace "$image" sleep infinity >/dev/null
tar -C "$work/repo" -c . | docker exec -i cordon-bench-warm tar -x -C /workspace

cached=(); reinstall=(); execonly=()
for i in $(seq 1 "$ROUNDS"); do
  t=$(now); run_job "$work/cached.yaml"; cached+=( "$(ms "$t" "$(now)")" )
  grep -q '"cached":true' "$work/last.json" || { echo "expected a cached environment" >&2; exit 1; }

  req="requirements-$i-$RANDOM.txt"
  { cat "$work/repo/requirements.txt"; echo "# iteration $i $RANDOM"; } > "$work/repo/$req"
  spec "$req" > "$work/reinstall.yaml"
  t=$(now); run_job "$work/reinstall.yaml"; reinstall+=( "$(ms "$t" "$(now)")" )
  grep -q '"cached":false' "$work/last.json" || { echo "expected a fresh install" >&2; exit 1; }
  rm -f "$work/repo/$req"
  docker image rm "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["environment"]["image"])' "$work/last.json")" >/dev/null 2>&1 || true

  t=$(now); docker exec -w /workspace cordon-bench-warm sh -c "$TEST_CMD" >/dev/null; execonly+=( "$(ms "$t" "$(now)")" )
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
mc=$(median "${cached[@]}"); mr=$(median "${reinstall[@]}"); me=$(median "${execonly[@]}")
echo "refine iteration, $ROUNDS rounds (ms): cached ${cached[*]} | reinstall ${reinstall[*]} | exec-only ${execonly[*]}"
printf '  %-48s median %6d ms\n' "exec-only (pytest in a running container)" "$me"
printf '  %-48s median %6d ms   ratio to exec-only %.2f\n' "cordon, cached environment" "$mc" "$(python3 -c "print($mc/$me)")"
printf '  %-48s median %6d ms   ratio to cached %.2f\n' "cordon, reinstalling every iteration" "$mr" "$(python3 -c "print($mr/$mc)")"
