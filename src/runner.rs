//! One job, start to finish: resolve → create → load → run → collect → destroy.
//!
//! [`Runner::start`] returns a [`JobHandle`]: a stream of [`JobEvent`]s ending with
//! [`JobEvent::Finished`], and a way to cancel. Every container and volume the job created is
//! removed on every path — success, failure, timeout, cancel, panic — before the job's result
//! is reported.
//!
//! Steps run one after another, each in a fresh container. They share the workspace and `/out`
//! through the job's scratch volumes: step N+1's container is created (holding the volumes)
//! before step N's frozen container is let go, so the data survives the hand-over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::envcache;
/// Kept here for the library's users that name it so; it lives in [`crate::error`].
use crate::error::error_chain;
use crate::event::{JobEvent, Phase};
use crate::pool::{Lease, WarmPool};
use crate::report::{
    EnvironmentResult, JobResult, Outcome, RefusedArtifact, StepResult, TestSummary, junit,
};
use crate::sandbox::archive::{self, ExtractLimits};
use crate::sandbox::egress::{ProxyConfig, Refusal, Upstream};
use crate::sandbox::policy;
use crate::sandbox::{
    Backend, Egress, EngineInfo, ExitStatus, GateMode, OutputStream, Sandbox, SandboxError,
    SandboxOutput, Scratch,
};
use crate::spec::{Job, Prepare, WorkspaceMode};

/// What the runner needs besides a job.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// How many events may wait for a slow consumer before the job itself waits.
    pub event_buffer: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { event_buffer: 64 }
    }
}

/// The engine-dependent facts about a job, checked before anything is created.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub engine: EngineInfo,
    /// The image's id, or `None` when it must be built first (it is one of cordon's own).
    pub image_id: Option<String>,
}

#[derive(Clone)]
pub struct Runner {
    backend: Arc<dyn Backend>,
    config: RunnerConfig,
    pool: Option<WarmPool>,
    /// What the engine said and when: a long-lived runner asks again only after
    /// [`ENGINE_INFO_TTL`], not before every job of a refine loop.
    engine: Arc<std::sync::Mutex<Option<(Instant, EngineInfo)>>>,
}

/// How long the engine's facts (limits it enforces, CPUs, memory) are taken as still true.
const ENGINE_INFO_TTL: Duration = Duration::from_secs(30);

/// A running job: its events, its cancel switch, its result.
pub struct JobHandle {
    pub job_id: String,
    events: mpsc::Receiver<JobEvent>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<JobResult>,
}

impl JobHandle {
    /// The next event; `None` after [`JobEvent::Finished`].
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        self.events.recv().await
    }

    /// Asks the job to stop; its sandbox is removed and it finishes as `cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this job, for handing to a signal handler.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the result, discarding events not yet read.
    pub async fn wait(mut self) -> JobResult {
        while self.events.recv().await.is_some() {}
        match self.task.await {
            Ok(r) => r,
            Err(e) => panic_result(&self.job_id, format!("the job task failed: {e}")),
        }
    }
}

fn panic_result(job_id: &str, error: String) -> JobResult {
    JobResult {
        job_id: job_id.to_string(),
        outcome: Outcome::SandboxError,
        exit_code: None,
        duration_ms: 0,
        error: Some(error),
        environment: None,
        warm: false,
        steps: vec![],
        tests: None,
        artifacts: vec![],
        artifacts_refused: vec![],
        output_bytes: 0,
        output_truncated: false,
        image: String::new(),
        profile: String::new(),
        phases_ms: BTreeMap::new(),
    }
}

impl Runner {
    pub fn new(backend: Arc<dyn Backend>, config: RunnerConfig) -> Runner {
        Runner {
            backend,
            config,
            pool: None,
            engine: Default::default(),
        }
    }

    /// Jobs take their first step's sandbox from `pool` when one is ready.
    pub fn with_pool(mut self, pool: WarmPool) -> Runner {
        self.pool = Some(pool);
        self
    }

    /// This runner with a warm pool of `per_key` ready sandboxes per job shape (none for 0),
    /// so the next job of a refine loop skips container creation.
    pub fn with_warm(self, per_key: usize) -> Runner {
        if per_key == 0 {
            return self;
        }
        let pool = WarmPool::new(
            self.backend.clone(),
            crate::pool::PoolConfig {
                per_key,
                ..crate::pool::PoolConfig::default()
            },
        );
        self.with_pool(pool)
    }

    pub fn pool(&self) -> Option<&WarmPool> {
        self.pool.as_ref()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Everything the engine would be asked to make for `job` on the image `image_id`
    /// (its scratch volumes, its `prepare`'s network and sandbox, each step's sandbox): the
    /// job's whole attack surface, in no engine's terms.
    pub fn plan(&self, job: &Job, image_id: &str) -> crate::sandbox::plan::JobPlan {
        policy::job_plan(job, image_id)
    }

    /// Checks what only the engine can tell: it enforces every limit, it has the CPUs and
    /// memory asked for, and the image is there or is one cordon can build. Creates nothing.
    pub async fn preflight(&self, job: &Job) -> Result<Preflight, SandboxError> {
        let engine = self.engine_info().await?;
        if !engine.missing_enforcement.is_empty() {
            return Err(SandboxError::LimitNotEnforced {
                what: engine.missing_enforcement.join(", "),
                detail: format!(
                    "the engine at {} reports it cannot enforce them (check the kernel's cgroup support)",
                    engine.endpoint
                ),
            });
        }
        if engine.cpus > 0 && job.limits.cpus > engine.cpus as f64 {
            return Err(SandboxError::ImpossibleLimit {
                what: format!("limits.cpus = {}", job.limits.cpus),
                available: format!("{} CPUs", engine.cpus),
            });
        }
        if engine.memory_bytes > 0 && job.limits.memory.bytes() > engine.memory_bytes {
            return Err(SandboxError::ImpossibleLimit {
                what: format!("limits.memory = {}", job.limits.memory),
                available: format!("{} of memory", crate::spec::Size(engine.memory_bytes)),
            });
        }
        check_runtime(job, &engine)?;
        let image_id = self.backend.local_image(&job.image).await?;
        if image_id.is_none() && crate::image::recipe_for_reference(&job.image).is_none() {
            return Err(SandboxError::ImageMissing {
                reference: job.image.clone(),
            });
        }
        Ok(Preflight { engine, image_id })
    }

    async fn engine_info(&self) -> Result<EngineInfo, SandboxError> {
        let cached = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < ENGINE_INFO_TTL)
            .map(|(_, info)| info.clone());
        if let Some(info) = cached {
            return Ok(info);
        }
        let info = self.backend.engine().await?;
        *self.engine.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), info.clone()));
        Ok(info)
    }

    /// Starts a job whose preflight passed. Artifacts go under `out_dir`.
    pub fn start(&self, job: Job, preflight: Preflight, out_dir: PathBuf) -> JobHandle {
        let (tx, rx) = mpsc::channel(self.config.event_buffer);
        let cancel = CancellationToken::new();
        let job_id = job.id.clone();
        let span = info_span!("job", id = %job.id);
        let backend = self.backend.clone();
        let pool = self.pool.clone();
        let token = cancel.clone();
        let task = tokio::spawn(
            async move {
                let mut ctx = Ctx {
                    backend,
                    pool,
                    lease: None,
                    events: tx,
                    sandboxes: Vec::new(),
                    scratch: None,
                    running: None,
                    egress: None,
                    result: new_result(&job),
                    started: Instant::now(),
                    out_dir,
                };
                let outcome = {
                    let run = std::panic::AssertUnwindSafe(run_job(&mut ctx, &job, preflight, &token)).catch_unwind();
                    tokio::select! {
                        r = run => match r {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some((Outcome::SandboxError, Some(error_chain(&e)))),
                            Err(panic) => Some((Outcome::SandboxError, Some(format!("cordon panicked: {}", panic_message(&panic))))),
                        },
                        _ = token.cancelled() => Some((Outcome::Cancelled, None)),
                    }
                };
                // A cancel wins over whatever the job's future was finishing.
                let outcome = if token.is_cancelled() { Some((Outcome::Cancelled, None)) } else { outcome };
                if let Some((outcome, error)) = outcome {
                    ctx.result.outcome = outcome;
                    ctx.result.error = error;
                    if outcome == Outcome::Cancelled {
                        info!("cancelled; removing the sandbox");
                    }
                }
                ctx.destroy_all().await;
                ctx.finish_result(&job);
                let result = ctx.result.clone();
                ctx.emit(JobEvent::Finished {
                    result: Box::new(result.clone()),
                })
                .await;
                result
            }
            .instrument(span),
        );
        JobHandle {
            job_id,
            events: rx,
            cancel,
            task,
        }
    }
}

