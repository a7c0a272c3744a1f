"""What the service sends, typed.

The ``...Dict`` TypedDicts are the wire format exactly (src/event.rs, src/report/mod.rs,
src/server/queue.rs, and the OpenAPI document at ``/v1/openapi.yaml``); :data:`Event` is the
union of every event, discriminated by ``type`` (``if ev["type"] == "output": ev["data"]``
type-checks). The dataclasses (:class:`Result`, :class:`JobStatus`, ...) are the same data
with attribute access and a few conveniences; each keeps its wire dict as ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, TypedDict, TypeVar, Union, cast

from .errors import ServiceUnavailable

Outcome = Literal[
    "passed",
    "failed",
    "timed_out",
    "oom_killed",
    "output_limit_exceeded",
    "disk_limit_exceeded",
    "cancelled",
    "sandbox_error",
    "skipped",
]
"""How a job (or a step) ended (src/report/mod.rs ``Outcome``)."""

JobState = Literal["queued", "running", "finished"]
Phase = Literal["resolve", "create", "load", "run", "collect", "destroy"]
StreamName = Literal["stdout", "stderr"]

# The exit status of `cordon run` / `cordon submit` for each outcome (Outcome::exit_status).
EXIT_STATUS: Dict[str, int] = {
    "passed": 0,
    "failed": 1,
    "timed_out": 3,
    "oom_killed": 4,
    "output_limit_exceeded": 4,
    "disk_limit_exceeded": 4,
    "sandbox_error": 5,
    "skipped": 5,
    "cancelled": 130,
}


T = TypeVar("T")


# --- the wire format -----------------------------------------------------------------------


class StepResultDict(TypedDict):
    name: str
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int
    output_bytes: int


class TestSummaryDict(TypedDict):
    total: int
    passed: int
    failed: int
    skipped: int
    errors: int
    failing: List[str]


class RefusedArtifactDict(TypedDict):
    path: str
    reason: str


class _EnvironmentBase(TypedDict):
    key: str
    image: str
    cached: bool
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int


class EnvironmentDict(_EnvironmentBase, total=False):
    egress_refused: List[str]


class _JobResultBase(TypedDict):
    job_id: str
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int
    steps: List[StepResultDict]
    tests: Optional[TestSummaryDict]
    artifacts: List[str]
    output_bytes: int
    output_truncated: bool
    image: str
    profile: str
    phases_ms: Dict[str, int]


class JobResultDict(_JobResultBase, total=False):
    """What ``cordon run --json`` prints, and the ``result`` of the ``finished`` event."""

    error: str
    environment: EnvironmentDict
    warm: bool
    artifacts_refused: List[RefusedArtifactDict]


class _JobStatusBase(TypedDict):
    id: str
    state: JobState
    submitted_ms: int
    started_ms: Optional[int]
    finished_ms: Optional[int]
    image: str
    events: int
    outcome: Optional[str]
    result: Optional[JobResultDict]


class JobStatusDict(_JobStatusBase, total=False):
    queue_position: int
    submitted_by: str
    controller: str
    attempts: int


class StartedEvent(TypedDict):
    seq: int
    type: Literal["started"]
    job_id: str
    image: str
    profile: str
    steps: List[str]


class PhaseEvent(TypedDict):
    seq: int
    type: Literal["phase"]
    phase: Phase
    duration_ms: int


class ProgressEvent(TypedDict):
    seq: int
    type: Literal["progress"]
    message: str


class StepStartedEvent(TypedDict):
    seq: int
    type: Literal["step_started"]
    step: str
    index: int


class OutputEvent(TypedDict):
    """A chunk of a step's output. ``data`` is text: bytes that were not UTF-8 arrive as
    U+FFFD."""

    seq: int
    type: Literal["output"]
    step: str
    stream: StreamName
    data: str


class OutputTruncatedEvent(TypedDict):
    seq: int
    type: Literal["output_truncated"]
    step: str
    limit_bytes: int


class StepFinishedEvent(TypedDict):
    seq: int
    type: Literal["step_finished"]
    result: StepResultDict


class ArtifactEvent(TypedDict):
    seq: int
    type: Literal["artifact"]
    path: str
    bytes: int


class ArtifactRefusedEvent(TypedDict):
    seq: int
    type: Literal["artifact_refused"]
    path: str
    reason: str


class EnvironmentEvent(TypedDict):
    seq: int
    type: Literal["environment"]
    key: str
    image: str
    cached: bool


class EgressRefusedEvent(TypedDict):
    seq: int
    type: Literal["egress_refused"]
    destination: str
    reason: str


class AppliedSandbox(TypedDict):
    """A sandbox as the engine recorded it once created (``None``: no such limit)."""

    runtime: str
    user: str
    read_only_rootfs: bool
    cap_drop: List[str]
    cap_add: List[str]
    no_new_privileges: bool
    seccomp: str
    network: str
    memory_bytes: Optional[int]
    memory_swap_bytes: Optional[int]
    cpus: Optional[float]
    pids: Optional[int]
    nofile: Optional[int]
    mounts: List[str]


class SandboxEvent(TypedDict):
    seq: int
    type: Literal["sandbox"]
    step: str
    applied: AppliedSandbox


class WarningEvent(TypedDict):
    seq: int
    type: Literal["warning"]
    message: str


class FinishedEvent(TypedDict):
    """The last event of every job."""

    seq: int
    type: Literal["finished"]
    result: JobResultDict


Event = Union[
    StartedEvent,
    PhaseEvent,
    ProgressEvent,
    StepStartedEvent,
    OutputEvent,
    OutputTruncatedEvent,
    StepFinishedEvent,
    ArtifactEvent,
    ArtifactRefusedEvent,
    EnvironmentEvent,
    EgressRefusedEvent,
    SandboxEvent,
    WarningEvent,
    FinishedEvent,
]
"""One line of ``GET /v1/jobs/{id}/events``: a ``JobEvent`` plus its offset ``seq``."""


# --- the same, as objects ------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    name: str
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int
    output_bytes: int

    @staticmethod
    def from_dict(d: StepResultDict) -> StepResult:
        return StepResult(d["name"], d["outcome"], d["exit_code"], d["duration_ms"], d["output_bytes"])


@dataclass(frozen=True)
class TestSummary:
    """Counts from a collected JUnit XML artifact; ``failing`` holds ``classname::name`` of the
    failing and erroring tests (the first 100)."""

    __test__ = False  # not a test class, whatever unittest/pytest think of the name

    total: int
    passed: int
    failed: int
    skipped: int
    errors: int
    failing: List[str]

    @staticmethod
    def from_dict(d: TestSummaryDict) -> TestSummary:
        return TestSummary(d["total"], d["passed"], d["failed"], d["skipped"], d["errors"], list(d["failing"]))


@dataclass(frozen=True)
class RefusedArtifact:
    path: str
    reason: str


@dataclass(frozen=True)
class EnvironmentResult:
    """How the job's dependency environment (``prepare``) was obtained."""

    key: str
    image: str
    cached: bool
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int
    egress_refused: List[str]

    @staticmethod
    def from_dict(d: EnvironmentDict) -> EnvironmentResult:
        return EnvironmentResult(
            d["key"],
            d["image"],
            d["cached"],
            d["outcome"],
            d["exit_code"],
            d["duration_ms"],
            list(d.get("egress_refused", [])),
        )


