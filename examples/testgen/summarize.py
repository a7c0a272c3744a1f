"""Prints the RESULTS.md tables from `cordon testgen` JSON reports (reads JSON only).

    summarize.py runs/*/report.json            one table per report (its --only module, if any)
    summarize.py --files runs/x/report.json    the baseline's per-file coverage, to choose modules
    summarize.py --projects runs/*/report.json the one-row-per-project table of whole-project runs
"""
import json
import os
import sys
from collections import Counter


def pct(a, b):
    return 100.0 * a / b if b else 100.0


def module_totals(run, paths):
    """Lines and branches of the files under `paths` (all files when empty) in a run summary."""
    files = (run or {}).get("files") or {}
    t = {"lines": 0, "lines_covered": 0, "branches": 0, "branches_covered": 0}
    for f, s in files.items():
        if paths and not any(f == p or f.startswith(p.rstrip("/") + "/") for p in paths):
            continue
        for k in t:
            t[k] += s["coverage"][k]
    if not files:
        t = dict((run or {}).get("coverage") or t)
    return t


def load(path):
    """The load average recorded next to a run (`uptime` before and after), if any."""
    p = os.path.join(os.path.dirname(path) + ".load")
    if not os.path.exists(p):
        return "?"
    loads = [l.split("load average:")[-1].split(",")[0].strip() for l in open(p) if "load average" in l]
    return " → ".join(loads)


def why_discarded(r):
    c = Counter()
    for cand in r["candidates"]:
        for d in cand.get("discarded_tests", []):
            reason = d["reason"]
            cls = (d.get("classification") or {}).get("by", "")
            c[f"{reason}{' (' + cls + ')' if cls and 'rule' in cls else ''}"] += 1
        if cand["status"] == "rejected":
            c[f"answer rejected: {cand['reason']}"] += 1
        elif cand["status"] == "discarded" and not cand.get("discarded_tests"):
            c[f"file discarded: {cand['reason']}"] += 1
        elif cand["status"] == "discarded" and cand["reason"] == "passes, but covers nothing new":
            c["passed, covered nothing new"] += cand["tests_kept"] or 1
    return "; ".join(f"{n}× {k}" for k, n in c.most_common()) or "—"


def table(path):
    r = json.load(open(path))
    only = r["settings"].get("only") or []
    paths = [o.split("::")[0] for o in only]
    b = module_totals(r.get("baseline"), paths)
    a = module_totals(r.get("after") or r.get("baseline"), paths)
    name = r["repo"].rstrip("/").split("/")[-1]
    gen = sum(c["tests_generated"] for c in r["candidates"])
    kept = sum(c["tests_kept"] for c in r["candidates"] if c["status"] == "kept")
    # Tests (not assertions) with at least one characterized expected value.
    chars = sum(
        len({x["test"] for x in c.get("characterized", [])})
        for c in r["candidates"]
        if c["status"] == "kept"
    )
    t = r["tokens"]
    after = r.get("after") or {}
    print(f"### {name}: `{', '.join(only) or 'whole project'}`\n")
    print("| measure | value |\n|---|---|")
    rows = [
        ("lines before → after", f"{pct(b['lines_covered'], b['lines']):.1f}% → {pct(a['lines_covered'], a['lines']):.1f}% "
         f"({b['lines_covered']} → {a['lines_covered']} of {a['lines']}; {pct(a['lines_covered'], a['lines']) - pct(b['lines_covered'], b['lines']):+.1f} pts)"),
        ("branches before → after", f"{pct(b['branches_covered'], b['branches']):.1f}% → {pct(a['branches_covered'], a['branches']):.1f}% "
         f"({b['branches_covered']} → {a['branches_covered']} of {a['branches']})"),
        ("tests kept / generated", f"{kept} / {gen} in {sum(1 for c in r['candidates'] if c['status'] == 'kept')} file(s); "
         f"{chars} of the kept are characterizations; "
         + (f"final combined run of the kept files: {after.get('tests', 0)} tests, {after.get('failed', 0)} failed" if r.get("kept_files") else "nothing kept, so no final run")),
        ("gaps tried", f"{len(r['candidates'])} ({', '.join(c['target'].split('::')[-1] + ': ' + c['status'] for c in r['candidates'])})"),
        ("why discarded", why_discarded(r)),
        ("suspected code bugs", str(len(r["suspected_bugs"]))),
        ("model time / sandbox time / total", f"{t.get('model_ms', 0) / 1000:.0f} s / {r.get('sandbox_ms', 0) / 1000:.0f} s / {r['duration_ms'] / 1000:.0f} s"),
        ("tokens in / out (requests)", f"{t['prompt_tokens']} / {t['completion_tokens']} ({t['requests']}; {t['truncated_answers']} cut off)"),
        ("load average (before → after)", load(path)),
        ("status", r["status"]),
    ]
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()


def files(path):
    r = json.load(open(path))
    b = r.get("baseline") or {}
    name = r["repo"].rstrip("/").split("/")[-1]
    print(f"{name}: {b.get('tests', 0)} tests, {b.get('failed', 0)} failing")
    for f, s in sorted((b.get("files") or {}).items()):
        c = s["coverage"]
        p = pct(c["lines_covered"], c["lines"])
        mark = "  <- 50-75%" if 50 <= p <= 75 and c["lines"] >= 50 else ""
        print(f"  {f:50s} {c['lines']:5d} lines {p:5.1f}%{mark}")


def projects(paths):
    print("| project | suite tests | lines before → after | branches before → after | gain | targets | tests kept/generated | fix rounds | suspected bugs | time | tokens in / out | status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        r = json.load(open(path))
        b = (r.get("baseline") or {}).get("coverage") or {}
        a = (r.get("after") or {}).get("coverage") or b
        name = r["repo"].rstrip("/").split("/")[-1]
        gen = sum(c["tests_generated"] for c in r["candidates"])
        kept = sum(c["tests_kept"] for c in r["candidates"] if c["status"] == "kept")
        nfiles = sum(1 for c in r["candidates"] if c["status"] == "kept")
        fixes = sum(c["fix_attempts"] for c in r["candidates"])
        t = r["tokens"]
        print(
            f"| {name} | {(r.get('baseline') or {}).get('tests', 0)} "
            f"| {pct(b.get('lines_covered', 0), b.get('lines', 0)):.1f}% → {pct(a.get('lines_covered', 0), a.get('lines', 0)):.1f}% "
            f"| {pct(b.get('branches_covered', 0), b.get('branches', 0)):.1f}% → {pct(a.get('branches_covered', 0), a.get('branches', 0)):.1f}% "
            f"| +{a.get('lines_covered', 0) - b.get('lines_covered', 0)} lines, +{a.get('branches_covered', 0) - b.get('branches_covered', 0)} arcs "
            f"| {len(r['candidates'])} | {kept}/{gen} ({nfiles} files) | {fixes} | {len(r['suspected_bugs'])} "
            f"| {r['duration_ms'] / 1000:.0f} s | {t['prompt_tokens']} / {t['completion_tokens']} ({t['requests']} req) | {r['status']} |"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--files"]:
        for p in args[1:]:
            files(p)
    elif args[:1] == ["--projects"]:
        projects(args[1:])
    else:
        for p in args:
            table(p)
