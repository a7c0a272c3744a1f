//! Flow 1: `cordon testgen OWNER/NAME --pr`. The repository's default branch is cloned, the
//! test-generation pipeline runs on it (every run in the sandbox), and the kept tests go on a
//! branch `cordon/tests/<commit>` into a **draft** pull request whose description has the
//! coverage table. The pull request is promoted (GraphQL `markPullRequestReadyForReview`)
//! only when the combined suite passed in the sandbox, coverage rose and nothing protected
//! changed; either way one sticky comment says what happened, and a check run does where the
//! credentials allow. Nothing is pushed when the sandbox never ran the suite.

use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{GitHub, GitHubConfig, GitHubError, RepoName};
use super::git::Git;
use super::protect::{Protected, Violation};
use super::pulls::{CheckRun, PullRequest, truncate};
use crate::pipeline::exec::{GENERATED_DIR, Install};
use crate::pipeline::llm::Llm;
use crate::pipeline::report::Report;
use crate::pipeline::{self, Options, Progress};

/// The branch prefix of test-generation pull requests.
pub const BRANCH_PREFIX: &str = "cordon/tests/";

/// Whether a run's pull request may be promoted, and if not why.
#[derive(Debug, Clone, PartialEq)]
pub enum Promotion {
    /// Combined suite green in the sandbox, coverage rose, nothing protected touched.
    Ready,
    /// Opened, left a draft: the reasons.
    Draft(Vec<String>),
}

/// What the tests are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The default branch; the pull request goes into it.
    DefaultBranch,
    /// A pull request's branch (of the same repository); the tests' pull request goes into
    /// that branch, on a branch `cordon/tests/pr-<n>-<commit>`.
    PullRequest(u64),
}

/// Which repository, what in it, and the operator's policy for what `.cordon.yml` may ask.
pub struct Target<'a> {
    pub repo: RepoName,
    pub on: On,
    pub policy: &'a crate::spec::OperatorPolicy,
}

/// What became of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// Nothing pushed: the sandbox never ran the suite, the run was stopped, or no test
    /// was kept. The reason.
    NothingPushed(String),
    /// A pull request, promoted or left a draft.
    PullRequest {
        number: u64,
        url: String,
        branch: String,
        promotion: Promotion,
        promoted: bool,
        /// Warnings that did not fail the run (a skipped check run, a failed promotion).
        notes: Vec<String>,
    },
}

/// The pipeline's outcome and what was delivered.
pub struct TestsPr {
    pub outcome: pipeline::Outcome,
    pub delivered: Delivered,
}

/// Decides promotion from the report of the final combined run and the protected paths the
/// change touched.
pub fn promotion(report: &Report, violations: &[Violation]) -> Promotion {
    let mut why = Vec::new();
    match (&report.baseline, &report.after) {
        (Some(b), Some(a)) => {
            if a.failed > 0 {
                why.push(format!(
                    "the combined suite had {} failing generated test(s) in the sandbox",
                    a.failed
                ));
            }
            // The existing suite is part of the combined one: tests it already failed
            // (quarantined, never blamed on generated ones) keep the pull request a draft.
            if b.failed > 0 || !a.quarantined.is_empty() {
                let names = a
                    .quarantined
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                why.push(format!(
                    "the existing suite has {} failing test(s) of its own ({names})",
                    b.failed.max(a.quarantined.len() as u64)
                ));
            }
            if a.coverage.combined_percent() <= b.coverage.combined_percent() {
                why.push(format!(
                    "coverage did not rise ({:.1}% → {:.1}%)",
                    b.coverage.combined_percent(),
                    a.coverage.combined_percent()
                ));
            }
        }
        _ => why.push("the combined suite did not run in the sandbox".into()),
    }
    if report.status == "failed" {
        why.push(format!(
            "the run failed: {}",
            report.error.as_deref().unwrap_or("see the report")
        ));
    }
    for v in violations {
        why.push(format!("{v}: changes to it are never promoted"));
    }
    if why.is_empty() {
        Promotion::Ready
    } else {
        Promotion::Draft(why)
    }
}

