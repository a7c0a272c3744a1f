//! What the Docker-backed deployment tests share: the docker CLI, and finding and removing
//! what a test left on the engine — on its own paths (a `Drop` guard) and, for a run that was
//! killed before its guard could run, by the next run (an expiry label on its container).

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The label every container these tests start carries: the Unix time after which a later
/// run may remove it (no run of these tests takes that long; one killed outright leaves it).
pub const EXPIRES: &str = "org.cordon.test.expires";

/// How long a test's container may live.
pub const LIFETIME: Duration = Duration::from_secs(15 * 60);

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the docker CLI")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A name no other run uses (it is also the container's hostname, so the cordon inside
/// labels what it makes `org.cordon.owner=NAME:PID`), and the `--label` for its expiry.
pub fn unique_name(prefix: &str) -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (
        format!("{prefix}-{}-{nanos}", std::process::id()),
        format!("{EXPIRES}={}", now() + LIFETIME.as_secs()),
    )
}

/// cordon-managed containers, volumes and networks whose owner is the cordon that ran in the
/// container named `name`.
pub fn leftovers(name: &str) -> Vec<(&'static str, String)> {
    let prefix = format!("{name}:");
    let mut found = Vec::new();
    for (kind, list) in [
        ("container", &["ps", "-a"][..]),
        ("volume", &["volume", "ls"][..]),
        ("network", &["network", "ls"][..]),
    ] {
        let id = if kind == "volume" {
            "{{.Name}}"
        } else {
            "{{.ID}}"
        };
        let format = format!("{id} {{{{.Label \"org.cordon.owner\"}}}}");
        let mut args = list.to_vec();
        args.extend(["--filter", "label=org.cordon.managed", "--format", &format]);
        let out = docker(&args);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((id, owner)) = line.split_once(' ')
                && owner.starts_with(&prefix)
            {
                found.push((kind, id.to_string()));
            }
        }
    }
    found
}

/// Removes the container `name` and everything its cordon left.
pub fn remove_all(name: &str) {
    let _ = docker(&["rm", "-f", "-v", name]);
    for (kind, id) in leftovers(name) {
        let args: Vec<&str> = match kind {
            "container" => vec!["rm", "-f", "-v", &id],
            "volume" => vec!["volume", "rm", "-f", &id],
            _ => vec!["network", "rm", &id],
        };
        let _ = docker(&args);
    }
}

/// Removes the containers of earlier runs that expired (killed before their guard ran).
pub fn reap_expired() {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={EXPIRES}"),
        "--format",
        &format!("{{{{.Names}}}} {{{{.Label \"{EXPIRES}\"}}}}"),
    ]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((name, expires)) = line.split_once(' ')
            && expires.parse::<u64>().is_ok_and(|t| t < now())
        {
            remove_all(name);
        }
    }
}

/// Asks `probe` (a request to cordon's `/readyz`) until it answers `ready`, for at most 30 s;
/// past that, fails with its last answer and `logs()` (what the service said).
pub fn wait_ready(probe: impl Fn() -> Output, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = probe();
        if r.status.success() {
            assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "ready");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered: {}\n--- the service's log:\n{}",
            text(&r),
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
