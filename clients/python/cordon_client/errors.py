"""The exceptions a client raises, in the classes of the `cordon` CLI's exit statuses.

Everything the caller can fix (a refused token, an invalid spec or upload, a job that does not
exist) is an :class:`InvalidInput` — exit status 2 for the CLI. Everything that is the service's
or the network's (cannot connect, 5xx, the service shutting down) is a
:class:`ServiceUnavailable` — exit status 5. A job's *outcome* (failed, timed out, ...) is
never an exception: it is the :class:`~cordon_client.Result`.

No exception message ever contains the token.
"""

from __future__ import annotations

import re
from typing import Optional

# The exit status `cordon submit` uses for each class (src/cli/mod.rs).
EXIT_INVALID = 2
EXIT_SANDBOX_ERROR = 5


class CordonError(Exception):
    """Base of every error this package raises.

    ``kind`` is the service's error kind (``invalid_spec``, ``unauthorized``, ...) or one of
    this client's (``connection``, ``protocol``, ...); ``status`` the HTTP status, if there was
    an answer; ``exit_status`` the CLI's exit status for the same failure.
    """

    exit_status: int = EXIT_SANDBOX_ERROR

    def __init__(self, message: str, *, kind: str = "error", status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidInput(CordonError):
    """Something the caller can fix; the CLI exits 2 for it."""

    exit_status = EXIT_INVALID


class AuthError(InvalidInput):
    """The service refused the token (``401``) or the request's context (``403``)."""


class InvalidSpec(InvalidInput):
    """The service refused the spec (``invalid_spec``, or ``invalid_input`` from its engine
    preflight). ``field`` is the spec field the message names (like ``limits.memory``), when it
    names one."""

    def __init__(self, message: str, *, kind: str = "invalid_spec", status: Optional[int] = None) -> None:
        super().__init__(message, kind=kind, status=status)
        self.field: Optional[str] = field_of(message)


class UploadRefused(InvalidInput):
    """The service refused the workspace upload (a link, ``..``, over a cap), or this client
    refused to pack it (a symbolic link in the workspace)."""


class TooLarge(InvalidInput):
    """The request body was over the service's ``max_upload`` (``413``)."""


class NotFound(InvalidInput):
    """No such job (or artifact) for this token: another token's job looks exactly the same."""


class BadRequest(InvalidInput):
    """Any other ``4xx``: a query parameter the service does not take (``param`` names it)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "bad_request",
        status: Optional[int] = None,
        param: Optional[str] = None,
    ) -> None:
        super().__init__(message, kind=kind, status=status)
        self.param = param


class UnsafeArtifactPath(InvalidInput):
    """An artifact name that would land outside the destination directory (absolute, ``..``,
    a link on the way): refused before anything is written."""


class ServiceUnavailable(CordonError):
    """The service could not be reached, answered ``5xx``, is shutting down, or sent something
    this client cannot read; the CLI exits 5 for it."""


class QueueFull(ServiceUnavailable):
    """The service's queue stayed full (``429``) longer than the client was told to wait."""


class WaitTimeout(CordonError, TimeoutError):
    """:meth:`Job.wait` gave up waiting; the job goes on on the service (cancel it if it
    should not)."""


_FIELD = re.compile(r"`([A-Za-z_][A-Za-z0-9_.\[\]-]*)`:")


def field_of(message: str) -> Optional[str]:
    """The spec field a service message names: the first ```field`:`` in it."""
    m = _FIELD.search(message)
    return m.group(1) if m else None


def from_answer(status: int, kind: Optional[str], message: str, param: Optional[str] = None) -> CordonError:
    """The exception for an error answer of the service."""
    k = kind or "http_error"
    text = f"the service answered {status}: {message}"
    if status in (401, 403):
        return AuthError(text, kind=k, status=status)
    if status == 404:
        return NotFound(text, kind=k, status=status)
    if status == 413:
        return TooLarge(text, kind=k, status=status)
    if k in ("invalid_spec", "invalid_input"):
        return InvalidSpec(text, kind=k, status=status)
    if k == "upload_refused":
        return UploadRefused(text, kind=k, status=status)
    if 400 <= status < 500:
        return BadRequest(text, kind=k, status=status, param=param)
    return ServiceUnavailable(text, kind=k, status=status)
