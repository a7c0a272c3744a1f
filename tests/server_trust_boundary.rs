//! The trust boundary, from the service: a client asking beyond the operator's policy gets a
//! 400 that names the field and the ceiling (and `cordon submit` exits 2); nothing is queued.
//! The sandbox side of each attack is in `trust_boundary.rs`.

mod server_support;

use std::process::Command;

use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_operators_policy_are_400s_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("repo")).expect("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret.txt"), "host secret").expect("secret");
    std::os::unix::fs::symlink(&outside, root.join("escape")).expect("symlink");
    let data = tmp.path().join("data");
    let srv = start(
        &data,
        &format!(
            "workspace_roots: [{}]\npolicy:\n  max: {{ memory: 512MiB, timeout: 5m, output: 4MiB }}\n  egress: {{ allow_hosts: [pypi.org, files.pythonhosted.org] }}\n",
            root.display()
        ),
    );
    let c = srv.client();
    let db = data.join("cordon.db");
    let ok = spec("true");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "memory over the ceiling",
            ok.replace("memory: 256MiB", "memory: 20GiB"),
            "`limits.memory`: 20GiB is over the operator's ceiling of 512MiB (`max.memory`)",
        ),
        (
            "a 24 h step",
            ok.replace("timeout: 120s", "timeout: 24h"),
            "`max.timeout`",
        ),
        (
            "8 GiB of output",
            ok.replace("memory: 256MiB", "memory: 256MiB, output: 8GiB"),
            "`max.output`",
        ),
        (
            "the service's own database as a CA bundle",
            format!(
                "{ok}prepare: {{ run: 'true', ca_bundle: {} }}\n",
                db.display()
            ),
            "`prepare.ca_bundle`",
        ),
        (
            "the proxy aimed at the host",
            format!("{ok}prepare: {{ run: 'true', allow_hosts: ['127.0.0.1'] }}\n"),
            "`prepare.allow_hosts[0]`",
        ),
        (
            "cloud metadata",
            format!("{ok}prepare: {{ run: 'true', allow_hosts: ['169.254.169.254'] }}\n"),
            "not within the operator's egress allowlist",
        ),
        (
            "an image the operator did not allow",
            ok.replace("image: cordon/python:3.11", "image: corp/with-secrets:1"),
            "`image`",
        ),
        (
            "a workspace path under /proc",
            format!(
                "{ok}workspace: {{ source: {}, path: /proc/self/fd/7 }}\n",
                root.join("repo").display()
            ),
            "`workspace.path`",
        ),
        (
            "a workspace source that is a link out of the roots",
            format!(
                "{ok}workspace: {{ source: {} }}\n",
                root.join("escape").display()
            ),
            "`workspace.source`",
        ),
    ];
    for (what, spec_text, needle) in cases {
        let (code, v) = c.submit(&spec_text, None).await;
        assert_eq!(code, 400, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    assert!(
        !std::fs::read_dir(data.join("jobs"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "a refused submission left files"
    );

    // `cordon submit` says the same and exits 2.
    let dir = tmp.path().join("client");
    std::fs::create_dir_all(&dir).expect("client dir");
    std::fs::write(
        dir.join("job.yaml"),
        ok.replace("memory: 256MiB", "memory: 20GiB"),
    )
    .expect("spec");
    let out = Command::new(cordon_bin())
        .current_dir(&dir)
        .args(["submit", "job.yaml", "--server", &srv.url])
        .arg("--token-file")
        .arg(srv.token_path())
        .env_remove("CORDON_TOKEN")
        .output()
        .expect("submit runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`max.memory`"), "{err}");
}
