//! What every command that talks to a cordon service shares (`submit`, `jobs`, `status`,
//! `logs`, `cancel`): the `--server` / `--token` / `--token-file` / `--ca-cert` options, the
//! HTTP client (plain `http://` or `https://` through rustls, see [`tls`]), how the service's
//! answers become exit statuses, and reading a job's event stream.

mod retry;
mod tls;

pub(crate) use retry::{Backoff, retry_after};

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR};
use crate::event::JobEvent;

/// How to reach the service, and as whom.
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// The service's base URL, e.g. https://build-host:8420. Plain http:// sends the token in
    /// clear: keep it to this machine or a network you trust (cordon warns otherwise).
    #[arg(long, env = "CORDON_SERVER", value_name = "URL")]
    pub server: String,
    /// The service's bearer token. Prefer --token-file: a command line is visible to other
    /// users of the machine.
    #[arg(
        long,
        env = "CORDON_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (trailing whitespace ignored), such as the one
    /// `cordon serve` generates in its data directory when no token is configured.
    #[arg(long, env = "CORDON_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// service, besides the system's: the
    /// private CA that signed the service's certificate.
    #[arg(long, env = "CORDON_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// Why a command stopped, and its exit status: 2 for what the user can fix (flags, a token or
/// request the service refused, a job that does not exist), 5 for the service or the network.
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
    pub code: u8,
}

pub fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        kind: "invalid_input",
        message: message.into(),
        code: EXIT_INVALID,
    }
}

pub fn infra(message: impl Into<String>) -> Failure {
    Failure {
        kind: "sandbox_error",
        message: message.into(),
        code: EXIT_SANDBOX_ERROR,
    }
}

impl Failure {
    /// Prints the failure (`cordon: error: …` on stderr; with `json`, also
    /// `{"error": {"kind", "message"}}` on stdout) and returns the exit status.
    pub fn report(self, json: bool) -> u8 {
        eprintln!("cordon: error: {}", self.message);
        if json {
            println!(
                "{}",
                serde_json::json!({ "error": { "kind": self.kind, "message": self.message } })
            );
        }
        self.code
    }
}

impl ServiceArgs {
    /// The bearer token from --token / CORDON_TOKEN or --token-file / CORDON_TOKEN_FILE (not
    /// both).
    fn token(&self) -> Result<Option<String>, Failure> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(invalid(
                "both --token (or CORDON_TOKEN) and --token-file (or CORDON_TOKEN_FILE) are given: keep one",
            )),
            (Some(t), None) => Ok(Some(t.trim().to_string())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(format!(
                        "--token-file {}: cannot read it: {e}",
                        path.display()
                    ))
                })?;
                let t = text.trim_end().to_string();
                if t.is_empty() {
                    return Err(invalid(format!(
                        "--token-file {}: the file is empty; it holds the service's bearer token",
                        path.display()
                    )));
                }
                Ok(Some(t))
            }
            (None, None) => Ok(None),
        }
    }

    /// Checks the options and makes the client (no request is sent yet).
    pub fn connect(&self) -> Result<ServiceClient, Failure> {
        let token = self.token()?;
        let url = reqwest::Url::parse(&self.server).map_err(|e| {
            invalid(format!(
                "--server {}: not a URL ({e}); give the service's address like https://build-host:8420",
                self.server
            ))
        })?;
        match url.scheme() {
            "https" => {}
            "http" if token.is_some() && !is_loopback(&url) => eprintln!(
                "cordon: warning: --server {} is plain http://: the bearer token crosses the network in clear, readable by anyone on the path; use https:// (with {} for a private CA)",
                self.server,
                tls::CA_FLAG
            ),
            "http" => {}
            _ if !self.server.contains("://") => {
                return Err(invalid(format!(
                    "--server {}: give the scheme too, like https://{} (or http:// on this machine or a network you trust)",
                    self.server, self.server
                )));
            }
            other => {
                return Err(invalid(format!(
                    "--server {}: `{other}://` is not a scheme cordon speaks; use https:// (or http:// on this machine or a network you trust)",
                    self.server
                )));
            }
        }
        let tls = tls::client_config(self.ca_cert.as_deref())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| infra(format!("cannot make an HTTP client: {e}")))?;
        Ok(ServiceClient {
            http,
            base: self.server.trim_end_matches('/').to_string(),
            token,
        })
    }
}

