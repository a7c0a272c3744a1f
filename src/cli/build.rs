//! `cordon build OWNER/NAME --issue N`: flow 2 from the command line. The issue becomes code
//! and tests, refined until the suite passes in the sandbox, delivered as a draft pull
//! request that is promoted only on a green run; the pull request's URL on stdout.

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{EXIT_CANCELLED, EXIT_SANDBOX_ERROR, report_error};
use crate::github::builder::{self, Promotion};

pub const AFTER_HELP: &str = "What happens:
  1. the issue and .cordon.yml are read (the file from the default branch only), the
     default branch is cloned (no hooks, no submodules);
  2. the model names the files to change and what shows the issue is resolved;
  3. the model writes the change and its tests as whole files; a path outside the
     repository, in .git, or protected (.github/workflows/**, .cordon.yml, deploy and CI
     files, and .cordon.yml's protected_paths) is never written;
  4. the suite (.cordon.yml's test_command, default `python -m pytest -q`) runs in the
     sandbox, network none, dependencies from the cached environment (install);
  5. on failure the model rewrites only the files the failure points at, told only the
     latest failure, at most max_refine_rounds (default 3) more times;
  6. the change goes on cordon/issue-N into a draft pull request (\"Fixes #N\"), marked ready
     for review only if every test passed and nothing protected was touched; one comment on
     the issue says what happened, with the last failure and the sandbox job's id.
  Nothing is pushed when the sandbox could not run the suite.

Credentials: $GITHUB_TOKEN, or $GITHUB_APP_ID and $GITHUB_APP_PRIVATE_KEY_FILE (a GitHub
App); $GITHUB_API_URL for GitHub Enterprise. They never enter a container, and git gets
the token from a credential helper, never in a URL.

Examples:
  GITHUB_TOKEN=... cordon build octo/calc --issue 12
  cordon build octo/calc --issue 12 --model qwen2.5-coder-7b-instruct --max-tokens 2000

Exit status: 0 the pull request is ready for review, 1 it was left a draft (the reasons
are on stderr and on the issue), 2 invalid input (a flag, the repository's name, no
credentials), 5 nothing was pushed or GitHub, git or .cordon.yml failed, 130 stopped
(Ctrl-C).";

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The GitHub repository, OWNER/NAME.
    repo: String,
    /// The issue to build.
    #[arg(long, value_name = "N")]
    issue: u64,
    #[command(flatten)]
    model: super::shared::ModelArgs,
    /// Sandboxes kept created and started ahead of the next suite run, so a refine round
    /// skips container creation; 0 turns this off.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=8))]
    warm_pool: usize,
    /// The suite's wall time in one round.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    suite_timeout: u64,
}

pub async fn build(args: BuildArgs) -> u8 {
    let llm = match args.model.llm() {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (repo, cfg) = match super::shared::github(&args.repo) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    super::cancel_on_signal(cancel.clone(), "stopping: removing the sandbox");
    eprintln!(
        "cordon build: {repo}#{} on {} with {}",
        args.issue, cfg.api_url, llm.config.model
    );
    let req = builder::Request {
        repo,
        issue: args.issue,
        // The repository's .cordon.yml names the image: only cordon's own (`cordon/*`).
        policy: &crate::spec::OperatorPolicy::default(),
        warm_pool: args.warm_pool,
        timeout: std::time::Duration::from_secs(args.suite_timeout.max(1)),
        trigger: None,
    };
    let b = match builder::run(&cfg, req, &llm, cancel.clone(), super::shared::progress()).await {
        Ok(b) => b,
        Err(e) => {
            report_error(&e);
            return EXIT_SANDBOX_ERROR;
        }
    };
    for w in b.warnings() {
        eprintln!("cordon: note: {w}");
    }
    if cancel.is_cancelled() {
        return EXIT_CANCELLED;
    }
    let Some(url) = b.url() else {
        let why = b.nothing_pushed().unwrap_or_default();
        eprintln!("cordon: nothing pushed: {why}");
        return EXIT_SANDBOX_ERROR;
    };
    println!("{url}");
    if b.promoted() {
        eprintln!("cordon: pull request {url}: ready for review");
        return 0;
    }
    let why = match b.verdict() {
        Some(Promotion::Draft(why)) => why.join("; "),
        _ => "the promotion failed".to_string(),
    };
    eprintln!("cordon: pull request {url}: draft: {why}");
    1
}
