//! The egress proxy's sidecar container, in Docker: its image, made from the `cordon-egress`
//! program and the shared libraries it needs (no base image, no registry), and starting it on
//! a job's internal network.
//!
//! The sidecar is cordon's own code, configured by the operator's policy: the job's
//! allowlist (already within the operator's), the internal hosts, the upstream proxy. It runs
//! as nobody, with every capability dropped, a read-only root and small limits. It is what a
//! `prepare` container can reach, and all it can reach.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::NetworkConnectRequest;
use bollard::query_parameters::{BuildImageOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use super::SandboxError;
use super::egress::{ProxyConfig, Refusal};

/// The port the sidecar listens on, on the job's internal network.
pub const PROXY_PORT: u16 = 3128;
/// The program the sidecar runs; installed beside `cordon`.
pub const PROGRAM: &str = "cordon-egress";

/// Where `cordon-egress` is: `$CORDON_EGRESS_BIN`, beside the running program (or one
/// directory up, for test programs under `target/*/deps`), then `PATH`.
pub fn find_program() -> Result<PathBuf, SandboxError> {
    if let Some(p) = std::env::var_os("CORDON_EGRESS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok();
    let beside = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1).take(2))
        .map(|d| d.join(PROGRAM));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(PROGRAM));
    beside.chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        SandboxError::Protocol(format!(
            "`{PROGRAM}` (the egress proxy a `prepare` runs behind) was not found beside cordon or on PATH: install it with cordon (`cargo install --path .` installs both) or set CORDON_EGRESS_BIN"
        ))
    })
}

/// The image for `program`: `cordon-egress:<first 12 hex digits of its sha256>`.
fn image_reference(program: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(program));
    format!("{PROGRAM}:{}", &digest[..12])
}

/// The shared libraries (and the dynamic loader) `program` needs, as `ldd` lists them.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    let out = Command::new("ldd").arg(program).output().map_err(|e| {
        SandboxError::Protocol(format!(
            "cannot run `ldd` to find what {} needs: {e} (install libc-bin)",
            program.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.trim().split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The build context: a Dockerfile `FROM scratch`, the program and its libraries.
fn build_context(program: &Path, bytes: &[u8]) -> Result<Vec<u8>, SandboxError> {
    let io = |e: std::io::Error| SandboxError::Protocol(format!("making the egress image: {e}"));
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, path, data)
    };
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nUSER 65534:65534\nENTRYPOINT [\"/{PROGRAM}\"]\nLABEL org.cordon.image=egress\n"
    );
    add("Dockerfile", dockerfile.as_bytes(), 0o644).map_err(io)?;
    add(&format!("rootfs/{PROGRAM}"), bytes, 0o755).map_err(io)?;
    add("rootfs/tmp/.keep", b"", 0o644).map_err(io)?;
    for lib in libraries(program)? {
        let data = std::fs::read(&lib).map_err(io)?;
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        add(&format!("rootfs/{rel}"), &data, 0o755).map_err(io)?;
    }
    let mut tar = tar.into_inner().map_err(io)?;
    tar.flush().map_err(io)?;
    Ok(tar)
}

/// The egress image, built once per `cordon-egress` program (by content) and engine.
pub async fn image(docker: &Docker) -> Result<String, SandboxError> {
    /// The last program hashed: (path, size, modified) and its image reference, so a
    /// process hashes its `cordon-egress` once.
    type Known = Option<((PathBuf, u64, Option<std::time::SystemTime>), String)>;
    static LOCK: OnceCell<Arc<Mutex<Known>>> = OnceCell::const_new();
    let lock = LOCK
        .get_or_init(|| async { Arc::new(Mutex::new(None)) })
        .await;
    let mut known = lock.lock().await;
    let program = find_program()?;
    let unreadable = |e: std::io::Error| {
        SandboxError::Protocol(format!("cannot read {}: {e}", program.display()))
    };
    let meta = std::fs::metadata(&program).map_err(unreadable)?;
    let stamp = (program.clone(), meta.len(), meta.modified().ok());
    if let Some((s, reference)) = known.as_ref()
        && *s == stamp
        && docker.inspect_image(reference).await.is_ok()
    {
        return Ok(reference.clone());
    }
    let bytes = tokio::fs::read(&program).await.map_err(unreadable)?;
    let (bytes, reference) = tokio::task::spawn_blocking(move || {
        let r = image_reference(&bytes);
        (bytes, r)
    })
    .await
    .map_err(|e| SandboxError::Protocol(format!("hashing {PROGRAM}: {e}")))?;
    *known = Some((stamp, reference.clone()));
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(reference);
    }
    let context = {
        let program = program.clone();
        tokio::task::spawn_blocking(move || build_context(&program, &bytes))
            .await
            .map_err(|e| SandboxError::Protocol(format!("making the egress image: {e}")))??
    };
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&reference)
        .rm(true)
        .forcerm(true)
        .networkmode("none")
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let failed = match item {
            Ok(info) => info.error_detail.and_then(|d| d.message),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = failed {
            return Err(SandboxError::Protocol(format!(
                "building the egress image {reference} failed: {}",
                message.trim()
            )));
        }
    }
    Ok(reference)
}

