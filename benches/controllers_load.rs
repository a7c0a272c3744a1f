//! Load run of several controllers on one PostgreSQL job store (issue 13), repeatable by
//! anyone with Docker, the default image and a PostgreSQL role with CREATEDB:
//!
//! ```text
//! cargo bench --bench controllers_load          # 300 jobs, 3 controllers of concurrency 1
//! LOAD_JOBS=60 LOAD_KILL_EVERY=10 cargo bench --bench controllers_load   # a quick one
//! ```
//!
//! In one run, against one fresh database (created here, dropped at the end):
//!
//! 1. **raw**: the job's command with `docker run --rm` in the same image, at the same total
//!    parallelism as the controllers' slots (3 × `LOAD_CONCURRENCY`);
//! 2. **one**: the same jobs on ONE controller (concurrency 3 × `LOAD_CONCURRENCY`, the same
//!    store, no kills);
//! 3. **three**: the same jobs on three controllers, submitted round-robin to each from
//!    concurrent clients and streamed from another, while a controller is SIGKILLed every
//!    `LOAD_KILL_EVERY` seconds (round-robin) and restarted with the same id, data directory
//!    and port after `LOAD_RESTART_PAUSE` seconds.
//!
//! It reports lost jobs, jobs whose step ran to completion twice (and whether a takeover
//! explains it), leftover containers and volumes, p50/p95 end to end, throughput and its
//! ratios, and the database's cost per job (from `pg_stat_database` and `pg_stat_user_tables`,
//! and the CPU of the PostgreSQL server's processes), plus — with `pgbench` on the PATH — how
//! many committing transactions per second this PostgreSQL takes with and without a NOTIFY,
//! for the estimate of how far one database carries. Figures go to
//! `target/controllers-load.json`; controllers' logs to `target/controllers-load-logs/`.
//!
//! Settings: `LOAD_JOBS` (300), `LOAD_CLIENTS` (20 HTTP clients; every job is in flight at
//! once), `LOAD_CONCURRENCY` (1 per controller), `LOAD_KILL_EVERY` (20 s),
//! `LOAD_RESTART_PAUSE` (0 s), `LOAD_LEASE` (the service's default, 15s),
//! `LOAD_PHASES` (`raw,one,three`), `LOAD_POSTGRES` (else `CORDON_TEST_POSTGRES`, else
//! `postgres://cordon:cordon@127.0.0.1:5432/postgres`), `LOAD_CORDON_BIN` (the controllers'
//! binary; by default this build's).
//!
//! `cargo bench` builds the bench profile, whose dev-dependency features (tokio's
//! `test-util`) rebuild most dependencies apart from `cargo build --release`. Where that
//! takes too long, drive the release binary from a dev build of this driver:
//!
//! ```text
//! cargo build --release
//! LOAD_CORDON_BIN=target/release/cordon cargo bench --profile dev --bench controllers_load
//! ```

mod load_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use load_support::{Done, Route, env_f64, env_usize, loadavg, pct, sort, spec, tgz};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "controllers-load-token-0123456789abcdef";

fn admin_url() -> String {
    std::env::var("LOAD_POSTGRES")
        .or_else(|_| std::env::var("CORDON_TEST_POSTGRES"))
        .unwrap_or_else(|_| "postgres://cordon:cordon@127.0.0.1:5432/postgres".into())
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url} ({e}): start it, with a role that has CREATEDB, or set LOAD_POSTGRES"
            )
        });
    tokio::spawn(conn);
    client
}

/// The run's own database; dropped (with any connection left) when the run ends.
struct Database {
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Database {
        let admin = admin_url();
        let client = connect(&admin).await;
        let name = format!("cordon_load_{}", std::process::id());
        // One statement per call: DROP and CREATE DATABASE refuse a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .expect("create the run's database");
        }
        let base = admin.rsplit_once('/').expect("a URL with a database").0;
        Database {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let dropped = Command::new("psql")
            .arg(admin_url())
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
        if !dropped.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "load: could not drop database {}: drop it by hand",
                self.name
            );
        }
    }
}

/// One `cordon serve`, restartable with the same id, data directory and port.
struct Controller {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    store: String,
    child: Option<Child>,
    starts: u32,
}

