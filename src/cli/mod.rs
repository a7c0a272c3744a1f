//! The `cordon` command line: a thin consumer of the runner's event stream.

mod build;
mod cache;
mod client;
mod completions;
mod image;
mod jobs;
mod logging;
mod printer;
mod progress;
mod run;
mod serve;
mod shared;
mod submit;
mod term;
mod testgen;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use term::ColorChoice;

/// Exit status when the input (spec, profile, flags, a token the service refused) was wrong
/// and nothing was started.
pub const EXIT_INVALID: u8 = 2;
/// Exit status when cordon itself, the engine or the service failed.
pub const EXIT_SANDBOX_ERROR: u8 = 5;
/// Exit status when stopped by Ctrl-C or SIGTERM.
pub const EXIT_CANCELLED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "cordon",
    version,
    about = "Run untrusted code (LLM-written tests, above all) in a fresh, locked-down container per job",
    long_about = "cordon runs a job — a repository plus the commands to run in it — inside a fresh Docker \
container per step: no network, no capabilities, a non-root user, a read-only root filesystem, \
seccomp, and hard CPU, memory, pids and output limits. It streams the output back, copies declared \
artifacts out safely, reports a typed outcome, and removes every container it made.",
    after_help = concat!(
        "Examples:\n  cordon image build python          build the default image cordon/python:3.11 (once)\n  cordon run examples/demo/job.yaml   run a job, streaming its output\n  cordon run job.yaml --json          print only the result object on stdout\n\n",
        "Exit status (each command's --help says which it uses):\n  0    done; for run, submit and logs -f: the job passed\n  1    the job failed (a step exited non-zero)\n  2    invalid input, nothing started: a flag, spec, profile or config; a token or request\n       the service refused; a job that does not exist\n  3    the job timed out\n  4    the job hit a resource limit (oom_killed, output_limit_exceeded, disk_limit_exceeded)\n  5    sandbox error: cordon itself, the engine or the service failed\n  130  cancelled (Ctrl-C or SIGTERM)\n\n",
        "Colour: --color auto (the default) colours a terminal unless NO_COLOR is set; --color always\nalso colours a pipe and wins over NO_COLOR. JSON is never coloured.\nLong work (an image build, a prepare) is one progress line on a terminal; -v shows every line.\nLogs: set CORDON_LOG (e.g. CORDON_LOG=debug) or pass -v.\nShell completions: cordon completions bash|zsh|fish|elvish|powershell; man pages: cordon man."
    )
)]
pub struct Cli {
    /// More output on stderr: every line of an image build or prepare instead of a progress
    /// line, and log messages (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// When to colour output for people: auto (a terminal, unless NO_COLOR is set), always
    /// (even a pipe, even with NO_COLOR), never. JSON output is never coloured.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one job from a spec file in a fresh sandbox.
    #[command(
        after_help = "The spec (YAML or JSON):\n\n  image: cordon/python:3.11        # default; never pulled, built if it is cordon's own\n  profile: strict                  # sandbox-profiles/NAME.yaml next to the spec, or built in\n  workspace: { source: ./repo, mode: copy, path: /workspace }\n  prepare:                         # optional: installed once, cached as an image\n    run: pip install -r requirements.txt\n    cache_key_files: [\"requirements*.txt\"]\n    allow_hosts: [pypi.org, files.pythonhosted.org]   # its only way out\n    ca_bundle: host                # for TLS-intercepting proxies\n  steps:\n    - name: test\n      run: python3 -m pytest -q --junitxml=/out/junit.xml\n      network: none\n      timeout: 60s\n  artifacts: [/out/junit.xml]      # under /out or the workspace\n  limits: { cpus: 1, memory: 512MiB, pids: 128, output: 4MiB, scratch: 256MiB }\n  env: { PYTHONHASHSEED: \"0\" }\n  pass_env: []                     # host variables to pass, by name; none by default\n\nThe job's stdout and stderr are streamed to cordon's; progress and the summary go to stderr.\n\nExit status: 0 passed, 1 failed, 2 invalid input (nothing started), 3 timed out, 4 a resource\nlimit (oom_killed, output_limit_exceeded, disk_limit_exceeded), 5 sandbox error (cordon's or\nthe engine's), 130 cancelled (Ctrl-C or SIGTERM)."
    )]
    Run(run::RunArgs),
    /// Build or list cordon's own images (never pulled: built locally from images/).
    #[command(
        after_help = "Exit status: 0 done, 2 invalid input (no such image recipe), 5 the engine or the build\nfailed. See `cordon image build --help`."
    )]
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// List or prune the dependency environments cached by `prepare`.
    #[command(
        after_help = "Exit status: 0 done, 2 invalid input (a bad --max-size, nothing to prune by), 5 the\nengine failed. See `cordon cache prune --help`."
    )]
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Remove containers and volumes left behind by cordon processes that died.
    #[command(
        after_help = "Exit status: 0 done (whether or not anything was left), 5 the engine failed."
    )]
    Reap,
    /// Run the controller service: an HTTP API with a durable job queue (see docs/server.md).
    #[command(
        after_help = "The job store is SQLite in the data directory (one controller). For several controllers on\none queue, give each the same CORDON_STORE=postgres://USER:PASSWORD@HOST:5432/DB (from a\nsecret) and its own CORDON_CONTROLLER_ID; see \"Several controllers\" in docs/server.md.\n\nExit status: 0 after a clean shutdown (SIGTERM or Ctrl-C: no new jobs, running ones get\nthe grace period), 2 invalid config or --listen address, 5 cannot listen or the service\nfailed."
    )]
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
    #[command(
        after_help = "Examples:\n  cordon testgen ./myproject                      report in ./cordon-testgen/<time>/\n  cordon testgen ./myproject --write --target-coverage 80\n\nExit status: 0 done (the target reached or the rounds used up), 2 invalid input (a flag, the\nrepository, the model's settings), 5 failed (the model endpoint gone, the sandbox failing, or\n--write or the report could not be written: the report says what was done), 130 stopped\n(Ctrl-C: the repository is left untouched)."
    )]
    Testgen(testgen::TestgenArgs),
    /// Turn a GitHub issue into code and tests with an LLM, refined until the suite passes in
    /// the sandbox, delivered as a draft pull request promoted only on a green run.
    #[command(after_help = build::AFTER_HELP)]
    Build(build::BuildArgs),
    /// Show a sandbox profile as resolved: every setting and limit a job would run under.
    #[command(
        after_help = "Exit status: 0 shown, 2 no such profile or an invalid one, 5 it cannot be rendered."
    )]
    Profile {
        /// A profile name or path.
        #[arg(default_value = "strict")]
        name: String,
        /// Where to look for sandbox-profiles/ (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print a shell completion script for cordon on stdout.
    #[command(after_help = completions::COMPLETIONS_HELP)]
    Completions(completions::CompletionsArgs),
    /// Print cordon's man page (roff) on stdout, or write one page per command into a
    /// directory.
    #[command(after_help = completions::MAN_HELP)]
    Man(completions::ManArgs),
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = parse();
    term::init(cli.color, cli.verbose);
    // A service logs what it does by default; a one-shot command only its warnings.
    let serving = matches!(cli.command, Command::Serve(_));
    logging::init_tracing(cli.verbose.max(u8::from(serving)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "cordon: {}: cannot start the async runtime: {e}",
                error_word()
            );
            return ExitCode::from(EXIT_SANDBOX_ERROR);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Image { command } => image::image(command).await,
            Command::Cache { command } => cache::cache(command).await,
            Command::Reap => finish(reap().await),
            Command::Serve(args) => serve::serve(args).await,
            Command::Submit(args) => submit::submit(args).await,
            Command::Jobs(args) => jobs::jobs(args).await,
            Command::Status(args) => jobs::status(args).await,
            Command::Logs(args) => jobs::logs(args).await,
            Command::Cancel(args) => jobs::cancel(args).await,
            Command::Testgen(args) => testgen::testgen(args).await,
            Command::Build(args) => build::build(args).await,
            Command::Profile { name, dir } => finish(profile(&name, &dir)),
            Command::Completions(args) => completions::completions(&args),
            Command::Man(args) => completions::man(&args),
        }
    });
    // Do not wait for stray blocking tasks (a stuck engine call) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

