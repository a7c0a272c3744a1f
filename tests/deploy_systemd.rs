//! The systemd deployment, for real: a Debian 12 container boots systemd as PID 1, the install
//! steps of `docs/deploy.md` run in it verbatim (read from the document here, so the document
//! and this test cannot drift apart), `systemctl enable --now cordon` starts the unit, and a
//! job submitted with `cordon submit` runs on the host's engine through the mounted socket.
//! Then: the unit's hardening is in force on the running process (not only written down),
//! the files have the modes the document promises, and `systemctl stop` drains cleanly.
//!
//! The container is the least privilege that boots systemd *and applies the unit's
//! hardening*: `--cap-add SYS_ADMIN` (without it systemd, finding it cannot make mount
//! namespaces, silently skips `ProtectSystem=`, `PrivateTmp=`, … and the test would prove
//! nothing about them), `--cgroupns private` (systemd manages its own cgroup subtree and
//! sees no other; no host cgroup mount), tmpfs on `/run` and `/run/lock`. Not privileged, no
//! host namespaces.
//!
//! Needs: the engine, `cordon/base-python:bookworm` and `cordon/python:3.11` on it (`.ci/run`
//! builds them), and a Debian mirror the first time (the systemd image is built from the base
//! with apt, then cached under a tag derived from its recipe and the base's id).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod deploy_support;
use deploy_support::{docker, docker_ok, text, wait_ready};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const DOC: &str = "docs/deploy.md";
const MARKER: &str = "<!-- install:systemd";
const BASE: &str = "cordon/base-python:bookworm";
const JOB_IMAGE: &str = "cordon/python:3.11";
const SOCKET: &str = "/var/run/docker.sock";
const TEST_LABEL: &str = "org.cordon.test=deploy_systemd";

/// Debian's systemd on cordon's debootstrapped base: what a fresh Debian 12 host has, minus
/// the units that make no sense in a container (consoles, udev, kernel file systems).
const SYSTEMD_DOCKERFILE: &str = r#"FROM {BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        systemd systemd-sysv dbus openssl curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && systemctl mask getty.target console-getty.service systemd-logind.service \
        systemd-udevd.service systemd-udevd-kernel.socket systemd-udevd-control.socket \
        sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
        systemd-remount-fs.service systemd-firstboot.service
ENV container=docker
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shell block right after the install marker in docs/deploy.md: exactly one marker, a
/// ```sh fence on the next line, a non-empty body.
fn install_steps(doc: &str) -> Result<String, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with(MARKER))
        .collect();
    let [at] = at.as_slice() else {
        return Err(format!(
            "{DOC}: expected one `{MARKER}` marker, found {}",
            at.len()
        ));
    };
    if lines.get(at + 1).map(|l| l.trim()) != Some("```sh") {
        return Err(format!(
            "{DOC}: the marker is not followed by a ```sh block"
        ));
    }
    let body: Vec<&str> = lines[at + 2..]
        .iter()
        .take_while(|l| l.trim() != "```")
        .copied()
        .collect();
    if at + 2 + body.len() >= lines.len() {
        return Err(format!("{DOC}: the install block is not closed"));
    }
    if body.iter().all(|l| l.trim().is_empty()) {
        return Err(format!("{DOC}: the install block is empty"));
    }
    Ok(body.join("\n") + "\n")
}