/// The controllers' binary: this build's, or `LOAD_CORDON_BIN` (e.g. `target/release/cordon`
/// when the driver itself is built with `--profile dev`).
fn cordon_bin() -> PathBuf {
    std::env::var_os("LOAD_CORDON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cordon")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Controller {
    fn new(
        dir: &Path,
        logs: &Path,
        name: &str,
        concurrency: usize,
        jobs: usize,
        db: &Database,
    ) -> Self {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.join(format!("{name}.cordon.yaml"));
        std::fs::write(
            &config,
            format!(
                "data_dir: {}\ntoken: {TOKEN}\nconcurrency: {concurrency}\ncontroller_id: {name}\nqueue_capacity: {}\n",
                data.display(),
                jobs + 100
            ),
        )
        .expect("config");
        let log = logs.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        Controller {
            name: name.to_string(),
            port: free_port(),
            config,
            log,
            store: db.url.clone(),
            child: None,
            starts: 0,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until it serves; its log goes (appended) to `self.log`.
    fn start(&mut self) {
        let mut cmd = Command::new(cordon_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--config")
            .arg(&self.config)
            .env("CORDON_STORE", &self.store)
            .env("CORDON_LOG", "cordon=info")
            .env("NO_COLOR", "1")
            .env_remove("CORDON_TOKEN")
            .env_remove("CORDON_TOKEN_FILE")
            .env_remove("CORDON_SERVER_NAMES")
            .env_remove("CORDON_DATA_DIR")
            .env_remove("CORDON_CONCURRENCY")
            .env_remove("CORDON_CONTROLLER_ID");
        if let Ok(lease) = std::env::var("LOAD_LEASE") {
            cmd.env("CORDON_LEASE", lease);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cordon serve");
        self.starts += 1;
        let stderr = child.stderr.take().expect("stderr");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let _ = writeln!(log, "=== start {} (pid {}) ===", self.starts, child.id());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("serving on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "controller {} did not start within 60 s; see {}",
                self.name,
                self.log.display()
            );
        }
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and SIGKILL if it has not stopped within 30 s.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http_clients(n: usize) -> Vec<reqwest::Client> {
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().expect("a header value"),
    );
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .default_headers(auth.clone())
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client")
        })
        .collect()
}

/// Every job at once, from `clients` HTTP clients: job `i` goes to controller `i % n` and is
/// streamed from `(i + 1) % n`; errors move on to the next controller (same Idempotency-Key).
async fn submit_all(
    urls: Vec<String>,
    jobs: usize,
    clients: usize,
    key_prefix: &str,
    on_start: Option<tokio::sync::oneshot::Sender<Instant>>,
) -> (Vec<Result<Done, String>>, f64) {
    let pool = http_clients(clients);
    let urls = Arc::new(urls);
    let upload = Arc::new(tgz());
    let spec_text = Arc::new(spec());
    let started = Instant::now();
    if let Some(tx) = on_start {
        let _ = tx.send(started);
    }
    let mut tasks = Vec::new();
    for i in 0..jobs {
        let http = pool[i % clients].clone();
        let (urls, upload, spec_text) = (urls.clone(), upload.clone(), spec_text.clone());
        let key = format!("{key_prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let route = Route {
                urls: &urls,
                submit_to: i,
                stream_from: i + 1,
                idempotency_key: Some(key),
                deadline: Duration::from_secs(900),
            };
            load_support::submit_and_stream(&http, route, &spec_text, &upload).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    (out, started.elapsed().as_secs_f64())
}

/// The same command with `docker run --rm`, `parallel` at a time; (wall, per-job run times,
/// per-job times from the start of the phase, failures).
async fn raw_docker(
    workspace: &Path,
    jobs: usize,
    parallel: usize,
) -> (f64, Vec<f64>, Vec<f64>, Vec<String>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..jobs {
        let sem = sem.clone();
        let mount = format!("{}:/workspace:ro", workspace.display());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let t = Instant::now();
            let out = tokio::process::Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--cpus",
                    "0.5",
                    "--memory",
                    "256m",
                    "-v",
                    &mount,
                    "-w",
                    "/workspace",
                    load_support::IMAGE,
                    "sh",
                    "-c",
                    load_support::CMD,
                ])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("done") {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok((t.elapsed().as_secs_f64(), started.elapsed().as_secs_f64()))
        }));
    }
    let (mut run, mut e2e, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok((r, e)) => {
                run.push(r);
                e2e.push(e);
            }
            Err(e) => errors.push(e),
        }
    }
    (started.elapsed().as_secs_f64(), run, e2e, errors)
}