/// How gVisor is registered with the Docker engine for cordon: the ptrace platform (no KVM
/// needed), no network (Debian's runsc cannot start a sandbox with one in a VM like cordon's
/// CI; steps under runsc have `network: none` anyway, see `spec::validate`), and the profile's
/// seccomp filter applied inside the sandbox too (without `--oci-seccomp` runsc records the
/// filter and ignores it).
pub(crate) const RUNSC_DAEMON_JSON: &str = r#"{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--platform=ptrace","--network=none","--oci-seccomp"]}}}"#;

/// What the operator does to make `runsc` usable: the error text of a preflight that finds it
/// missing or registered without `--oci-seccomp`.
pub(crate) fn runsc_fix() -> String {
    format!(
        "install gVisor (Debian: `apt-get install runsc`), register it in the engine's /etc/docker/daemon.json, merged with what is there: {RUNSC_DAEMON_JSON}, then reload the engine with `kill -HUP $(pidof dockerd)`; `docker info --format '{{{{json .Runtimes}}}}'` then lists it"
    )
}

/// Whether runtime arguments turn on runsc's `--oci-seccomp` (however it is spelled).
fn applies_oci_seccomp(args: &[String]) -> bool {
    args.iter().any(|a| {
        matches!(
            a.trim_start_matches('-'),
            "oci-seccomp" | "oci-seccomp=true" | "oci_seccomp" | "oci_seccomp=true"
        )
    })
}

/// The job's profile names a runtime the engine has (and, for runsc, runs so that the
/// profile's seccomp filter applies inside the sandbox); otherwise invalid input naming the
/// fix.
fn check_runtime(job: &Job, engine: &EngineInfo) -> Result<(), SandboxError> {
    let Some(runtime) = job.profile.runtime.as_deref() else {
        return Ok(());
    };
    let unusable = |problem: String| SandboxError::RuntimeUnusable {
        profile: job.profile.name.clone(),
        runtime: runtime.to_string(),
        problem,
        fix: if runtime == crate::spec::profile::RUNSC {
            runsc_fix()
        } else {
            format!("register `{runtime}` with the engine, or leave the profile's `runtime` unset")
        },
    };
    let Some(args) = engine.runtimes.get(runtime) else {
        let have: Vec<&str> = engine.runtimes.keys().map(String::as_str).collect();
        return Err(unusable(format!(
            "the engine at {} does not have it (it has {})",
            engine.endpoint,
            if have.is_empty() {
                "none it names".to_string()
            } else {
                have.join(", ")
            }
        )));
    };
    if runtime == crate::spec::profile::RUNSC && !applies_oci_seccomp(args) {
        return Err(unusable(format!(
            "the engine at {} runs it without `--oci-seccomp` (its arguments: {}), so the profile's seccomp filter would be recorded and not applied inside the sandbox",
            engine.endpoint,
            if args.is_empty() {
                "none".to_string()
            } else {
                args.join(" ")
            }
        )));
    }
    Ok(())
}

fn new_result(job: &Job) -> JobResult {
    JobResult {
        job_id: job.id.clone(),
        outcome: Outcome::Passed,
        exit_code: None,
        duration_ms: 0,
        error: None,
        environment: None,
        warm: false,
        steps: Vec::new(),
        tests: None,
        artifacts: Vec::new(),
        artifacts_refused: Vec::new(),
        output_bytes: 0,
        output_truncated: false,
        image: job.image.clone(),
        profile: job.profile.name.clone(),
        phases_ms: BTreeMap::new(),
    }
}

/// The job's state, owned outside the job's future so cleanup survives its cancellation.
struct Ctx {
    backend: Arc<dyn Backend>,
    pool: Option<WarmPool>,
    /// The warm pool's claim for the sandbox this job took, given back when it ends.
    lease: Option<Lease>,
    events: mpsc::Sender<JobEvent>,
    /// Every sandbox created and not yet destroyed, by step index.
    sandboxes: Vec<(usize, Box<dyn Sandbox>)>,
    scratch: Option<Scratch>,
    /// The step running now: (name, started, output bytes so far).
    running: Option<(String, Instant, u64)>,
    /// The `prepare` network and its proxy, while they exist.
    egress: Option<Egress>,
    result: JobResult,
    started: Instant,
    out_dir: PathBuf,
}

