//! The one event type every consumer of a job reads: the terminal printer, `--json`, the
//! HTTP stream and the test-generation loop.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::report::{JobResult, StepResult};

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The phases of a job, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Resolve,
    Create,
    Load,
    Run,
    Collect,
    Destroy,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Create => "create",
            Phase::Load => "load",
            Phase::Run => "run",
            Phase::Collect => "collect",
            Phase::Destroy => "destroy",
        }
    }
}

/// Something that happened in a job. The last event of every job is [`JobEvent::Finished`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was accepted and is about to resolve its image.
    Started {
        job_id: String,
        image: String,
        profile: String,
        steps: Vec<String>,
    },
    /// A phase finished.
    Phase {
        phase: Phase,
        duration_ms: u64,
    },
    /// Progress of work that takes a while (building an image, loading a big workspace).
    Progress {
        message: String,
    },
    StepStarted {
        step: String,
        index: usize,
    },
    /// A chunk of a step's output, exactly as the job wrote it.
    Output {
        step: String,
        stream: Stream,
        #[serde(serialize_with = "lossy", deserialize_with = "from_text")]
        data: Bytes,
    },
    /// Output went past the cap; nothing more is captured and the job is being stopped.
    OutputTruncated {
        step: String,
        limit_bytes: u64,
    },
    StepFinished {
        result: StepResult,
    },
    /// An artifact was copied to the host.
    Artifact {
        path: String,
        bytes: u64,
    },
    /// An artifact entry was refused (link, `..`, over a cap…).
    ArtifactRefused {
        path: String,
        reason: String,
    },
    /// The job's dependency environment is ready: `cached` when an earlier job built it.
    Environment {
        key: String,
        image: String,
        cached: bool,
    },
    /// The `prepare` step tried to reach a destination its egress proxy refused.
    EgressRefused {
        destination: String,
        /// Why: not on the allowlist, an internal address, …
        reason: String,
    },
    /// The sandbox a step (or the `prepare`) runs in, as the engine reported it back once
    /// it was created and before anything ran in it.
    Sandbox {
        /// The step's name, or `prepare`.
        step: String,
        applied: AppliedSandbox,
    },
    /// Something the user should know that does not change the outcome.
    Warning {
        message: String,
    },
    Finished {
        result: Box<JobResult>,
    },
}

/// What the engine recorded for a sandbox container: not what cordon asked for, but what
/// inspecting the container returned (cordon refuses to start a sandbox where the two differ).
/// Engine-neutral names; `None` where the engine set no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedSandbox {
    /// The OCI runtime: `runc`, `runsc` (gVisor).
    pub runtime: String,
    /// `uid:gid` the processes run as.
    pub user: String,
    pub read_only_rootfs: bool,
    /// Capabilities dropped (`ALL` for every one) and added back.
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    /// `unconfined`, `engine default`, or `custom: N rules, sha256 <12 hex>` for cordon's own
    /// filter.
    pub seccomp: String,
    /// `none`, or the network the sandbox is on.
    pub network: String,
    pub memory_bytes: Option<i64>,
    /// Memory plus swap; equal to `memory_bytes` when the sandbox has no swap.
    pub memory_swap_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    /// The soft limit on open files.
    pub nofile: Option<i64>,
    /// Every filesystem mounted into the sandbox, `TARGET (TYPE, ro|rw[, OPTIONS])`.
    pub mounts: Vec<String>,
}

fn lossy<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn from_text<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    String::deserialize(d).map(Bytes::from)
}
