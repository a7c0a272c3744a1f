//! GitHub delivery against the GitHub double (tests/github_support): the API's errors and
//! retries, App sign-in, the sticky comment's pagination, the pre-receive hook; and flow 1
//! end to end with the scripted model and the real sandbox: promoted on green, left a draft
//! with a comment on red, nothing pushed when the sandbox could not run the suite.

mod github_support;
mod testgen_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon::github::Secret;
use cordon::github::client::{Credentials, GitHub, GitHubConfig, GitHubError, RepoName};
use cordon::github::git::Git;
use cordon::github::pulls::{CheckRun, STICKY_MARKER};
use cordon::github::tests_pr::{self, Delivered, Promotion};
use cordon::pipeline::Options;
use cordon::pipeline::llm::Llm;
use github_support::{Failure, GitHubDouble, INSTALL_TOKEN, LOGIN, NAME, OWNER, TOKEN};
use serde_json::json;
use testgen_support::{Answer, last_user, llm_config};
use tokio_util::sync::CancellationToken;

fn cfg(double: &GitHubDouble, token: &str) -> GitHubConfig {
    let mut c = GitHubConfig::new(
        Some(double.url.clone()),
        Credentials::Token(Secret::new(token)),
    );
    c.backoff = Duration::from_millis(10);
    c.max_retry_after = Duration::from_secs(5);
    c
}

fn repo() -> RepoName {
    RepoName::parse(&format!("{OWNER}/{NAME}")).expect("name")
}

async fn connect(double: &GitHubDouble) -> GitHub {
    GitHub::connect(&cfg(double, TOKEN), repo())
        .await
        .expect("connects")
}

const CALC: &str = "def add(a, b):\n    return a + b\n\n\ndef clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n";
const TEST_ADD: &str = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n";

#[tokio::test]
async fn api_errors_are_typed_and_retried_where_github_says_so() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    let wrong = GitHub::connect(&cfg(&d, "ghp_wrong_token_0000"), repo())
        .await
        .expect("builds");
    let e = wrong.repository().await.expect_err("401");
    assert!(matches!(e, GitHubError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains("ghp_wrong"), "{e}");

    let gh = connect(&d).await;
    let path = format!("/repos/{OWNER}/{NAME}");
    // Server errors are retried.
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 2,
        status: 502,
        headers: vec![],
        body: json!({"message": "Bad Gateway"}),
    });
    let r = gh.repository().await.expect("third attempt");
    assert_eq!(r.default_branch, "main");
    assert!(r.clone_url.starts_with("file://"));
    // ...but not forever.
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 3,
        status: 500,
        headers: vec![],
        body: json!({"message": "boom"}),
    });
    let e = gh.repository().await.expect_err("gives up");
    assert!(
        matches!(
            e,
            GitHubError::Server {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{e}"
    );
    // A secondary rate limit is waited out as Retry-After says...
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 1,
        status: 403,
        headers: vec![("retry-after", "1".into())],
        body: json!({"message": "You have exceeded a secondary rate limit."}),
    });
    let before = d.calls().len();
    gh.repository().await.expect("after the wait");
    assert_eq!(d.calls().len() - before, 2);
    // ...unless it asks for longer than cordon waits.
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 1,
        status: 429,
        headers: vec![("retry-after", "3600".into())],
        body: json!({"message": "slow down"}),
    });
    let e = gh.repository().await.expect_err("too long");
    assert!(
        matches!(
            e,
            GitHubError::RateLimited {
                retry_after: Some(3600),
                ..
            }
        ),
        "{e}"
    );
    // 404 and 403 say what to check.
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 1,
        status: 404,
        headers: vec![],
        body: json!({"message": "Not Found"}),
    });
    let e = gh.repository().await.expect_err("404");
    assert!(
        matches!(e, GitHubError::NotFound { .. }) && e.to_string().contains("cannot see it"),
        "{e}"
    );
    d.fail(Failure {
        method: "GET",
        path: path.clone(),
        times: 1,
        status: 403,
        headers: vec![],
        body: json!({"message": "Resource not accessible by integration"}),
    });
    let e = gh.repository().await.expect_err("403");
    assert!(
        matches!(e, GitHubError::Forbidden { .. }) && e.to_string().contains("permission"),
        "{e}"
    );
    // 422: a pull request from a branch that was never pushed.
    let e = gh
        .create_draft("t", "cordon/tests/none", "main", "b")
        .await
        .expect_err("422");
    assert!(matches!(e, GitHubError::Invalid { .. }), "{e}");
    // A token that may not make check runs: skipped with a note, not an error.
    d.with(|w| w.checks_forbidden = true);
    let c = gh.check_run("abc", true, "t", "s").await.expect("skipped");
    assert!(
        matches!(&c, CheckRun::Skipped(n) if n.contains("checks: write")),
        "{c:?}"
    );
    // No .cordon.yml: the defaults. A bad one names the field.
    assert_eq!(
        gh.repo_config("main").await.expect("defaults").install,
        "auto"
    );
    d.with(|w| w.cordon_yml = Some("instal: pip install .\n".into()));
    let e = gh.repo_config("main").await.expect_err("unknown field");
    assert!(e.to_string().contains("instal"), "{e}");

    for c in d.calls() {
        assert!(!c.path.contains(TOKEN));
        if c.auth.as_deref() != Some("Bearer ghp_wrong_token_0000") {
            assert_eq!(
                c.auth.as_deref(),
                Some(format!("Bearer {TOKEN}").as_str()),
                "{c:?}"
            );
        }
    }
    assert!(!format!("{gh:?}").contains(TOKEN));
}

