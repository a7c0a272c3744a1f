//! `cordon image build controller`, then the image run the way `deploy/kubernetes.yaml` runs
//! it: as uid 10001 with the socket's group as a supplementary group, read-only root, every
//! capability dropped, no new privileges, tmpfs (an emptyDir's stand-in) for `/tmp` and
//! `/var/lib/cordon`, the ConfigMap's `cordon.yaml` as its configuration. It must answer
//! `/readyz` and run a job whose `prepare` goes through the egress proxy — a sidecar the
//! controller builds and starts on the engine from its own `cordon-egress` — so `prepare`
//! works from the pod.
//!
//! Needs the engine with `cordon/base-python:bookworm` and `cordon/python:3.11` (`.ci/run`).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod deploy_support;
use deploy_support::{docker, docker_ok, text, wait_ready};
use std::time::Instant;

use sha2::{Digest, Sha256};

const SOCKET: &str = "/var/run/docker.sock";
const MANIFEST: &str = "deploy/kubernetes.yaml";

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).expect("a built binary")))
}

/// The ConfigMap's `cordon.yaml` from the manifest.
fn configmap_config() -> String {
    let raw = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST))
        .expect(MANIFEST);
    for doc in serde_yaml_ng::Deserializer::from_str(&raw) {
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v["kind"].as_str() == Some("ConfigMap")
            && v["metadata"]["name"].as_str() == Some("cordon-config")
        {
            let text = v["data"]["cordon.yaml"]
                .as_str()
                .expect("cordon.yaml")
                .to_string();
            return text;
        }
    }
    panic!("{MANIFEST} has no ConfigMap cordon-config");
}

