//! The warm pool: fresh, never-used sandboxes made ahead of time, so a job skips creation.
//!
//! A job's first step asks the pool for a sandbox with its warm key (`policy::warm_key`): the
//! hash of that step's sandbox plan minus the names. The pool keeps up to `per_key` of each
//! key ready — created, verified, attached and started, the gate waiting for its command —
//! together with their own empty scratch volumes. A sandbox taken from the pool serves
//! exactly that job (and its scratch becomes the job's); the runner destroys it after the job
//! like any other. Its replacement is made in the background once that job has ended (or at
//! once, with [`Refill::OnTake`]); a job that finds its key empty starts a refill at once.
//!
//! What it costs: nothing in isolation — a pooled container has the same settings as one
//! made for the job (they are created by the same code and read back the same way), it holds
//! nothing of any job, and it is never handed out twice. It costs resources while idle: per
//! ready sandbox one stopped-at-`read` shell, its empty tmpfs volumes and an open attach
//! connection to the engine, `max_total` of them at most. A pooled container was started up
//! to `idle` before its job and is labelled with the pool's id, not the job's. Keys not used
//! for `idle` are drained; [`WarmPool::drain`] removes everything on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::error::error_chain;
use crate::sandbox::{Backend, Sandbox, SandboxError, Scratch, policy};
use crate::spec::Job;

/// How big the pool is and how long it keeps unused keys.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Ready sandboxes kept per key. 0 disables the pool.
    pub per_key: usize,
    /// A key not asked for in this long is drained.
    pub idle: Duration,
    /// Ready and in-the-making sandboxes across all keys at most, so jobs with many
    /// different settings cannot make the pool hold the host's memory.
    pub max_total: usize,
    /// When a taken sandbox is replaced.
    pub refill: Refill,
    /// Whether a pooled sandbox reads its image's library trees before it is ready.
    pub prewarm: Prewarm,
    /// Names this pool's containers and volumes (`cordon-warm-<name>-…`), so whoever owns
    /// it next can remove them after a crash ([`crate::sandbox::Reaper::remove_named`]).
    /// Letters and digits.
    pub name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            per_key: 1,
            idle: Duration::from_secs(600),
            max_total: 8,
            refill: Refill::AfterJob,
            prewarm: Prewarm::Auto,
            name: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        }
    }
}

/// When the pool makes the replacement for a sandbox a job took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Refill {
    /// When that job ends (its containers removed), so making the replacement (engine and
    /// filesystem work, a few hundred ms of CPU) does not compete with the job for the host.
    /// A job that finds its key empty starts a refill at once either way. Suits a loop that
    /// runs one job at a time, such as test generation's refine loop.
    #[default]
    AfterJob,
    /// As soon as the sandbox is taken, so a key asked for by overlapping jobs is ready
    /// again sooner.
    OnTake,
}

/// Whether pooled sandboxes are prewarmed: while it waits, a sandbox's gate reads every file
/// under the trees its image names in its `org.cordon.warm` label (cordon's Python image:
/// the standard library, the system packages and `/opt/venv`), so the job's first reads find
/// warm caches. Measured on fuse-overlayfs, where each container's caches start cold, it
/// takes a pytest run about 120 ms less and the container's teardown about 30 ms more. It
/// runs only the image's `find` and `cat`, as the sandbox user, under the sandbox's limits,
/// before anything of the job is there; it writes nothing and leaves no process. The page
/// cache it fills counts, reclaimably, against the sandbox's memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prewarm {
    /// Only where each container's caches start cold ([`Backend::cold_caches`]); elsewhere
    /// (overlay2) the host's page cache is shared already and it would only cost.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Prewarm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Prewarm::Auto),
            "on" => Ok(Prewarm::On),
            "off" => Ok(Prewarm::Off),
            other => Err(format!("`{other}` is not one of auto, on, off")),
        }
    }
}

/// How long a pooled sandbox may take to read its image's trees. Past it the sandbox is
/// discarded and the key's sandboxes are made without prewarming from then on.
const PREWARM_MAX: Duration = Duration::from_secs(60);

impl PoolConfig {
    /// The name prefix of everything a pool called `name` creates.
    pub fn prefix_of(name: &str) -> String {
        format!("cordon-warm-{name}-")
    }
}

/// A ready sandbox, handed to exactly one job.
pub struct Warm {
    pub scratch: Scratch,
    pub sandbox: Box<dyn Sandbox>,
    /// Held by the job until it ends; see [`Refill::AfterJob`].
    pub lease: Lease,
}

