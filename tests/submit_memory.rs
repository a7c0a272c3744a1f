//! `cordon submit` streams the workspace: its peak memory does not grow with the workspace.
//! A workspace of a few hundred MiB of incompressible data is submitted to a real service and
//! the client's peak RSS (the kernel's own count, `getrusage(RUSAGE_CHILDREN)`) is compared
//! with the workspace's size. Building the archive in memory, as cordon once did, needs more
//! than the workspace's size.
//!
//! Set `CORDON_SUBMIT_MEMORY_MIB` to change the workspace's size (default 256).

mod server_support;

use std::io::Write;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// `size` bytes of random data in files of 32 MiB under `dir`.
fn random_workspace(dir: &std::path::Path, size: u64) {
    std::fs::create_dir_all(dir).expect("workspace");
    let file_size: u64 = 32 << 20;
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0;
    let mut n = 0;
    while written < size {
        let mut f = std::fs::File::create(dir.join(format!("blob-{n}.bin"))).expect("file");
        let this = file_size.min(size - written);
        let mut left = this;
        while left > 0 {
            getrandom::fill(&mut block).expect("random bytes");
            let k = left.min(block.len() as u64) as usize;
            f.write_all(&block[..k]).expect("write");
            left -= k as u64;
        }
        written += this;
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_peak_memory_stays_flat_whatever_the_workspace_size() {
    let mib: u64 = std::env::var("CORDON_SUBMIT_MEMORY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = format!("{}MiB", mib * 2);
    let server = server_support::start(
        &dir.path().join("data"),
        &format!("max_upload: {limit}\nmax_workspace: {limit}\nshutdown_grace: 2s\n"),
    );
    random_workspace(&dir.path().join("ws"), size);
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            "{}workspace: {{ source: ./ws }}\n",
            server_support::spec("true")
        ),
    )
    .expect("spec");

    let before = getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss();
    assert_eq!(before, 0, "no child has been waited for yet");
    let out = tokio::process::Command::new(server_support::cordon_bin())
        .arg("submit")
        .arg(&spec)
        .args(["--detach", "--server", &server.url, "--token-file"])
        .arg(server.token_path())
        .env_remove("CORDON_CA_CERT")
        .env_remove("CORDON_TOKEN")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("submitted within 10 minutes")
        .expect("cordon runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("job-"), "{id}");
    // The largest RSS of the children waited for: only `cordon submit` (the service still runs).
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss() as u64;
    let peak_mib = peak_kib as f64 / 1024.0;
    eprintln!(
        "cordon submit of a {mib} MiB workspace: peak RSS {peak_mib:.1} MiB ({:.1}% of the workspace)",
        100.0 * peak_mib / mib as f64
    );
    // The service took all of it.
    let st = server.client().status(&id).await;
    assert_ne!(st["state"], "rejected", "{st}");
    assert!(
        peak_kib << 10 < size / 4,
        "peak RSS {peak_mib:.1} MiB for a {mib} MiB workspace: the upload is held in memory"
    );
}
