"""What the client decides on its own, with no service: artifact names and destinations, the
workspace archive, tokens kept out of reprs and errors, arguments refused before any request.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import socket
import ssl
import tarfile
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Dict, List, Tuple

from cordon_client import (
    AuthError,
    Client,
    InvalidInput,
    InvalidSpec,
    NotFound,
    OutputCollector,
    QueueFull,
    Result,
    ServiceUnavailable,
    UnsafeArtifactPath,
    UploadRefused,
)
from cordon_client.artifacts import create_under, safe_parts
from cordon_client.errors import from_answer
from cordon_client.workspace import DEFAULT_EXCLUDES, Excludes, pack

SECRET = "s3cret-token-never-shown-0123456789"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ArtifactNames(unittest.TestCase):
    def test_plain_relative_names_pass(self) -> None:
        self.assertEqual(safe_parts("junit.xml"), ["junit.xml"])
        self.assertEqual(safe_parts("out/d/a.txt"), ["out", "d", "a.txt"])
        self.assertEqual(safe_parts("..hidden/x..y"), ["..hidden", "x..y"])

    def test_hostile_names_are_refused(self) -> None:
        for name in ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", ".", "..", "a\x00b"]:
            with self.subTest(name=name), self.assertRaises(UnsafeArtifactPath) as cm:
                safe_parts(name)
            self.assertEqual(cm.exception.exit_status, 2)

    def test_download_refuses_a_hostile_name_before_sending_anything(self) -> None:
        # Nothing listens on the port: a request would be ServiceUnavailable, not this.
        job = Client(f"http://127.0.0.1:{closed_port()}", token=SECRET).job("job-000000000000")
        with tempfile.TemporaryDirectory() as d:
            for name in ["../escape.txt", "/tmp/abs.txt", "a/../../escape.txt"]:
                with self.subTest(name=name), self.assertRaises(UnsafeArtifactPath):
                    job.download(name, Path(d) / "dest")
            self.assertFalse(Path(d, "escape.txt").exists())
            self.assertFalse((Path(d) / "dest").exists())

    def test_a_link_under_dest_is_not_followed(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            dest, elsewhere = Path(d, "dest"), Path(d, "elsewhere")
            dest.mkdir()
            elsewhere.mkdir()
            (dest / "sub").symlink_to(elsewhere)
            with self.assertRaises(UnsafeArtifactPath) as cm:
                create_under(dest, "sub/x.txt")
            self.assertIn("symbolic link", str(cm.exception))
            self.assertEqual(list(elsewhere.iterdir()), [])

    def test_a_link_as_the_file_itself_is_not_followed(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            dest, target = Path(d, "dest"), Path(d, "target.txt")
            dest.mkdir()
            target.write_text("keep")
            (dest / "x.txt").symlink_to(target)
            with self.assertRaises(FileExistsError):
                create_under(dest, "x.txt")
            self.assertEqual(target.read_text(), "keep")

    def test_files_are_created_never_overwritten(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path, f = create_under(Path(d), "a/b/c.txt")
            with f:
                f.write(b"one")
            self.assertEqual(path, Path(d, "a", "b", "c.txt"))
            with self.assertRaises(FileExistsError):
                create_under(Path(d), "a/b/c.txt")
            self.assertEqual(path.read_bytes(), b"one")


class Workspace(unittest.TestCase):
    def test_excludes_are_gitignore_lines_as_cordon_reads_them(self) -> None:
        ex = Excludes(["*.pyc", ".git", "/build", "docs/*.md", "cache/", "**/tmp/*.log", "./dist"])
        m = ex.matches
        self.assertTrue(m("a.pyc", False))
        self.assertTrue(m("pkg/sub/a.pyc", False))
        self.assertTrue(m("pkg/.git", True))
        self.assertFalse(m(".github", True))
        self.assertTrue(m("build", True))
        self.assertFalse(m("src/build", True))
        self.assertTrue(m("docs/a.md", False))
        self.assertFalse(m("docs/api/a.md", False))  # `*` does not cross `/`
        self.assertTrue(m("x/cache", True))
        self.assertFalse(m("x/cache", False))  # a trailing `/` is for directories
        self.assertTrue(m("a/b/tmp/x.log", False))
        self.assertTrue(m("tmp/x.log", False))
        self.assertTrue(m("dist", True))
        self.assertFalse(m("a/dist", True))
        kept = Excludes(["*.txt", "!keep.txt"])
        self.assertTrue(kept.matches("a.txt", False))
        self.assertFalse(kept.matches("keep.txt", False))
        self.assertTrue(Excludes(["[unclosed"]).matches("[unclosed", False))
        self.assertTrue(Excludes(["req-[0-9].txt"]).matches("req-1.txt", False))
        with self.assertRaises(InvalidInput):
            Excludes(["a" * 1025])

    def make_tree(self, root: Path) -> None:
        (root / "pkg" / "__pycache__").mkdir(parents=True)
        (root / ".git").mkdir()
        (root / "pkg" / "m.py").write_text("x = 1\n")
        (root / "pkg" / "m.pyc").write_bytes(b"\0")
        (root / "pkg" / "__pycache__" / "m.cpython.pyc").write_bytes(b"\0")
        (root / ".git" / "HEAD").write_text("ref\n")
        (root / "top.txt").write_text("top\n")
        os.chmod(root / "top.txt", 0o400)

    def test_pack_writes_what_the_service_takes(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d, "ws")
            root.mkdir()
            self.make_tree(root)
            buf = io.BytesIO()
            stats = pack(root, DEFAULT_EXCLUDES, buf)
            self.assertEqual((stats.files, stats.dirs), (2, 1))
            buf.seek(0)
            with tarfile.open(fileobj=buf, mode="r:gz") as tar:
                members = {m.name: m for m in tar.getmembers()}
                self.assertEqual(sorted(members), ["pkg", "pkg/m.py", "top.txt"])
                for m in members.values():
                    self.assertTrue(m.isfile() or m.isdir(), m.name)
                    self.assertEqual((m.uid, m.gid), (0, 0))
                    self.assertFalse(m.name.startswith("/") or ".." in m.name.split("/"))
                self.assertEqual(members["top.txt"].mode & 0o600, 0o600)
                f = tar.extractfile("pkg/m.py")
                assert f is not None
                self.assertEqual(f.read(), b"x = 1\n")

    def test_pack_refuses_a_link_naming_it(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d, "ws")
            (root / "sub").mkdir(parents=True)
            (root / "sub" / "link").symlink_to("/etc/passwd")
            with self.assertRaises(UploadRefused) as cm:
                pack(root, DEFAULT_EXCLUDES, io.BytesIO())
            self.assertIn("sub/link", str(cm.exception))
            # Excluded, it is no obstacle.
            pack(root, ["link"], io.BytesIO())

    def test_pack_refuses_a_missing_directory(self) -> None:
        with tempfile.TemporaryDirectory() as d, self.assertRaises(InvalidInput):
            pack(Path(d, "nope"), DEFAULT_EXCLUDES, io.BytesIO())


class Tokens(unittest.TestCase):
    def test_the_token_is_in_no_repr_and_no_error(self) -> None:
        c = Client(f"http://127.0.0.1:{closed_port()}", token=SECRET, timeout=5)
        job = c.job("job-000000000000")
        self.assertNotIn(SECRET, repr(c))
        self.assertNotIn(SECRET, repr(job))
        self.assertNotIn(SECRET, repr(c._t))
        with self.assertRaises(ServiceUnavailable) as cm:
            job.status()
        self.assertNotIn(SECRET, str(cm.exception))
        self.assertEqual(cm.exception.exit_status, 5)

    def test_token_file_is_read_and_checked(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            f = Path(d, "token")
            f.write_text(SECRET + "\n")
            self.assertIn("<hidden>", repr(Client("http://127.0.0.1:1", token_file=f)))
            f.write_text("\n")
            with self.assertRaises(InvalidInput):
                Client("http://127.0.0.1:1", token_file=f)
            with self.assertRaises(InvalidInput):
                Client("http://127.0.0.1:1", token_file=Path(d, "missing"))
            with self.assertRaises(InvalidInput):
                Client("http://127.0.0.1:1", token="a", token_file=f)
        with self.assertRaises(InvalidInput):
            Client("http://127.0.0.1:1", token="two words")

    def test_bad_urls_and_arguments_are_refused_before_any_request(self) -> None:
        for server in ["127.0.0.1:8420", "ftp://host", "http://user:pw@host", "http://host/?q=1"]:
            with self.subTest(server=server), self.assertRaises(InvalidInput):
                Client(server)
        with self.assertRaises(InvalidInput):
            Client("http://127.0.0.1:1", ca_cert="/nonexistent.pem")
        c = Client("http://127.0.0.1:1")
        with self.assertRaises(InvalidInput):
            c.job("../../v1/jobs")
        with self.assertRaises(InvalidInput):
            c.submit("job.yaml")  # a str is spec text; a file is a Path


TLS = Path(__file__).resolve().parent / "tls"


class FakeTlsFront(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /v1/jobs/{id}`` with a queued job's status, as a TLS-terminating proxy in
    front of the service would pass it on; records what it was sent."""

    seen: List[Tuple[str, Dict[str, str]]] = []

    def do_GET(self) -> None:
        FakeTlsFront.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = json.dumps(
            {
                "id": "job-000000000001",
                "state": "queued",
                "queue_position": 0,
                "submitted_ms": 1,
                "started_ms": None,
                "finished_ms": None,
                "image": "cordon/python:3.11",
                "events": 0,
                "outcome": None,
                "result": None,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Https(unittest.TestCase):
    def setUp(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(TLS / "server.pem", TLS / "server.key")
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeTlsFront)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(self.httpd.server_close)
        self.addCleanup(self.httpd.shutdown)
        FakeTlsFront.seen.clear()

    def test_https_with_the_given_ca(self) -> None:
        c = Client(f"https://127.0.0.1:{self.port}/cordon", token=SECRET, ca_cert=TLS / "ca.pem")
        st = c.job("job-000000000001").status()
        self.assertEqual((st.id, st.state, st.queue_position), ("job-000000000001", "queued", 0))
        path, headers = FakeTlsFront.seen[-1]
        self.assertEqual(path, "/cordon/v1/jobs/job-000000000001")
        self.assertEqual(headers["authorization"], f"Bearer {SECRET}")
        self.assertNotIn("origin", headers)

    def test_an_untrusted_certificate_is_refused(self) -> None:
        c = Client(f"https://127.0.0.1:{self.port}", token=SECRET)  # the system's trust store
        with self.assertRaises(ServiceUnavailable) as cm:
            c.job("job-000000000001").status()
        self.assertIn("ca_cert", str(cm.exception))
        self.assertNotIn(SECRET, str(cm.exception))
        self.assertEqual(FakeTlsFront.seen, [])


class FakeEvents(http.server.BaseHTTPRequestHandler):
    """An event stream that misbehaves as networks and restarts do: the first connection sends
    two events and half of a third, then drops; the second replays event 1, then goes quiet
    (a silent job) until released; the third sends the result. Records each ``from``."""

    froms: List[str] = []
    release = threading.Event()

    def do_GET(self) -> None:
        FakeEvents.froms.append(self.path.split("from=", 1)[1])
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        n = len(FakeEvents.froms)

        def line(seq: int, **ev: object) -> bytes:
            return (json.dumps({"seq": seq, **ev}) + "\n").encode()

        def out(i: int) -> bytes:
            return line(i, type="output", step="s", stream="stdout", data=f"chunk {i}\n")

        if n == 1:
            self.wfile.write(out(0) + out(1) + line(2, type="progress", message="cut")[:10])
        elif n == 2:
            self.wfile.write(out(1) + out(2))
            self.wfile.flush()
            FakeEvents.release.wait(10)
        else:
            result = {
                "job_id": "job-1",
                "outcome": "passed",
                "exit_code": 0,
                "duration_ms": 1,
                "steps": [],
                "tests": None,
                "artifacts": [],
                "output_bytes": 0,
                "output_truncated": False,
                "image": "i",
                "profile": "strict",
                "phases_ms": {},
            }
            self.wfile.write(line(3, type="finished", result=result))

    def log_message(self, format: str, *args: object) -> None:
        pass


class EventResumption(unittest.TestCase):
    def test_every_event_once_across_drops_replays_and_silence(self) -> None:
        from cordon_client.events import EventStream

        FakeEvents.froms = []
        FakeEvents.release.clear()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeEvents)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        self.addCleanup(FakeEvents.release.set)
        c = Client(f"http://127.0.0.1:{httpd.server_address[1]}", token=SECRET)
        stream = EventStream(c._t, "job-000000000001", 0, timeout=60, idle=0.3)
        seen = [(ev["seq"], ev["type"]) for ev in stream]
        self.assertEqual(seen, [(0, "output"), (1, "output"), (2, "output"), (3, "finished")])
        # Resumed after the cut at 2, after the silence at 3.
        self.assertEqual(FakeEvents.froms, ["0", "2", "3"])
        self.assertTrue(stream.finished)
        self.assertEqual(stream.next_seq, 4)


class FakeFullQueue(http.server.BaseHTTPRequestHandler):
    """``POST /v1/jobs``: ``429`` with ``Retry-After: 0`` for the first ``full`` submissions,
    then ``202``. Reads each body whole first, as the service does."""

    full = 0
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        FakeFullQueue.posts += 1
        if FakeFullQueue.posts <= FakeFullQueue.full:
            body = b'{"error": {"kind": "queue_full", "message": "the queue is full"}}'
            self.send_response(429)
            self.send_header("Retry-After", "0")
        else:
            body = json.dumps(
                {
                    "id": "job-000000000002",
                    "state": "queued",
                    "queue_position": 3,
                    "submitted_ms": 1,
                    "started_ms": None,
                    "finished_ms": None,
                    "image": "i",
                    "events": 0,
                    "outcome": None,
                    "result": None,
                }
            ).encode()
            self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class QueueFullRetry(unittest.TestCase):
    def setUp(self) -> None:
        FakeFullQueue.posts = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeFullQueue)
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(self.httpd.server_close)
        self.addCleanup(self.httpd.shutdown)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.ws = Path(tempfile.mkdtemp(prefix="cordon-pyclient-"))
        (self.ws / "f.txt").write_text("x")
        self.addCleanup(shutil.rmtree, self.ws, True)

    def test_a_full_queue_is_waited_out_and_the_upload_sent_again(self) -> None:
        FakeFullQueue.full = 2
        job = Client(self.url, token=SECRET).submit({"steps": []}, self.ws)
        self.assertEqual((job.id, FakeFullQueue.posts), ("job-000000000002", 3))
        assert job.submitted is not None
        self.assertEqual(job.submitted.queue_position, 3)

    def test_a_queue_that_stays_full_is_queue_full(self) -> None:
        FakeFullQueue.full = 1_000_000
        with self.assertRaises(QueueFull) as cm:
            Client(self.url, token=SECRET, queue_full_wait=0.5).submit({"steps": []}, self.ws)
        self.assertEqual((cm.exception.status, cm.exception.exit_status), (429, 5))