impl Ctx {
    /// Sends an event; the returned future does not borrow the context.
    fn emit(&self, ev: JobEvent) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.events.clone();
        // A consumer that went away does not stop the job (or its cleanup).
        async move {
            let _ = tx.send(ev).await;
        }
    }

    async fn phase(&mut self, phase: Phase, since: Instant) {
        let ms = since.elapsed().as_millis() as u64;
        *self
            .result
            .phases_ms
            .entry(phase.as_str().to_string())
            .or_default() += ms;
        self.emit(JobEvent::Phase {
            phase,
            duration_ms: ms,
        })
        .await;
    }

    fn sandbox(&mut self, step: usize) -> Result<&mut Box<dyn Sandbox>, SandboxError> {
        self.sandboxes
            .iter_mut()
            .find(|(i, _)| *i == step)
            .map(|(_, s)| s)
            .ok_or_else(|| SandboxError::Protocol(format!("no sandbox for step {step}")))
    }

    async fn destroy(&mut self, step: usize) -> Result<(), SandboxError> {
        let pos = self.sandboxes.iter().position(|(i, _)| *i == step);
        if let Some(pos) = pos {
            let (_, mut s) = self.sandboxes.remove(pos);
            let t = Instant::now();
            let r = s.destroy().await;
            self.phase(Phase::Destroy, t).await;
            r?;
        }
        Ok(())
    }

    /// Removes whatever is left. Runs on every path; errors are reported, not raised.
    async fn destroy_all(&mut self) {
        let t = Instant::now();
        for (_, mut s) in std::mem::take(&mut self.sandboxes) {
            if let Err(e) = s.destroy().await {
                warn!(error = %error_chain(&e), "could not remove a sandbox; `cordon` removes it at its next start");
                self.result
                    .error
                    .get_or_insert_with(|| format!("cleanup: {}", error_chain(&e)));
            }
        }
        if let Some(egress) = self.egress.take()
            && let Err(e) = self.backend.remove_egress(&egress).await
        {
            warn!(error = %error_chain(&e), "could not remove the job's egress network");
        }
        if let Some(scratch) = self.scratch.take()
            && let Err(e) = self.backend.remove_scratch(&scratch).await
        {
            warn!(error = %error_chain(&e), "could not remove the job's scratch volumes");
        }
        if t.elapsed() > Duration::from_millis(1) {
            self.phase(Phase::Destroy, t).await;
        }
        // Its sandboxes are gone: the pool may make the replacement now.
        self.lease = None;
    }

    /// Reports a step's result and adds it to the job's.
    async fn record_step(&mut self, result: StepResult) {
        self.emit(JobEvent::StepFinished {
            result: result.clone(),
        })
        .await;
        self.result.steps.push(result);
    }

    fn finish_result(&mut self, job: &Job) {
        let r = &mut self.result;
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        // A step that was running when the job stopped (cancel, cordon's own error).
        if let Some((name, started, bytes)) = self.running.take()
            && !r.steps.iter().any(|s| s.name == name)
        {
            let outcome = if r.outcome == Outcome::Cancelled {
                Outcome::Cancelled
            } else {
                Outcome::SandboxError
            };
            r.steps.push(forced_result(&name, outcome, started, bytes));
        }
        // Steps that never ran.
        for s in job.steps.iter().skip(r.steps.len()) {
            r.steps.push(StepResult {
                name: s.name.clone(),
                outcome: Outcome::Skipped,
                exit_code: None,
                duration_ms: 0,
                output_bytes: 0,
            });
        }
        if r.outcome == Outcome::Passed {
            // The job's outcome is its first step that did not pass.
            if let Some(bad) = r.steps.iter().find(|s| s.outcome != Outcome::Passed) {
                r.outcome = bad.outcome;
            }
        }
        r.exit_code = r.steps.iter().rev().find_map(|s| s.exit_code);
    }
}

/// How a step's command ended, as far as cordon's loop saw it.
enum Ending {
    /// The gate reported the command done; the container is held (frozen) for collection.
    Done,
    /// The container's output ended: it exited (or was killed) on its own.
    Exited,
    TimedOut,
    OutputCap,
}

async fn run_job(
    ctx: &mut Ctx,
    job: &Job,
    preflight: Preflight,
    cancel: &CancellationToken,
) -> Result<(), SandboxError> {
    ctx.emit(JobEvent::Started {
        job_id: job.id.clone(),
        image: job.image.clone(),
        profile: job.profile.name.clone(),
        steps: job.steps.iter().map(|s| s.name.clone()).collect(),
    })
    .await;
    let image_id = resolve(ctx, job, preflight.image_id).await?;
    let image_id = match &job.prepare {
        None => image_id,
        Some(prep) => match prepare_environment(ctx, job, prep, &image_id, cancel).await? {
            Some(env_image) => env_image,
            // The install did not succeed (the result says why) or the job was cancelled.
            None => return Ok(()),
        },
    };
    first_sandbox(ctx, job, &image_id).await?;
    run_steps(ctx, job, &image_id, cancel).await
}

/// The job's image id: the one preflight found, or cordon's own image built now.
async fn resolve(
    ctx: &mut Ctx,
    job: &Job,
    image_id: Option<String>,
) -> Result<String, SandboxError> {
    let t = Instant::now();
    let image_id = match image_id {
        Some(id) => id,
        None => {
            ctx.emit(JobEvent::Progress {
                message: format!(
                    "image {} is not built yet; building it now (a few minutes, once)",
                    job.image
                ),
            })
            .await;
            let events = ctx.events.clone();
            let progress = move |line: String| {
                // Build output is progress, not job output; drop it if the consumer lags.
                let _ = events.try_send(JobEvent::Progress { message: line });
            };
            ctx.backend.build_image(&job.image, &progress).await?
        }
    };
    ctx.phase(Phase::Resolve, t).await;
    Ok(image_id)
}

/// The first step's sandbox: a warm one if the pool has it (no await between taking it and
/// recording it, so a cancel cannot lose it), else the job's scratch now and the sandbox when
/// its step comes.
async fn first_sandbox(ctx: &mut Ctx, job: &Job, image_id: &str) -> Result<(), SandboxError> {
    let t = Instant::now();
    match ctx.pool.as_ref().and_then(|p| p.take(job, image_id)) {
        Some(warm) => {
            debug!(container = warm.sandbox.id(), "sandbox from the warm pool");
            ctx.scratch = Some(warm.scratch);
            ctx.sandboxes.push((0, warm.sandbox));
            ctx.lease = Some(warm.lease);
            ctx.result.warm = true;
        }
        None => {
            let volumes = policy::scratch_plan(job);
            ctx.scratch = Some(ctx.backend.create_scratch(&volumes).await?);
        }
    }
    ctx.phase(Phase::Create, t).await;
    Ok(())
}

/// A finished step's container, frozen and held until the next step's container holds the
/// job's scratch.
struct Held {
    step: usize,
    started: Instant,
    bytes: u64,
    deadline: tokio::time::Instant,
}

