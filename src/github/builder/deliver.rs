//! The change delivered: committed on `cordon/issue-<n>` and pushed (no hooks, the token by
//! credential helper), a draft pull request that says `Fixes #n`, promoted with GraphQL only
//! when [`super::promotion`] says so; and the issue's one sticky comment, which says what
//! became of it. Everything the model or the repository wrote is quoted so it cannot break
//! the Markdown or fake cordon's marker.

use std::fmt::Write as _;

use super::Build;
use super::refine::Change;
use crate::github::client::{GitHub, GitHubError};
use crate::github::git::Git;
use crate::github::issues::Issue;
use crate::github::pulls::{PullRequest, truncate};
use crate::github::tests_pr::{Delivered, Promotion, cell};

/// Commits the written files on the issue's branch, pushes it, opens (or updates) the draft
/// pull request into `base` and promotes it if `verdict` allows. A failed promotion is a
/// note, not an error.
pub(super) async fn pull_request(
    gh: &GitHub,
    git: &Git,
    issue: &Issue,
    base: &str,
    change: &Change,
    verdict: Promotion,
) -> Result<Delivered, GitHubError> {
    let branch = super::branch(issue.number);
    let written: Vec<String> = change.files.written.iter().cloned().collect();
    let title = one_line(&issue.title, 80);
    git.branch(&branch).await?;
    git.commit(&written, &format!("cordon: {title} (#{})", issue.number))
        .await?;
    git.push(&branch).await?;
    let body = pr_body(issue, change, &verdict);
    let pr = open(gh, &format!("cordon: {title}"), &branch, base, &body).await?;
    let ready = verdict == Promotion::Ready;
    let mut promoted = ready && !pr.draft;
    let mut notes = Vec::new();
    if ready && pr.draft {
        match gh.mark_ready(&pr).await {
            Ok(()) => promoted = true,
            Err(e) => notes.push(format!("promotion failed: {e}")),
        }
    } else if !ready && !pr.draft {
        // An earlier run promoted it; this one may not stand for review.
        if let Err(e) = gh.mark_draft(&pr).await {
            notes.push(format!(
                "it stays ready for review from an earlier run: {e}"
            ));
        }
    }
    Ok(Delivered::PullRequest {
        number: pr.number,
        url: pr.html_url,
        branch,
        promotion: verdict,
        promoted,
        notes,
    })
}

/// A new draft pull request, or (a re-run: GitHub answers 422 for a second one from the
/// same branch) the open one with its description replaced.
async fn open(
    gh: &GitHub,
    title: &str,
    branch: &str,
    base: &str,
    body: &str,
) -> Result<PullRequest, GitHubError> {
    let refused = match gh.create_draft(title, branch, base, body).await {
        Err(e @ GitHubError::Invalid { .. }) => e,
        other => return other,
    };
    let Some(pr) = gh.find_pull(branch).await? else {
        return Err(refused);
    };
    gh.set_body(pr.number, body).await?;
    Ok(pr)
}

/// Text on one line, at most `max` bytes.
fn one_line(s: &str, max: usize) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::pipeline::llm::clip(&t, max)
}

/// `text` as a fenced block no line of it can close, with no HTML comment in it.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{}\n{fence}", text.replace("<!--", "&lt;!--"))
}

fn promotion_text(s: &mut String, verdict: &Promotion) {
    match verdict {
        Promotion::Ready => {
            s.push_str("Ready for review: every test passed in the sandbox and nothing protected was touched.\n");
        }
        Promotion::Draft(why) => {
            s.push_str("Left a draft because:\n");
            for w in why {
                let _ = writeln!(s, "- {}", cell(w));
            }
        }
    }
}

/// The pull request's description: what it fixes, what shows it is done, the files, the
/// sandbox's verdict.
fn pr_body(issue: &Issue, change: &Change, verdict: &Promotion) -> String {
    let mut s = format!(
        "Fixes #{}\n\nWritten by cordon's builder from the issue; the suite ran in cordon's sandbox, never on a host.\n\n### Done when\n\n",
        issue.number
    );
    for a in &change.analysis.acceptance {
        let _ = writeln!(s, "- {}", cell(a));
    }
    s.push_str("\n### Files\n\n");
    for f in &change.files.written {
        let _ = writeln!(s, "- `{}`", cell(f));
    }
    for r in &change.files.refused {
        let _ = writeln!(s, "- refused: {}", cell(r));
    }
    let r = &change.last.run;
    let _ = write!(
        s,
        "\n### Sandbox\n\nThe suite ran {} time(s); the last run (job `{}`): {} passed, {} failed.\n\n### Promotion\n\n",
        change.runs,
        cell(&change.last.job_id),
        r.passed,
        r.failed
    );
    promotion_text(&mut s, verdict);
    truncate(&s, 60_000)
}

/// The issue's comment for a finished build.
pub(super) fn comment(b: &Build, trigger: Option<&str>) -> String {
    let mut s = String::from("**cordon** (builder): ");
    if let Some(why) = b.nothing_pushed() {
        let _ = writeln!(s, "nothing pushed: {}\n", cell(why));
    }
    if let (Some(url), Some(verdict)) = (b.url(), b.verdict()) {
        let state = if b.promoted() {
            "ready for review"
        } else {
            "a draft"
        };
        let _ = writeln!(s, "{url} ({state})\n");
        promotion_text(&mut s, verdict);
    }
    for w in b.warnings() {
        let _ = writeln!(s, "\n> warning: {}", cell(w));
    }
    if let Some(last) = &b.last {
        let _ = writeln!(
            s,
            "\nThe suite ran {} time(s) in the sandbox; the last run, job `{}`: {} passed, {} failed.",
            last.runs,
            cell(&last.job),
            last.run.passed,
            last.run.failed
        );
    }
    if let Some(f) = b.last.as_ref().and_then(|l| l.failure.as_ref()) {
        let _ = write!(
            s,
            "\n<details><summary>The last failure</summary>\n\n{}\n\n</details>\n",
            fenced(f)
        );
    }
    said_by(&mut s, trigger);
    truncate(&s, 60_000)
}

/// The issue's comment when the build could not go on (GitHub, git or `.cordon.yml`).
pub(super) fn failed(e: &GitHubError, trigger: Option<&str>) -> String {
    let mut s = format!(
        "**cordon** (builder): could not build this issue: {}\n",
        cell(&crate::error::error_chain(e))
    );
    said_by(&mut s, trigger);
    s
}

fn said_by(s: &mut String, trigger: Option<&str>) {
    if let Some(t) = trigger {
        let _ = writeln!(s, "\nDelivery `{}`.", cell(t));
    }
}

/// Whether the written files include a test (`test_*.py` or `*_test.py`).
pub(super) fn has_test(change: &Change) -> bool {
    change.files.written.iter().any(|p| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_stays_in_its_block() {
        let f = fenced("x ```` y\n<!-- cordon:sticky -->\n");
        assert!(
            f.starts_with("`````text\n") && f.ends_with("\n`````"),
            "{f}"
        );
        assert!(!f.contains("<!--"));
        assert_eq!(one_line("a\n\nb  c", 80), "a b c");
    }
}