#[tokio::test]
async fn github_enterprise_paths_rest_under_v3_graphql_beside_it() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    github_support::git(&d.bare, &["branch", "cordon/tests/x", "main"]);
    let mut c = cfg(&d, TOKEN);
    c.api_url = format!("{}/api/v3", d.url);
    let gh = GitHub::connect(&c, repo()).await.expect("connects");
    let pr = gh
        .create_draft("t", "cordon/tests/x", "main", "b")
        .await
        .expect("opened");
    gh.mark_ready(&pr).await.expect("promoted");
    assert_eq!(
        d.lines(),
        [
            format!("POST /api/v3/repos/{OWNER}/{NAME}/pulls"),
            "POST /api/graphql".to_string()
        ]
    );
}

#[tokio::test]
async fn the_sticky_comment_is_found_on_a_later_page_and_updated() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    let gh = connect(&d).await;
    d.with(|w| {
        for i in 0..150u64 {
            let (body, login) = match i {
                // Someone else's comment faking the marker: never edited.
                20 => (format!("{STICKY_MARKER}\nfake"), "mallory"),
                130 => (format!("{STICKY_MARKER}\nold"), LOGIN),
                _ => (format!("comment {i}"), "someone"),
            };
            w.comments.push((
                5,
                json!({"id": i + 1, "body": body, "user": {"login": login}}),
            ));
        }
    });
    let id = gh.sticky_comment(5, "new text").await.expect("updated");
    assert_eq!(id, 131);
    let lines = d.lines();
    assert!(
        lines.iter().any(|l| l.contains("per_page=100&page=2")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("POST")), "{lines:?}");
    let body = d.with(|w| {
        w.comments[130].1["body"]
            .as_str()
            .expect("body")
            .to_string()
    });
    assert!(body.ends_with("new text"), "{body}");
    let fake = d.with(|w| w.comments[20].1["body"].as_str().expect("body").to_string());
    assert!(fake.ends_with("fake"), "{fake}");
    // On a pull request without one, it is created, and found again the next time.
    let first = gh.sticky_comment(6, "one").await.expect("created");
    let again = gh.sticky_comment(6, "two").await.expect("updated");
    assert_eq!(first, again);
    assert_eq!(
        d.with(|w| w.comments.iter().filter(|(n, _)| *n == 6).count()),
        1
    );
}

#[tokio::test]
async fn a_github_app_signs_in_with_an_installation_token() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = cfg(&d, "unused");
    c.credentials = Credentials::App {
        app_id: 7,
        private_key: Secret::from_file(&key).expect("key"),
    };
    let gh = GitHub::connect(&c, repo())
        .await
        .expect("installation token");
    assert_eq!(gh.git_token().expose(), INSTALL_TOKEN);
    gh.repository().await.expect("with the installation token");
    let calls = d.calls();
    let lines = d.lines();
    assert_eq!(lines[0], "GET /app");
    assert_eq!(lines[1], format!("GET /repos/{OWNER}/{NAME}/installation"));
    assert_eq!(lines[2], "POST /app/installations/42/access_tokens");
    assert!(
        calls[0]
            .auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer ey"))
    );
    assert_eq!(
        calls[3].auth.as_deref(),
        Some(format!("Bearer {INSTALL_TOKEN}").as_str())
    );
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    // Its comments are found as `<slug>[bot]`'s, without asking GET /user.
    let first = gh.sticky_comment(9, "one").await.expect("created");
    assert_eq!(gh.sticky_comment(9, "two").await.expect("updated"), first);
    assert!(!d.lines().iter().any(|l| l == "GET /user"));
}

