//! What `testgen` and `build` share: the model flags (which OpenAI-compatible endpoint,
//! which model, how many tokens), the GitHub repository and credentials, and the progress
//! printer.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::{EXIT_INVALID, report_error};
use crate::github::{GitHubConfig, RepoName};
use crate::pipeline::Progress;
use crate::pipeline::llm::{Llm, LlmConfig};

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// The model name (default: $OPENAI_MODEL, else qwen2.5-coder-1.5b-instruct).
    #[arg(long)]
    model: Option<String>,
    /// The OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else the local model at
    /// http://127.0.0.1:18080/v1). The key comes from $OPENAI_API_KEY and never enters a
    /// container.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The model's context window in tokens, prompt plus answer.
    #[arg(long, default_value_t = 8192)]
    context_tokens: u32,
    /// The most tokens one answer may have.
    #[arg(long, default_value_t = 900)]
    max_tokens: u32,
    /// How long one model request may take, in seconds, before it is retried (a slow model
    /// on a busy machine may need more).
    #[arg(long, default_value_t = 240, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    model_timeout: u64,
}

impl ModelArgs {
    /// The model client; a bad setting is reported and its exit status returned.
    pub fn llm(&self) -> Result<Llm, u8> {
        let mut cfg = LlmConfig::from_env(self.base_url.clone(), self.model.clone());
        cfg.context_tokens = self.context_tokens;
        cfg.max_tokens = self.max_tokens;
        cfg.timeout = std::time::Duration::from_secs(self.model_timeout);
        Llm::new(cfg).map_err(|e| {
            report_error(&e);
            EXIT_INVALID
        })
    }
}

/// `OWNER/NAME` and the GitHub credentials from the environment; a bad one is reported and
/// its exit status returned.
pub fn github(repo: &str) -> Result<(RepoName, GitHubConfig), u8> {
    let fail = |e: crate::github::GitHubError| {
        report_error(&e);
        EXIT_INVALID
    };
    let repo = RepoName::parse(repo).map_err(fail)?;
    let cfg = GitHubConfig::from_env(|k| std::env::var(k).ok()).map_err(fail)?;
    Ok((repo, cfg))
}

/// Progress lines on stderr, with the seconds since the start.
pub fn progress() -> Progress {
    let started = Instant::now();
    Arc::new(move |line: &str| {
        eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
    })
}
