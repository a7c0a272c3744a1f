//! Isolation engines behind one trait.
//!
//! A [`Backend`] makes [`Sandbox`]es: one fresh, locked-down container per step, exactly as a
//! [`plan::SandboxPlan`] says (`policy` makes the plans from a job; an engine never sees the
//! job). The runner drives a sandbox through the same
//! life cycle whatever the engine:
//!
//! ```text
//! create ─► start (attached, command held) ─► load workspace ─► release ─► output … done
//!        ─► artifacts (sent by the gate, or frozen and downloaded) ─► finish (exit code,
//!        OOM flag) ─► destroy
//! ```
//!
//! `docker` is the implementation today; a Kubernetes backend would be a second one.

pub mod archive;
pub mod docker;
pub mod egress;
#[cfg(test)]
pub(crate) mod fake;
pub mod plan;
pub(crate) mod policy;
mod readback;
pub(crate) mod sidecar;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::event;
use crate::spec::Workspace;
use plan::{NetworkPlan, SandboxPlan, VolumePlan};

pub use archive::TarStats;
pub use policy::{GateCaps, GateMode};

/// Labels cordon puts on everything it creates, so leftovers can be found and reaped.
pub mod labels {
    /// Present on every container and volume cordon creates.
    pub const MANAGED: &str = "org.cordon.managed";
    pub const JOB: &str = "org.cordon.job";
    pub const STEP: &str = "org.cordon.step";
    /// `hostname:pid` of the cordon process that owns it.
    pub const OWNER: &str = "org.cordon.owner";
    /// The service controller running the job (`controller_id`).
    pub const CONTROLLER: &str = "org.cordon.controller";
    /// The epoch of the controller's claim on the job: a takeover bumps it.
    pub const EPOCH: &str = "org.cordon.epoch";
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot reach the Docker engine at {endpoint}: is dockerd running, and is DOCKER_HOST (or the socket /var/run/docker.sock) right and accessible to this user?"
    )]
    EngineUnreachable {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the engine does not enforce {what} on this host, so the job is refused: {detail}")]
    LimitNotEnforced { what: String, detail: String },
    #[error("the job asks for {what}, but the engine has only {available}")]
    ImpossibleLimit { what: String, available: String },
    #[error(
        "image `{reference}` is not present in the engine and cordon never pulls: build or load it first (`docker build -t {reference} …` or `docker load`)"
    )]
    ImageMissing { reference: String },
    #[error("{action} failed")]
    Engine {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{action} failed")]
    Archive {
        action: String,
        #[source]
        source: archive::ArchiveError,
    },
    #[error("building image `{reference}` failed")]
    ImageBuild {
        reference: String,
        #[source]
        source: crate::image::ImageError,
    },
    #[error("profile `{profile}` runs under the OCI runtime `{runtime}`, but {problem}: {fix}")]
    RuntimeUnusable {
        profile: String,
        runtime: String,
        problem: String,
        fix: String,
    },
    #[error("the sandbox did not behave as expected: {0}")]
    Protocol(String),
}

impl SandboxError {
    pub(crate) fn engine(
        action: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> SandboxError {
        let action = action.into();
        move |source| SandboxError::Engine { action, source }
    }

    /// Whether this error is the user's input (exit 2), not cordon's or the engine's fault.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            SandboxError::ImageMissing { .. }
                | SandboxError::ImpossibleLimit { .. }
                | SandboxError::RuntimeUnusable { .. }
        )
    }
}

/// What the engine can do, read once per backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineInfo {
    pub endpoint: String,
    pub server_version: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub cgroup_version: String,
    /// Limits the engine says it cannot enforce; a job is refused while any is listed.
    pub missing_enforcement: Vec<String>,
    /// The OCI runtimes registered with the engine, each with the arguments it is run with
    /// (`runsc` with `--oci-seccomp`, say).
    pub runtimes: std::collections::BTreeMap<String, Vec<String>>,
    /// The runtime a container gets when its settings name none.
    pub default_runtime: String,
}

/// Per-job scratch storage that outlives a single step's sandbox (volumes, in Docker).
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    /// (volume name, mount path in the sandbox)
    pub volumes: Vec<(String, String)>,
}

