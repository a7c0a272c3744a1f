//! `cordon serve`: run the controller service until SIGTERM (or Ctrl-C).
//!
//! The process umask is 0o077 from the start: whatever cordon (or SQLite) creates is private
//! to its user, on top of the explicit modes set on the data directory.

use std::path::PathBuf;

use clap::Args;

use anyhow::Context as _;
use tracing::Level;

use super::logging::say;
use crate::server::ServerConfig;
use crate::server::access::{GeneratedToken, ServerNames, Tokens};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The config file (YAML). `CORDON_*` environment variables override it; see docs/server.md.
    #[arg(long, short, value_name = "FILE", env = "CORDON_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on, overriding the config (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

pub async fn serve(args: ServeArgs) -> u8 {
    super::finish(run(args).await.map(|()| 0))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = ServerConfig::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the address listened on")?;
    let ready = move |config: &ServerConfig, generated: Option<&GeneratedToken>| {
        if let Some(g) = generated {
            let path = g.path.display();
            if g.created {
                say(
                    Level::INFO,
                    &format!(
                        "no token is configured: generated one in {path} (mode 0600: only this user can read it)"
                    ),
                );
            } else {
                say(
                    Level::INFO,
                    &format!("no token is configured: using the one generated earlier in {path}"),
                );
            }
            say(
                Level::INFO,
                &format!(
                    "clients send it as `Authorization: Bearer <the file's content>`, e.g. `cordon submit JOB.yaml --server http://{bound} --token-file {path}`"
                ),
            );
        }
        let names = ServerNames::new(&config.server_names, bound);
        if bound.ip().is_unspecified() && config.server_names.is_empty() {
            say(
                Level::WARN,
                &format!(
                    "listening on {bound} with the default server_names ({}): a client reaching the service by any other name (the host's name or address) gets 403; list the names clients use in `server_names` (CORDON_SERVER_NAMES)",
                    names.describe()
                ),
            );
        }
        say(
            Level::INFO,
            &format!(
                "serving on http://{bound} (data in {}, {} job(s) at once, tokens: {}; answering to {})",
                config.data_dir.display(),
                config.concurrency(),
                Tokens::from_config(config).describe(),
                names.describe()
            ),
        );
        say(
            Level::INFO,
            &format!(
                "the web page: http://{bound}/ (sign in with a token; behind TLS, set web.secure_cookie)"
            ),
        );
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        say(
            Level::INFO,
            "shutting down: no new jobs; running jobs get the grace period",
        );
    };
    crate::server::serve(config, listener, shutdown, ready).await?;
    say(Level::INFO, "stopped; nothing is running");
    Ok(())
}
