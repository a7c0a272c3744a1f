//! The service's front door against a real `cordon serve` and the real engine: a token always
//! (generated when none is configured), no browser-context requests, named tokens that see
//! only their own jobs, and a data directory private to the service whatever the umask.

mod server_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use server_support::*;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// With no token configured the service generates one (0600, in the data directory), prints
/// where it is (never the token), requires it, and reuses it at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_generated_when_none_is_configured_and_required() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let token = {
        let srv = start(&data, "");
        let path = srv.token_path();
        assert_eq!(mode(&path), 0o600, "the generated token's mode");
        let token = srv.token.clone().expect("generated");
        assert_eq!(token.len(), 64, "32 random bytes, hex");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let log = srv.log();
        assert!(
            log.contains(&path.display().to_string()) && log.contains("--token-file"),
            "the path and how to use it are printed: {log}"
        );
        assert!(!log.contains(&token), "the token itself is never printed");

        let anonymous = srv.client_with(None);
        let (code, body) = anonymous.submit(&spec("true"), None).await;
        assert_eq!(code, 401, "{body}");
        assert_eq!(body["error"]["kind"], "unauthorized");
        let (code, _) = anonymous.get("/v1/jobs/job-x").await;
        assert_eq!(code, 401);
        let (code, _) = srv
            .client_with(Some(&"0".repeat(64)))
            .get("/v1/jobs/job-x")
            .await;
        assert_eq!(code, 401, "a wrong token");
        let (code, _) = srv.client().get("/v1/jobs/job-x").await;
        assert_eq!(code, 404, "with the token: on to the route");
        for probe in ["/healthz", "/readyz"] {
            let (code, _) = anonymous.get(probe).await;
            assert_eq!(code, 200, "{probe} needs no token");
        }

        // `cordon submit` without the token, or with a wrong one: exit 2 and the service's
        // message; with --token-file it runs.
        let job = tmp.path().join("job.yaml");
        std::fs::write(&job, spec("echo hi")).expect("spec");
        for extra in [vec![], vec!["--token", "wrong-token-0123456789"]] {
            let out = Command::new(cordon_bin())
                .args(["submit", "--server", &srv.url])
                .arg(&job)
                .args(&extra)
                .env_remove("CORDON_TOKEN")
                .env_remove("CORDON_TOKEN_FILE")
                .current_dir(tmp.path())
                .output()
                .expect("submit runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
            assert!(
                err.contains("401") && err.contains("bearer token"),
                "{extra:?}: {err}"
            );
        }
        let out = Command::new(cordon_bin())
            .args(["submit", "--server", &srv.url, "--token-file"])
            .arg(&path)
            .arg(&job)
            .env_remove("CORDON_TOKEN")
            .current_dir(tmp.path())
            .output()
            .expect("submit runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        token
    };
    // The next start reuses it.
    let srv = start(&data, "");
    assert_eq!(srv.token.as_deref(), Some(token.as_str()));
    assert!(srv.log().contains("generated earlier"), "{}", srv.log());
}

