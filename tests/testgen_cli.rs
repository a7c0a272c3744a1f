//! `cordon testgen` as a user runs it: `--write` puts the kept tests in the repository and
//! the report next to them; Ctrl-C stops cleanly, leaves the repository untouched and still
//! writes the report.

mod testgen_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testgen_support::{Answer, last_user, start};

fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join("tests")).expect("mkdir");
    std::fs::write(
        dir.join("shapes.py"),
        "def area(w, h):\n    if w < 0 or h < 0:\n        raise ValueError('negative')\n    return w * h\n",
    )
    .expect("write");
}

fn cordon(repo: &Path, report: &Path, base_url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cordon"));
    c.arg("testgen")
        .arg(repo)
        .args([
            "--base-url",
            base_url,
            "--model",
            "scripted",
            "--max-iterations",
            "1",
        ])
        .arg("--report")
        .arg(report)
        .args(extra)
        .env("OPENAI_API_KEY", "sk-test-never-in-a-container")
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_copies_kept_tests_into_the_repository() {
    let s = start(Box::new(|_, req| {
        let u = last_user(req);
        if u.contains("`area`") {
            Answer::chat(
                // The last test proves the API key given to cordon never entered the sandbox.
                "```python\nimport os\nimport pytest\nfrom shapes import area\n\ndef test_area():\n    assert area(2, 3) == 6\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        area(-1, 2)\n\ndef test_no_key_here():\n    assert area(1, 1) == 1\n    assert 'OPENAI_API_KEY' not in os.environ\n    assert not any('never-in-a-container' in v for v in os.environ.values())\n```",
            )
        } else {
            Answer::status(500, "unexpected")
        }
    }))
    .await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    make_repo(&repo);
    let report = tmp.path().join("report");
    let url = s.base_url.clone();
    let repo2 = repo.clone();
    let report2 = report.clone();
    let out = tokio::task::spawn_blocking(move || {
        cordon(&repo2, &report2, &url, &["--write"])
            .output()
            .expect("runs")
    })
    .await
    .expect("joins");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for stage in [
        "detect:",
        "baseline:",
        "iteration 1/1",
        "final:",
        "cordon: report:",
    ] {
        assert!(stderr.contains(stage), "progress names `{stage}`: {stderr}");
    }
    let written: Vec<String> = std::fs::read_dir(repo.join("tests/generated"))
        .expect("tests/generated exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, vec!["test_gen_shapes_area_1.py"]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).expect("report"))
            .expect("json");
    assert_eq!(json["status"], "target_reached", "{json}");
    assert_eq!(
        json["after"]["coverage"]["lines_covered"],
        json["after"]["coverage"]["lines"]
    );
    assert!(report.join("report.md").exists());
    assert!(
        report
            .join("tests/generated/test_gen_shapes_area_1.py")
            .exists()
    );
    // All three tests kept, the key check included: it passed inside the sandbox.
    assert_eq!(json["candidates"][0]["tests_kept"], 3, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_still_reports() {
    // A model that answers the probe (its model list) and never answers a chat request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1", silent.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = silent.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET ") {
                    let body = r#"{"object":"list","data":[{"id":"scripted"}]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(answer.as_bytes()).await;
                }
                // Hold the connection, silent, until the client goes.
                let _ = sock.read(&mut buf).await;
                std::future::pending::<()>().await;
            });
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    make_repo(&repo);
    let report = tmp.path().join("report");
    let (repo2, report2) = (repo.clone(), report.clone());
    let (code, stderr, took) = tokio::task::spawn_blocking(move || {
        let mut child = cordon(&repo2, &report2, &url, &["--write"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut seen = String::new();
        // Wait until the model is being asked (the baseline is done), then Ctrl-C.
        for l in lines.by_ref() {
            let l = l.expect("line");
            seen.push_str(&l);
            seen.push('\n');
            if l.contains("[1/1]") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("signal");
        for l in lines {
            seen.push_str(&l.expect("line"));
            seen.push('\n');
        }
        let status = child.wait().expect("waits");
        (status.code(), seen, t.elapsed())
    })
    .await
    .expect("joins");
    assert_eq!(code, Some(130), "{stderr}");
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    assert!(
        !repo.join("tests/generated").exists(),
        "nothing written on Ctrl-C"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).expect("report written"))
            .expect("json");
    assert_eq!(json["status"], "stopped");
    assert!(json["baseline"]["coverage"]["lines"].as_u64().unwrap_or(0) > 0);
}
