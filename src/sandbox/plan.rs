//! The engine seam's vocabulary: what an engine is told to make, with nothing of any one
//! engine in it. `policy` turns a job and its profile into these values ([`JobPlan`] holds
//! every one a job makes, the whole attack surface in one value); a [`super::Backend`] only
//! makes what they say and reads back what it made. Docker's translation is
//! `docker::config`; how each setting would map onto a Kubernetes Pod is in ARCHITECTURE.md.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sandbox (a container, in Docker): everything that decides what its processes can do.
/// Nothing of the command it will run is here; that comes through the gate at release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxPlan {
    /// Its name in the engine, unique per job and step.
    pub name: String,
    /// The image's id (never a tag: the engine cannot swap it under the job).
    pub image: String,
    /// The OCI runtime (`runc`, `runsc`); `None`: the engine's default.
    pub runtime: Option<String>,
    pub user: User,
    /// The working directory: the workspace's path.
    pub workdir: String,
    /// The main process (argv): the gate.
    pub command: Vec<String>,
    /// The main process's environment. The step's own variables come through the gate.
    pub env: BTreeMap<String, String>,
    pub security: Security,
    pub limits: Limits,
    /// Every filesystem besides the image's root, by path.
    pub mounts: Vec<Mount>,
    pub network: NetworkAccess,
    /// Labels that name the job and step; the engine adds its own owner label for reaping.
    pub labels: BTreeMap<String, String>,
}

/// Who the sandbox's processes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// Privilege: capabilities, the syscall filter, the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Security {
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    /// The seccomp filter, as the OCI JSON profile.
    pub seccomp: String,
    pub read_only_root: bool,
    /// Whether an init process reaps orphans as PID 1 (the gate runs under it).
    pub init: bool,
    /// Never: a privileged sandbox is not something a profile can ask for.
    pub privileged: bool,
}

/// Resources, each enforced by the engine and read back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Memory, hard; no swap beyond it.
    pub memory_bytes: u64,
    /// CPU time, in billionths of a CPU.
    pub nano_cpus: i64,
    /// Processes and threads, as the engine counts them (see `policy::engine_pids_limit`).
    pub pids: i64,
    pub nofile: i64,
    /// Core dumps: always 0.
    pub core_bytes: u64,
    /// `/dev/shm`.
    pub shm_bytes: u64,
}

/// A filesystem mounted into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mount {
    /// One of the job's scratch volumes ([`VolumePlan`]), writable.
    Volume { target: String, volume: String },
    /// A host path, read-only: a `bind` workspace, the operator's CA bundle.
    Bind { target: String, source: String },
    /// A size-capped memory filesystem of the sandbox's own, owned by its user.
    Tmpfs { target: String, tmpfs: Tmpfs },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Volume { target, .. }
            | Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// A memory filesystem's options: `nosuid,nodev`, at most `size_bytes`, owned by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tmpfs {
    pub size_bytes: u64,
    pub uid: u32,
    pub gid: u32,
    /// Octal, as `chmod` takes it (`1777` for `/tmp`).
    pub mode: &'static str,
}

/// What the sandbox can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetworkAccess {
    /// Loopback only.
    None,
    /// The engine's default network, and through it wherever the host routes (a profile
    /// that allows egress).
    Default,
    /// Only the job's internal network ([`NetworkPlan`]), with `dns` as its only resolvers:
    /// a `prepare`, whose one way out is its egress proxy.
    Internal { network: String, dns: Vec<String> },
}

/// Per-job storage that outlives one step's sandbox: the workspace and `/out`, shared by
/// the steps in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumePlan {
    pub name: String,
    /// Where the steps mount it.
    pub target: String,
    pub tmpfs: Tmpfs,
    pub labels: BTreeMap<String, String>,
}

/// A job's private network for its `prepare`: internal (no route out), no address on the
/// host; only the prepare and its egress proxy are on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPlan {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A job's `prepare`: its network and its sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreparePlan {
    pub network: NetworkPlan,
    pub sandbox: SandboxPlan,
}

/// Everything a job has the engine make, in one value: the attack surface, reviewed as one
/// snapshot (`policy::tests`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobPlan {
    pub scratch: Vec<VolumePlan>,
    pub prepare: Option<PreparePlan>,
    pub steps: Vec<SandboxPlan>,
}