/// Parses the command line, with clap's own help and errors coloured as `--color` says.
fn parse() -> Cli {
    let choice = color_flag(std::env::args_os().skip(1));
    let matches = Cli::command().color(choice.for_clap()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The `--color` value in `args` (before clap has parsed them, so that its help and errors
/// follow it too); `auto` if absent or not one of the three (clap then says so).
fn color_flag(args: impl Iterator<Item = std::ffi::OsString>) -> ColorChoice {
    use clap::ValueEnum;
    let mut choice = ColorChoice::Auto;
    let mut args = args.map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        let value = match a.strip_prefix("--color") {
            Some("") => args.next(),
            Some(v) => v.strip_prefix('=').map(str::to_string),
            None => None,
        };
        if let Some(c) = value.and_then(|v| ColorChoice::from_str(&v, false).ok()) {
            choice = c;
        }
    }
    choice
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
    eprintln!("cordon: {}: {e}", error_word());
    let mut cur = e.source();
    while let Some(c) = cur {
        eprintln!("  caused by: {c}");
        cur = c.source();
    }
}

/// `error`, in red where stderr is coloured.
pub(crate) fn error_word() -> String {
    term::paint(term::get().colour_stderr, term::Tone::Bad, "error")
}

/// `warning`, in yellow where stderr is coloured.
pub(crate) fn warning_word() -> String {
    term::paint(term::get().colour_stderr, term::Tone::Warn, "warning")
}

/// The exit status a command's error means: 2 for what the user can fix (a spec, a profile,
/// the service's configuration, input the engine refused), 5 for the rest (the engine, the
/// host, cordon itself). Decided from the typed errors anywhere in the chain.
pub(crate) fn exit_status(e: &anyhow::Error) -> u8 {
    use crate::sandbox::SandboxError;
    use crate::server::ServerError;
    use crate::server::config::ConfigError;
    use crate::spec::SpecError;
    for cause in e.chain() {
        if cause.is::<SpecError>() || cause.is::<ConfigError>() {
            return EXIT_INVALID;
        }
        if let Some(ServerError::Config(_)) = cause.downcast_ref::<ServerError>() {
            return EXIT_INVALID;
        }
        if let Some(s) = cause.downcast_ref::<SandboxError>() {
            return if s.is_invalid_input() {
                EXIT_INVALID
            } else {
                EXIT_SANDBOX_ERROR
            };
        }
    }
    EXIT_SANDBOX_ERROR
}

/// A command's end at the CLI edge: its status on success, else its error printed (once,
/// with its causes) and the status [`exit_status`] gives it.
pub(crate) fn finish(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::say_error(e.as_ref());
            exit_status(&e)
        }
    }
}

