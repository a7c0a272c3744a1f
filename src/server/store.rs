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
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
        }
    }
    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            _ => JobState::Finished,
        }
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
}

const COLUMNS: &str =
    "id, state, spec, submitted_ms, started_ms, finished_ms, outcome, result, events, submitter";

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
                 submitter    TEXT
             );
             CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
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

    /// Records a submission by the token named `submitter`. This one commit is synced to disk
    /// (`synchronous = FULL`) before it returns: a client told `202` keeps its job even through
    /// a power loss.
    pub fn insert(
        &self,
        id: &str,
        spec: &str,
        submitter: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(ctx("recording a submission"))?;
        let r = conn.execute(
            "INSERT INTO jobs (id, state, spec, submitted_ms, submitter)
             VALUES (?1, 'queued', ?2, ?3, ?4)",
            params![id, spec, now_ms, submitter],
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
            s.insert("a", "{}", "ci", 1).expect("insert");
            s.insert("b", "{}", "admin", 2).expect("insert");
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
                 INSERT INTO jobs (id, state, spec, submitted_ms) VALUES ('old', 'queued', '{}', 1);",
            )
            .expect("old schema");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let s = Store::open(&path).expect("migrates");
        assert_eq!(s.get("old").expect("get").expect("kept").submitter, None);
        s.insert("new", "{}", "ci", 2).expect("insert");
        assert_eq!(
            s.in_state(JobState::Queued).expect("list")[1]
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
}
