"""The client against a real ``cordon serve`` and the real engine.

Needs ``CORDON_SERVER`` and ``CORDON_TOKEN`` (or ``CORDON_TOKEN_FILE``); without them every
test here is skipped. tests/python_client.rs starts a service and runs these with both set
(and fails if any was skipped).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Dict, List

from cordon_client import (
    AuthError,
    BadRequest,
    Client,
    Event,
    InvalidSpec,
    NotFound,
    OutputCollector,
    UnsafeArtifactPath,
    WaitTimeout,
)

IMAGE = os.environ.get("CORDON_TEST_IMAGE", "cordon/python:3.11")
SERVER = os.environ.get("CORDON_SERVER")
# Generous: the machine is shared and noisy. No assertion depends on how long anything takes.
WAIT = 300.0


def spec(run: str, **extra: Any) -> Dict[str, Any]:
    s: Dict[str, Any] = {
        "image": IMAGE,
        "steps": [{"name": "main", "run": run, "timeout": "240s"}],
        "limits": {"cpus": 0.5, "memory": "256MiB"},
    }
    s.update(extra)
    return s


@unittest.skipUnless(SERVER, "CORDON_SERVER is not set: no service to test against")
class AgainstTheService(unittest.TestCase):
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = Client.from_env()

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cordon-pyclient-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def workspace(self, files: Dict[str, str]) -> Path:
        root = self.tmp / "ws"
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    def test_submit_and_wait_passed(self) -> None:
        ws = self.workspace({"hello.txt": "hello from the workspace\n", "pkg/skip.pyc": "x"})
        job = self.client.submit(spec("cat hello.txt && ls pkg | wc -l"), ws)
        assert job.submitted is not None and job.packed is not None
        self.assertEqual(job.submitted.id, job.id)
        self.assertEqual(job.packed.files, 1)  # the .pyc was excluded
        events: List[Event] = []
        result = job.wait(WAIT, on_event=events.append)
        self.assertEqual(result.outcome, "passed")
        self.assertTrue(result.passed)
        self.assertEqual((result.exit_code, result.exit_status), (0, 0))
        self.assertEqual(result.job_id, job.id)
        self.assertEqual([s.name for s in result.steps], ["main"])
        # Every event once, in order, the result last.
        self.assertEqual([e["seq"] for e in events], list(range(len(events))))
        self.assertEqual(events[0]["type"], "started")
        self.assertEqual(events[-1]["type"], "finished")
        out = "".join(e["data"] for e in events if e["type"] == "output" and e["stream"] == "stdout")
        self.assertEqual(out, "hello from the workspace\n0\n")
        st = job.status()
        self.assertEqual((st.state, st.outcome, st.events), ("finished", "passed", len(events)))
        assert st.result is not None
        self.assertEqual(st.result.outcome, "passed")

    def test_a_failing_job_is_an_outcome_not_an_error(self) -> None:
        junit = (
            '<testsuite name="t" tests="2" failures="1">'
            '<testcase classname="test_calc" name="test_ok"/>'
            '<testcase classname="test_calc" name="test_add"><failure message="2 != 3"/></testcase>'
            "</testsuite>"
        )
        job = self.client.submit(
            spec(f"echo boom >&2; printf '%s' '{junit}' > /out/junit.xml; exit 7", artifacts=["/out/junit.xml"])
        )
        oc = OutputCollector()
        result = job.wait(WAIT, on_event=oc)
        self.assertEqual(result.outcome, "failed")
        self.assertEqual((result.exit_code, result.exit_status), (7, 1))
        self.assertEqual(result.steps[0].outcome, "failed")
        assert result.tests is not None
        self.assertEqual((result.tests.total, result.tests.failed), (2, 1))
        self.assertEqual(result.failing_tests, ["test_calc.py::test_add"])
        self.assertEqual(oc.text, "boom\n")

    def test_output_streams_live_and_cancel_stops_a_running_job(self) -> None:
        job = self.client.submit(spec("echo first; sleep 600; echo never"))
        with job.events(timeout=WAIT) as stream:
            for ev in stream:
                if ev["type"] == "output":
                    self.assertEqual(ev["data"], "first\n")
                    break
            seen = stream.next_seq
        # The job is still running (it sleeps for ten minutes): the output came live.
        self.assertEqual(job.status().state, "running")
        # A wait that runs out is not the job's end.
        with self.assertRaises(WaitTimeout):
            job.wait(timeout=1.0)
        st = job.cancel()
        self.assertEqual((st.state, st.outcome), ("finished", "cancelled"))
        # Resumed where the first stream stopped: the rest, once, ending with the result.
        rest = list(job.events(from_seq=seen, timeout=WAIT))
        self.assertEqual([e["seq"] for e in rest], list(range(seen, seen + len(rest))))
        last = rest[-1]
        assert last["type"] == "finished"
        self.assertEqual(last["result"]["outcome"], "cancelled")
        self.assertNotIn("never", "".join(e["data"] for e in rest if e["type"] == "output"))
        # Cancelling a finished job changes nothing.
        self.assertEqual(job.cancel().outcome, "cancelled")

    def test_artifacts_download_under_dest_only(self) -> None:
        job = self.client.submit(
            spec(
                "mkdir -p /out/d && echo art > /out/d/a.txt && printf 'top' > /out/top.txt"
                " && printf w > '/out/d/we ird#%?.txt'",
                artifacts=["/out"],
            )
        )
        self.assertTrue(job.wait(WAIT).passed)
        arts = {a.path: a.bytes for a in job.artifacts()}
        self.assertEqual(arts, {"out/d/a.txt": 4, "out/d/we ird#%?.txt": 1, "out/top.txt": 3})
        dest = self.tmp / "got"
        got = job.download_all(dest)
        self.assertEqual(got.refused, [])
        self.assertEqual(sorted(p.relative_to(dest).as_posix() for p in got.written), sorted(arts))
        self.assertEqual((dest / "out" / "d" / "a.txt").read_text(), "art\n")
        self.assertEqual((dest / "out" / "d" / "we ird#%?.txt").read_text(), "w")  # the name travels URL-encoded
        # Never overwritten.
        with self.assertRaises(FileExistsError):
            job.download("out/top.txt", dest)
        # A link planted under dest is not followed.
        elsewhere, dest2 = self.tmp / "elsewhere", self.tmp / "got2"
        elsewhere.mkdir()
        dest2.mkdir()
        (dest2 / "out").symlink_to(elsewhere)
        with self.assertRaises(UnsafeArtifactPath):
            job.download("out/top.txt", dest2)
        self.assertEqual(list(elsewhere.iterdir()), [])
        with self.assertRaises(NotFound):
            job.download("out/missing.txt", self.tmp / "got3")

    def test_a_bad_token_is_an_auth_error(self) -> None:
        bad = "not-the-token-0123456789abcdef"
        client = Client(self.client.server, token=bad)
        with self.assertRaises(AuthError) as cm:
            client.submit(spec("true"))
        self.assertEqual((cm.exception.status, cm.exception.exit_status), (401, 2))
        self.assertNotIn(bad, str(cm.exception))
        with self.assertRaises(AuthError):
            list(client.jobs())

    def test_an_invalid_spec_names_its_field(self) -> None:
        s = spec("true")
        s["steps"][0]["timeout"] = "12 parsecs"
        with self.assertRaises(InvalidSpec) as cm:
            self.client.submit(s)
        self.assertEqual(cm.exception.field, "steps[0].timeout")
        self.assertIn("parsecs", str(cm.exception))
        self.assertEqual((cm.exception.status, cm.exception.exit_status), (400, 2))
        # YAML text goes the same way.
        with self.assertRaises(InvalidSpec) as cm2:
            self.client.submit(f"image: {IMAGE}\nsteps: []\nbogus_field: 1\n")
        self.assertIsNotNone(cm2.exception.field)

    def test_listing_pages_with_cursors_and_filters(self) -> None:
        passed = self.client.submit(spec("true"))
        failed = self.client.submit(spec("exit 1"))
        self.assertTrue(passed.wait(WAIT).passed)
        self.assertEqual(failed.wait(WAIT).outcome, "failed")
        first = self.client.jobs_page(limit=1)
        self.assertEqual(len(first.jobs), 1)
        self.assertIsNotNone(first.next_cursor)
        ids = [j.id for j in self.client.jobs(page_size=1)]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertLess(ids.index(failed.id), ids.index(passed.id))  # newest first
        self.assertEqual(ids[0], first.jobs[0].id)
        failing = [j.id for j in self.client.jobs(state="finished", outcome=["failed", "timed_out"])]
        self.assertIn(failed.id, failing)
        self.assertNotIn(passed.id, failing)
        since = [j.id for j in self.client.jobs(since=int(time.time() * 1000) + 3_600_000)]
        self.assertEqual(since, [])
        with self.assertRaises(BadRequest) as cm:
            self.client.jobs_page(state="bogus")
        self.assertEqual(cm.exception.param, "state")

    def test_readiness_and_the_contract(self) -> None:
        self.assertTrue(self.client.ready())
        contract = self.client.openapi()
        self.assertIn("/v1/jobs/{id}/events:", contract)
        self.assertIn("operationId: submitJob", contract)

    def test_an_unknown_job_is_not_found(self) -> None:
        with self.assertRaises(NotFound) as cm:
            self.client.job("job-000000000000").status()
        self.assertEqual(cm.exception.exit_status, 2)


if __name__ == "__main__":
    unittest.main()