/// Whether `url` names this machine: `localhost` or a loopback address.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// A job id as the service makes them (`job-…`): checked before it goes into a URL.
pub fn check_job_id(id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{id}` is not a job id (like job-0123456789ab); `cordon jobs` lists them"
        )))
    }
}

/// The HTTP client of one service. Cheap to clone.
#[derive(Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

impl ServiceClient {
    /// A request to `path` (from `/v1/…`), with the token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `req`; a service that cannot be reached is exit 5.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        req.send().await.map_err(|e| self.unreachable(&e))
    }

    /// Whether `e` is a connection that could not be made (nothing sent), for a reason that
    /// may pass: not a TLS failure.
    pub fn connection_refused(e: &reqwest::Error) -> bool {
        e.is_connect() && tls::explain(e, "").is_none()
    }

    /// A request that got no answer, said for a person: a TLS failure says what to fix.
    pub fn unreachable(&self, e: &reqwest::Error) -> Failure {
        infra(tls::explain(e, &self.base).unwrap_or_else(|| {
            format!(
                "cannot reach {}: {}",
                self.base,
                crate::error::error_chain(e)
            )
        }))
    }

    /// Sends `req` about job `id` and reads the JSON answer; a `404` is "no such job".
    pub async fn job_json(
        &self,
        req: reqwest::RequestBuilder,
        id: &str,
    ) -> Result<serde_json::Value, Failure> {
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(self.job_error(resp, id).await);
        }
        read_json(resp).await
    }

    /// The service's error about job `id`: a `404` says there is no such job (for this token).
    pub async fn job_error(&self, resp: reqwest::Response, id: &str) -> Failure {
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return invalid(format!(
                "no such job `{id}` on {} (a token that is not an admin's sees only the jobs it submitted)",
                self.base
            ));
        }
        api_error(resp).await
    }

    /// Job `id`'s events from offset `from`.
    pub fn events(&self, id: &str, from: u64) -> Events<'_> {
        Events {
            client: self,
            id: id.to_string(),
            next: from,
            failures: 0,
            body: None,
            buf: Vec::new(),
        }
    }
}

/// The JSON body of a successful answer.
pub async fn read_json(resp: reqwest::Response) -> Result<serde_json::Value, Failure> {
    resp.json()
        .await
        .map_err(|e| infra(format!("unreadable answer from the service: {e}")))
}

/// The service's error as a failure: a 4xx (a refused token or request included) is the
/// client's to fix, exit 2; anything else is the service's, exit 5.
pub async fn api_error(resp: reqwest::Response) -> Failure {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body);
    let message = format!("the service answered {status}: {message}");
    if status.is_client_error() {
        invalid(message)
    } else {
        infra(message)
    }
}

/// A job's event stream, read in order: after a dropped connection or a stream the service
/// ended early (a restart), it resumes from the next offset, so every event comes exactly
/// once.
pub struct Events<'a> {
    client: &'a ServiceClient,
    id: String,
    next: u64,
    failures: u32,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    buf: Vec<u8>,
}

impl Events<'_> {
    /// The next event and its offset. Waits for it while the job runs; after the job's
    /// `finished` event there is none (do not ask). Gives up after 30 failed connections in a
    /// row.
    pub async fn next(&mut self) -> Result<(u64, JobEvent), Failure> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| infra(format!("unreadable event from the service: {e}")))?;
                let seq = v["seq"].as_u64().unwrap_or(self.next);
                if seq < self.next {
                    continue; // already seen before a reconnect
                }
                self.next = seq + 1;
                self.failures = 0;
                let ev: JobEvent = serde_json::from_value(v)
                    .map_err(|e| infra(format!("unreadable event from the service: {e}")))?;
                return Ok((seq, ev));
            }
            if let Some(body) = &mut self.body {
                match body.next().await {
                    Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                    _ => {
                        // Ended before the result (service restart, dropped connection):
                        // resume after what was read whole.
                        self.body = None;
                        self.buf.clear();
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                continue;
            }
            let path = format!("/v1/jobs/{}/events?from={}", self.id, self.next);
            let resp = self.client.req(reqwest::Method::GET, &path).send().await;
            match resp {
                Ok(r) if r.status().is_success() => self.body = Some(r.bytes_stream().boxed()),
                Ok(r) if r.status().is_client_error() => {
                    return Err(self.client.job_error(r, &self.id).await);
                }
                Ok(r) => {
                    self.failures += 1;
                    if self.failures > 30 {
                        return Err(api_error(r).await);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) if tls::explain(&e, &self.client.base).is_some() => {
                    // A certificate does not fix itself: no point in asking again.
                    return Err(self.client.unreachable(&e));
                }
                Err(e) => {
                    self.failures += 1;
                    if self.failures > 30 {
                        return Err(infra(format!("lost the service: {e}")));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(url: &str) -> bool {
        is_loopback(&reqwest::Url::parse(url).expect("a URL"))
    }

    #[test]
    fn only_this_machine_is_loopback() {
        assert!(loopback("http://localhost:8420"));
        assert!(loopback("http://LOCALHOST:8420/base"));
        assert!(loopback("http://svc.localhost:8420"));
        assert!(loopback("http://127.0.0.1:8420"));
        assert!(loopback("http://127.9.9.9:8420"));
        assert!(loopback("http://[::1]:8420"));
        assert!(!loopback("http://build-host:8420"));
        assert!(!loopback("http://localhost.example.com:8420"));
        assert!(!loopback("http://10.0.0.5:8420"));
        assert!(!loopback("http://[::ffff:10.0.0.5]:8420"));
        assert!(!loopback("http://0.0.0.0:8420"));
    }

    fn args(server: &str) -> ServiceArgs {
        ServiceArgs {
            server: server.to_string(),
            token: Some("a-token-of-sixteen-chars".into()),
            token_file: None,
            ca_cert: None,
        }
    }

    #[test]
    fn only_http_and_https_are_spoken() {
        assert!(args("https://build-host:8420").connect().is_ok());
        assert!(args("http://127.0.0.1:8420").connect().is_ok());
        let Err(f) = args("ftp://build-host").connect() else {
            panic!("ftp accepted");
        };
        assert_eq!(f.code, EXIT_INVALID);
        assert!(f.message.contains("use https://"), "{}", f.message);
        let Err(f) = args("build-host:8420").connect() else {
            panic!("a URL without a scheme accepted");
        };
        assert_eq!(f.code, EXIT_INVALID);
        assert!(
            f.message.contains("like https://build-host:8420"),
            "{}",
            f.message
        );
    }
}
