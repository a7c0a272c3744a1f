//! `cordon serve`: run the controller service until SIGTERM (or Ctrl-C).

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error};
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
    let mut config = match ServerConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report_error(&e);
            return EXIT_INVALID;
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let addr = match config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            report_error(&e);
            return EXIT_INVALID;
        }
    };
    if let Err(e) = config.check_exposure(&addr) {
        report_error(&e);
        return EXIT_INVALID;
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cordon: error: cannot listen on {addr}: {e}");
            return EXIT_SANDBOX_ERROR;
        }
    };
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ready = move |config: &ServerConfig| {
        eprintln!(
            "cordon: serving on http://{bound} (data in {}, {} job(s) at once{})",
            config.data_dir.display(),
            config.concurrency(),
            if config.token.is_some() {
                ", token required"
            } else {
                ", no token: loopback only"
            }
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
        eprintln!("cordon: shutting down: no new jobs; running jobs get the grace period");
    };
    match crate::server::serve(config, listener, shutdown, ready).await {
        Ok(()) => {
            eprintln!("cordon: stopped; nothing is running");
            0
        }
        Err(e @ ServerError::Config(_)) => {
            report_error(&e);
            EXIT_INVALID
        }
        Err(e) => {
            report_error(&e);
            EXIT_SANDBOX_ERROR
        }
    }
}
