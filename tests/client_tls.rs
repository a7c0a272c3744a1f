//! The client commands over https: a TLS-terminating proxy written here (tokio-rustls, a CA
//! made with rcgen) in front of a real `cordon serve` on the real engine. Also what a
//! submission does when the service, or what stands in front of it, answers `503`.

mod server_support;
mod tls_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use server_support::{Server, cordon_bin};
use tls_support::{Ca, server_config};

/// The service behind the proxy answers to `localhost` on any port (the proxy's included),
/// and to `127.0.0.1` for the test's own direct requests.
const CONFIG: &str = "server_names: [localhost, 127.0.0.1]\n";

/// What the proxy does with submissions (`POST /v1/jobs`): how many to answer `503` itself,
/// and how many it saw.
#[derive(Clone, Default)]
struct Submits {
    refuse: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
}

/// An https endpoint on `127.0.0.1` for `localhost`, signed by `ca`, in front of `backend`.
async fn proxy(ca: &Ca, backend: SocketAddr, submits: Submits) -> u16 {
    let leaf = ca.server(&["localhost"]);
    let (addr, _) = tls_support::listen(server_config(&leaf, None), move |tls| {
        front(tls, backend, submits.clone())
    })
    .await;
    addr.port()
}

/// Reads one request head; a submission is counted and, while `refuse` lasts, read whole and
/// answered `503 Retry-After: 1` as a service shutting down does. Anything else is forwarded
/// (with the rest of the connection) to `backend`.
async fn front<S>(mut client: S, backend: SocketAddr, submits: Submits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.starts_with("post /v1/jobs ") {
        submits.seen.fetch_add(1, Ordering::SeqCst);
        let refused = submits
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            read_body(&mut client, &head, &buf[head_end..]).await;
            let body = r#"{"error":{"kind":"shutting_down","message":"the service is shutting down and accepts no new jobs"}}"#;
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    }
    let Ok(mut up) = TcpStream::connect(backend).await else {
        return;
    };
    if up.write_all(&buf).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    }
}

/// Reads the rest of a request body (`have`: what of it was already read): `content-length`
/// bytes, or chunks up to the last one.
async fn read_body<S: tokio::io::AsyncRead + Unpin>(client: &mut S, head: &str, have: &[u8]) {
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut tail: Vec<u8> = have.to_vec();
    let mut got = have.len();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let done = match length {
            Some(len) => got >= len,
            None => tail.ends_with(b"0\r\n\r\n"),
        };
        if done {
            return;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                got += n;
                tail.extend_from_slice(&chunk[..n]);
                let keep = tail.len().saturating_sub(8);
                tail.drain(..keep);
            }
        }
    }
}

