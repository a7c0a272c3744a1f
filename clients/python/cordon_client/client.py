"""The client: :class:`Client` (one service, one token) and :class:`Job` (one job on it)."""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ._http import Answer, StrPath, Transport, error_of, job_path, read_answer
from .artifacts import safe_parts, write_stream
from .errors import InvalidInput, QueueFull, ServiceUnavailable, UnsafeArtifactPath
from .events import EventStream
from .model import Artifact, Event, JobPage, JobStatus, Result, as_status, parsed
from .workspace import DEFAULT_EXCLUDES, PackStats, pack

Spec = Union[Mapping[str, Any], str, "os.PathLike[str]"]
"""A job spec: a mapping (sent as JSON), its YAML or JSON text, or the path of a spec file."""

Filter = Union[str, Sequence[str], None]


def _read_token(token: Optional[str], token_file: Optional[StrPath]) -> Optional[str]:
    if token is not None and token_file is not None:
        raise InvalidInput("both token and token_file are given: keep one", kind="invalid_input")
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(
                f"token_file {token_file}: cannot read it: {e.strerror or e}", kind="invalid_input"
            ) from e
        token = text.rstrip()
        if not token:
            raise InvalidInput(
                f"token_file {token_file}: the file is empty; it holds the service's bearer token", kind="invalid_input"
            )
    if token is not None:
        token = token.strip()
        if not token or not all(33 <= ord(c) <= 126 for c in token):
            where = f"token_file {token_file}" if token_file is not None else "token"
            raise InvalidInput(f"{where}: a bearer token is visible ASCII without spaces", kind="invalid_input")
    return token


