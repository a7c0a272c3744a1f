//! A remote engine over mutual TLS, as the docker CLI reaches one: `DOCKER_HOST=tcp://…`,
//! `DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH` holding `ca.pem`, `cert.pem` and `key.pem`. The
//! "remote engine" is a TLS proxy written here (client certificate required) in front of the
//! local engine's socket.

mod tls_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tls_support::{Ca, server_config};

const SOCKET: &str = "/var/run/docker.sock";

/// The engine's socket behind mutual TLS on `127.0.0.1`: a server certificate for that
/// address signed by `ca`, a client certificate signed by `ca` required. Returns the port and
/// the count of handshakes that succeeded.
async fn engine_behind_tls(ca: &Ca) -> (u16, Arc<AtomicUsize>) {
    let leaf = ca.server(&["127.0.0.1"]);
    let (addr, handshakes) =
        tls_support::listen(server_config(&leaf, Some(ca)), |mut tls| async move {
            if let Ok(mut engine) = tokio::net::UnixStream::connect(SOCKET).await {
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            }
        })
        .await;
    (addr.port(), handshakes)
}

/// A `DOCKER_CERT_PATH` with `ca.pem` (trusting `engine_ca`) and a client certificate signed
/// by `client_ca`.
fn cert_dir(dir: &Path, engine_ca: &Ca, client_ca: &Ca) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let client = client_ca.client("cordon");
    tls_support::write(dir, "ca.pem", &engine_ca.pem());
    tls_support::write(dir, "cert.pem", &client.cert);
    tls_support::write(dir, "key.pem", &client.key);
}

/// A job with no `prepare` (nothing that needs the egress sidecar) and a workspace.
fn job(dir: &Path) -> std::path::PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).expect("workspace");
    std::fs::write(ws.join("note.txt"), "through the TLS engine\n").expect("file");
    let spec = dir.join("job.yaml");
    std::fs::write(
        &spec,
        "image: cordon/python:3.11\nworkspace: { source: ./ws }\nsteps:\n  - name: main\n    run: cat /workspace/note.txt\n    timeout: 120s\nlimits: { cpus: 0.5, memory: 256MiB }\n",
    )
    .expect("spec");
    spec
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn cordon_run(spec: &Path, port: u16, cert_path: &Path) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
        .arg("run")
        .arg(spec)
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", cert_path)
        .env_remove("DOCKER_TLS")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("cordon runs");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_an_engine_behind_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("engine CA");
    let (port, handshakes) = engine_behind_tls(&ca).await;
    let certs = dir.path().join("certs");
    cert_dir(&certs, &ca, &ca);
    let spec = job(dir.path());

    let out = cordon_run(&spec, port, &certs).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("through the TLS engine"),
        "{}",
        out.stdout
    );
    // It went through the proxy, not the local socket.
    assert!(handshakes.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_signed_by_another_ca_is_refused_naming_ca_pem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("engine CA");
    let (port, handshakes) = engine_behind_tls(&ca).await;
    let certs = dir.path().join("certs");
    // ca.pem is some other CA's; the client certificate is one the engine would take.
    cert_dir(&certs, &Ca::new("not the engine's CA"), &ca);
    let spec = job(dir.path());

    let out = cordon_run(&spec, port, &certs).await;
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the engine's TLS certificate is refused")
            && out.stderr.contains(&format!("{}/ca.pem", certs.display()))
            && out.stderr.contains("DOCKER_CERT_PATH"),
        "{}",
        out.stderr
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_engine_does_not_trust_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("engine CA");
    let (port, _) = engine_behind_tls(&ca).await;
    let certs = dir.path().join("certs");
    cert_dir(&certs, &ca, &Ca::new("a CA the engine does not know"));
    let spec = job(dir.path());

    let out = cordon_run(&spec, port, &certs).await;
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("the engine refused the TLS connection")
            && out.stderr.contains("cert.pem"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_certificate_files_are_named_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("engine CA");
    let (port, handshakes) = engine_behind_tls(&ca).await;
    let certs = dir.path().join("certs");
    cert_dir(&certs, &ca, &ca);
    std::fs::remove_file(certs.join("key.pem")).expect("remove key.pem");
    let spec = job(dir.path());

    let out = cordon_run(&spec, port, &certs).await;
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("key.pem cannot be read") && out.stderr.contains("DOCKER_CERT_PATH"),
        "{}",
        out.stderr
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0, "nothing was sent");
}
