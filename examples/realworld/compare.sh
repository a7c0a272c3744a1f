#!/usr/bin/env bash
# The real-world check: run a real project's test suite (from its PyPI sdist) once directly on
# the host and once through `cordon run`, and compare the JUnit counts.
#
#   examples/realworld/compare.sh                  # more-itertools (job.yaml)
#   examples/realworld/compare.sh idna             # idna (job-idna.yaml)
#   examples/realworld/compare.sh all              # both
#
# Exit status: 0 when the counts (and every test's verdict) agree, 1 when they differ or a
# run produced no JUnit report, 2 on a setup problem (fetch, venv, missing cordon binary).
#
# Environment: CORDON (default ./target/debug/cordon), HOST_PYTHON (default python3; any
# 3.11 is the fair comparison), PYTEST_VERSION (default 7.2.1, the image's), KEEP_TMP=1 to keep
# the temporary directory (kept anyway on a mismatch) (host workspace copy, both JUnit files, cordon's JSON and stderr).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
here=examples/realworld
CORDON=${CORDON:-./target/debug/cordon}
HOST_PYTHON=${HOST_PYTHON:-python3}
PYTEST_VERSION=${PYTEST_VERSION:-7.2.1}

die() { echo "compare: $*" >&2; exit 2; }

spec_for() {
  case $1 in
    more-itertools) echo "$here/job.yaml" ;;
    idna) echo "$here/job-idna.yaml" ;;
    *) die "unknown project '$1' (more-itertools, idna, all)" ;;
  esac
}

project=${1:-more-itertools}
if [[ $project == all ]]; then projects=(more-itertools idna); else projects=("$project"); fi
for p in "${projects[@]}"; do spec_for "$p" >/dev/null; done

[[ -x $CORDON ]] || die "no cordon binary at $CORDON (run 'cargo build' first, or set CORDON)"
command -v "$HOST_PYTHON" >/dev/null || die "no $HOST_PYTHON on the host"

