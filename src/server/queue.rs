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
use super::store::{JobRow, JobState, ListKey, Store, StoreError};
use super::upload::{self, UploadError};

/// The error message of a job that was running when its controller died.
pub const CONTROLLER_LOST: &str = "controller lost: the cordon service stopped while this job was running (crash, kill -9 or power loss); its containers were removed when the service started again";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] UploadError),
    #[error("the image or limits cannot be used on this engine")]
    Preflight(#[source] SandboxError),
    #[error("the queue is full ({queued} jobs waiting); retry later")]
    QueueFull { queued: usize, retry_after: u64 },
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

#[derive(Default)]
struct Sched {
    queued: VecDeque<String>,
    /// Jobs taken off the queue and not yet finished, with their cancel switch.
    running: HashMap<String, CancellationToken>,
    /// The newest job's `submitted_ms`: the next one gets a later one.
    last_submitted_ms: i64,
}

struct Inner {
    config: ServerConfig,
    concurrency: usize,
    store: Store,
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
    /// running, reporting them lost), requeues what was queued, and starts dispatching.
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
        let store = Store::open(&config.data_dir.join("cordon.db"))?;
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
        let svc = Service {
            inner: Arc::new(Inner {
                concurrency,
                store,
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
                config,
            }),
        };
        svc.recover().await?;
        tokio::spawn(svc.clone().dispatch());
        tokio::spawn(svc.clone().prune_loop());
        Ok(svc)
    }

    async fn recover(&self) -> Result<(), ServiceError> {
        let s = &self.inner;
        for row in s.store.in_state(JobState::Running)? {
            let removed = match s.backend.remove_job(&row.id).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(job = %row.id, error = %error_chain(&e), "cannot remove a lost job's containers");
                    0
                }
            };
            warn!(job = %row.id, removed, "the job was running when the service stopped; reporting it lost");
            self.finish_unstarted(&row, Outcome::SandboxError, Some(CONTROLLER_LOST.into()))?;
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
        if let Ok(dir) = std::fs::read_dir(&s.jobs_dir) {
            for entry in dir.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if s.store.get(&name)?.is_none() {
                    warn!(dir = %entry.path().display(), "removing the files of a submission that was never stored");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let queued = s.store.in_state(JobState::Queued)?;
        if !queued.is_empty() {
            info!(jobs = queued.len(), "resuming queued jobs");
        }
        let last_submitted = s.store.max_submitted_ms()?;
        let mut sched = self.sched();
        sched.last_submitted_ms = last_submitted;
        for row in queued {
            self.live_entry(&row.id, row.events);
            sched.queued.push_back(row.id);
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

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.jobs_dir.join(id)
    }

    /// Validates a submission, stores it as `caller`'s and queues it. Returns the new job's
    /// status.
    pub async fn submit(
        &self,
        spec_text: String,
        workspace: Option<bytes::Bytes>,
        caller: &Caller,
    ) -> Result<JobStatus, ServiceError> {
        let s = &self.inner;
        if s.draining.load(Ordering::SeqCst) {
            s.metrics.rejected("shutting_down");
            return Err(ServiceError::ShuttingDown);
        }
        let queued = self.sched().queued.len();
        if queued >= s.config.queue_capacity {
            s.metrics.rejected("queue_full");
            return Err(ServiceError::QueueFull {
                queued,
                retry_after: self.retry_after(queued),
            });
        }

        let id = spec::new_job_id();
        let dir = self.job_dir(&id);
        let config = s.config.clone();
        let job_id = id.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let uploaded = workspace.is_some();
            let prepared =
                upload::prepare(&config, &job_id, &spec_text, workspace.as_deref(), &dir)?;
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
        // What only the engine can say (image present, limits possible), before queueing.
        if let Err(e) = s.runner.preflight(&job).await {
            let _ = std::fs::remove_dir_all(self.job_dir(&id));
            s.metrics.rejected("invalid");
            return Err(if e.is_invalid_input() {
                ServiceError::Preflight(e)
            } else {
                ServiceError::Engine(e)
            });
        }
        let spec_json = serde_json::to_string(&stored_spec)
            .map_err(|e| ServiceError::Internal(format!("cannot encode the spec: {e}")))?;
        {
            // Check and enqueue under one lock, so the bound holds under concurrent submits.
            let mut sched = self.sched();
            if sched.queued.len() >= s.config.queue_capacity {
                drop(sched);
                let _ = std::fs::remove_dir_all(self.job_dir(&id));
                s.metrics.rejected("queue_full");
                let queued = self.sched().queued.len();
                return Err(ServiceError::QueueFull {
                    queued,
                    retry_after: self.retry_after(queued),
                });
            }
            // Taken under the lock and strictly increasing (a millisecond later than the last
            // if the clock has not moved on, or went back): a job stored after a listing was
            // read is newer than every job on it, so it never shows up on a later page.
            let submitted = now_ms().max(sched.last_submitted_ms + 1);
            if let Err(e) = s
                .store
                .insert(&id, &spec_json, &job.image, &caller.name, submitted)
            {
                drop(sched);
                let _ = std::fs::remove_dir_all(self.job_dir(&id));
                return Err(e.into());
            }
            sched.last_submitted_ms = submitted;
            self.live_entry(&id, 0);
            sched.queued.push_back(id.clone());
        }
        s.metrics.submitted();
        s.wake.notify_one();
        info!(job = %id, submitter = %caller.name, "queued");
        self.status_of(&id)
    }

    fn retry_after(&self, queued: usize) -> u64 {
        let per_job = self.inner.metrics.mean_job_secs().unwrap_or(5.0);
        let est = per_job * (queued as f64 / self.inner.concurrency as f64).min(1.0);
        est.ceil().clamp(1.0, 60.0) as u64
    }

    /// Job `id` if `caller` may see it: an admin sees every job, any other token only its own.
    /// A job of another token is [`ServiceError::NotFound`] exactly like one that does not
    /// exist, so a token cannot learn that others' jobs exist.
    fn visible_row(&self, id: &str, caller: &Caller) -> Result<JobRow, ServiceError> {
        match self.inner.store.get(id)? {
            Some(row) if caller.may_see(row.submitter.as_deref()) => Ok(row),
            _ => Err(ServiceError::NotFound(id.to_string())),
        }
    }

    /// Job `id`'s status, if `caller` may see it.
    pub fn status(&self, id: &str, caller: &Caller) -> Result<JobStatus, ServiceError> {
        self.visible_row(id, caller)?;
        self.status_of(id)
    }

    fn status_of(&self, id: &str) -> Result<JobStatus, ServiceError> {
        let row = self
            .inner
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        let queue_position = match row.state {
            JobState::Queued => self.sched().queued.iter().position(|q| q == id),
            _ => None,
        };
        Ok(status_from(row, queue_position))
    }

    /// A page of the jobs `caller` may see (an admin every job, any other token its own)
    /// that match `query`, newest first, with the cursor of the next page if there is one.
    pub fn list(&self, query: &ListQuery, caller: &Caller) -> Result<JobPage, ServiceError> {
        let mut filter = query.filter.clone();
        filter.submitter = (!caller.admin).then(|| caller.name.clone());
        // One more than asked: whether a next page exists, without a cursor to an empty one.
        let mut rows = self.inner.store.list(&filter, query.limit + 1)?;
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
        let positions: HashMap<String, usize> = if rows.iter().any(|r| r.state == JobState::Queued)
        {
            let sched = self.sched();
            sched
                .queued
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect()
        } else {
            HashMap::new()
        };
        let jobs = rows
            .into_iter()
            .map(|row| {
                let pos = match row.state {
                    JobState::Queued => positions.get(&row.id).copied(),
                    _ => None,
                };
                status_from(row, pos)
            })
            .collect();
        Ok(JobPage { jobs, next_cursor })
    }

    /// Cancels a job `caller` may see: a queued one never starts; a running one has its
    /// sandbox removed. Waits (up to `wait`) for it to finish and returns its status.
    pub async fn cancel(
        &self,
        id: &str,
        caller: &Caller,
        wait: Duration,
    ) -> Result<JobStatus, ServiceError> {
        let row = self.visible_row(id, caller)?;
        let dequeued = {
            let mut sched = self.sched();
            if let Some(pos) = sched.queued.iter().position(|q| q == id) {
                sched.queued.remove(pos);
                true
            } else {
                if let Some(token) = sched.running.get(id) {
                    token.cancel();
                }
                false
            }
        };
        if dequeued {
            info!(job = %id, "cancelled while queued");
            self.finish_unstarted(
                &row,
                Outcome::Cancelled,
                Some("cancelled before it started".into()),
            )?;
        } else {
            let rx = self.live().get(id).map(|tx| tx.subscribe());
            if let Some(mut rx) = rx {
                let _ = tokio::time::timeout(wait, async {
                    loop {
                        if !self.sched().running.contains_key(id) {
                            break;
                        }
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        self.status_of(id)
    }

    /// A job's events from offset `from`, live: the stream ends after the result, or when the
    /// service closes (resume with the next offset).
    pub fn events(
        &self,
        id: &str,
        from: u64,
        caller: &Caller,
    ) -> Result<impl Stream<Item = EventRecord> + Send + 'static, ServiceError> {
        self.visible_row(id, caller)?;
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
        Ok(futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(ev) = st.buf.pop_front() {
                    return Some((ev, st));
                }
                if st.done {
                    return None;
                }
                // Subscribe before reading, so an event appended after the read wakes us.
                let rx = st.svc.live().get(&st.id).map(|tx| tx.subscribe());
                let store = &st.svc.inner.store;
                match store.events(&st.id, st.next, 256) {
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
                match store.get(&st.id) {
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
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = closed.cancelled() => return None,
                }
            }
        }))
    }

    /// The host file of artifact `rel` (a relative path under the job's artifact directory).
    pub fn artifact(&self, id: &str, rel: &str, caller: &Caller) -> Result<PathBuf, ServiceError> {
        self.visible_row(id, caller)?;
        let not_found = || ServiceError::NotFound(format!("{id}/artifacts/{rel}"));
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || !rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(not_found());
        }
        let path = self.job_dir(id).join("out").join(rel_path);
        // The extractor never creates links; refuse one anyway rather than follow it.
        let meta = std::fs::symlink_metadata(&path).map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok(path)
    }

    /// The job's artifacts, as paths relative to its artifact directory.
    pub fn artifacts(&self, id: &str, caller: &Caller) -> Result<Vec<(String, u64)>, ServiceError> {
        self.visible_row(id, caller)?;
        let root = self.job_dir(id).join("out");
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

    /// Checks the engine answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        match tokio::time::timeout(Duration::from_secs(5), self.inner.backend.engine()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Engine(e)),
            Err(_) => Err(ServiceError::Internal(
                "the Docker engine did not answer within 5s".into(),
            )),
        }
    }

    pub fn metrics_text(&self) -> String {
        let (queued, running) = {
            let s = self.sched();
            (s.queued.len(), s.running.len())
        };
        let pool = self.inner.runner.pool().map(|p| p.totals());
        self.inner
            .metrics
            .render(queued, running, self.inner.concurrency, pool)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// SIGTERM: accept nothing new, start nothing new, let running jobs go on for `grace`,
    /// then cancel them and wait until their sandboxes are gone. Queued jobs stay queued in
    /// the store and run at the next start.
    pub async fn drain(&self, grace: Duration) {
        let s = &self.inner;
        s.draining.store(true, Ordering::SeqCst);
        s.wake.notify_one();
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
            for token in self.sched().running.values() {
                token.cancel();
            }
            let hard = tokio::time::Instant::now() + Duration::from_secs(60);
            while running() > 0 && tokio::time::Instant::now() < hard {
                let _ = tokio::time::timeout(Duration::from_millis(200), s.idle.notified()).await;
            }
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
        let slots = Arc::new(Semaphore::new(s.concurrency));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let next = loop {
                if s.draining.load(Ordering::SeqCst) {
                    return;
                }
                let next = {
                    let mut sched = self.sched();
                    let next = sched.queued.pop_front();
                    if let Some(id) = &next {
                        let token = CancellationToken::new();
                        sched.running.insert(id.clone(), token.clone());
                        Some((id.clone(), token))
                    } else {
                        None
                    }
                };
                match next {
                    Some(n) => break n,
                    None => s.wake.notified().await,
                }
            };
            let svc = self.clone();
            tokio::spawn(async move {
                let (id, token) = next;
                svc.run_one(&id, token).await;
                svc.sched().running.remove(&id);
                svc.live().remove(&id);
                drop(permit);
                svc.inner.idle.notify_waiters();
            });
        }
    }

    async fn run_one(&self, id: &str, token: CancellationToken) {
        let s = &self.inner;
        let row = match s.store.get(id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                error!(job = %id, error = %error_chain(&e), "cannot read a queued job");
                return;
            }
        };
        let fail = |why: String| {
            let r = self.finish_unstarted(&row, Outcome::SandboxError, Some(why));
            if let Err(e) = r {
                error!(job = %id, error = %error_chain(&e), "cannot record a result");
            }
        };
        let job = serde_json::from_str::<JobSpec>(&row.spec)
            .map_err(|e| e.to_string())
            .and_then(|spec| {
                spec::validate(
                    spec,
                    &s.config.profiles_dir,
                    Path::new("spec"),
                    &s.config.policy,
                )
                .map_err(|e| error_chain(&e))
            });
        let mut job = match job {
            Ok(j) => j,
            Err(e) => return fail(format!("the stored spec no longer validates: {e}")),
        };
        job.id = id.to_string();
        // The source was checked at submission; a link planted in a root since then must not
        // take the job out of it.
        if let Some(w) = &job.workspace {
            let own = self.job_dir(id).canonicalize().unwrap_or_default();
            let roots = &s.config.workspace_roots;
            if !(w.source.starts_with(&own) || roots.iter().any(|r| w.source.starts_with(r))) {
                return fail(format!(
                    "the workspace source {} is no longer under the service's workspace roots (a link was planted after submission)",
                    w.source.display()
                ));
            }
        }
        let started = now_ms();
        if let Err(e) = s.store.set_running(id, started) {
            return fail(error_chain(&e));
        }
        s.metrics
            .started((started - row.submitted_ms).max(0) as f64 / 1000.0);
        let preflight = tokio::select! {
            p = s.runner.preflight(&job) => p,
            _ = token.cancelled() => {
                let r = self.finish_unstarted(&row, Outcome::Cancelled, None);
                if let Err(e) = r {
                    error!(job = %id, error = %error_chain(&e), "cannot record a result");
                }
                return;
            }
        };
        let preflight = match preflight {
            Ok(p) => p,
            Err(e) => return fail(error_chain(&e)),
        };
        info!(job = %id, "starting");
        let mut handle = s.runner.start(job, preflight, self.job_dir(id).join("out"));
        let mut seq = row.events;
        let mut cancel_sent = false;
        let mut finished = false;
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
            if matches!(ev, JobEvent::Finished { .. }) {
                finished = true;
                self.tighten_artifacts(id).await;
            }
            self.record(id, &mut seq, &ev);
        }
        if !finished {
            let result = handle.wait().await;
            self.tighten_artifacts(id).await;
            self.record(
                id,
                &mut seq,
                &JobEvent::Finished {
                    result: Box::new(result),
                },
            );
        }
    }

    /// Makes the job's artifacts private (the extractor gives them 0644/0755) before its
    /// result is recorded, so a finished job's files are 0600 in 0700 directories.
    async fn tighten_artifacts(&self, id: &str) {
        let out = self.job_dir(id).join("out");
        let r = tokio::task::spawn_blocking(move || {
            if out.exists() {
                access::tighten_tree(&out)
            } else {
                Ok(())
            }
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(job = %id, error = %e, "cannot make the job's artifacts private"),
            Err(e) => warn!(job = %id, error = %e, "cannot make the job's artifacts private"),
        }
    }

    /// Appends one event (the result too, when it is the last) and wakes subscribers.
    fn record(&self, id: &str, seq: &mut u64, ev: &JobEvent) {
        let s = &self.inner;
        let json = match serde_json::to_string(ev) {
            Ok(j) => j,
            Err(e) => {
                error!(job = %id, error = %e, "cannot encode an event");
                return;
            }
        };
        let r = match ev {
            JobEvent::Finished { result } => {
                let result_json = serde_json::to_string(result).unwrap_or_default();
                // A job that never ran has no run time to count.
                let ran = result.duration_ms > 0 || !result.phases_ms.is_empty();
                s.metrics.finished(
                    result.outcome.as_str(),
                    ran.then_some(result.duration_ms as f64 / 1000.0),
                );
                s.store.finish(
                    id,
                    *seq,
                    &json,
                    result.outcome.as_str(),
                    &result_json,
                    now_ms(),
                )
            }
            _ => s.store.append_event(id, *seq, &json),
        };
        match r {
            Ok(()) => {
                *seq += 1;
                if let Some(tx) = self.live().get(id) {
                    tx.send_replace(*seq);
                }
            }
            Err(e) => error!(job = %id, error = %error_chain(&e), "cannot store an event"),
        }
    }

    /// Finishes a job that never ran (or whose run was lost) with a synthesized result.
    fn finish_unstarted(
        &self,
        row: &JobRow,
        outcome: Outcome,
        error: Option<String>,
    ) -> Result<(), ServiceError> {
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
        let result = JobResult {
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
        };
        let mut seq = row.events;
        self.record(
            &row.id,
            &mut seq,
            &JobEvent::Finished {
                result: Box::new(result),
            },
        );
        if let Some(tx) = self.live().remove(&row.id) {
            tx.send_replace(seq);
        }
        Ok(())
    }

    async fn prune_loop(self) {
        let retention = self.inner.config.retention.0;
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        loop {
            let before = now_ms() - retention.as_millis() as i64;
            match self.inner.store.prune(before) {
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
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.closed.cancelled() => return,
            }
        }
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
    }
}

/// The warm pool's name for the service with this data directory: the same across restarts,
/// hosts and pids, different for two services sharing an engine.
fn pool_name(data_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data_dir.display().to_string().as_bytes()))[..8].to_string()
}

#[cfg(test)]
mod tests;
