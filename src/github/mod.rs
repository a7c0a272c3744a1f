//! GitHub: generated tests arrive as pull requests, promoted only when the sandbox says so.
//!
//! - `secret`: tokens and keys that print as `[redacted]`.
//! - `client`: the API (octocrab): a token or a GitHub App, `GITHUB_API_URL`, typed errors,
//!   retries of server errors and secondary rate limits.
//! - `git`: clone, commit, push with no hooks, no submodules, the token by credential helper.
//! - `diff`: the lines a pull request changed (`git diff --unified=0 BASE...HEAD`).
//! - `repo_config`: `.cordon.yml`, read from the default branch only.
//! - `protect`: protected paths (workflows, cordon's config, CI and deploy files).
//! - `webhook`: a delivery's signature and what it asks for (no I/O).
//! - `pulls`: pull requests, the sticky comment, check runs, promotion.
//! - `issues`: the issue flow 2 starts from.
//! - `builder`: flow 2, `cordon build OWNER/NAME --issue N`: an issue becomes code and tests,
//!   refined until the suite passes in the sandbox, as a draft pull request promoted on green.
//! - `tests_pr`: flow 1, `cordon testgen OWNER/NAME --pr`: the pipeline's kept tests as a
//!   draft pull request, promoted on a green sandbox run.

pub mod builder;
pub mod client;
pub mod diff;
pub mod git;
pub mod issues;
pub mod protect;
pub mod pulls;
pub mod repo_config;
pub mod secret;
pub mod tests_pr;
pub mod webhook;

pub use client::{Credentials, GitHub, GitHubConfig, GitHubError, RepoName};
pub use secret::Secret;
