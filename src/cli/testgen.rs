//! `cordon testgen REPO`: generate tests for a repository with an OpenAI-compatible model,
//! validating every candidate in the sandbox. Progress per stage on stderr; Ctrl-C stops
//! cleanly (the repository untouched); the report is written on every path.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{EXIT_CANCELLED, EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error};
use crate::pipeline::exec::{ExecConfig, GENERATED_DIR, Install};
use crate::pipeline::llm::Llm;
use crate::pipeline::{self, Options};

#[derive(Args, Debug)]
pub struct TestgenArgs {
    /// The repository (a directory of Python code). Read only; written only with --write.
    /// With --pr: a GitHub repository, OWNER/NAME.
    repo: PathBuf,
    /// Deliver the kept tests as a GitHub pull request on REPO (OWNER/NAME): its default
    /// branch is cloned (no hooks, no submodules), `.cordon.yml` is read from it, the kept
    /// tests go on a branch `cordon/tests/<commit>` into a draft pull request, marked ready
    /// for review only if the combined suite passed in the sandbox and coverage rose.
    /// Credentials: $GITHUB_TOKEN, or $GITHUB_APP_ID and $GITHUB_APP_PRIVATE_KEY_FILE (a
    /// GitHub App); $GITHUB_API_URL for GitHub Enterprise. They never enter a container.
    #[arg(long, conflicts_with = "write")]
    pr: bool,
    /// With --pr: tests for pull request N of REPO instead of the default branch, aimed only
    /// at the lines it changed (`git diff BASE...HEAD`), into a pull request to its branch;
    /// for a pull request from a fork, a patch in a comment on it (nothing is pushed).
    #[arg(long, requires = "pr", value_name = "N")]
    pull: Option<u64>,
    /// Stop once combined line+branch coverage reaches this percentage (of the --only files
    /// when aimed, else of the project).
    #[arg(long, default_value_t = 90.0, value_name = "PERCENT")]
    target_coverage: f64,
    /// At most this many rounds of gaps → tests → validation.
    #[arg(long, default_value_t = 3)]
    max_iterations: u32,
    /// Functions or methods to write tests for in each round.
    #[arg(long, default_value_t = 6, value_name = "N")]
    gaps_per_iteration: u32,
    /// Aim at one source file or directory, and in it optionally one function, class or
    /// method: `--only pkg/core.py`, `--only pkg/core.py::Parser.feed`, `--only pkg/`.
    /// Repeatable; without it, every gap of the project is a candidate, largest first.
    #[arg(long = "only", value_name = "PATH[::NAME]")]
    only: Vec<String>,
    /// A test is kept only if it passes this many runs (and alone).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Auto-fix attempts per failing test.
    #[arg(long, default_value_t = 2)]
    fix_attempts: u32,
    /// Candidates a function may get in all while none is kept: one per round, the later
    /// ones sampled at a higher temperature, after the functions not tried yet. Needs
    /// --max-iterations at least as large to be reached.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    candidates_per_gap: u32,
    /// Never turn a wrong expected value into the observed one (characterization test); send
    /// every failing assertion to the model's fix round instead.
    #[arg(long)]
    no_characterize: bool,
    /// Start no new gap after this many seconds (the final combined run still happens).
    #[arg(long, value_name = "SECS")]
    time_budget: Option<u64>,
    /// A generated test whose setup or body runs longer than this fails on its own (an endless
    /// loop, a prompt waiting for input), and the other tests of its run go on.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=110))]
    test_timeout: u64,
    #[command(flatten)]
    model: super::shared::ModelArgs,
    /// Copy the kept tests into REPO/tests/generated/ at the end (never on Ctrl-C).
    #[arg(long)]
    write: bool,
    /// Where the report goes (default: ./cordon-testgen/<time>/).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// The sandbox image the tests run in.
    #[arg(long, default_value = crate::spec::DEFAULT_IMAGE)]
    image: String,
    /// How the project's dependencies are installed in the sandbox: `auto` (the default:
    /// `pip install -r` every requirements*.txt at the root, if any), `none`, or a command
    /// (run once with only the dependency files present, reaching only package registries;
    /// the result is cached as an environment image and reused by every later run).
    #[arg(long, default_value = "auto", value_name = "auto|none|CMD")]
    install: String,
    /// A CA bundle for the install, for networks behind a TLS-intercepting proxy: `host` (the
    /// host's own bundle) or a path.
    #[arg(long, value_name = "host|PATH")]
    ca_bundle: Option<String>,
    /// Sandboxes kept created and started ahead of the next test run, so a refine iteration
    /// skips container creation. Each serves one run and is removed after it; 0 turns this off.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=8))]
    warm_pool: usize,
}

