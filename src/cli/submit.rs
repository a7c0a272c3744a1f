//! `cordon submit SPEC --server URL`: run a job on a cordon service, with the output and exit
//! status of `cordon run`.
//!
//! The workspace is archived here (same excludes as `cordon run`), gzip-compressed and
//! uploaded with the spec; the job's events are streamed back (resuming from the last offset
//! if the connection drops) and printed by the same printer; artifacts are downloaded to
//! `--out` (default `./cordon-out/<job_id>/`).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;

use super::printer::Printer;
use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR};
use crate::event::JobEvent;
use crate::sandbox::archive::{self, WorkspaceOptions};
use crate::spec::{self, JobSpec};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job spec (YAML or JSON).
    spec: PathBuf,
    /// The service's base URL, e.g. http://build-host:8420.
    #[arg(long, env = "CORDON_SERVER", value_name = "URL")]
    server: String,
    /// The service's bearer token. Prefer --token-file: a command line is visible to other
    /// users of the machine.
    #[arg(
        long,
        env = "CORDON_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// A file holding the bearer token (trailing whitespace ignored), such as the one
    /// `cordon serve` generates in its data directory when no token is configured.
    #[arg(long, env = "CORDON_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print exactly one JSON object, the result, on stdout; everything else goes to stderr.
    #[arg(long)]
    json: bool,
    /// Where artifacts land: an empty or new directory. Default ./cordon-out/<job_id>/.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the job id once it is queued and return, without streaming.
    #[arg(long)]
    detach: bool,
}

struct Failure {
    kind: &'static str,
    message: String,
    code: u8,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        kind: "invalid_input",
        message: message.into(),
        code: EXIT_INVALID,
    }
}

fn infra(message: impl Into<String>) -> Failure {
    Failure {
        kind: "sandbox_error",
        message: message.into(),
        code: EXIT_SANDBOX_ERROR,
    }
}

pub async fn submit(args: SubmitArgs) -> u8 {
    match submit_inner(&args).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("cordon: error: {}", f.message);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": { "kind": f.kind, "message": f.message } })
                );
            }
            f.code
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

/// The service's error as a failure: a 4xx (a refused token or request included) is the
/// client's to fix, exit 2; anything else is the service's, exit 5.
async fn api_error(resp: reqwest::Response) -> Failure {
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

/// The token from --token / CORDON_TOKEN or --token-file / CORDON_TOKEN_FILE (not both).
fn token(args: &SubmitArgs) -> Result<Option<String>, Failure> {
    match (&args.token, &args.token_file) {
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

async fn submit_inner(args: &SubmitArgs) -> Result<u8, Failure> {
    let token = token(args)?;
    let text = std::fs::read_to_string(&args.spec)
        .map_err(|e| invalid(format!("cannot read {}: {e}", args.spec.display())))?;
    let parsed: JobSpec =
        spec::parse_yaml(&text, &args.spec).map_err(|e| invalid(crate::runner::error_chain(&e)))?;
    if let Some(dir) = &args.out
        && dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(invalid(format!(
            "--out {} is not an empty directory: cordon never overwrites files; name a new or empty one",
            dir.display()
        )));
    }

    let workspace = match &parsed.workspace {
        Some(w) => {
            let base = args.spec.parent().unwrap_or(Path::new("."));
            let base = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            };
            let src = base.join(&w.source);
            if !src.is_dir() {
                return Err(invalid(format!(
                    "{}: `workspace.source`: {} is not a directory",
                    args.spec.display(),
                    src.display()
                )));
            }
            let opts = WorkspaceOptions {
                excludes: w.exclude.clone().unwrap_or_else(|| {
                    spec::DEFAULT_EXCLUDES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
                uid: 0,
                gid: 0,
                max_bytes: 4 << 30,
                max_files: 1_000_000,
            };
            let tgz = tokio::task::spawn_blocking(move || {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                archive::write_workspace_tar(&src, &opts, &mut gz)?;
                gz.finish()
                    .map_err(|source| archive::ArchiveError::Output { source })
            })
            .await
            .map_err(|e| infra(format!("archiving the workspace failed: {e}")))?
            .map_err(|e| invalid(crate::runner::error_chain(&e)))?;
            Some(tgz)
        }
        None => None,
    };

    if !args.server.starts_with("http://") {
        return Err(invalid(format!(
            "--server {}: this cordon speaks plain http:// to the service; reach an https endpoint through a local TLS proxy (or tunnel) and give its http:// address",
            args.server
        )));
    }
    let client = Client {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| infra(format!("cannot make an HTTP client: {e}")))?,
        base: args.server.trim_end_matches('/').to_string(),
        token,
    };

    // Submit, waiting out a full queue.
    let status: serde_json::Value = loop {
        let mut form = reqwest::multipart::Form::new().text("spec", text.clone());
        if let Some(tgz) = &workspace {
            let part = reqwest::multipart::Part::bytes(tgz.clone())
                .file_name("workspace.tar.gz")
                .mime_str("application/gzip")
                .map_err(|e| infra(e.to_string()))?;
            form = form.part("workspace", part);
        }
        let resp = client
            .req(reqwest::Method::POST, "/v1/jobs")
            .multipart(form)
            .send()
            .await
            .map_err(|e| infra(format!("cannot reach {}: {e}", client.base)))?;
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(5);
            eprintln!("cordon: the service's queue is full; retrying in {wait}s");
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        break resp
            .json()
            .await
            .map_err(|e| infra(format!("unreadable answer from the service: {e}")))?;
    };
    let id = status["id"]
        .as_str()
        .ok_or_else(|| infra("the service's answer has no job id"))?
        .to_string();
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    if !args.json {
        let pos = status["queue_position"]
            .as_u64()
            .map(|p| format!(", {p} ahead in the queue"))
            .unwrap_or_default();
        eprintln!("cordon: submitted job {id} to {}{pos}", client.base);
    }

    // Ctrl-C cancels the job on the service; the stream then ends with its result.
    let cancel = {
        let http = client.http.clone();
        let url = format!("{}/v1/jobs/{id}", client.base);
        let token = client.token.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\ncordon: cancelling the job on the service (Ctrl-C again to quit at once)");
            let mut r = http.delete(&url);
            if let Some(t) = &token {
                r = r.bearer_auth(t);
            }
            tokio::spawn(r.send());
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("cordon: quitting; the job goes on on the service unless it was cancelled");
            std::process::exit(130);
        })
    };

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("cordon-out").join(&id));
    let mut printer = Printer::new(args.json, out_dir.clone());
    let code = stream(&client, &id, &out_dir, &mut printer).await;
    cancel.abort();
    code
}

