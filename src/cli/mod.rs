//! The `cordon` command line: a thin consumer of the runner's event stream.

mod cache;
mod client;
mod image;
mod jobs;
mod logging;
mod printer;
mod run;
mod serve;
mod submit;
mod testgen;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when the input (spec, profile, flags) was wrong and nothing was started.
pub const EXIT_INVALID: u8 = 2;
/// Exit status when cordon itself or the engine failed.
pub const EXIT_SANDBOX_ERROR: u8 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "cordon",
    version,
    about = "Run untrusted code (LLM-written tests, above all) in a fresh, locked-down container per job",
    long_about = "cordon runs a job — a repository plus the commands to run in it — inside a fresh Docker \
container per step: no network, no capabilities, a non-root user, a read-only root filesystem, \
seccomp, and hard CPU, memory, pids and output limits. It streams the output back, copies declared \
artifacts out safely, reports a typed outcome, and removes every container it made.",
    after_help = "Examples:\n  cordon image build python          build the default image cordon/python:3.11 (once)\n  cordon run examples/demo/job.yaml   run a job, streaming its output\n  cordon run job.yaml --json          print only the result object on stdout\n\nExit status of `run`: 0 passed, 1 failed, 2 invalid input (nothing started), 3 timed out,\n4 a resource limit (oom_killed, output_limit_exceeded, disk_limit_exceeded), 5 sandbox error,\n130 cancelled.\n\nLogs: set CORDON_LOG (e.g. CORDON_LOG=debug) or pass -v."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one job from a spec file in a fresh sandbox.
    #[command(
        after_help = "The spec (YAML or JSON):\n\n  image: cordon/python:3.11        # default; never pulled, built if it is cordon's own\n  profile: strict                  # sandbox-profiles/NAME.yaml next to the spec, or built in\n  workspace: { source: ./repo, mode: copy, path: /workspace }\n  prepare:                         # optional: installed once, cached as an image\n    run: pip install -r requirements.txt\n    cache_key_files: [\"requirements*.txt\"]\n    allow_hosts: [pypi.org, files.pythonhosted.org]   # its only way out\n    ca_bundle: host                # for TLS-intercepting proxies\n  steps:\n    - name: test\n      run: python3 -m pytest -q --junitxml=/out/junit.xml\n      network: none\n      timeout: 60s\n  artifacts: [/out/junit.xml]      # under /out or the workspace\n  limits: { cpus: 1, memory: 512MiB, pids: 128, output: 4MiB, scratch: 256MiB }\n  env: { PYTHONHASHSEED: \"0\" }\n  pass_env: []                     # host variables to pass, by name; none by default\n\nThe job's stdout and stderr are streamed to cordon's; progress and the summary go to stderr."
    )]
    Run(run::RunArgs),
    /// Build or list cordon's own images (never pulled: built locally from images/).
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// List or prune the dependency environments cached by `prepare`.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Remove containers and volumes left behind by cordon processes that died.
    Reap,
    /// Run the controller service: an HTTP API with a durable job queue (see docs/server.md).
    Serve(serve::ServeArgs),
    /// Run a job on a cordon service: upload the workspace, stream the events; the output and
    /// exit status of `cordon run`.
    #[command(
        after_help = "Examples:\n  cordon submit job.yaml --server http://build-host:8420 --token-file ~/.cordon-token\n  ID=$(cordon submit job.yaml --detach)     # with CORDON_SERVER and CORDON_TOKEN_FILE set\n  cordon status $ID; cordon logs -f $ID\n\nExit status: that of `cordon run` (0 passed, 1 failed, 2 invalid input or a refused token,\n3 timed out, 4 a resource limit, 5 sandbox or service error, 130 cancelled); 0 with --detach\nonce the job is queued. Ctrl-C cancels the job on the service."
    )]
    Submit(submit::SubmitArgs),
    /// List the jobs on a cordon service, newest first: id, state, outcome, image, submitted,
    /// duration (a token that is not an admin's sees only its own).
    #[command(
        after_help = "Examples:\n  cordon jobs --server http://build-host:8420 --token-file ~/.cordon-token\n  cordon jobs --state queued,running          # what is waiting or running now\n  cordon jobs --outcome failed --since 2024-05-01T00:00:00Z --all\n  cordon jobs --json --limit 500 | jq -r '.jobs[].id'\n\nCORDON_SERVER and CORDON_TOKEN_FILE (or CORDON_TOKEN) may replace the flags.\nExit status: 0; 2 for a filter the service refuses or a refused token; 5 if it cannot be reached."
    )]
    Jobs(jobs::JobsArgs),
    /// Show one job on a cordon service: state, outcome, times, steps, tests.
    #[command(
        after_help = "Examples:\n  cordon status job-0123456789ab --server http://build-host:8420 --token-file ~/.cordon-token\n  cordon status \"$(cordon submit job.yaml --detach)\" --json | jq .state\n\nExit status: 0 once shown (whatever the job's outcome); 2 if there is no such job (or it is\nanother token's) or the token is refused; 5 if the service cannot be reached."
    )]
    Status(jobs::StatusArgs),
    /// Print a job's output: its stdout on stdout, its stderr on stderr. Without -f, what it
    /// has written so far; with -f, follow it until the job ends.
    #[command(
        after_help = "Examples:\n  cordon logs job-0123456789ab --server http://build-host:8420 --token-file ~/.cordon-token\n  ID=$(cordon submit job.yaml --detach) && cordon logs -f $ID\n\nExit status: 0 without -f; with -f, that of `cordon submit` for the job's outcome (0 passed,\n1 failed, 3 timed out, 4 a resource limit, 5 sandbox error, 130 cancelled). 2 if there is no\nsuch job or the token is refused. Ctrl-C stops following; the job goes on."
    )]
    Logs(jobs::LogsArgs),
    /// Cancel a job on a cordon service: a queued job never starts, a running one is stopped
    /// and its containers removed.
    #[command(
        after_help = "Examples:\n  cordon cancel job-0123456789ab --server http://build-host:8420 --token-file ~/.cordon-token\n\nExit status: 0 once the job is finished (cancelled, or it had already finished: nothing\nchanges); 2 if there is no such job (or it is another token's) or the token is refused;\n5 if the service cannot be reached or has not stopped the job within 20 s."
    )]
    Cancel(jobs::CancelArgs),
    /// Generate tests for a Python repository with an LLM; every candidate runs only in the
    /// sandbox, and only those that pass repeatedly and add coverage are kept.
    Testgen(testgen::TestgenArgs),
    /// Show a sandbox profile as resolved: every setting and limit a job would run under.
    Profile {
        /// A profile name or path.
        #[arg(default_value = "strict")]
        name: String,
        /// Where to look for sandbox-profiles/ (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service logs what it does by default; a one-shot command only its warnings.
    let serving = matches!(cli.command, Command::Serve(_));
    logging::init_tracing(cli.verbose.max(u8::from(serving)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cordon: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SANDBOX_ERROR);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Image { command } => image::image(command).await,
            Command::Cache { command } => cache::cache(command).await,
            Command::Reap => reap().await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Submit(args) => submit::submit(args).await,
            Command::Jobs(args) => jobs::jobs(args).await,
            Command::Status(args) => jobs::status(args).await,
            Command::Logs(args) => jobs::logs(args).await,
            Command::Cancel(args) => jobs::cancel(args).await,
            Command::Testgen(args) => testgen::testgen(args).await,
            Command::Profile { name, dir } => profile(&name, &dir),
        }
    });
    // Do not wait for stray blocking tasks (a stuck engine call) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

