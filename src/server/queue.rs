//! The job service: a durable, bounded queue in front of the runner.
//!
//! Every submission is written to the [`Store`] before it is acknowledged; a dispatcher
//! starts queued jobs in submission order, at most `concurrency` at once; each running job's
//! events are appended to the store (numbered from 0) before subscribers are woken, so a
//! subscriber that starts late — or resumes from an offset — reads every event exactly once,
//! in order, from one place. Nothing here knows about HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::error_chain;
use crate::event::JobEvent;
use crate::report::{JobResult, Outcome};
use crate::runner::Runner;
use crate::sandbox::docker::DockerBackend;
use crate::sandbox::{Backend, SandboxError};
use crate::spec::{self, JobSpec};

use super::access::{self, Caller};
use super::config::ServerConfig;
use super::listing::{self, ListQuery};
use super::metrics::Metrics;
use super::store::{
    self, Blob, Claim, Inserted, JobRow, JobState, JobStore, Lease, ListKey, NewJob, Notice,
    StoreError, Write,
};
use super::upload::{self, UploadError};

/// The error message of a job that was running when its controller died.
pub const CONTROLLER_LOST: &str = "controller lost: the cordon service stopped while this job was running (crash, kill -9 or power loss); its containers were removed when the service started again";

/// The error message of a job whose controllers were lost more often than `job_retries`
/// allows (several controllers on one PostgreSQL store).
pub const CONTROLLER_LOST_SHARED: &str = "controller lost: the controller running this job stopped renewing its lease (crash, kill -9, pause or network partition) and the job's retry budget is spent";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] UploadError),
    #[error("the image or limits cannot be used on this engine")]
    Preflight(#[source] SandboxError),
    #[error("the queue is full ({queued} jobs waiting); retry later")]
    QueueFull { queued: usize, retry_after: u64 },
    #[error(
        "this Idempotency-Key was used before for a different submission (job `{0}`); use a new key for a new job"
    )]
    KeyReused(String),
    #[error("the service is shutting down and accepts no new jobs")]
    ShuttingDown,
    #[error("no job `{0}`")]
    NotFound(String),
    #[error("the Docker engine is not available")]
    Engine(#[source] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a client sees of a job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    /// Jobs ahead of it, while queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    pub submitted_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// The image the job runs in.
    pub image: String,
    /// Events so far; the stream's offsets are `0..events`.
    pub events: u64,
    pub outcome: Option<String>,
    /// The result object of `cordon run --json`, once finished.
    pub result: Option<serde_json::Value>,
    /// The name of the token that submitted the job (absent for jobs from before names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// The controller running it, or that ran it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// How many times a controller started it: more than 1 when a controller was lost while
    /// running it and another ran it again (each lost attempt is a `warning` event).
    pub attempts: u32,
}

/// One page of a listing (`GET /v1/jobs`), newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobStatus>,
    /// Resumes the listing after this page; `None` when it was the last.
    pub next_cursor: Option<String>,
}

/// One stored event: its offset in the job's stream and its JSON.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: u64,
    pub json: String,
}

/// A job this controller runs: its cancel switch and the epoch of its claim.
struct Held {
    token: CancellationToken,
    epoch: i64,
    /// Another controller took it over: this one writes nothing more of it.
    lost: bool,
}

#[derive(Default)]
struct Sched {
    /// Jobs this controller claimed and has not finished.
    running: HashMap<String, Held>,
}

struct Inner {
    config: ServerConfig,
    concurrency: usize,
    store: Arc<dyn JobStore>,
    /// This controller's id in the store and on its containers.
    controller: String,
    runner: Runner,
    backend: Arc<dyn Backend>,
    jobs_dir: PathBuf,
    sched: std::sync::Mutex<Sched>,
    /// Wakes the dispatcher: a job was queued, or the service is draining.
    wake: Notify,
    /// Wakes whoever waits for running jobs to end.
    idle: Notify,
    /// Per unfinished job: its event count, for waking subscribers.
    live: std::sync::Mutex<HashMap<String, watch::Sender<u64>>>,
    metrics: Metrics,
    draining: AtomicBool,
    /// Cancelled when the HTTP side closes: open event streams end (clients resume later).
    closed: CancellationToken,
    /// The job slots (`concurrency`): the dispatcher's jobs and the background work that runs
    /// sandboxes of its own (a GitHub delivery) share them.
    slots: Arc<Semaphore>,
    /// Cancelled when a drain starts: background work stops and gives its delivery back.
    stopping: CancellationToken,
    /// Background work a drain waits for (after cancelling it), so its sandboxes are gone
    /// before the process exits.
    background: tokio_util::task::TaskTracker,
}

