//! The trust boundary, from the CLI: what a hostile spec (the submitter's) cannot make cordon
//! do on the host, against the real engine. Each test is one attack and the error the
//! submitter sees. The service's side is in `server_trust_boundary.rs`.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{Job, Running, docker};

fn refused_with(r: &common::Finished, field: &str) {
    r.assert_exit(2);
    let text = r.context();
    assert!(text.contains(field), "the error names {field}: {text}");
}

#[test]
fn a_spec_cannot_name_a_host_file_as_its_ca_bundle() {
    let r = Job::new(
        "prepare: { run: 'cat /etc/cordon/ca-bundle.crt', ca_bundle: /etc/hostname }\nsteps: [{name: t, run: 'true'}]\n",
    )
    .run();
    refused_with(&r, "`prepare.ca_bundle`: `/etc/hostname` is not allowed");
}

#[test]
fn a_spec_cannot_ask_for_more_than_the_ceilings() {
    for (limits, field) in [
        ("{ memory: 20GiB }", "`max.memory`"),
        ("{ timeout: 24h }", "`max.timeout`"),
        ("{ output: 8GiB }", "`max.output`"),
    ] {
        let r = Job::new(&format!(
            "steps: [{{name: t, run: 'true'}}]\nlimits: {limits}\n"
        ))
        .run();
        refused_with(&r, field);
    }
}

#[test]
fn a_spec_cannot_aim_the_proxy_at_the_host() {
    for host in ["127.0.0.1", "localhost", "169.254.169.254", "'10.0.0.1:22'"] {
        let r = Job::new(&format!(
            "prepare: {{ run: 'true', allow_hosts: [{host}] }}\nsteps: [{{name: t, run: 'true'}}]\n"
        ))
        .run();
        refused_with(&r, "not within the operator's egress allowlist");
    }
}

/// A Python script for the prepare container: tries each way out but the proxy and prints
/// `REACHED <what>` or `BLOCKED <what>`.
const ESCAPE: &str = r#"
import os, socket, struct
def attempt(what, host, port):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.close()
        print("REACHED", what, flush=True)
    except Exception as e:
        print("BLOCKED", what, type(e).__name__, flush=True)
gw = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
port = int(os.environ["HOST_PORT"])
if gw:
    attempt("the network's gateway", gw, port)
for ip in os.environ["HOST_IPS"].split():
    attempt("host address " + ip, ip, port)
attempt("metadata", "169.254.169.254", 80)
try:
    socket.getaddrinfo("pypi.org", 443)
    print("REACHED dns", flush=True)
except Exception as e:
    print("BLOCKED dns", type(e).__name__, flush=True)
proxy = os.environ["HTTP_PROXY"].split("//")[1]
phost, pport = proxy.rsplit(":", 1)
attempt("the proxy", phost, int(pport))
attempt("another port of the proxy's container", phost, 22)
"#;

