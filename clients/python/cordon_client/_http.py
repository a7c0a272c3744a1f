"""One service's HTTP transport: the base URL, TLS, the bearer token, and the service's error
answers turned into exceptions. Standard library only (``http.client``)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from .errors import InvalidInput, ServiceUnavailable, from_answer

StrPath = Union[str, "os.PathLike[str]"]

USER_AGENT = "cordon-client-python/0.1"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ServiceUnavailable(
                f"unreadable answer from the service (HTTP {self.status}): not JSON: {e}", kind="protocol"
            ) from e


class Transport:
    """How to reach one service, and as whom. The token is held here and only sent in the
    ``Authorization`` header: it appears in no repr and no error message."""

    def __init__(
        self,
        server: str,
        token: Optional[str],
        timeout: float,
        ca_cert: Optional[StrPath] = None,
    ) -> None:
        url = urlsplit(server.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput(
                f"server {server!r}: give the service's base URL, like http://127.0.0.1:8420 or https://cordon.example",
                kind="invalid_input",
            )
        if url.username or url.password or url.query or url.fragment:
            raise InvalidInput(
                f"server {url.scheme}://{url.hostname}: the URL may not carry credentials, a query or a fragment; "
                "give the token with token= or token_file=",
                kind="invalid_input",
            )
        if ca_cert is not None and url.scheme != "https":
            raise InvalidInput(
                f"ca_cert is for an https:// server, and {server} is {url.scheme}://", kind="invalid_input"
            )
        try:
            port = url.port
        except ValueError as e:
            raise InvalidInput(f"server {server!r}: {e}", kind="invalid_input") from e
        self.scheme = url.scheme
        self.host = url.hostname
        self.port = port
        self.prefix = url.path.rstrip("/")
        self.server = f"{url.scheme}://{url.netloc}{self.prefix}"
        self.timeout = timeout
        self._token = token
        self._ssl: Optional[ssl.SSLContext] = None
        if url.scheme == "https":
            cafile = os.fspath(ca_cert) if ca_cert is not None else None
            if cafile is not None and not os.path.isfile(cafile):
                raise InvalidInput(
                    f"ca_cert {cafile}: no such file (a PEM bundle of the CA that signed the service's certificate)",
                    kind="invalid_input",
                )
            try:
                self._ssl = ssl.create_default_context(cafile=cafile)
            except (ssl.SSLError, OSError) as e:
                raise InvalidInput(
                    f"ca_cert {cafile}: cannot load it as PEM certificates: {e}", kind="invalid_input"
                ) from e

    def __repr__(self) -> str:
        return f"Transport({self.server!r}, token={'<set>' if self._token else None})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def url(self, path: str, query: Optional[Iterable[Tuple[str, str]]] = None) -> str:
        """The request target for ``path`` (from ``/v1/...``), with ``query``."""
        target = self.prefix + path
        q = list(query or [])
        return f"{target}?{urlencode(q)}" if q else target

    def connect(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=t, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=t)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise self.unreachable(e) from e
        return conn

    def unreachable(self, e: BaseException) -> ServiceUnavailable:
        hint = ""
        if isinstance(e, ssl.SSLCertVerificationError):
            hint = " (the service's certificate is not trusted: give ca_cert= the CA's PEM file)"
        return ServiceUnavailable(f"cannot reach {self.server}: {e}{hint}", kind="connection")

    def headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        h = {"User-Agent": USER_AGENT}
        if self._token is not None:
            h["Authorization"] = f"Bearer {self._token}"
        if extra:
            h.update(extra)
        return h

    def start(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Iterable[Tuple[str, str]]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a request without a body; returns the open connection and the response
        (whatever its status) for the caller to read and close."""
        conn = self.connect(timeout)
        return conn, self.send(conn, method, path, query=query, headers=headers)

    def send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        *,
        query: Optional[Iterable[Tuple[str, str]]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> http.client.HTTPResponse:
        """Sends a request without a body on ``conn`` (closed if that fails); returns the
        response, whatever its status."""
        try:
            conn.request(method, self.url(path, query), headers=self.headers(headers))
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self.unreachable(e) from e

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Iterable[Tuple[str, str]]] = None,
        timeout: Optional[float] = None,
    ) -> Answer:
        """Sends a request and reads the whole answer; an error answer raises."""
        conn, resp = self.start(method, path, query=query, headers={"Accept": "application/json"}, timeout=timeout)
        try:
            answer = read_answer(resp)
        except (OSError, http.client.HTTPException) as e:
            raise self.unreachable(e) from e
        finally:
            conn.close()
        if answer.status >= 300:
            raise error_of(answer)
        return answer


def read_answer(resp: http.client.HTTPResponse) -> Answer:
    return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def error_of(answer: Answer) -> Exception:
    """The exception for an error answer: the service's ``{"error": {"kind", "message"}}``,
    or the status and body if it is not that."""
    kind: Optional[str] = None
    param: Optional[str] = None
    message = answer.body.decode("utf-8", "replace").strip()[:2000] or "(no message)"
    try:
        err = json.loads(answer.body)["error"]
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
            kind = err.get("kind") if isinstance(err.get("kind"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
    except (ValueError, KeyError, TypeError):
        pass
    return from_answer(answer.status, kind, message, param)


def job_path(job_id: str, *rest: str) -> str:
    """``/v1/jobs/{id}/...`` with the id checked (as the service makes them: ``job-...``)."""
    ok = 0 < len(job_id) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in job_id)
    if not ok:
        raise InvalidInput(
            f"{job_id!r} is not a job id (like job-0123456789ab); Client.jobs() lists them", kind="invalid_input"
        )
    return "/".join(["/v1/jobs", job_id, *(quote(r, safe="/") for r in rest)])