pub async fn testgen(args: TestgenArgs) -> u8 {
    let (opts, llm, report_dir) = match options(&args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    super::cancel_on_signal(token, "stopping: removing the sandbox, writing the report");
    if args.pr {
        return pull_request(&args, opts, &llm, cancel, &report_dir).await;
    }

    let progress = super::shared::progress();
    eprintln!(
        "cordon testgen: {} with {} at {}; report in {}",
        args.repo.display(),
        llm.config.model,
        llm.config.base_url,
        report_dir.display()
    );
    let outcome = pipeline::run(&opts, &llm, cancel.clone(), progress).await;
    let mut report = outcome.report;

    let lost = deliver(&args, &mut report, &outcome.kept, &report_dir);
    exit_status(&report.status, lost)
}

/// The run's options, model client and report directory from the flags; an invalid flag is
/// reported and its exit status returned.
fn options(args: &TestgenArgs) -> Result<(Options, Llm, PathBuf), u8> {
    if !args.pr && !args.repo.is_dir() {
        eprintln!(
            "cordon: {}: {} is not a directory",
            super::error_word(),
            args.repo.display()
        );
        return Err(EXIT_INVALID);
    }
    if !(0.0..=100.0).contains(&args.target_coverage) {
        eprintln!(
            "cordon: {}: --target-coverage must be between 0 and 100",
            super::error_word()
        );
        return Err(EXIT_INVALID);
    }
    let llm = args.model.llm()?;
    let ca_bundle = match args.ca_bundle.as_deref() {
        None => None,
        Some("host") => Some("host".to_string()),
        Some(path) => match std::path::Path::new(path).canonicalize() {
            Ok(p) if p.is_file() => Some(p.display().to_string()),
            _ => {
                eprintln!(
                    "cordon: {}: --ca-bundle {path}: not a readable file (or say `host`)",
                    super::error_word()
                );
                return Err(EXIT_INVALID);
            }
        },
    };
    if args.install.trim().is_empty() {
        eprintln!(
            "cordon: {}: --install needs `auto`, `none` or a command",
            super::error_word()
        );
        return Err(EXIT_INVALID);
    }
    let report_dir = args.report.clone().unwrap_or_else(|| {
        let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        PathBuf::from("cordon-testgen").join(t)
    });
    let mut only = Vec::new();
    for text in &args.only {
        match crate::pipeline::gaps::Aim::parse(text) {
            Ok(aim) => only.push(aim),
            Err(e) => {
                eprintln!("cordon: {}: --only {e}", super::error_word());
                return Err(EXIT_INVALID);
            }
        }
    }
    let opts = Options {
        repo: args.repo.clone(),
        only,
        target_coverage: args.target_coverage,
        max_iterations: args.max_iterations,
        gaps_per_iteration: args.gaps_per_iteration,
        repeats: args.repeats.max(1),
        fix_attempts: args.fix_attempts,
        candidates_per_gap: args.candidates_per_gap,
        characterize: !args.no_characterize,
        time_budget: args.time_budget.map(std::time::Duration::from_secs),
        exec: ExecConfig {
            image: args.image.clone(),
            warm_pool: args.warm_pool,
            install: match args.install.trim() {
                "auto" => Install::Auto,
                "none" | "off" => Install::Off,
                cmd => Install::Command(cmd.to_string()),
            },
            ca_bundle,
            test_limit: std::time::Duration::from_secs(args.test_timeout),
            ..ExecConfig::default()
        },
        ..Options::default()
    };

    Ok((opts, llm, report_dir))
}

/// Writes the kept tests (`--write`) and the report, and prints the summary; says what could
/// not be written.
fn deliver(
    args: &TestgenArgs,
    report: &mut pipeline::report::Report,
    kept: &[(String, String)],
    report_dir: &std::path::Path,
) -> Lost {
    let mut lost = Lost::default();
    if args.write && report.status != "stopped" && !kept.is_empty() {
        let dir = args.repo.join(GENERATED_DIR);
        match write_tests(&dir, kept) {
            Ok(n) => {
                eprintln!("cordon: wrote {n} test file(s) to {}", dir.display());
                report.written_to = Some(dir.display().to_string());
            }
            Err(e) => {
                lost.tests = true;
                eprintln!(
                    "cordon: {}: --write: cannot write the tests to {}: {e}; they are in the report directory",
                    super::error_word(),
                    dir.display()
                );
            }
        }
    }
    if let Err(e) = report.write(report_dir, kept) {
        lost.report = true;
        eprintln!(
            "cordon: {}: cannot write the report to {}: {e}; here it is on stdout",
            super::error_word(),
            report_dir.display()
        );
        print!("{}", report.markdown());
    }
    if let (Some(b), Some(a)) = (&report.baseline, &report.after) {
        eprintln!(
            "cordon: coverage {:.1}% → {:.1}% lines, {:.1}% → {:.1}% branches; {} test file(s) kept of {} candidates; {} + {} tokens; {:.0} s",
            b.coverage.line_percent(),
            a.coverage.line_percent(),
            b.coverage.branch_percent(),
            a.coverage.branch_percent(),
            report.kept(),
            report.candidates.len(),
            report.tokens.prompt_tokens,
            report.tokens.completion_tokens,
            report.duration_ms as f64 / 1000.0
        );
    }
    if !lost.report {
        eprintln!(
            "cordon: report: {} (also report.json, report.html)",
            report_dir.join("report.md").display()
        );
    }
    lost
}

/// `--pr`: flow 1 on a GitHub repository; prints where the pull request is.
async fn pull_request(
    args: &TestgenArgs,
    opts: Options,
    llm: &Llm,
    cancel: CancellationToken,
    report_dir: &std::path::Path,
) -> u8 {
    use crate::github::tests_pr::{self, Delivered, Promotion};
    let (repo, cfg) = match super::shared::github(&args.repo.display().to_string()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let progress = super::shared::progress();
    eprintln!(
        "cordon testgen: {repo} on {} with {}; report in {}",
        cfg.api_url,
        llm.config.model,
        report_dir.display()
    );
    let result = tests_pr::run(
        &cfg,
        // The repository's .cordon.yml names the image: only cordon's own (`cordon/*`).
        tests_pr::Target {
            repo,
            on: match args.pull {
                Some(n) => tests_pr::On::PullRequest(n),
                None => tests_pr::On::DefaultBranch,
            },
            policy: &crate::spec::OperatorPolicy::default(),
        },
        opts,
        llm,
        cancel,
        progress,
    )
    .await;
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            report_error(&e);
            return EXIT_SANDBOX_ERROR;
        }
    };
    if let Err(e) = r.outcome.report.write(report_dir, &r.outcome.kept) {
        eprintln!(
            "cordon: {}: cannot write the report to {}: {e}",
            super::error_word(),
            report_dir.display()
        );
    }
    match &r.delivered {
        Delivered::NothingPushed(why) => {
            eprintln!("cordon: no pull request: {why}");
            exit_status(&r.outcome.report.status, Lost::default())
        }
        Delivered::PullRequest {
            url,
            promotion,
            promoted,
            notes,
            ..
        } => {
            let state = match (promotion, promoted) {
                (_, true) => "ready for review".to_string(),
                (Promotion::Draft(why), false) => format!("draft: {}", why.join("; ")),
                (Promotion::Ready, false) => "draft (promotion failed)".to_string(),
            };
            println!("{url}");
            eprintln!("cordon: pull request {url}: {state}");
            for n in notes {
                eprintln!("cordon: note: {n}");
            }
            exit_status(&r.outcome.report.status, Lost::default())
        }
    }
}