/// The controller container and what its cordon made (labelled `org.cordon.owner=HOST:PID`,
/// HOST being the container's unique hostname), and the environment image the job built.
struct Cleanup {
    name: String,
    dir: PathBuf,
    env_image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["stop", "--time", "40", &self.name]);
        deploy_support::remove_all(&self.name);
        if let Some(image) = &self.env_image {
            let _ = docker(&["rmi", image]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_controller_image_serves_and_prepares_like_the_pod() {
    let started = Instant::now();
    let cordon = PathBuf::from(env!("CARGO_BIN_EXE_cordon"));
    let egress = PathBuf::from(env!("CARGO_BIN_EXE_cordon-egress"));
    let reference = cordon::image::CONTROLLER_IMAGE;

    // Built by cordon itself, from the programs beside it (no registry, network none).
    let build = Command::new(&cordon)
        .args(["image", "build", "controller"])
        .env("CORDON_EGRESS_BIN", &egress)
        .stdin(Stdio::null())
        .output()
        .expect("cordon image build controller");
    assert!(
        build.status.success(),
        "cordon image build controller: {}",
        text(&build)
    );

    let inspect = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{index .Config.Labels \"org.cordon.image\"}}",
        reference,
    ]);
    assert_eq!(
        inspect,
        "10001:10001|[\"/usr/local/bin/cordon\"]|controller"
    );
    let sums = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sha256sum",
        reference,
        "/usr/local/bin/cordon",
        "/usr/local/bin/cordon-egress",
    ]);
    let inside: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        inside,
        [sha256_file(&cordon), sha256_file(&egress)],
        "the image does not hold the programs it was built from"
    );

    // Run it as the pod does.
    let gid = std::fs::metadata(SOCKET).expect(SOCKET).gid().to_string();
    deploy_support::reap_expired();
    let (name, expires) = deploy_support::unique_name("cordon-ctl");
    let dir = tempfile::Builder::new()
        .prefix("cordon-ctl-")
        .tempdir()
        .expect("tmp")
        .keep();
    let mut cleanup = Cleanup {
        name: name.clone(),
        dir: dir.clone(),
        env_image: None,
    };
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("random bytes");
    let token = hex::encode(secret);
    std::fs::write(dir.join("cordon.yaml"), configmap_config()).expect("config");
    std::fs::write(dir.join("token"), &token).expect("token");
    for f in ["cordon.yaml", "token"] {
        let p = dir.join(f);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox-profiles");
    let v = |host: &Path, inside: &str, ro: bool| {
        format!("{}:{inside}{}", host.display(), if ro { ":ro" } else { "" })
    };
    let mounts = [
        v(&dir.join("cordon.yaml"), "/etc/cordon/cordon.yaml", true),
        v(&profiles, "/etc/cordon/sandbox-profiles", true),
        v(&dir.join("token"), "/var/run/secrets/cordon/token", true),
        v(Path::new(SOCKET), "/var/run/docker.sock", false),
    ];
    let mut run: Vec<&str> = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--hostname",
        &name,
        "--label",
        &expires,
        "--user",
        "10001:10001",
        "--group-add",
        &gid,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/lib/cordon:mode=0777",
        "--add-host",
        "cordon:127.0.0.1",
        "-e",
        "DOCKER_HOST=unix:///var/run/docker.sock",
        "-e",
        "CORDON_CONTROLLER_ID=cordon-test-0",
    ];
    for m in &mounts {
        run.extend(["-v", m]);
    }
    run.push(reference);
    docker_ok(&run);

    let exec = |args: &[&str]| {
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    wait_ready(
        || {
            exec(&[
                "python3",
                "-c",
                "import urllib.request as u; print(u.urlopen('http://cordon:8420/readyz', timeout=2).read().decode().strip())",
            ])
        },
        || text(&docker(&["logs", &name])),
    );

    // A job with a prepare: its request to a host off the allowlist is refused by the egress
    // proxy, which only exists if the controller could build and start it from the pod.
    let spec = format!(
        "image: cordon/python:3.11\nworkspace: {{ source: ./ws, mode: copy, path: /workspace }}\nprepare:\n  run: |\n    # run {name}\n    python3 -c 'import urllib.request as u; u.urlopen(\"http://evil.example/\", timeout=10)' || echo refused-as-expected\n  timeout: 120s\nsteps:\n  - name: check\n    run: cat a.txt\n    timeout: 60s\n"
    );
    let mut put = Command::new("docker")
        .args(["exec", "-i", &name, "sh", "-c", "mkdir -p /tmp/job/ws && echo from-the-pod > /tmp/job/ws/a.txt && cat > /tmp/job/job.yaml"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("docker exec");
    put.stdin
        .take()
        .expect("stdin")
        .write_all(spec.as_bytes())
        .expect("spec");
    assert!(put.wait().expect("docker exec").success());
    let submit = exec(&[
        "sh",
        "-c",
        "cd /tmp/job && cordon submit job.yaml --server http://cordon:8420 --token-file /var/run/secrets/cordon/token --color never --json --out /tmp/job/out --retry-for 0s",
    ]);
    let result: serde_json::Value = serde_json::from_slice(&submit.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON result ({e}): {}\n--- logs:\n{}",
            text(&submit),
            text(&docker(&["logs", &name]))
        )
    });
    cleanup.env_image = result["environment"]["image"].as_str().map(str::to_string);
    assert_eq!(result["outcome"], "passed", "{result:#}\n{}", text(&submit));
    assert_eq!(result["environment"]["cached"], false, "{result:#}");
    assert_eq!(
        result["environment"]["egress_refused"],
        serde_json::json!(["evil.example:80"]),
        "the prepare's request did not meet the egress proxy: {result:#}"
    );

    // SIGTERM drains (what the kubelet sends); nothing of the job is left on the engine.
    docker_ok(&["stop", "--time", "60", &name]);
    let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(
        exit,
        "0",
        "the controller did not exit cleanly on SIGTERM:\n{}",
        text(&docker(&["logs", &name]))
    );
    let left = deploy_support::leftovers(&name);
    assert!(left.is_empty(), "containers left on the engine: {left:?}");
    drop(cleanup);
    assert!(!docker(&["container", "inspect", &name]).status.success());
    eprintln!("deploy_controller_image: {:.0?}", started.elapsed());
}
