#!/usr/bin/env python3
"""A refine loop driven from Python: run the tests on a cordon service, read the failure,
change the code, run again — until the tests pass or the rounds run out.

    export CORDON_SERVER=http://127.0.0.1:8420 CORDON_TOKEN_FILE=cordon-data/token
    python3 examples/python/refine_loop.py            # fixes a copy of examples/python/project

The fixer here is scripted (it knows this project's two bugs), so the loop runs offline and
the same way every time. :func:`propose_fix` shows where a language model would go: it gets
the files and the failure (failing test ids, the output's tail), and returns new files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    import cordon_client  # noqa: F401  (only to see whether it is installed)
except ImportError:  # run from a checkout without `pip install ./clients/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    import cordon_client  # noqa: F401  (only to see whether it is installed)

from cordon_client import Client, CordonError, OutputCollector, Result

HERE = Path(__file__).resolve().parent

# The job: pytest in the project, a JUnit report collected so the result names failing tests.
SPEC: Dict[str, Any] = {
    "image": "cordon/python:3.11",
    "steps": [
        {
            "name": "test",
            "run": "python3 -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml",
            "timeout": "120s",
        }
    ],
    "artifacts": ["/out/junit.xml"],
    "limits": {"cpus": 1, "memory": "512MiB"},
}


@dataclass
class Failure:
    """What a round tells the fixer."""

    outcome: str
    failing_tests: List[str]
    output_tail: str


# --- the fixer -----------------------------------------------------------------------------

# This project's bugs, by the test that catches each: (file, wrong text, right text).
SCRIPTED_FIXES = {
    "test_calc.py::test_add": ("calc.py", "return a - b", "return a + b"),
    "test_calc.py::test_mean": ("calc.py", "sum(xs) / (len(xs) - 1)", "sum(xs) / len(xs)"),
}


def propose_fix(files: Dict[str, str], failure: Failure) -> Optional[Dict[str, str]]:
    """New contents for the files the fix changes, or None when there is nothing to try.

    Scripted: fixes the first failing test it knows, one per round (as a model that takes one
    step at a time would). With a language model, this is where the call goes:

        prompt = render_prompt(files, failure)
        reply = llm.complete(prompt)            # your model client
        return parse_files(reply)               # {"calc.py": "...new content..."}
    """
    for test in failure.failing_tests:
        if test in SCRIPTED_FIXES:
            name, wrong, right = SCRIPTED_FIXES[test]
            if wrong in files.get(name, ""):
                return {name: files[name].replace(wrong, right)}
    return None


def render_prompt(files: Dict[str, str], failure: Failure) -> str:
    """The prompt a model would get: the failure first, then the code."""
    parts = [
        f"The test run ended `{failure.outcome}`.",
        "Failing tests: " + (", ".join(failure.failing_tests) or "(none reported)"),
        "The end of its output:",
        "```",
        failure.output_tail,
        "```",
        "Reply with the full new content of each file you change, as `=== NAME` then the file.",
    ]
    for name, text in sorted(files.items()):
        parts += [f"=== {name}", text]
    return "\n".join(parts)


# --- the loop ------------------------------------------------------------------------------


def read_files(root: Path) -> Dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def run_tests(client: Client, work: Path, round_no: int) -> "tuple[Result, Failure]":
    job = client.submit(SPEC, work)
    output = OutputCollector(max_chars=4000)
    try:
        result = job.wait(timeout=600, on_event=output)
    except BaseException:  # Ctrl-C, a timeout, a lost service: do not leave the run going
        try:
            job.cancel()
        except CordonError:
            pass
        raise
    print(
        f"round {round_no}: job {job.id} {result.outcome}"
        + (f", failing: {', '.join(result.failing_tests)}" if result.failing_tests else "")
    )
    return result, Failure(result.outcome, result.failing_tests, output.text)


def refine(client: Client, work: Path, rounds: int, show_prompt: bool) -> bool:
    for round_no in range(1, rounds + 1):
        result, failure = run_tests(client, work, round_no)
        if result.passed:
            print(f"green after {round_no} round{'s' if round_no > 1 else ''}")
            return True
        if result.outcome != "failed":
            # timed out, over a limit, cancelled, cordon's own error: not something to patch.
            print(f"stopping: the run ended {result.outcome}" + (f" ({result.error})" if result.error else ""))
            return False
        files = read_files(work)
        if show_prompt:
            print(render_prompt(files, failure))
        change = propose_fix(files, failure)
        if not change:
            print("stopping: the fixer has nothing to propose for this failure:\n" + failure.output_tail)
            return False
        for name, text in change.items():
            (work / name).write_text(text)
            print(f"  changed {name}")
    print(f"still failing after {rounds} rounds")
    return False


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", help="the service's URL (default: $CORDON_SERVER)")
    ap.add_argument("--token-file", help="the token's file (default: $CORDON_TOKEN_FILE, or $CORDON_TOKEN)")
    ap.add_argument(
        "--project", type=Path, default=HERE / "project", help="the project to fix (it is copied; the copy is changed)"
    )
    ap.add_argument("--work", type=Path, help="where the copy goes (a new directory; default: a temporary one)")
    ap.add_argument("--rounds", type=int, default=5, help="test runs at most (default 5)")
    ap.add_argument("--show-prompt", action="store_true", help="print the prompt a language model would get each round")
    args = ap.parse_args(argv)

    kwargs: Dict[str, Any] = {}
    if args.server:
        kwargs["server"] = args.server
    if args.token_file:
        kwargs["token_file"] = args.token_file
    try:
        client = Client.from_env(**kwargs)
        with tempfile.TemporaryDirectory(prefix="cordon-refine-") as tmp:
            work = args.work or Path(tmp) / "project"
            shutil.copytree(args.project, work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
            return 0 if refine(client, work, args.rounds, args.show_prompt) else 1
    except CordonError as e:
        print(f"refine_loop: {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