/// Connects the started-but-not-yet-running sidecar `container` to `network`, starts it,
/// waits for it to listen, and returns its address there and its refusals as they come.
pub async fn start(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<(SocketAddr, tokio::sync::mpsc::Receiver<Refusal>), SandboxError> {
    let api = |action: &'static str| {
        move |source| SandboxError::Engine {
            action: action.into(),
            source,
        }
    };
    docker
        .connect_network(
            network,
            NetworkConnectRequest {
                container: container.to_string(),
                ..Default::default()
            },
        )
        .await
        .map_err(api("connecting the egress proxy to the job's network"))?;
    docker
        .start_container(
            container,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(api("starting the egress proxy"))?;
    let inspected = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(api("inspecting the egress proxy"))?;
    let ip = inspected
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .ok_or_else(|| {
            SandboxError::Protocol("the egress proxy got no address on the job's network".into())
        })?;
    let logs = docker.logs(
        container,
        Some(
            LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(read_reports(logs, tx, ready_tx));
    match tokio::time::timeout(Duration::from_secs(20), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok((SocketAddr::new(ip, PROXY_PORT), rx)),
        Ok(Ok(Err(said))) => Err(SandboxError::Protocol(format!(
            "the egress proxy did not start: {said}"
        ))),
        _ => Err(SandboxError::Protocol(
            "the egress proxy did not say it was listening within 20 s".into(),
        )),
    }
}

/// What the sidecar prints, one JSON object a line.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Report {
    Listening { listening: String },
    Refused(Refusal),
}

async fn read_reports(
    mut logs: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    tx: tokio::sync::mpsc::Sender<Refusal>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut pending = Vec::new();
    let mut said = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        let (LogOutput::StdOut { message } | LogOutput::StdErr { message }) = chunk else {
            continue;
        };
        pending.extend_from_slice(&message);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            match serde_json::from_slice::<Report>(&line) {
                Ok(Report::Listening { listening }) => {
                    tracing::debug!(%listening, "egress proxy ready");
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Report::Refused(r)) => {
                    let _ = tx.send(r).await;
                }
                Err(_) if said.len() < 2000 => said.push_str(&String::from_utf8_lossy(&line)),
                Err(_) => {}
            }
        }
        pending.truncate(64 * 1024);
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Err(if said.trim().is_empty() {
            "it exited without a word".into()
        } else {
            said.trim().to_string()
        }));
    }
}

/// The sidecar's command line: where to listen, and its whole configuration.
pub fn command(config: &ProxyConfig) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("0.0.0.0:{PROXY_PORT}"),
        "--config".into(),
        serde_json::to_string(config).unwrap_or_default(),
    ]
}

/// Labels of the sidecar's container (the job's, with its role).
pub fn labels(mut job_labels: HashMap<String, String>) -> HashMap<String, String> {
    job_labels.insert(super::labels::STEP.into(), "egress-proxy".into());
    job_labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_named_by_the_programs_content() {
        let a = image_reference(b"one");
        assert!(a.starts_with("cordon-egress:") && a.len() == "cordon-egress:".len() + 12);
        assert_ne!(a, image_reference(b"two"));
    }

    #[test]
    fn the_context_holds_the_program_and_its_loader() {
        let me = std::env::current_exe().expect("exe");
        let ctx = build_context(&me, b"#!program").expect("context");
        let mut ar = tar::Archive::new(ctx.as_slice());
        let names: Vec<String> = ar
            .entries()
            .expect("entries")
            .filter_map(|e| e.ok()?.path().ok().map(|p| p.display().to_string()))
            .collect();
        assert!(names.contains(&"Dockerfile".to_string()), "{names:?}");
        assert!(names.contains(&format!("rootfs/{PROGRAM}")), "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n.contains("ld-linux") || n.contains("libc.so")),
            "a dynamically linked test program needs its loader: {names:?}"
        );
    }
}
