//! `CORDON_LOG_FORMAT=json`: every line `cordon serve` writes on stderr is one JSON object
//! with `timestamp`, `level`, `message`, the event's fields beside them, and the enclosing
//! span's fields (a job's `id`) under `span`. An unknown format is a warning naming the
//! variable and the accepted values.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// Polls `f` until it gives a value, or panics after `within` showing the log so far.
async fn eventually<T>(
    within: Duration,
    what: &str,
    log: &Mutex<Vec<String>>,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {within:?}; the log:\n{}",
            log.lock().expect("log").join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_one_json_object_a_line_with_the_job_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nprofiles_dir: {}\nshutdown_grace: 5s\n",
            data.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("CORDON_LOG_FORMAT", "json")
        .env("CORDON_LOG", "cordon=info")
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .env_remove("CORDON_SERVER_NAMES")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cordon serve starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        })
    };
    let parsed = |lines: &[String]| -> Vec<Value> {
        lines
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l}"))
            })
            .collect()
    };

    // "serving", with its address as a field.
    let addr = eventually(Duration::from_secs(30), "serving", &lines, async || {
        parsed(&lines.lock().expect("lines"))
            .iter()
            .find(|v| v["message"] == "serving")
            .and_then(|v| v["addr"].as_str().map(str::to_string))
    })
    .await;
    let url = format!("http://{addr}");
    let token = std::fs::read_to_string(data.join("token")).expect("generated token");
    let http = reqwest::Client::new();

    // A job cancelled while it runs logs inside its span.
    let spec = "image: cordon/python:3.11\nsteps:\n  - name: main\n    run: echo step-is-running; sleep 60\n    timeout: 120s\n";
    let resp = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(token.trim())
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("status")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let job_url = format!("{url}/v1/jobs/{id}");
    // Cancelled once its step runs (it has printed), so the runner, not the queue, stops it.
    let mut events = http
        .get(format!("{job_url}/events"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("events")
        .bytes_stream();
    let mut seen = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = events.next().await {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("step-is-running") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "{}", String::from_utf8_lossy(&seen));
    drop(events);
    let cancelled = http
        .delete(&job_url)
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    eventually(
        Duration::from_secs(60),
        "the job's span in a log line",
        &lines,
        async || {
            parsed(&lines.lock().expect("lines"))
                .iter()
                .any(|v| v["span"]["name"] == "job" && v["span"]["id"] == id.as_str())
                .then_some(())
        },
    )
    .await;

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("cordon serve exits");
    assert!(status.success(), "{status}");
    reader.join().expect("reader");

    let all = parsed(&lines.lock().expect("lines"));
    assert!(all.len() >= 4, "{all:?}");
    for v in &all {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(v["message"].is_string(), "{v}");
    }
    // Event fields sit beside the message.
    let queued = all
        .iter()
        .find(|v| v["message"] == "queued")
        .expect("a `queued` line");
    assert_eq!(queued["job"], id.as_str(), "{queued}");
    assert!(
        all.iter()
            .any(|v| v["message"] == "drained: no job is running")
    );
}

#[test]
fn an_unknown_format_is_a_warning_naming_the_variable() {
    let out = Command::new(BIN)
        .args(["profile", "strict"])
        .env("CORDON_LOG_FORMAT", "logfmt")
        .output()
        .expect("cordon runs");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CORDON_LOG_FORMAT=\"logfmt\" is not a log format")
            && stderr.contains("`text`")
            && stderr.contains("`json`"),
        "{stderr}"
    );
}
