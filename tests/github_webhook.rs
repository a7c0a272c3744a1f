//! `POST /v1/github/webhook` on a real `cordon serve`: GitHub's signature (its documented
//! test vector), no bearer token needed but the front door still in force, deduplication by
//! hook id + delivery id (surviving a restart), only trusted associations queue work,
//! unknown events acknowledged.

mod github_support;
mod hook_support;
mod server_support;
mod testgen_support;

use std::time::Duration;

use hook_support::{SECRET, deliver, sign, start_on};
use serde_json::json;
use server_support::Server;

fn start(dir: &std::path::Path) -> Server {
    start_on(dir, "http://127.0.0.1:9", &[])
}

fn comment(assoc: &str) -> Vec<u8> {
    json!({
        "action": "created",
        "repository": {"full_name": "octo/calc"},
        "issue": {"number": 4, "pull_request": {"url": "x"}, "author_association": "NONE"},
        "comment": {"body": "/cordon tests please", "author_association": assoc, "user": {"login": "ann"}},
        "sender": {"login": "ann"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_verified_deduplicated_and_judged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut s = start(tmp.path());

    // GitHub's documented vector: the signature of "Hello, World!" under its secret. The
    // body is no event payload cordon acts on: acknowledged, ignored.
    let doc_sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign(b"Hello, World!"), doc_sig);
    let (st, v) = deliver(
        &s,
        "ping",
        "1",
        "d-0",
        b"Hello, World!",
        Some(doc_sig.into()),
    )
    .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ignored")), "{v}");

    // Bad, missing and wrong-algorithm signatures: 401, before anything is read.
    let body = comment("COLLABORATOR");
    let (st, _) = deliver(&s, "issue_comment", "1", "d-1", &body, Some(sign(b"other"))).await;
    assert_eq!(st, 401);
    let (st, _) = deliver(&s, "issue_comment", "1", "d-1", &body, None).await;
    assert_eq!(st, 401);
    let (st, _) = deliver(
        &s,
        "issue_comment",
        "1",
        "d-1",
        &body,
        Some(sign(&body).replace("sha256", "sha1")),
    )
    .await;
    assert_eq!(st, 401);

    // A collaborator's /cordon: queued, without any bearer token.
    let (st, v) = deliver(&s, "issue_comment", "1", "d-1", &body, Some(sign(&body))).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        v["work"],
        json!({"kind": "tests_for_pr", "repo": "octo/calc", "number": 4})
    );
    // A redelivery (same hook, same delivery id): recorded once.
    let (st, v) = deliver(&s, "issue_comment", "1", "d-1", &body, Some(sign(&body))).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("duplicate")));
    // The same delivery id from another hook is another delivery.
    let (st, _) = deliver(&s, "issue_comment", "2", "d-1", &body, Some(sign(&body))).await;
    assert_eq!(st, 202);

    // Someone without a say: acknowledged, ignored, logged.
    let outsider = comment("CONTRIBUTOR");
    let (st, v) = deliver(
        &s,
        "issue_comment",
        "1",
        "d-2",
        &outsider,
        Some(sign(&outsider)),
    )
    .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ignored")), "{v}");
    // An event cordon does not know: acknowledged, ignored.
    let star = br#"{"action":"created","repository":{"full_name":"octo/calc"}}"#;
    let (st, v) = deliver(&s, "star", "1", "d-3", star, Some(sign(star))).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ignored")));

    // The front door still stands: a browser page on another site is refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/github/webhook", s.url))
        .header("origin", "https://evil.example")
        .header("x-hub-signature-256", sign(&body))
        .body(body.clone())
        .send()
        .await
        .expect("sends");
    assert_eq!(resp.status().as_u16(), 403);

    // Durable: after a restart the redelivery is still a duplicate.
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(60)).is_some(), "stops");
    let log = s.log();
    assert!(
        log.contains("CONTRIBUTOR"),
        "the ignored trigger is logged: {log}"
    );
    assert!(!log.contains(SECRET));
    let s = start(tmp.path());
    let (st, v) = deliver(&s, "issue_comment", "1", "d-1", &body, Some(sign(&body))).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("duplicate")), "{v}");
    let store =
        cordon::server::store::SqliteStore::open(&tmp.path().join("data/cordon.db")).expect("db");
    // The two queued ones went to the worker (whose GitHub, here, does not answer).
    let mut work = Vec::new();
    for state in ["queued", "running", "done", "failed"] {
        work.extend(store.deliveries(state).expect("rows"));
    }
    assert_eq!(work.len(), 2, "{work:?}");
    assert!(work.iter().all(|d| {
        d.work
            .as_deref()
            .is_some_and(|w| w.contains("tests_for_pr"))
    }));
    assert_eq!(store.deliveries("ignored").expect("rows").len(), 3);
}

#[tokio::test]
async fn a_github_section_without_credentials_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("s"), "0123456789abcdef0123").expect("secret");
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "github:\n  webhook_secret_file: {}\n",
            tmp.path().join("s").display()
        ),
    )
    .expect("cfg");
    let out = std::process::Command::new(server_support::cordon_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("github") && err.contains("token_file"),
        "{err}"
    );
}

