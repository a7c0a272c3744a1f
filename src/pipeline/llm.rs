//! The model client: any OpenAI-compatible chat-completions endpoint (async-openai), plain
//! chat only — no function calling, no price tables. Every request sets `max_tokens`, is
//! counted against the context budget before it is sent, and is retried on 429, 5xx, timeouts
//! and refused connections — after the server's `Retry-After`, else with exponential backoff,
//! both with jitter ([`retry`]). An answer cut off by `max_tokens` or stuck repeating itself
//! is flagged, not trusted. [`Llm::probe`] checks the endpoint before any sandbox work.

mod probe;
mod retry;

pub use probe::Probe;

use std::sync::Mutex;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

/// Where the model is and how to talk to it.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// e.g. `http://127.0.0.1:18080/v1`.
    pub base_url: String,
    /// Sent as a bearer token; never put in a job spec or a container.
    pub api_key: String,
    pub model: String,
    /// The server's context window, prompt plus answer.
    pub context_tokens: u32,
    /// The most tokens one answer may have.
    pub max_tokens: u32,
    /// How long one request may take.
    pub timeout: Duration,
    /// Retries of a transient failure (429, 5xx, timeout, refused connection).
    pub retries: u32,
    /// The first backoff; doubled on each retry, at most 30 s, ±20 % (a `Retry-After` from
    /// the server is followed instead, up to 2 minutes).
    pub backoff: Duration,
}

pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:18080/v1";
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-1.5b-instruct";

impl LlmConfig {
    /// Flags first, then `OPENAI_BASE_URL` / `OPENAI_API_KEY` / `OPENAI_MODEL`, then the local
    /// model's defaults.
    pub fn from_env(base_url: Option<String>, model: Option<String>) -> LlmConfig {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        LlmConfig {
            base_url: base_url
                .or_else(|| env("OPENAI_BASE_URL"))
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            api_key: env("OPENAI_API_KEY").unwrap_or_else(|| "none".to_string()),
            model: model
                .or_else(|| env("OPENAI_MODEL"))
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            context_tokens: 8192,
            max_tokens: 900,
            timeout: Duration::from_secs(240),
            retries: 4,
            backoff: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(
        "the prompt needs about {estimated} tokens plus {answer} for the answer, more than the model's context of {context}"
    )]
    PromptTooLarge {
        estimated: u32,
        answer: u32,
        context: u32,
    },
    #[error("the model endpoint {url} did not answer after {attempts} attempts")]
    Unavailable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<OpenAIError>,
    },
    #[error("the model endpoint refused the request ({status})")]
    Refused {
        status: u16,
        #[source]
        source: Box<OpenAIError>,
    },
    #[error("the model's answer is malformed: {0}")]
    Malformed(String),
    #[error(
        "the model endpoint {url} cannot be reached: {reason}; start the model (the local one: `../shared/llm/local-model.sh start`) or point --base-url / OPENAI_BASE_URL at one"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the model endpoint {url} refused the API key (HTTP {status}); set OPENAI_API_KEY to a key it accepts"
    )]
    KeyRefused { url: String, status: u16 },
}

impl LlmError {
    /// The endpoint is gone or refuses us: no point asking again this run.
    pub fn is_fatal(&self) -> bool {
        match self {
            LlmError::Unavailable { .. }
            | LlmError::Unreachable { .. }
            | LlmError::KeyRefused { .. } => true,
            LlmError::Refused { status, .. } => matches!(status, 401 | 403 | 404),
            _ => false,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Message {
    pub fn system(s: impl Into<String>) -> Message {
        Message {
            role: "system",
            content: s.into(),
        }
    }
    pub fn user(s: impl Into<String>) -> Message {
        Message {
            role: "user",
            content: s.into(),
        }
    }
}

/// The model's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub content: String,
    pub finish_reason: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Stopped by `max_tokens` (`finish_reason = length`).
    pub truncated: bool,
    /// The same lines over and over: a runaway generation.
    pub repetitive: bool,
}

/// Tokens and requests spent, for the report.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Usage {
    pub requests: u32,
    pub retries: u32,
    pub failed_requests: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub truncated_answers: u32,
    pub repetitive_answers: u32,
    /// Time spent waiting between attempts (the server's `Retry-After`, or backoff).
    #[serde(default)]
    pub retry_wait_ms: u64,
    /// Time spent waiting for the model's answers (requests only, not the waits between).
    #[serde(default)]
    pub model_ms: u64,
}

pub struct Llm {
    client: Client<OpenAIConfig>,
    /// The HTTP client under `client`, also used by [`Llm::probe`].
    http: reqwest::Client,
    pub config: LlmConfig,
    usage: Mutex<Usage>,
}

/// A conservative token estimate for code and English (about 3 bytes a token; real BPE
/// tokenizers average 3.5–4 on code), plus the chat template's per-message overhead.
pub fn estimate_tokens(messages: &[Message]) -> u32 {
    messages
        .iter()
        .map(|m| (m.content.len() as u32).div_ceil(3) + 8)
        .sum::<u32>()
        + 8
}

/// True when a few lines make up most of the text: the model got stuck in a loop.
pub fn is_repetitive(text: &str) -> bool {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 6)
        .collect();
    if lines.len() < 12 {
        return false;
    }
    let mut counts = std::collections::HashMap::new();
    for l in &lines {
        *counts.entry(*l).or_insert(0usize) += 1;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    top >= 8 && top * 4 >= lines.len()
}

impl Llm {
    pub fn new(config: LlmConfig) -> Result<Llm, LlmError> {
        // A plain HTTP service: async-openai's default one retries on its own, and cordon's
        // loop below must be the one retry policy (it counts and reports every attempt). The
        // timeout is applied per request, below.
        let oc = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(config.api_key.clone());
        let http = reqwest::Client::new();
        Ok(Llm {
            client: Client::with_config(oc).with_http_service(retry::service(http.clone())),
            http,
            config,
            usage: Mutex::new(Usage::default()),
        })
    }