/// The database's counters (this database's, and the others' commits as a measure of what
/// else ran on the server meanwhile), its tables', the WAL position and the CPU of the
/// PostgreSQL server's processes (when this user can read them).
async fn db_snapshot(db: &Database) -> Value {
    let client = connect(&db.url).await;
    let _ = client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await;
    let r = client
        .query_one(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,
                    tup_updated, tup_deleted, blks_read, blks_hit, active_time,
                    (SELECT COALESCE(SUM(xact_commit), 0)::int8 FROM pg_stat_database
                     WHERE datname IS DISTINCT FROM current_database()),
                    (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8,
                    pg_database_size(current_database())
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .expect("pg_stat_database");
    let mut v = json!({
        "xact_commit": r.get::<_, i64>(0),
        "xact_rollback": r.get::<_, i64>(1),
        "tup_returned": r.get::<_, i64>(2),
        "tup_fetched": r.get::<_, i64>(3),
        "tup_inserted": r.get::<_, i64>(4),
        "tup_updated": r.get::<_, i64>(5),
        "tup_deleted": r.get::<_, i64>(6),
        "blks_read": r.get::<_, i64>(7),
        "blks_hit": r.get::<_, i64>(8),
        "active_time_ms": r.get::<_, f64>(9),
        "other_databases_xact_commit": r.get::<_, i64>(10),
        "wal_bytes_cluster": r.get::<_, i64>(11),
        "database_bytes": r.get::<_, i64>(12),
        "server_cpu_secs": postgres_cpu_secs(&client).await,
    });
    for t in client
        .query(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables",
            &[],
        )
        .await
        .expect("pg_stat_user_tables")
    {
        let name: String = t.get(0);
        for (i, col) in ["ins", "upd", "hot_upd", "del"].iter().enumerate() {
            v[format!("{name}_{col}")] = json!(t.get::<_, i64>(i + 1));
        }
    }
    v
}

/// CPU seconds of the whole PostgreSQL server: the postmaster with the children it reaped
/// (backends that ended) plus the children alive now. Includes what other databases cost.
async fn postgres_cpu_secs(client: &tokio_postgres::Client) -> Option<f64> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?
        .get(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid: u32 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut total = load_support::proc_cpu_with_reaped_secs(ppid);
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let parent = s
            .rsplit_once(')')
            .and_then(|x| x.1.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if parent == Some(ppid) {
            total += load_support::proc_cpu_secs(p);
        }
    }
    Some(total)
}

fn delta(after: &Value, before: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Some(a), Some(b)) = (after.as_object(), before.as_object()) {
        for (k, va) in a {
            if let (Some(x), Some(y)) =
                (va.as_f64(), b.get(k).and_then(Value::as_f64).or(Some(0.0)))
            {
                out.insert(k.clone(), json!(x - y));
            }
        }
    }
    Value::Object(out)
}

fn per_job(d: &Value, jobs: usize) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in d.as_object().into_iter().flatten() {
        if k == "database_bytes" {
            continue;
        }
        if let Some(x) = v.as_f64() {
            out.insert(k.clone(), json!(x / jobs.max(1) as f64));
        }
    }
    Value::Object(out)
}