/// Runs the steps in order, each in its own sandbox, until one does not pass.
async fn run_steps(
    ctx: &mut Ctx,
    job: &Job,
    image_id: &str,
    cancel: &CancellationToken,
) -> Result<(), SandboxError> {
    // Under runsc the last step is held too, artifacts or not: a sandbox that ends before its
    // gate reports the command's end is then told apart from a command that exited (gVisor's
    // kernel stops as a whole when the job exhausts what it needs, see `finish_exited`).
    let hold_last = !job.artifacts.is_empty() || job.profile.is_runsc();
    let mut output_used: u64 = 0;
    let mut held_prev: Option<Held> = None;

    for (i, step) in job.steps.iter().enumerate() {
        let last = i + 1 == job.steps.len();
        ready_sandbox(ctx, job, i, image_id).await?;
        // Let the previous step's container go now that this one holds the scratch.
        if let Some(prev) = held_prev.take()
            && !hand_over(ctx, job, prev, i).await?
        {
            return Ok(());
        }
        let hold = !last || hold_last;
        let mode = gate_mode(ctx, job, i, last, hold)?;
        let step_started = Instant::now();
        // The step's time starts now: sending it its command counts.
        let deadline = tokio::time::Instant::now() + step.timeout;
        let output = release_step(ctx, job, i, mode, step_started, deadline).await?;
        let Some((ending, step_bytes, output)) =
            stream_step(ctx, job, i, output, deadline, cancel, &mut output_used).await?
        else {
            return Ok(());
        };
        // With `Send`, the artifacts follow on the output; otherwise it goes now (unread, an
        // attached stream would hold up a sandbox still writing while it is stopped).
        let output = (matches!(ending, Ending::Done) && mode == GateMode::Send).then_some(output);
        let ran = Ran {
            step: i,
            started: step_started,
            bytes: step_bytes,
            deadline,
            hold,
        };
        match ending {
            Ending::Done if !last => {
                // Freeze it and keep it: its scratch passes to the next step's container.
                ctx.sandbox(i)?.freeze().await?;
                held_prev = Some(Held {
                    step: i,
                    started: step_started,
                    bytes: step_bytes,
                    deadline,
                });
                ctx.phase(Phase::Run, step_started).await;
                continue;
            }
            Ending::Done => finish_done(ctx, job, &ran, output).await?,
            Ending::Exited => finish_exited(ctx, job, &ran).await?,
            Ending::TimedOut => finish_stopped(ctx, job, &ran, Outcome::TimedOut).await?,
            Ending::OutputCap => {
                finish_stopped(ctx, job, &ran, Outcome::OutputLimitExceeded).await?
            }
        }
        ctx.destroy(i).await?;
        if ctx
            .result
            .steps
            .last()
            .is_some_and(|s| s.outcome != Outcome::Passed)
        {
            break;
        }
    }
    Ok(())
}

/// Makes sure step `i` has a started sandbox (step 0's may have come from the warm pool),
/// with the workspace loaded into the first.
async fn ready_sandbox(
    ctx: &mut Ctx,
    job: &Job,
    i: usize,
    image_id: &str,
) -> Result<(), SandboxError> {
    if ctx.sandbox(i).is_err() {
        let t = Instant::now();
        let scratch = ctx.scratch.clone().unwrap_or_default();
        let plan = policy::step_plan(job, i, image_id, &scratch);
        let sandbox = ctx.backend.create(&plan).await?;
        debug!(step = %job.steps[i].name, container = sandbox.id(), "sandbox created");
        ctx.sandboxes.push((i, sandbox));
        ctx.sandbox(i)?.start().await?;
        ctx.phase(Phase::Create, t).await;
    }
    if i == 0
        && let Some(ws) = job
            .workspace
            .as_ref()
            .filter(|w| w.mode == WorkspaceMode::Copy)
    {
        let t = Instant::now();
        let stats = ctx.sandbox(i)?.load(ws).await?;
        debug!(files = stats.files, bytes = stats.bytes, "workspace loaded");
        ctx.phase(Phase::Load, t).await;
    }
    Ok(())
}

/// Ends the held previous step now that step `next`'s container holds the scratch, and
/// records its result. False when it did not pass (what it left is collected from `next`'s
/// container, which never ran anything): the job stops.
async fn hand_over(
    ctx: &mut Ctx,
    job: &Job,
    prev: Held,
    next: usize,
) -> Result<bool, SandboxError> {
    let name = &job.steps[prev.step].name;
    // Still under the previous step's deadline: a forged completion signal must not let a
    // step run on unbounded.
    let status = with_deadline(prev.deadline, ctx.sandbox(prev.step)?.finish()).await;
    let result = match status {
        Some(status) => step_result(name, status?, prev.started, prev.bytes),
        None => {
            ctx.sandbox(prev.step)?.kill().await?;
            forced_result(name, Outcome::TimedOut, prev.started, prev.bytes)
        }
    };
    ctx.destroy(prev.step).await?;
    ctx.running = None;
    let passed = result.outcome == Outcome::Passed;
    ctx.record_step(result).await;
    if !passed && !job.artifacts.is_empty() {
        collect(ctx, job, next).await;
    }
    Ok(passed)
}

/// How step `i`'s gate runs its command. The last step's artifacts come back over the gate's
/// stdout when it can send them: no freeze, no copy through the engine.
fn gate_mode(
    ctx: &mut Ctx,
    job: &Job,
    i: usize,
    last: bool,
    hold: bool,
) -> Result<GateMode, SandboxError> {
    Ok(if !hold {
        GateMode::Go
    } else if last
        && !job.artifacts.is_empty()
        && ctx.sandbox(i)?.caps().send
        && sendable(&job.artifacts)
    {
        GateMode::Send
    } else {
        GateMode::Hold
    })
}

/// Reports the sandbox as the engine applied it and the step's start, then gives the gate
/// the step's command within its deadline.
async fn release_step(
    ctx: &mut Ctx,
    job: &Job,
    i: usize,
    mode: GateMode,
    started: Instant,
    deadline: tokio::time::Instant,
) -> Result<OutputStream, SandboxError> {
    let step = &job.steps[i];
    let applied = ctx.sandbox(i)?.applied().clone();
    ctx.emit(JobEvent::Sandbox {
        step: step.name.clone(),
        applied,
    })
    .await;
    ctx.emit(JobEvent::StepStarted {
        step: step.name.clone(),
        index: i,
    })
    .await;
    ctx.running = Some((step.name.clone(), started, 0));
    let command = policy::step_command(job, i);
    match with_deadline(
        deadline,
        ctx.sandbox(i)?.release(&command, mode, &job.artifacts),
    )
    .await
    {
        Some(output) => output,
        None => Err(SandboxError::Protocol(format!(
            "the sandbox did not take step `{}`'s command within its timeout",
            step.name
        ))),
    }
}

/// Streams step `i`'s output as events until the command is done, the sandbox ends, the
/// deadline passes or the job's output cap (`used` so far, across steps) is reached. Returns
/// how it ended, the step's bytes and the rest of the output; `None` when the job was
/// cancelled.
async fn stream_step(
    ctx: &mut Ctx,
    job: &Job,
    i: usize,
    mut output: OutputStream,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    used: &mut u64,
) -> Result<Option<(Ending, u64, OutputStream)>, SandboxError> {
    let step = &job.steps[i];
    let mut step_bytes: u64 = 0;
    let ending = loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => break Ending::TimedOut,
            n = output.next() => n,
        };
        let (stream, data) = match next {
            Some(Ok(SandboxOutput::Chunk(stream, data))) => (stream, data),
            Some(Ok(SandboxOutput::CommandDone)) => break Ending::Done,
            // Only ever after `CommandDone`.
            Some(Ok(SandboxOutput::Trailer(..))) => continue,
            Some(Err(e)) => return Err(e),
            None => break Ending::Exited,
        };
        let len = data.len() as u64;
        step_bytes += len;
        if let Some(r) = ctx.running.as_mut() {
            r.2 = step_bytes;
        }
        ctx.result.output_bytes += len;
        let room = job.limits.output.bytes().saturating_sub(*used);
        if len > room {
            if room > 0 {
                ctx.emit(JobEvent::Output {
                    step: step.name.clone(),
                    stream,
                    data: data.slice(..room as usize),
                })
                .await;
            }
            ctx.result.output_truncated = true;
            ctx.emit(JobEvent::OutputTruncated {
                step: step.name.clone(),
                limit_bytes: job.limits.output.bytes(),
            })
            .await;
            break Ending::OutputCap;
        }
        *used += len;
        ctx.emit(JobEvent::Output {
            step: step.name.clone(),
            stream,
            data,
        })
        .await;
    };
    Ok(Some((ending, step_bytes, output)))
}