class Client:
    """One cordon service, as one token.

    ``server`` is the base URL (``http://127.0.0.1:8420``, ``https://cordon.example``); the
    token comes as ``token`` or — better, as a command line shows it to the machine's other
    users — ``token_file`` (the one ``cordon serve`` generates is ``<data_dir>/token``).
    ``timeout`` bounds each request's connect and reads (not a job: see :meth:`Job.wait`).
    ``ca_cert`` is a PEM file of the CA that signed an https service's certificate; without it
    the system's trust store is used. A full queue (``429``) is waited out for up to
    ``queue_full_wait`` seconds, as the service's ``Retry-After`` says.
    """

    def __init__(
        self,
        server: str,
        token: Optional[str] = None,
        token_file: Optional[StrPath] = None,
        *,
        timeout: float = 30.0,
        ca_cert: Optional[StrPath] = None,
        queue_full_wait: float = 600.0,
    ) -> None:
        self._t = Transport(server, _read_token(token, token_file), timeout, ca_cert)
        self.queue_full_wait = queue_full_wait

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client from ``CORDON_SERVER`` and ``CORDON_TOKEN_FILE`` or ``CORDON_TOKEN`` (the
        variables the ``cordon`` CLI reads), and ``CORDON_CA_CERT``; ``kwargs`` win."""
        env = os.environ
        server = kwargs.pop("server", None) or env.get("CORDON_SERVER")
        if not server:
            raise InvalidInput("CORDON_SERVER is not set: give the service's URL (server=...)", kind="invalid_input")
        if "token" not in kwargs and "token_file" not in kwargs:
            if env.get("CORDON_TOKEN") and env.get("CORDON_TOKEN_FILE"):
                raise InvalidInput("both CORDON_TOKEN and CORDON_TOKEN_FILE are set: keep one", kind="invalid_input")
            if env.get("CORDON_TOKEN_FILE"):
                kwargs["token_file"] = env["CORDON_TOKEN_FILE"]
            elif env.get("CORDON_TOKEN"):
                kwargs["token"] = env["CORDON_TOKEN"]
        if "ca_cert" not in kwargs and env.get("CORDON_CA_CERT"):
            kwargs["ca_cert"] = env["CORDON_CA_CERT"]
        return cls(server, **kwargs)

    def __repr__(self) -> str:
        return f"Client({self._t.server!r}, token={'<hidden>' if self._t.has_token else None})"

    @property
    def server(self) -> str:
        return self._t.server

    # --- submit ----------------------------------------------------------------------------

    def submit(
        self,
        spec: Spec,
        workspace: Optional[StrPath] = None,
        *,
        exclude: Optional[Sequence[str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Job:
        """Submits a job; returns it once the service has queued it.

        ``workspace`` is a directory uploaded as the job's workspace (packed with the spec's
        ``workspace.exclude`` when the spec is a mapping or JSON, else ``exclude``, else the
        defaults — :data:`DEFAULT_EXCLUDES`). Without it, only the spec is sent. Raises
        :class:`InvalidSpec` (``.field`` names the field), :class:`UploadRefused`,
        :class:`AuthError`, :class:`QueueFull`, :class:`ServiceUnavailable`.

        Every attempt carries one ``Idempotency-Key`` (``idempotency_key``, else a random
        one): if a call raises after the service may have queued the job (a timeout, a
        dropped connection), calling ``submit`` again with the same key returns that job
        instead of queueing a second one.
        """
        key = idempotency_key if idempotency_key is not None else "py-" + secrets.token_hex(16)
        text, ctype, spec_excludes = _spec_text(spec)
        excludes = (
            list(exclude) if exclude is not None else spec_excludes if spec_excludes is not None else DEFAULT_EXCLUDES
        )
        if workspace is None:
            return self._submit_body(text, ctype, None, key)
        with tempfile.TemporaryFile(prefix="cordon-workspace-") as tgz:
            stats = pack(Path(workspace), excludes, tgz)
            job = self._submit_body(text, ctype, tgz, key)
            job.packed = stats
            return job

    def _submit_body(self, text: str, ctype: str, tgz: Optional[IO[bytes]], key: str) -> Job:
        deadline = time.monotonic() + self.queue_full_wait
        while True:
            answer = self._post_multipart(text, ctype, tgz, key)
            if answer.status == 429:
                wait = _retry_after(answer.headers.get("retry-after"))
                if time.monotonic() + wait > deadline:
                    raise QueueFull(
                        f"the service's queue stayed full for {self.queue_full_wait:.0f}s (queue_full_wait); try later",
                        kind="queue_full",
                        status=429,
                    )
                time.sleep(wait)
                continue
            if answer.status != 202:
                raise error_of(answer)
            status = JobStatus.from_dict(as_status(answer.json()))
            return Job(self, status.id, submitted=status)

    def _post_multipart(self, text: str, ctype: str, tgz: Optional[IO[bytes]], key: str) -> Answer:
        boundary = "cordon-" + secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n'.encode()
            + f"Content-Type: {ctype}; charset=utf-8\r\n\r\n".encode()
            + text.encode("utf-8")
            + b"\r\n"
        )
        ws_head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="workspace"; filename="workspace.tar.gz"\r\n'
            "Content-Type: application/gzip\r\n\r\n"
        ).encode()
        tail = f"--{boundary}--\r\n".encode()
        size = 0
        if tgz is not None:
            tgz.seek(0, os.SEEK_END)
            size = tgz.tell()
            tgz.seek(0)
        length = len(head) + len(tail) + (len(ws_head) + size + 2 if tgz is not None else 0)
        conn = self._t.connect()
        try:
            conn.putrequest("POST", self._t.url("/v1/jobs"), skip_accept_encoding=True)
            headers = self._t.headers(
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(length),
                    "Accept": "application/json",
                    "Idempotency-Key": key,
                }
            )
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            try:
                conn.send(head)
                if tgz is not None:
                    conn.send(ws_head)
                    while True:
                        chunk = tgz.read(1 << 16)
                        if not chunk:
                            break
                        conn.send(chunk)
                    conn.send(b"\r\n")
                conn.send(tail)
            except OSError:
                pass  # the service answered early (413, say) and closed: read its answer
            return read_answer(conn.getresponse())
        except (OSError, http.client.HTTPException) as e:
            raise self._t.unreachable(e) from e
        finally:
            conn.close()

    # --- jobs ------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (no request is sent until it is used)."""
        job_path(job_id)
        return Job(self, job_id)

    def jobs_page(
        self,
        *,
        state: Filter = None,
        outcome: Filter = None,
        image: Filter = None,
        since: Union[_dt.datetime, int, str, None] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> JobPage:
        """One page of the jobs this token sees (all of them for an admin's), newest first.
        ``state`` (``queued``, ``running``, ``finished``), ``outcome`` and ``image`` take a value
        or a list (any matching); ``since`` a datetime, Unix ms or RFC 3339 text; ``limit``
        1–500 (default 50); ``cursor`` the previous page's ``next_cursor``. A value the service
        does not take raises :class:`BadRequest` whose ``param`` names it."""
        q: List[Tuple[str, str]] = []
        for name, value in (("state", state), ("outcome", outcome), ("image", image)):
            if value is not None:
                q.append((name, value if isinstance(value, str) else ",".join(value)))
        if since is not None:
            q.append(("since", _since(since)))
        if limit is not None:
            q.append(("limit", str(limit)))
        if cursor is not None:
            q.append(("cursor", cursor))
        body = self._t.request("GET", "/v1/jobs", query=q).json()

        def page() -> JobPage:
            cur = body["next_cursor"]
            if cur is not None and not isinstance(cur, str):
                raise TypeError("next_cursor")
            return JobPage([JobStatus.from_dict(as_status(j)) for j in body["jobs"]], cur)

        return parsed("a page of jobs", page)

    def jobs(
        self,
        *,
        state: Filter = None,
        outcome: Filter = None,
        image: Filter = None,
        since: Union[_dt.datetime, int, str, None] = None,
        page_size: Optional[int] = None,
    ) -> Iterator[JobStatus]:
        """Every job matching, newest first, following the cursors page by page (each job once,
        even while others are submitted)."""
        cursor: Optional[str] = None
        while True:
            page = self.jobs_page(
                state=state, outcome=outcome, image=image, since=since, limit=page_size, cursor=cursor
            )
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def openapi(self) -> str:
        """The service's API contract (``/v1/openapi.yaml``)."""
        return self._t.request("GET", "/v1/openapi.yaml").body.decode("utf-8")

    def ready(self) -> bool:
        """Whether the service answers ``/readyz`` (its engine answers, it is not draining)."""
        try:
            conn, resp = self._t.start("GET", "/readyz", timeout=self._t.timeout)
        except ServiceUnavailable:
            return False
        try:
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()


@dataclass
class Downloads:
    """What :meth:`Job.download_all` wrote, and which names it refused (name, why)."""

    written: List[Path] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)