/// Runs flow 1 on `repo`. `template` gives the pipeline's settings; its `repo`, image and
/// install are replaced by the clone and `.cordon.yml` (from the default branch), whose image
/// must be one `policy` allows.
pub async fn run(
    cfg: &GitHubConfig,
    target: Target<'_>,
    template: Options,
    llm: &Llm,
    cancel: CancellationToken,
    progress: Progress,
) -> Result<TestsPr, GitHubError> {
    let Target { repo, on, policy } = target;
    let gh = GitHub::connect(cfg, repo).await?;
    let info = gh.repository().await?;
    let rc = gh.repo_config(&info.default_branch).await?;
    // The repository picks its image; the operator's policy decides whether it may.
    if !policy.image_allowed(&rc.image) {
        return Err(GitHubError::Config {
            field: ".cordon.yml: image".into(),
            reason: format!(
                "`{}` is not among the operator's allowed images ({})",
                rc.image,
                policy.allowed_images.join(", ")
            ),
        });
    }
    // What the tests are for, and where their pull request goes.
    let (base, prefix) = match on {
        On::DefaultBranch => (info.default_branch.clone(), String::new()),
        On::PullRequest(n) => {
            let head = gh.pull_head(n).await?;
            if head.repo != gh.repo.to_string() {
                return Err(GitHubError::Config {
                    field: format!("pull request #{n}"),
                    reason: format!(
                        "its branch is in another repository ({}); tests for pull requests from forks are not supported yet",
                        head.repo
                    ),
                });
            }
            (head.branch, format!("pr-{n}-"))
        }
    };
    let protected = rc.protected().map_err(|reason| GitHubError::Config {
        field: ".cordon.yml: protected_paths".into(),
        reason,
    })?;
    let work = tempfile::tempdir().map_err(|e| GitHubError::Git {
        what: "clone".into(),
        message: format!("cannot make a temporary directory: {e}"),
    })?;
    let git = Git::new(&work.path().join("repo"), Some(gh.git_token().clone()));
    progress(&format!(
        "github: cloning {}'s {} (no hooks, no submodules)",
        gh.repo, base
    ));
    git.clone(&info.clone_url, &base).await?;
    let base_sha = git.head().await?;

    let mut opts = template;
    opts.repo = git.dir.clone();
    opts.exec.image = rc.image.clone();
    opts.exec.install = match rc.install.trim() {
        "auto" => Install::Auto,
        "none" | "off" => Install::Off,
        cmd => Install::Command(cmd.to_string()),
    };
    let outcome = pipeline::run(&opts, llm, cancel, progress.clone()).await;
    let report = &outcome.report;
    let nothing = |why: String| {
        progress(&format!("github: nothing pushed: {why}"));
        Ok(TestsPr {
            delivered: Delivered::NothingPushed(why),
            outcome: pipeline::Outcome {
                report: outcome.report.clone(),
                kept: outcome.kept.clone(),
            },
        })
    };
    if report.baseline.is_none() {
        return nothing(format!(
            "the sandbox did not run the suite ({})",
            report.error.as_deref().unwrap_or(&report.status)
        ));
    }
    if report.status == "stopped" {
        return nothing("the run was stopped".into());
    }
    if outcome.kept.is_empty() {
        return nothing("no generated test was kept".into());
    }

    let short: String = base_sha.chars().take(7).collect();
    let branch = format!("{BRANCH_PREFIX}{prefix}{short}");
    let (verdict, head_sha) = commit(&git, &protected, report, &outcome.kept, &branch).await?;
    progress(&format!("github: pushing {branch}"));
    git.push(&branch).await?;
    let title = format!("cordon: tests for {short}");
    let delivered =
        open_and_promote(&gh, report, verdict, branch, &base, &title, &head_sha).await?;
    Ok(TestsPr { delivered, outcome })
}

/// Writes the kept tests to `tests/generated/`, commits them on `branch`, and judges the
/// change: the promotion verdict and the new commit.
async fn commit(
    git: &Git,
    protected: &Protected,
    report: &Report,
    kept: &[(String, String)],
    branch: &str,
) -> Result<(Promotion, String), GitHubError> {
    let mut paths = Vec::new();
    let dir = git.dir.join(GENERATED_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("writing the tests", e))?;
    for (name, content) in kept {
        if !crate::pipeline::exec::is_safe_file_name(name) {
            continue;
        }
        std::fs::write(dir.join(name), content).map_err(|e| io_err("writing the tests", e))?;
        paths.push(format!("{GENERATED_DIR}/{name}"));
    }
    git.branch(branch).await?;
    let changed = git
        .commit(
            &paths,
            &format!("cordon: {} generated test file(s)", paths.len()),
        )
        .await?;
    let violations = protected.check(changed.iter().map(String::as_str));
    Ok((promotion(report, &violations), git.head().await?))
}

