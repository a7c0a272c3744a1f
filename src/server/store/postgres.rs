//! The job store on PostgreSQL, shared by several controllers (`store: postgres://…`).
//!
//! - The queue is the `jobs` table. [`JobStore::claim`] takes the oldest queued row with
//!   `FOR UPDATE SKIP LOCKED` (two controllers never wait for, or get, the same job), makes it
//!   `running` under a lease measured on the database's clock (so controllers' clocks do not
//!   matter), and bumps its `epoch`.
//! - Every write of a running job is one statement whose `UPDATE` names the epoch and the
//!   next event number: after a takeover (which bumps the epoch under the row's lock) the old
//!   holder's writes match no row and are [`Write::Fenced`].
//! - `NOTIFY` (from triggers, so no write pays an extra round trip) only wakes: a job was
//!   queued, a job has events, a cancel was asked for. Every waiter also polls.
//! - Schema changes are numbered migrations applied at start-up inside one transaction under
//!   an advisory lock, so controllers starting together apply each exactly once.
//! - Uploaded workspaces and artifacts are rows of `blobs` (tar.gz, at most the service's
//!   `max_upload` and `max_stored_artifacts`).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Socket};
use tracing::{info, warn};

use super::{
    Blob, Claim, Inserted, JobFilter, JobRow, JobState, JobStore, Lease, NewJob, Notice,
    StoreError, Write,
};

/// Numbered schema changes, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("postgres_v1.sql"))];

/// `pg_advisory_xact_lock` keys: migrations, and submissions (which take the next
/// `submitted_ms` and check the queue's bound).
const LOCK_MIGRATE: i64 = 0x636f_7264_6f6e_0001;
const LOCK_INSERT: i64 = 0x636f_7264_6f6e_0002;

const COLUMNS: &str = "j.id, j.state, j.spec, j.submitted_ms, j.started_ms, j.finished_ms, j.outcome, j.result, j.events, j.submitter, j.image, j.owner, j.epoch, j.attempts";

pub struct PgStore {
    pool: Pool,
    notices: broadcast::Sender<Notice>,
}

fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::new(action, e)
}

fn pool_err(action: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> StoreError {
    move |e| StoreError::new(action, e)
}

/// A connection URL with its password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db[?sslmode=require]`), applies
    /// the migrations, and starts listening for notices.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let action = "connecting to PostgreSQL";
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::other(
                action,
                format!(
                    "`store`: `{}` is not a PostgreSQL URL ({e}); write postgres://USER:PASSWORD@HOST:5432/DATABASE",
                    redact_url(url)
                ),
            )
        })?;
        if !url.contains("sslmode=") {
            // tokio-postgres would try TLS first and fail on a self-signed server
            // certificate; say plainly that the connection is not encrypted.
            config.ssl_mode(SslMode::Disable);
            let local = config.get_hosts().iter().all(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => {
                    name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
                tokio_postgres::config::Host::Unix(_) => true,
            });
            if !local {
                warn!(
                    store = %redact_url(url),
                    "the PostgreSQL connection is not encrypted; add ?sslmode=require to the URL to use TLS (verified against the system's roots, or CORDON_STORE_CA)"
                );
            }
        }
        config.application_name("cordon");
        config.connect_timeout(Duration::from_secs(10));
        let (notices, _) = broadcast::channel(1024);
        let store = if config.get_ssl_mode() == SslMode::Disable {
            PgStore::with_tls(config, NoTls, &notices)?
        } else {
            PgStore::with_tls(config, rustls_connector()?, &notices)?
        };
        if let Err(e) = store.pool.get().await {
            return Err(StoreError::other(
                action,
                format!(
                    "{}: {} (check `store` / CORDON_STORE: host, port, user, password, database)",
                    redact_url(url),
                    crate::error::error_chain(&e)
                ),
            ));
        }
        store.migrate().await?;
        Ok(store)
    }

    fn with_tls<T>(
        config: tokio_postgres::Config,
        tls: T,
        notices: &broadcast::Sender<Notice>,
    ) -> Result<PgStore, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::other("connecting to PostgreSQL", e.to_string()))?;
        tokio::spawn(listen(config, tls, notices.clone()));
        Ok(PgStore {
            pool,
            notices: notices.clone(),
        })
    }

    async fn client(&self, action: &'static str) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err(action))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let action = "applying the schema";
        let mut client = self.client(action).await?;
        let tx = client.transaction().await.map_err(pg(action))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(pg(action))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cordon_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(pg(action))?;
        let current: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM cordon_schema", &[])
            .await
            .map_err(pg(action))?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > newest {
            return Err(StoreError::other(
                action,
                format!(
                    "the database's schema is version {current}, newer than this cordon knows ({newest}): upgrade this controller"
                ),
            ));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).await.map_err(pg(action))?;
            tx.execute(
                "INSERT INTO cordon_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg(action))?;
            info!(version, "applied a schema migration to the job store");
        }
        tx.commit().await.map_err(pg(action))
    }

    async fn rows(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        action: &'static str,
    ) -> Result<Vec<JobRow>, StoreError> {
        let client = self.client(action).await?;
        let rows = client.query(sql, args).await.map_err(pg(action))?;
        Ok(rows.iter().map(row).collect())
    }

    async fn write(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        action: &'static str,
    ) -> Result<Write, StoreError> {
        let client = self.client(action).await?;
        let n = client.execute(sql, args).await.map_err(pg(action))?;
        Ok(if n == 0 { Write::Fenced } else { Write::Done })
    }
}

