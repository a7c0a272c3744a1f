//! A `cordon serve` with a `github:` section, and GitHub's webhook deliveries to it: signed
//! with GitHub's example secret, and waited for until the service has handled them. Used
//! with `server_support` and `github_support`.
#![allow(dead_code)]

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

use crate::github_support;
use crate::server_support::{self, Server};

/// GitHub's example secret from "Validating webhook deliveries".
pub const SECRET: &str = "It's a Secret to Everybody";

/// `X-Hub-Signature-256` for `body` under [`SECRET`].
pub fn sign(body: &[u8]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// A service whose GitHub is `api_url`, with `env` (the model's settings).
pub fn start_on(dir: &std::path::Path, api_url: &str, env: &[(&str, &str)]) -> Server {
    std::fs::write(dir.join("hook-secret"), SECRET).expect("secret");
    std::fs::write(dir.join("gh-token"), github_support::TOKEN).expect("token");
    server_support::start_env(
        &dir.join("data"),
        &format!(
            "github:\n  webhook_secret_file: {}\n  token_file: {}\n  api_url: {api_url}\n",
            dir.join("hook-secret").display(),
            dir.join("gh-token").display()
        ),
        env,
    )
}

/// Posts one delivery of `event`; its status and JSON answer.
pub async fn deliver(
    s: &Server,
    event: &str,
    hook: &str,
    delivery: &str,
    body: &[u8],
    sig: Option<String>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/v1/github/webhook", s.url))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", hook)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/test")
        .body(body.to_vec());
    if let Some(sig) = sig {
        r = r.header("x-hub-signature-256", sig);
    }
    let resp = r.send().await.expect("sends");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The deliveries the service in `dir` has finished (`done` or `failed`), once there is one
/// (however long the sandbox takes on this machine; at most ten minutes).
pub async fn finished(dir: &std::path::Path) -> Vec<cordon::server::store::Delivery> {
    let db = dir.join("data/cordon.db");
    let mut done = Vec::new();
    for _ in 0..600 {
        let store = cordon::server::store::SqliteStore::open(&db).expect("db");
        done = store.deliveries("done").expect("rows");
        done.extend(store.deliveries("failed").expect("rows"));
        if !done.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    done
}