/// A request from a web page of another site (its `Origin`, or `null`), or sent under a name
/// that is not the service's (`Host`), is refused with 403 before anything happens — even
/// with a valid token. Probes stay open to any Host (Kubernetes sends the pod's IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_context_requests_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), "");
    let c = srv.client();
    let port = srv.url.rsplit(':').next().expect("port").to_string();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = c
            .req(reqwest::Method::POST, "/v1/jobs")
            .header("content-type", "application/yaml")
            .body(spec("echo should-never-run"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    };
    for (headers, why) in [
        (
            vec![("origin", "https://evil.example".to_string())],
            "Origin",
        ),
        (vec![("origin", "null".to_string())], "Origin: null"),
        (
            vec![("origin", format!("http://localhost:{port}0"))],
            "Origin",
        ),
        (
            vec![("host", "evil.example".to_string())],
            "Host: evil.example",
        ),
        (
            vec![("host", format!("evil.example:{port}"))],
            "server_names",
        ),
        (
            vec![("sec-fetch-site", "cross-site".to_string())],
            "Sec-Fetch-Site",
        ),
    ] {
        let r = post(headers.clone()).send().await.expect("post");
        assert_eq!(r.status(), 403, "{headers:?}");
        let v: Value = r.json().await.expect("a JSON error");
        assert_eq!(v["error"]["kind"], "forbidden", "{headers:?}: {v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(why), "{headers:?}: {msg}");
    }
    // Refused without a token as well (no 401 that would tell a page the service is there
    // and wants a token), and on every route, the unknown ones included.
    for path in ["/v1/jobs/job-x", "/metrics", "/v1/openapi.yaml", "/nope"] {
        let r = srv
            .client_with(None)
            .req(reqwest::Method::GET, path)
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403, "{path}");
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("cordon_jobs_submitted_total 0"),
        "no job was created: {metrics}"
    );
    let jobs: Vec<_> = std::fs::read_dir(srv.data.join("jobs"))
        .expect("jobs dir")
        .collect();
    assert!(jobs.is_empty(), "nothing stored: {jobs:?}");

    // Probes: any Host, any Origin.
    for probe in ["/healthz", "/readyz"] {
        let r = srv
            .client_with(None)
            .req(reqwest::Method::GET, probe)
            .header("host", "10.1.2.3:8420")
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200, "{probe}");
    }
    // The service's own names and origin are fine.
    let r = post(vec![
        ("host", format!("localhost:{port}")),
        ("origin", format!("http://localhost:{port}")),
        ("sec-fetch-site", "same-origin".into()),
    ])
    .send()
    .await
    .expect("post");
    assert_eq!(r.status(), 202);
}

const CI: &str = "ci-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const ALICE: &str = "alice-token-0123456789abcdef";

/// A token that is not an admin's sees and cancels only the jobs it submitted: another's job
/// is 404 exactly like one that does not exist. An admin token sees and cancels every job and
/// reads /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tokens_see_only_their_own_jobs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ci_file = tmp.path().join("ci-token");
    std::fs::write(&ci_file, format!("{CI}\n")).expect("token file");
    let srv = start(
        &tmp.path().join("data"),
        &format!(
            "concurrency: 2\ntokens:\n  - {{ name: ci, token_file: {} }}\n  - {{ name: bob, token: {BOB} }}\n  - {{ name: alice, token: {ALICE}, admin: true }}\n",
            ci_file.display()
        ),
    );
    assert!(
        !srv.token_path().exists(),
        "tokens are configured: none is generated"
    );
    let (ci, bob, alice) = (
        srv.client_with(Some(CI)),
        srv.client_with(Some(BOB)),
        srv.client_with(Some(ALICE)),
    );
    let done = ci
        .submit_ok(
            &format!(
                "{}artifacts: [/out/a.txt]\n",
                spec("mkdir -p /out; echo art > /out/a.txt")
            ),
            None,
        )
        .await;
    let events = ci.events(&done, 0).await;
    assert_eq!(
        events.last().expect("events")["result"]["outcome"],
        "passed"
    );
    assert_eq!(ci.status(&done).await["submitted_by"], "ci");

    // Bob: every route of ci's job answers as for a job that does not exist.
    let routes = |id: &str| {
        [
            (reqwest::Method::GET, format!("/v1/jobs/{id}")),
            (reqwest::Method::GET, format!("/v1/jobs/{id}/events")),
            (reqwest::Method::GET, format!("/v1/jobs/{id}/artifacts")),
            (
                reqwest::Method::GET,
                format!("/v1/jobs/{id}/artifacts/a.txt"),
            ),
            (reqwest::Method::DELETE, format!("/v1/jobs/{id}")),
        ]
    };
    let missing = "job-00000000000000000000000000000000";
    for ((m, path), (_, missing_path)) in routes(&done).into_iter().zip(routes(missing)) {
        let r = bob.req(m.clone(), &path).send().await.expect("request");
        assert_eq!(r.status(), 404, "bob: {m} {path}");
        let body = r.text().await.expect("body").replace(&done, "ID");
        let r = bob
            .req(m.clone(), &missing_path)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404);
        let missing_body = r.text().await.expect("body").replace(missing, "ID");
        assert_eq!(body, missing_body, "{m} {path}: another's job looks absent");
    }
    // Alice, an admin, sees it all.
    let st = alice.status(&done).await;
    assert_eq!(st["submitted_by"], "ci");
    assert_eq!(alice.events(&done, 0).await, events);
    let (code, list) = alice.get(&format!("/v1/jobs/{done}/artifacts")).await;
    assert_eq!(code, 200);
    assert_eq!(list["artifacts"][0]["path"], "a.txt");

    // Cancel: bob cannot touch ci's running job; alice can.
    let running = ci.submit_ok(&spec("echo up; sleep 120"), None).await;
    ci.wait_event(&running, "output").await;
    let r = bob
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{running}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    assert_eq!(
        ci.status(&running).await["state"],
        "running",
        "still running"
    );
    let r = alice
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{running}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outcome"], "cancelled", "{v}");

    // Bob's own job is his; ci does not see it.
    let own = bob.submit_ok(&spec("true"), None).await;
    assert_eq!(bob.status(&own).await["submitted_by"], "bob");
    let (code, _) = ci.get(&format!("/v1/jobs/{own}")).await;
    assert_eq!(code, 404);

    // /metrics: admin only.
    let r = ci
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin")),
        "{v}"
    );
    assert!(
        alice
            .metrics()
            .await
            .contains("cordon_jobs_submitted_total 3")
    );
    bob.wait_state(&own, "finished", Duration::from_secs(60))
        .await;
}