/// What could not be written at the end.
#[derive(Clone, Copy, Debug, Default)]
struct Lost {
    /// `--write` failed: the kept tests are not in the repository.
    tests: bool,
    /// The report directory could not be written.
    report: bool,
}

/// The exit status, as `--help` documents it: 130 stopped; 5 the run failed, or `--write` or
/// the report could not be written; 0 done.
fn exit_status(status: &str, lost: Lost) -> u8 {
    match status {
        "stopped" => EXIT_CANCELLED,
        "failed" => EXIT_SANDBOX_ERROR,
        _ if lost.tests || lost.report => EXIT_SANDBOX_ERROR,
        _ => 0,
    }
}

/// Copies the kept tests into the repository, never overwriting a file.
fn write_tests(dir: &std::path::Path, kept: &[(String, String)]) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    for (name, content) in kept {
        let mut path = dir.join(name);
        let mut i = 2;
        while path.exists() {
            path = dir.join(format!("{}_{i}.py", name.trim_end_matches(".py")));
            i += 1;
        }
        std::fs::write(&path, content)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_is_not_success() {
        let none = Lost::default();
        assert_eq!(exit_status("target_reached", none), 0);
        assert_eq!(exit_status("budget_spent", none), 0);
        let tests = Lost {
            tests: true,
            ..none
        };
        assert_eq!(exit_status("target_reached", tests), EXIT_SANDBOX_ERROR);
        let report = Lost {
            report: true,
            ..none
        };
        assert_eq!(exit_status("target_reached", report), EXIT_SANDBOX_ERROR);
        assert_eq!(exit_status("failed", none), EXIT_SANDBOX_ERROR);
        assert_eq!(exit_status("stopped", report), EXIT_CANCELLED);
    }
}