class Job:
    """One job on the service. ``submitted`` is its status when it was queued (for a job
    from :meth:`Client.submit`); ``packed`` what went into its workspace upload."""

    def __init__(self, client: Client, job_id: str, submitted: Optional[JobStatus] = None) -> None:
        self.client = client
        self.id = job_id
        self.submitted = submitted
        self.packed: Optional[PackStats] = None
        self._t = client._t

    def __repr__(self) -> str:
        return f"Job({self.id!r}, server={self._t.server!r})"

    def status(self) -> JobStatus:
        """State, queue position, times, outcome, and once finished the result."""
        return JobStatus.from_dict(as_status(self._t.request("GET", job_path(self.id)).json()))

    def events(self, from_seq: int = 0, *, timeout: Optional[float] = None) -> EventStream:
        """The job's events from offset ``from_seq`` to ``finished`` (see :class:`EventStream`)."""
        return EventStream(self._t, self.id, from_seq, timeout)

    def wait(
        self,
        timeout: Optional[float] = None,
        *,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Result:
        """Follows the job's events to its result; ``on_event`` sees each event on the way
        (an :class:`OutputCollector` keeps the output). Raises :class:`WaitTimeout` after
        ``timeout`` seconds — the job goes on; cancel it if it should not.

        Without ``on_event`` the stream is read from the job's latest event, not replayed from
        the start (the result is always the last event)."""
        start = 0 if on_event is not None else max(0, self.status().events - 1)
        with self.events(start, timeout=timeout) as stream:
            for ev in stream:
                if on_event is not None:
                    on_event(ev)
                if ev["type"] == "finished":
                    return Result.from_dict(ev["result"])
        raise ServiceUnavailable(f"job {self.id}'s event stream ended without its result", kind="protocol")

    def cancel(self) -> JobStatus:
        """Cancels the job: a queued one never starts, a running one is stopped and its
        containers removed (the service waits up to 20 s for that). A finished job is left as
        it was. Returns the job's status afterwards."""
        answer = self._t.request("DELETE", job_path(self.id), timeout=max(self._t.timeout, 30.0))
        return JobStatus.from_dict(as_status(answer.json()))

    def artifacts(self) -> List[Artifact]:
        """The job's collected artifacts: names relative to its artifact directory, sizes."""
        body = self._t.request("GET", job_path(self.id, "artifacts")).json()

        def items() -> List[Artifact]:
            out = []
            for a in body["artifacts"]:
                if not isinstance(a["path"], str) or not isinstance(a["bytes"], int):
                    raise TypeError("artifact")
                out.append(Artifact(a["path"], a["bytes"]))
            return out

        return parsed("an artifact list", items)

    def download(self, path: str, dest: StrPath) -> Path:
        """Downloads artifact ``path`` to ``dest/path`` and returns where it went. Never writes
        outside ``dest``: an absolute name, ``..``, or a link under ``dest`` raises
        :class:`UnsafeArtifactPath`; an existing file raises :class:`FileExistsError`."""
        safe_parts(path)  # refused before anything is sent or written
        conn, resp = self._t.start("GET", job_path(self.id, "artifacts", path))
        try:
            if resp.status != 200:
                raise error_of(read_answer(resp))
            try:
                return write_stream(Path(dest), path, resp.read)
            except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
                raise self._t.unreachable(e) from e
        finally:
            conn.close()

    def download_all(self, dest: StrPath) -> Downloads:
        """Downloads every artifact under ``dest``; names that would land outside it are
        refused (listed in ``refused``), the others written."""
        out = Downloads()
        for a in self.artifacts():
            try:
                out.written.append(self.download(a.path, dest))
            except UnsafeArtifactPath as e:
                out.refused.append((a.path, e.message))
        return out


def _spec_text(spec: Spec) -> Tuple[str, str, Optional[List[str]]]:
    """The spec's text, its content type, and its ``workspace.exclude`` when it can be read
    here (a mapping or JSON; YAML needs a parser the standard library does not have)."""
    if isinstance(spec, Mapping):
        return json.dumps(spec), "application/json", _excludes_of(spec)
    if isinstance(spec, str):
        one_line = spec.strip()
        if "\n" not in one_line and one_line.endswith((".yaml", ".yml", ".json")):
            raise InvalidInput(
                f"spec {one_line!r} looks like a file name, and a str is the spec's text: "
                f"pass pathlib.Path({one_line!r})",
                kind="invalid_input",
            )
        text = spec
    else:
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"spec {os.fspath(spec)}: cannot read it: {e}", kind="invalid_input") from e
    try:
        obj = json.loads(text)
    except ValueError:
        return text, "application/yaml", None
    return text, "application/json", _excludes_of(obj) if isinstance(obj, Mapping) else None


def _excludes_of(spec: Mapping[str, Any]) -> Optional[List[str]]:
    ws = spec.get("workspace")
    ex = ws.get("exclude") if isinstance(ws, Mapping) else None
    if isinstance(ex, list) and all(isinstance(e, str) for e in ex):
        return list(ex)
    return None


def _retry_after(value: Optional[str]) -> float:
    try:
        return max(0.0, min(float(value or 5), 300.0))
    except ValueError:
        return 5.0


def _since(since: Union[_dt.datetime, int, str]) -> str:
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            raise InvalidInput(
                "since: a naive datetime is ambiguous; give one with a tzinfo (datetime.timezone.utc)",
                kind="invalid_input",
            )
        return str(int(since.timestamp() * 1000))
    return str(since)