class Answers(unittest.TestCase):
    def test_error_answers_map_to_the_clis_exit_classes(self) -> None:
        cases = [
            (401, "unauthorized", AuthError, 2),
            (403, "forbidden", AuthError, 2),
            (404, "not_found", NotFound, 2),
            (400, "invalid_spec", InvalidSpec, 2),
            (422, "invalid_input", InvalidSpec, 2),
            (400, "upload_refused", UploadRefused, 2),
            (503, "shutting_down", ServiceUnavailable, 5),
            (500, "internal", ServiceUnavailable, 5),
        ]
        for status, kind, cls, code in cases:
            with self.subTest(kind=kind):
                e = from_answer(status, kind, "m")
                self.assertIsInstance(e, cls)
                self.assertEqual(e.exit_status, code)

    def test_invalid_spec_names_its_field(self) -> None:
        e = from_answer(400, "invalid_spec", "invalid spec: spec: `limits.memory`: 20GiB is over the ceiling")
        assert isinstance(e, InvalidSpec)
        self.assertEqual(e.field, "limits.memory")

    def test_result_from_the_wire(self) -> None:
        r = Result.from_dict(
            {
                "job_id": "job-1",
                "outcome": "failed",
                "exit_code": 1,
                "duration_ms": 5,
                "steps": [{"name": "t", "outcome": "failed", "exit_code": 1, "duration_ms": 4, "output_bytes": 9}],
                "tests": {"total": 2, "passed": 1, "failed": 1, "skipped": 0, "errors": 0, "failing": ["t::a"]},
                "artifacts": [],
                "output_bytes": 9,
                "output_truncated": False,
                "image": "i",
                "profile": "strict",
                "phases_ms": {"run": 3},
            }
        )
        self.assertEqual((r.exit_status, r.failing_tests, r.warm), (1, ["t::a"], False))
        with self.assertRaises(ServiceUnavailable):
            Result.from_dict({"job_id": "x"})  # type: ignore[typeddict-item]

    def test_output_collector_keeps_the_tail(self) -> None:
        oc = OutputCollector(max_chars=5)
        for i, data in enumerate(["abc", "defg", "hi"]):
            oc({"seq": i, "type": "output", "step": "s", "stream": "stdout", "data": data})
        self.assertEqual(oc.dropped, 4)
        self.assertEqual(oc.text, "[... 4 characters left out ...]\nefghi")


if __name__ == "__main__":
    unittest.main()