#[tokio::test]
async fn a_push_touching_workflows_is_refused_like_github_does() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let git = Git::new(&dir.path().join("c"), Some(Secret::new(TOKEN)));
    git.clone(&format!("file://{}", d.bare.display()), "main")
        .await
        .expect("clone");
    std::fs::create_dir_all(git.dir.join(".github/workflows")).expect("mkdir");
    std::fs::write(git.dir.join(".github/workflows/ci.yml"), "on: push\n").expect("write");
    git.branch("cordon/x").await.expect("branch");
    let changed = git
        .commit(&[".github/workflows/ci.yml".into()], "ci")
        .await
        .expect("commit");
    assert_eq!(changed, [".github/workflows/ci.yml"]);
    let e = git.push("cordon/x").await.expect_err("refused");
    assert!(e.to_string().contains("workflows"), "{e}");
    assert_eq!(d.branches(), ["main"]);
    // The clone's configuration holds no credential.
    let config = std::fs::read_to_string(git.dir.join(".git/config")).expect("config");
    assert!(!config.contains(TOKEN), "{config}");
}

/// The scripted model: tests for `clamp` that cover every branch.
fn model() -> testgen_support::Script {
    Box::new(|_n, req| {
        let u = last_user(req);
        if u.contains("for the function `clamp`") {
            return Answer::chat(
                "```python\nfrom calc import clamp\n\ndef test_clamp_low():\n    assert clamp(-1, 0, 3) == 0\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n\ndef test_clamp_mid():\n    assert clamp(2, 0, 3) == 2\n```",
            );
        }
        Answer::chat("I cannot help with that.")
    })
}

fn opts() -> Options {
    Options {
        target_coverage: 100.0,
        max_iterations: 1,
        gaps_per_iteration: 3,
        repeats: 1,
        fix_attempts: 0,
        ..Options::default()
    }
}

struct Ran {
    delivered: Delivered,
    printed: String,
    report_json: String,
}

async fn flow(d: &GitHubDouble) -> Ran {
    run_flow(d, model(), tests_pr::On::DefaultBranch).await.ran
}

/// Flow 1 on `on` with the scripted `model`: what it delivered, printed and asked.
async fn run_flow(d: &GitHubDouble, model: testgen_support::Script, on: tests_pr::On) -> RanOn {
    let s = testgen_support::start(model).await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let progress: cordon::pipeline::Progress = Arc::new(move |l: &str| {
        eprintln!("{l}");
        l2.lock().expect("lock").push(l.to_string());
    });
    let r = tests_pr::run(
        &cfg(d, TOKEN),
        tests_pr::Target {
            repo: repo(),
            on,
            policy: &cordon::spec::OperatorPolicy::default(),
        },
        opts(),
        &llm,
        CancellationToken::new(),
        progress,
    )
    .await
    .expect("flow 1 runs");
    let asked = s
        .requests()
        .iter()
        .filter(|r| r.get("messages").is_some())
        .map(last_user)
        .collect();
    let printed = lines.lock().expect("lock").join("\n");
    RanOn {
        ran: Ran {
            delivered: r.delivered,
            printed,
            report_json: serde_json::to_string(&r.outcome.report).expect("json"),
        },
        asked,
        report: r.outcome.report,
    }
}