/// A collaborator's `/cordon` on a pull request: the service runs flow 1 on the pull
/// request's branch (scripted model, real sandbox) and opens the tests' pull request into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_pull_request_gets_its_tests_as_a_pull_request_into_it() {
    let calc = "def add(a, b):\n    return a + b\n\n\ndef clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n";
    let d = github_support::start(&[
        ("calc.py", "def add(a, b):\n    return a + b\n"),
        (
            "tests/test_calc.py",
            "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        ),
    ])
    .await;
    open_pull_request_from_feature(&d, calc);
    let model = testgen_support::start(Box::new(|_n, req| {
        if testgen_support::last_user(req).contains("for the function `clamp`") {
            return testgen_support::Answer::chat("```python\nfrom calc import clamp\n\ndef test_clamp():\n    assert clamp(-1, 0, 3) == 0\n    assert clamp(5, 0, 3) == 3\n    assert clamp(2, 0, 3) == 2\n```");
        }
        testgen_support::Answer::chat("I cannot help with that.")
    }))
    .await;
    let tmp = tempfile::tempdir().expect("tmp");
    let s = start_on(
        tmp.path(),
        &d.url,
        &[
            ("OPENAI_BASE_URL", model.base_url.as_str()),
            ("OPENAI_MODEL", "scripted"),
            ("OPENAI_API_KEY", "test-key"),
        ],
    );
    let body = cordon_comment_on_pr_1();
    let (st, _) = deliver(&s, "issue_comment", "9", "run-1", &body, Some(sign(&body))).await;
    assert_eq!(st, 202);
    let done = hook_support::finished(tmp.path()).await;
    assert_eq!(done.len(), 1, "never finished: {}", s.log());
    assert_eq!(done[0].state, "done", "{:?}\n{}", done[0].reason, s.log());
    let opened = d
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/pulls"))
        .expect("a pull request");
    assert_eq!(
        opened.body["base"], "feature",
        "into the pull request's branch"
    );
    assert!(
        opened.body["head"]
            .as_str()
            .is_some_and(|h| h.starts_with("cordon/tests/pr-1-")),
        "{}",
        opened.body
    );
    assert!(!s.log().contains(github_support::TOKEN));
    // The pull request that asked is told where its tests are (the tests' own pull
    // request is #2).
    let told = d.with(|w| {
        w.comments
            .iter()
            .find(|(n, _)| *n == 1)
            .map(|(_, c)| c["body"].as_str().unwrap_or("").to_string())
    });
    let told = told.expect("a comment on #1");
    assert!(
        told.contains("/octo/calc/pull/2") && told.contains("run-1"),
        "{told}"
    );
}

/// A shutdown stops the delivery being worked on (its sandboxes with it) and leaves it queued,
/// to run again at the next start, instead of reporting it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_the_delivery_at_work_and_keeps_it_for_the_next_start() {
    let calc = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    return x\n";
    let d = github_support::start(&[
        ("calc.py", "def clamp(x, lo, hi):\n    return x\n"),
        (
            "tests/test_calc.py",
            "from calc import clamp\n\n\ndef test_clamp():\n    assert clamp(1, 0, 3) == 1\n",
        ),
    ])
    .await;
    open_pull_request_from_feature(&d, calc);
    // A model that is busy for longer than anyone waits.
    let model = testgen_support::start(Box::new(|_n, _req| {
        testgen_support::Answer::status(503, "busy").with_header("retry-after", "110")
    }))
    .await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut s = start_on(
        tmp.path(),
        &d.url,
        &[
            ("OPENAI_BASE_URL", model.base_url.as_str()),
            ("OPENAI_MODEL", "scripted"),
            ("OPENAI_API_KEY", "test-key"),
            ("CORDON_SHUTDOWN_GRACE", "5s"),
            // One slot: an idle dispatcher must not sit on it while a delivery waits.
            ("CORDON_CONCURRENCY", "1"),
        ],
    );
    let body = cordon_comment_on_pr_1();
    let (st, _) = deliver(&s, "issue_comment", "9", "stop-1", &body, Some(sign(&body))).await;
    assert_eq!(st, 202);
    // At work: it has asked the model for a test.
    for _ in 0..600 {
        if model.requests().iter().any(|r| r.get("messages").is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        model.requests().iter().any(|r| r.get("messages").is_some()),
        "the delivery never reached the model: {}",
        s.log()
    );
    s.sigterm();
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0), "{}", s.log());
    let store =
        cordon::server::store::SqliteStore::open(&tmp.path().join("data/cordon.db")).expect("db");
    let queued = store.deliveries("queued").expect("rows");
    assert_eq!(queued.len(), 1, "{}", s.log());
    assert_eq!(
        queued[0].reason.as_deref(),
        Some("interrupted by a shutdown")
    );
    assert!(store.deliveries("failed").expect("rows").is_empty());
    assert!(
        !d.calls()
            .iter()
            .any(|c| c.method == "POST" && c.path.ends_with("/pulls")),
        "nothing was opened"
    );
}

/// Pull request #1 of `octo/calc`, from a `feature` branch on `main` whose one commit makes
/// `calc.py` `calc` (its changed lines are what tests are generated for).
fn open_pull_request_from_feature(d: &github_support::GitHubDouble, calc: &str) {
    d.open_pull(1, "octo/calc", "feature", &[("calc.py", Some(calc))]);
}

/// The owner's `/cordon` comment on pull request #1: an `issue_comment` payload.
fn cordon_comment_on_pr_1() -> Vec<u8> {
    json!({
        "action": "created",
        "repository": {"full_name": "octo/calc"},
        "issue": {"number": 1, "pull_request": {"url": "x"}, "author_association": "OWNER"},
        "comment": {"body": "/cordon", "author_association": "OWNER", "user": {"login": "ann"}},
        "sender": {"login": "ann"}
    })
    .to_string()
    .into_bytes()
}
