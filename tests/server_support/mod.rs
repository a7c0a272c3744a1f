//! Helpers for the service's integration tests: a real `cordon serve` process on
//! `127.0.0.1:0` against the real Docker engine, and a small HTTP client.
//!
//! A service always has a token: the one a test's config names (`token: ...`), else the one
//! the service generated in `<data>/token`, which [`Server::token`] holds once it is up.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const IMAGE: &str = "cordon/python:3.11";

pub fn cordon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cordon")
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers (any state) of job `id`.
pub fn containers_of(id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=org.cordon.job={id}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

pub fn volumes_of(id: &str) -> Vec<String> {
    docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=org.cordon.job={id}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// A running `cordon serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    /// The admin token: the configured `token: ` line, else the generated `<data>/token`
    /// (`None` if the config has only named `tokens`).
    pub token: Option<String>,
    pub log: Arc<Mutex<String>>,
}

/// Starts `cordon serve` with `config` (YAML) written next to `data`.
pub fn start(data: &Path, config: &str) -> Server {
    start_env(data, config, &[])
}

pub fn start_env(data: &Path, config: &str, env: &[(&str, &str)]) -> Server {
    start_with(data, config, env, None)
}

/// The config file a test's service reads: next to the data directory, not in it.
pub fn config_path(data: &Path) -> PathBuf {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    data.with_file_name(format!("{name}.cordon.yaml"))
}

/// Like [`start_env`]; with `umask` (like `"022"`), `cordon serve` starts under that umask.
pub fn start_with(data: &Path, config: &str, env: &[(&str, &str)], umask: Option<&str>) -> Server {
    // Made by the test with its own umask (0755, typically): the service tightens it.
    std::fs::create_dir_all(data).expect("data dir");
    let cfg = config_path(data);
    std::fs::write(
        &cfg,
        format!(
            "data_dir: {}\nprofiles_dir: {}\n{config}",
            data.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .expect("config");
    let token = config
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(|t| t.trim().to_string());
    let mut cmd = match umask {
        Some(u) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("umask {u} && exec \"$0\" \"$@\""),
                cordon_bin(),
            ]);
            c
        }
        None => Command::new(cordon_bin()),
    };
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .env_remove("CORDON_SERVER_NAMES")
        .envs(env.iter().copied())
        .env("CORDON_LOG", "cordon=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cordon serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                let mut l = log.lock().expect("log");
                if l.len() < 4 << 20 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
    }
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("cordon serve did not start: {}", log.lock().expect("log"));
        }
    };
    // Without a configured token the service generated one before it said "serving on".
    let has_named = config.lines().any(|l| l.starts_with("tokens:"));
    let token = token.or_else(|| {
        if has_named {
            return None;
        }
        let t = std::fs::read_to_string(data.join("token")).unwrap_or_else(|e| {
            panic!(
                "no token configured, yet no generated {}: {e}",
                data.join("token").display()
            )
        });
        Some(t.trim().to_string())
    });
    Server {
        child,
        url: format!("http://{addr}"),
        data: data.to_path_buf(),
        token,
        log,
    }
}

impl Server {
    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    /// A client with another token (`None`: no token at all).
    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: token.map(str::to_string),
        }
    }

    /// The generated token's file.
    pub fn token_path(&self) -> PathBuf {
        self.data.join("token")
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "cordon serve did not exit within {within:?}: {}",
            self.log.lock().expect("log")
        );
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.sigterm();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

impl Client {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Submits `spec` (YAML) with an optional tar.gz; returns (status, body).
    pub async fn submit(&self, spec: &str, tgz: Option<Vec<u8>>) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new().text("spec", spec.to_string());
        if let Some(t) = tgz {
            form = form.part("workspace", reqwest::multipart::Part::bytes(t));
        }
        let r = self
            .req(reqwest::Method::POST, "/v1/jobs")
            .multipart(form)
            .send()
            .await
            .expect("submit");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Submits and expects 202; returns the job id.
    pub async fn submit_ok(&self, spec: &str, tgz: Option<Vec<u8>>) -> String {
        let (status, body) = self.submit(spec, tgz).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self
            .req(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("get /metrics");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("metrics text")
    }

    pub async fn status(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn wait_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.status(id).await;
            if v["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not {state} within {within:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads the live stream until an event of type `kind` arrives (or panics after 60 s).
    pub async fn wait_event(&self, id: &str, kind: &str) -> Value {
        use futures_util::StreamExt;
        let read = async {
            let resp = self
                .req(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"))
                .send()
                .await
                .expect("events");
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk.expect("chunk"));
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let v: Value = serde_json::from_slice(&line).expect("json");
                    if v["type"] == kind {
                        return v;
                    }
                }
            }
            panic!("job {id} ended without a `{kind}` event");
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the event came in time")
    }

    /// Reads the NDJSON event stream from `from` to its end.
    pub async fn events(&self, id: &str, from: u64) -> Vec<Value> {
        let text = self
            .req(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}/events?from={from}"),
            )
            .send()
            .await
            .expect("events")
            .text()
            .await
            .expect("events body");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("an event line is JSON"))
            .collect()
    }
}

/// A tar.gz of `files` (name, content), made with the `tar` crate.
pub fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, content.as_bytes())
            .expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gz")
}

/// A spec running `cmd` in the default image (an upload becomes its /workspace).
pub fn spec(cmd: &str) -> String {
    format!(
        "image: {IMAGE}\nsteps:\n  - name: main\n    run: {}\n    timeout: 120s\nlimits: {{ cpus: 0.5, memory: 256MiB }}\n",
        serde_json::to_string(cmd).expect("json string")
    )
}

/// The same with a server-side workspace `source`.
pub fn spec_at(cmd: &str, source: &str) -> String {
    format!(
        "{}workspace: {{ source: {source}, path: /workspace }}\n",
        spec(cmd)
    )
}