fn no_token_anywhere(d: &GitHubDouble, ran: &Ran) {
    assert!(!ran.printed.contains(TOKEN));
    assert!(!ran.report_json.contains(TOKEN));
    for c in d.calls() {
        assert!(
            !c.path.contains(TOKEN) && !c.body.to_string().contains(TOKEN),
            "{c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_tests_become_a_pull_request_promoted_to_ready() {
    let d = github_support::start(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]).await;
    let ran = flow(&d).await;
    let Delivered::PullRequest {
        number,
        branch,
        promotion,
        promoted,
        notes,
        ..
    } = &ran.delivered
    else {
        panic!("no pull request: {:?}", ran.delivered);
    };
    assert_eq!(*promotion, Promotion::Ready);
    assert!(*promoted, "{notes:?}");
    assert!(branch.starts_with("cordon/tests/"));
    assert!(d.branches().contains(branch), "{:?}", d.branches());
    let listed = github_support::git(&d.bare, &["ls-tree", "-r", "--name-only", branch]);
    let generated: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("tests/generated/"))
        .collect();
    assert_eq!(generated.len(), 1, "{listed}");
    let file = d.show(&format!("{branch}:{}", generated[0]));
    assert!(file.contains("def test_clamp_high"), "{file}");
    let lines = d.lines();
    let create = d
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/pulls"))
        .expect("opened");
    assert_eq!(create.body["draft"], true, "opened as a draft first");
    assert_eq!(create.body["base"], "main");
    let body = create.body["body"].as_str().expect("body");
    assert!(
        body.contains("| combined |") && body.contains("calc.py::clamp"),
        "{body}"
    );
    assert!(lines.iter().any(|l| l == "POST /graphql"), "{lines:?}");
    let pr = d.with(|w| w.pulls[0].clone());
    assert_eq!(pr["draft"], false);
    assert_eq!(pr["number"], *number);
    let comments = d.with(|w| w.comments.clone());
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].1["body"]
            .as_str()
            .expect("body")
            .contains("Marked ready")
    );
    assert_eq!(d.with(|w| w.check_runs[0]["conclusion"].clone()), "success");
    no_token_anywhere(&d, &ran);

    // A re-run updates the same pull request and the same comment.
    let again = flow(&d).await;
    assert!(matches!(again.delivered, Delivered::PullRequest { number: n, .. } if n == *number));
    assert_eq!(d.with(|w| (w.pulls.len(), w.comments.len())), (1, 1));
}

/// A re-run on the same commit that may not be promoted turns the pull request an earlier
/// run promoted back into a draft, as its comment says (here `.cordon.yml` protects the
/// generated tests' directory after the first run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_run_that_may_not_be_promoted_takes_the_promotion_back() {
    let d = github_support::start(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]).await;
    let first = flow(&d).await;
    assert!(
        matches!(
            first.delivered,
            Delivered::PullRequest { promoted: true, .. }
        ),
        "{:?}",
        first.delivered
    );
    d.with(|w| w.cordon_yml = Some("protected_paths: [\"tests/generated/**\"]\n".into()));
    let again = flow(&d).await;
    let Delivered::PullRequest {
        promotion,
        promoted,
        notes,
        ..
    } = &again.delivered
    else {
        panic!("no pull request: {:?}", again.delivered);
    };
    assert!(
        matches!(promotion, Promotion::Draft(w) if w.iter().any(|x| x.contains("tests/generated/**"))),
        "{promotion:?}"
    );
    assert!(!promoted);
    assert!(notes.is_empty(), "{notes:?}");
    d.assert_demoted();
    let comment = d.with(|w| w.comments[0].1["body"].as_str().expect("body").to_string());
    assert!(comment.contains("Left a draft"), "{comment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_combined_suite_leaves_a_draft_with_a_comment() {
    let d = github_support::start(&[
        ("calc.py", CALC),
        ("tests/test_calc.py", TEST_ADD),
        (
            "tests/test_broken.py",
            "def test_broken():\n    assert 1 == 2\n",
        ),
    ])
    .await;
    d.with(|w| w.checks_forbidden = true);
    let ran = flow(&d).await;
    let Delivered::PullRequest {
        promotion,
        promoted,
        notes,
        ..
    } = &ran.delivered
    else {
        panic!("no pull request: {:?}", ran.delivered);
    };
    assert!(
        matches!(promotion, Promotion::Draft(w) if w.iter().any(|x| x.contains("existing suite has 1 failing"))),
        "{promotion:?}"
    );
    assert!(!promoted);
    assert!(
        notes.iter().any(|n| n.contains("no check run")),
        "{notes:?}"
    );
    assert!(!d.lines().iter().any(|l| l == "POST /graphql"));
    assert_eq!(d.with(|w| w.pulls[0]["draft"].clone()), true);
    let comment = d.with(|w| w.comments[0].1["body"].as_str().expect("body").to_string());
    assert!(
        comment.starts_with(STICKY_MARKER)
            && comment.contains("Left a draft")
            && comment.contains("failing"),
        "{comment}"
    );
    no_token_anywhere(&d, &ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_when_the_sandbox_cannot_run_the_suite() {
    let d = github_support::start(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]).await;
    d.with(|w| w.cordon_yml = Some("image: cordon/no-such-image:0\n".into()));
    let ran = flow(&d).await;
    assert!(
        matches!(&ran.delivered, Delivered::NothingPushed(why) if why.contains("sandbox")),
        "{:?}",
        ran.delivered
    );
    assert_eq!(d.branches(), ["main"]);
    let lines = d.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("POST") || l.starts_with("PATCH")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/contents/.cordon.yml?ref=main")),
        "{lines:?}"
    );
    no_token_anywhere(&d, &ran);
}