/// A step whose command has ended or was stopped, with what its result needs.
struct Ran {
    step: usize,
    started: Instant,
    bytes: u64,
    deadline: tokio::time::Instant,
    /// Whether the gate was to hold the sandbox after the command (see [`GateMode`]).
    hold: bool,
}

impl Ran {
    /// The step's result from how the engine says it ended, or timed out if the engine does
    /// not say so by `by` (the sandbox is then killed).
    async fn result(
        &self,
        ctx: &mut Ctx,
        job: &Job,
        by: tokio::time::Instant,
    ) -> Result<StepResult, SandboxError> {
        let name = &job.steps[self.step].name;
        let status = with_deadline(by, ctx.sandbox(self.step)?.finish()).await;
        Ok(match status {
            Some(status) => step_result(name, status?, self.started, self.bytes),
            None => {
                ctx.sandbox(self.step)?.kill().await?;
                forced_result(name, Outcome::TimedOut, self.started, self.bytes)
            }
        })
    }
}

/// The last step's gate reported its command done: collect the artifacts (sent on `output`
/// by the gate, or copied from the frozen sandbox), then the exit status.
async fn finish_done(
    ctx: &mut Ctx,
    job: &Job,
    ran: &Ran,
    output: Option<OutputStream>,
) -> Result<(), SandboxError> {
    ctx.phase(Phase::Run, ran.started).await;
    if let Some(output) = output {
        collect_sent(ctx, job, output, ran.deadline).await;
    } else if !job.artifacts.is_empty() {
        ctx.sandbox(ran.step)?.freeze().await?;
        collect(ctx, job, ran.step).await;
    }
    // The command ended in time; collecting may have run past its deadline.
    let finish_by = ran.deadline.max(tokio::time::Instant::now());
    let result = ran.result(ctx, job, finish_by).await?;
    ctx.record_step(result).await;
    Ok(())
}

/// The sandbox ended on its own, without the gate's completion signal.
async fn finish_exited(ctx: &mut Ctx, job: &Job, ran: &Ran) -> Result<(), SandboxError> {
    ctx.phase(Phase::Run, ran.started).await;
    let name = &job.steps[ran.step].name;
    let result = ran.result(ctx, job, ran.deadline).await?;
    if ran.hold && result.outcome == Outcome::Passed {
        ctx.emit(JobEvent::Warning {
            message: format!("step `{name}` ended without cordon's completion signal; its scratch (and artifacts) are gone"),
        })
        .await;
    } else if ran.hold && job.profile.is_runsc() && result.outcome == Outcome::Failed {
        // The gate did not outlive the command: under gVisor, the sandbox's kernel (the
        // Sentry) stopped. It does when it cannot make the host thread a new process of the
        // job's needs, that is at limits.pids.
        ctx.emit(JobEvent::Warning {
            message: format!(
                "step `{name}`: the gVisor sandbox itself ended (exit {}) before the command did; most likely the job reached limits.pids ({}), at which gVisor's kernel stops instead of failing a fork; its scratch (and artifacts) are gone",
                result.exit_code.unwrap_or_default(),
                job.limits.pids
            ),
        })
        .await;
    }
    ctx.record_step(result).await;
    Ok(())
}

/// cordon stops the step (`outcome`: its deadline or the output cap).
async fn finish_stopped(
    ctx: &mut Ctx,
    job: &Job,
    ran: &Ran,
    outcome: Outcome,
) -> Result<(), SandboxError> {
    ctx.phase(Phase::Run, ran.started).await;
    let name = &job.steps[ran.step].name;
    info!(step = %name, %outcome, "stopping the sandbox");
    // Freeze first: nothing runs on while artifacts are copied, and a fork bomb stops forking
    // at once. Then kill.
    let froze = ctx.sandbox(ran.step)?.freeze().await.is_ok();
    if froze && ran.hold {
        collect(ctx, job, ran.step).await;
    }
    ctx.sandbox(ran.step)?.kill().await?;
    let result = forced_result(name, outcome, ran.started, ran.bytes);
    ctx.record_step(result).await;
    Ok(())
}

/// The sandbox slot of the `prepare` container.
const PREPARE_SLOT: usize = usize::MAX;

/// Finds or builds the job's dependency environment. `Ok(None)` when the install failed (the
/// result already says how) or the job was cancelled.
async fn prepare_environment(
    ctx: &mut Ctx,
    job: &Job,
    prep: &Prepare,
    base_image_id: &str,
    cancel: &CancellationToken,
) -> Result<Option<String>, SandboxError> {
    let key = envcache::key(base_image_id, job, prep);
    let reference = envcache::reference(&key);
    if let Some(id) = ctx.backend.local_image(&reference).await? {
        use_cached(ctx, &key, &reference).await;
        return Ok(Some(id));
    }
    // One build per key, across processes; whoever waited finds the image made.
    let _lock = tokio::select! {
        l = envcache::lock(&key) => l.map_err(|e| SandboxError::Protocol(error_chain(&e)))?,
        _ = cancel.cancelled() => return Ok(None),
    };
    if let Some(id) = ctx.backend.local_image(&reference).await? {
        use_cached(ctx, &key, &reference).await;
        return Ok(Some(id));
    }

    let started = Instant::now();
    ctx.emit(JobEvent::Progress {
        message: format!(
            "building the dependency environment {reference} (prepare: {}); later jobs with the same dependencies reuse it",
            prep.run.lines().next().unwrap_or_default()
        ),
    })
    .await;
    let (output, mut refusals) = start_prepare(ctx, job, prep, base_image_id).await?;
    let deadline = tokio::time::Instant::now() + prep.timeout;
    let mut refused = Vec::new();
    let Some((mut forced, status)) = watch_prepare(
        ctx,
        job,
        prep,
        output,
        &mut refusals,
        &mut refused,
        deadline,
        cancel,
    )
    .await?
    else {
        return Ok(None);
    };
    // The proxy reports a refusal as it answers it: the last ones may trail the exit a little.
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(300), refusals.recv()).await
    {
        report_refusal(ctx, r, &mut refused).await;
    }
    if forced.is_none() && status.is_some_and(|s| s.code == 0 && !s.oom_killed) {
        // Measured once more before anything is committed.
        let id = ctx.sandbox(PREPARE_SLOT)?.id().to_string();
        if ctx.backend.written(&id).await? > prep.disk.bytes() {
            forced = Some(Outcome::DiskLimitExceeded);
        }
    }
    let outcome = match (forced, status) {
        (Some(o), _) => o,
        (None, Some(s)) if s.oom_killed => Outcome::OomKilled,
        (None, Some(s)) if s.code == 0 => Outcome::Passed,
        _ => Outcome::Failed,
    };
    let env = EnvironmentResult {
        key: key.clone(),
        image: reference.clone(),
        cached: false,
        outcome,
        exit_code: status.map(|s| s.code),
        duration_ms: started.elapsed().as_millis() as u64,
        egress_refused: refused.into_iter().map(|r| r.destination).collect(),
    };
    if outcome != Outcome::Passed {
        prepare_failed(ctx, prep, env);
        return Ok(None);
    }
    let id = commit_environment(ctx, job, prep, env, started).await?;
    evict_environments(ctx).await;
    Ok(Some(id))
}

