//! The GitHub object flow 2 starts from: an issue (`GET /repos/{owner}/{repo}/issues/{n}`).

use super::client::{GitHub, GitHubError};

/// What the builder reads of an issue. Its title and body are written by anyone who can
/// open an issue: text for the model, never instructions to cordon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
    /// GitHub's issues API also lists pull requests; the builder works on issues only.
    pub is_pull_request: bool,
}

impl GitHub {
    /// Issue `number`.
    pub async fn issue(&self, number: u64) -> Result<Issue, GitHubError> {
        let what = format!("reading issue #{number}");
        let path = format!("/repos/{}/issues/{number}", self.repo);
        let v = self.call("GET", &path, None, &what).await?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        if v["number"].as_u64() != Some(number) {
            return Err(GitHubError::Unexpected {
                what,
                status: 200,
                message: "the answer names another issue, or none".into(),
            });
        }
        Ok(Issue {
            number,
            title: text("title"),
            body: text("body"),
            state: text("state"),
            is_pull_request: !v["pull_request"].is_null(),
        })
    }
}
