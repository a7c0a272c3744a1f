//! `cordon submit SPEC --server URL`: run a job on a cordon service, with the output and exit
//! status of `cordon run`.
//!
//! The workspace is archived here (same excludes as `cordon run`) and uploaded with the
//! spec, gzip-compressed as it is sent ([`upload`]); a full queue (`429`) is waited out, and
//! a service that is unavailable (`503`, nothing accepted) is retried for `--retry-for`. The
//! job's events are streamed back (resuming from the last offset if the connection drops) and
//! printed by the same printer; artifacts are downloaded to `--out` (default
//! `./cordon-out/<job_id>/`).

mod upload;

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::client::{
    Backoff, Failure, ServiceArgs, ServiceClient, api_error, infra, invalid, read_json, retry_after,
};
use super::printer::Printer;
use crate::event::JobEvent;
use crate::sandbox::archive::WorkspaceOptions;
use crate::spec::{self, JobSpec};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job spec (YAML or JSON).
    spec: PathBuf,
    #[command(flatten)]
    service: ServiceArgs,
    /// Print exactly one JSON object, the result, on stdout; everything else goes to stderr.
    #[arg(long)]
    json: bool,
    /// Where artifacts land: an empty or new directory. Default ./cordon-out/<job_id>/.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the job id once it is queued and return, without streaming; follow the job
    /// with `cordon status ID` and `cordon logs -f ID`.
    #[arg(long)]
    detach: bool,
    /// How long to keep trying while the service is unavailable (it answers 503: shutting
    /// down, restarting, its engine unreachable), with backoff; 0s fails at once. A refused
    /// submission is never half-accepted, so trying again is safe.
    #[arg(
        long,
        env = "CORDON_RETRY_FOR",
        value_name = "DURATION",
        default_value = "2m",
        value_parser = humantime::parse_duration
    )]
    retry_for: Duration,
}

pub async fn submit(args: SubmitArgs) -> u8 {
    match submit_inner(&args).await {
        Ok(code) => code,
        Err(f) => f.report(args.json),
    }
}

async fn submit_inner(args: &SubmitArgs) -> Result<u8, Failure> {
    let client = args.service.connect()?;
    let text = std::fs::read_to_string(&args.spec)
        .map_err(|e| invalid(format!("cannot read {}: {e}", args.spec.display())))?;
    let parsed: JobSpec =
        spec::parse_yaml(&text, &args.spec).map_err(|e| invalid(crate::error::error_chain(&e)))?;
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
            Some((src, opts))
        }
        None => None,
    };
    let status = post_job(&client, &text, workspace.as_ref(), args.retry_for).await?;
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
        let client = client.clone();
        let path = format!("/v1/jobs/{id}");
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\ncordon: cancelling the job on the service (Ctrl-C again to quit at once)");
            tokio::spawn(client.req(reqwest::Method::DELETE, &path).send());
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

/// Submits the job (spec `text`, the workspace if any) and returns the service's answer,
/// waiting out a full queue and, for up to `retry_for`, a service that is unavailable.
async fn post_job(
    client: &ServiceClient,
    text: &str,
    workspace: Option<&(PathBuf, WorkspaceOptions)>,
    retry_for: Duration,
) -> Result<serde_json::Value, Failure> {
    let mut backoff = Backoff::new(retry_for);
    let mut unavailable = false;
    // One key for every attempt: a retry after a timeout or a restart gets the job the first
    // attempt made, never a second one.
    let key = format!("cordon-submit-{}", uuid::Uuid::new_v4().simple());
    loop {
        let mut form = reqwest::multipart::Form::new().text("spec", text.to_string());
        let archiver = match workspace {
            Some((src, opts)) => {
                let (part, archiver) = upload::workspace_part(src, opts)?;
                form = form.part("workspace", part);
                Some(archiver)
            }
            None => None,
        };
        let sent = client
            .req(reqwest::Method::POST, "/v1/jobs")
            .header("Idempotency-Key", &key)
            .multipart(form)
            .send()
            .await;
        let resp = match sent {
            Ok(r) if r.status().is_success() => return read_json(r).await,
            Ok(r) => r,
            Err(e) => {
                if let Some(a) = archiver
                    && let Some(f) = a.failure(true).await
                {
                    return Err(f);
                }
                // After a 503, a refused connection is the service restarting; nothing was
                // sent, so it is waited out the same way. A timeout may have left a job
                // behind: the retry's Idempotency-Key finds it instead of making another.
                if (unavailable && ServiceClient::connection_refused(&e)) || e.is_timeout() {
                    let why = client.unreachable(&e);
                    wait_unavailable(&mut backoff, None, why).await?;
                    continue;
                }
                let mut f = client.unreachable(&e);
                if workspace.is_some() && cut_off(&e) {
                    f.message.push_str(
                        " (the service stopped reading the upload: if the workspace is over its max_upload, exclude what the job does not need with `workspace.exclude`, or ask the operator to raise max_upload)",
                    );
                }
                return Err(f);
            }
        };
        if let Some(a) = archiver
            && let Some(f) = a.failure(false).await
        {
            return Err(f);
        }
        match resp.status() {
            reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(5));
                eprintln!(
                    "cordon: the service's queue is full; retrying in {}s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                unavailable = true;
                let after = retry_after(resp.headers());
                let why = api_error(resp).await;
                wait_unavailable(&mut backoff, after, why).await?;
            }
            reqwest::StatusCode::PAYLOAD_TOO_LARGE => {
                // The upload is streamed, so its size is not announced: the service may stop
                // reading with a generic message.
                let mut f = api_error(resp).await;
                f.message.push_str(
                    " (the upload is over the service's max_upload: exclude what the job does not need with `workspace.exclude`, or ask the operator to raise max_upload)",
                );
                return Err(f);
            }
            _ => return Err(api_error(resp).await),
        }
    }
}

/// Whether the connection was closed under a request still being sent (a service that
/// refuses an upload too large may answer and close before the client sees the answer).
fn cut_off(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Waits before the next attempt at a submission the service could not take (`why`), or
/// gives up with `why` once `--retry-for` is spent.
async fn wait_unavailable(
    backoff: &mut Backoff,
    retry_after: Option<Duration>,
    why: Failure,
) -> Result<(), Failure> {
    let Some(wait) = backoff.next_wait(retry_after) else {
        return Err(infra(format!(
            "{}; nothing was submitted. Gave up after {:.0?} (--retry-for {}): submit again later, or give a longer --retry-for",
            why.message,
            backoff.elapsed(),
            humantime::format_duration(backoff.budget())
        )));
    };
    eprintln!(
        "cordon: {}; nothing was submitted, retrying in {:.1}s",
        why.message,
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Prints the job's events from offset 0 to the result (downloading the artifacts before the
/// summary); returns the exit status of its outcome.
async fn stream(
    client: &ServiceClient,
    id: &str,
    out_dir: &Path,
    printer: &mut Printer,
) -> Result<u8, Failure> {
    let mut events = client.events(id, 0);
    loop {
        let (_, ev) = events.next().await?;
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

/// Downloads the job's artifacts under `out_dir`; returns the local paths written.
async fn download_artifacts(client: &ServiceClient, id: &str, out_dir: &Path) -> Vec<PathBuf> {
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