/// A job's private network for `prepare`: no route anywhere but to its egress proxy (a
/// sidecar container on the same network), no host address, no name service.
#[derive(Debug, Clone)]
pub struct Egress {
    pub network: String,
    /// The egress proxy's container.
    pub proxy_container: String,
    /// Where the `prepare` container reaches the proxy.
    pub proxy: std::net::SocketAddr,
}

/// What a sandbox runs, given at [`Sandbox::release`]: nothing of it is in the container's
/// settings, so a sandbox can be made before its job is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCommand {
    /// Variables set for the command (names are valid shell identifiers; see `spec`).
    pub env: std::collections::BTreeMap<String, String>,
    /// A POSIX shell script.
    pub run: String,
}

/// One piece of what a running sandbox reports.
#[derive(Debug)]
pub enum SandboxOutput {
    Chunk(event::Stream, Bytes),
    /// The step's command has exited and its leftover processes were killed; the sandbox
    /// is still up (so its scratch can be read) until `finish`.
    CommandDone,
    /// After `CommandDone`: what the gate itself writes. With [`GateMode::Send`], stdout is a
    /// tar of the artifacts (relative to `/`) and stderr is `tar`'s complaints.
    Trailer(event::Stream, Bytes),
}

pub type OutputStream = Pin<Box<dyn Stream<Item = Result<SandboxOutput, SandboxError>> + Send>>;
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, SandboxError>> + Send>>;

/// How a sandbox's command ended, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i64,
    pub oom_killed: bool,
}

pub type ProgressFn<'a> = &'a (dyn Fn(String) + Send + Sync);

/// An isolation engine: it makes what a plan says, runs it, reads it back and removes it.
/// What else cordon needs of the engine is in the supertraits, one concern each: [`Images`],
/// [`Reaper`], [`EgressNetworks`]. A second engine (Kubernetes, say) implements all four;
/// nothing above `sandbox` names an engine.
#[async_trait]
pub trait Backend: Images + Reaper + EgressNetworks + Send + Sync {
    /// Checks the engine is reachable and reads what it can enforce.
    async fn engine(&self) -> Result<EngineInfo, SandboxError>;
    /// Creates a job's scratch storage. On error, none of it is left.
    async fn create_scratch(&self, volumes: &[VolumePlan]) -> Result<Scratch, SandboxError>;
    /// Removes the job's scratch storage. Idempotent.
    async fn remove_scratch(&self, scratch: &Scratch) -> Result<(), SandboxError>;
    /// Creates the sandbox `plan` describes, refusing it (and leaving nothing) unless the
    /// engine recorded every setting as asked.
    async fn create(&self, plan: &SandboxPlan) -> Result<Box<dyn Sandbox>, SandboxError>;
    /// Bytes the sandbox `id` has written to its root filesystem so far (its layer), as the
    /// engine measures it. Costly on some storage drivers (fuse-overlayfs walks the image).
    async fn written(&self, id: &str) -> Result<u64, SandboxError>;
    /// Whether each sandbox's root filesystem starts with caches of its own, cold (the
    /// engine's storage driver shares none between containers: fuse-overlayfs, vfs), so
    /// reading an image's library trees ahead of a job ([`Sandbox::prewarm`]) saves it time.
    async fn cold_caches(&self) -> bool;
}

/// The engine's images: finding them (never pulling), building cordon's own, the cache of
/// dependency environments.
#[async_trait]
pub trait Images: Send + Sync {
    /// The local image id for `reference`, or `None`. Never pulls.
    async fn local_image(&self, reference: &str) -> Result<Option<String>, SandboxError>;
    /// Builds one of cordon's own images (see `images/`), reporting progress.
    async fn build_image(
        &self,
        reference: &str,
        progress: ProgressFn<'_>,
    ) -> Result<String, SandboxError>;
    /// The trees the image `image_id` names for prewarming (its `org.cordon.warm` label);
    /// none if it names none.
    async fn warm_paths(&self, image_id: &str) -> Result<Vec<String>, SandboxError>;
    /// Evicts least-recently-used environment images until they total at most `cap` bytes.
    async fn evict_environments(&self, cap: u64) -> Result<usize, SandboxError>;
}

