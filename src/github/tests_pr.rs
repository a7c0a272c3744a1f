//! Flow 1: `cordon testgen OWNER/NAME --pr`. The repository's default branch is cloned, the
//! test-generation pipeline runs on it (every run in the sandbox), and the kept tests go on a
//! branch `cordon/tests/<commit>` into a **draft** pull request whose description has the
//! coverage table. The pull request is promoted (GraphQL `markPullRequestReadyForReview`)
//! only when the combined suite passed in the sandbox, coverage rose and nothing protected
//! changed; either way one sticky comment says what happened, and a check run does where the
//! credentials allow. Nothing is pushed when the sandbox never ran the suite.
//!
//! For a pull request (the webhook, [`On::PullRequest`]) the head is fetched from the base
//! repository as `refs/pull/<n>/head`, and the gaps are only those in the lines it changed
//! (`git diff --unified=0 BASE...HEAD` in the clone, the project's Python source only). One
//! that changed no coverable line gets a comment and nothing runs. The tests' pull request
//! goes into the pull request's branch; for a fork's pull request they are a patch in a
//! comment instead (see [`run`]).

use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{GitHub, GitHubConfig, GitHubError, RepoName};
use super::diff;
use super::git::Git;
use super::protect::{Protected, Violation};
use super::pulls::{CheckRun, PullHead, PullRequest, truncate};
use crate::pipeline::exec::{GENERATED_DIR, Install};
use crate::pipeline::gaps::Lines;
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
    /// A pull request: the gaps are those in the lines it changed. Its branch in the same
    /// repository: the tests' pull request goes into that branch, from a branch
    /// `cordon/tests/pr-<n>-<commit>`. Its branch in a fork: the tests are a patch in a
    /// comment on it (nothing pushed).
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
///
/// On a pull request, the gaps are those in the lines it changed (`git diff BASE...HEAD` in
/// the clone, Python source only), and its head is fetched from the base repository as
/// `refs/pull/<n>/head`. A pull request that changed no coverable line gets a comment saying
/// so and nothing is run. One from a fork gets its tests as a patch in a comment: cordon
/// pushes nothing to the fork, and never brings the fork's commits into a branch of the base
/// repository (where its `push` workflows would run them with the repository's secrets).
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
    let protected = rc.protected().map_err(|reason| GitHubError::Config {
        field: ".cordon.yml: protected_paths".into(),
        reason,
    })?;
    let work = tempfile::tempdir().map_err(|e| GitHubError::Git {
        what: "clone".into(),
        message: format!("cannot make a temporary directory: {e}"),
    })?;
    let git = Git::new(&work.path().join("repo"), Some(gh.git_token().clone()));
    // What the tests are for, and where they go.
    let pull = match on {
        On::DefaultBranch => {
            progress(&format!(
                "github: cloning {}'s {} (no hooks, no submodules)",
                gh.repo, info.default_branch
            ));
            git.clone(&info.clone_url, &info.default_branch).await?;
            None
        }
        On::PullRequest(n) => {
            let head = gh.pull_head(n).await?;
            progress(&format!(
                "github: fetching pull request #{n} as refs/pull/{n}/head from {} over its {} (no hooks, no submodules)",
                gh.repo, head.base
            ));
            git.clone_pull(&info.clone_url, &head.base, n).await?;
            Some((n, head))
        }
    };
    let base_sha = git.head().await?;

    let mut opts = template;
    opts.repo = git.dir.clone();
    opts.exec.image = rc.image.clone();
    opts.exec.install = match rc.install.trim() {
        "auto" => Install::Auto,
        "none" | "off" => Install::Off,
        cmd => Install::Command(cmd.to_string()),
    };
    let scope = match &pull {
        None => None,
        Some((n, head)) => {
            let scope = changed_scope(&git, *n, head, &gh.repo).await?;
            progress(&format!("github: {}", scope.describe()));
            if scope.coverable == 0 {
                let why = scope.nothing_to_cover();
                return Ok(no_change(&gh, *n, &opts, why, &progress).await);
            }
            opts.changed = Some(scope.lines.clone());
            // The project's overall coverage does not end a pull request's run: its changed
            // lines running out of gaps does.
            opts.target_coverage = 100.0;
            Some(scope)
        }
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
        if let Some(scope) = &scope
            && report.candidates.is_empty()
            && matches!(report.status.as_str(), "no_gaps_left" | "target_reached")
        {
            let why = scope.already_covered();
            say_on_pull(
                &gh,
                scope.number,
                &format!("**cordon**: no tests generated: {why}. No pull request was opened."),
            )
            .await;
            return nothing(why);
        }
        return nothing("no generated test was kept".into());
    }

    let short: String = base_sha.chars().take(7).collect();
    let prefix = match &scope {
        Some(s) => format!("pr-{}-", s.number),
        None => String::new(),
    };
    let branch = format!("{BRANCH_PREFIX}{prefix}{short}");
    let (verdict, head_sha) = commit(&git, &protected, report, &outcome.kept, &branch).await?;
    if let Some(scope) = &scope
        && let Some(fork) = &scope.fork
    {
        let why = as_patch(&gh, &git, report, verdict, scope, fork, &base_sha).await?;
        return nothing(why);
    }
    progress(&format!("github: pushing {branch}"));
    git.push(&branch).await?;
    let (base, title) = match &pull {
        Some((n, head)) => (
            head.branch.clone(),
            format!("cordon: tests for #{n} ({short})"),
        ),
        None => (
            info.default_branch.clone(),
            format!("cordon: tests for {short}"),
        ),
    };
    let delivered = open_and_promote(
        &gh,
        report,
        verdict,
        branch,
        &base,
        &title,
        &head_sha,
        scope.as_ref(),
    )
    .await?;
    Ok(TestsPr { delivered, outcome })
}