/// On Ctrl-C or SIGTERM, cancels `token` (so the work in flight removes its sandboxes and
/// reports); a second Ctrl-C exits at once, leaving `cordon reap` to clean up.
pub(crate) fn cancel_on_signal(token: tokio_util::sync::CancellationToken, what: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\ncordon: {what} (Ctrl-C again to quit at once)");
        token.cancel();
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("cordon: quitting without cleanup; `cordon reap` removes what is left");
        std::process::exit(130);
    });
}

/// Prints an error and its causes to stderr, `cordon: error: a\n  caused by: b`.
pub(crate) fn report_error(e: &(dyn std::error::Error + 'static)) {
    eprintln!("cordon: error: {e}");
    let mut cur = e.source();
    while let Some(c) = cur {
        eprintln!("  caused by: {c}");
        cur = c.source();
    }
}

async fn reap() -> u8 {
    use crate::sandbox::Backend;
    let backend = match crate::sandbox::docker::DockerBackend::connect().await {
        Ok(b) => b,
        Err(e) => {
            report_error(&e);
            return EXIT_SANDBOX_ERROR;
        }
    };
    match backend.reap().await {
        Ok(n) => {
            eprintln!("cordon: removed {n} leftover container(s) and volume(s)");
            0
        }
        Err(e) => {
            report_error(&e);
            EXIT_SANDBOX_ERROR
        }
    }
}

fn profile(name: &str, dir: &std::path::Path) -> u8 {
    match crate::spec::profile::load(name, dir) {
        Ok(p) => {
            match serde_yaml_ng::to_string(&p) {
                Ok(y) => print!("{y}"),
                Err(e) => {
                    eprintln!("cordon: error: cannot render the profile: {e}");
                    return EXIT_SANDBOX_ERROR;
                }
            }
            0
        }
        Err(e) => {
            report_error(&e);
            EXIT_INVALID
        }
    }
}