/// TLS to PostgreSQL with rustls: the system's roots, or the PEM bundle in
/// `CORDON_STORE_CA`.
fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let action = "setting up TLS to PostgreSQL";
    let mut roots = rustls::RootCertStore::empty();
    match std::env::var_os("CORDON_STORE_CA") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| StoreError::new(action, e))?;
            for cert in rustls_pemfile_certs(&pem) {
                roots
                    .add(cert)
                    .map_err(|e| StoreError::other(action, format!("CORDON_STORE_CA: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::other(action, e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Keeps one connection listening for the store's notices and forwards them; reconnects
/// after a second when it drops (waiters poll meanwhile). Ends when nobody can hear it.
async fn listen<T>(config: tokio_postgres::Config, tls: T, out: broadcast::Sender<Notice>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + 'static,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| conn.poll_message(cx)).boxed();
                let ok = {
                    let listening = client.batch_execute(
                        "LISTEN cordon_jobs; LISTEN cordon_events; LISTEN cordon_cancel",
                    );
                    // The connection must be polled for the LISTEN to complete.
                    let mut listening = std::pin::pin!(listening);
                    loop {
                        tokio::select! {
                            r = &mut listening => break r.is_ok(),
                            m = messages.next() => if m.is_none() { break false },
                        }
                    }
                };
                if ok {
                    // Whatever happened while not listening: wake every waiter once.
                    let _ = out.send(Notice::Queued);
                    while let Some(Ok(msg)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = msg {
                            let notice = match n.channel() {
                                "cordon_jobs" => Notice::Queued,
                                "cordon_events" => Notice::Events(n.payload().to_string()),
                                "cordon_cancel" => Notice::Cancel(n.payload().to_string()),
                                _ => continue,
                            };
                            if out.send(notice).is_err() && out.receiver_count() == 0 {
                                return;
                            }
                        }
                    }
                }
                drop(client);
                warn!(
                    "the job store's notice connection dropped; reconnecting (waiters poll meanwhile)"
                );
            }
            Err(e) => {
                warn!(error = %crate::error::error_chain(&e), "cannot open the job store's notice connection; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[async_trait]
impl JobStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn shared(&self) -> bool {
        true
    }
    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }

    async fn insert(&self, job: NewJob, now_ms: i64) -> Result<Inserted, StoreError> {
        let action = "recording a submission";
        let mut client = self.client(action).await?;
        let tx = client.transaction().await.map_err(pg(action))?;
        // The workspace first, before the lock every submission takes: its foreign key is
        // checked at commit, and a refused submission rolls it back.
        if let Some(ws) = &job.workspace {
            tx.execute(
                "INSERT INTO blobs (job_id, kind, data) VALUES ($1, $2, $3)",
                &[&job.id, &Blob::Workspace.as_str(), &ws.as_ref()],
            )
            .await
            .map_err(pg(action))?;
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_INSERT])
            .await
            .map_err(pg(action))?;
        if let Some((key, hash)) = &job.idempotency {
            let seen = tx
                .query_opt(
                    "SELECT id, idem_hash FROM jobs WHERE submitter = $1 AND idem_key = $2",
                    &[&job.submitter, key],
                )
                .await
                .map_err(pg(action))?;
            if let Some(r) = seen {
                let id: String = r.get(0);
                let seen_hash: Option<String> = r.get(1);
                return Ok(if seen_hash.as_deref() == Some(hash) {
                    Inserted::Existing(id)
                } else {
                    Inserted::KeyReused(id)
                });
            }
        }
        let r = tx
            .query_one(
                "SELECT (SELECT COUNT(*) FROM jobs WHERE state = 'queued'),
                        (SELECT COALESCE(MAX(submitted_ms), 0) FROM jobs)",
                &[],
            )
            .await
            .map_err(pg(action))?;
        let queued: i64 = r.get(0);
        let last: i64 = r.get(1);
        if queued as usize >= job.capacity {
            return Ok(Inserted::Full(queued as usize));
        }
        let (key, hash) = job.idempotency.clone().unzip();
        tx.execute(
            "INSERT INTO jobs (id, state, spec, submitted_ms, submitter, image, idem_key, idem_hash)
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7)",
            &[
                &job.id,
                &job.spec,
                &now_ms.max(last + 1),
                &job.submitter,
                &job.image,
                &key,
                &hash,
            ],
        )
        .await
        .map_err(pg(action))?;
        tx.commit().await.map_err(pg(action))?;
        Ok(Inserted::New)
    }

    async fn queued(&self) -> Result<usize, StoreError> {
        let action = "counting queued jobs";
        let client = self.client(action).await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", &[])
            .await
            .map_err(pg(action))?
            .get(0);
        Ok(n as usize)
    }

    async fn position(&self, row: &JobRow) -> Result<usize, StoreError> {
        let action = "reading a queue position";
        let client = self.client(action).await?;
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'
                     AND (submitted_ms, id) < ($1, $2)",
                &[&row.submitted_ms, &row.id],
            )
            .await
            .map_err(pg(action))?
            .get(0);
        Ok(n as usize)
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "UPDATE jobs j SET state = 'running', owner = $1, epoch = j.epoch + 1,
                         attempts = j.attempts + 1, started_ms = COALESCE(j.started_ms, $3),
                         lease_until = clock_timestamp() + make_interval(secs => $2)
                     WHERE j.id = (SELECT id FROM jobs WHERE state = 'queued'
                                   ORDER BY submitted_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ),
                &[&owner, &secs(lease), &now_ms],
                "claiming a queued job",
            )
            .await?;
        Ok(rows.into_iter().next().map(|row| Claim {
            row,
            lost_owner: None,
        }))
    }

    async fn renew(
        &self,
        owner: &str,
        lease: Duration,
        held: &[(String, i64)],
    ) -> Result<Vec<(String, Lease)>, StoreError> {
        let action = "renewing leases";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = held.iter().map(|h| h.0.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|h| h.1).collect();
        let client = self.client(action).await?;
        let rows = client
            .query(
                "UPDATE jobs j SET lease_until = clock_timestamp() + make_interval(secs => $2)
                 FROM unnest($3::text[], $4::int8[]) AS h(id, epoch)
                 WHERE j.id = h.id AND j.epoch = h.epoch AND j.owner = $1 AND j.state = 'running'
                 RETURNING j.id, j.cancel_requested",
                &[&owner, &secs(lease), &ids, &epochs],
            )
            .await
            .map_err(pg(action))?;
        let renewed: std::collections::HashMap<String, bool> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(held
            .iter()
            .map(|(id, _)| {
                let lease = match renewed.get(id) {
                    Some(&cancel_requested) => Lease::Renewed { cancel_requested },
                    None => Lease::Lost,
                };
                (id.clone(), lease)
            })
            .collect())
    }

    async fn take_over(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        held_by: Option<&str>,
    ) -> Result<Vec<Claim>, StoreError> {
        let action = "taking over lost jobs";
        let client = self.client(action).await?;
        let rows = client
            .query(
                &format!(
                    "WITH lost AS (
                         SELECT id, owner FROM jobs
                         WHERE state = 'running'
                             AND CASE WHEN $4::text IS NULL THEN lease_until < clock_timestamp()
                                      ELSE owner = $4 END
                         ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE jobs j SET owner = $1, epoch = j.epoch + 1,
                         lease_until = clock_timestamp() + make_interval(secs => $2)
                     FROM lost WHERE j.id = lost.id
                     RETURNING {COLUMNS}, lost.owner"
                ),
                &[&owner, &secs(lease), &(limit as i64), &held_by],
            )
            .await
            .map_err(pg(action))?;
        Ok(rows
            .iter()
            .map(|r| Claim {
                row: row(r),
                lost_owner: r.get(14),
            })
            .collect())
    }

    async fn requeue(&self, id: &str, epoch: i64) -> Result<Write, StoreError> {
        self.write(
            "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL
             WHERE id = $1 AND epoch = $2 AND state = 'running'",
            &[&id, &epoch],
            "requeueing a job",
        )
        .await
    }

    async fn append_event(
        &self,
        id: &str,
        epoch: i64,
        seq: u64,
        body: &str,
    ) -> Result<Write, StoreError> {
        self.write(
            "WITH j AS (
                 UPDATE jobs SET events = $3 + 1
                 WHERE id = $1 AND epoch = $2 AND state = 'running' AND events = $3
                 RETURNING id)
             INSERT INTO events (job_id, seq, body) SELECT id, $3, $4 FROM j",
            &[&id, &epoch, &(seq as i64), &body],
            "appending an event",
        )
        .await
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
        self.write(
            "WITH j AS (
                 UPDATE jobs SET state = 'finished', events = $3 + 1, outcome = $5,
                     result = $6, finished_ms = $7, lease_until = NULL
                 WHERE id = $1 AND events = $3
                     AND (($2::int8 IS NULL AND state = 'queued')
                          OR (epoch = $2 AND state = 'running'))
                 RETURNING id)
             INSERT INTO events (job_id, seq, body) SELECT id, $3, $4 FROM j",
            &[
                &id,
                &epoch,
                &(seq as i64),
                &body,
                &outcome,
                &result,
                &now_ms,
            ],
            "recording a result",
        )
        .await
    }

    async fn request_cancel(&self, id: &str) -> Result<(), StoreError> {
        let _ = self
            .write(
                "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND state <> 'finished'",
                &[&id],
                "requesting a cancel",
            )
            .await?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self
            .rows(
                &format!("SELECT {COLUMNS} FROM jobs j WHERE j.id = $1"),
                &[&id],
                "reading a job",
            )
            .await?
            .into_iter()
            .next())
    }

    async fn running(&self) -> Result<Vec<JobRow>, StoreError> {
        self.rows(
            &format!(
                "SELECT {COLUMNS} FROM jobs j WHERE j.state = 'running' ORDER BY j.submitted_ms"
            ),
            &[],
            "listing running jobs",
        )
        .await
    }

    async fn list(&self, filter: &JobFilter, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let arg = |v: Box<dyn ToSql + Sync + Send>, args: &mut Vec<_>| {
            args.push(v);
            format!("${}", args.len())
        };
        let states: Vec<String> = filter.states.iter().map(|s| s.as_str().into()).collect();
        for (col, values) in [
            ("j.state", states),
            ("j.outcome", filter.outcomes.clone()),
            ("j.image", filter.images.clone()),
            ("j.submitter", filter.submitter.iter().cloned().collect()),
        ] {
            if !values.is_empty() {
                let p = arg(Box::new(values), &mut args);
                conds.push(format!("{col} = ANY({p})"));
            }
        }
        if let Some(since) = filter.since_ms {
            let p = arg(Box::new(since), &mut args);
            conds.push(format!("j.submitted_ms >= {p}"));
        }
        if let Some(k) = &filter.after {
            let ms = arg(Box::new(k.submitted_ms), &mut args);
            let id = arg(Box::new(k.id.clone()), &mut args);
            conds.push(format!("(j.submitted_ms, j.id) < ({ms}, {id})"));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM jobs j");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        let lim = arg(
            Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            &mut args,
        );
        sql.push_str(&format!(
            " ORDER BY j.submitted_ms DESC, j.id DESC LIMIT {lim}"
        ));
        let refs: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.rows(&sql, &refs, "listing jobs").await
    }

    async fn events(&self, id: &str, from: u64, limit: u64) -> Result<Vec<String>, StoreError> {
        let action = "reading events";
        let client = self.client(action).await?;
        let rows = client
            .query(
                "SELECT body FROM events WHERE job_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&id, &(from as i64), &(limit as i64)],
            )
            .await
            .map_err(pg(action))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn prune(&self, before_ms: i64) -> Result<Vec<String>, StoreError> {
        let action = "pruning old jobs";
        let client = self.client(action).await?;
        let rows = client
            .query(
                "DELETE FROM jobs WHERE id IN (
                     SELECT id FROM jobs WHERE state = 'finished' AND finished_ms < $1
                     LIMIT 1000 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[&before_ms],
            )
            .await
            .map_err(pg(action))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn put_blob(
        &self,
        id: &str,
        epoch: i64,
        kind: Blob,
        data: Vec<u8>,
    ) -> Result<Write, StoreError> {
        self.write(
            "INSERT INTO blobs (job_id, kind, data)
             SELECT id, $3, $4 FROM jobs WHERE id = $1 AND epoch = $2 AND state = 'running'
             ON CONFLICT (job_id, kind) DO UPDATE SET data = excluded.data",
            &[&id, &epoch, &kind.as_str(), &data],
            "storing a job's files",
        )
        .await
    }

    async fn blob(&self, id: &str, kind: Blob) -> Result<Option<Vec<u8>>, StoreError> {
        let action = "reading a job's files";
        let client = self.client(action).await?;
        let r = client
            .query_opt(
                "SELECT data FROM blobs WHERE job_id = $1 AND kind = $2",
                &[&id, &kind.as_str()],
            )
            .await
            .map_err(pg(action))?;
        Ok(r.map(|r| r.get(0)))
    }
}

fn row(r: &tokio_postgres::Row) -> JobRow {
    JobRow {
        id: r.get(0),
        state: JobState::parse(r.get(1)),
        spec: r.get(2),
        submitted_ms: r.get(3),
        started_ms: r.get(4),
        finished_ms: r.get(5),
        outcome: r.get(6),
        result: r.get(7),
        events: r.get::<_, i64>(8).max(0) as u64,
        submitter: r.get(9),
        image: r.get(10),
        owner: r.get(11),
        epoch: r.get(12),
        attempts: r.get::<_, i32>(13).max(0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            redact_url("postgres://cordon:s3cr3t@db.internal:5432/cordon?sslmode=require"),
            "postgres://cordon:***@db.internal:5432/cordon?sslmode=require"
        );
        // An `@` in the password: the last one before the host ends it.
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