    pub fn usage(&self) -> Usage {
        self.usage.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn record(&self, f: impl FnOnce(&mut Usage)) {
        if let Ok(mut u) = self.usage.lock() {
            f(&mut u);
        }
    }

    /// Checks a prompt against the context budget without sending it.
    pub fn fits(&self, messages: &[Message], max_tokens: u32) -> Result<u32, LlmError> {
        let estimated = estimate_tokens(messages);
        if estimated + max_tokens > self.config.context_tokens {
            return Err(LlmError::PromptTooLarge {
                estimated,
                answer: max_tokens,
                context: self.config.context_tokens,
            });
        }
        Ok(estimated)
    }

    /// One chat completion, retried on transient failures.
    pub async fn chat(
        &self,
        messages: &[Message],
        temperature: f32,
        max_tokens: Option<u32>,
    ) -> Result<Reply, LlmError> {
        let max_tokens = max_tokens.unwrap_or(self.config.max_tokens);
        let estimated = self.fits(messages, max_tokens)?;
        let request = json!({
            "model": self.config.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stream": false,
        });
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.record(|u| u.requests += 1);
            let chat = self.client.chat();
            let call = chat.create_byot(request.clone());
            let retry_after = std::cell::Cell::new(None);
            let (r, retry_after): (Option<Result<Value, OpenAIError>>, _) = retry::RETRY_AFTER
                .scope(retry_after, async {
                    let asked = std::time::Instant::now();
                    let r = tokio::time::timeout(self.config.timeout, call).await.ok();
                    self.record(|u| u.model_ms += asked.elapsed().as_millis() as u64);
                    (r, retry::RETRY_AFTER.with(|c| c.get()))
                })
                .await;
            let err = match r {
                Some(Ok(v)) => return self.reply(v, estimated),
                Some(Err(e)) => e,
                None => OpenAIError::InvalidArgument(format!(
                    "no answer within {:?}",
                    self.config.timeout
                )),
            };
            self.record(|u| u.failed_requests += 1);
            let transient = match &err {
                OpenAIError::InvalidArgument(m) if m.starts_with("no answer within") => true,
                OpenAIError::Reqwest(e) => e.is_timeout() || e.is_connect() || e.is_request(),
                OpenAIError::ApiError(a) => {
                    let s = a.status_code.as_u16();
                    s == 429 || s == 408 || s >= 500
                }
                OpenAIError::JSONDeserialize(_, body) => {
                    return Err(LlmError::Malformed(format!(
                        "not a chat completion: {}",
                        clip(body, 200)
                    )));
                }
                _ => false,
            };
            if !transient {
                let status = match &err {
                    OpenAIError::ApiError(a) => a.status_code.as_u16(),
                    _ => 0,
                };
                return Err(LlmError::Refused {
                    status,
                    source: Box::new(err),
                });
            }
            if attempt > self.config.retries {
                return Err(LlmError::Unavailable {
                    url: self.config.base_url.clone(),
                    attempts: attempt,
                    source: Box::new(err),
                });
            }
            let wait = retry::wait(
                attempt,
                self.config.backoff,
                retry_after,
                retry::unit_random(),
            );
            warn!(attempt, error = %err, retry_after = ?retry_after, "model request failed; retrying in {wait:?}");
            self.record(|u| {
                u.retries += 1;
                u.retry_wait_ms += wait.as_millis() as u64;
            });
            tokio::time::sleep(wait).await;
        }
    }

    fn reply(&self, v: Value, estimated: u32) -> Result<Reply, LlmError> {
        let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| {
            LlmError::Malformed(format!("no choices in {}", clip(&v.to_string(), 200)))
        })?;
        let content = choice
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Malformed("choices[0].message.content is missing".into()))?
            .to_string();
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let usage = v.get("usage");
        let num = |k: &str| {
            usage
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
        };
        let prompt_tokens = num("prompt_tokens").unwrap_or(estimated);
        let completion_tokens =
            num("completion_tokens").unwrap_or_else(|| (content.len() as u32).div_ceil(3));
        let truncated = finish_reason == "length";
        let repetitive = is_repetitive(&content);
        debug!(prompt_tokens, completion_tokens, %finish_reason, "model answered");
        self.record(|u| {
            u.prompt_tokens += prompt_tokens as u64;
            u.completion_tokens += completion_tokens as u64;
            u.truncated_answers += truncated as u32;
            u.repetitive_answers += repetitive as u32;
        });
        Ok(Reply {
            content,
            finish_reason,
            prompt_tokens,
            completion_tokens,
            truncated,
            repetitive,
        })
    }
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut i = n;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}…", &s[..i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_and_budget() {
        assert!(!is_repetitive("def test_a():\n    assert f(1) == 2\n"));
        let loop_ = "    assert add(1, 2) == 3\n".repeat(40);
        assert!(is_repetitive(&loop_));
        let mut cfg = LlmConfig::from_env(Some("http://127.0.0.1:9/v1".into()), None);
        cfg.context_tokens = 100;
        let llm = Llm::new(cfg).expect("client");
        let big = vec![Message::user("x".repeat(600))];
        assert!(matches!(
            llm.fits(&big, 50),
            Err(LlmError::PromptTooLarge { .. })
        ));
        assert!(llm.fits(&[Message::user("hi")], 50).is_ok());
    }
}