fn cordon() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cordon"));
    c.env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_API_URL")
        .env("NO_COLOR", "1");
    c
}

#[tokio::test]
async fn an_image_outside_the_operators_policy_is_refused_before_cloning() {
    let d = github_support::start(&[("calc.py", CALC)]).await;
    d.with(|w| w.cordon_yml = Some("image: attacker/anything:latest\n".into()));
    let s = testgen_support::start(model()).await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let quiet: cordon::pipeline::Progress = Arc::new(|_: &str| {});
    let e = tests_pr::run(
        &cfg(&d, TOKEN),
        tests_pr::Target {
            repo: repo(),
            on: tests_pr::On::DefaultBranch,
            policy: &cordon::spec::OperatorPolicy::default(),
        },
        opts(),
        &llm,
        CancellationToken::new(),
        quiet,
    )
    .await
    .err()
    .expect("refused");
    assert!(
        e.to_string().contains(".cordon.yml: image") && e.to_string().contains("cordon/*"),
        "{e}"
    );
    assert!(s.requests().is_empty(), "the model was not asked");
    assert_eq!(d.branches(), ["main"]);
}

#[tokio::test]
async fn testgen_pr_refuses_a_bad_name_or_no_credentials_by_name() {
    let out = cordon()
        .args(["testgen", "not-a-repo", "--pr"])
        .env("GITHUB_TOKEN", "ghp_x")
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OWNER/NAME"), "{err}");
    let out = cordon()
        .args(["testgen", "octo/calc", "--pr"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GITHUB_TOKEN") && err.contains("GITHUB_APP_ID"),
        "{err}"
    );
}

/// `cordon testgen OWNER/NAME --pr` end to end: the pull request's URL on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testgen_pr_on_the_command_line_prints_the_pull_request() {
    let d = github_support::start(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]).await;
    let s = testgen_support::start(model()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = cordon()
        .args([
            "testgen",
            "octo/calc",
            "--pr",
            "--max-iterations",
            "1",
            "--repeats",
            "1",
        ])
        .args(["--model", "scripted", "--base-url", &s.base_url, "--report"])
        .arg(tmp.path().join("report"))
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &d.url)
        .env("OPENAI_API_KEY", "test-key")
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let url = String::from_utf8_lossy(&out.stdout);
    assert!(url.trim().ends_with("/octo/calc/pull/1"), "{url}");
    assert!(err.contains("ready for review"), "{err}");
    assert!(!err.contains(TOKEN));
    let report = std::fs::read_to_string(tmp.path().join("report/report.json")).expect("report");
    assert!(!report.contains(TOKEN));
}

// ---------------------------------------------------------------------------------------
// Flow 1 on a pull request: the gaps in the lines it changed; a fork's pull request; one
// with no coverable change.
// ---------------------------------------------------------------------------------------

/// `calc.py` on `main`: `add` (tested) and `clamp` (untested).
const CALC_MAIN: &str = "def add(a, b):\n    return a + b\n\n\ndef clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n";
/// The pull request's `calc.py`: `sign` added, `clamp` untouched.
const CALC_PR: &str = "def add(a, b):\n    return a + b\n\n\ndef clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n\n\ndef sign(x):\n    if x < 0:\n        return -1\n    if x > 0:\n        return 1\n    return 0\n";

/// The scripted model: tests for `sign` and for `clamp`, whichever it is asked for.
fn pr_model() -> testgen_support::Script {
    Box::new(|_n, req| {
        let u = last_user(req);
        if u.contains("for the function `sign`") {
            return Answer::chat(
                "```python\nfrom calc import sign\n\ndef test_sign():\n    assert sign(-5) == -1\n    assert sign(5) == 1\n    assert sign(0) == 0\n```",
            );
        }
        if u.contains("for the function `clamp`") {
            return Answer::chat(
                "```python\nfrom calc import clamp\n\ndef test_clamp():\n    assert clamp(-1, 0, 3) == 0\n    assert clamp(5, 0, 3) == 3\n```",
            );
        }
        Answer::chat("I cannot help with that.")
    })
}

struct RanOn {
    ran: Ran,
    asked: Vec<String>,
    report: cordon::pipeline::report::Report,
}

