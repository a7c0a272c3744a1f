//! Cached dependency environments (`prepare`) against the real engine and the real package
//! registry (PyPI, through cordon's allowlisting proxy and this machine's CA bundle).
//!
//! One test function runs the scenarios in order, because they share the engine's image
//! cache and `cache prune` must not race other environment tests.

mod common;

use common::{Job, Running, cordon_bin};

/// A spec whose install is keyed by `requirements.txt`; the nonce in that file makes the key
/// new for each test run.
fn job(requirements: &str) -> Job {
    Job::new(
        r#"
workspace: { source: ./repo }
prepare:
  run: pip install --no-input --disable-pip-version-check -r requirements.txt
  cache_key_files: ["requirements*.txt"]
  allow_hosts: [pypi.org, files.pythonhosted.org]
  ca_bundle: host
  timeout: 300s
steps:
  - name: test
    run: python -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml
    timeout: 60s
artifacts: [/out/junit.xml]
limits: { memory: 512MiB, pids: 128, scratch: 64MiB }
"#,
    )
    .file("repo/requirements.txt", requirements)
    .file(
        "repo/test_dep.py",
        "import six\n\ndef test_the_dependency_is_installed():\n    assert six.PY3\n",
    )
}

fn rerun(job: &Job) -> common::Finished {
    let _ = std::fs::remove_dir_all(job.out());
    job.run()
}

fn env(r: &common::Finished) -> serde_json::Value {
    r.result()["environment"].clone()
}

#[test]
fn environments_are_built_once_reused_rebuilt_on_change_and_pruned() {
    let nonce = uuid_like();
    let reqs = format!("# cordon test {nonce}\nsix==1.16.0\n");

    // 1. First run: the install runs (through the proxy, trusting the host CA), the tests pass.
    let j = job(&reqs);
    let first = j.run();
    first.assert_ended("passed", 0);
    let e1 = env(&first);
    assert_eq!(e1["cached"], false, "{}", first.context());
    assert_eq!(e1["outcome"], "passed", "{}", first.context());
    assert_eq!(first.result()["tests"]["passed"], 1, "{}", first.context());
    first.assert_no_leftovers();

    // 2. Same dependencies: the cached environment, no install.
    let second = rerun(&j);
    second.assert_ended("passed", 0);
    let e2 = env(&second);
    assert_eq!(e2["cached"], true, "{}", second.context());
    assert_eq!(e2["key"], e1["key"]);
    assert!(
        !second.output().contains("Successfully installed"),
        "{}",
        second.context()
    );

    // 3. Only a test file changed: still cached (test files are not part of the key).
    j.write("repo/test_more.py", "def test_more():\n    assert True\n");
    let third = rerun(&j);
    third.assert_ended("passed", 0);
    assert_eq!(env(&third)["cached"], true, "{}", third.context());

    // 4. The dependency file changed: a new key, a new build.
    j.write("repo/requirements.txt", &format!("{reqs}# changed\n"));
    let fourth = rerun(&j);
    fourth.assert_ended("passed", 0);
    let e4 = env(&fourth);
    assert_eq!(e4["cached"], false, "{}", fourth.context());
    assert_ne!(e4["key"], e1["key"]);

    // 5. Two jobs with one new key at once: exactly one builds, the other waits and reuses.
    let reqs5 = format!("# cordon test {nonce} concurrent\nsix==1.16.0\n");
    let (a, b) = (job(&reqs5), job(&reqs5));
    let (ra, rb) = (Running::spawn(a.command()), Running::spawn(b.command()));
    let (ra, rb) = (ra.wait(), rb.wait());
    ra.assert_ended("passed", 0);
    rb.assert_ended("passed", 0);
    assert_eq!(env(&ra)["key"], env(&rb)["key"]);
    let built = [&ra, &rb]
        .iter()
        .filter(|r| env(r)["cached"] == false)
        .count();
    assert_eq!(built, 1, "both built:\n{}\n{}", ra.context(), rb.context());

    // 6. `cache ls` lists them; `cache prune --all` removes them and says so.
    let ls = std::process::Command::new(cordon_bin())
        .args(["cache", "ls", "--json"])
        .output()
        .expect("cordon cache ls");
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    let keys: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["key"].as_str().unwrap_or_default().to_string())
        .collect();
    for e in [&e1, &e4, &env(&ra)] {
        assert!(keys.contains(&e["key"].as_str().unwrap_or_default().to_string()));
    }
    let prune = std::process::Command::new(cordon_bin())
        .args(["cache", "prune", "--all"])
        .output()
        .expect("cordon cache prune");
    assert!(prune.status.success());
    let said = String::from_utf8_lossy(&prune.stdout);
    for e in [&e1, &e4] {
        let reference = e["image"].as_str().unwrap_or_default();
        assert!(
            said.contains(reference),
            "prune did not say it removed {reference}: {said}"
        );
        let inspect = std::process::Command::new("docker")
            .args(["image", "inspect", reference])
            .output()
            .expect("docker");
        assert!(!inspect.status.success(), "{reference} is still there");
    }
}

#[test]
fn a_destination_off_the_allowlist_is_refused_and_reported() {
    let j = Job::new(
        r#"
prepare:
  run: |
    python3 -c "import urllib.request; urllib.request.urlopen('http://deb.debian.org/debian/', timeout=20)"
  allow_hosts: [pypi.org, files.pythonhosted.org]
  timeout: 120s
steps:
  - { name: test, run: "true" }
"#,
    );
    let r = j.run();
    r.assert_ended("failed", 1);
    let e = env(&r);
    assert_eq!(e["outcome"], "failed", "{}", r.context());
    let refused: Vec<String> = e["egress_refused"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(refused, vec!["deb.debian.org:80"], "{}", r.context());
    assert_eq!(r.steps()[0]["outcome"], "skipped");
    r.assert_no_leftovers();
    let networks = common::docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=org.cordon.job={}", r.job_id()),
    ]);
    assert!(
        networks.trim().is_empty(),
        "egress network left: {networks}"
    );
}

#[test]
fn without_prepare_steps_still_have_no_network() {
    // A cached environment changes what is installed, not how steps run: still no route out.
    let j = Job::new(
        "steps:\n  - { name: t, run: \"python3 -c \\\"import socket; socket.create_connection(('pypi.org', 443), timeout=3)\\\"\", timeout: 30s }\n",
    );
    let r = j.run();
    r.assert_ended("failed", 1);
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:x}-{}", std::process::id())
}
