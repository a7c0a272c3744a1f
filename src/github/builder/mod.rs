//! Flow 2, the builder: an issue becomes a tested pull request.
//!
//! [`run`] reads the issue and `.cordon.yml` (from the default branch), clones the default
//! branch (no hooks, no submodules), asks the model which files to change and what shows it
//! is done, then for code and tests (whole files), writes the files it may write (never an
//! unsafe or protected path), runs the suite in the sandbox and refines: on failure only the
//! files the failure points at are asked for again, with only the latest failure, at most
//! `max_refine_rounds` times. The change goes on `cordon/issue-<n>` into a draft pull request
//! (`Fixes #n`), promoted only when [`promotion`] says so; one sticky comment on the issue
//! says what happened, with the last failure and the sandbox job's id. Nothing is pushed when
//! the sandbox could not run the suite.
//!
//! - `answer`: reading the model's answers (hostile text).
//! - `prompt`: what the model is asked.
//! - `tree`: the clone's files, read and written without following links.
//! - `suite`: the suite as a sandbox job.
//! - `failure`: a failed run trimmed, and the files its tracebacks name.
//! - `refine`: the loop.
//! - `deliver`: commit, push, pull request, promotion, the issue's comment.

mod answer;
mod deliver;
mod failure;
mod prompt;
mod refine;
mod suite;
mod tree;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::client::{GitHub, GitHubConfig, GitHubError, RepoName};
use super::git::Git;
use super::protect::{Protected, Violation};
use super::repo_config::RepoConfig;
pub use super::tests_pr::{Delivered, Promotion};
use crate::pipeline::Progress;
use crate::pipeline::exec::Install;
use crate::pipeline::llm::Llm;
use crate::spec::OperatorPolicy;

/// Which issue, and the operator's settings.
pub struct Request<'a> {
    pub repo: RepoName,
    pub issue: u64,
    /// The operator's policy: which images `.cordon.yml` may name; every job is validated
    /// within it.
    pub policy: &'a OperatorPolicy,
    /// Ready sandboxes kept for the next refine round (0: none).
    pub warm_pool: usize,
    /// The suite's wall time in one round.
    pub timeout: Duration,
    /// What asked for the build (a webhook delivery's id), named in the issue's comment.
    pub trigger: Option<String>,
}

/// What became of a build.
#[derive(Debug, Clone)]
pub struct Build {
    pub delivered: Delivered,
    /// The suite's last run, when it ran.
    pub last: Option<LastRun>,
    /// The files written into the change.
    pub files: Vec<String>,
    /// Warnings that did not fail the build (the issue's comment could not be written).
    pub notes: Vec<String>,
}

/// The suite's last run of a build: the verdict, the sandbox job, and its failure trimmed
/// (none when it passed). `runs`: how many times the suite ran in all.
#[derive(Debug, Clone)]
pub struct LastRun {
    pub runs: u32,
    pub run: SuiteRun,
    pub job: String,
    pub failure: Option<String>,
}

impl Build {
    /// The pull request's URL, when one was opened.
    pub fn url(&self) -> Option<&str> {
        match &self.delivered {
            Delivered::PullRequest { url, .. } => Some(url),
            Delivered::NothingPushed(_) => None,
        }
    }

    /// Why nothing was pushed, when nothing was.
    pub fn nothing_pushed(&self) -> Option<&str> {
        match &self.delivered {
            Delivered::NothingPushed(why) => Some(why),
            Delivered::PullRequest { .. } => None,
        }
    }

    /// The promotion verdict on the pull request, when one was opened.
    pub fn verdict(&self) -> Option<&Promotion> {
        match &self.delivered {
            Delivered::PullRequest { promotion, .. } => Some(promotion),
            Delivered::NothingPushed(_) => None,
        }
    }

    /// Whether the pull request was marked ready for review.
    pub fn promoted(&self) -> bool {
        matches!(
            self.delivered,
            Delivered::PullRequest { promoted: true, .. }
        )
    }