async fn flow_on_pull(d: &GitHubDouble, number: u64) -> RanOn {
    run_flow(d, pr_model(), tests_pr::On::PullRequest(number)).await
}

fn comment_on(d: &GitHubDouble, number: u64, marker: &str) -> Option<String> {
    d.with(|w| {
        w.comments
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, c)| c["body"].as_str().unwrap_or("").to_string())
            .find(|b| b.starts_with(marker))
    })
}

/// The lines a pull request changed, from the clone: renames count under the new path and
/// only for what they changed, deletions and removed lines not at all, paths with spaces and
/// non-ASCII letters as they are, a big file whole, and the base branch's own later commits
/// not at all (three dots: since the head left its base).
#[tokio::test]
async fn the_changed_lines_come_from_the_clone_whatever_the_paths() {
    let moved = "def a():\n    return 1\n\n\ndef b():\n    return 2\n\n\ndef c():\n    return 3\n";
    let d = github_support::start(&[
        ("pkg/old.py", moved),
        ("pkg/gone.py", "def g():\n    return 0\n"),
        ("pkg/a b.py", "def f():\n    return 1\n"),
        ("pkg/été.py", "def e():\n    return 1\n"),
        ("pkg/other.py", "def o():\n    return 1\n"),
        ("README.md", "# calc\n"),
    ])
    .await;
    let big: String = (0..100_000).map(|i| format!("X{i} = {i}\n")).collect();
    d.open_pull(
        1,
        "alice/calc",
        "patch-1",
        &[
            (
                "pkg/old.py->pkg/new.py",
                Some(&moved.replace("return 2", "return 22")),
            ),
            ("pkg/gone.py", None),
            ("pkg/a b.py", Some("def f():\n    return 2\n")),
            (
                "pkg/été.py",
                Some("def e():\n    return 1\n\n\ndef h():\n    return 2\n"),
            ),
            ("pkg/big.py", Some(&big)),
            ("README.md", Some("# calc, changed\n")),
        ],
    );
    // The base moves on after the pull request left it.
    d.commit_on(
        "main",
        &[("pkg/other.py", Some("def o():\n    return 2\n"))],
        &["refs/heads/main".to_string()],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let git = Git::new(&dir.path().join("c"), Some(Secret::new(TOKEN)));
    git.clone_pull(&format!("file://{}", d.bare.display()), "main", 1)
        .await
        .expect("fetched from the base repository");
    let lines = git
        .changed_lines("refs/remotes/origin/main", "HEAD")
        .await
        .expect("diff");
    assert_eq!(
        lines.files().collect::<Vec<_>>(),
        ["pkg/a b.py", "pkg/big.py", "pkg/new.py", "pkg/été.py"]
    );
    assert_eq!(lines.ranges("pkg/new.py"), [(6, 6)]);
    assert_eq!(lines.ranges("pkg/a b.py"), [(2, 2)]);
    assert_eq!(lines.ranges("pkg/été.py"), [(3, 6)]);
    assert_eq!(lines.ranges("pkg/big.py"), [(1, 100_000)]);
}

/// A pull request of the same repository: only the function it added is aimed at (the
/// untested function it did not touch is not), and the tests' pull request goes into its
/// branch, saying what the gaps were restricted to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_gets_tests_for_the_lines_it_changed_only() {
    let d =
        github_support::start(&[("calc.py", CALC_MAIN), ("tests/test_calc.py", TEST_ADD)]).await;
    d.open_pull(1, "octo/calc", "feature", &[("calc.py", Some(CALC_PR))]);
    let r = flow_on_pull(&d, 1).await;
    assert!(
        r.asked
            .iter()
            .any(|u| u.contains("for the function `sign`")),
        "{:?}",
        r.asked
    );
    assert!(
        !r.asked.iter().any(|u| u.contains("`clamp`")),
        "clamp is untested but this pull request did not touch it: {:?}",
        r.asked
    );
    let targets: Vec<&str> = r
        .report
        .candidates
        .iter()
        .map(|c| c.target.as_str())
        .collect();
    assert_eq!(targets, ["calc.py::sign"]);
    let Delivered::PullRequest { branch, .. } = &r.ran.delivered else {
        panic!("no pull request: {:?}", r.ran.delivered);
    };
    assert!(branch.starts_with("cordon/tests/pr-1-"), "{branch}");
    let create = d
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/pulls"))
        .expect("opened");
    assert_eq!(
        create.body["base"], "feature",
        "into the pull request's branch"
    );
    let body = create.body["body"].as_str().expect("body");
    assert!(
        body.contains("gaps restricted to the 8 lines this PR changed"),
        "{body}"
    );
    // On top of the pull request's head, which the tests' branch carries.
    let listed = github_support::git(&d.bare, &["ls-tree", "-r", "--name-only", branch]);
    assert!(listed.contains("tests/generated/"), "{listed}");
    assert!(d.show(&format!("{branch}:calc.py")).contains("def sign"));
    no_token_anywhere(&d, &r.ran);
}

