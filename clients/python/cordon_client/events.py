"""A job's event stream, read in order and resumed after a dropped connection: every event
comes exactly once, up to the ``finished`` event that carries the result."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections import deque
from typing import Deque, Iterator, Optional, Tuple, cast

from ._http import Transport, error_of, job_path, read_answer
from .errors import ServiceUnavailable, WaitTimeout
from .model import Event

# A line longer than this is not an event the service sends.
MAX_LINE = 64 << 20
# Failed connections in a row before giving up (as `cordon submit` does).
MAX_FAILURES = 30


class EventStream(Iterator[Event]):
    """Iterates over job events from ``from_seq``: past ones at once, then live ones, ending
    after ``finished``. A connection that drops, or a service that restarts, is resumed from
    ``next_seq``; a silent job's stream is re-opened every ``idle`` seconds (NDJSON has no
    keep-alive). Keep ``next_seq`` to resume later in a new stream (``job.events(from_seq=...)``).

    With ``timeout``, :class:`WaitTimeout` is raised once that many seconds have passed without
    the stream ending; after :meth:`set_timeout` the same stream goes on where it stopped.
    """

    def __init__(
        self,
        transport: Transport,
        job_id: str,
        from_seq: int = 0,
        timeout: Optional[float] = None,
        idle: float = 60.0,
    ) -> None:
        self._t = transport
        self._path = job_path(job_id, "events")
        self.job_id = job_id
        self.next_seq = from_seq
        self.finished = False
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._idle = idle
        self._failures = 0
        self._conn: Optional[http.client.HTTPConnection] = None
        self._resp: Optional[http.client.HTTPResponse] = None
        self._sock: Optional[socket.socket] = None

    def __iter__(self) -> EventStream:
        return self

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._resp is not None:
            self._resp.close()
        self._conn = self._resp = self._sock = None

    def set_timeout(self, timeout: Optional[float]) -> None:
        """A new overall deadline, ``timeout`` seconds from now (None: none)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def _remaining(self) -> Optional[float]:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.close()
            raise WaitTimeout(
                f"job {self.job_id} had not finished when the wait ran out (at event {self.next_seq}); "
                "it goes on on the service",
                kind="timeout",
            )
        return left

    def _wait_s(self) -> float:
        left = self._remaining()
        return self._idle if left is None else min(self._idle, left)

    def _fail(self, why: str) -> None:
        self.close()
        self._failures += 1
        if self._failures > MAX_FAILURES:
            raise ServiceUnavailable(
                f"lost the service {self._t.server} reading job {self.job_id}'s events: {why}", kind="connection"
            )
        left = self._remaining()
        time.sleep(1.0 if left is None else min(1.0, left))

    def _open(self) -> None:
        try:
            conn = self._t.connect(self._wait_s())
            # Kept to set each read's timeout: a response that closes the connection when it
            # ends (HTTP/1.0, `Connection: close`) takes the socket away from `conn`.
            sock = conn.sock
            resp = self._t.send(
                conn,
                "GET",
                self._path,
                query=[("from", str(self.next_seq))],
                headers={"Accept": "application/x-ndjson"},
            )
        except ServiceUnavailable as e:
            self._fail(str(e))
            return
        if resp.status != 200:
            try:
                answer = read_answer(resp)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._fail(str(e))
                return
            conn.close()
            err = error_of(answer)
            if 400 <= resp.status < 500:
                raise err
            self._fail(str(err))
            return
        self._conn, self._resp, self._sock = conn, resp, sock

    def _line(self) -> Optional[bytes]:
        """The next whole line, or None after closing a connection that ended or went quiet."""
        assert self._resp is not None
        if self._sock is not None:
            self._sock.settimeout(self._wait_s())
        try:
            line = self._resp.readline(MAX_LINE)
        except (socket.timeout, TimeoutError):
            self.close()  # quiet: re-open (and check the deadline) without counting a failure
            self._remaining()
            return None
        except (OSError, http.client.HTTPException) as e:
            self._fail(str(e))
            return None
        if not line.endswith(b"\n"):
            # Ended before the result (service restart, cut connection): resume after what was
            # read whole.
            if len(line) >= MAX_LINE:
                self.close()
                raise ServiceUnavailable(f"job {self.job_id}: an event line over {MAX_LINE} bytes", kind="protocol")
            self._fail("the stream ended before the job's result")
            return None
        return line

    def __next__(self) -> Event:
        if self.finished:
            raise StopIteration
        while True:
            if self._resp is None:
                self._open()
                continue
            line = self._line()
            if line is None or not line.strip():
                continue
            seq, ev = _parse(line, self.next_seq)
            if seq < self.next_seq:
                continue  # already seen before a reconnect
            self.next_seq = seq + 1
            self._failures = 0
            if ev["type"] == "finished":
                self.finished = True
                self.close()
            return ev


def _parse(line: bytes, expected: int) -> Tuple[int, Event]:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ServiceUnavailable(f"unreadable event from the service: {e}", kind="protocol") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ServiceUnavailable("unreadable event from the service: not an object with a `type`", kind="protocol")
    seq = obj.get("seq")
    if not isinstance(seq, int):
        seq = expected
        obj["seq"] = seq
    return seq, cast(Event, obj)


class OutputCollector:
    """An ``on_event`` callback for :meth:`Job.wait` that keeps the last ``max_chars`` of the
    job's output (stdout and stderr interleaved as they came, each chunk as written)."""

    def __init__(self, max_chars: int = 20_000) -> None:
        self.max_chars = max_chars
        self._chunks: Deque[str] = deque()
        self._size = 0
        self.dropped = 0
        """Characters left out at the front to stay within ``max_chars``."""
        self.truncated_by_service = False
        """The job's output went over the service's output cap (``output_truncated``)."""

    def __call__(self, ev: Event) -> None:
        if ev["type"] == "output":
            self._chunks.append(ev["data"])
            self._size += len(ev["data"])
            while self._size > self.max_chars and self._chunks:
                over = self._size - self.max_chars
                first = self._chunks[0]
                if len(first) <= over:
                    self._chunks.popleft()
                    self._size -= len(first)
                    self.dropped += len(first)
                else:
                    self._chunks[0] = first[over:]
                    self._size -= over
                    self.dropped += over
        elif ev["type"] == "output_truncated":
            self.truncated_by_service = True

    @property
    def text(self) -> str:
        """The kept output, with a first line saying how much was left out, if any."""
        body = "".join(self._chunks)
        return f"[... {self.dropped} characters left out ...]\n{body}" if self.dropped else body