/// What the store recorded of each job of a phase: attempts and the events of each kind.
async fn job_census(db: &Database, ids: &[String], key_prefix: &str) -> Value {
    let client = connect(&db.url).await;
    let rows = client
        .query(
            "SELECT j.id, j.state, COALESCE(j.outcome, ''), j.attempts, COALESCE(j.owner, ''),
                    COUNT(e.seq) FILTER (WHERE e.body::jsonb->>'type' = 'started'),
                    COUNT(e.seq) FILTER (WHERE e.body::jsonb->>'type' = 'step_finished'),
                    COUNT(e.seq) FILTER (WHERE e.body::jsonb->>'type' = 'finished'),
                    COUNT(e.seq) FILTER (WHERE e.body::jsonb->>'type' = 'warning'),
                    COUNT(e.seq)
             FROM jobs j LEFT JOIN events e ON e.job_id = j.id
             WHERE j.idem_key LIKE $1 || '-%'
             GROUP BY j.id",
            &[&key_prefix],
        )
        .await
        .expect("census");
    let mut not_finished = Vec::new();
    let mut finished_twice = Vec::new();
    let mut completed_twice = Vec::new();
    let mut completed_twice_without_takeover = Vec::new();
    let mut attempts = BTreeMap::<i32, usize>::new();
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut runners = BTreeMap::<String, usize>::new();
    let mut events = 0i64;
    for r in &rows {
        let id: String = r.get(0);
        let state: String = r.get(1);
        let outcome: String = r.get(2);
        let att: i32 = r.get(3);
        let (step_done, finished): (i64, i64) = (r.get(6), r.get(7));
        events += r.get::<_, i64>(9);
        *attempts.entry(att).or_default() += 1;
        *outcomes.entry(outcome).or_default() += 1;
        *runners.entry(r.get(4)).or_default() += 1;
        if state != "finished" || finished == 0 {
            not_finished.push(id.clone());
        }
        if finished > 1 {
            finished_twice.push(id.clone());
        }
        if step_done > 1 {
            completed_twice.push(id.clone());
            if att <= 1 {
                completed_twice_without_takeover.push(id.clone());
            }
        }
    }
    let unknown: Vec<&String> = ids
        .iter()
        .filter(|id| !rows.iter().any(|r| r.get::<_, String>(0) == **id))
        .collect();
    json!({
        "jobs_in_store": rows.len(),
        "events_in_store": events,
        "not_finished": not_finished,
        "finished_event_twice": finished_twice,
        "step_completed_twice": completed_twice,
        "step_completed_twice_without_takeover": completed_twice_without_takeover,
        "attempts": attempts,
        "outcomes": outcomes,
        "run_by": runners,
        "results_not_in_store": unknown,
    })
}

/// Containers and volumes of these jobs (or labelled with these controllers) still there.
fn leftovers(ids: &[String], controllers: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, name) in [
        (&["ps", "-a"][..], "{{.Names}}"),
        (&["volume", "ls"][..], "{{.Name}}"),
    ] {
        let format = format!(
            "{name}|{{{{.Label \"org.cordon.job\"}}}}|{{{{.Label \"org.cordon.controller\"}}}}"
        );
        let out = Command::new("docker")
            .args(what)
            .args([
                "--filter",
                "label=org.cordon.managed=true",
                "--format",
                &format,
            ])
            .output();
        let Ok(out) = out else { continue };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('|').collect();
            let ours = f.get(1).is_some_and(|j| ids.iter().any(|i| i == j))
                || f.get(2).is_some_and(|c| controllers.iter().any(|n| n == c));
            if ours {
                found.push(format!("{} {line}", what[0]));
            }
        }
    }
    found
}

struct Phase {
    wall: f64,
    e2e: Vec<f64>,
    run: Vec<f64>,
    ok: usize,
    errors: Vec<String>,
    retries: u32,
    ids: Vec<String>,
    load: (f64, f64),
}

impl Phase {
    fn from_results(results: Vec<Result<Done, String>>, wall: f64, load0: f64) -> Phase {
        let mut p = Phase {
            wall,
            e2e: Vec::new(),
            run: Vec::new(),
            ok: 0,
            errors: Vec::new(),
            retries: 0,
            ids: Vec::new(),
            load: (load0, loadavg()),
        };
        for r in results {
            match r {
                Ok(d) => {
                    p.ok += 1;
                    p.retries += d.retries;
                    p.e2e.push(d.e2e);
                    let st = &d.status;
                    let sta = st["started_ms"].as_f64().unwrap_or(0.0);
                    let fin = st["finished_ms"].as_f64().unwrap_or(sta);
                    p.run.push((fin - sta) / 1000.0);
                    p.ids.push(d.id);
                }
                Err(e) => p.errors.push(e),
            }
        }
        sort(&mut p.e2e);
        sort(&mut p.run);
        p
    }

