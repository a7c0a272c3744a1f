//! The durable job store behind the service's queue, in one of two places:
//!
//! - [`sqlite`] (the default, `store: sqlite`): one file in the data directory, one
//!   controller. Needs nothing.
//! - [`postgres`] (`store: postgres://…`): one database shared by any number of controllers.
//!   The queue is the `jobs` table: a controller claims the oldest queued job with
//!   `FOR UPDATE SKIP LOCKED` under a lease it renews; a job whose lease ran out is taken
//!   over by another controller and run again within a retry budget. Every write of a
//!   running job names the epoch its claim got, so a controller whose lease was taken over
//!   (paused, partitioned) can no longer write that job's events or result: the write is
//!   [`Write::Fenced`]. Uploaded workspaces and artifacts are kept in the database
//!   ([`Blob`]), so any controller can run any job and serve any job's files.
//!
//! Both keep the same rows and answer the same calls ([`JobStore`]); the service does not
//! know which one it has except for what only one of them can do (leases matter only with
//! several controllers).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub(crate) mod postgres;
pub(crate) mod sqlite;

pub use sqlite::{Delivery, SqliteStore};

#[derive(Debug, thiserror::Error)]
#[error("job store: {action}")]
pub struct StoreError {
    action: String,
    #[source]
    source: StoreCause,
}

#[derive(Debug, thiserror::Error)]
enum StoreCause {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    fn new(action: impl Into<String>, source: impl Into<StoreCause>) -> StoreError {
        StoreError {
            action: action.into(),
            source: source.into(),
        }
    }
    fn other(action: impl Into<String>, why: impl Into<String>) -> StoreError {
        StoreError::new(action, StoreCause::Other(why.into()))
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Finished,
}

impl JobState {
    /// Every state, in a job's order.
    pub const ALL: [JobState; 3] = [JobState::Queued, JobState::Running, JobState::Finished];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
        }
    }
    /// The state named `s`, as a client spells it.
    pub fn from_name(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    fn parse(s: &str) -> JobState {
        JobState::from_name(s).unwrap_or(JobState::Finished)
    }
}

/// One job's row.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub state: JobState,
    /// The validated spec as JSON (workspace source rewritten to the server's copy).
    pub spec: String,
    pub submitted_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub outcome: Option<String>,
    /// The result object (JSON), once finished.
    pub result: Option<String>,
    /// How many events the job has.
    pub events: u64,
    /// The name of the token that submitted it; `None` for jobs stored before names were.
    pub submitter: Option<String>,
    /// The image the job runs in (the spec's, or the default).
    pub image: String,
    /// The controller that runs it (or ran it last).
    pub owner: Option<String>,
    /// Bumped by every claim and takeover: the running controller's writes must name it.
    pub epoch: i64,
    /// How many times a controller started it (more than 1 after a takeover).
    pub attempts: u32,
}

/// Which jobs [`JobStore::list`] returns. Empty lists match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub outcomes: Vec<String>,
    pub images: Vec<String>,
    /// Submitted at or after this (Unix ms).
    pub since_ms: Option<i64>,
    /// Only this token's jobs (`None`: everyone's).
    pub submitter: Option<String>,
    /// Only jobs after this one in the listing's order: submitted before it, or at the same
    /// millisecond with a smaller id.
    pub after: Option<ListKey>,
}

/// A job's place in a listing, newest first: `(submitted_ms, id)`, both fixed at submission,
/// so a page boundary stays put whatever is inserted meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey {
    pub submitted_ms: i64,
    pub id: String,
}

/// A submission to record.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub spec: String,
    pub image: String,
    pub submitter: String,
    /// The client's `Idempotency-Key`, with a digest of what it sent under it.
    pub idempotency: Option<(String, String)>,
    /// The uploaded workspace (tar.gz), kept where every controller can read it (PostgreSQL
    /// only: with SQLite the one controller has it on disk).
    pub workspace: Option<bytes::Bytes>,
    /// Refuse (`Inserted::Full`) when this many jobs are already queued.
    pub capacity: usize,
}

/// What [`JobStore::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored and queued.
    New,
    /// The submitter sent this `Idempotency-Key` before, with the same request: that job.
    Existing(String),
    /// The submitter sent this `Idempotency-Key` before with a different request.
    KeyReused(String),
    /// The queue holds `capacity` jobs already.
    Full(usize),
}

/// A write of a running job's events or result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Write {
    Done,
    /// The job is no longer this claim's (taken over, cancelled while queued, or finished):
    /// nothing was written. The writer must stop running it.
    Fenced,
}