/// A fork's pull request: its head comes from the base repository's `refs/pull/1/head`
/// (never the fork's URL), `.cordon.yml` from the default branch (the fork's own one, asking
/// for an image the operator does not allow, is ignored), nothing is pushed anywhere, and
/// the tests arrive as a patch in a comment that applies to the pull request's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forks_pull_request_gets_its_tests_as_a_patch_in_a_comment() {
    let d =
        github_support::start(&[("calc.py", CALC_MAIN), ("tests/test_calc.py", TEST_ADD)]).await;
    let head = d.open_pull(
        1,
        "mallory/calc",
        "main",
        &[
            ("calc.py", Some(CALC_PR)),
            (".cordon.yml", Some("image: attacker/anything:latest\n")),
        ],
    );
    let r = flow_on_pull(&d, 1).await;
    assert!(
        matches!(&r.ran.delivered, Delivered::NothingPushed(why) if why.contains("fork (mallory/calc)") && why.contains("patch")),
        "{:?}",
        r.ran.delivered
    );
    assert_eq!(d.branches(), ["main"], "nothing pushed");
    let lines = d.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("POST") && l.ends_with("/pulls")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/contents/.cordon.yml?ref=main")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("mallory")), "{lines:?}");
    // The check run is on the pull request's own head.
    assert_eq!(d.with(|w| w.check_runs[0]["head_sha"].clone()), json!(head));
    let comment = comment_on(&d, 1, tests_pr::PATCH_MARKER).expect("the patch comment");
    assert!(
        comment.contains("git am")
            && comment.contains("gaps restricted to the 8 lines this PR changed"),
        "{comment}"
    );
    // The patch applies to the pull request's head and adds the kept tests.
    let patch: String = comment
        .split("```diff\n")
        .nth(1)
        .and_then(|p| p.split("\n```").next())
        .expect("a patch")
        .to_string();
    assert!(patch.contains("def test_sign"), "{patch}");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path().join("w");
    github_support::git(
        work.path(),
        &[
            "clone",
            "--quiet",
            d.bare.to_str().expect("utf8"),
            w.to_str().expect("utf8"),
        ],
    );
    github_support::git(&w, &["fetch", "--quiet", "origin", "refs/pull/1/head"]);
    github_support::git(&w, &["checkout", "--quiet", "--detach", "FETCH_HEAD"]);
    std::fs::write(work.path().join("p.patch"), format!("{patch}\n")).expect("write");
    github_support::git(
        &w,
        &[
            "apply",
            "--check",
            work.path().join("p.patch").to_str().expect("utf8"),
        ],
    );
    // A second run updates the same comment.
    let _ = flow_on_pull(&d, 1).await;
    assert_eq!(
        d.with(|w| w
            .comments
            .iter()
            .filter(|(n, c)| *n == 1
                && c["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with(tests_pr::PATCH_MARKER)))
            .count()),
        1
    );
    no_token_anywhere(&d, &r.ran);
}

/// A pull request that changed no coverable line (a test, a comment, a module-level
/// constant, the README): a comment says so, the model is never asked, nothing runs and
/// nothing is opened.
#[tokio::test]
async fn a_pull_request_with_no_coverable_change_gets_a_comment_and_nothing_else() {
    let d = github_support::start(&[
        ("calc.py", CALC_MAIN),
        ("tests/test_calc.py", TEST_ADD),
        ("README.md", "# calc\n"),
    ])
    .await;
    let calc = CALC_MAIN.replace(
        "def add(a, b):\n",
        "LIMIT = 3\n\n\ndef add(a, b):\n    # adds\n",
    );
    d.open_pull(
        1,
        "octo/calc",
        "docs",
        &[
            ("calc.py", Some(&calc)),
            (
                "tests/test_calc.py",
                Some(&format!(
                    "{TEST_ADD}\n\ndef test_more():\n    assert add(2, 2) == 4\n"
                )),
            ),
            ("README.md", Some("# calc, documented\n")),
        ],
    );
    let r = flow_on_pull(&d, 1).await;
    assert!(
        matches!(&r.ran.delivered, Delivered::NothingPushed(why) if why.contains("none a test can cover")),
        "{:?}",
        r.ran.delivered
    );
    assert!(r.asked.is_empty(), "{:?}", r.asked);
    assert_eq!(r.report.sandbox_jobs, 0);
    let comment = comment_on(&d, 1, STICKY_MARKER).expect("a comment");
    assert!(comment.contains("no tests generated"), "{comment}");
    let lines = d.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("POST") && l.ends_with("/pulls")),
        "{lines:?}"
    );
    assert_eq!(d.branches(), ["docs", "main"]);
    // Only tests and the README changed: said as such.
    d.open_pull(
        2,
        "octo/calc",
        "tests-only",
        &[(
            "tests/test_calc.py",
            Some(&format!(
                "{TEST_ADD}\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
            )),
        )],
    );
    let r = flow_on_pull(&d, 2).await;
    assert!(
        matches!(&r.ran.delivered, Delivered::NothingPushed(why) if why.contains("no line of the project's Python source") && why.contains("1 Python file(s) that are tests")),
        "{:?}",
        r.ran.delivered
    );
    no_token_anywhere(&d, &r.ran);
}