/// A taken sandbox's claim on a replacement: dropping it starts the refill of its key (with
/// [`Refill::AfterJob`]; otherwise it is empty).
#[derive(Default)]
pub struct Lease {
    refill: Option<(WarmPool, String)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((pool, key)) = self.refill.take()
            // Makers are tokio tasks; outside a runtime the pool is being torn down anyway.
            && tokio::runtime::Handle::try_current().is_ok()
        {
            pool.refill(&key);
        }
    }
}

/// The pool. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: PoolConfig,
    keys: Mutex<HashMap<String, Slot>>,
    closed: CancellationToken,
    tasks: TaskTracker,
}

struct Slot {
    /// The job the key was first seen with; pooled sandboxes are made from a copy of it
    /// under a pool id.
    template: Job,
    image_id: String,
    ready: Vec<Warm>,
    filling: usize,
    last_asked: Instant,
    /// Cleared when prewarming one of this key's sandboxes failed.
    prewarm: bool,
}

impl Slot {
    fn new(job: &Job, image_id: &str) -> Slot {
        Slot {
            template: job.clone(),
            image_id: image_id.to_string(),
            ready: Vec::new(),
            filling: 0,
            last_asked: Instant::now(),
            prewarm: true,
        }
    }
}

/// One key's supply: sandboxes ready, and being made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub ready: usize,
    pub filling: usize,
}

impl WarmPool {
    /// A pool over `backend`. Must be called inside a tokio runtime (it starts the idle
    /// sweeper). Call [`WarmPool::drain`] before the process exits.
    pub fn new(backend: Arc<dyn Backend>, config: PoolConfig) -> WarmPool {
        let pool = WarmPool {
            inner: Arc::new(Inner {
                backend,
                config,
                keys: Mutex::new(HashMap::new()),
                closed: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        let sweeper = pool.clone();
        let every = (pool.inner.config.idle / 4).max(Duration::from_secs(1));
        pool.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => sweeper.sweep_idle().await,
                    _ = sweeper.inner.closed.cancelled() => return,
                }
            }
        });
        pool
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// A ready sandbox for `job`'s first step on `image_id`, if one is ready; either way the
    /// key's supply is topped up in the background. Never waits on the engine.
    pub fn take(&self, job: &Job, image_id: &str) -> Option<Warm> {
        if !self.serves(job) {
            return None;
        }
        let key = policy::warm_key(job, image_id);
        let mut dead = Vec::new();
        let warm = {
            let mut keys = self.lock();
            let slot = keys
                .entry(key.clone())
                .or_insert_with(|| Slot::new(job, image_id));
            slot.last_asked = Instant::now();
            loop {
                let Some(mut w) = slot.ready.pop() else {
                    break None;
                };
                if is_waiting(&mut w) {
                    if self.inner.config.refill == Refill::AfterJob {
                        w.lease.refill = Some((self.clone(), key.clone()));
                    }
                    break Some(w);
                }
                dead.push(w);
            }
        };
        if !dead.is_empty() {
            warn!(
                count = dead.len(),
                "warm sandboxes had ended while waiting (engine restarted, or removed by hand); discarding them"
            );
            let inner = self.inner.clone();
            self.inner.tasks.spawn(async move {
                for w in dead {
                    discard(&inner, w).await;
                }
            });
        }
        if warm.is_none() || self.inner.config.refill == Refill::OnTake {
            self.refill(&key);
        }
        warm
    }

    /// Whether the pool makes sandboxes for jobs like `job`. A bind-mounted workspace is
    /// never pooled: the mount would be made before the job, of what the directory was then.
    fn serves(&self, job: &Job) -> bool {
        !self.inner.closed.is_cancelled()
            && self.inner.config.per_key > 0
            && !job
                .workspace
                .as_ref()
                .is_some_and(|w| w.mode == crate::spec::WorkspaceMode::Bind)
    }

    /// Makes sure sandboxes for `job` on `image_id` are being made, without taking one.
    pub fn prime(&self, job: &Job, image_id: &str) {
        if !self.serves(job) {
            return;
        }
        let key = policy::warm_key(job, image_id);
        self.lock()
            .entry(key.clone())
            .or_insert_with(|| Slot::new(job, image_id));
        self.refill(&key);
    }

    /// Ready and in-the-making sandboxes for `job`'s key.
    pub fn stats(&self, job: &Job, image_id: &str) -> PoolStats {
        self.stats_of(&policy::warm_key(job, image_id))
    }