/// A job a controller holds: claimed from the queue, or taken over from a lost controller.
#[derive(Debug, Clone)]
pub struct Claim {
    pub row: JobRow,
    /// For a takeover: the controller whose lease ran out.
    pub lost_owner: Option<String>,
}

/// What a lease renewal says of one held job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Renewed {
        cancel_requested: bool,
    },
    /// Taken over (or gone): stop running it and write nothing more.
    Lost,
}

/// Files kept in the store for controllers that do not have them on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The uploaded workspace, as sent (tar.gz).
    Workspace,
    /// The job's artifacts (tar.gz), written before its result.
    Artifacts,
}

impl Blob {
    fn as_str(self) -> &'static str {
        match self {
            Blob::Workspace => "workspace",
            Blob::Artifacts => "artifacts",
        }
    }
}

/// What another controller did that this one should react to at once (PostgreSQL's
/// `LISTEN`; polling covers a notice that was missed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A job was queued (or requeued).
    Queued,
    /// Job `id` has new events.
    Events(String),
    /// A client asked to cancel job `id`.
    Cancel(String),
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Whether several controllers may share it (leases, takeovers and blobs matter).
    fn shared(&self) -> bool;
    /// Notices from other controllers, where the store has them.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }

    /// Records a submission, queued, with a `submitted_ms` later than every other job's
    /// (`now_ms` unless the clock went back). Synced before it returns.
    async fn insert(&self, job: NewJob, now_ms: i64) -> Result<Inserted, StoreError>;
    /// How many jobs are queued.
    async fn queued(&self) -> Result<usize, StoreError>;
    /// How many queued jobs are ahead of `row`.
    async fn position(&self, row: &JobRow) -> Result<usize, StoreError>;
    /// Takes the oldest queued job for `owner`, running, under a lease of `lease`.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError>;
    /// Renews `owner`'s leases on `held` (job id, epoch).
    async fn renew(
        &self,
        owner: &str,
        lease: Duration,
        held: &[(String, i64)],
    ) -> Result<Vec<(String, Lease)>, StoreError>;
    /// Takes over up to `limit` running jobs whose lease ran out — or, with `held_by`, the
    /// running jobs that controller holds, whatever their lease (this controller's own, after
    /// a restart) — for `owner`, under a new lease and epoch, so it can clean up and requeue
    /// or finish them. Each job goes to one taker: the epoch is bumped under the row's lock.
    async fn take_over(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        held_by: Option<&str>,
    ) -> Result<Vec<Claim>, StoreError>;
    /// Puts a held job back in the queue (keeping its events and its place).
    async fn requeue(&self, id: &str, epoch: i64) -> Result<Write, StoreError>;
    /// Appends event `seq` (the job's next) of the running job held at `epoch`.
    async fn append_event(
        &self,
        id: &str,
        epoch: i64,
        seq: u64,
        body: &str,
    ) -> Result<Write, StoreError>;
    /// Appends the final event and records the result, atomically: of the running job held
    /// at `epoch`, or with `epoch: None` of a job still queued (cancelled, or refused before
    /// it started).
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        id: &str,
        epoch: Option<i64>,
        seq: u64,
        body: &str,
        outcome: &str,
        result: &str,
        now_ms: i64,
    ) -> Result<Write, StoreError>;
    /// Asks whichever controller runs job `id` to cancel it.
    async fn request_cancel(&self, id: &str) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError>;
    /// Running jobs, whoever holds them.
    async fn running(&self) -> Result<Vec<JobRow>, StoreError>;
    /// At most `limit` jobs matching `filter`, newest first.
    async fn list(&self, filter: &JobFilter, limit: usize) -> Result<Vec<JobRow>, StoreError>;
    /// Events `from..` (at most `limit`), in order.
    async fn events(&self, id: &str, from: u64, limit: u64) -> Result<Vec<String>, StoreError>;
    /// Deletes finished jobs that finished before `before_ms`; returns their ids.
    async fn prune(&self, before_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Keeps `data` as job `id`'s `kind`, if the job is still held at `epoch`.
    async fn put_blob(
        &self,
        id: &str,
        epoch: i64,
        kind: Blob,
        data: Vec<u8>,
    ) -> Result<Write, StoreError>;
    async fn blob(&self, id: &str, kind: Blob) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The store a configuration names: `sqlite` (in `data_dir`) or a `postgres://` URL.
pub async fn open(
    store: &str,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn JobStore>, StoreError> {
    if store == "sqlite" {
        let s = SqliteStore::open(&data_dir.join("cordon.db"))?;
        return Ok(Arc::new(s));
    }
    Ok(Arc::new(postgres::PgStore::connect(store).await?))
}