    fn throughput(&self) -> f64 {
        self.ok as f64 / self.wall
    }

    fn json(&self) -> Value {
        json!({
            "wall_secs": self.wall,
            "jobs_with_result": self.ok,
            "throughput_jobs_per_sec": self.throughput(),
            "end_to_end_secs": {
                "p50": pct(&self.e2e, 0.5),
                "p95": pct(&self.e2e, 0.95),
                "max": pct(&self.e2e, 1.0),
                // Each job's event stream is open (and polling the store) this long.
                "mean": self.e2e.iter().sum::<f64>() / self.e2e.len().max(1) as f64,
            },
            "job_run_secs": { "p50": pct(&self.run, 0.5), "p95": pct(&self.run, 0.95) },
            "client_retries": self.retries,
            "errors": self.errors.iter().take(10).collect::<Vec<_>>(),
            "error_count": self.errors.len(),
            "load_average_1m": { "start": self.load.0, "end": self.load.1 },
        })
    }
}

/// Runs `cmd` (pgbench) and returns its `tps = …`.
fn pgbench(url: &str, script: &str, clients: usize, secs: u64) -> Option<f64> {
    let file = std::env::temp_dir().join(format!("cordon-load-{}.sql", std::process::id()));
    std::fs::write(&file, script).ok()?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(url)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let jobs = env_usize("LOAD_JOBS", 300).max(1);
    let clients = env_usize("LOAD_CLIENTS", 20).max(1);
    let concurrency = env_usize("LOAD_CONCURRENCY", 1).max(1);
    let kill_every = env_f64("LOAD_KILL_EVERY", 20.0);
    let restart_pause = env_f64("LOAD_RESTART_PAUSE", 0.0);
    let phases = std::env::var("LOAD_PHASES").unwrap_or_else(|_| "raw,one,three".into());
    let slots = 3 * concurrency;
    let run_tag = format!("load{}", std::process::id());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(Database::create());
    let tmp = tempfile::tempdir().expect("tmp");
    let workspace = tmp.path().join("repo");
    std::fs::create_dir_all(&workspace).expect("repo");
    std::fs::write(workspace.join("hello.txt"), load_support::HELLO).expect("file");
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controllers-load-logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let mut report = json!({
        "commit": commit(),
        "jobs": jobs,
        "clients": clients,
        "concurrency_per_controller": concurrency,
        "total_slots": slots,
        "kill_every_secs": kill_every,
        "restart_pause_secs": restart_pause,
        "lease": std::env::var("LOAD_LEASE").unwrap_or_else(|_| "15s (default)".into()),
        "database": db.name,
        "cordon_bin": cordon_bin(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });

    // 1. Raw `docker run --rm` of the same command, at the same total parallelism.
    let mut raw_tp = None;
    if phases.contains("raw") {
        eprintln!("load: raw: {jobs} x `docker run --rm`, {slots} at a time");
        let load0 = loadavg();
        let (wall, mut run, mut e2e, errors) = rt.block_on(raw_docker(&workspace, jobs, slots));
        sort(&mut run);
        sort(&mut e2e);
        let tp = run.len() as f64 / wall;
        raw_tp = Some(tp);
        report["raw_docker"] = json!({
            "parallelism": slots,
            "wall_secs": wall,
            "jobs_ok": run.len(),
            "throughput_jobs_per_sec": tp,
            "end_to_end_secs": { "p50": pct(&e2e, 0.5), "p95": pct(&e2e, 0.95) },
            "docker_run_secs": { "p50": pct(&run, 0.5), "p95": pct(&run, 0.95) },
            "errors": errors.iter().take(5).collect::<Vec<_>>(),
            "load_average_1m": { "start": load0, "end": loadavg() },
        });
        eprintln!("load: raw: {tp:.2} jobs/s over {wall:.1}s");
    }

    // 2. The same jobs on ONE controller with all the slots, the same store, no kills.
    let mut one_tp = None;
    if phases.contains("one") {
        eprintln!("load: one: {jobs} jobs on one controller of concurrency {slots}");
        let mut solo = Controller::new(
            tmp.path(),
            &logs,
            &format!("{run_tag}-solo"),
            slots,
            jobs,
            &db,
        );
        solo.start();
        std::thread::sleep(Duration::from_secs(1));
        let before = rt.block_on(db_snapshot(&db));
        let load0 = loadavg();
        let (results, wall) = rt.block_on(submit_all(
            vec![solo.url()],
            jobs,
            clients,
            &format!("{run_tag}-one"),
            None,
        ));
        let phase = Phase::from_results(results, wall, load0);
        solo.stop();
        std::thread::sleep(Duration::from_secs(2));
        let after = rt.block_on(db_snapshot(&db));
        let d = delta(&after, &before);
        let census = rt.block_on(job_census(&db, &phase.ids, &format!("{run_tag}-one")));
        one_tp = Some(phase.throughput());
        let mut v = phase.json();
        v["db_delta"] = d.clone();
        v["db_per_job"] = per_job(&d, phase.ok);
        v["store"] = census;
        v["leftovers"] = json!(leftovers(&phase.ids, std::slice::from_ref(&solo.name)));
        report["one_controller"] = v;
        eprintln!(
            "load: one: {:.2} jobs/s over {wall:.1}s, {} errors",
            phase.throughput(),
            phase.errors.len()
        );
    }

    // 3. Three controllers, one killed every `kill_every` seconds and restarted.
    if phases.contains("three") {
        eprintln!(
            "load: three: {jobs} jobs on 3 controllers of concurrency {concurrency}, SIGKILL every {kill_every}s"
        );
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| format!("{run_tag}-{n}"))
            .collect();
        let mut cs: Vec<Controller> = names
            .iter()
            .map(|n| Controller::new(tmp.path(), &logs, n, concurrency, jobs, &db))
            .collect();
        for c in &mut cs {
            c.start();
        }
        let urls: Vec<String> = cs.iter().map(Controller::url).collect();
        let cs = Arc::new(Mutex::new(cs));
        std::thread::sleep(Duration::from_secs(1));
        let before = rt.block_on(db_snapshot(&db));
        let load0 = loadavg();
        let done = CancellationToken::new();
        let (start_tx, start_rx) = tokio::sync::oneshot::channel();
        let kills = rt.spawn(kill_loop(
            cs.clone(),
            db.url.clone(),
            start_rx,
            done.clone(),
            Duration::from_secs_f64(kill_every),
            Duration::from_secs_f64(restart_pause),
        ));
        let key_prefix = format!("{run_tag}-three");
        let (results, wall) =
            rt.block_on(submit_all(urls, jobs, clients, &key_prefix, Some(start_tx)));
        done.cancel();
        let kills = rt.block_on(kills).unwrap_or_default();
        let phase = Phase::from_results(results, wall, load0);
        for c in cs.lock().expect("controllers").iter_mut() {
            c.stop();
        }
        std::thread::sleep(Duration::from_secs(2));
        let after = rt.block_on(db_snapshot(&db));
        let d = delta(&after, &before);
        let census = rt.block_on(job_census(&db, &phase.ids, &key_prefix));
        let logs_text: Vec<(String, String)> = cs
            .lock()
            .expect("controllers")
            .iter()
            .map(|c| (c.name.clone(), c.log_text()))
            .collect();
        let count = |needle: &str| -> usize {
            logs_text
                .iter()
                .map(|(_, t)| t.matches(needle).count())
                .sum()
        };
        let left = leftovers(&phase.ids, &names);
        let not_finished = census["not_finished"].as_array().map_or(0, Vec::len);
        let lost = (jobs - phase.ok).max(not_finished);
        let v_dup = census["jobs_in_store"].as_u64().unwrap_or(0) as i64 - jobs as i64;
        let mut v = phase.json();
        v["kills"] = json!(kills);
        v["takeovers_logged"] = json!(count("took over a job"));
        v["fenced_runs_logged"] = json!(count("another controller took this job over"));
        v["errors_logged"] = json!(count("\"level\":\"ERROR\"") + count(" ERROR "));
        v["db_delta"] = d.clone();
        v["db_per_job"] = per_job(&d, phase.ok);
        v["store"] = census;
        v["leftovers"] = json!(left);
        v["jobs_lost"] = json!(lost);
        v["jobs_created_beyond_submitted"] = json!(v_dup);
        if let (Some(one), Some(raw)) = (one_tp, raw_tp) {
            report["ratios"] = json!({
                "three_with_kills_vs_one_controller": phase.throughput() / one,
                "three_with_kills_vs_raw_docker": phase.throughput() / raw,
                "one_controller_vs_raw_docker": one / raw,
            });
        }
        report["three_controllers"] = v;
        eprintln!(
            "load: three: {:.2} jobs/s over {wall:.1}s, {} errors",
            phase.throughput(),
            phase.errors.len()
        );
    }

    // How many committing transactions a second this server takes, with and without NOTIFY.
    if Command::new("pgbench").arg("--version").output().is_ok() {
        let url = db.url.clone();
        rt.block_on(async {
            let c = connect(&url).await;
            c.batch_execute("CREATE TABLE IF NOT EXISTS load_bench (x int)")
                .await
                .expect("bench table");
        });
        let plain = pgbench(
            &url,
            "BEGIN;\nINSERT INTO load_bench VALUES (1);\nCOMMIT;\n",
            8,
            5,
        );
        let notify = pgbench(
            &url,
            "BEGIN;\nINSERT INTO load_bench VALUES (1);\nSELECT pg_notify('cordon_load_bench', 'x');\nCOMMIT;\n",
            8,
            5,
        );
        report["pgbench_8_clients"] = json!({
            "insert_commit_tps": plain,
            "insert_notify_commit_tps": notify,
            "load_average_1m": loadavg(),
        });
    }

    let text = serde_json::to_string_pretty(&report).expect("json");
    println!("{text}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controllers-load.json");
    let _ = std::fs::write(&target, &text);
    eprintln!(
        "load: figures in {}, logs in {}",
        target.display(),
        logs.display()
    );
    drop(db);

    let three = &report["three_controllers"];
    let bad = three["jobs_lost"].as_u64().unwrap_or(0) > 0
        || three["leftovers"].as_array().is_some_and(|a| !a.is_empty())
        || three["store"]["finished_event_twice"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        || three["store"]["step_completed_twice_without_takeover"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if bad {
        eprintln!(
            "load: FAILED: lost jobs, leftovers or a job run twice without a takeover (see above)"
        );
        std::process::exit(1);
    }
}

/// Every `every`: SIGKILLs the next controller (round-robin), notes what it held, restarts it
/// after `pause` with the same id, data directory and port.
async fn kill_loop(
    cs: Arc<Mutex<Vec<Controller>>>,
    db_url: String,
    load_started: tokio::sync::oneshot::Receiver<Instant>,
    done: CancellationToken,
    every: Duration,
    pause: Duration,
) -> Vec<Value> {
    let client = connect(&db_url).await;
    let mut out = Vec::new();
    let Ok(t0) = load_started.await else {
        return out;
    };
    for round in 0usize.. {
        // On the load's clock: at `every`, 2 × `every`, … whatever the restarts took.
        let at = tokio::time::Instant::from_std(t0 + every * (round as u32 + 1));
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = done.cancelled() => break,
        }
        let k = round % 3;
        let name = cs.lock().expect("controllers")[k].name.clone();
        let held: Vec<String> = client
            .query(
                "SELECT id FROM jobs WHERE state = 'running' AND owner = $1",
                &[&name],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        let at = t0.elapsed().as_secs_f64();
        cs.lock().expect("controllers")[k].kill9();
        tokio::time::sleep(pause).await;
        let cs2 = cs.clone();
        let t = Instant::now();
        let _ =
            tokio::task::spawn_blocking(move || cs2.lock().expect("controllers")[k].start()).await;
        out.push(json!({
            "at_secs": at,
            "controller": name,
            "running_jobs_held": held,
            "restart_secs": t.elapsed().as_secs_f64(),
        }));
        eprintln!(
            "load: killed {name} at {at:.0}s holding {} running job(s); restarted",
            out.last()
                .map_or(0, |v| v["running_jobs_held"].as_array().map_or(0, Vec::len))
        );
    }
    out
}
