//! A scripted OpenAI-compatible server for the test-generation tests: a plain HTTP/1.1
//! listener on 127.0.0.1:0 whose answers a test decides from each request, and a record of
//! every request it got. `GET …/models` (the client's probe) is answered apart, by
//! [`start_with_models`]'s answer (by default a list naming the model `scripted`), and is
//! neither recorded nor counted.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers: an HTTP status and a body.
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// Extra response headers, e.g. `retry-after`.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// A normal chat completion.
    pub fn chat(content: &str) -> Answer {
        Answer::chat_with(content, "stop")
    }

    pub fn chat_with(content: &str, finish_reason: &str) -> Answer {
        Answer {
            status: 200,
            body: json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason
                }],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
            })
            .to_string(),
            headers: Vec::new(),
        }
    }

    pub fn status(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The model list the probe gets by default.
    pub fn models() -> Answer {
        Answer::status(
            200,
            r#"{"object":"list","data":[{"id":"scripted","object":"model"}]}"#,
        )
    }
}

pub type Script = Box<dyn Fn(usize, &Value) -> Answer + Send + Sync>;

/// The running server: its base URL and the requests it received (as JSON).
pub struct Scripted {
    pub base_url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl Scripted {
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

/// The last user message of a request.
pub fn last_user(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Starts a server; `script(n, request)` answers the `n`th request (0-based).
pub async fn start(script: Script) -> Scripted {
    start_with_models(script, Box::new(Answer::models)).await
}

/// As [`start`], with `models()` answering the probe's `GET …/models`.
pub async fn start_with_models(
    script: Script,
    models: Box<dyn Fn() -> Answer + Send + Sync>,
) -> Scripted {
    let models: Arc<dyn Fn() -> Answer + Send + Sync> = Arc::from(models);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
    let script = Arc::new(script);
    let reqs = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let reqs = reqs.clone();
            let models = models.clone();
            tokio::spawn(async move {
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 8192];
                    let header_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < header_end + len {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let probe = head.starts_with("get ")
                        && head.lines().next().is_some_and(|l| l.contains("/models "));
                    let a = if probe {
                        models()
                    } else {
                        let body: Value =
                            serde_json::from_slice(&buf[header_end..header_end + len])
                                .unwrap_or(Value::Null);
                        let n = {
                            let mut r = reqs.lock().expect("not poisoned");
                            r.push(body.clone());
                            r.len() - 1
                        };
                        script(n, &body)
                    };
                    let extra: String = a
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}\r\n"))
                        .collect();
                    let resp = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{}",
                        a.status,
                        a.body.len(),
                        a.body
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        base_url: format!("http://{addr}/v1"),
        requests,
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A fast-retrying client configuration for the scripted server.
pub fn llm_config(base_url: &str) -> cordon::pipeline::llm::LlmConfig {
    let mut c = cordon::pipeline::llm::LlmConfig::from_env(
        Some(base_url.to_string()),
        Some("scripted".into()),
    );
    c.api_key = "test-key-never-in-a-container".into();
    c.backoff = std::time::Duration::from_millis(20);
    c.retries = 3;
    c.timeout = std::time::Duration::from_secs(10);
    c
}
