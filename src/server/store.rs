//! The durable job store: one SQLite file holding every job, its events and its result.
//!
//! Write-ahead logging with `synchronous = NORMAL`: a committed event survives the process
//! dying (`kill -9`); an operating-system crash may lose the last moments of a running job's
//! stream. Submissions are synced before they are acknowledged (see [`Store::insert`]).
//! Calls are short and synchronous, made under one mutex. The database and its `-wal`/`-shm`
//! files are made 0600 whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

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
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn ctx(action: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError {
        action: action.to_string(),
        source: source.into(),
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
}

const COLUMNS: &str = "id, state, spec, submitted_ms, started_ms, finished_ms, outcome, result, events, submitter, image";

/// Which jobs [`Store::list`] returns. Empty lists match anything.
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

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
                 events       INTEGER NOT NULL DEFAULT 0,
                 submitter    TEXT,
                 image        TEXT
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
        // A database made before jobs recorded their submitter gets the column (its jobs keep
        // NULL: only an admin token sees them).
        let has_submitter = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'submitter'")
            .and_then(|mut st| st.exists([]))
            .map_err(ctx("reading the schema"))?;
        if !has_submitter {
            conn.execute_batch("ALTER TABLE jobs ADD COLUMN submitter TEXT")
                .map_err(ctx("adding the submitter column"))?;
        }
        // And the image column, filled from the stored specs (listings filter on it).
        let has_image = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'image'")
            .and_then(|mut st| st.exists([]))
            .map_err(ctx("reading the schema"))?;
        if !has_image {
            conn.execute_batch("ALTER TABLE jobs ADD COLUMN image TEXT")
                .and_then(|()| {
                    conn.execute(
                        "UPDATE jobs SET image = COALESCE(json_extract(spec, '$.image'), ?1)",
                        params![crate::spec::DEFAULT_IMAGE],
                    )
                })
                .map_err(ctx("adding the image column"))?;
        }
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
                    return Err(StoreError {
                        action: format!("making {} private (chmod 0600)", Path::new(&p).display()),
                        source: e.into(),
                    });
                }
                _ => {}
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a submission of a job in `image` by the token named `submitter`. This one
    /// commit is synced to disk (`synchronous = FULL`) before it returns: a client told `202`
    /// keeps its job even through a power loss.
    pub fn insert(
        &self,
        id: &str,
        spec: &str,
        image: &str,
        submitter: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(ctx("recording a submission"))?;
        let r = conn.execute(
            "INSERT INTO jobs (id, state, spec, submitted_ms, submitter, image)
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
            params![id, spec, now_ms, submitter, image],
        );
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(ctx("recording a submission"))?;
        r.map_err(ctx("recording a submission"))?;
        Ok(())
    }

    pub fn set_running(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE jobs SET state = 'running', started_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )
            .map_err(ctx("marking a job running"))?;
        Ok(())
    }

    /// Appends event `seq` (which must be the job's next one).
    pub fn append_event(&self, id: &str, seq: u64, body: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("appending an event"))?;
        tx.execute(
            "INSERT INTO events (job_id, seq, body) VALUES (?1, ?2, ?3)",
            params![id, seq as i64, body],
        )
        .map_err(ctx("appending an event"))?;
        tx.execute(
            "UPDATE jobs SET events = ?2 WHERE id = ?1",
            params![id, (seq + 1) as i64],
        )
        .map_err(ctx("appending an event"))?;
        tx.commit().map_err(ctx("appending an event"))
    }

    /// Appends the final event and records the result, atomically.
    pub fn finish(
        &self,
        id: &str,
        seq: u64,
        body: &str,
        outcome: &str,
        result: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("recording a result"))?;
        tx.execute(
            "INSERT INTO events (job_id, seq, body) VALUES (?1, ?2, ?3)",
            params![id, seq as i64, body],
        )
        .map_err(ctx("recording a result"))?;
        tx.execute(
            "UPDATE jobs SET state = 'finished', events = ?2, outcome = ?3, result = ?4,
                 finished_ms = ?5 WHERE id = ?1",
            params![id, (seq + 1) as i64, outcome, result, now_ms],
        )
        .map_err(ctx("recording a result"))?;
        tx.commit().map_err(ctx("recording a result"))
    }

    pub fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(ctx("reading a job"))
    }

    /// Jobs in `state`, in submission order.
    pub fn in_state(&self, state: JobState) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = ?1 ORDER BY n"
            ))
            .map_err(ctx("listing jobs"))?;
        let rows = stmt
            .query_map(params![state.as_str()], row)
            .map_err(ctx("listing jobs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx("listing jobs"))?;
        Ok(rows)
    }

    /// The newest job's `submitted_ms` (0 with no jobs).
    pub fn max_submitted_ms(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT COALESCE(MAX(submitted_ms), 0) FROM jobs", [], |r| {
                r.get(0)
            })
            .map_err(ctx("reading the newest job"))
    }

    /// At most `limit` jobs matching `filter`, newest first: by `submitted_ms`, then by id,
    /// both descending.
    pub fn list(&self, filter: &JobFilter, limit: usize) -> Result<Vec<JobRow>, StoreError> {
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
    pub fn events(&self, id: &str, from: u64, limit: u64) -> Result<Vec<String>, StoreError> {
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
            .map_err(ctx("reading events"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx("reading events"))?;
        Ok(rows)
    }

    /// Deletes finished jobs that finished before `before_ms`; returns their ids.
    pub fn prune(&self, before_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("pruning old jobs"))?;
        let ids = {
            let mut stmt = tx
                .prepare(
                    "SELECT id FROM jobs WHERE state = 'finished' AND finished_ms < ?1 LIMIT 1000",
                )
                .map_err(ctx("pruning old jobs"))?;
            stmt.query_map(params![before_ms], |r| r.get::<_, String>(0))
                .map_err(ctx("pruning old jobs"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(ctx("pruning old jobs"))?
        };
        for id in &ids {
            tx.execute("DELETE FROM events WHERE job_id = ?1", params![id])
                .map_err(ctx("pruning old jobs"))?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", params![id])
                .map_err(ctx("pruning old jobs"))?;
        }
        tx.commit().map_err(ctx("pruning old jobs"))?;
        Ok(ids)
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

impl Store {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_results_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let s = Store::open(&path).expect("open");
            s.insert("a", "{}", "img", "ci", 1).expect("insert");
            s.insert("b", "{}", "img", "admin", 2).expect("insert");
            s.set_running("a", 3).expect("running");
            s.append_event("a", 0, "{\"type\":\"started\"}")
                .expect("event");
            s.finish("a", 1, "{\"type\":\"finished\"}", "passed", "{}", 4)
                .expect("finish");
            assert!(s.append_event("a", 1, "dup").is_err(), "seq is unique");
        }
        let s = Store::open(&path).expect("reopen");
        let a = s.get("a").expect("get").expect("exists");
        assert_eq!(a.state, JobState::Finished);
        assert_eq!(a.events, 2);
        assert_eq!(a.submitter.as_deref(), Some("ci"));
        assert_eq!(s.events("a", 1, 10).expect("events").len(), 1);
        let queued = s.in_state(JobState::Queued).expect("list");
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, "b");
        assert_eq!(s.prune(5).expect("prune"), vec!["a".to_string()]);
        assert!(s.get("a").expect("get").is_none());
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
        let s = Store::open(&path).expect("migrates");
        let old = s.get("old").expect("get").expect("kept");
        assert_eq!(old.submitter, None);
        assert_eq!(
            old.image,
            crate::spec::DEFAULT_IMAGE,
            "no image in the spec"
        );
        assert_eq!(
            s.get("old2").expect("get").expect("kept").image,
            "cordon/other:1"
        );
        s.insert("new", "{}", "img", "ci", 2).expect("insert");
        assert_eq!(
            s.in_state(JobState::Queued).expect("list")[2]
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
        assert!(Store::open(&path).is_ok(), "opening again changes nothing");
    }

    fn ids(rows: &[JobRow]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    /// Listings: newest first by (submitted_ms, id); every filter; a key resumes exactly after
    /// a job, whatever was inserted since.
    #[test]
    fn listings_filter_and_resume_after_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("db")).expect("open");
        s.insert("a", "{}", "py", "ci", 10).expect("insert");
        s.insert("c", "{}", "py", "ci", 20).expect("insert");
        s.insert("b", "{}", "other", "bob", 20).expect("insert");
        s.insert("d", "{}", "py", "bob", 30).expect("insert");
        s.set_running("c", 21).expect("running");
        s.finish("a", 0, "{}", "passed", "{}", 11).expect("finish");
        s.finish("d", 0, "{}", "failed", "{}", 31).expect("finish");

        let all = JobFilter::default();
        assert_eq!(ids(&s.list(&all, 10).expect("list")), ["d", "c", "b", "a"]);
        assert_eq!(s.max_submitted_ms().expect("max"), 30);
        let page = |after: Option<&JobRow>, f: &JobFilter| {
            let f = JobFilter {
                after: after.map(|r| ListKey {
                    submitted_ms: r.submitted_ms,
                    id: r.id.clone(),
                }),
                ..f.clone()
            };
            s.list(&f, 2).expect("list")
        };
        let p1 = page(None, &all);
        assert_eq!(ids(&p1), ["d", "c"]);
        // Inserted between pages: newer than the key, so never on a later page.
        s.insert("e", "{}", "py", "ci", 40).expect("insert");
        s.insert("bb", "{}", "py", "ci", 20).expect("insert");
        let p2 = page(p1.last(), &all);
        assert_eq!(ids(&p2), ["bb", "b"], "same millisecond: ordered by id");
        let p3 = page(p2.last(), &all);
        assert_eq!(ids(&p3), ["a"]);

        let with = |f: JobFilter| ids(&s.list(&f, 10).expect("list")).join(",");
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