    fn stats_of(&self, key: &str) -> PoolStats {
        self.lock()
            .get(key)
            .map(|s| PoolStats {
                ready: s.ready.len(),
                filling: s.filling,
            })
            .unwrap_or_default()
    }

    /// Ready and in-the-making sandboxes across all keys.
    pub fn totals(&self) -> PoolStats {
        self.lock()
            .values()
            .fold(PoolStats::default(), |t, s| PoolStats {
                ready: t.ready + s.ready.len(),
                filling: t.filling + s.filling,
            })
    }

    /// Waits until `job`'s key has a full supply ready (or `timeout` passes); true if it has.
    pub async fn wait_ready(&self, job: &Job, image_id: &str, timeout: Duration) -> bool {
        let key = policy::warm_key(job, image_id);
        let until = Instant::now() + timeout;
        loop {
            if self.stats_of(&key).ready >= self.inner.config.per_key {
                return true;
            }
            if Instant::now() >= until || self.inner.closed.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops refilling, waits for sandboxes being made, and removes every unused one.
    /// Returns how many were removed. Jobs that already took one are not affected.
    pub async fn drain(&self) -> usize {
        {
            // Under the lock: a refill either started its makers before this (and they are
            // waited for below) or sees the pool closed and starts none.
            let _keys = self.lock();
            self.inner.closed.cancel();
        }
        self.inner.tasks.close();
        // Makers in flight see the pool closed and remove what they made.
        self.inner.tasks.wait().await;
        let unused: Vec<Warm> = {
            let mut keys = self.lock();
            keys.drain().flat_map(|(_, s)| s.ready).collect()
        };
        let n = unused.len();
        futures_util::future::join_all(unused.into_iter().map(|w| discard(&self.inner, w))).await;
        if n > 0 {
            info!(removed = n, "warm pool drained");
        }
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock cannot leave the map inconsistent (each change is
        // one statement), so a poisoned lock is still usable.
        self.inner
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts makers until the key has `per_key` ready or in the making.
    fn refill(&self, key: &str) {
        let mut keys = self.lock();
        if self.inner.closed.is_cancelled() {
            return;
        }
        let total: usize = keys.values().map(|s| s.ready.len() + s.filling).sum();
        let room = self.inner.config.max_total.saturating_sub(total);
        let Some(slot) = keys.get_mut(key) else {
            return;
        };
        let want = self
            .inner
            .config
            .per_key
            .saturating_sub(slot.ready.len() + slot.filling)
            .min(room);
        for _ in 0..want {
            slot.filling += 1;
            let mut template = slot.template.clone();
            template.id = format!(
                "warm-{}-{}",
                self.inner.config.name,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            if let Some(step) = template.steps.first_mut() {
                // Only the step's label shows it; its command is never used.
                step.name = "warm".into();
            }
            let image_id = slot.image_id.clone();
            let prewarm = slot.prewarm;
            let key = key.to_string();
            let pool = self.clone();
            // The tracker refuses nothing after close, but a closed pool discards.
            self.inner.tasks.spawn(async move {
                let made = make(&pool.inner, &template, &image_id, prewarm).await;
                let leftover = {
                    let mut keys = pool.lock();
                    let mut slot = keys.get_mut(&key);
                    if let (Err(MakeError::Prewarm(_)), Some(slot)) = (&made, slot.as_deref_mut())
                    {
                        slot.prewarm = false;
                    }
                    let closed = matches!(made, Err(MakeError::Closed));
                    let made = made.map_err(MakeError::into_inner);
                    match (made, slot) {
                        (Ok(w), Some(slot)) if !pool.inner.closed.is_cancelled() => {
                            slot.filling -= 1;
                            debug!(sandbox = w.sandbox.id(), "warm sandbox ready");
                            slot.ready.push(w);
                            None
                        }
                        (made, slot) => {
                            if let Some(slot) = slot {
                                slot.filling -= 1;
                            }
                            match made {
                                Ok(w) => Some(w),
                                Err(_) if closed => None,
                                Err(e) => {
                                    warn!(error = %error_chain(&e), "could not make a warm sandbox; jobs create their own");
                                    None
                                }
                            }
                        }
                    }
                };
                if let Some(w) = leftover {
                    discard(&pool.inner, w).await;
                }
            });
        }
    }

    /// Drains keys no job asked for in `idle`.
    async fn sweep_idle(&self) {
        let idle = self.inner.config.idle;
        let stale: Vec<Warm> = {
            let mut keys = self.lock();
            let mut stale = Vec::new();
            keys.retain(|_, s| {
                if s.last_asked.elapsed() < idle {
                    return true;
                }
                stale.append(&mut s.ready);
                // Makers still in flight report to their slot (and count against the cap).
                s.filling > 0
            });
            stale
        };
        if !stale.is_empty() {
            debug!(removed = stale.len(), "idle warm sandboxes removed");
        }
        futures_util::future::join_all(stale.into_iter().map(|w| discard(&self.inner, w))).await;
    }
}

/// Why a sandbox could not be made for the pool.
enum MakeError {
    /// Prewarming it failed (the sandbox is gone).
    Prewarm(SandboxError),
    /// The pool was drained while it was being prewarmed (the sandbox is gone).
    Closed,
    Other(SandboxError),
}

impl MakeError {
    fn into_inner(self) -> SandboxError {
        match self {
            MakeError::Prewarm(e) => SandboxError::Protocol(format!(
                "prewarming: {}; this key's sandboxes are made without it from now on",
                error_chain(&e)
            )),
            MakeError::Closed => SandboxError::Protocol("the warm pool was drained".into()),
            MakeError::Other(e) => e,
        }
    }
}

/// Makes one sandbox ([`make_started`]) and, if the pool's [`Prewarm`] says so and `prewarm`
/// (the key's own say) allows, has it read its image's library trees.
async fn make(
    inner: &Inner,
    template: &Job,
    image_id: &str,
    prewarm: bool,
) -> Result<Warm, MakeError> {
    let prewarm = prewarm
        && match inner.config.prewarm {
            Prewarm::On => true,
            Prewarm::Off => false,
            Prewarm::Auto => inner.backend.cold_caches().await,
        };
    let paths = if prewarm {
        // Without its paths the sandbox is still good, only not prewarmed.
        inner
            .backend
            .warm_paths(image_id)
            .await
            .unwrap_or_else(|e| {
                debug!(error = %error_chain(&e), "could not read the image's warm paths");
                Vec::new()
            })
    } else {
        Vec::new()
    };
    let mut warm = make_started(inner, template, image_id)
        .await
        .map_err(MakeError::Other)?;
    if paths.is_empty() {
        return Ok(warm);
    }
    let started = Instant::now();
    // A drain does not wait for a prewarm (up to PREWARM_MAX) to finish.
    let prewarmed = tokio::select! {
        r = warm.sandbox.prewarm(&paths, PREWARM_MAX) => Some(r),
        () = inner.closed.cancelled() => None,
    };
    let Some(prewarmed) = prewarmed else {
        discard(inner, warm).await;
        return Err(MakeError::Closed);
    };
    match prewarmed {
        Ok(()) => {
            debug!(
                ms = started.elapsed().as_millis() as u64,
                "warm sandbox prewarmed"
            );
            Ok(warm)
        }
        Err(e) => {
            discard(inner, warm).await;
            Err(MakeError::Prewarm(e))
        }
    }
}

/// Creates, verifies, attaches and starts one sandbox with its own scratch.
async fn make_started(inner: &Inner, template: &Job, image_id: &str) -> Result<Warm, SandboxError> {
    let started = Instant::now();
    let scratch = inner
        .backend
        .create_scratch(&policy::scratch_plan(template))
        .await?;
    let plan = policy::step_plan(template, 0, image_id, &scratch);
    let mut sandbox = match inner.backend.create(&plan).await {
        Ok(s) => s,
        Err(e) => {
            let _ = inner.backend.remove_scratch(&scratch).await;
            return Err(e);
        }
    };
    match sandbox.start().await {
        Ok(()) => {
            debug!(
                ms = started.elapsed().as_millis() as u64,
                "warm sandbox made"
            );
            Ok(Warm {
                scratch,
                sandbox,
                lease: Lease::default(),
            })
        }
        Err(e) => {
            let _ = sandbox.destroy().await;
            let _ = inner.backend.remove_scratch(&scratch).await;
            Err(e)
        }
    }
}

/// Whether a ready sandbox's gate is still waiting for its command: it says nothing until
/// released, so any output or the end of its stream means it is gone or broken.
fn is_waiting(w: &mut Warm) -> bool {
    w.sandbox.is_waiting()
}

async fn discard(inner: &Inner, mut w: Warm) {
    if let Err(e) = w.sandbox.destroy().await {
        warn!(error = %error_chain(&e), "could not remove an unused warm sandbox; `cordon` removes it at its next start");
    }
    if let Err(e) = inner.backend.remove_scratch(&w.scratch).await {
        warn!(error = %error_chain(&e), "could not remove an unused warm sandbox's scratch");
    }
}

#[cfg(test)]
mod tests;
