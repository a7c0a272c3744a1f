//! `cordon serve`: run the controller service until SIGTERM (or Ctrl-C).
//!
//! The process umask is 0o077 from the start: whatever cordon (or SQLite) creates is private
//! to its user, on top of the explicit modes set on the data directory.

use std::path::PathBuf;

use clap::Args;

use tracing::Level;

use super::logging::{say, say_error};
use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR};
use crate::server::access::{GeneratedToken, ServerNames, Tokens};
use crate::server::{ServerConfig, ServerError};

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
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = match ServerConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            say_error(&e);
            return EXIT_INVALID;
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let addr = match config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            say_error(&e);
            return EXIT_INVALID;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            say(Level::ERROR, &format!("cannot listen on {addr}: {e}"));
            return EXIT_SANDBOX_ERROR;
        }
    };
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            say(
                Level::ERROR,
                &format!("cannot read the address listened on: {e}"),
            );
            return EXIT_SANDBOX_ERROR;
        }
    };
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
    match crate::server::serve(config, listener, shutdown, ready).await {
        Ok(()) => {
            say(Level::INFO, "stopped; nothing is running");
            0
        }
        Err(e @ ServerError::Config(_)) => {
            say_error(&e);
            EXIT_INVALID
        }
        Err(e) => {
            say_error(&e);
            EXIT_SANDBOX_ERROR
        }
    }
}