/// Starts the `prepare`: its egress network and proxy, then its container (key files
/// uploaded first), released with the install command. Returns its output and the proxy's
/// refusals.
async fn start_prepare(
    ctx: &mut Ctx,
    job: &Job,
    prep: &Prepare,
    base_image_id: &str,
) -> Result<(OutputStream, mpsc::Receiver<Refusal>), SandboxError> {
    let proxy = ProxyConfig {
        allow: prep.allow.clone(),
        internal: prep.internal.clone(),
        max_connections: 32,
        // The operator's upstream proxy, from cordon's own environment.
        upstream: Upstream::from_env(|k| std::env::var(k).ok())
            .map_err(|e| SandboxError::Protocol(format!("cordon's upstream proxy setting: {e}")))?,
    };
    if job.profile.is_runsc() {
        // gVisor here cannot start a sandbox with a network, and a prepare needs one (to its
        // proxy). It runs no test code: the install, under strict's settings and its egress
        // proxy, in runc; the steps then run under runsc from the image it made.
        ctx.emit(JobEvent::Warning {
            message: format!(
                "prepare runs under runc, not gVisor: profile `{}` runs its steps under runsc, whose sandboxes here cannot have the network the install needs for its proxy; the install gets strict's other settings and reaches only its allowlist",
                job.profile.name
            ),
        })
        .await;
    }
    let plan = policy::prepare_plan(job, base_image_id);
    let (egress, refusals) = ctx.backend.create_egress(&plan.network, &proxy).await?;
    let command = policy::prepare_command(job, egress.proxy);
    ctx.egress = Some(egress);
    let sandbox = ctx.backend.create(&plan.sandbox).await?;
    ctx.emit(JobEvent::Sandbox {
        step: "prepare".into(),
        applied: sandbox.applied().clone(),
    })
    .await;
    ctx.sandboxes.push((PREPARE_SLOT, sandbox));
    if !prep.key_files.is_empty() {
        let dir = job.workspace_path().to_string();
        ctx.sandbox(PREPARE_SLOT)?
            .upload_files(&dir, &prep.key_files)
            .await?;
    }
    ctx.sandbox(PREPARE_SLOT)?.start().await?;
    let output = ctx
        .sandbox(PREPARE_SLOT)?
        .release(&command, GateMode::Go, &[])
        .await?;
    Ok((output, refusals))
}

/// Records an install that did not succeed as the job's outcome, saying why.
fn prepare_failed(ctx: &mut Ctx, prep: &Prepare, env: EnvironmentResult) {
    ctx.result.outcome = env.outcome;
    ctx.result.error = Some(format!(
        "prepare ({}) did not succeed: {}{}{}",
        prep.run.lines().next().unwrap_or_default(),
        env.outcome,
        env.exit_code
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default(),
        if env.egress_refused.is_empty() {
            String::new()
        } else {
            format!("; refused destinations: {}", env.egress_refused.join(", "))
        }
    ));
    ctx.result.environment = Some(env);
}

/// Saves the stopped `prepare` container as the environment image, removes it and its
/// network, and records the environment. Returns the image's id.
async fn commit_environment(
    ctx: &mut Ctx,
    job: &Job,
    prep: &Prepare,
    mut env: EnvironmentResult,
    started: Instant,
) -> Result<String, SandboxError> {
    let labels = envcache::image_labels(&env.key, &job.image, prep);
    let id = ctx
        .sandbox(PREPARE_SLOT)?
        .commit(&env.image, labels)
        .await?;
    ctx.destroy(PREPARE_SLOT).await?;
    if let Some(egress) = ctx.egress.clone() {
        // Forgotten only once gone: if removing it fails, the job's cleanup tries again.
        ctx.backend.remove_egress(&egress).await?;
        ctx.egress = None;
    }
    envcache::touch(&env.key);
    env.duration_ms = started.elapsed().as_millis() as u64;
    ctx.emit(JobEvent::Environment {
        key: env.key.clone(),
        image: env.image.clone(),
        cached: false,
    })
    .await;
    ctx.result.environment = Some(env);
    Ok(id)
}

/// Keeps the environment images within `CORDON_ENV_CACHE_MAX`, if it is set.
async fn evict_environments(ctx: &mut Ctx) {
    if let Some(cap) = envcache::configured_cap() {
        match ctx.backend.evict_environments(cap).await {
            Ok(0) => {}
            Ok(n) => info!(
                removed = n,
                "evicted least recently used environments (CORDON_ENV_CACHE_MAX)"
            ),
            Err(e) => warn!(error = %error_chain(&e), "could not evict environments"),
        }
    }
}

/// How often a running `prepare`'s written bytes are measured against `max.prepare_disk`
/// (off the output's path: on fuse-overlayfs one measurement walks the image, seconds of the
/// engine's CPU). It is measured once more before anything is committed.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(15);

/// Measures what sandbox `id` wrote every [`DISK_CHECK_EVERY`]; resolves once it is over
/// `cap` (never, if the engine cannot say).
async fn disk_over(backend: Arc<dyn Backend>, id: String, cap: u64) {
    loop {
        tokio::time::sleep(DISK_CHECK_EVERY).await;
        match backend.written(&id).await {
            Ok(n) if n > cap => return,
            Ok(_) => {}
            Err(e) => debug!(error = %error_chain(&e), "could not measure what the prepare wrote"),
        }
    }
}