/// Streams the job's events from offset 0 to the result, resuming after a dropped connection.
async fn stream(
    client: &Client,
    id: &str,
    out_dir: &Path,
    printer: &mut Printer,
) -> Result<u8, Failure> {
    let mut next: u64 = 0;
    let mut failures = 0u32;
    loop {
        let resp = client
            .req(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}/events?from={next}"),
            )
            .send()
            .await;
        let resp = match resp {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().is_client_error() => return Err(api_error(r).await),
            Ok(r) => {
                failures += 1;
                if failures > 30 {
                    return Err(api_error(r).await);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                failures += 1;
                if failures > 30 {
                    return Err(infra(format!("lost the service: {e}")));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| infra(format!("unreadable event from the service: {e}")))?;
                let seq = v["seq"].as_u64().unwrap_or(next);
                if seq < next {
                    continue; // already seen before a reconnect
                }
                next = seq + 1;
                failures = 0;
                let ev: JobEvent = serde_json::from_value(v)
                    .map_err(|e| infra(format!("unreadable event from the service: {e}")))?;
                if let JobEvent::Finished { mut result } = ev {
                    if !result.artifacts.is_empty() {
                        result.artifacts = download_artifacts(client, id, out_dir).await;
                    }
                    let code = result.outcome.exit_status();
                    printer.event(&JobEvent::Finished { result });
                    let _ = std::io::stdout().flush();
                    return Ok(code);
                }
                printer.event(&ev);
            }
        }
        // The stream ended before the result (service restart, dropped connection): resume.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Downloads the job's artifacts under `out_dir`; returns the local paths written.
async fn download_artifacts(client: &Client, id: &str, out_dir: &Path) -> Vec<PathBuf> {
    let mut written = Vec::new();
    let list: serde_json::Value = match client
        .req(reqwest::Method::GET, &format!("/v1/jobs/{id}/artifacts"))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => {
            eprintln!("cordon: warning: cannot list the job's artifacts");
            return written;
        }
    };
    for item in list["artifacts"].as_array().cloned().unwrap_or_default() {
        let Some(rel) = item["path"].as_str() else {
            continue;
        };
        // The service's names are trusted no further than our own extractor would trust them.
        let rel_path = Path::new(rel);
        if !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            eprintln!("cordon: warning: artifact name `{rel}` refused");
            continue;
        }
        let dest = out_dir.join(rel_path);
        let resp = client
            .req(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}/artifacts/{rel}"),
            )
            .send()
            .await;
        let bytes = match resp {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        let Some(bytes) = bytes else {
            eprintln!("cordon: warning: cannot download artifact {rel}");
            continue;
        };
        let ok = dest
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
            })
            .and_then(|mut f| f.write_all(&bytes));
        match ok {
            Ok(()) => written.push(dest),
            Err(e) => eprintln!("cordon: warning: cannot write {}: {e}", dest.display()),
        }
    }
    written
}
