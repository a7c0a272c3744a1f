//! The GitHub objects flow 1 touches: the repository, `.cordon.yml` on the default branch,
//! pull requests, the one sticky comment, check runs, and promotion (GraphQL
//! `markPullRequestReadyForReview`).

use base64::Engine;
use serde_json::{Value, json};

use super::client::{GitHub, GitHubError};
use super::repo_config::{self, RepoConfig};

/// The hidden marker that finds cordon's comment among a pull request's comments.
pub const STICKY_MARKER: &str = "<!-- cordon:sticky -->";

/// Comments per page when looking for the sticky one (GitHub's maximum).
const PER_PAGE: usize = 100;

/// What cordon needs to know about a repository.
#[derive(Debug, Clone)]
pub struct Repository {
    pub default_branch: String,
    /// The URL git clones and pushes (never with credentials in it).
    pub clone_url: String,
}

/// A pull request cordon opened or found.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub number: u64,
    /// GraphQL's id, for promotion.
    pub node_id: String,
    pub html_url: String,
    pub draft: bool,
}

/// What [`PullHead::repo`] says for a fork deleted since its pull request was opened.
pub const DELETED_FORK: &str = "a deleted fork";

/// A pull request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullHead {
    pub branch: String,
    /// `owner/name` of the repository the branch is in (another one for a fork).
    pub repo: String,
    /// The head commit GitHub knows.
    pub sha: String,
    /// The branch it asks to be merged into.
    pub base: String,
}

/// A check run's fate: made, or skipped because the credentials may not make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckRun {
    Made(u64),
    Skipped(String),
}

fn pr_from(v: &Value) -> Result<PullRequest, GitHubError> {
    let number = v["number"]
        .as_u64()
        .ok_or_else(|| GitHubError::Unexpected {
            what: "reading a pull request".into(),
            status: 200,
            message: "no `number`".into(),
        })?;
    Ok(PullRequest {
        number,
        node_id: v["node_id"].as_str().unwrap_or_default().to_string(),
        html_url: v["html_url"].as_str().unwrap_or_default().to_string(),
        draft: v["draft"].as_bool().unwrap_or(false),
    })
}