/// After a job with an uploaded workspace and artifacts ran, the data directory is 0700 and
/// every directory in it 0700, every file 0600 — though `cordon serve` started under umask
/// 022 and the directory was 0755 before (as an older cordon left it). The job could still
/// read its workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut srv = start_with(&data, "", &[], Some("022"));
    let c = srv.client();
    let id = c
        .submit_ok(
            &format!(
                "{}artifacts: [/out/a.txt, /out/d]\n",
                spec(
                    "cat sub/hello.txt && mkdir -p /out/d/e && echo a > /out/a.txt && echo f > /out/d/e/f.txt"
                )
            ),
            Some(tgz(&[("sub/hello.txt", "hello\n"), ("top.txt", "t\n")])),
        )
        .await;
    let events = c.events(&id, 0).await;
    let result = &events.last().expect("events")["result"];
    assert_eq!(result["outcome"], "passed", "{result}");
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: the data directory");
        let mut files = Vec::new();
        for e in walkdir::WalkDir::new(&data).min_depth(1) {
            let e = e.expect("walk");
            let m = mode(e.path());
            let rel = e
                .path()
                .strip_prefix(&data)
                .expect("under")
                .display()
                .to_string();
            if e.file_type().is_dir() {
                assert_eq!(m, 0o700, "{when}: directory {rel}");
            } else {
                assert!(
                    e.file_type().is_file(),
                    "{when}: {rel} is a file or a directory"
                );
                assert_eq!(m, 0o600, "{when}: file {rel} is {m:o}");
                files.push(rel);
            }
        }
        files
    };
    let files = check("running");
    for f in [
        "cordon.db".to_string(),
        "cordon.db-wal".into(),
        "token".into(),
        format!("jobs/{id}/workspace/sub/hello.txt"),
        format!("jobs/{id}/out/a.txt"),
        format!("jobs/{id}/out/d/e/f.txt"),
    ] {
        assert!(files.contains(&f), "{f} is among {files:?}");
    }
    srv.sigterm();
    assert_eq!(srv.wait_exit(Duration::from_secs(60)), Some(0));
    check("stopped");
}
