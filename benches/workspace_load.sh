#!/usr/bin/env bash
# Workspace load (copy mode) for a large tree vs `docker cp` of the same tree.
#
#   benches/workspace_load.sh [ROUNDS] [FILES] [MB]     (defaults: 3, 20000 files, 200 MB)
#
# cordon: the `load` phase of a job (a tar stream in frames to the running sandbox's gate over
# its attached stdin, extracted into its tmpfs volume; the tree is never held in memory), read
# from the job's phases_ms.
# docker cp: `docker cp DIR/. CONTAINER:/workspace` into a running container whose
# /workspace is the same kind of tmpfs volume. Prints medians and the ratio (target <= 1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; FILES=${2:-20000}; MB=${3:-200}
CORDON=${CORDON:-./target/release/cordon}
[ -x "$CORDON" ] || CORDON=./target/debug/cordon
work=$(mktemp -d /tmp/cordon-load-XXXXXX)
cleanup() { docker rm -f cordon-bench-cp >/dev/null 2>&1 || true; docker volume rm -f cordon-bench-cp-ws >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "making a tree of $FILES files, $MB MB in $work/repo" >&2
python3 - "$work/repo" "$FILES" "$MB" <<'PY'
import os, sys
root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = mb * 1024 * 1024 // files
chunk = os.urandom(size)
for i in range(files):
    d = os.path.join(root, f"pkg{i % 200:03d}", f"mod{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.py"), "wb") as f:
        f.write(chunk)
PY
cat > "$work/job.yaml" <<YAML
workspace: { source: ./repo }
steps: [{ name: noop, run: "true", timeout: 120s }]
limits: { scratch: $((MB * 2 + 64))MiB, memory: 1GiB }
YAML
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s%N; }
sync; cordon_ms=(); cp_ms=()
for i in $(seq 1 "$ROUNDS"); do
  "$CORDON" run "$work/job.yaml" --json --out "$work/out$i" > "$work/r.json" 2>"$work/r.err" || { cat "$work/r.err" >&2; exit 1; }
  cordon_ms+=( "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["phases_ms"]["load"])' "$work/r.json")" )

  docker volume create --driver local --opt type=tmpfs --opt device=tmpfs \
    --opt o=size=$((MB * 2 + 64))m,uid=1000,gid=1000 cordon-bench-cp-ws >/dev/null
  docker run -d --name cordon-bench-cp --read-only --user 1000:1000 --network none \
    -v cordon-bench-cp-ws:/workspace cordon/python:3.11 sleep infinity >/dev/null
  t=$(now); docker cp "$work/repo/." cordon-bench-cp:/workspace; cp_ms+=( $(( ($(now) - t) / 1000000 )) )
  docker rm -f cordon-bench-cp >/dev/null; docker volume rm cordon-bench-cp-ws >/dev/null
done
mc=$(median "${cordon_ms[@]}"); md=$(median "${cp_ms[@]}")
echo "workspace load, $FILES files / $MB MB, $ROUNDS rounds (ms): cordon ${cordon_ms[*]} | docker cp ${cp_ms[*]}"
printf '  %-40s median %6d ms\n' "docker cp" "$md"
printf '  %-40s median %6d ms   ratio %.2f\n' "cordon load phase (copy mode)" "$mc" "$(python3 -c "print($mc/$md)")"