tmp=$(mktemp -d /tmp/cordon-realworld.XXXXXX)
status=0
# Kept on request or when the runs disagree, so the logs can be read.
cleanup() { if [[ ${KEEP_TMP:-0} == 1 || $status != 0 ]]; then echo "compare: kept $tmp" >&2; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

# One throwaway venv for the host runs: the image's pytest version, nothing else.
echo "compare: host venv ($("$HOST_PYTHON" -V 2>&1), pytest==$PYTEST_VERSION) in $tmp/venv" >&2
"$HOST_PYTHON" -m venv "$tmp/venv" || die "'$HOST_PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "pytest==$PYTEST_VERSION" \
  || die "could not install pytest==$PYTEST_VERSION in the host venv"

now_ms() { date +%s%3N; }

for p in "${projects[@]}"; do
  spec=$(spec_for "$p")
  # The workspace source and the pytest command line come from the spec itself, so both
  # sides run exactly the same selection of tests.
  src=$(sed -n 's/^[[:space:]]*source:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$spec" | head -1)
  run=$(sed -n 's/^[[:space:]]*run:[[:space:]]*//p' "$spec" | head -1)
  [[ -n $src && -n $run ]] || die "$spec: cannot read workspace.source / steps[0].run"
  [[ $run == "python3 -m pytest "* ]] || die "$spec: run line is not 'python3 -m pytest ...'"
  srcdir="$here/${src#./}"
  [[ -d $srcdir ]] || "$here/fetch.sh" "$p" || die "fetch.sh $p failed"

  w="$tmp/$p"
  mkdir -p "$w/out"
  # --- host: a copy of the same tree (the source stays pristine), the same pytest arguments.
  cp -a "$srcdir" "$w/host-ws"
  host_args=${run#python3 -m pytest }
  host_args=${host_args//\/out\/junit.xml/$w/host-junit.xml}
  echo "compare: [$p] host: python -m pytest $host_args" >&2
  t0=$(now_ms)
  # shellcheck disable=SC2086  # the spec's argument list, word-split on purpose
  (cd "$w/host-ws" && PYTHONHASHSEED=0 "$tmp/venv/bin/python" -m pytest $host_args) \
    >"$w/host.log" 2>&1 && host_rc=0 || host_rc=$?
  host_ms=$(( $(now_ms) - t0 ))
  tail -1 "$w/host.log" >&2

  # --- cordon: the spec as it is.
  echo "compare: [$p] cordon: $CORDON run $spec --json --out $w/out" >&2
  t0=$(now_ms)
  "$CORDON" run "$spec" --json --out "$w/out" >"$w/cordon.json" 2>"$w/cordon.err" \
    && cordon_rc=0 || cordon_rc=$?
  cordon_ms=$(( $(now_ms) - t0 ))
  tail -1 "$w/cordon.err" >&2

  "$HOST_PYTHON" - "$p" "$w/host-junit.xml" "$host_rc" "$host_ms" \
    "$w/cordon.json" "$w/out/junit.xml" "$cordon_rc" "$cordon_ms" <<'PY' || status=1
import json, sys
import xml.etree.ElementTree as ET

name, host_xml, host_rc, host_ms, cjson, cordon_xml, cordon_rc, cordon_ms = sys.argv[1:]
KEYS = ["total", "passed", "failed", "skipped", "errors"]

def verdicts(path):
    """{test id: verdict} by each <testcase>'s first failure/error/skipped child (a failure
    or error beats skipped), the rule cordon's own parser documents."""
    root = ET.parse(path).getroot()
    out, times = {}, []
    for suite in root.iter("testsuite"):
        times.append(float(suite.get("time", 0)))
    for i, case in enumerate(root.iter("testcase")):
        v = "passed"
        for child in case:
            t = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(child.tag)
            if t and (v == "passed" or (v == "skipped" and t != "skipped")):
                v = t
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        if key in out:
            key = f"{key}#{i}"
        out[key] = v
    return out, sum(times)

def counts(vs):
    c = dict.fromkeys(KEYS, 0)
    c["total"] = len(vs)
    for v in vs.values():
        c[v] += 1
    return c

ok = True
try:
    host_v, host_t = verdicts(host_xml)
    host = counts(host_v)
except (OSError, ET.ParseError) as e:
    print(f"[{name}] host run wrote no readable JUnit ({e}); pytest exit {host_rc}")
    host_v, host_t, host, ok = {}, 0.0, None, False

try:
    with open(cjson) as f:
        res = json.load(f)
except (OSError, ValueError) as e:
    print(f"[{name}] cordon printed no result JSON ({e}); exit {cordon_rc}")
    res, ok = {}, False
ct = res.get("tests")
if res and not ct:
    print(f"[{name}] cordon collected no JUnit report: outcome {res.get('outcome')}, exit {cordon_rc}")
    ok = False
try:
    cordon_v, cordon_t = verdicts(cordon_xml)
except (OSError, ET.ParseError):
    cordon_v, cordon_t = {}, 0.0

print(f"\n== {name}: host vs cordon ==")
print(f"{'':12}{'host':>10}{'cordon':>10}")
for k in KEYS:
    h = host[k] if host else "-"
    c = ct.get(k, "-") if ct else "-"
    mark = "" if h == c else "   <-- differs"
    if h != c:
        ok = False
    print(f"{k:12}{h!s:>10}{c!s:>10}{mark}")
print(f"{'exit code':12}{host_rc:>10}{cordon_rc:>10}   (cordon outcome: {res.get('outcome', '-')})")
print(f"{'pytest s':12}{host_t:>10.2f}{cordon_t:>10.2f}   (JUnit testsuite time)")
print(f"{'wall s':12}{int(host_ms)/1000:>10.2f}{int(cordon_ms)/1000:>10.2f}   "
      f"(host: pytest process; cordon: whole 'cordon run', "
      f"its duration_ms {res.get('duration_ms', '-')}, phases {res.get('phases_ms', {})})")

# Beyond the counts: every test's verdict, host JUnit against the JUnit cordon collected.
if host_v and cordon_v:
    diff = sorted(k for k in host_v.keys() | cordon_v.keys() if host_v.get(k) != cordon_v.get(k))
    if diff:
        ok = False
        print(f"{len(diff)} test(s) with a different verdict (host -> cordon):")
        for k in diff[:30]:
            print(f"  {k}: {host_v.get(k, 'absent')} -> {cordon_v.get(k, 'absent')}")
    else:
        print(f"per-test verdicts: all {len(host_v)} identical")
print("RESULT:", "match" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
PY
done
exit $status