impl GitHub {
    /// `GET /repos/{owner}/{repo}`: the default branch and clone URL.
    pub async fn repository(&self) -> Result<Repository, GitHubError> {
        let what = format!("reading {}", self.repo);
        let v = self
            .call("GET", &format!("/repos/{}", self.repo), None, &what)
            .await?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| GitHubError::Unexpected {
                    what: what.clone(),
                    status: 200,
                    message: format!("no `{k}`"),
                })
        };
        Ok(Repository {
            default_branch: field("default_branch")?,
            clone_url: field("clone_url")?,
        })
    }

    /// `.cordon.yml` from the default branch (contents API, `ref` = the default branch);
    /// the defaults when there is none.
    pub async fn repo_config(&self, default_branch: &str) -> Result<RepoConfig, GitHubError> {
        let path = format!(
            "/repos/{}/contents/{}?ref={}",
            self.repo,
            repo_config::FILE,
            urlencode(default_branch)
        );
        let what = format!(
            "reading {} from {}'s {default_branch}",
            repo_config::FILE,
            self.repo
        );
        let v = match self.call("GET", &path, None, &what).await {
            Ok(v) => v,
            Err(GitHubError::NotFound { .. }) => return Ok(RepoConfig::default()),
            Err(e) => return Err(e),
        };
        let content: String = v["content"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| GitHubError::Unexpected {
                what: what.clone(),
                status: 200,
                message: format!("content is not base64: {e}"),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| GitHubError::Config {
            field: repo_config::FILE.into(),
            reason: "not UTF-8".into(),
        })?;
        RepoConfig::parse(&text).map_err(|e| GitHubError::Config {
            field: format!("{}: {}", repo_config::FILE, e.field),
            reason: e.reason,
        })
    }

    /// Pull request `number`'s head: its branch and the repository (`owner/name`) it is in.
    pub async fn pull_head(&self, number: u64) -> Result<PullHead, GitHubError> {
        let what = format!("reading pull request #{number}");
        let v = self
            .call(
                "GET",
                &format!("/repos/{}/pulls/{number}", self.repo),
                None,
                &what,
            )
            .await?;
        let branch = v["head"]["ref"].as_str();
        // A fork deleted since: GitHub answers `"repo": null`, and still keeps the head at
        // `refs/pull/<n>/head` of this repository.
        let repo = match &v["head"]["repo"] {
            Value::Null => Some(DELETED_FORK),
            r => r["full_name"].as_str(),
        };
        let base = v["base"]["ref"].as_str();
        match (branch, repo, base) {
            (Some(b), Some(r), Some(base)) => Ok(PullHead {
                branch: b.to_string(),
                repo: r.to_string(),
                sha: v["head"]["sha"].as_str().unwrap_or_default().to_string(),
                base: base.to_string(),
            }),
            _ => Err(GitHubError::Unexpected {
                what,
                status: 200,
                message: "no head branch or base branch".into(),
            }),
        }
    }

    /// The open pull request from `head` (a branch of this repository), if any.
    pub async fn find_pull(&self, head: &str) -> Result<Option<PullRequest>, GitHubError> {
        let path = format!(
            "/repos/{}/pulls?state=open&head={}",
            self.repo,
            urlencode(&format!("{}:{head}", self.repo.owner))
        );
        let v = self
            .call("GET", &path, None, "looking for cordon's pull request")
            .await?;
        v.as_array()
            .and_then(|a| a.first())
            .map(pr_from)
            .transpose()
    }

    /// Opens a draft pull request from `head` into `base`.
    pub async fn create_draft(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        let req =
            json!({ "title": title, "head": head, "base": base, "body": body, "draft": true });
        let v = self
            .call(
                "POST",
                &format!("/repos/{}/pulls", self.repo),
                Some(&req),
                "opening the draft pull request",
            )
            .await?;
        pr_from(&v)
    }

    /// Replaces a pull request's body.
    pub async fn set_body(&self, number: u64, body: &str) -> Result<(), GitHubError> {
        let req = json!({ "body": body });
        self.call(
            "PATCH",
            &format!("/repos/{}/pulls/{number}", self.repo),
            Some(&req),
            "updating the pull request's description",
        )
        .await?;
        Ok(())
    }

    /// Creates or updates the one comment of cordon's (its own login's) that starts with
    /// [`STICKY_MARKER`] on issue or pull request `number`, looking through every page of
    /// comments. Someone else's comment carrying the marker is never edited. Returns the
    /// comment's id.
    pub async fn sticky_comment(&self, number: u64, text: &str) -> Result<u64, GitHubError> {
        self.sticky_comment_marked(number, STICKY_MARKER, text)
            .await
            .map(|(id, _)| id)
    }

    /// [`Self::sticky_comment`] with another marker (a second sticky comment of its own, such
    /// as a fork's tests as a patch). Returns the comment's id and its URL (when GitHub says).
    pub async fn sticky_comment_marked(
        &self,
        number: u64,
        marker: &str,
        text: &str,
    ) -> Result<(u64, String), GitHubError> {
        let body = format!("{marker}\n{text}");
        let me = self.login().await?.to_string();
        let mut page = 1;
        loop {
            let path = format!(
                "/repos/{}/issues/{number}/comments?per_page={PER_PAGE}&page={page}",
                self.repo
            );
            let v = self.call("GET", &path, None, "listing comments").await?;
            let comments = v.as_array().cloned().unwrap_or_default();
            let mine = comments.iter().find(|c| {
                c["user"]["login"].as_str() == Some(me.as_str())
                    && c["body"].as_str().is_some_and(|b| b.starts_with(marker))
            });
            if let Some(id) = mine.and_then(|c| c["id"].as_u64()) {
                let v = self
                    .call(
                        "PATCH",
                        &format!("/repos/{}/issues/comments/{id}", self.repo),
                        Some(&json!({ "body": body })),
                        "updating cordon's comment",
                    )
                    .await?;
                return Ok((id, v["html_url"].as_str().unwrap_or_default().to_string()));
            }
            if comments.len() < PER_PAGE {
                break;
            }
            page += 1;
        }
        let v = self
            .call(
                "POST",
                &format!("/repos/{}/issues/{number}/comments", self.repo),
                Some(&json!({ "body": body })),
                "commenting",
            )
            .await?;
        let id = v["id"].as_u64().ok_or_else(|| GitHubError::Unexpected {
            what: "commenting".into(),
            status: 201,
            message: "no comment id".into(),
        })?;
        Ok((id, v["html_url"].as_str().unwrap_or_default().to_string()))
    }

    /// A completed check run on `head_sha`; a token that may not make one (403, as a
    /// personal token always is) gives [`CheckRun::Skipped`].
    pub async fn check_run(
        &self,
        head_sha: &str,
        success: bool,
        title: &str,
        summary: &str,
    ) -> Result<CheckRun, GitHubError> {
        let req = json!({
            "name": "cordon",
            "head_sha": head_sha,
            "status": "completed",
            "conclusion": if success { "success" } else { "neutral" },
            "output": { "title": title, "summary": truncate(summary, 60_000) },
        });
        match self
            .call(
                "POST",
                &format!("/repos/{}/check-runs", self.repo),
                Some(&req),
                "making the check run",
            )
            .await
        {
            Ok(v) => Ok(CheckRun::Made(v["id"].as_u64().unwrap_or_default())),
            Err(GitHubError::Forbidden { message, .. }) => Ok(CheckRun::Skipped(format!(
                "no check run: the credentials may not make one ({message}); only a GitHub App with `checks: write` can"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Promotes a draft: GraphQL `markPullRequestReadyForReview`.
    pub async fn mark_ready(&self, pr: &PullRequest) -> Result<(), GitHubError> {
        let q = "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } } }";
        let data = self
            .graphql(
                q,
                json!({ "id": pr.node_id }),
                "marking the pull request ready for review",
            )
            .await?;
        if data["markPullRequestReadyForReview"]["pullRequest"]["isDraft"].as_bool() != Some(false)
        {
            return Err(GitHubError::Unexpected {
                what: "marking the pull request ready for review".into(),
                status: 200,
                message: "it is still a draft".into(),
            });
        }
        Ok(())
    }

    /// Turns a pull request back into a draft: GraphQL `convertPullRequestToDraft` (a re-run
    /// whose verdict may not stand for review, after an earlier run promoted it).
    pub async fn mark_draft(&self, pr: &PullRequest) -> Result<(), GitHubError> {
        let q = "mutation($id: ID!) { convertPullRequestToDraft(input: {pullRequestId: $id}) { pullRequest { isDraft } } }";
        let what = "turning the pull request back into a draft";
        let data = self.graphql(q, json!({ "id": pr.node_id }), what).await?;
        match data["convertPullRequestToDraft"]["pullRequest"]["isDraft"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(GitHubError::Unexpected {
                what: what.into(),
                status: 200,
                message: "it is still ready for review".into(),
            }),
        }
    }
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// At most `max` bytes, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n\n… (cut)", &s[..end])
}
