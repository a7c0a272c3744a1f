//! `cordon run SPEC`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tracing::warn;

use super::printer::Printer;
use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error};
use crate::event::JobEvent;
use crate::runner::{Runner, RunnerConfig};
use crate::sandbox::Reaper;
use crate::sandbox::docker::DockerBackend;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job spec (YAML or JSON).
    spec: PathBuf,
    /// Print exactly one JSON object, the result, on stdout; everything else goes to stderr.
    #[arg(long)]
    json: bool,
    /// Where artifacts land: an empty or new directory. Default ./cordon-out/<job_id>/.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The operator's policy (YAML): ceilings for every limit, the images and egress hosts a
    /// spec may name, the CA bundle `ca_bundle: host` means. Default: the built-in ceilings
    /// (see the README), every local image, the public package registries.
    #[arg(long, value_name = "FILE", env = "CORDON_POLICY")]
    policy: Option<PathBuf>,
}

pub async fn run(args: RunArgs) -> u8 {
    let fail = |kind: &str, e: &(dyn std::error::Error + 'static), code: u8| {
        report_error(e);
        if args.json {
            let msg = crate::error::error_chain(e);
            println!(
                "{}",
                serde_json::json!({ "error": { "kind": kind, "message": msg } })
            );
        }
        code
    };

    let policy = match &args.policy {
        Some(path) => match crate::spec::OperatorPolicy::load(path) {
            Ok(p) => p,
            Err(e) => return fail("invalid_input", &e, EXIT_INVALID),
        },
        None => crate::spec::OperatorPolicy::for_cli(),
    };
    let job = match crate::spec::load(&args.spec, &policy) {
        Ok(j) => j,
        Err(e) => return fail("invalid_input", &e, EXIT_INVALID),
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("cordon-out").join(&job.id));
    if let Some(dir) = &args.out
        && dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        let e = std::io::Error::other(format!(
            "--out {} is not an empty directory: cordon never overwrites files; name a new or empty one",
            dir.display()
        ));
        return fail("invalid_input", &e, EXIT_INVALID);
    }

    let backend = match DockerBackend::connect().await {
        Ok(b) => b,
        Err(e) => return fail("sandbox_error", &e, EXIT_SANDBOX_ERROR),
    };
    match backend.reap().await {
        Ok(0) => {}
        Ok(n) => warn!("removed {n} container(s)/volume(s) left behind by earlier cordon runs"),
        Err(e) => warn!(error = %crate::error::error_chain(&e), "could not look for leftovers"),
    }
    let runner = Runner::new(Arc::new(backend), RunnerConfig::default());
    let preflight = match runner.preflight(&job).await {
        Ok(p) => p,
        Err(e) if e.is_invalid_input() => return fail("invalid_input", &e, EXIT_INVALID),
        Err(e) => return fail("sandbox_error", &e, EXIT_SANDBOX_ERROR),
    };

    let mut printer = Printer::new(args.json, out_dir.clone());
    let mut handle = runner.start(job, preflight, out_dir);
    let cancel = handle.cancel_token();
    super::cancel_on_signal(cancel, "cancelling: removing the sandbox");

    let mut status = EXIT_SANDBOX_ERROR;
    while let Some(ev) = handle.next_event().await {
        if let JobEvent::Finished { result } = &ev {
            status = result.outcome.exit_status();
        }
        printer.event(&ev);
    }
    status
}