    /// Warnings that did not fail the build: the delivery's (a failed promotion) and the
    /// build's own.
    pub fn warnings(&self) -> Vec<&str> {
        let delivered = match &self.delivered {
            Delivered::PullRequest { notes, .. } => notes.as_slice(),
            Delivered::NothingPushed(_) => &[],
        };
        delivered
            .iter()
            .chain(&self.notes)
            .map(String::as_str)
            .collect()
    }

    fn nothing(why: impl Into<String>) -> Build {
        Build {
            delivered: Delivered::NothingPushed(why.into()),
            last: None,
            files: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Runs flow 2 on issue `req.issue` of `req.repo`, and says on the issue what became of it
/// (unless stopped). Errors are GitHub's, git's or `.cordon.yml`'s; the model's and the
/// sandbox's failures are a [`Delivered::NothingPushed`] with the reason.
pub async fn run(
    cfg: &GitHubConfig,
    req: Request<'_>,
    llm: &Llm,
    cancel: CancellationToken,
    progress: Progress,
) -> Result<Build, GitHubError> {
    let gh = GitHub::connect(cfg, req.repo.clone()).await?;
    let mut result = build(&gh, &req, llm, &cancel, &progress).await;
    if cancel.is_cancelled() {
        return result;
    }
    let trigger = req.trigger.as_deref();
    let text = match &result {
        Ok(b) => deliver::comment(b, trigger),
        Err(e) => deliver::failed(e, trigger),
    };
    if let Err(e) = gh.sticky_comment(req.issue, &text).await {
        warn!(error = %e, "cannot comment on the issue");
        if let Ok(b) = &mut result {
            b.notes.push(format!("no comment on the issue: {e}"));
        }
    }
    result
}

async fn build(
    gh: &GitHub,
    req: &Request<'_>,
    llm: &Llm,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<Build, GitHubError> {
    let issue = gh.issue(req.issue).await?;
    if issue.is_pull_request {
        return Err(GitHubError::Config {
            field: format!("#{}", req.issue),
            reason: "is a pull request: the builder works on issues (tests for a pull request: `cordon testgen OWNER/NAME --pr`, or `/cordon` on it)".into(),
        });
    }
    let info = gh.repository().await?;
    let rc = gh.repo_config(&info.default_branch).await?;
    if !req.policy.image_allowed(&rc.image) {
        return Ok(Build::nothing(format!(
            "the sandbox cannot start: .cordon.yml's image `{}` is not among the operator's allowed images ({})",
            rc.image,
            req.policy.allowed_images.join(", ")
        )));
    }
    let protected = rc.protected().map_err(|reason| GitHubError::Config {
        field: ".cordon.yml: protected_paths".into(),
        reason,
    })?;
    progress(&format!(
        "github: cloning {}'s {} (no hooks, no submodules)",
        gh.repo, info.default_branch
    ));
    let token = Some(gh.git_token().clone());
    let (_work, git) = Git::clone_temp(&info.clone_url, &info.default_branch, token).await?;
    let suite = match suite::Suite::new(&git.dir, suite_config(req, &rc)).await {
        Ok(s) => s,
        Err(e) => return Ok(Build::nothing(e.to_string())),
    };
    let work = refine::Work {
        issue: &issue,
        tree: &git.dir,
        protected: &protected,
        llm,
        suite: &suite,
        max_rounds: rc.max_refine_rounds,
        cancel,
        progress,
    };
    let looped = work.run().await;
    suite.close().await;
    let change = match looped {
        Ok(c) => c,
        Err(refine::Stop::Nothing(why)) => return Ok(Build::nothing(why)),
        Err(refine::Stop::Cancelled) => return Ok(Build::nothing("stopped")),
    };
    let written: Vec<String> = change.files.written.iter().cloned().collect();
    if !git.differs(&written).await? {
        return Ok(Build::nothing(
            "the model's files are the same as the default branch's: there is no change",
        ));
    }
    let removed = removed_tests(&change, &git.dir);
    let verdict = judge(
        &change,
        &protected,
        &req.repo,
        tree::is_cordon(&git.dir),
        &removed,
    );
    progress(&format!("github: pushing {}", branch(issue.number)));
    let delivered =
        deliver::pull_request(gh, &git, &issue, &info.default_branch, &change, verdict).await?;
    let green = change.last.run.completed && change.last.run.failed == 0;
    Ok(Build {
        delivered,
        last: Some(LastRun {
            runs: change.runs,
            run: change.last.run.clone(),
            job: change.last.job_id.clone(),
            failure: (!green).then(|| refine::failure_text(&change.last)),
        }),
        files: written,
        notes: Vec::new(),
    })
}

/// How the suite runs for this request and repository.
fn suite_config(req: &Request<'_>, rc: &RepoConfig) -> suite::SuiteConfig {
    suite::SuiteConfig {
        image: rc.image.clone(),
        test_command: rc.test_command.clone(),
        install: match rc.install.trim() {
            "auto" => Install::Auto,
            "none" | "off" => Install::Off,
            cmd => Install::Command(cmd.to_string()),
        },
        warm_pool: req.warm_pool,
        timeout: req.timeout,
        policy: req.policy.clone(),
    }
}

/// The promotion verdict on a change: [`promotion`]'s, plus every refused path, a change
/// without a test, and a change that removes existing tests (`removed`, see
/// [`removed_tests`]: a suite made green by deleting its tests is no green) keeping it a
/// draft. `own`: the repository is cordon itself.
fn judge(
    change: &refine::Change,
    protected: &Protected,
    repo: &RepoName,
    own: bool,
    removed: &[String],
) -> Promotion {
    let own = if own { vec![repo.clone()] } else { Vec::new() };
    let (verdict, _) = promotion(
        &change.last.run,
        &change.files.proposed,
        protected,
        repo,
        &own,
    );
    let mut extra = change.files.refused.clone();
    if !deliver::has_test(change) {
        extra.push("the model wrote no test file (`test_*.py`)".into());
    }
    if !removed.is_empty() {
        let named: Vec<&str> = removed.iter().take(5).map(String::as_str).collect();
        extra.push(format!(
            "the change removes {} existing test(s) of the default branch ({}{})",
            removed.len(),
            named.join(", "),
            if removed.len() > named.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    match verdict {
        Promotion::Ready if extra.is_empty() => Promotion::Ready,
        Promotion::Ready => Promotion::Draft(extra),
        Promotion::Draft(mut why) => {
            why.extend(extra);
            Promotion::Draft(why)
        }
    }
}

/// The existing tests a change removes, as `path::name`: for each file it rewrote, the test
/// functions the default branch's version defined that the change's version does not.
fn removed_tests(change: &refine::Change, tree: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for (path, before) in &change.files.originals {
        let Some(before) = before else { continue };
        let now = test_names(&tree::read(tree, path).unwrap_or_default());
        out.extend(
            test_names(before)
                .difference(&now)
                .map(|n| format!("{path}::{n}")),
        );
    }
    out
}

/// The node ids of the test functions a Python file defines (`test_x`, `TestK::test_x`), as
/// pytest collects them by default; none when the file does not parse.
fn test_names(source: &str) -> std::collections::BTreeSet<String> {
    crate::pipeline::python::parse(source)
        .map(|p| p.test_functions().into_iter().map(|t| t.node_id).collect())
        .unwrap_or_default()
}

/// The branch of issue `n`'s pull request.
pub fn branch(issue: u64) -> String {
    format!("cordon/issue-{issue}")
}

/// The sandbox's verdict on the suite after the last refine round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteRun {
    /// Whether the suite ran to the end in the sandbox (false: it could not start, or timed
    /// out).
    pub completed: bool,
    pub passed: u64,
    pub failed: u64,
}

/// A path the model proposed that cordon refuses to write (before any protected-path rule):
/// absolute, `..`, `.git/`, or empty.
pub fn unsafe_path(path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Some(format!("`{path}` is not a path inside the repository"));
    }
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) if n.eq_ignore_ascii_case(".git") => {
                return Some(format!("`{path}` is inside .git"));
            }
            std::path::Component::Normal(_) => {}
            _ => return Some(format!("`{path}` leaves the repository or is not plain")),
        }
    }
    None
}

/// Whether the builder's pull request may be marked ready: every test passed in the sandbox
/// (and at least one ran), nothing protected changed, and the repository is not one of
/// `own` (cordon never promotes changes to itself).
pub fn promotion(
    run: &SuiteRun,
    changed: &[String],
    protected: &Protected,
    repo: &RepoName,
    own: &[RepoName],
) -> (Promotion, Vec<Violation>) {
    let mut why = Vec::new();
    if !run.completed {
        why.push("the suite did not run to the end in the sandbox".to_string());
    } else if run.failed > 0 {
        why.push(format!("{} test(s) failed in the sandbox", run.failed));
    } else if run.passed == 0 {
        why.push("no test ran".to_string());
    }
    let violations = protected.check(changed.iter().map(String::as_str));
    for v in &violations {
        why.push(format!("{v}: changes to it are never promoted"));
    }
    if own.contains(repo) {
        why.push(format!(
            "{repo} is cordon's own repository: a person promotes its changes"
        ));
    }
    let p = if why.is_empty() {
        Promotion::Ready
    } else {
        Promotion::Draft(why)
    };
    (p, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green() -> SuiteRun {
        SuiteRun {
            completed: true,
            passed: 4,
            failed: 0,
        }
    }

    #[test]
    fn promoted_only_when_green_unprotected_and_not_cordon() {
        let prot = Protected::new(&[]).expect("defaults");
        let repo = RepoName::parse("octo/app").expect("name");
        let own = [RepoName::parse("octo/cordon").expect("name")];
        let files = vec!["app/x.py".to_string(), "tests/test_x.py".to_string()];
        assert_eq!(
            promotion(&green(), &files, &prot, &repo, &own).0,
            Promotion::Ready
        );

        let red = SuiteRun {
            failed: 1,
            ..green()
        };
        let none = SuiteRun {
            passed: 0,
            ..green()
        };
        let cut = SuiteRun {
            completed: false,
            ..green()
        };
        for run in [red, none, cut] {
            let (p, _) = promotion(&run, &files, &prot, &repo, &own);
            assert!(matches!(p, Promotion::Draft(_)), "{run:?}");
        }

        let wf = vec![
            "app/x.py".to_string(),
            ".github/workflows/ci.yml".to_string(),
        ];
        let (p, v) = promotion(&green(), &wf, &prot, &repo, &own);
        assert_eq!(v.len(), 1);
        assert!(
            matches!(&p, Promotion::Draft(w) if w[0].contains(".github/workflows/ci.yml")),
            "{p:?}"
        );

        let (p, _) = promotion(&green(), &files, &prot, &own[0], &own);
        assert!(
            matches!(&p, Promotion::Draft(w) if w[0].contains("cordon's own")),
            "{p:?}"
        );
        assert_eq!(branch(12), "cordon/issue-12");
    }

    #[test]
    fn test_names_are_the_test_functions_and_methods() {
        let src = "import pytest\n\ndef test_a():\n    pass\n\nasync  def test_b(x):\n    pass\n\nclass TestC:\n    def test_m(self):\n        pass\n    def helper(self):\n        pass\n\ndef testing():\n    pass\n\ndef fixture_test():\n    pass\n# def test_commented(): no, a comment\n";
        let names: Vec<String> = test_names(src).into_iter().collect();
        assert_eq!(names, ["TestC::test_m", "test_a", "test_b", "testing"]);
    }

    #[test]
    fn paths_outside_the_repository_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".git/hooks/pre-commit",
            "a/.git/config",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
        assert_eq!(unsafe_path("src/app.py"), None);
    }
}