/// `cordon testgen OWNER/NAME --pr --pull N`: flow 1 on pull request N from the command line
/// (here one that changed only a test: said, and nothing opened); `--pull` needs `--pr`.
#[tokio::test]
async fn testgen_pr_pull_runs_on_a_pull_request() {
    let d =
        github_support::start(&[("calc.py", CALC_MAIN), ("tests/test_calc.py", TEST_ADD)]).await;
    d.open_pull(
        1,
        "octo/calc",
        "more-tests",
        &[(
            "tests/test_calc.py",
            Some(&format!(
                "{TEST_ADD}\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
            )),
        )],
    );
    let s = testgen_support::start(pr_model()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = cordon()
        .args(["testgen", "octo/calc", "--pr", "--pull", "1"])
        .args(["--model", "scripted", "--base-url", &s.base_url, "--report"])
        .arg(tmp.path().join("report"))
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &d.url)
        .env("OPENAI_API_KEY", "test-key")
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "no pull request: pull request #1 changed no line of the project's Python source"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(comment_on(&d, 1, STICKY_MARKER).is_some_and(|c| c.contains("no tests generated")));
    let out = cordon()
        .args(["testgen", "octo/calc", "--pull", "1"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pr"));
}

/// A pull request whose fork was deleted since (`"repo": null`) is still a fork's: its head
/// is read from `refs/pull/<n>/head` like any other.
#[tokio::test]
async fn a_deleted_forks_pull_request_is_still_a_forks() {
    let d = github_support::start(&[("calc.py", CALC_MAIN)]).await;
    d.open_pull(1, "gone/calc", "patch", &[("calc.py", Some(CALC_PR))]);
    d.with(|w| w.pulls[0]["head"]["repo"] = serde_json::Value::Null);
    let head = connect(&d).await.pull_head(1).await.expect("read");
    assert_eq!(head.repo, cordon::github::pulls::DELETED_FORK);
    assert_eq!(
        (head.branch.as_str(), head.base.as_str()),
        ("patch", "main")
    );
}

/// A pull request whose changed lines all run in the existing tests already: after the
/// baseline, a comment says so; no test is asked for and nothing is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_already_covered_gets_a_comment_and_nothing_else() {
    let d =
        github_support::start(&[("calc.py", CALC_MAIN), ("tests/test_calc.py", TEST_ADD)]).await;
    d.open_pull(
        1,
        "octo/calc",
        "swap",
        &[(
            "calc.py",
            Some(&CALC_MAIN.replace("return a + b", "return b + a")),
        )],
    );
    let r = flow_on_pull(&d, 1).await;
    assert!(
        matches!(&r.ran.delivered, Delivered::NothingPushed(why) if why.contains("already runs in the existing tests")),
        "{:?}",
        r.ran.delivered
    );
    assert!(r.asked.is_empty(), "{:?}", r.asked);
    assert!(r.report.baseline.is_some());
    let comment = comment_on(&d, 1, STICKY_MARKER).expect("a comment");
    assert!(comment.contains("no tests generated"), "{comment}");
    assert_eq!(d.branches(), ["main", "swap"]);
}