@dataclass(frozen=True)
class Result:
    """What a job came to: the object ``cordon run --json`` prints.

    The outcome is decided by cordon from what the engine reports (exit code, OOM, timeout,
    output cap), never from the job's own files; ``tests`` are counts next to it, read from a
    collected JUnit file when the job has one.
    """

    job_id: str
    outcome: Outcome
    exit_code: Optional[int]
    duration_ms: int
    steps: List[StepResult]
    tests: Optional[TestSummary]
    artifacts: List[str]
    """The artifacts' paths on the service's host; download them with :meth:`Job.download_all`."""
    output_bytes: int
    output_truncated: bool
    image: str
    profile: str
    phases_ms: Dict[str, int]
    error: Optional[str] = None
    environment: Optional[EnvironmentResult] = None
    warm: bool = False
    artifacts_refused: List[RefusedArtifact] = field(default_factory=list)
    raw: Optional[JobResultDict] = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def exit_status(self) -> int:
        """The exit status ``cordon submit`` would have for this outcome (0 passed, 1 failed,
        3 timed out, 4 a resource limit, 5 sandbox error, 130 cancelled)."""
        return EXIT_STATUS.get(self.outcome, 5)

    @property
    def failing_tests(self) -> List[str]:
        """``classname::name`` of the failing tests, from the JUnit counts (empty without)."""
        return list(self.tests.failing) if self.tests else []

    @staticmethod
    def from_dict(d: JobResultDict) -> Result:
        return parsed("a job result", lambda: _result(d))