fn host_addresses() -> Vec<String> {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|a| !a.contains(':'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_prepare_reaches_its_proxy_and_nothing_else() {
    // A service on every host address that the prepare must not reach.
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let ips = host_addresses();
    assert!(!ips.is_empty());
    let j = Job::new(&format!(
        "prepare:\n  run: python3 -c \"$ESCAPE\"\n  env: {{ HOST_PORT: '{port}', HOST_IPS: '{}', ESCAPE: {} }}\n  timeout: 120s\nsteps: [{{name: t, run: 'true'}}]\n",
        ips.join(" "),
        serde_json::to_string(ESCAPE).expect("json")
    ));
    let r = j.run();
    let out = r.context();
    assert!(out.contains("REACHED the proxy"), "{out}");
    for what in [
        "the network's gateway",
        "metadata",
        "dns",
        "another port of the proxy's container",
    ] {
        assert!(out.contains(&format!("BLOCKED {what}")), "{what}: {out}");
    }
    for ip in &ips {
        assert!(
            out.contains(&format!("BLOCKED host address {ip}")),
            "{ip}: {out}"
        );
    }
    assert!(
        !out.contains("REACHED the network")
            && !out.contains("REACHED host")
            && !out.contains("REACHED dns")
            && !out.contains("REACHED metadata"),
        "{out}"
    );
    // Nothing connected to the host's service.
    let mut buf = [0u8; 1];
    assert!(
        listener
            .accept()
            .map(|(mut s, _)| s.read(&mut buf))
            .is_err(),
        "a prepare container connected to a host port"
    );
    r.assert_no_leftovers();
}

#[test]
fn a_name_the_operator_allows_is_still_refused_when_it_resolves_to_loopback() {
    let j = Job::new(
        "prepare:\n  run: python3 -c \"import urllib.request; urllib.request.urlopen('http://localhost:8080/', timeout=10)\"\n  allow_hosts: ['localhost:8080']\n  env: { NO_PROXY: '', no_proxy: '' }\n  timeout: 60s\nsteps: [{name: t, run: 'true'}]\n",
    )
    .file("policy.yaml", "allowed_images: ['*']\negress: { allow_hosts: ['localhost:8080', pypi.org] }\n");
    let mut cmd = j.command();
    cmd.arg("--policy").arg(j.path("policy.yaml"));
    let r = Running::spawn(cmd).wait();
    r.assert_ended("failed", 1);
    let env = &r.result()["environment"];
    assert_eq!(
        env["egress_refused"][0],
        "localhost:8080",
        "{}",
        r.context()
    );
    assert!(
        r.context().contains("internal"),
        "the reason is said: {}",
        r.context()
    );
}

#[test]
fn passed_variables_reach_the_steps_but_never_the_prepare() {
    // A fresh prepare each run: a cached environment would not run it, and print nothing.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let j = Job::new(&format!(
        "prepare: {{ run: 'env; echo prepare-saw=${{CORDON_TEST_SECRET:-nothing}} run={nonce}' }}\nsteps: [{{name: t, run: 'echo step-saw=$CORDON_TEST_SECRET'}}]\npass_env: [CORDON_TEST_SECRET]\n"
    ));
    let mut cmd = j.command();
    cmd.env("CORDON_TEST_SECRET", "s3cret-value");
    let r = Running::spawn(cmd).wait();
    r.assert_ended("passed", 0);
    let out = r.context();
    assert!(out.contains("prepare-saw=nothing"), "{out}");
    assert!(out.contains("step-saw=s3cret-value"), "{out}");
    assert_eq!(
        out.matches("s3cret-value").count(),
        1,
        "the value appears only in the step's output: {out}"
    );
}

#[test]
fn a_prepare_that_writes_past_the_disk_cap_is_not_committed() {
    let j = Job::new(
        "prepare: { run: 'head -c 8000000 /dev/zero > /home/sandbox/big; echo wrote' }\nsteps: [{name: t, run: 'true'}]\n",
    )
    .file("policy.yaml", "allowed_images: ['*']\nmax: { prepare_disk: 2MiB }\n");
    let mut cmd = j.command();
    cmd.arg("--policy").arg(j.path("policy.yaml"));
    let r = Running::spawn(cmd).wait();
    r.assert_ended("disk_limit_exceeded", 4);
    let image = r.result()["environment"]["image"]
        .as_str()
        .expect("the environment's image is named")
        .to_string();
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .expect("docker");
    assert!(!inspect.status.success(), "{image} was committed");
    r.assert_no_leftovers();
}

#[test]
fn a_sigkill_during_a_prepare_leaves_nothing_after_the_next_start() {
    let j =
        Job::new("prepare: { run: 'sleep 120', timeout: 300s }\nsteps: [{name: t, run: 'true'}]\n");
    let mut running = Running::spawn(j.command());
    running.wait_for_output(
        "building the dependency environment",
        Duration::from_secs(120),
    );
    // Wait for this cordon's proxy to exist, then kill cordon outright.
    let owner = common::owner_label(running.pid());
    let proxy_job = || {
        docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=org.cordon.owner={owner}"),
            "--filter",
            "label=org.cordon.step=egress-proxy",
            "--format",
            "{{.Label \"org.cordon.job\"}}",
        ])
        .trim()
        .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy_job().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = proxy_job();
    assert!(!id.is_empty(), "the egress proxy never started");
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = running.wait();
    let networks = || {
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=org.cordon.job={id}"),
        ])
    };
    assert!(
        !networks().trim().is_empty(),
        "the network outlived cordon (else this proves nothing)"
    );
    // The next start reaps it.
    let r = Job::new("steps: [{name: t, run: 'true'}]\n").run();
    r.assert_ended("passed", 0);
    assert!(networks().trim().is_empty(), "network left: {}", networks());
    common::assert_no_leftovers(&id);
}