/// Opens (or updates) the draft pull request from the pushed `branch` into `base`, makes
/// the check run, promotes it if `verdict` allows, and writes the sticky comment.
async fn open_and_promote(
    gh: &GitHub,
    report: &Report,
    verdict: Promotion,
    branch: String,
    base: &str,
    title: &str,
    head_sha: &str,
) -> Result<Delivered, GitHubError> {
    let body = pr_body(report, &verdict);
    let existing = match gh.find_pull(&branch).await? {
        Some(pr) => pr,
        None => match gh.create_draft(title, &branch, base, &body).await {
            Ok(pr) => return finish(gh, report, verdict, branch, pr, head_sha, &body).await,
            // A retried POST whose first attempt went through: GitHub says the pull request
            // exists (422); look it up.
            Err(GitHubError::Invalid { message, .. }) => {
                gh.find_pull(&branch)
                    .await?
                    .ok_or_else(|| GitHubError::Invalid {
                        what: "opening the draft pull request".into(),
                        message,
                    })?
            }
            Err(e) => return Err(e),
        },
    };
    gh.set_body(existing.number, &body).await?;
    let pr = existing;
    finish(gh, report, verdict, branch, pr, head_sha, &body).await
}

/// The check run, promotion and the sticky comment on `pr`.
async fn finish(
    gh: &GitHub,
    report: &Report,
    verdict: Promotion,
    branch: String,
    pr: PullRequest,
    head_sha: &str,
    body: &str,
) -> Result<Delivered, GitHubError> {
    let mut notes = Vec::new();
    let ready = verdict == Promotion::Ready;
    match gh
        .check_run(head_sha, ready, &headline(report, &verdict), body)
        .await
    {
        Ok(CheckRun::Made(_)) => {}
        Ok(CheckRun::Skipped(note)) => notes.push(note),
        Err(e) => notes.push(format!("no check run: {e}")),
    }
    let mut promoted = !pr.draft && ready;
    if ready && pr.draft {
        match gh.mark_ready(&pr).await {
            Ok(()) => promoted = true,
            Err(e) => {
                warn!(error = %e, "promotion failed");
                notes.push(format!("promotion failed: {e}"));
            }
        }
    }
    gh.sticky_comment(pr.number, &comment(report, &verdict, promoted, &notes))
        .await?;
    info!(pr = pr.number, promoted, "pull request delivered");
    Ok(delivered(pr, branch, verdict, promoted, notes))
}

fn delivered(
    pr: PullRequest,
    branch: String,
    promotion: Promotion,
    promoted: bool,
    notes: Vec<String>,
) -> Delivered {
    Delivered::PullRequest {
        number: pr.number,
        url: pr.html_url,
        branch,
        promotion,
        promoted,
        notes,
    }
}

fn io_err(what: &str, e: std::io::Error) -> GitHubError {
    GitHubError::Git {
        what: what.into(),
        message: e.to_string(),
    }
}

fn headline(report: &Report, verdict: &Promotion) -> String {
    let kept = report.kept();
    match verdict {
        Promotion::Ready => {
            format!("{kept} test file(s) kept; the combined suite passed in the sandbox")
        }
        Promotion::Draft(_) => format!("{kept} test file(s) kept; left a draft"),
    }
}