/// The systemd image, built once per (recipe, base image id) and found by that tag after.
fn systemd_image() -> String {
    let base_id = docker(&["image", "inspect", "--format", "{{.Id}}", BASE]);
    assert!(
        base_id.status.success(),
        "{BASE} is not on the engine: build it with `cordon image build python` (.ci/run does)"
    );
    let dockerfile = SYSTEMD_DOCKERFILE.replace("{BASE}", BASE);
    let mut h = Sha256::new();
    h.update(dockerfile.as_bytes());
    h.update(&base_id.stdout);
    let hash = hex::encode(h.finalize());
    let tag = format!("cordon-test/systemd:{}", &hash[..16]);
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let label = format!("org.cordon.test.hash={hash}");
    let mut child = Command::new("docker")
        .args([
            "build",
            "--quiet",
            "--rm",
            "--force-rm",
            "--label",
            &label,
            "-t",
            &tag,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dockerfile.as_bytes())
        .expect("writing the Dockerfile");
    let out = child.wait_with_output().expect("docker build");
    assert!(
        out.status.success(),
        "building the systemd image failed (it needs a Debian mirror the first time): {}",
        text(&out)
    );
    tag
}

/// Everything this test made on the engine: the systemd container, and whatever the cordon
/// inside it left (its containers, volumes and networks carry `org.cordon.owner=HOST:PID`,
/// HOST being the container's unique hostname). Removed on every path, panics included; a run
/// killed outright is reaped by the next (`deploy_support::reap_expired`).
struct Cleanup {
    name: String,
    /// The environment images the jobs' prepares committed.
    env_images: std::cell::RefCell<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Let cordon drain and remove its own containers first; then make sure.
        let _ = docker(&[
            "exec",
            &self.name,
            "timeout",
            "60",
            "systemctl",
            "stop",
            "cordon",
        ]);
        deploy_support::remove_all(&self.name);
        for image in self.env_images.borrow().iter() {
            let _ = docker(&["rmi", image]);
        }
    }
}

fn exec(name: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", name];
    all.extend_from_slice(args);
    docker(&all)
}

fn exec_ok(name: &str, args: &[&str]) -> String {
    let o = exec(name, args);
    assert!(
        o.status.success(),
        "in the container, {args:?} failed: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn journal(name: &str) -> String {
    text(&exec(
        name,
        &["journalctl", "-u", "cordon", "--no-pager", "-n", "60"],
    ))
}

/// A status line of /proc/PID/status, e.g. `CapBnd`.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status:\n{status}"))
}