/// A job spec next to a workspace with one file; the job prints it.
fn job(dir: &Path) -> PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).expect("workspace");
    std::fs::write(ws.join("hello.txt"), "hello over tls\n").expect("file");
    let spec = dir.join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            "{}workspace: {{ source: ./ws }}\n",
            server_support::spec("cat /workspace/hello.txt")
        ),
    )
    .expect("spec");
    spec
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cordon ARGS` against the service, its token from `server`, no `CORDON_*` from the
/// test's environment.
async fn cordon(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Out {
    let run = tokio::process::Command::new(cordon_bin())
        .args(args)
        .arg("--token-file")
        .arg(server.token_path())
        .env_remove("CORDON_SERVER")
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .env_remove("CORDON_CA_CERT")
        .env_remove("CORDON_RETRY_FOR")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("cordon finished within 5 minutes")
        .expect("cordon runs");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn backend(server: &Server) -> SocketAddr {
    server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the service's address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_jobs_and_status_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_support::start(&dir.path().join("data"), CONFIG);
    let ca = Ca::new("cordon test CA");
    let ca_file = tls_support::write(dir.path(), "ca.pem", &ca.pem());
    let port = proxy(&ca, backend(&server), Submits::default()).await;
    let url = format!("https://localhost:{port}");
    let spec = job(dir.path());
    let out_dir = dir.path().join("out");

    let ca_arg = ca_file.to_str().expect("utf-8 path");
    let sub = cordon(
        &server,
        &[
            "submit",
            spec.to_str().expect("utf-8"),
            "--server",
            &url,
            "--ca-cert",
            ca_arg,
            "--json",
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(sub.code, Some(0), "{}", sub.stderr);
    assert!(
        !sub.stderr.contains("warning"),
        "https to a remote-looking name is not warned about: {}",
        sub.stderr
    );
    let result: Value = serde_json::from_str(&sub.stdout).expect("one JSON result");
    assert_eq!(result["outcome"], "passed", "{result}");
    let job_id = result["job_id"].as_str().expect("job_id").to_string();

    // The same CA through the environment: `jobs` and `status` over https.
    let env = [("CORDON_CA_CERT", ca_arg)];
    let jobs = cordon(&server, &["jobs", "--server", &url, "--json"], &env).await;
    assert_eq!(jobs.code, Some(0), "{}", jobs.stderr);
    let listed: Value = serde_json::from_str(&jobs.stdout).expect("JSON listing");
    let first = &listed["jobs"][0];
    assert_eq!(first["state"], "finished", "{listed}");
    assert_eq!(first["id"], job_id.as_str(), "{listed}");

    let status = cordon(
        &server,
        &["status", &job_id, "--server", &url, "--json"],
        &env,
    )
    .await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let st: Value = serde_json::from_str(&status.stdout).expect("JSON status");
    assert_eq!(st["outcome"], "passed", "{st}");

    let logs = cordon(&server, &["logs", &job_id, "--server", &url], &env).await;
    assert_eq!(logs.code, Some(0), "{}", logs.stderr);
    assert!(logs.stdout.contains("hello over tls"), "{}", logs.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_and_names_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_support::start(&dir.path().join("data"), CONFIG);
    let ca = Ca::new("cordon test CA");
    let submits = Submits::default();
    let port = proxy(&ca, backend(&server), submits.clone()).await;
    let url = format!("https://localhost:{port}");
    let spec = job(dir.path());

    let sub = cordon(
        &server,
        &["submit", spec.to_str().expect("utf-8"), "--server", &url],
        &[],
    )
    .await;
    assert_eq!(sub.code, Some(5), "{}", sub.stderr);
    assert!(
        sub.stderr
            .contains("not signed by a CA this machine trusts")
            && sub.stderr.contains("--ca-cert FILE (or CORDON_CA_CERT)"),
        "{}",
        sub.stderr
    );
    assert_eq!(
        submits.seen.load(Ordering::SeqCst),
        0,
        "nothing went through"
    );

    // Another CA is no better than none; the listing fails the same way.
    let other = Ca::new("someone else's CA");
    let other_file = tls_support::write(dir.path(), "other.pem", &other.pem());
    let jobs = cordon(
        &server,
        &[
            "jobs",
            "--server",
            &url,
            "--ca-cert",
            other_file.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(jobs.code, Some(5), "{}", jobs.stderr);
    assert!(jobs.stderr.contains("--ca-cert FILE"), "{}", jobs.stderr);

    // A CA file that holds no certificate is the flag's fault: exit 2, before any request.
    let junk = tls_support::write(dir.path(), "junk.pem", "not a certificate\n");
    let bad = cordon(
        &server,
        &[
            "jobs",
            "--server",
            &url,
            "--ca-cert",
            junk.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--ca-cert"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_refused_with_503_twice_is_retried_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_support::start(&dir.path().join("data"), CONFIG);
    let ca = Ca::new("cordon test CA");
    let ca_file = tls_support::write(dir.path(), "ca.pem", &ca.pem());
    let submits = Submits::default();
    submits.refuse.store(2, Ordering::SeqCst);
    let port = proxy(&ca, backend(&server), submits.clone()).await;
    let url = format!("https://localhost:{port}");
    let spec = job(dir.path());

    let sub = cordon(
        &server,
        &[
            "submit",
            spec.to_str().expect("utf-8"),
            "--server",
            &url,
            "--ca-cert",
            ca_file.to_str().expect("utf-8"),
            "--out",
            dir.path().join("out").to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(sub.code, Some(0), "{}", sub.stderr);
    assert!(sub.stdout.contains("hello over tls"), "{}", sub.stdout);
    assert_eq!(
        sub.stderr
            .matches("nothing was submitted, retrying in")
            .count(),
        2,
        "{}",
        sub.stderr
    );
    assert_eq!(submits.seen.load(Ordering::SeqCst), 3);
    // Exactly one job: the refused attempts left nothing behind.
    let (status, page) = server.client().get("/v1/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_unavailable_for_good_is_given_up_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_support::start(&dir.path().join("data"), CONFIG);
    let ca = Ca::new("cordon test CA");
    let ca_file = tls_support::write(dir.path(), "ca.pem", &ca.pem());
    let submits = Submits::default();
    submits.refuse.store(usize::MAX, Ordering::SeqCst);
    let port = proxy(&ca, backend(&server), submits.clone()).await;
    let url = format!("https://localhost:{port}");
    let spec = job(dir.path());

    let sub = cordon(
        &server,
        &[
            "submit",
            spec.to_str().expect("utf-8"),
            "--server",
            &url,
            "--ca-cert",
            ca_file.to_str().expect("utf-8"),
            "--retry-for",
            "4s",
        ],
        &[],
    )
    .await;
    assert_eq!(sub.code, Some(5), "{}", sub.stderr);
    assert!(
        sub.stderr.contains("503 Service Unavailable")
            && sub.stderr.contains("nothing was submitted. Gave up after")
            && sub.stderr.contains("--retry-for 4s"),
        "{}",
        sub.stderr
    );
    let seen = submits.seen.load(Ordering::SeqCst);
    assert!((2..=4).contains(&seen), "{seen} attempts within 4 s");
    let (_, page) = server.client().get("/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(0), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_shutting_down_answers_503_and_the_client_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = server_support::start(&dir.path().join("data"), "shutdown_grace: 20s\n");
    let client = server.client();
    // A running job holds the service in its drain while the client knocks.
    let long = client
        .submit_ok(&server_support::spec("sleep 60"), None)
        .await;
    client
        .wait_state(&long, "running", Duration::from_secs(60))
        .await;
    server.sigterm();
    let probe = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = probe
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .expect("readyz");
        if r.status() == 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let spec = job(dir.path());
    let sub = cordon(
        &server,
        &[
            "submit",
            spec.to_str().expect("utf-8"),
            "--server",
            &server.url,
            "--retry-for",
            "1s",
        ],
        &[],
    )
    .await;
    assert_eq!(sub.code, Some(5), "{}", sub.stderr);
    // Its Retry-After (10 s) is past the budget: given up at once, saying why.
    assert!(
        sub.stderr.contains(
            "the service is shutting down and accepts no new jobs; nothing was submitted. Gave up"
        ),
        "{}",
        sub.stderr
    );
    assert_eq!(server.wait_exit(Duration::from_secs(60)), Some(0));
}