/// The job service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Service {
    /// Opens the store, recovers from a previous run (reaping the containers of jobs that were
    /// running, reporting them lost or running them again), and starts dispatching.
    pub async fn start(
        config: ServerConfig,
        docker: DockerBackend,
    ) -> Result<Service, ServiceError> {
        Service::start_on(config, Arc::new(docker)).await
    }

    /// [`Service::start`] on any engine.
    pub(crate) async fn start_on(
        mut config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Service, ServiceError> {
        let jobs_dir = config.data_dir.join("jobs");
        let mut private = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(private.recursive(true), 0o700);
        private.create(&jobs_dir).map_err(|e| {
            ServiceError::Internal(format!("cannot create {}: {e}", jobs_dir.display()))
        })?;
        // Absolute, so results name artifacts unambiguously.
        config.data_dir = config.data_dir.canonicalize().map_err(|e| {
            ServiceError::Internal(format!("cannot resolve {}: {e}", config.data_dir.display()))
        })?;
        let jobs_dir = config.data_dir.join("jobs");
        let store = store::open(&config.store, &config.data_dir).await?;
        let controller = config
            .controller_id
            .clone()
            .unwrap_or_else(|| default_controller_id(&config.data_dir));
        let mut runner = Runner::new(backend.clone(), Default::default());
        if config.warm_pool > 0 {
            info!(per_key = config.warm_pool, "warm pool on");
            runner = runner.with_pool(crate::pool::WarmPool::new(
                backend.clone(),
                crate::pool::PoolConfig {
                    per_key: config.warm_pool,
                    idle: config.warm_pool_idle.0,
                    max_total: config.warm_pool_max,
                    refill: crate::pool::Refill::default(),
                    prewarm: config.warm_pool_prewarm,
                    name: pool_name(&config.data_dir),
                },
            ));
        }
        let concurrency = config.concurrency();
        info!(controller = %controller, store = store.kind(), "job store open");
        let notices = store.notices();
        let svc = Service {
            inner: Arc::new(Inner {
                concurrency,
                store,
                controller,
                runner,
                backend,
                jobs_dir,
                sched: Default::default(),
                wake: Notify::new(),
                idle: Notify::new(),
                live: Default::default(),
                metrics: Metrics::default(),
                draining: AtomicBool::new(false),
                closed: CancellationToken::new(),
                slots: Arc::new(Semaphore::new(concurrency)),
                stopping: CancellationToken::new(),
                background: tokio_util::task::TaskTracker::new(),
                config,
            }),
        };
        svc.recover().await?;
        tokio::spawn(svc.clone().dispatch());
        tokio::spawn(svc.clone().prune_loop());
        if svc.inner.store.shared() {
            tokio::spawn(svc.clone().lease_loop());
        }
        if let Some(rx) = notices {
            tokio::spawn(svc.clone().notice_loop(rx));
        }
        Ok(svc)
    }

    async fn recover(&self) -> Result<(), ServiceError> {
        let s = &self.inner;
        if s.store.shared() {
            // Jobs this controller held before it stopped (a restart with the same id): taken
            // back at once, at a new epoch (so another controller taking them over at the same
            // moment gets none of them), instead of waiting for their leases to run out.
            let lease = s.config.lease.0;
            for claim in s
                .store
                .take_over(&s.controller, lease, 10_000, Some(&s.controller))
                .await?
            {
                self.handle_lost(claim).await;
            }
        } else {
            for row in s.store.running().await? {
                let removed = match s.backend.remove_job(&row.id).await {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(job = %row.id, error = %error_chain(&e), "cannot remove a lost job's containers");
                        0
                    }
                };
                warn!(job = %row.id, removed, "the job was running when the service stopped; reporting it lost");
                let epoch = Some(row.epoch);
                let _ = self
                    .finish_unstarted(
                        &row,
                        epoch,
                        Outcome::SandboxError,
                        Some(CONTROLLER_LOST.into()),
                    )
                    .await?;
            }
        }
        // This service's warm sandboxes from before a crash (and the first-step containers of
        // jobs that took one): named after the data directory, whatever host or pid made them.
        let prefix = crate::pool::PoolConfig::prefix_of(&pool_name(&s.config.data_dir));
        match s.backend.remove_named(&prefix).await {
            Ok(0) => {}
            Ok(n) => info!("removed {n} warm sandbox container(s)/volume(s) of a previous run"),
            Err(e) => warn!(error = %error_chain(&e), "could not look for leftover warm sandboxes"),
        }
        // Leftovers of other cordon processes that are gone (e.g. a `cordon run` killed).
        match s.backend.reap().await {
            Ok(0) => {}
            Ok(n) => info!("removed {n} leftover container(s)/volume(s)"),
            Err(e) => warn!(error = %error_chain(&e), "could not look for leftovers"),
        }
        // Directories of submissions that never made it into the store (a crash between
        // unpacking and committing) belong to nobody.
        self.sweep_job_dirs(Duration::ZERO).await?;
        let queued = s.store.queued().await?;
        if queued > 0 {
            info!(jobs = queued, "queued jobs waiting");
        }
        Ok(())
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.inner.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live_entry(&self, id: &str, events: u64) {
        self.live()
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(events).0);
    }

    /// Wakes whoever waits for job `id`'s events.
    fn poke(&self, id: &str) {
        if let Some(tx) = self.live().get(id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// This controller's id (`controller_id`).
    pub fn controller(&self) -> &str {
        &self.inner.controller
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.jobs_dir.join(id)
    }

    /// Validates a submission, stores it as `caller`'s and queues it. Returns the new job's
    /// status — or, when `idempotency_key` was sent before by `caller` with the same
    /// submission, that job's.
    pub async fn submit(
        &self,
        spec_text: String,
        workspace: Option<bytes::Bytes>,
        caller: &Caller,
        idempotency_key: Option<String>,
    ) -> Result<JobStatus, ServiceError> {
        let s = &self.inner;
        if s.draining.load(Ordering::SeqCst) {
            s.metrics.rejected("shutting_down");
            return Err(ServiceError::ShuttingDown);
        }
        let queued = s.store.queued().await?;
        if queued >= s.config.queue_capacity {
            s.metrics.rejected("queue_full");
            return Err(ServiceError::QueueFull {
                queued,
                retry_after: self.retry_after(queued),
            });
        }
        let idempotency = idempotency_key.map(|k| {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update((spec_text.len() as u64).to_le_bytes());
            h.update(spec_text.as_bytes());
            if let Some(w) = &workspace {
                h.update(w);
            }
            (k, hex::encode(h.finalize()))
        });

        let id = spec::new_job_id();
        let dir = self.job_dir(&id);
        let config = s.config.clone();
        let job_id = id.clone();
        let upload = workspace.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let uploaded = upload.is_some();
            let prepared =
                upload::prepare(&config, &job_id, &spec_text, upload.as_deref(), &dir)?;
            let refuse = |e| {
                let _ = std::fs::remove_dir_all(&dir);
                e
            };
            if uploaded
                && prepared
                    .0
                    .workspace
                    .as_ref()
                    .is_some_and(|w| w.mode == spec::WorkspaceMode::Bind)
            {
                return Err(refuse(UploadError::Refused(
                    "`workspace.mode`: `bind` mounts a directory of the service's host, and an uploaded workspace is private to the service; use `mode: copy` (the default)".into(),
                )));
            }
            // The extractor gives files 0644 and directories 0755: private, like the rest of
            // the data directory.
            if dir.exists() {
                access::tighten_tree(&dir).map_err(|e| refuse(UploadError::Io(e)))?;
            }
            Ok(prepared)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the upload task failed: {e}")))?;
        let (job, stored_spec) = match prepared {
            Ok(x) => x,
            Err(e) => {
                s.metrics.rejected("invalid");
                return Err(e.into());
            }
        };
        let discard = || {
            let _ = std::fs::remove_dir_all(self.job_dir(&id));
        };
        // What only the engine can say (image present, limits possible), before queueing.
        if let Err(e) = s.runner.preflight(&job).await {
            discard();
            s.metrics.rejected("invalid");
            return Err(if e.is_invalid_input() {
                ServiceError::Preflight(e)
            } else {
                ServiceError::Engine(e)
            });
        }
        let spec_json = serde_json::to_string(&stored_spec)
            .map_err(|e| ServiceError::Internal(format!("cannot encode the spec: {e}")))?;
        let new = NewJob {
            id: id.clone(),
            spec: spec_json,
            image: job.image.clone(),
            submitter: caller.name.clone(),
            idempotency,
            workspace: workspace.filter(|_| s.store.shared()),
            capacity: s.config.queue_capacity,
        };
        // The bound and the order are kept by the store (one lock for every submission).
        match s.store.insert(new, now_ms()).await {
            Ok(Inserted::New) => {}
            Ok(Inserted::Existing(existing)) => {
                discard();
                info!(job = %existing, submitter = %caller.name, "a retried submission (same Idempotency-Key): the job it made before");
                return self.status_of(&existing).await;
            }
            Ok(Inserted::KeyReused(existing)) => {
                discard();
                s.metrics.rejected("invalid");
                return Err(ServiceError::KeyReused(existing));
            }
            Ok(Inserted::Full(queued)) => {
                discard();
                s.metrics.rejected("queue_full");
                return Err(ServiceError::QueueFull {
                    queued,
                    retry_after: self.retry_after(queued),
                });
            }
            Err(e) => {
                discard();
                return Err(e.into());
            }
        }
        self.live_entry(&id, 0);
        s.metrics.submitted();
        s.wake.notify_one();
        info!(job = %id, submitter = %caller.name, "queued");
        self.status_of(&id).await
    }

    fn retry_after(&self, queued: usize) -> u64 {
        let per_job = self.inner.metrics.mean_job_secs().unwrap_or(5.0);
        let est = per_job * (queued as f64 / self.inner.concurrency as f64).min(1.0);
        est.ceil().clamp(1.0, 60.0) as u64
    }

    /// Job `id` if `caller` may see it: an admin sees every job, any other token only its own.
    /// A job of another token is [`ServiceError::NotFound`] exactly like one that does not
    /// exist, so a token cannot learn that others' jobs exist.
    async fn visible_row(&self, id: &str, caller: &Caller) -> Result<JobRow, ServiceError> {
        match self.inner.store.get(id).await? {
            Some(row) if caller.may_see(row.submitter.as_deref()) => Ok(row),
            _ => Err(ServiceError::NotFound(id.to_string())),
        }
    }

    /// Job `id`'s status, if `caller` may see it.
    pub async fn status(&self, id: &str, caller: &Caller) -> Result<JobStatus, ServiceError> {
        let row = self.visible_row(id, caller).await?;
        self.status_from_row(row).await
    }

    async fn status_of(&self, id: &str) -> Result<JobStatus, ServiceError> {
        let row = self
            .inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        self.status_from_row(row).await
    }

    async fn status_from_row(&self, row: JobRow) -> Result<JobStatus, ServiceError> {
        let queue_position = match row.state {
            JobState::Queued => Some(self.inner.store.position(&row).await?),
            _ => None,
        };
        Ok(status_from(row, queue_position))
    }

    /// A page of the jobs `caller` may see (an admin every job, any other token its own)
    /// that match `query`, newest first, with the cursor of the next page if there is one.
    pub async fn list(&self, query: &ListQuery, caller: &Caller) -> Result<JobPage, ServiceError> {
        let mut filter = query.filter.clone();
        filter.submitter = (!caller.admin).then(|| caller.name.clone());
        // One more than asked: whether a next page exists, without a cursor to an empty one.
        let mut rows = self.inner.store.list(&filter, query.limit + 1).await?;
        let next_cursor = if rows.len() > query.limit {
            rows.truncate(query.limit);
            rows.last().map(|r| {
                listing::cursor(&ListKey {
                    submitted_ms: r.submitted_ms,
                    id: r.id.clone(),
                })
            })
        } else {
            None
        };
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(self.status_from_row(row).await?);
        }
        Ok(JobPage { jobs, next_cursor })
    }

    /// Cancels a job `caller` may see: a queued one never starts; a running one has its
    /// sandbox removed (by whichever controller runs it). Waits (up to `wait`) for it to
    /// finish and returns its status.
    pub async fn cancel(
        &self,
        id: &str,
        caller: &Caller,
        wait: Duration,
    ) -> Result<JobStatus, ServiceError> {
        let row = self.visible_row(id, caller).await?;
        if row.state == JobState::Queued {
            let w = self
                .finish_unstarted(
                    &row,
                    None,
                    Outcome::Cancelled,
                    Some("cancelled before it started".into()),
                )
                .await?;
            if w == Write::Done {
                info!(job = %id, "cancelled while queued");
                return self.status_of(id).await;
            }
            // Claimed meanwhile: cancel it running.
        }
        if row.state != JobState::Finished {
            // Whichever controller runs it hears of this (a notice, its next renewal).
            self.inner.store.request_cancel(id).await?;
            let deadline = tokio::time::Instant::now() + wait;
            let rx = self.live().get(id).map(|tx| tx.subscribe());
            let mut rx = rx;
            while tokio::time::Instant::now() < deadline {
                // Here, checked on every turn: a job claimed just now is in `running` a moment
                // after its claim.
                let local = self.sched().running.get(id).map(|h| h.token.clone());
                if let Some(token) = local {
                    token.cancel();
                }
                match self.inner.store.get(id).await? {
                    Some(r) if r.state == JobState::Finished => break,
                    None => break,
                    _ => {}
                }
                let nap = tokio::time::sleep(Duration::from_millis(100));
                match rx.as_mut() {
                    Some(rx) => {
                        tokio::select! {
                            _ = rx.changed() => {}
                            _ = nap => {}
                        }
                    }
                    None => nap.await,
                }
            }
        }
        self.status_of(id).await
    }

    /// A job's events from offset `from`, live: the stream ends after the result, or when the
    /// service closes (resume with the next offset).
    pub async fn events(
        &self,
        id: &str,
        from: u64,
        caller: &Caller,
    ) -> Result<impl Stream<Item = EventRecord> + Send + 'static, ServiceError> {
        let row = self.visible_row(id, caller).await?;
        // Another controller may run it: have its notices wake this stream.
        if row.state != JobState::Finished && self.inner.store.shared() {
            self.live_entry(id, row.events);
        }
        struct St {
            svc: Service,
            id: String,
            next: u64,
            buf: VecDeque<EventRecord>,
            done: bool,
        }
        let st = St {
            svc: self.clone(),
            id: id.to_string(),
            next: from,
            buf: VecDeque::new(),
            done: false,
        };
        // Notices can be missed (a dropped connection): poll too, sooner with several
        // controllers.
        let poll = if self.inner.store.shared() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        Ok(futures_util::stream::unfold(st, move |mut st| async move {
            loop {
                if let Some(ev) = st.buf.pop_front() {
                    return Some((ev, st));
                }
                if st.done {
                    st.svc.release_live(&st.id);
                    return None;
                }
                // Subscribe before reading, so an event appended after the read wakes us.
                let rx = st.svc.live().get(&st.id).map(|tx| tx.subscribe());
                let store = &st.svc.inner.store;
                match store.events(&st.id, st.next, 256).await {
                    Ok(batch) if !batch.is_empty() => {
                        for json in batch {
                            st.buf.push_back(EventRecord { seq: st.next, json });
                            st.next += 1;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(error = %error_chain(&e), "cannot read events");
                        return None;
                    }
                }
                match store.get(&st.id).await {
                    Ok(Some(row)) if row.state == JobState::Finished && st.next >= row.events => {
                        st.done = true;
                        continue;
                    }
                    Ok(Some(_)) => {}
                    _ => return None,
                }
                let closed = st.svc.inner.closed.clone();
                let wait = async move {
                    match rx {
                        Some(mut rx) => {
                            let _ = rx.changed().await;
                        }
                        None => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                tokio::select! {
                    _ = wait => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = closed.cancelled() => return None,
                }
            }
        }))
    }

    /// Forgets job `id`'s wake-up channel once nobody here runs it or watches it.
    fn release_live(&self, id: &str) {
        if self.sched().running.contains_key(id) {
            return;
        }
        let mut live = self.live();
        if live.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
            live.remove(id);
        }
    }

    /// The job's artifact directory on this controller: a job another controller ran has
    /// its artifacts fetched from the store (once) and unpacked here.
    async fn artifact_dir(&self, row: &JobRow) -> Result<PathBuf, ServiceError> {
        let out = self.job_dir(&row.id).join("out");
        if out.exists() || !self.inner.store.shared() || row.state != JobState::Finished {
            return Ok(out);
        }
        let Some(tgz) = self.inner.store.blob(&row.id, Blob::Artifacts).await? else {
            return Ok(out);
        };
        let config = self.inner.config.clone();
        let dir = self.job_dir(&row.id);
        let r = tokio::task::spawn_blocking(move || unpack_artifacts(&tgz, &dir, &config))
            .await
            .map_err(|e| ServiceError::Internal(format!("the unpacking task failed: {e}")))?;
        r.map_err(|e| ServiceError::Internal(format!("cannot unpack the job's artifacts: {e}")))
    }

    /// The host file of artifact `rel` (a relative path under the job's artifact directory).
    pub async fn artifact(
        &self,
        id: &str,
        rel: &str,
        caller: &Caller,
    ) -> Result<PathBuf, ServiceError> {
        let row = self.visible_row(id, caller).await?;
        let not_found = || ServiceError::NotFound(format!("{id}/artifacts/{rel}"));
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || !rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(not_found());
        }
        let path = self.artifact_dir(&row).await?.join(rel_path);
        // The extractor never creates links; refuse one anyway rather than follow it.
        let meta = std::fs::symlink_metadata(&path).map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok(path)
    }

    /// The job's artifacts, as paths relative to its artifact directory.
    pub async fn artifacts(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<Vec<(String, u64)>, ServiceError> {
        let row = self.visible_row(id, caller).await?;
        let root = self.artifact_dir(&row).await?;
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
        {
            if e.file_type().is_file()
                && let Ok(rel) = e.path().strip_prefix(&root)
            {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((rel.to_string_lossy().into_owned(), len));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Checks the engine answers, and with a shared store that the database does: both at
    /// once, each within 5 s, so a probe's 6 s timeout covers the answer.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        let five = Duration::from_secs(5);
        let engine = tokio::time::timeout(five, self.inner.backend.engine());
        let store = async {
            if self.inner.store.shared() {
                Some(tokio::time::timeout(five, self.inner.store.queued()).await)
            } else {
                None
            }
        };
        let (engine, store) = tokio::join!(engine, store);
        match engine {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ServiceError::Engine(e)),
            Err(_) => {
                return Err(ServiceError::Internal(
                    "the Docker engine did not answer within 5s".into(),
                ));
            }
        }
        match store {
            None | Some(Ok(Ok(_))) => Ok(()),
            Some(Ok(Err(e))) => Err(ServiceError::Store(e)),
            Some(Err(_)) => Err(ServiceError::Internal(
                "the job store did not answer within 5s".into(),
            )),
        }
    }

    pub async fn metrics_text(&self) -> String {
        let s = &self.inner;
        let queued = s.store.queued().await.unwrap_or(0);
        let running = self.sched().running.len();
        let pool = s.runner.pool().map(|p| p.totals());
        let mut out = s.metrics.render(queued, running, s.concurrency, pool);
        s.metrics
            .render_controller(&mut out, &s.controller, s.store.kind(), running);
        out
    }

    /// Runs `work` in the background under the service's life: a drain cancels
    /// [`Service::stopping`] and waits (up to the grace period plus a minute) for it to end.
    pub(crate) fn spawn_background<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.background.spawn(work);
    }

    /// Cancelled when a drain starts.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    /// Waits for one of the `concurrency` job slots (background work that runs sandboxes of
    /// its own holds one while it does); `None` once the service is draining.
    pub(crate) async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            p = self.inner.slots.clone().acquire_owned() => p.ok(),
            _ = self.inner.stopping.cancelled() => None,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// SIGTERM: accept nothing new, start nothing new, let running jobs go on for `grace`,
    /// then cancel them and wait until their sandboxes are gone. Queued jobs stay queued in
    /// the store and run at the next start (or on another controller).
    pub async fn drain(&self, grace: Duration) {
        let s = &self.inner;
        s.draining.store(true, Ordering::SeqCst);
        s.wake.notify_one();
        s.stopping.cancel();
        s.background.close();
        let running = || self.sched().running.len();
        info!(running = running(), "draining: waiting for running jobs");
        let deadline = tokio::time::Instant::now() + grace;
        while running() > 0 && tokio::time::Instant::now() < deadline {
            // `notify_waiters` keeps no permit: poll too, so a job ending between the check
            // and the wait does not hold the shutdown up for the whole grace period.
            let _ = tokio::time::timeout(Duration::from_millis(200), s.idle.notified()).await;
        }
        if running() > 0 {
            warn!(
                running = running(),
                "grace period over: cancelling running jobs"
            );
            for held in self.sched().running.values() {
                held.token.cancel();
            }
            let hard = tokio::time::Instant::now() + Duration::from_secs(60);
            while running() > 0 && tokio::time::Instant::now() < hard {
                let _ = tokio::time::timeout(Duration::from_millis(200), s.idle.notified()).await;
            }
        }
        if !s.background.is_empty() {
            info!(
                tasks = s.background.len(),
                "draining: waiting for background work to stop"
            );
            let _ =
                tokio::time::timeout(grace + Duration::from_secs(60), s.background.wait()).await;
        }
        if let Some(pool) = s.runner.pool() {
            pool.drain().await;
        }
        info!("drained: no job is running");
    }

    /// Ends open event streams (called as the HTTP side shuts down).
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    async fn dispatch(self) {
        let s = self.inner.clone();
        let slots = s.slots.clone();
        // A notice can be missed; with several controllers, look at the queue every second.
        let poll = if s.store.shared() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        loop {
            if s.draining.load(Ordering::SeqCst) {
                return;
            }
            // A slot only while there is a job for it: an idle dispatcher holds none, so
            // background work (a GitHub delivery) gets one even with `concurrency: 1`.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            if s.draining.load(Ordering::SeqCst) {
                return;
            }
            let claim = match s
                .store
                .claim(&s.controller, s.config.lease.0, now_ms())
                .await
            {
                Ok(Some(c)) => c,
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = s.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                    continue;
                }
                Err(e) => {
                    drop(permit);
                    error!(error = %error_chain(&e), "cannot claim a queued job");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            let id = claim.row.id.clone();
            let token = CancellationToken::new();
            self.sched().running.insert(
                id.clone(),
                Held {
                    token: token.clone(),
                    epoch: claim.row.epoch,
                    lost: false,
                },
            );
            self.live_entry(&id, claim.row.events);
            let svc = self.clone();
            tokio::spawn(async move {
                svc.run_one(claim.row, token).await;
                svc.sched().running.remove(&id);
                svc.release_live(&id);
                drop(permit);
                svc.inner.idle.notify_waiters();
            });
        }
    }

    /// Runs job `row` (claimed by this controller at `row.epoch`) to its result, unless
    /// another controller takes it over first.
    async fn run_one(&self, row: JobRow, token: CancellationToken) {
        let s = &self.inner;
        let id = row.id.as_str();
        let epoch = row.epoch;
        let job = match self.job_of(&row).await {
            Ok(j) => j,
            Err(why) => {
                let r = self
                    .finish_unstarted(&row, Some(epoch), Outcome::SandboxError, Some(why))
                    .await;
                if let Err(e) = r {
                    error!(job = %id, error = %error_chain(&e), "cannot record a result");
                }
                return;
            }
        };
        let started = row.started_ms.unwrap_or_else(now_ms);
        s.metrics
            .started((started - row.submitted_ms).max(0) as f64 / 1000.0);
        let preflight = tokio::select! {
            p = s.runner.preflight(&job) => p,
            _ = token.cancelled() => {
                let r = self.finish_unstarted(&row, Some(epoch), Outcome::Cancelled, None).await;
                if let Err(e) = r {
                    error!(job = %id, error = %error_chain(&e), "cannot record a result");
                }
                return;
            }
        };
        let preflight = match preflight {
            Ok(p) => p,
            Err(e) => {
                let r = self
                    .finish_unstarted(
                        &row,
                        Some(epoch),
                        Outcome::SandboxError,
                        Some(error_chain(&e)),
                    )
                    .await;
                if let Err(e) = r {
                    error!(job = %id, error = %error_chain(&e), "cannot record a result");
                }
                return;
            }
        };
        info!(job = %id, attempt = row.attempts, "starting");
        let mut handle = s.runner.start(job, preflight, self.job_dir(id).join("out"));
        let mut seq = row.events;
        let mut cancel_sent = false;
        let mut finished = false;
        let mut fenced = false;
        loop {
            let ev = tokio::select! {
                ev = handle.next_event() => ev,
                _ = token.cancelled(), if !cancel_sent => {
                    info!(job = %id, "cancelling");
                    handle.cancel();
                    cancel_sent = true;
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            if fenced {
                // Another controller holds the job now: run this sandbox down, write nothing.
                continue;
            }
            if matches!(ev, JobEvent::Finished { .. }) {
                finished = true;
                self.keep_artifacts(id, epoch).await;
            }
            if self.record(id, epoch, &mut seq, &ev).await == Write::Fenced {
                self.lost_to_another(id);
                fenced = true;
                if !cancel_sent {
                    handle.cancel();
                    cancel_sent = true;
                }
            }
        }
        if !finished && !fenced {
            let result = handle.wait().await;
            self.keep_artifacts(id, epoch).await;
            let _ = self
                .record(
                    id,
                    epoch,
                    &mut seq,
                    &JobEvent::Finished {
                        result: Box::new(result),
                    },
                )
                .await;
        } else if fenced {
            let _ = handle.wait().await;
        }
    }

    /// This controller's job `id` was taken over by another: stop it, count it (once, whether
    /// a renewal or a refused write noticed first).
    fn lost_to_another(&self, id: &str) {
        let token = match self.sched().running.get_mut(id) {
            Some(h) if !h.lost => {
                h.lost = true;
                h.token.clone()
            }
            _ => return,
        };
        warn!(job = %id, controller = %self.inner.controller, "another controller took this job over (this one's lease ran out): stopping it here without writing more");
        self.inner.metrics.fenced();
        token.cancel();
    }

    /// The validated job of a stored row, its workspace on this controller's disk (fetched
    /// from the store if it was uploaded to another), labelled with this controller and epoch.
    async fn job_of(&self, row: &JobRow) -> Result<spec::Job, String> {
        let s = &self.inner;
        let id = row.id.as_str();
        let mut spec = serde_json::from_str::<JobSpec>(&row.spec)
            .map_err(|e| format!("the stored spec no longer validates: {e}"))?;
        let own = self.job_dir(id);
        let local = upload::workspace_dir(&own);
        if s.store.shared() && spec.workspace.is_some() && !local.exists() {
            let tgz = s
                .store
                .blob(id, Blob::Workspace)
                .await
                .map_err(|e| error_chain(&e))?;
            if let Some(tgz) = tgz {
                let config = s.config.clone();
                let dir = own.clone();
                tokio::task::spawn_blocking(move || {
                    let ws =
                        upload::unpack_stored(&tgz, &dir, &config).map_err(|e| error_chain(&e))?;
                    access::tighten_tree(&dir).map_err(|e| e.to_string())?;
                    Ok::<_, String>(ws)
                })
                .await
                .map_err(|e| format!("the unpacking task failed: {e}"))?
                .map_err(|e| format!("cannot unpack the uploaded workspace here: {e}"))?;
            }
        }
        // An uploaded workspace is this controller's copy, wherever it was uploaded.
        if let Some(w) = spec.workspace.as_mut()
            && local.exists()
        {
            w.source = local.canonicalize().map_err(|e| e.to_string())?;
        }
        let mut job = spec::validate(
            spec,
            &s.config.profiles_dir,
            Path::new("spec"),
            &s.config.policy,
        )
        .map_err(|e| format!("the stored spec no longer validates: {}", error_chain(&e)))?;
        job.id = id.to_string();
        job.labels.insert(
            crate::sandbox::labels::CONTROLLER.into(),
            s.controller.clone(),
        );
        job.labels
            .insert(crate::sandbox::labels::EPOCH.into(), row.epoch.to_string());
        // The source was checked at submission; a link planted in a root since then must not
        // take the job out of it.
        if let Some(w) = &job.workspace {
            let own = own.canonicalize().unwrap_or_default();
            let roots = &s.config.workspace_roots;
            if !(w.source.starts_with(&own) || roots.iter().any(|r| w.source.starts_with(r))) {
                return Err(format!(
                    "the workspace source {} is no longer under the service's workspace roots (a link was planted after submission)",
                    w.source.display()
                ));
            }
        }
        Ok(job)
    }

    /// Makes the job's artifacts private (the extractor gives them 0644/0755) before its
    /// result is recorded, so a finished job's files are 0600 in 0700 directories; with
    /// several controllers, also keeps them in the store so any controller can serve them.
    async fn keep_artifacts(&self, id: &str, epoch: i64) {
        let out = self.job_dir(id).join("out");
        let shared = self.inner.store.shared();
        let cap = self.inner.config.max_stored_artifacts.bytes();
        let r = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
            if !out.exists() {
                return Ok(None);
            }
            access::tighten_tree(&out).map_err(|e| e.to_string())?;
            if !shared {
                return Ok(None);
            }
            pack_artifacts(&out, cap).map(Some)
        })
        .await;
        let packed = match r {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                warn!(job = %id, error = %e, "cannot keep the job's artifacts for the other controllers; they stay on this one's disk");
                None
            }
            Err(e) => {
                warn!(job = %id, error = %e, "cannot make the job's artifacts private");
                None
            }
        };
        if let Some(tgz) = packed {
            match self
                .inner
                .store
                .put_blob(id, epoch, Blob::Artifacts, tgz)
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    warn!(job = %id, error = %error_chain(&e), "cannot store the job's artifacts")
                }
            }
        }
    }

    /// Appends one event (the result too, when it is the last) of the job held at `epoch`
    /// and wakes subscribers. `Fenced`: the job is no longer this controller's.
    async fn record(&self, id: &str, epoch: i64, seq: &mut u64, ev: &JobEvent) -> Write {
        self.record_as(id, Some(epoch), seq, ev).await
    }

    async fn record_as(&self, id: &str, epoch: Option<i64>, seq: &mut u64, ev: &JobEvent) -> Write {
        let s = &self.inner;
        let json = match serde_json::to_string(ev) {
            Ok(j) => j,
            Err(e) => {
                error!(job = %id, error = %e, "cannot encode an event");
                return Write::Done;
            }
        };
        let r = match ev {
            JobEvent::Finished { result } => {
                let result_json = serde_json::to_string(result).unwrap_or_default();
                let r = s
                    .store
                    .finish(
                        id,
                        epoch,
                        *seq,
                        &json,
                        result.outcome.as_str(),
                        &result_json,
                        now_ms(),
                    )
                    .await;
                if matches!(r, Ok(Write::Done)) {
                    // A job that never ran has no run time to count.
                    let ran = result.duration_ms > 0 || !result.phases_ms.is_empty();
                    s.metrics.finished(
                        result.outcome.as_str(),
                        ran.then_some(result.duration_ms as f64 / 1000.0),
                    );
                }
                r
            }
            _ => match epoch {
                Some(epoch) => s.store.append_event(id, epoch, *seq, &json).await,
                None => Ok(Write::Fenced),
            },
        };
        match r {
            Ok(Write::Done) => {
                *seq += 1;
                self.poke(id);
                Write::Done
            }
            Ok(Write::Fenced) => Write::Fenced,
            Err(e) => {
                error!(job = %id, error = %error_chain(&e), "cannot store an event");
                Write::Done
            }
        }
    }

    /// Finishes a job that never ran (or whose run was lost) with a synthesized result: one
    /// held at `epoch`, or with `None` one still queued.
    async fn finish_unstarted(
        &self,
        row: &JobRow,
        epoch: Option<i64>,
        outcome: Outcome,
        error: Option<String>,
    ) -> Result<Write, ServiceError> {
        let result = unstarted_result(row, outcome, error);
        let mut seq = row.events;
        let w = self
            .record_as(
                &row.id,
                epoch,
                &mut seq,
                &JobEvent::Finished {
                    result: Box::new(result),
                },
            )
            .await;
        Ok(w)
    }

    /// A job whose controller was lost, now held by this one (`claim.row.epoch`): removes
    /// what it can of the lost run's containers (those on this engine), then queues it to run
    /// again within the retry budget, or finishes it lost.
    async fn handle_lost(&self, claim: Claim) {
        let s = &self.inner;
        let row = claim.row;
        let id = row.id.as_str();
        let lost = claim.lost_owner.unwrap_or_else(|| "(unknown)".into());
        s.metrics.took_over();
        let removed = match s.backend.remove_job(id).await {
            Ok(n) => n,
            Err(e) => {
                warn!(job = %id, error = %error_chain(&e), "cannot remove the lost run's containers");
                0
            }
        };
        let allowed = 1 + s.config.job_retries;
        warn!(job = %id, lost_controller = %lost, attempt = row.attempts, allowed, removed, "took over a job whose controller stopped renewing its lease");
        let mut seq = row.events;
        if row.attempts < allowed {
            let note = JobEvent::Warning {
                message: format!(
                    "controller `{lost}` stopped renewing its lease while running attempt {} of {allowed}; controller `{}` removed {removed} of its containers and queued the job to run again",
                    row.attempts, s.controller
                ),
            };
            if self.record(id, row.epoch, &mut seq, &note).await == Write::Done {
                match s.store.requeue(id, row.epoch).await {
                    Ok(Write::Done) => {
                        s.metrics.retried();
                        s.wake.notify_one();
                    }
                    Ok(Write::Fenced) => {}
                    Err(e) => error!(job = %id, error = %error_chain(&e), "cannot requeue a job"),
                }
            }
        } else {
            let why = format!(
                "{CONTROLLER_LOST_SHARED} (controller `{lost}`, attempt {} of {allowed})",
                row.attempts
            );
            let held = JobRow {
                events: seq,
                ..row.clone()
            };
            if let Err(e) = self
                .finish_unstarted(&held, Some(row.epoch), Outcome::SandboxError, Some(why))
                .await
            {
                error!(job = %id, error = %error_chain(&e), "cannot record a result");
            }
        }
    }

    /// With several controllers: renews this controller's leases every third of the lease
    /// (stopping jobs whose lease was taken over, cancelling those a client asked another
    /// controller to cancel) and takes over jobs whose controller stopped renewing.
    async fn lease_loop(self) {
        let s = self.inner.clone();
        let lease = s.config.lease.0;
        let every = lease / 3;
        loop {
            let held: Vec<(String, i64)> = self
                .sched()
                .running
                .iter()
                .map(|(id, h)| (id.clone(), h.epoch))
                .collect();
            match s.store.renew(&s.controller, lease, &held).await {
                Ok(leases) => {
                    for (id, lease) in leases {
                        match lease {
                            Lease::Lost => self.lost_to_another(&id),
                            Lease::Renewed {
                                cancel_requested: true,
                            } => {
                                if let Some(h) = self.sched().running.get(&id) {
                                    h.token.cancel();
                                }
                            }
                            Lease::Renewed { .. } => {}
                        }
                    }
                }
                Err(e) => warn!(error = %error_chain(&e), "cannot renew leases"),
            }
            if !s.draining.load(Ordering::SeqCst) {
                match s.store.take_over(&s.controller, lease, 8, None).await {
                    Ok(claims) => {
                        for claim in claims {
                            self.handle_lost(claim).await;
                        }
                    }
                    Err(e) => warn!(error = %error_chain(&e), "cannot look for lost jobs"),
                }
            }
            // Jitter, so controllers started together do not renew in step.
            let jitter = every.mul_f64(0.2 * crate::retry::unit_random());
            tokio::select! {
                _ = tokio::time::sleep(every - jitter) => {}
                _ = s.closed.cancelled() => return,
            }
        }
    }

    /// With several controllers: what the others did, at once (the loops poll as well).
    async fn notice_loop(self, mut rx: tokio::sync::broadcast::Receiver<Notice>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let notice = tokio::select! {
                n = rx.recv() => n,
                _ = self.inner.closed.cancelled() => return,
            };
            match notice {
                Ok(Notice::Queued) => self.inner.wake.notify_one(),
                Ok(Notice::Events(id)) => self.poke(&id),
                Ok(Notice::Cancel(id)) => {
                    if let Some(h) = self.sched().running.get(&id) {
                        h.token.cancel();
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    self.inner.wake.notify_one();
                    for tx in self.live().values() {
                        tx.send_modify(|n| *n += 1);
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Removes this controller's job directories whose job is not in the store (older than
    /// `min_age`, so a submission being unpacked is left alone): a submission never stored,
    /// or — with several controllers — a job another controller pruned.
    async fn sweep_job_dirs(&self, min_age: Duration) -> Result<(), ServiceError> {
        let Ok(dir) = std::fs::read_dir(&self.inner.jobs_dir) else {
            return Ok(());
        };
        for entry in dir.filter_map(Result::ok) {
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if !old_enough {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.inner.store.get(&name).await?.is_none() {
                info!(dir = %entry.path().display(), "removing the files of a job the store does not have");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    async fn prune_loop(self) {
        let retention = self.inner.config.retention.0;
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        loop {
            let before = now_ms() - retention.as_millis() as i64;
            match self.inner.store.prune(before).await {
                Ok(ids) => {
                    for id in &ids {
                        let _ = std::fs::remove_dir_all(self.job_dir(id));
                    }
                    if !ids.is_empty() {
                        info!(jobs = ids.len(), "pruned finished jobs past the retention");
                    }
                }
                Err(e) => warn!(error = %error_chain(&e), "pruning failed"),
            }
            if self.inner.store.shared()
                && let Err(e) = self.sweep_job_dirs(Duration::from_secs(600)).await
            {
                warn!(error = %error_chain(&e), "cannot sweep job directories");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.closed.cancelled() => return,
            }
        }
    }
}

/// The result of a job that never ran, or whose run was lost.
fn unstarted_result(row: &JobRow, outcome: Outcome, error: Option<String>) -> JobResult {
    let spec: Option<JobSpec> = serde_json::from_str(&row.spec).ok();
    let image = spec
        .as_ref()
        .and_then(|s| s.image.clone())
        .unwrap_or_else(|| spec::DEFAULT_IMAGE.to_string());
    let profile = spec
        .as_ref()
        .and_then(|s| s.profile.clone())
        .unwrap_or_else(|| "strict".to_string());
    let steps = spec
        .as_ref()
        .map(|s| {
            s.steps
                .iter()
                .map(|st| crate::report::StepResult {
                    name: st.name.clone(),
                    outcome: Outcome::Skipped,
                    exit_code: None,
                    duration_ms: 0,
                    output_bytes: 0,
                })
                .collect()
        })
        .unwrap_or_default();
    let duration_ms = row
        .started_ms
        .map(|t| (now_ms() - t).max(0) as u64)
        .unwrap_or(0);
    JobResult {
        environment: None,
        warm: false,
        job_id: row.id.clone(),
        outcome,
        exit_code: None,
        duration_ms,
        error,
        steps,
        tests: None,
        artifacts: vec![],
        artifacts_refused: vec![],
        output_bytes: 0,
        output_truncated: false,
        image,
        profile,
        phases_ms: BTreeMap::new(),
    }
}

/// The job's artifact directory as a tar.gz, refused past `cap` bytes.
fn pack_artifacts(out: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", out).map_err(|e| e.to_string())?;
    let bytes = tar
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "{} bytes compressed is more than max_stored_artifacts ({cap} bytes)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Unpacks artifacts kept by the store into `job_dir/out` (through a temporary directory, so
/// a concurrent reader sees all or nothing), with the artifact extractor's rules.
fn unpack_artifacts(tgz: &[u8], job_dir: &Path, config: &ServerConfig) -> Result<PathBuf, String> {
    use crate::sandbox::archive::{self, ExtractLimits};
    let out = job_dir.join("out");
    // Each request its own: two requests unpacking at once must not share a directory.
    let tmp = job_dir.join(format!(".out-{}", uuid::Uuid::new_v4().simple()));
    let mut private = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(private.recursive(true), 0o700);
    private.create(&tmp).map_err(|e| e.to_string())?;
    let limits = ExtractLimits {
        max_total_bytes: config.max_stored_artifacts.bytes().saturating_mul(16),
        max_file_bytes: config.max_stored_artifacts.bytes().saturating_mul(16),
        max_entries: 100_000,
    };
    let gz = flate2::read::GzDecoder::new(tgz);
    let unpacked = archive::extract_artifacts(gz, &tmp, &limits)
        .map_err(|e| error_chain(&e))
        .and_then(|_| access::tighten_tree(&tmp).map_err(|e| e.to_string()));
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &out) {
        Ok(()) => Ok(out),
        // Another request unpacked them first.
        Err(_) if out.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(out)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn status_from(row: JobRow, queue_position: Option<usize>) -> JobStatus {
    JobStatus {
        id: row.id,
        state: row.state,
        queue_position,
        submitted_ms: row.submitted_ms,
        started_ms: row.started_ms,
        finished_ms: row.finished_ms,
        image: row.image,
        events: row.events,
        outcome: row.outcome,
        result: row.result.and_then(|r| serde_json::from_str(&r).ok()),
        submitted_by: row.submitter,
        controller: row.owner,
        attempts: row.attempts,
    }
}

/// A controller id stable across restarts: the host's name and a digest of the data
/// directory (two services on one host have different ones).
fn default_controller_id(data_dir: &std::path::Path) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(40)
        .collect();
    format!("{host}-{}", pool_name(data_dir))
}

/// The warm pool's name for the service with this data directory: the same across restarts,
/// hosts and pids, different for two services sharing an engine.
fn pool_name(data_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data_dir.display().to_string().as_bytes()))[..8].to_string()
}

#[cfg(test)]
mod tests;