/// What a pull request's run is restricted to: the lines it changed.
#[derive(Debug, Clone)]
pub struct Scope {
    pub number: u64,
    /// Changed lines of the project's Python source files (tests excluded).
    pub lines: Lines,
    /// How many of them a test could cover (code inside a function or class).
    pub coverable: u64,
    /// Changed Python files that are not source (tests, or outside the project).
    pub other_python_files: usize,
    /// The head's repository, when it is not the base one.
    pub fork: Option<String>,
}

impl Scope {
    /// "gaps restricted to the N lines this PR changed".
    pub fn describe(&self) -> String {
        format!(
            "gaps restricted to the {} this PR changed in {} (#{}; {} of them coverable)",
            plural(self.lines.count(), "line"),
            plural(self.lines.files().count() as u64, "Python source file"),
            self.number,
            self.coverable
        )
    }

    fn nothing_to_cover(&self) -> String {
        if self.lines.is_empty() {
            format!(
                "pull request #{} changed no line of the project's Python source{}, so it has no coverable line to write tests for",
                self.number,
                if self.other_python_files > 0 {
                    format!(
                        " (it changed {} Python file(s) that are tests or outside the project)",
                        self.other_python_files
                    )
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "pull request #{} changed {} line(s) of Python source, but none a test can cover (module-level code, comments and blank lines run on import or not at all)",
                self.number,
                self.lines.count()
            )
        }
    }

    fn already_covered(&self) -> String {
        format!(
            "every coverable line of the {} line(s) pull request #{} changed already runs in the existing tests",
            self.lines.count(),
            self.number
        )
    }
}

/// The lines pull request `n` changed since its head left its base, kept to the project's
/// Python source, and how many of them are coverable.
async fn changed_scope(
    git: &Git,
    number: u64,
    head: &PullHead,
    base_repo: &RepoName,
) -> Result<Scope, GitHubError> {
    let mut lines = git
        .changed_lines(&format!("refs/remotes/origin/{}", head.base), "HEAD")
        .await?;
    let all_files = lines.files().count();
    // Tests and files outside the project's source are never aimed at. When the project
    // cannot be read, the pipeline says why; nothing is filtered here.
    if let Ok(project) = crate::pipeline::detect::detect(&git.dir) {
        lines.retain_files(|f| project.sources.iter().any(|s| s == f));
    }
    let coverable = diff::coverable(&git.dir, &lines).count();
    Ok(Scope {
        number,
        other_python_files: all_files - lines.files().count(),
        coverable,
        lines,
        fork: (!head.repo.eq_ignore_ascii_case(&base_repo.to_string())).then(|| head.repo.clone()),
    })
}

/// A pull request with nothing to cover: a comment says so; nothing runs, nothing is opened.
async fn no_change(
    gh: &GitHub,
    number: u64,
    opts: &Options,
    why: String,
    progress: &Progress,
) -> TestsPr {
    progress(&format!("github: nothing to do: {why}"));
    say_on_pull(
        gh,
        number,
        &format!(
            "**cordon**: no tests generated: {why}. Nothing ran and no pull request was opened."
        ),
    )
    .await;
    TestsPr {
        outcome: pipeline::Outcome {
            report: Report {
                cordon_version: env!("CARGO_PKG_VERSION").to_string(),
                repo: opts.repo.display().to_string(),
                status: "no_gaps_left".into(),
                ..Report::default()
            },
            kept: Vec::new(),
        },
        delivered: Delivered::NothingPushed(why),
    }
}

/// The sticky comment on the pull request that asked; a failure is logged, not fatal.
async fn say_on_pull(gh: &GitHub, number: u64, text: &str) {
    if let Err(e) = gh.sticky_comment(number, text).await {
        warn!(pr = number, error = %e, "cannot comment on the pull request");
    }
}

/// The marker of the comment carrying a fork's tests as a patch (beside the sticky one).
pub const PATCH_MARKER: &str = "<!-- cordon:tests-patch -->";

/// A fork's pull request: its kept tests as a patch in a comment of their own, and a check
/// run on its head where the credentials allow. Nothing is pushed anywhere. What to say.
async fn as_patch(
    gh: &GitHub,
    git: &Git,
    report: &Report,
    verdict: Promotion,
    scope: &Scope,
    fork: &str,
    pull_head: &str,
) -> Result<String, GitHubError> {
    let patch = git.patch().await?;
    let ready = verdict == Promotion::Ready;
    let body = pr_body(report, &verdict, Some(scope));
    let mut notes = Vec::new();
    match gh
        .check_run(pull_head, ready, &headline(report, &verdict), &body)
        .await
    {
        Ok(CheckRun::Made(_)) => {}
        Ok(CheckRun::Skipped(note)) => notes.push(note),
        Err(e) => notes.push(format!("no check run: {e}")),
    }
    let text = patch_comment(report, &verdict, scope, fork, &patch, &notes);
    let (_, url) = gh
        .sticky_comment_marked(scope.number, PATCH_MARKER, &text)
        .await?;
    info!(pr = scope.number, fork, "tests delivered as a patch");
    Ok(format!(
        "pull request #{} is from a fork ({fork}): cordon pushes nothing to it and does not bring its commits into {}; the {} kept test file(s) are a patch in the comment {}",
        scope.number,
        gh.repo,
        report.kept(),
        if url.is_empty() {
            "on it".to_string()
        } else {
            url
        }
    ))
}

/// The comment for a fork: what was kept, the sandbox's verdict, and the patch.
fn patch_comment(
    report: &Report,
    verdict: &Promotion,
    scope: &Scope,
    fork: &str,
    patch: &str,
    notes: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "**cordon**: {}\n", headline(report, verdict));
    let _ = writeln!(s, "Scope: {}.\n", scope.describe());
    let _ = writeln!(
        s,
        "This pull request's branch is in a fork (`{}`), where cordon cannot push. The tests ran in cordon's sandbox on this pull request's head; to add them, save the patch below and run `git am cordon-tests.patch` (or `git apply`) on your branch.\n",
        cell(fork)
    );
    match verdict {
        Promotion::Ready => {
            let _ = writeln!(
                s,
                "With them, the combined suite passed in the sandbox and coverage rose."
            );
        }
        Promotion::Draft(why) => {
            let _ = writeln!(s, "Review them with care:");
            for w in why {
                let _ = writeln!(s, "- {}", cell(w));
            }
        }
    }
    if let (Some(b), Some(a)) = (&report.baseline, &report.after) {
        let _ = writeln!(
            s,
            "\nCoverage (lines and branches): {:.1}% → {:.1}%.",
            b.coverage.combined_percent(),
            a.coverage.combined_percent()
        );
    }
    for n in notes {
        let _ = writeln!(s, "\n> {}", cell(n));
    }
    // GitHub's limit for a comment is 65,536 characters; the patch gets what is left.
    let room = 60_000usize.saturating_sub(s.len());
    let fence = "`".repeat(longest_backtick_run(patch).max(2) + 1);
    if patch.len() + 100 <= room {
        let _ = writeln!(
            s,
            "\n<details><summary>cordon-tests.patch</summary>\n\n{fence}diff\n{}\n{fence}\n</details>",
            patch.trim_end()
        );
    } else {
        let _ = writeln!(
            s,
            "\nThe patch ({} bytes) is too long for a comment; run `cordon testgen` locally, or see the report.",
            patch.len()
        );
    }
    s
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
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
#[allow(clippy::too_many_arguments)]
async fn open_and_promote(
    gh: &GitHub,
    report: &Report,
    verdict: Promotion,
    branch: String,
    base: &str,
    title: &str,
    head_sha: &str,
    scope: Option<&Scope>,
) -> Result<Delivered, GitHubError> {
    let body = pr_body(report, &verdict, scope);
    let existing = match gh.find_pull(&branch).await? {
        Some(pr) => pr,
        None => match gh.create_draft(title, &branch, base, &body).await {
            Ok(pr) => {
                return finish(gh, report, verdict, branch, pr, head_sha, &body, scope).await;
            }
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
    finish(gh, report, verdict, branch, pr, head_sha, &body, scope).await
}

/// The check run, promotion and the sticky comment on `pr`.
#[allow(clippy::too_many_arguments)]
async fn finish(
    gh: &GitHub,
    report: &Report,
    verdict: Promotion,
    branch: String,
    pr: PullRequest,
    head_sha: &str,
    body: &str,
    scope: Option<&Scope>,
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
    } else if !ready && !pr.draft {
        // An earlier run on the same commit promoted it; this one may not stand for review
        // (its comment says "Left a draft", and so must GitHub).
        if let Err(e) = gh.mark_draft(&pr).await {
            warn!(error = %e, "cannot turn the pull request back into a draft");
            notes.push(format!(
                "it stays ready for review from an earlier run: {e}"
            ));
        }
    }
    gh.sticky_comment(
        pr.number,
        &comment(report, &verdict, promoted, &notes, scope),
    )
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

/// The pull request's description: what the gaps were restricted to (a pull request's
/// changed lines), coverage before → after, kept and discarded tests with reasons, suspected
/// code bugs.
pub fn pr_body(report: &Report, verdict: &Promotion, scope: Option<&Scope>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Tests generated by cordon and run in its sandbox (never on a host).\n"
    );
    if let Some(scope) = scope {
        let _ = writeln!(s, "Scope: {}.\n", scope.describe());
    }
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

fn comment(
    report: &Report,
    verdict: &Promotion,
    promoted: bool,
    notes: &[String],
    scope: Option<&Scope>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "**cordon**: {}\n", headline(report, verdict));
    if let Some(scope) = scope {
        let _ = writeln!(s, "Scope: {}.\n", scope.describe());
    }
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

    fn scope(lines: &[(u32, u32)], coverable: u64) -> Scope {
        let mut l = Lines::default();
        for &(a, b) in lines {
            l.add("calc.py", a, b);
        }
        Scope {
            number: 4,
            lines: l,
            coverable,
            other_python_files: 0,
            fork: Some("mallory/calc".into()),
        }
    }

    #[test]
    fn the_scope_says_how_many_lines_the_pull_request_changed() {
        let s = scope(&[(3, 9), (12, 12)], 5);
        assert_eq!(
            s.describe(),
            "gaps restricted to the 8 lines this PR changed in 1 Python source file (#4; 5 of them coverable)"
        );
        let body = pr_body(&report(run(3, 0, 8)), &Promotion::Ready, Some(&s));
        assert!(
            body.contains("Scope: gaps restricted to the 8 lines this PR changed"),
            "{body}"
        );
        assert!(
            scope(&[], 0)
                .nothing_to_cover()
                .contains("no line of the project's Python source")
        );
        assert!(s.nothing_to_cover().contains("none a test can cover"));
    }

    #[test]
    fn a_forks_patch_is_fenced_and_never_too_long_for_a_comment() {
        let s = scope(&[(1, 2)], 2);
        let r = report(run(3, 0, 8));
        let patch = "diff --git a/t.py b/t.py\n+x = '```'\n";
        let c = patch_comment(&r, &Promotion::Ready, &s, "mallory/calc", patch, &[]);
        assert!(c.contains("````diff\n") && c.contains("git am"), "{c}");
        let huge = "+x\n".repeat(40_000);
        let c = patch_comment(&r, &Promotion::Ready, &s, "mallory/calc", &huge, &[]);
        assert!(
            c.len() < 60_000 && c.contains("too long for a comment"),
            "{}",
            c.len()
        );
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