/// The pull request's description: coverage before → after, kept and discarded tests with
/// reasons, suspected code bugs.
pub fn pr_body(report: &Report, verdict: &Promotion) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Tests generated by cordon and run in its sandbox (never on a host).\n"
    );
    if let (Some(b), Some(a)) = (&report.baseline, &report.after) {
        let _ = writeln!(s, "| | before | after |\n|---|---|---|");
        let _ = writeln!(
            s,
            "| lines | {:.1}% | {:.1}% |",
            b.coverage.line_percent(),
            a.coverage.line_percent()
        );
        let _ = writeln!(
            s,
            "| branches | {:.1}% | {:.1}% |",
            b.coverage.branch_percent(),
            a.coverage.branch_percent()
        );
        let _ = writeln!(
            s,
            "| combined | {:.1}% | {:.1}% |",
            b.coverage.combined_percent(),
            a.coverage.combined_percent()
        );
        let _ = writeln!(
            s,
            "| tests (passed / failed) | {} / {} | {} / {} |\n",
            b.passed, b.failed, a.passed, a.failed
        );
    }
    let _ = writeln!(
        s,
        "### Candidates\n\n| target | file | status | reason |\n|---|---|---|---|"
    );
    for c in &report.candidates {
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {} | {} |",
            cell(&c.target),
            cell(&c.file),
            c.status,
            cell(&c.reason)
        );
    }
    if !report.suspected_bugs.is_empty() {
        let _ = writeln!(s, "\n### Suspected code bugs\n");
        for b in &report.suspected_bugs {
            let _ = writeln!(
                s,
                "- `{}` (test `{}`): {}",
                cell(&b.target),
                cell(&b.test),
                cell(&b.evidence)
            );
        }
    }
    let _ = writeln!(s, "\n### Promotion\n");
    match verdict {
        Promotion::Ready => {
            let _ = writeln!(
                s,
                "Ready for review: the combined suite passed in the sandbox and coverage rose."
            );
        }
        Promotion::Draft(why) => {
            let _ = writeln!(s, "Left a draft:");
            for w in why {
                let _ = writeln!(s, "- {}", cell(w));
            }
        }
    }
    truncate(&s, 60_000)
}

/// Text from a model or a repository, made safe for one Markdown table cell or line: no
/// pipes, newlines or HTML comments (which could fake the sticky marker).
pub(crate) fn cell(s: &str) -> String {
    let one: String = s
        .replace('|', "\\|")
        .replace("<!--", "&lt;!--")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    truncate(&one, 300)
}

fn comment(report: &Report, verdict: &Promotion, promoted: bool, notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "**cordon**: {}\n", headline(report, verdict));
    match (verdict, promoted) {
        (Promotion::Ready, true) => {
            let _ = writeln!(s, "Marked ready for review.");
        }
        (Promotion::Ready, false) => {
            let _ = writeln!(
                s,
                "Should be ready, but promotion did not go through (see below)."
            );
        }
        (Promotion::Draft(why), _) => {
            let _ = writeln!(s, "Left a draft because:");
            for w in why {
                let _ = writeln!(s, "- {}", cell(w));
            }
        }
    }
    for n in notes {
        let _ = writeln!(s, "\n> {}", cell(n));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::coverage::Totals;
    use crate::pipeline::report::RunSummary;

    fn run(passed: u64, failed: u64, covered: u32) -> RunSummary {
        RunSummary {
            tests: passed + failed,
            passed,
            failed,
            coverage: Totals {
                lines: 10,
                lines_covered: covered,
                branches: 0,
                branches_covered: 0,
            },
            ..RunSummary::default()
        }
    }

    fn report(after: RunSummary) -> Report {
        Report {
            status: "budget_spent".into(),
            baseline: Some(run(1, 0, 4)),
            after: Some(after),
            ..Report::default()
        }
    }

    #[test]
    fn only_green_and_higher_is_ready() {
        assert_eq!(promotion(&report(run(3, 0, 8)), &[]), Promotion::Ready);
        let red = promotion(&report(run(2, 1, 8)), &[]);
        let mut broken = report(run(3, 0, 8));
        broken.baseline = Some(run(0, 1, 4));
        let b = promotion(&broken, &[]);
        assert!(
            matches!(&b, Promotion::Draft(w) if w[0].contains("existing suite")),
            "{b:?}"
        );
        assert!(
            matches!(&red, Promotion::Draft(w) if w[0].contains("1 failing")),
            "{red:?}"
        );
        let flat = promotion(&report(run(3, 0, 4)), &[]);
        assert!(
            matches!(&flat, Promotion::Draft(w) if w[0].contains("did not rise")),
            "{flat:?}"
        );
        let v = Violation {
            path: ".github/workflows/x.yml".into(),
            pattern: ".github/workflows/**".into(),
        };
        let prot = promotion(&report(run(3, 0, 8)), &[v]);
        assert!(
            matches!(&prot, Promotion::Draft(w) if w[0].contains("protected")),
            "{prot:?}"
        );
        let none = Report::default();
        assert!(matches!(promotion(&none, &[]), Promotion::Draft(_)));
    }

    #[test]
    fn model_text_cannot_fake_the_marker_or_break_the_table() {
        let c = cell("a | b\n<!-- cordon:sticky -->");
        assert!(
            !c.contains("<!--") && !c.contains('\n') && c.contains("\\|"),
            "{c}"
        );
    }
}
