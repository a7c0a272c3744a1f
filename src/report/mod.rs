//! What a job came to: its [`Outcome`], per-step results, test counts, artifacts.
//!
//! The outcome is decided from what the engine and cordon's own timers report — exit code,
//! OOM flag, timeout, output cap — never from files or output the job could forge. Test counts
//! from a collected JUnit file are information next to the outcome, not its source.

pub mod junit;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use junit::TestSummary;

/// How a job (or one step) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    TimedOut,
    OomKilled,
    OutputLimitExceeded,
    /// A `prepare` wrote more to its filesystem than the operator's `max.prepare_disk`;
    /// nothing of it was kept.
    DiskLimitExceeded,
    /// Stopped on request (Ctrl-C, API cancel) before it finished.
    Cancelled,
    /// cordon's own failure, not the job's; `error` says what went wrong.
    SandboxError,
    /// The step did not run because an earlier one did not pass.
    Skipped,
}

impl Outcome {
    /// Every outcome, in the order of the enum.
    pub const ALL: [Outcome; 9] = [
        Outcome::Passed,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::OomKilled,
        Outcome::OutputLimitExceeded,
        Outcome::DiskLimitExceeded,
        Outcome::Cancelled,
        Outcome::SandboxError,
        Outcome::Skipped,
    ];

    /// The outcome named `s` (as [`Outcome::as_str`] spells it).
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The exit status of `cordon run` for a job with this outcome.
    pub fn exit_status(self) -> u8 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::TimedOut => 3,
            Outcome::OomKilled | Outcome::OutputLimitExceeded | Outcome::DiskLimitExceeded => 4,
            Outcome::SandboxError | Outcome::Skipped => 5,
            Outcome::Cancelled => 130,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::OomKilled => "oom_killed",
            Outcome::OutputLimitExceeded => "output_limit_exceeded",
            Outcome::DiskLimitExceeded => "disk_limit_exceeded",
            Outcome::Cancelled => "cancelled",
            Outcome::SandboxError => "sandbox_error",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub outcome: Outcome,
    /// The exit code the engine reported for the step's command; none if it never ended on
    /// its own (timeout, cancel, skipped).
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub output_bytes: u64,
}

/// An artifact entry that was not extracted, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedArtifact {
    pub path: String,
    pub reason: String,
}

/// How the job's dependency environment (`prepare`) was obtained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentResult {
    /// The cache key: a hash of everything that determines the environment.
    pub key: String,
    /// The environment image the steps ran on.
    pub image: String,
    /// Whether it came from the cache (no install ran).
    pub cached: bool,
    /// For a build: how the install ended.
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    /// Destinations the install tried to reach and the proxy refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_refused: Vec<String>,
}

/// The result of a job: what `cordon run --json` prints, and the last event of every job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    pub outcome: Outcome,
    /// The exit code of the last step that ran to completion.
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    /// For `sandbox_error`: what went wrong, with its causes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Present when the job has a `prepare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentResult>,
    /// The first step ran in a sandbox from the warm pool (made before the job, never used).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
    pub steps: Vec<StepResult>,
    /// Counts from a collected JUnit XML artifact, when there was one.
    pub tests: Option<TestSummary>,
    /// Host paths of the collected artifacts.
    pub artifacts: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub artifacts_refused: Vec<RefusedArtifact>,
    /// Bytes of stdout + stderr the job produced (up to the cap, plus what overflowed it).
    pub output_bytes: u64,
    pub output_truncated: bool,
    pub image: String,
    pub profile: String,
    /// Wall time of each phase, for the curious and the benchmarks.
    pub phases_ms: std::collections::BTreeMap<String, u64>,
}