/// Finding and removing what cordon processes left behind.
#[async_trait]
pub trait Reaper: Send + Sync {
    /// Removes containers and scratch left behind by cordon processes that no longer exist.
    async fn reap(&self) -> Result<usize, SandboxError>;
    /// Removes every container, volume and network of the job `job_id`, whoever made them
    /// (a job that was running when its service died). Returns how many it removed.
    async fn remove_job(&self, job_id: &str) -> Result<usize, SandboxError>;
    /// Removes every cordon container and volume whose name starts with `prefix`, whoever
    /// made it (a warm pool's, after its owner crashed on another host or pid).
    async fn remove_named(&self, prefix: &str) -> Result<usize, SandboxError>;
}

/// A `prepare`'s private network and the egress proxy that is its only way out.
#[async_trait]
pub trait EgressNetworks: Send + Sync {
    /// Creates a job's internal network for `prepare` and starts its egress proxy there,
    /// configured by `proxy`; the receiver yields each destination the proxy refuses, as it
    /// happens. On error, nothing of it is left.
    async fn create_egress(
        &self,
        network: &NetworkPlan,
        proxy: &egress::ProxyConfig,
    ) -> Result<(Egress, tokio::sync::mpsc::Receiver<egress::Refusal>), SandboxError>;
    /// Removes the proxy and the network. Idempotent.
    async fn remove_egress(&self, egress: &Egress) -> Result<(), SandboxError>;
}

/// One step's sandbox.
#[async_trait]
pub trait Sandbox: Send {
    fn id(&self) -> &str;
    /// The sandbox as the engine recorded it once created (limits, user, capabilities,
    /// seccomp, network, runtime, mounts).
    fn applied(&self) -> &crate::event::AppliedSandbox;
    /// Attaches to its output (so not a byte is missed), starts it, and waits for its gate to
    /// say what it can do; the step's command is held until [`Sandbox::release`].
    async fn start(&mut self) -> Result<(), SandboxError>;
    /// What the started sandbox's gate can do.
    fn caps(&self) -> GateCaps;
    /// Whether a started sandbox is still waiting for its command, silent (a warm one that
    /// said anything, or ended, is broken). Does not wait.
    fn is_waiting(&mut self) -> bool;
    /// Has the gate read every file under `paths` (absolute) once, so the job's first reads
    /// find warm caches (see [`Backend::cold_caches`]). Only for a started sandbox that has
    /// been given nothing yet (the warm pool's); gives up after `within`, leaving the sandbox
    /// unusable.
    async fn prewarm(
        &mut self,
        paths: &[String],
        within: std::time::Duration,
    ) -> Result<(), SandboxError>;
    /// Streams a host directory into the running sandbox's workspace: through the gate when
    /// it can take it, else through the engine.
    async fn load(&mut self, workspace: &Workspace) -> Result<TarStats, SandboxError>;
    /// Writes small files (path relative to `dir`, contents) into a sandbox with a writable
    /// root filesystem, before it starts.
    async fn upload_files(
        &mut self,
        dir: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), SandboxError>;
    /// Saves the (stopped) sandbox's root filesystem as the image `reference`.
    async fn commit(
        &mut self,
        reference: &str,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<String, SandboxError>;
    /// Sends the command and lets it run, returning its output. In [`GateMode::Hold`], the
    /// sandbox stays up after the command exits (reporting [`SandboxOutput::CommandDone`])
    /// until [`Sandbox::finish`]; in [`GateMode::Go`], it ends as soon as the command does; in
    /// [`GateMode::Send`] (taken as `Hold` unless [`Sandbox::caps`] has `send`), it reports
    /// `CommandDone`, sends the existing `artifacts` as a [`SandboxOutput::Trailer`], and ends.
    async fn release(
        &mut self,
        command: &StepCommand,
        mode: GateMode,
        artifacts: &[String],
    ) -> Result<OutputStream, SandboxError>;
    /// Stops every process in the sandbox in place (the cgroup freezer), so nothing can
    /// change its files while they are read.
    async fn freeze(&mut self) -> Result<(), SandboxError>;
    /// A tar stream of `path` in the sandbox's scratch.
    fn download(&self, path: &str) -> ByteStream;
    /// Lets a held sandbox end and returns how its command ended.
    async fn finish(&mut self) -> Result<ExitStatus, SandboxError>;
    /// Kills everything in the sandbox now.
    async fn kill(&mut self) -> Result<(), SandboxError>;
    /// Removes the sandbox. Idempotent; called on every path.
    async fn destroy(&mut self) -> Result<(), SandboxError>;
}
