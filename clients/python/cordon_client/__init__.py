"""A client for the cordon service (``cordon serve``): submit a job spec and a workspace, stream
the job's events, wait for its result, fetch its artifacts, cancel it.

    from pathlib import Path
    from cordon_client import Client

    client = Client("http://127.0.0.1:8420", token_file="cordon-data/token")
    job = client.submit(Path("job.yaml"), workspace=Path("repo"))
    result = job.wait(timeout=600)
    print(result.outcome, result.failing_tests)
    job.download_all("out")

Standard library only; Python 3.9 or newer.
"""

from .client import Client, Downloads, Job, Spec
from .errors import (
    AuthError,
    BadRequest,
    CordonError,
    InvalidInput,
    InvalidSpec,
    NotFound,
    QueueFull,
    ServiceUnavailable,
    TooLarge,
    UnsafeArtifactPath,
    UploadRefused,
    WaitTimeout,
)
from .events import EventStream, OutputCollector
from .model import (
    Artifact,
    EnvironmentResult,
    Event,
    FinishedEvent,
    JobPage,
    JobResultDict,
    JobState,
    JobStatus,
    JobStatusDict,
    Outcome,
    OutputEvent,
    RefusedArtifact,
    Result,
    StepResult,
    TestSummary,
)
from .workspace import DEFAULT_EXCLUDES, PackStats

__all__ = [
    "Artifact",
    "AuthError",
    "BadRequest",
    "Client",
    "CordonError",
    "DEFAULT_EXCLUDES",
    "Downloads",
    "EnvironmentResult",
    "Event",
    "EventStream",
    "FinishedEvent",
    "InvalidInput",
    "InvalidSpec",
    "Job",
    "JobPage",
    "JobResultDict",
    "JobState",
    "JobStatus",
    "JobStatusDict",
    "NotFound",
    "Outcome",
    "OutputCollector",
    "OutputEvent",
    "PackStats",
    "QueueFull",
    "RefusedArtifact",
    "Result",
    "ServiceUnavailable",
    "Spec",
    "StepResult",
    "TestSummary",
    "TooLarge",
    "UnsafeArtifactPath",
    "UploadRefused",
    "WaitTimeout",
]

__version__ = "0.1.0"
