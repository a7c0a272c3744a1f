//! `cordon-egress`: the allowlisting proxy a `prepare` container reaches, and all it reaches.
//!
//! cordon runs it in a sidecar container of its own (see `cordon::sandbox::sidecar`); it is
//! not meant to be run by hand. It prints one JSON object per line on stdout:
//! `{"listening":"ADDR"}` once, then `{"destination":"host:port","reason":"…"}` for each
//! destination it refused.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use cordon::sandbox::egress::{EgressProxy, ProxyConfig, Refusal};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cordon-egress --listen ADDR --config JSON  (started by cordon for a prepare)"
    );
    ExitCode::from(2)
}

fn print_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut listen, mut config) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v.parse::<SocketAddr>().ok(),
            ("--config", Some(v)) => match serde_json::from_str::<ProxyConfig>(v) {
                Ok(c) => config = Some(c),
                Err(e) => {
                    eprintln!("cordon-egress: --config: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => return usage(),
        }
    }
    let (Some(listen), Some(config)) = (listen, config) else {
        return usage();
    };
    let report = Arc::new(|r: &Refusal| print_line(&serde_json::json!(r)));
    let proxy = match EgressProxy::start(listen, config, Some(report)).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cordon-egress: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    print_line(&serde_json::json!({ "listening": proxy.addr().to_string() }));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ExitCode::from(1),
    };
    term.recv().await;
    ExitCode::SUCCESS
}