/// Follows a running `prepare` to its end: its output (counted against the job's output
/// limit), its deadline, what it writes to its filesystem (against the operator's cap), and
/// what its egress proxy refuses. Returns the outcome it was stopped with, if any, and how it
/// exited; `None` when the job was cancelled.
#[allow(clippy::too_many_arguments)]
async fn watch_prepare(
    ctx: &mut Ctx,
    job: &Job,
    prep: &Prepare,
    mut output: OutputStream,
    refusals: &mut mpsc::Receiver<Refusal>,
    refused: &mut Vec<Refusal>,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<Option<(Option<Outcome>, Option<ExitStatus>)>, SandboxError> {
    let mut used: u64 = 0;
    let mut forced: Option<Outcome> = None;
    let id = ctx.sandbox(PREPARE_SLOT)?.id().to_string();
    let disk = tokio::spawn(disk_over(ctx.backend.clone(), id, prep.disk.bytes()));
    let _stop_measuring = AbortOnDrop(disk.abort_handle());
    let mut disk = std::pin::pin!(disk);
    let mut refusals_open = true;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => { forced = Some(Outcome::TimedOut); break }
            r = refusals.recv(), if refusals_open => {
                match r {
                    Some(r) => report_refusal(ctx, r, refused).await,
                    None => refusals_open = false,
                }
                continue;
            }
            _ = &mut disk => { forced = Some(Outcome::DiskLimitExceeded); break }
            n = output.next() => n,
        };
        match next {
            Some(Ok(SandboxOutput::Chunk(stream, data))) => {
                used += data.len() as u64;
                if used > job.limits.output.bytes() {
                    forced = Some(Outcome::OutputLimitExceeded);
                    break;
                }
                ctx.emit(JobEvent::Output {
                    step: "prepare".into(),
                    stream,
                    data,
                })
                .await;
            }
            Some(Ok(SandboxOutput::CommandDone | SandboxOutput::Trailer(..))) => {}
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    drop(output);
    let status = match forced {
        Some(_) => {
            ctx.sandbox(PREPARE_SLOT)?.kill().await?;
            None
        }
        None => match with_deadline(deadline, ctx.sandbox(PREPARE_SLOT)?.finish()).await {
            Some(s) => Some(s?),
            None => {
                ctx.sandbox(PREPARE_SLOT)?.kill().await?;
                forced = Some(Outcome::TimedOut);
                None
            }
        },
    };
    Ok(Some((forced, status)))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records a destination the egress proxy refused, and says so as it happens.
async fn report_refusal(ctx: &mut Ctx, r: Refusal, refused: &mut Vec<Refusal>) {
    if refused.iter().any(|x| x.destination == r.destination) {
        return;
    }
    ctx.emit(JobEvent::EgressRefused {
        destination: r.destination.clone(),
        reason: r.reason.clone(),
    })
    .await;
    refused.push(r);
}

async fn use_cached(ctx: &mut Ctx, key: &str, reference: &str) {
    envcache::touch(key);
    ctx.result.environment = Some(EnvironmentResult {
        key: key.to_string(),
        image: reference.to_string(),
        cached: true,
        outcome: Outcome::Passed,
        exit_code: None,
        duration_ms: 0,
        egress_refused: vec![],
    });
    ctx.emit(JobEvent::Environment {
        key: key.to_string(),
        image: reference.to_string(),
        cached: true,
    })
    .await;
}

async fn with_deadline<T>(
    deadline: tokio::time::Instant,
    fut: impl Future<Output = T>,
) -> Option<T> {
    // A little grace past the deadline for the engine to report an exit that already happened.
    tokio::time::timeout_at(deadline + Duration::from_secs(2), fut)
        .await
        .ok()
}

fn step_result(name: &str, status: ExitStatus, started: Instant, bytes: u64) -> StepResult {
    let outcome = if status.oom_killed {
        Outcome::OomKilled
    } else if status.code == 0 {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    StepResult {
        name: name.to_string(),
        outcome,
        exit_code: Some(status.code),
        duration_ms: started.elapsed().as_millis() as u64,
        output_bytes: bytes,
    }
}

fn forced_result(name: &str, outcome: Outcome, started: Instant, bytes: u64) -> StepResult {
    StepResult {
        name: name.to_string(),
        outcome,
        exit_code: None,
        duration_ms: started.elapsed().as_millis() as u64,
        output_bytes: bytes,
    }
}

/// The artifact caps of `job`'s profile, as extraction limits.
fn artifact_limits(job: &Job) -> ExtractLimits {
    let caps = &job.profile.artifacts;
    ExtractLimits {
        max_total_bytes: caps.max_total.bytes(),
        max_file_bytes: caps.max_file.bytes(),
        max_entries: caps.max_entries,
    }
}

/// Whether the gate can send `artifacts` as one archive: paths it can be given, none under
/// another (the engine's API names such entries differently per artifact).
fn sendable(artifacts: &[String]) -> bool {
    let nested = |a: &String, b: &String| a == b || b.starts_with(&format!("{a}/"));
    artifacts.iter().all(|a| policy::sendable_path(a))
        && !artifacts.iter().enumerate().any(|(i, a)| {
            artifacts
                .iter()
                .enumerate()
                .any(|(j, b)| i != j && nested(a, b))
        })
}

/// Copies the declared artifacts out of a sandbox whose processes are stopped (frozen, or
/// never released), extracting them safely under the job's out dir. Problems are reported as
/// events and in the result; they never change the job's outcome.
async fn collect(ctx: &mut Ctx, job: &Job, step: usize) {
    let t = Instant::now();
    let mut budget = artifact_limits(job);
    if !make_out_dir(ctx).await {
        return;
    }
    let mut found = Found::default();
    for path in &job.artifacts {
        let stream = match ctx.sandbox(step) {
            Ok(s) => s.download(path),
            Err(_) => return,
        };
        let extracted =
            archive::extract_artifacts_stream(stream, ctx.out_dir.clone(), budget).await;
        let extracted = match extracted {
            Ok(x) => x,
            Err(e) => {
                let msg = error_chain(&e);
                let reason = if msg.contains("404")
                    || msg.contains("No such container:path")
                    || msg.contains("not found")
                {
                    "not produced by the job".to_string()
                } else {
                    msg
                };
                found.refuse(path.clone(), reason);
                continue;
            }
        };
        // Entry names are relative to the artifact's parent directory in the sandbox.
        let parent = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        budget.max_total_bytes = budget.max_total_bytes.saturating_sub(extracted.bytes);
        budget.max_entries = budget
            .max_entries
            .saturating_sub((extracted.files.len() + extracted.refused.len()) as u64);
        found.add(extracted, &parent);
    }
    found.record(ctx).await;
    ctx.phase(Phase::Collect, t).await;
}

/// Extracts the artifacts the gate sent after the command (see [`GateMode::Send`]): one
/// archive of every declared path that exists, names relative to `/`, read from the
/// sandbox's output until it ends or the caps stop it. Bounded by the step's deadline, or
/// [`SEND_GRACE`] from now if that is later: a job that forged the gate's nonce is still
/// running and writing what is read here, so it gains at most that before it is killed.
async fn collect_sent(
    ctx: &mut Ctx,
    job: &Job,
    output: OutputStream,
    deadline: tokio::time::Instant,
) {
    let t = Instant::now();
    if !make_out_dir(ctx).await {
        return;
    }
    let complaints = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let heard = complaints.clone();
    let tar = Box::pin(output.filter_map(move |item| {
        let kept = match item {
            Ok(SandboxOutput::Trailer(crate::event::Stream::Stdout, data)) => Some(Ok(data)),
            Ok(SandboxOutput::Trailer(crate::event::Stream::Stderr, data)) => {
                let mut h = heard.lock().unwrap_or_else(|p| p.into_inner());
                let room = 4096usize.saturating_sub(h.len());
                h.extend_from_slice(&data[..data.len().min(room)]);
                None
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(kept)
    }));
    let roots = archive::ArtifactRoots::new(&job.artifacts);
    let extracted = tokio::time::timeout_at(
        deadline.max(tokio::time::Instant::now() + SEND_GRACE),
        archive::extract_sent_artifacts_stream(
            tar,
            ctx.out_dir.clone(),
            artifact_limits(job),
            roots,
        ),
    )
    .await;
    let complaints = String::from_utf8_lossy(&complaints.lock().unwrap_or_else(|p| p.into_inner()))
        .trim()
        .to_string();
    let mut found = Found::default();
    let extracted = match extracted {
        Ok(Ok(x)) => Some(x),
        Ok(Err(archive::ArchiveError::Malformed { extracted, source })) => {
            found.refuse(
                "(rest of the artifacts)".into(),
                format!("the sandbox sent a malformed archive: {source}"),
            );
            Some(*extracted)
        }
        Ok(Err(e)) => {
            found.refuse("(artifacts)".into(), error_chain(&e));
            None
        }
        Err(_) => {
            found.refuse(
                "(rest of the artifacts)".into(),
                "the sandbox did not finish sending its artifacts within the step's timeout".into(),
            );
            None
        }
    };
    if let Some(x) = extracted {
        for (path, seen) in job.artifacts.iter().zip(&x.per_root) {
            if *seen == 0 {
                let reason = if complaints.contains(path.trim_start_matches('/')) {
                    format!("could not be read in the sandbox: {complaints}")
                } else {
                    "not produced by the job".to_string()
                };
                found.refuse(path.clone(), reason);
            }
        }
        found.add(x, Path::new("/"));
    }
    found.record(ctx).await;
    ctx.phase(Phase::Collect, t).await;
}

/// How long the gate may take to send artifacts when the command ended near its deadline.
const SEND_GRACE: Duration = Duration::from_secs(5);

async fn make_out_dir(ctx: &mut Ctx) -> bool {
    match std::fs::create_dir_all(&ctx.out_dir) {
        Ok(()) => true,
        Err(e) => {
            ctx.emit(JobEvent::Warning {
                message: format!(
                    "cannot create the artifact directory {}: {e}",
                    ctx.out_dir.display()
                ),
            })
            .await;
            false
        }
    }
}

/// Artifacts extracted and refused, to be recorded in the result and reported as events.
#[derive(Default)]
struct Found {
    files: Vec<PathBuf>,
    refused: Vec<RefusedArtifact>,
}

impl Found {
    fn refuse(&mut self, path: String, reason: String) {
        self.refused.push(RefusedArtifact { path, reason });
    }

    /// Adds an extraction whose entry names are relative to `parent` in the sandbox.
    fn add(&mut self, extracted: archive::Extracted, parent: &Path) {
        for r in extracted.refused {
            // `(rest of archive)` names no entry.
            let path = if r.path.starts_with('(') {
                r.path
            } else {
                parent.join(&r.path).display().to_string()
            };
            self.refuse(path, r.reason);
        }
        self.files.extend(extracted.files);
    }

    async fn record(self, ctx: &mut Ctx) {
        let mut tests: Option<TestSummary> = None;
        for r in self.refused {
            ctx.emit(JobEvent::ArtifactRefused {
                path: r.path.clone(),
                reason: r.reason.clone(),
            })
            .await;
            ctx.result.artifacts_refused.push(r);
        }
        for file in self.files {
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if let Some(summary) = junit_summary(&file) {
                tests.get_or_insert_with(TestSummary::default).add(&summary);
            }
            ctx.emit(JobEvent::Artifact {
                path: file.display().to_string(),
                bytes,
            })
            .await;
            ctx.result.artifacts.push(file);
        }
        if tests.is_some() {
            ctx.result.tests = tests;
        }
    }
}

fn junit_summary(file: &Path) -> Option<TestSummary> {
    if file.extension().and_then(|e| e.to_str()) != Some("xml") {
        return None;
    }
    let bytes = std::fs::read(file).ok()?;
    junit::parse(&bytes).ok()
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(profile: &str) -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            format!("profile: {profile}\nsteps: [{{name: t, run: 'true'}}]\n"),
        )
        .expect("write");
        crate::spec::load(&path, &crate::spec::OperatorPolicy::for_cli()).expect("valid")
    }

    fn engine(runtimes: &[(&str, &[&str])]) -> EngineInfo {
        EngineInfo {
            endpoint: "unix:///var/run/docker.sock".into(),
            server_version: "20.10".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            cgroup_version: "1".into(),
            missing_enforcement: vec![],
            runtimes: runtimes
                .iter()
                .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
                .collect(),
            default_runtime: "runc".into(),
        }
    }

    /// A runtime the engine lacks, or runsc run without `--oci-seccomp`, is invalid input whose
    /// message is the fix: the daemon.json entry and the reload.
    #[test]
    fn a_runtime_the_engine_cannot_run_as_the_profile_says_is_invalid_input_naming_the_fix() {
        let gvisor = job("gvisor");
        let runc_only = engine(&[("runc", &[])]);
        let e = check_runtime(&gvisor, &runc_only).expect_err("no runsc");
        assert!(e.is_invalid_input());
        let msg = e.to_string();
        for want in [
            "profile `gvisor` runs under the OCI runtime `runsc`",
            "does not have it (it has runc)",
            "apt-get install runsc",
            "/etc/docker/daemon.json",
            RUNSC_DAEMON_JSON,
            "kill -HUP $(pidof dockerd)",
            "docker info --format '{{json .Runtimes}}'",
        ] {
            assert!(msg.contains(want), "{msg} lacks {want:?}");
        }
        // The snippet is valid JSON, as an operator would paste it.
        let v: serde_json::Value = serde_json::from_str(RUNSC_DAEMON_JSON).expect("JSON");
        assert_eq!(v["runtimes"]["runsc"]["path"], "/usr/bin/runsc");

        let e = check_runtime(
            &gvisor,
            &engine(&[
                ("runc", &[]),
                ("runsc", &["--platform=ptrace", "--network=none"]),
            ]),
        )
        .expect_err("no --oci-seccomp");
        assert!(e.is_invalid_input());
        let msg = e.to_string();
        assert!(
            msg.contains("without `--oci-seccomp`")
                && msg.contains("--platform=ptrace --network=none")
                && msg.contains(RUNSC_DAEMON_JSON),
            "{msg}"
        );

        for args in [
            &["--platform=ptrace", "--network=none", "--oci-seccomp"][..],
            &["-oci-seccomp=true"][..],
        ] {
            check_runtime(&gvisor, &engine(&[("runc", &[]), ("runsc", args)]))
                .expect("registered as cordon needs it");
        }
        // The engine's default needs nothing registered.
        check_runtime(&job("strict"), &engine(&[])).expect("strict");
    }
}
