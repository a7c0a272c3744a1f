//! `cordon serve`: the controller service.
//!
//! - `config`: the YAML configuration and its `CORDON_*` environment overrides.
//! - `access`: the front door (tokens and who they are, refusing browser-context requests)
//!   and the privacy of the data directory.
//! - `store`: the durable SQLite store of jobs, their events and results.
//! - `listing`: `GET /v1/jobs`'s filters and cursors, parsed and checked.
//! - `upload`: a submission (spec + workspace tar.gz) turned into a validated job, safely.
//! - `queue`: the [`queue::Service`]: bounded queue, concurrency limit, dispatch, event log,
//!   cancel, crash recovery, retention, drain. No HTTP types.
//! - `api`: axum handlers that only parse requests into calls on the service.
//! - `metrics`: Prometheus text.
//! - `web`: the web page at `/` (static pages and scripts embedded in the binary) and its
//!   browser sessions: sign-in with a token, an `HttpOnly` `SameSite=Strict` cookie, a CSRF
//!   token for every change.
//! - `github_hook`: `POST /v1/github/webhook` (signature, dedup, durable record).

pub mod access;
pub mod api;
pub mod config;
pub(crate) mod github_hook;
pub mod listing;
pub mod metrics;
pub mod queue;
pub mod store;
pub mod upload;
pub mod web;

use std::future::Future;
use std::time::Duration;

use tracing::info;

pub use config::ServerConfig;
pub use queue::Service;

use crate::sandbox::SandboxError;
use crate::sandbox::docker::DockerBackend;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot reach the Docker engine")]
    Engine(#[source] SandboxError),
    #[error("cannot start the job service")]
    Service(#[source] queue::ServiceError),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// Runs the service on `listener` until `shutdown` resolves, then drains: no new jobs, running
/// ones get `shutdown_grace` to finish before they are cancelled and their sandboxes removed.
/// Returns once nothing is running.
///
/// First the data directory is made private (0700, see [`access::secure_data_dir`]) and, if
/// no token is configured, the generated one is made or read ([`access::ensure_token`]).
/// `on_ready` is called once recovery is done and requests are about to be served, with the
/// generated token's file if there is one.
pub async fn serve(
    mut config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&ServerConfig, Option<&access::GeneratedToken>),
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Http)?;
    access::secure_data_dir(&config.data_dir)?;
    let generated = access::ensure_token(&mut config)?;
    let grace = config.shutdown_grace.0;
    let docker = DockerBackend::connect()
        .await
        .map_err(ServerError::Engine)?;
    let svc = Service::start(config, docker)
        .await
        .map_err(ServerError::Service)?;
    info!(%addr, "serving");
    on_ready(svc.config(), generated.as_ref());

    let drained = tokio_util::sync::CancellationToken::new();
    {
        let svc = svc.clone();
        let drained = drained.clone();
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: accepting no new jobs");
            svc.drain(grace).await;
            drained.cancel();
        });
    }
    let app = api::router(svc.clone(), addr);
    let closing = drained.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let svc = svc.clone();
        async move {
            closing.cancelled().await;
            svc.close();
        }
    });
    tokio::select! {
        r = server => r.map_err(ServerError::Http)?,
        // A client that keeps a connection open does not hold the exit up for long.
        _ = async { drained.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
    }
    Ok(())
}