def _result(d: JobResultDict) -> Result:
    env = d.get("environment")
    tests = d["tests"]
    return Result(
        job_id=d["job_id"],
        outcome=d["outcome"],
        exit_code=d["exit_code"],
        duration_ms=d["duration_ms"],
        steps=[StepResult.from_dict(s) for s in d["steps"]],
        tests=TestSummary.from_dict(tests) if tests is not None else None,
        artifacts=list(d["artifacts"]),
        output_bytes=d["output_bytes"],
        output_truncated=d["output_truncated"],
        image=d["image"],
        profile=d["profile"],
        phases_ms=dict(d["phases_ms"]),
        error=d.get("error"),
        environment=EnvironmentResult.from_dict(env) if env is not None else None,
        warm=bool(d.get("warm", False)),
        artifacts_refused=[RefusedArtifact(r["path"], r["reason"]) for r in d.get("artifacts_refused", [])],
        raw=d,
    )


@dataclass(frozen=True)
class JobStatus:
    """``GET /v1/jobs/{id}``: where a job is, and once finished its result."""

    id: str
    state: JobState
    submitted_ms: int
    started_ms: Optional[int]
    finished_ms: Optional[int]
    image: str
    events: int
    """Events so far: the stream's offsets are ``0 .. events - 1``."""
    outcome: Optional[str]
    result: Optional[Result]
    queue_position: Optional[int] = None
    """Jobs ahead of it, while queued."""
    submitted_by: Optional[str] = None
    """The name of the token that submitted it."""
    controller: Optional[str] = None
    """The controller running it, or that ran it last."""
    attempts: int = 1
    """How many times a controller started it (more than 1 after a lost controller)."""
    raw: Optional[JobStatusDict] = field(default=None, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @staticmethod
    def from_dict(d: JobStatusDict) -> JobStatus:
        return parsed("a job status", lambda: _status(d))


def _status(d: JobStatusDict) -> JobStatus:
    r = d["result"]
    return JobStatus(
        id=d["id"],
        state=d["state"],
        submitted_ms=d["submitted_ms"],
        started_ms=d["started_ms"],
        finished_ms=d["finished_ms"],
        image=d["image"],
        events=d["events"],
        outcome=d["outcome"],
        result=_result(r) if r is not None else None,
        queue_position=d.get("queue_position"),
        submitted_by=d.get("submitted_by"),
        controller=d.get("controller"),
        attempts=d.get("attempts", 1),
        raw=d,
    )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /v1/jobs``, newest first; pass ``next_cursor`` for the next."""

    jobs: List[JobStatus]
    next_cursor: Optional[str]


@dataclass(frozen=True)
class Artifact:
    """One collected artifact: its name relative to the job's artifact directory, and size."""

    path: str
    bytes: int


def parsed(what: str, make: Callable[[], T]) -> T:
    """Runs ``make()``, turning a missing or mistyped field into :class:`ServiceUnavailable`."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ServiceUnavailable(
            f"unreadable answer from the service: {what} without a valid {e!s}", kind="protocol"
        ) from e


def as_status(obj: Any) -> JobStatusDict:
    """A decoded JSON value, taken as a job status (checked when it is converted)."""
    if not isinstance(obj, dict):
        raise ServiceUnavailable(
            "unreadable answer from the service: a job status that is not an object", kind="protocol"
        )
    return cast(JobStatusDict, obj)
