"""Prints the RESULTS.md table from `cordon testgen` JSON reports (reads JSON only)."""
import json
import sys


def pct(a, b):
    return 100.0 * a / b if b else 100.0


rows = []
for path in sys.argv[1:]:
    r = json.load(open(path))
    b = (r.get("baseline") or {}).get("coverage") or {}
    a = (r.get("after") or {}).get("coverage") or b
    name = r["repo"].rstrip("/").split("/")[-1]
    gen = sum(c["tests_generated"] for c in r["candidates"])
    kept = sum(c["tests_kept"] for c in r["candidates"] if c["status"] == "kept")
    files = sum(1 for c in r["candidates"] if c["status"] == "kept")
    fixes = sum(c["fix_attempts"] for c in r["candidates"])
    t = r["tokens"]
    rows.append(
        f"| {name} | {(r.get('baseline') or {}).get('tests', 0)} "
        f"| {pct(b.get('lines_covered', 0), b.get('lines', 0)):.1f}% → {pct(a.get('lines_covered', 0), a.get('lines', 0)):.1f}% "
        f"| {pct(b.get('branches_covered', 0), b.get('branches', 0)):.1f}% → {pct(a.get('branches_covered', 0), a.get('branches', 0)):.1f}% "
        f"| +{a.get('lines_covered', 0) - b.get('lines_covered', 0)} lines, +{a.get('branches_covered', 0) - b.get('branches_covered', 0)} arcs "
        f"| {len(r['candidates'])} | {kept}/{gen} ({files} files) | {fixes} | {len(r['suspected_bugs'])} "
        f"| {r['duration_ms'] / 1000:.0f} s | {t['prompt_tokens']} / {t['completion_tokens']} ({t['requests']} req) | {r['status']} |"
    )
print("| project | suite tests | lines before → after | branches before → after | gain | targets | tests kept/generated | fix rounds | suspected bugs | time | tokens in / out | status |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