#[test]
fn the_documented_install_runs_a_job_under_systemd() {
    let started = Instant::now();
    let steps = install_steps(&std::fs::read_to_string(repo().join(DOC)).expect(DOC))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        steps.contains("systemctl enable --now cordon"),
        "the documented steps must start the unit:\n{steps}"
    );
    assert!(
        docker(&["image", "inspect", JOB_IMAGE]).status.success(),
        "{JOB_IMAGE} is not on the engine: `cordon image build python` (.ci/run does)"
    );
    let socket_gid = std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| panic!("{SOCKET}: {e} (this test talks to a local engine)"))
        .gid();
    assert_ne!(
        socket_gid, 0,
        "{SOCKET} belongs to group root: no docker group to join"
    );

    deploy_support::reap_expired();
    let image = systemd_image();
    let (name, expires) = deploy_support::unique_name("cordon-sd");
    let cleanup = Cleanup {
        name: name.clone(),
        env_images: Default::default(),
    };

    let bin = |var: &str| PathBuf::from(var).canonicalize().expect("a built binary");
    let cordon = bin(env!("CARGO_BIN_EXE_cordon"));
    let egress = bin(env!("CARGO_BIN_EXE_cordon-egress"));
    let mount = |host: &Path, inside: &str| format!("{}:{inside}:ro", host.display());
    let mounts = [
        mount(&cordon, "/src/target/release/cordon"),
        mount(&egress, "/src/target/release/cordon-egress"),
        mount(&repo().join("deploy"), "/src/deploy"),
        mount(&repo().join("sandbox-profiles"), "/src/sandbox-profiles"),
        format!("{SOCKET}:/run/docker.sock"),
    ];
    let mut run: Vec<&str> = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--hostname",
        &name,
        "--label",
        TEST_LABEL,
        "--label",
        &expires,
        "--cap-add",
        "SYS_ADMIN",
        "--cgroupns",
        "private",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
    ];
    for m in &mounts {
        run.extend(["-v", m]);
    }
    run.push(&image);
    docker_ok(&run);

    // Boot: `--wait` returns once systemd has finished starting units; before PID 1 has
    // its bus up, systemctl cannot connect at all, so ask again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let boot = exec(
            &name,
            &["timeout", "60", "systemctl", "is-system-running", "--wait"],
        );
        let state = String::from_utf8_lossy(&boot.stdout).trim().to_string();
        if state == "running" || state == "degraded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not boot ({state}): {}\n{}",
            text(&boot),
            text(&exec(&name, &["systemctl", "--failed", "--no-pager"]))
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // What a fresh Debian 12 host with docker.io has: the docker group owning the socket.
    exec_ok(
        &name,
        &[
            "groupadd",
            "--system",
            "--gid",
            &socket_gid.to_string(),
            "docker",
        ],
    );

    // The documented steps, verbatim, as root from the checkout's top.
    let install = exec(
        &name,
        &[
            "bash",
            "-euo",
            "pipefail",
            "-c",
            &format!("cd /src\n{steps}"),
        ],
    );
    assert!(
        install.status.success(),
        "the install steps of {DOC} failed: {}\n--- cordon's journal:\n{}",
        text(&install),
        journal(&name)
    );

    // /readyz answers (the engine is reachable through the socket, from inside the unit).
    wait_ready(
        || {
            exec(
                &name,
                &[
                    "curl",
                    "-fsS",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:8420/readyz",
                ],
            )
        },
        || journal(&name),
    );

    // The hardening is in force on the running controller, not only written in the unit.
    let pid = exec_ok(
        &name,
        &["systemctl", "show", "-p", "MainPID", "--value", "cordon"],
    );
    assert_ne!(pid, "0", "cordon is not running:\n{}", journal(&name));
    let status = exec_ok(&name, &["cat", &format!("/proc/{pid}/status")]);
    let uid = exec_ok(&name, &["id", "-u", "cordon"]);
    assert!(
        status_field(&status, "Uid")
            .split_whitespace()
            .all(|u| u == uid),
        "cordon does not run as user cordon: {}",
        status_field(&status, "Uid")
    );
    let groups = status_field(&status, "Groups");
    assert!(
        groups
            .split_whitespace()
            .any(|g| g == socket_gid.to_string()),
        "cordon is not in the socket's group {socket_gid}: {groups}"
    );
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "no seccomp filter (MemoryDenyWriteExecute, RestrictNamespaces, …)"
    );
    let mountinfo = exec_ok(&name, &["cat", &format!("/proc/{pid}/mountinfo")]);
    let mount_opts = |target: &str| -> Option<String> {
        mountinfo
            .lines()
            // The last mount on a path is the one in force.
            .rfind(|l| l.split(' ').nth(4) == Some(target))
            .and_then(|l| l.split(' ').nth(5))
            .map(str::to_string)
    };
    let root = mount_opts("/").expect("a root mount");
    assert!(
        root.split(',').any(|o| o == "ro"),
        "ProtectSystem=strict not applied: / is {root}"
    );
    let state_dir =
        mount_opts("/var/lib/cordon").expect("the state directory's mount (ReadWritePaths)");
    assert!(
        state_dir.split(',').any(|o| o == "rw"),
        "/var/lib/cordon is {state_dir}"
    );
    assert!(
        mount_opts("/tmp").is_some(),
        "PrivateTmp not applied: no /tmp of its own"
    );

    // The files and their modes, as the document describes them.
    let stat = exec_ok(
        &name,
        &[
            "stat",
            "-c",
            "%n %U:%G %a",
            "/var/lib/cordon",
            "/etc/cordon",
            "/etc/cordon/cordon.yaml",
            "/etc/cordon/token",
            "/etc/cordon/sandbox-profiles",
            "/usr/local/bin/cordon-egress",
        ],
    );
    let expected = [
        "/var/lib/cordon cordon:cordon 700",
        "/etc/cordon root:cordon 750",
        "/etc/cordon/cordon.yaml root:cordon 640",
        "/etc/cordon/token root:cordon 640",
        "/etc/cordon/sandbox-profiles root:cordon 750",
        "/usr/local/bin/cordon-egress root:root 755",
    ];
    assert_eq!(stat.lines().collect::<Vec<_>>(), expected);
    let token = exec_ok(&name, &["cat", "/etc/cordon/token"]);
    assert_eq!(token.len(), 64, "the token is 32 random bytes in hex");
    let other = exec(
        &name,
        &["runuser", "-u", "nobody", "--", "cat", "/etc/cordon/token"],
    );
    assert!(!other.status.success(), "another user can read the token");

    // A job through the service, on the host's engine: the workspace is uploaded (copy mode).
    exec_ok(
        &name,
        &[
            "sh",
            "-c",
            "mkdir -p /root/job/ws && echo hello > /root/job/ws/hello.txt",
        ],
    );
    // Its prepare (unique to this run, so never cached) reaches for a host off the
    // allowlist: the refusal comes from the egress proxy, which exists only if the hardened
    // unit could build its sidecar image (ldd, the engine's build) and start it.
    let spec = format!(
        "image: cordon/python:3.11\nworkspace: {{ source: ./ws, mode: copy, path: /workspace }}\nprepare:\n  run: |\n    # run {name}\n    python3 -c 'import urllib.request as u; u.urlopen(\"http://evil.example/\", timeout=10)' || echo refused-as-expected\n  timeout: 120s\nsteps:\n  - name: check\n    run: test \"$(cat hello.txt)\" = hello && python3 -c 'print(\"answer\", 6 * 7)'\n    timeout: 60s\n"
    );
    let failing = "image: cordon/python:3.11\nsteps:\n  - name: fails\n    run: echo about-to-fail; exit 3\n    timeout: 60s\n";
    exec_ok(
        &name,
        &[
            "sh",
            "-c",
            &format!(
                "cat > /root/job/job.yaml <<'EOF'\n{spec}EOF\ncat > /root/job/fail.yaml <<'EOF'\n{failing}EOF\n"
            ),
        ],
    );
    let submit = |spec: &str| {
        exec(
            &name,
            &[
                "sh",
                "-c",
                &format!(
                    "cd /root/job && cordon submit {spec} --server http://127.0.0.1:8420 --token-file /etc/cordon/token --color never --retry-for 0s"
                ),
            ],
        )
    };
    let passed = submit("job.yaml");
    let stderr = String::from_utf8_lossy(&passed.stderr);
    if let Some(at) = stderr.find("cordon-env:") {
        let image: String = stderr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':'))
            .collect();
        cleanup.env_images.borrow_mut().push(image);
    }
    assert!(
        stderr.contains("egress to evil.example:80 refused"),
        "the prepare did not go through the egress proxy: {}\n--- cordon's journal:\n{}",
        text(&passed),
        journal(&name)
    );
    assert!(
        passed.status.success() && String::from_utf8_lossy(&passed.stdout).contains("answer 42"),
        "the job did not pass through the service: {}\n--- cordon's journal:\n{}",
        text(&passed),
        journal(&name)
    );
    let failed = submit("fail.yaml");
    assert_eq!(
        failed.status.code(),
        Some(1),
        "a failing job's status: {}",
        text(&failed)
    );
    assert!(String::from_utf8_lossy(&failed.stdout).contains("about-to-fail"));

    // SIGTERM drains; the unit stops cleanly and leaves nothing on the engine.
    exec_ok(&name, &["timeout", "150", "systemctl", "stop", "cordon"]);
    let result = exec_ok(
        &name,
        &["systemctl", "show", "-p", "Result", "--value", "cordon"],
    );
    assert_eq!(
        result,
        "success",
        "cordon did not stop cleanly:\n{}",
        journal(&name)
    );
    let left = deploy_support::leftovers(&name);
    assert!(left.is_empty(), "cordon left {left:?} on the engine");
    drop(cleanup);
    assert!(
        !docker(&["container", "inspect", &name]).status.success(),
        "the systemd container is still there"
    );
    eprintln!("deploy_systemd: {:.0?}", started.elapsed());
}

#[test]
fn the_install_block_is_found_only_when_well_formed() {
    let ok = format!("intro\n{MARKER} -->\n```sh\necho one\necho two\n```\nafter\n");
    assert_eq!(install_steps(&ok).as_deref(), Ok("echo one\necho two\n"));
    let missing = "```sh\necho one\n```\n";
    assert!(install_steps(missing).is_err());
    let twice = format!("{ok}{ok}");
    assert!(install_steps(&twice).is_err());
    let unclosed = format!("{MARKER} -->\n```sh\necho one\n");
    assert!(install_steps(&unclosed).is_err());
    let not_sh = format!("{MARKER} -->\n```\necho one\n```\n");
    assert!(install_steps(&not_sh).is_err());
    let empty = format!("{MARKER} -->\n```sh\n\n```\n");
    assert!(install_steps(&empty).is_err());
    // The real document has one, and it enables the unit.
    let doc = std::fs::read_to_string(repo().join(DOC)).expect(DOC);
    assert!(
        install_steps(&doc)
            .expect("the install block")
            .contains("systemctl enable --now cordon")
    );
}
