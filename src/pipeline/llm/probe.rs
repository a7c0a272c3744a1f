//! Asking the model endpoint whether it is there, before any sandbox work: a test-generation
//! run that would find out only after its baseline (minutes of sandbox time) that the model
//! is down, or refuses the key, fails at once instead, saying how to fix it.

use std::time::Duration;

use serde_json::Value;

use super::{Llm, LlmError, Message};

/// How long the endpoint has to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint said.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The models it lists (`GET /models`), or `None` when it lists none (the probe then
    /// asked for a one-token answer instead).
    pub models: Option<Vec<String>>,
}

impl Probe {
    /// Whether the configured model is among those listed (`None`: not listed at all). Some
    /// servers (llama.cpp's) serve one model whatever the name, so this is a warning only.
    pub fn lists(&self, model: &str) -> Option<bool> {
        self.models
            .as_ref()
            .map(|m| m.is_empty() || m.iter().any(|id| id == model))
    }
}

impl Llm {
    /// `GET {base_url}/models`; where the endpoint has no such route, one chat completion of
    /// one token. Fails with [`LlmError::Unreachable`] or [`LlmError::Refused`]-like errors
    /// that name the endpoint and what to check.
    pub async fn probe(&self) -> Result<Probe, LlmError> {
        let url = format!("{}/models", self.config.base_url.trim_end_matches('/'));
        let unreachable = |reason: String| LlmError::Unreachable {
            url: self.config.base_url.clone(),
            reason,
        };
        let answer = self
            .http
            .get(&url)
            .bearer_auth(&self.config.api_key)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(crate::error::error_chain(&e)))?;
        let status = answer.status().as_u16();
        match status {
            200 => {
                let body: Value = answer
                    .json()
                    .await
                    .map_err(|e| unreachable(format!("answered GET /models with no JSON: {e}")))?;
                let models = body["data"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .filter_map(|m| m["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Probe {
                    models: Some(models),
                })
            }
            401 | 403 => Err(LlmError::KeyRefused {
                url: self.config.base_url.clone(),
                status,
            }),
            // No model list here: ask for one token instead (retried like any request).
            404 | 405 | 501 => {
                self.chat(&[Message::user("Say OK.")], 0.0, Some(1)).await?;
                Ok(Probe { models: None })
            }
            _ => Err(unreachable(format!(
                "answered GET /models with HTTP {status}"
            ))),
        }
    }
}
