//! The default job store: one SQLite file holding every job, its events and its result, for
//! one controller.
//!
//! Write-ahead logging with `synchronous = NORMAL`: a committed event survives the process
//! dying (`kill -9`); an operating-system crash may lose the last moments of a running job's
//! stream. Submissions are synced before they are acknowledged (see [`SqliteStore::insert`]).
//! Calls are short and synchronous, made under one mutex. The database and its `-wal`/`-shm`
//! files are made 0600 whatever the umask. Leases are recorded but never expire here: the one
//! controller that could hold them reports its running jobs lost when it starts again.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Blob, Claim, Inserted, JobFilter, JobRow, JobState, JobStore, Lease, NewJob, StoreError, Write,
};

fn ctx(action: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::new(action, source)
}

const COLUMNS: &str = "id, state, spec, submitted_ms, started_ms, finished_ms, outcome, result, events, submitter, image, owner, epoch, attempts";

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// Columns added after the first release, each with what fills it in an older database.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("submitter", "TEXT"),
    ("image", "TEXT"),
    ("owner", "TEXT"),
    ("epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
    ("idem_key", "TEXT"),
    ("idem_hash", "TEXT"),
];

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(ctx("opening the database"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS jobs (
                 n            INTEGER PRIMARY KEY AUTOINCREMENT,
                 id           TEXT NOT NULL UNIQUE,
                 state        TEXT NOT NULL,
                 spec         TEXT NOT NULL,
                 submitted_ms INTEGER NOT NULL,
                 started_ms   INTEGER,
                 finished_ms  INTEGER,
                 outcome      TEXT,
                 result       TEXT,
                 events       INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
             CREATE INDEX IF NOT EXISTS jobs_listing ON jobs(submitted_ms, id);
             CREATE TABLE IF NOT EXISTS events (
                 job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                 seq    INTEGER NOT NULL,
                 body   TEXT NOT NULL,
                 PRIMARY KEY (job_id, seq)
             ) WITHOUT ROWID;",
        )
        .map_err(ctx("creating the schema"))?;
        for (name, decl) in ADDED_COLUMNS {
            let has = conn
                .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")
                .and_then(|mut st| st.exists([name]))
                .map_err(ctx("reading the schema"))?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {name} {decl}"))
                    .map_err(ctx("adding a column"))?;
                // A database made before jobs recorded their image: filled from the stored
                // specs (listings filter on it). Jobs without a submitter keep NULL: only an
                // admin token sees them.
                if *name == "image" {
                    conn.execute(
                        "UPDATE jobs SET image = COALESCE(json_extract(spec, '$.image'), ?1)",
                        params![crate::spec::DEFAULT_IMAGE],
                    )
                    .map_err(ctx("adding the image column"))?;
                }
            }
        }
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(submitter, idem_key);
             CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, submitted_ms, id);",
        )
        .map_err(ctx("creating the indexes"))?;
        // GitHub webhook deliveries, deduplicated by (hook id, delivery id): a redelivery
        // reuses its delivery id.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS github_deliveries (
                 hook_id     TEXT NOT NULL,
                 delivery_id TEXT NOT NULL,
                 event       TEXT NOT NULL,
                 received_ms INTEGER NOT NULL,
                 state       TEXT NOT NULL,
                 work        TEXT,
                 reason      TEXT,
                 PRIMARY KEY (hook_id, delivery_id)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS github_deliveries_state ON github_deliveries(state);",
        )
        .map_err(ctx("creating the github_deliveries table"))?;
        // SQLite creates its files 0644 minus the umask, and the -wal/-shm take the database's
        // mode: set 0600 whatever the umask was.
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::new(
                        format!("making {} private (chmod 0600)", Path::new(&p).display()),
                        e,
                    ));
                }
                _ => {}
            }
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a submission. This one commit is synced to disk (`synchronous = FULL`) before
    /// it returns: a client told `202` keeps its job even through a power loss.
    pub fn insert_job(&self, job: &NewJob, now_ms: i64) -> Result<Inserted, StoreError> {
        let action = "recording a submission";
        let mut conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(ctx(action))?;
        let r = (|| {
            let tx = conn.transaction()?;
            if let Some((key, hash)) = &job.idempotency {
                let seen: Option<(String, Option<String>)> = tx
                    .query_row(
                        "SELECT id, idem_hash FROM jobs WHERE submitter = ?1 AND idem_key = ?2",
                        params![job.submitter, key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, seen_hash)) = seen {
                    return Ok(if seen_hash.as_deref() == Some(hash) {
                        Inserted::Existing(id)
                    } else {
                        Inserted::KeyReused(id)
                    });
                }
            }
            let queued: i64 = tx.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )?;
            if queued as usize >= job.capacity {
                return Ok(Inserted::Full(queued as usize));
            }
            let last: i64 =
                tx.query_row("SELECT COALESCE(MAX(submitted_ms), 0) FROM jobs", [], |r| {
                    r.get(0)
                })?;
            let (key, hash) = job.idempotency.clone().unzip();
            tx.execute(
                "INSERT INTO jobs (id, state, spec, submitted_ms, submitter, image, idem_key, idem_hash)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.id,
                    job.spec,
                    now_ms.max(last + 1),
                    job.submitter,
                    job.image,
                    key,
                    hash
                ],
            )?;
            tx.commit()?;
            Ok(Inserted::New)
        })();
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(ctx(action))?;
        r.map_err(ctx(action))
    }

    fn rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        action: &str,
    ) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(ctx(action))?;
        let rows = stmt
            .query_map(args, row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(ctx(action))?;
        Ok(rows)
    }

    pub fn get_job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(ctx("reading a job"))
    }

    /// Takes the oldest queued job for `owner`.
    pub fn claim_job(&self, owner: &str, now_ms: i64) -> Result<Option<Claim>, StoreError> {
        let action = "claiming a queued job";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx(action))?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY submitted_ms, id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(ctx(action))?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET state = 'running', owner = ?2, epoch = epoch + 1,
                 attempts = attempts + 1, started_ms = COALESCE(started_ms, ?3)
             WHERE id = ?1",
            params![id, owner, now_ms],
        )
        .map_err(ctx(action))?;
        let row = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row,
            )
            .map_err(ctx(action))?;
        tx.commit().map_err(ctx(action))?;
        Ok(Some(Claim {
            row,
            lost_owner: None,
        }))
    }

    /// Appends event `seq` of the job held at `epoch` (or, with `finish`, also records the
    /// result); `Fenced` when the job is not held at `epoch` or `seq` is not its next.
    fn write_event(
        &self,
        id: &str,
        epoch: Option<i64>,
        seq: u64,
        body: &str,
        finish: Option<(&str, &str, i64)>,
    ) -> Result<Write, StoreError> {
        let action = if finish.is_some() {
            "recording a result"
        } else {
            "appending an event"
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx(action))?;
        let held = "id = ?1 AND events = ?2 AND ((?3 IS NULL AND state = 'queued') OR (epoch = ?3 AND state = 'running'))";
        let n = match finish {
            None => tx.execute(
                &format!("UPDATE jobs SET events = ?2 + 1 WHERE {held}"),
                params![id, seq as i64, epoch],
            ),
            Some((outcome, result, now_ms)) => tx.execute(
                &format!(
                    "UPDATE jobs SET state = 'finished', events = ?2 + 1, outcome = ?4,
                         result = ?5, finished_ms = ?6 WHERE {held}"
                ),
                params![id, seq as i64, epoch, outcome, result, now_ms],
            ),
        }
        .map_err(ctx(action))?;
        if n == 0 {
            return Ok(Write::Fenced);
        }
        tx.execute(
            "INSERT INTO events (job_id, seq, body) VALUES (?1, ?2, ?3)",
            params![id, seq as i64, body],
        )
        .map_err(ctx(action))?;
        tx.commit().map_err(ctx(action))?;
        Ok(Write::Done)
    }

    /// At most `limit` jobs matching `filter`, newest first: by `submitted_ms`, then by id,
    /// both descending.
    pub fn list_jobs(&self, filter: &JobFilter, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        use rusqlite::types::Value;
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        // `col IN (?, ?, …)` over `values`.
        let mut any_of = |col: &str, values: Vec<Value>, conds: &mut Vec<String>| {
            if values.is_empty() {
                return;
            }
            let marks = vec!["?"; values.len()].join(", ");
            conds.push(format!("{col} IN ({marks})"));
            args.extend(values);
        };
        any_of(
            "state",
            filter
                .states
                .iter()
                .map(|s| Value::Text(s.as_str().into()))
                .collect(),
            &mut conds,
        );
        any_of(
            "outcome",
            filter.outcomes.iter().cloned().map(Value::Text).collect(),
            &mut conds,
        );
        any_of(
            "image",
            filter.images.iter().cloned().map(Value::Text).collect(),
            &mut conds,
        );
        any_of(
            "submitter",
            filter.submitter.iter().cloned().map(Value::Text).collect(),
            &mut conds,
        );
        if let Some(since) = filter.since_ms {
            conds.push("submitted_ms >= ?".into());
            args.push(Value::Integer(since));
        }
        if let Some(k) = &filter.after {
            conds.push("(submitted_ms < ? OR (submitted_ms = ? AND id < ?))".into());
            args.push(Value::Integer(k.submitted_ms));
            args.push(Value::Integer(k.submitted_ms));
            args.push(Value::Text(k.id.clone()));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM jobs");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY submitted_ms DESC, id DESC LIMIT ?");
        args.push(Value::Integer(limit.try_into().unwrap_or(i64::MAX)));
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(ctx("listing jobs"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row)
            .map_err(ctx("listing jobs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx("listing jobs"))?;
        Ok(rows)
    }

    /// Events `from..` (at most `limit`), in order.
    pub fn event_bodies(&self, id: &str, from: u64, limit: u64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM events WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(ctx("reading events"))?;
        let rows = stmt
            .query_map(params![id, from as i64, limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(ctx("reading events"))?;
        Ok(rows)
    }

    /// Deletes finished jobs that finished before `before_ms`; returns their ids.
    pub fn prune_jobs(&self, before_ms: i64) -> Result<Vec<String>, StoreError> {
        let action = "pruning old jobs";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx(action))?;
        let ids = {
            let mut stmt = tx
                .prepare(
                    "SELECT id FROM jobs WHERE state = 'finished' AND finished_ms < ?1 LIMIT 1000",
                )
                .map_err(ctx(action))?;
            stmt.query_map(params![before_ms], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(ctx(action))?
        };
        for id in &ids {
            tx.execute("DELETE FROM events WHERE job_id = ?1", params![id])
                .map_err(ctx(action))?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", params![id])
                .map_err(ctx(action))?;
        }
        tx.commit().map_err(ctx(action))?;
        Ok(ids)
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
    fn shared(&self) -> bool {
        false
    }

    async fn insert(&self, job: NewJob, now_ms: i64) -> Result<Inserted, StoreError> {
        self.insert_job(&job, now_ms)
    }

    async fn queued(&self) -> Result<usize, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(ctx("counting queued jobs"))
    }

    async fn position(&self, row: &JobRow) -> Result<usize, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'
                     AND (submitted_ms < ?1 OR (submitted_ms = ?1 AND id < ?2))",
                params![row.submitted_ms, row.id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(ctx("reading a queue position"))
    }

    async fn claim(
        &self,
        owner: &str,
        _lease: Duration,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError> {
        self.claim_job(owner, now_ms)
    }

    async fn renew(
        &self,
        owner: &str,
        _lease: Duration,
        held: &[(String, i64)],
    ) -> Result<Vec<(String, Lease)>, StoreError> {
        let mut out = Vec::with_capacity(held.len());
        for (id, epoch) in held {
            let cancel: Option<bool> = self
                .conn()
                .query_row(
                    "SELECT cancel_requested FROM jobs
                     WHERE id = ?1 AND epoch = ?2 AND owner = ?3 AND state = 'running'",
                    params![id, epoch, owner],
                    |r| r.get(0),
                )
                .optional()
                .map_err(ctx("renewing leases"))?;
            out.push((
                id.clone(),
                match cancel {
                    Some(cancel_requested) => Lease::Renewed { cancel_requested },
                    None => Lease::Lost,
                },
            ));
        }
        Ok(out)
    }

    async fn take_over(
        &self,
        _owner: &str,
        _lease: Duration,
        _limit: usize,
        _held_by: Option<&str>,
    ) -> Result<Vec<Claim>, StoreError> {
        // One controller: what it held when it died is reported lost when it starts again.
        Ok(Vec::new())
    }

    async fn requeue(&self, id: &str, epoch: i64) -> Result<Write, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE jobs SET state = 'queued', owner = NULL
                 WHERE id = ?1 AND epoch = ?2 AND state = 'running'",
                params![id, epoch],
            )
            .map_err(ctx("requeueing a job"))?;
        Ok(if n == 1 { Write::Done } else { Write::Fenced })
    }

    async fn append_event(
        &self,
        id: &str,
        epoch: i64,
        seq: u64,
        body: &str,
    ) -> Result<Write, StoreError> {
        self.write_event(id, Some(epoch), seq, body, None)
    }

    async fn finish(
        &self,
        id: &str,
        epoch: Option<i64>,
        seq: u64,
        body: &str,
        outcome: &str,
        result: &str,
        now_ms: i64,
    ) -> Result<Write, StoreError> {
        self.write_event(id, epoch, seq, body, Some((outcome, result, now_ms)))
    }

    async fn request_cancel(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state <> 'finished'",
                params![id],
            )
            .map_err(ctx("requesting a cancel"))?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.get_job(id)
    }

    async fn running(&self) -> Result<Vec<JobRow>, StoreError> {
        self.rows(
            &format!("SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY n"),
            [],
            "listing running jobs",
        )
    }

    async fn list(&self, filter: &JobFilter, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        self.list_jobs(filter, limit)
    }

    async fn events(&self, id: &str, from: u64, limit: u64) -> Result<Vec<String>, StoreError> {
        self.event_bodies(id, from, limit)
    }

    async fn prune(&self, before_ms: i64) -> Result<Vec<String>, StoreError> {
        self.prune_jobs(before_ms)
    }

    async fn put_blob(
        &self,
        _id: &str,
        _epoch: i64,
        _kind: Blob,
        _data: Vec<u8>,
    ) -> Result<Write, StoreError> {
        // The one controller keeps the job's files on its disk.
        Ok(Write::Done)
    }

    async fn blob(&self, _id: &str, _kind: Blob) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}

/// A GitHub webhook delivery as recorded: `queued` (with its work, JSON) or `ignored` (with
/// the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub hook_id: String,
    pub delivery_id: String,
    pub event: String,
    pub received_ms: i64,
    pub state: String,
    pub work: Option<String>,
    pub reason: Option<String>,
}

impl SqliteStore {
    /// Records a delivery; `false` if this (hook id, delivery id) was recorded before.
    pub fn record_delivery(&self, d: &Delivery) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO github_deliveries
                     (hook_id, delivery_id, event, received_ms, state, work, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    d.hook_id,
                    d.delivery_id,
                    d.event,
                    d.received_ms,
                    d.state,
                    d.work,
                    d.reason
                ],
            )
            .map_err(ctx("recording a GitHub delivery"))?;
        Ok(n == 1)
    }

    /// Takes the oldest `queued` delivery and marks it `running`.
    pub fn claim_delivery(&self) -> Result<Option<Delivery>, StoreError> {
        let Some(d) = self.deliveries("queued")?.into_iter().next() else {
            return Ok(None);
        };
        self.set_delivery_state(&d, "running", None)?;
        Ok(Some(Delivery {
            state: "running".into(),
            ..d
        }))
    }

    /// Sets a delivery's state (`running`, `done`, `failed`) and the reason or outcome.
    pub fn set_delivery_state(
        &self,
        d: &Delivery,
        state: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE github_deliveries SET state = ?3, reason = COALESCE(?4, reason)
                 WHERE hook_id = ?1 AND delivery_id = ?2",
                params![d.hook_id, d.delivery_id, state, reason],
            )
            .map_err(ctx("updating a GitHub delivery"))?;
        Ok(())
    }

    /// After a crash: deliveries left `running` are `queued` again.
    pub fn requeue_running_deliveries(&self) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "UPDATE github_deliveries SET state = 'queued' WHERE state = 'running'",
                [],
            )
            .map_err(ctx("requeueing GitHub deliveries"))
    }

    /// Deliveries in `state`, oldest first.
    pub fn deliveries(&self, state: &str) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT hook_id, delivery_id, event, received_ms, state, work, reason
                 FROM github_deliveries WHERE state = ?1 ORDER BY received_ms",
            )
            .map_err(ctx("listing GitHub deliveries"))?;
        let rows = st
            .query_map(params![state], |r| {
                Ok(Delivery {
                    hook_id: r.get(0)?,
                    delivery_id: r.get(1)?,
                    event: r.get(2)?,
                    received_ms: r.get(3)?,
                    state: r.get(4)?,
                    work: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(ctx("listing GitHub deliveries"))?;
        Ok(rows)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        state: JobState::parse(&r.get::<_, String>(1)?),
        spec: r.get(2)?,
        submitted_ms: r.get(3)?,
        started_ms: r.get(4)?,
        finished_ms: r.get(5)?,
        outcome: r.get(6)?,
        result: r.get(7)?,
        events: r.get::<_, i64>(8)? as u64,
        submitter: r.get(9)?,
        image: r
            .get::<_, Option<String>>(10)?
            .unwrap_or_else(|| crate::spec::DEFAULT_IMAGE.to_string()),
        owner: r.get(11)?,
        epoch: r.get(12)?,
        attempts: r.get::<_, i64>(13)?.max(0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::ListKey;

    /// A job row as an older cordon or another test wrote it: exactly these values.
    fn put(s: &SqliteStore, id: &str, image: &str, submitter: &str, ms: i64) {
        s.conn()
            .execute(
                "INSERT INTO jobs (id, state, spec, submitted_ms, submitter, image)
                 VALUES (?1, 'queued', '{}', ?2, ?3, ?4)",
                params![id, ms, submitter, image],
            )
            .expect("insert");
    }

    fn set(s: &SqliteStore, id: &str, state: &str, outcome: Option<&str>, finished: Option<i64>) {
        s.conn()
            .execute(
                "UPDATE jobs SET state = ?2, outcome = ?3, finished_ms = ?4 WHERE id = ?1",
                params![id, state, outcome, finished],
            )
            .expect("update");
    }

    fn new_job(id: &str, submitter: &str, key: Option<(&str, &str)>) -> NewJob {
        NewJob {
            id: id.into(),
            spec: "{}".into(),
            image: "img".into(),
            submitter: submitter.into(),
            idempotency: key.map(|(k, h)| (k.into(), h.into())),
            workspace: None,
            capacity: 3,
        }
    }

    /// Claims, fenced writes, the queue's bound and order, idempotency keys: what the queue
    /// relies on, on the one-controller store.
    #[test]
    fn claims_are_fenced_by_epoch_and_submissions_by_key_and_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("db")).expect("open");
        assert_eq!(
            s.insert_job(&new_job("a", "ci", Some(("k1", "h1"))), 100)
                .expect("a"),
            Inserted::New
        );
        assert_eq!(
            s.insert_job(&new_job("a2", "ci", Some(("k1", "h1"))), 101)
                .expect("again"),
            Inserted::Existing("a".into())
        );
        assert_eq!(
            s.insert_job(&new_job("a3", "ci", Some(("k1", "other"))), 101)
                .expect("reused"),
            Inserted::KeyReused("a".into())
        );
        assert_eq!(
            s.insert_job(&new_job("b", "bob", Some(("k1", "h1"))), 50)
                .expect("b"),
            Inserted::New
        );
        assert_eq!(
            s.insert_job(&new_job("c", "ci", None), 100).expect("c"),
            Inserted::New
        );
        assert_eq!(
            s.insert_job(&new_job("d", "ci", None), 100).expect("d"),
            Inserted::Full(3)
        );
        // Strictly later than every other job, even with the clock behind.
        let b = s.get_job("b").expect("get").expect("b");
        assert_eq!(b.submitted_ms, 101);

        let claim = s.claim_job("me", 200).expect("claim").expect("a job");
        assert_eq!(claim.row.id, "a", "the oldest first");
        assert_eq!((claim.row.epoch, claim.row.attempts), (1, 1));
        assert_eq!(claim.row.owner.as_deref(), Some("me"));
        assert_eq!(
            s.write_event("a", Some(1), 0, "{}", None).expect("write"),
            Write::Done
        );
        assert_eq!(
            s.write_event("a", Some(1), 0, "{}", None).expect("dup"),
            Write::Fenced,
            "seq is the next one only"
        );
        assert_eq!(
            s.write_event("a", Some(0), 1, "{}", None).expect("old"),
            Write::Fenced,
            "an old epoch writes nothing"
        );
        assert_eq!(
            s.write_event("b", None, 0, "{}", Some(("cancelled", "{}", 300)))
                .expect("queued"),
            Write::Done,
            "a queued job can be finished without a claim"
        );
        assert_eq!(
            s.write_event("a", None, 1, "{}", Some(("cancelled", "{}", 300)))
                .expect("running"),
            Write::Fenced,
            "a running one only by its claim"
        );
        assert_eq!(
            s.write_event("a", Some(1), 1, "{}", Some(("passed", "{}", 300)))
                .expect("finish"),
            Write::Done
        );
        let a = s.get_job("a").expect("get").expect("a");
        assert_eq!((a.state, a.events), (JobState::Finished, 2));
        assert_eq!(s.event_bodies("a", 0, 10).expect("events").len(), 2);
    }

    #[test]
    fn events_and_results_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let s = SqliteStore::open(&path).expect("open");
            put(&s, "a", "img", "ci", 1);
            put(&s, "b", "img", "admin", 2);
            let c = s.claim_job("me", 3).expect("claim").expect("a");
            assert_eq!(
                s.write_event("a", Some(c.row.epoch), 0, "{\"type\":\"started\"}", None)
                    .expect("event"),
                Write::Done
            );
            assert_eq!(
                s.write_event(
                    "a",
                    Some(c.row.epoch),
                    1,
                    "{\"type\":\"finished\"}",
                    Some(("passed", "{}", 4))
                )
                .expect("finish"),
                Write::Done
            );
        }
        let s = SqliteStore::open(&path).expect("reopen");
        let a = s.get_job("a").expect("get").expect("exists");
        assert_eq!(a.state, JobState::Finished);
        assert_eq!(a.events, 2);
        assert_eq!(a.submitter.as_deref(), Some("ci"));
        assert_eq!(s.event_bodies("a", 1, 10).expect("events").len(), 1);
        assert_eq!(s.claim_job("me", 5).expect("claim").expect("b").row.id, "b");
        assert_eq!(s.prune_jobs(5).expect("prune"), vec!["a".to_string()]);
        assert!(s.get_job("a").expect("get").is_none());
    }

    /// A database of an older cordon (no submitter column) is migrated in place; its jobs are
    /// nobody's (an admin's to see). Its files end up 0600 whatever the umask.
    #[test]
    fn an_old_database_gets_the_submitter_column() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cordon.db");
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(
                "CREATE TABLE jobs (
                     n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                     state TEXT NOT NULL, spec TEXT NOT NULL, submitted_ms INTEGER NOT NULL,
                     started_ms INTEGER, finished_ms INTEGER, outcome TEXT, result TEXT,
                     events INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO jobs (id, state, spec, submitted_ms) VALUES ('old', 'queued', '{}', 1);
                 INSERT INTO jobs (id, state, spec, submitted_ms)
                     VALUES ('old2', 'queued', '{\"image\":\"cordon/other:1\"}', 1);",
            )
            .expect("old schema");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let s = SqliteStore::open(&path).expect("migrates");
        let old = s.get_job("old").expect("get").expect("kept");
        assert_eq!(old.submitter, None);
        assert_eq!(
            old.image,
            crate::spec::DEFAULT_IMAGE,
            "no image in the spec"
        );
        assert_eq!(
            s.get_job("old2").expect("get").expect("kept").image,
            "cordon/other:1"
        );
        assert_eq!(
            s.insert_job(&new_job("new", "ci", None), 2)
                .expect("insert"),
            Inserted::New
        );
        assert_eq!(
            s.get_job("new")
                .expect("get")
                .expect("new")
                .submitter
                .as_deref(),
            Some("ci")
        );
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("cordon.db{suffix}"));
            let mode = std::fs::metadata(&p).expect("exists").mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        drop(s);
        assert!(
            SqliteStore::open(&path).is_ok(),
            "opening again changes nothing"
        );
    }

    fn ids(rows: &[JobRow]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    /// Listings: newest first by (submitted_ms, id); every filter; a key resumes exactly after
    /// a job, whatever was inserted since.
    #[test]
    fn listings_filter_and_resume_after_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("db")).expect("open");
        put(&s, "a", "py", "ci", 10);
        put(&s, "c", "py", "ci", 20);
        put(&s, "b", "other", "bob", 20);
        put(&s, "d", "py", "bob", 30);
        set(&s, "c", "running", None, None);
        set(&s, "a", "finished", Some("passed"), Some(11));
        set(&s, "d", "finished", Some("failed"), Some(31));

        let all = JobFilter::default();
        assert_eq!(
            ids(&s.list_jobs(&all, 10).expect("list")),
            ["d", "c", "b", "a"]
        );
        let page = |after: Option<&JobRow>, f: &JobFilter| {
            let f = JobFilter {
                after: after.map(|r| ListKey {
                    submitted_ms: r.submitted_ms,
                    id: r.id.clone(),
                }),
                ..f.clone()
            };
            s.list_jobs(&f, 2).expect("list")
        };
        let p1 = page(None, &all);
        assert_eq!(ids(&p1), ["d", "c"]);
        // Inserted between pages: newer than the key, so never on a later page.
        put(&s, "e", "py", "ci", 40);
        put(&s, "bb", "py", "ci", 20);
        let p2 = page(p1.last(), &all);
        assert_eq!(ids(&p2), ["bb", "b"], "same millisecond: ordered by id");
        let p3 = page(p2.last(), &all);
        assert_eq!(ids(&p3), ["a"]);

        let with = |f: JobFilter| ids(&s.list_jobs(&f, 10).expect("list")).join(",");
        assert_eq!(
            with(JobFilter {
                states: vec![JobState::Queued, JobState::Running],
                ..all.clone()
            }),
            "e,c,bb,b"
        );
        assert_eq!(
            with(JobFilter {
                outcomes: vec!["failed".into()],
                ..all.clone()
            }),
            "d"
        );
        assert_eq!(
            with(JobFilter {
                images: vec!["other".into()],
                ..all.clone()
            }),
            "b"
        );
        assert_eq!(
            with(JobFilter {
                since_ms: Some(30),
                ..all.clone()
            }),
            "e,d"
        );
        assert_eq!(
            with(JobFilter {
                submitter: Some("bob".into()),
                ..all.clone()
            }),
            "d,b"
        );
        assert_eq!(
            with(JobFilter {
                submitter: Some("nobody".into()),
                ..all.clone()
            }),
            ""
        );
    }
}