async fn reap() -> anyhow::Result<u8> {
    use crate::sandbox::Reaper;
    let backend = crate::sandbox::docker::DockerBackend::connect().await?;
    let n = backend.reap().await?;
    eprintln!("cordon: removed {n} leftover container(s) and volume(s)");
    Ok(0)
}

fn profile(name: &str, dir: &std::path::Path) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    let p = crate::spec::profile::load(name, dir)?;
    let yaml = serde_yaml_ng::to_string(&p).context("cannot render the profile")?;
    print!("{yaml}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(args: &[&str]) -> ColorChoice {
        color_flag(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_color_flag_is_found_before_clap_parses() {
        assert_eq!(flag(&["run", "job.yaml"]), ColorChoice::Auto);
        assert_eq!(flag(&["--color", "never", "run"]), ColorChoice::Never);
        assert_eq!(flag(&["run", "--color=always", "x"]), ColorChoice::Always);
        // The last one wins, as with clap; after `--` it is an argument, not the flag.
        assert_eq!(
            flag(&["--color=never", "--color", "always"]),
            ColorChoice::Always
        );
        assert_eq!(flag(&["run", "--", "--color=never"]), ColorChoice::Auto);
        assert_eq!(flag(&["--color=purple"]), ColorChoice::Auto);
    }

    #[test]
    fn an_error_s_exit_status_comes_from_the_typed_error_in_its_chain() {
        use anyhow::Context as _;
        let spec = crate::spec::SpecError::Invalid {
            path: "job.yaml".into(),
            field: "limits.memory".into(),
            reason: "too much".into(),
        };
        assert_eq!(exit_status(&anyhow::Error::new(spec)), EXIT_INVALID);
        let config = crate::server::config::ConfigError::Env {
            name: "CORDON_LISTEN",
            reason: "not an address".into(),
        };
        let wrapped: anyhow::Result<()> = Err(config).context("starting the service");
        assert_eq!(exit_status(&wrapped.unwrap_err()), EXIT_INVALID);
        let io: anyhow::Result<()> =
            Err(std::io::Error::other("disk gone")).context("cannot listen on 0.0.0.0:1");
        assert_eq!(exit_status(&io.unwrap_err()), EXIT_SANDBOX_ERROR);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
