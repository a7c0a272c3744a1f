//! Flow 2, the builder, end to end against the GitHub double (tests/github_support) with the
//! scripted model and the real sandbox: promoted on green; a refine round that asks only for
//! the failing file with only the latest failure; a draft with the last failure on the issue
//! after the last round; a draft when a protected path is proposed (never written); nothing
//! pushed when the sandbox cannot start; the webhook's issue trigger; the command line.

mod github_support;
mod hook_support;
mod server_support;
mod testgen_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon::github::Secret;
use cordon::github::builder::{self, Build, Delivered, Promotion};
use cordon::github::client::{Credentials, GitHubConfig, RepoName};
use cordon::github::pulls::STICKY_MARKER;
use cordon::pipeline::llm::Llm;
use github_support::{GitHubDouble, NAME, OWNER, TOKEN};
use serde_json::{Value, json};
use testgen_support::{Answer, Script, last_user, llm_config};
use tokio_util::sync::CancellationToken;

const CALC: &str = "def add(a, b):\n    return a + b\n";
const TEST_ADD: &str = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n";
const ISSUE: u64 = 7;

const ANALYSIS: &str = "FILES:\n- calc.py\n- tests/test_mul.py\nACCEPTANCE:\n- mul(2, 3) == 6\n";
const CALC_MUL: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";

/// An answer holding whole files, as the prompt asks.
fn files(fs: &[(&str, &str)]) -> String {
    fs.iter()
        .map(|(p, c)| format!("### {p}\n```python\n{c}```\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn test_mul(expected: u32) -> String {
    format!("from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == {expected}\n")
}

/// Answers the analysis, the code and (with `refine`) the refine prompts.
fn model(code: String, refine: fn(&str) -> String) -> Script {
    Box::new(move |_n, req| {
        let u = last_user(req);
        if u.contains("Which files must change") {
            Answer::chat(ANALYSIS)
        } else if u.contains("Write the change") {
            Answer::chat(&code)
        } else if u.contains("The failure points at") {
            Answer::chat(&refine(&u))
        } else {
            Answer::chat("I cannot help with that.")
        }
    })
}

fn never(_: &str) -> String {
    "no".into()
}

fn cfg(d: &GitHubDouble) -> GitHubConfig {
    let mut c = GitHubConfig::new(Some(d.url.clone()), Credentials::Token(Secret::new(TOKEN)));
    c.backoff = Duration::from_millis(10);
    c
}

async fn double(cordon_yml: Option<&str>) -> GitHubDouble {
    let d = github_support::start(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]).await;
    d.issue(
        ISSUE,
        "Add mul",
        "calc needs a `mul(a, b)` that multiplies.",
    );
    d.with(|w| w.cordon_yml = cordon_yml.map(str::to_string));
    d
}

struct Ran {
    build: Build,
    printed: String,
    requests: Vec<Value>,
}

async fn build(d: &GitHubDouble, script: Script) -> Ran {
    let s = testgen_support::start(script).await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let printed: Arc<Mutex<String>> = Arc::default();
    let p2 = printed.clone();
    let progress: cordon::pipeline::Progress =
        Arc::new(move |l: &str| p2.lock().expect("lock").push_str(&format!("{l}\n")));
    let req = builder::Request {
        repo: RepoName::parse(&format!("{OWNER}/{NAME}")).expect("name"),
        issue: ISSUE,
        policy: &cordon::spec::OperatorPolicy::default(),
        warm_pool: 1,
        timeout: Duration::from_secs(120),
        trigger: None,
    };
    let build = builder::run(&cfg(d), req, &llm, CancellationToken::new(), progress)
        .await
        .expect("the builder runs");
    let printed = printed.lock().expect("lock").clone();
    eprintln!("{printed}");
    Ran {
        build,
        printed,
        requests: s.requests(),
    }
}

/// The issue's comments (its number is the issue's).
fn issue_comments(d: &GitHubDouble) -> Vec<String> {
    d.with(|w| {
        w.comments
            .iter()
            .filter(|(n, _)| *n == ISSUE)
            .map(|(_, c)| c["body"].as_str().unwrap_or("").to_string())
            .collect()
    })
}

fn no_token_anywhere(d: &GitHubDouble, ran: &Ran) {
    assert!(!ran.printed.contains(TOKEN));
    assert!(!format!("{:?}", ran.build).contains(TOKEN));
    for r in &ran.requests {
        assert!(!r.to_string().contains(TOKEN));
    }
    for c in d.calls() {
        assert!(
            !c.path.contains(TOKEN) && !c.body.to_string().contains(TOKEN),
            "{c:?}"
        );
    }
}

/// Why the build's pull request was left a draft (it must be one).
fn draft_reasons(b: &Build) -> Vec<String> {
    match &b.delivered {
        Delivered::PullRequest {
            promotion: Promotion::Draft(why),
            promoted: false,
            ..
        } => why.clone(),
        other => panic!("not a draft pull request: {other:?}"),
    }
}

fn opened(d: &GitHubDouble) -> Option<github_support::Call> {
    d.calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/pulls"))
}

/// A test the model "writes" that fails if the sandbox can see the GitHub token (in its
/// environment or any file of the workspace) or the clone's `.git`.
const NO_TOKEN_INSIDE: &str = "import os\nimport pathlib\n\n\ndef test_no_token_in_the_sandbox():\n    token = \"ghp_\" + \"doubletoken0123456789\"\n    assert not any(token in v for v in os.environ.values())\n    assert not pathlib.Path(\"/workspace/.git\").exists()\n    for p in pathlib.Path(\"/workspace\").rglob(\"*\"):\n        if p.is_file():\n            assert token not in p.read_text(errors=\"ignore\"), p\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_suite_is_a_pull_request_promoted_to_ready() {
    let d = double(None).await;
    let code = files(&[
        ("calc.py", CALC_MUL),
        ("tests/test_mul.py", &test_mul(6)),
        ("tests/test_sandbox.py", NO_TOKEN_INSIDE),
    ]);
    let ran = build(&d, model(code, never)).await;
    let Delivered::PullRequest {
        branch,
        promotion,
        promoted,
        url,
        ..
    } = &ran.build.delivered
    else {
        panic!("no pull request: {:?}", ran.build);
    };
    assert_eq!(*promotion, Promotion::Ready);
    assert!(*promoted);
    assert_eq!(branch, "cordon/issue-7");
    assert!(d.show("cordon/issue-7:calc.py").contains("def mul"));
    assert!(d.show("cordon/issue-7:tests/test_mul.py").contains("== 6"));
    let last = ran.build.last.as_ref().expect("the suite ran");
    assert_eq!((last.runs, last.run.passed), (1, 3));
    let create = opened(&d).expect("opened");
    assert_eq!(create.body["draft"], true, "opened as a draft first");
    assert_eq!(create.body["base"], "main");
    assert_eq!(create.body["head"], "cordon/issue-7");
    let body = create.body["body"].as_str().unwrap_or("");
    assert!(body.starts_with("Fixes #7"), "{body}");
    assert!(d.lines().iter().any(|l| l == "POST /graphql"));
    assert_eq!(d.with(|w| w.pulls[0]["draft"].clone()), false);
    let comments = issue_comments(&d);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].starts_with(STICKY_MARKER)
            && comments[0].contains(url.as_str())
            && comments[0].contains("ready for review"),
        "{}",
        comments[0]
    );
    assert_eq!(ran.requests.len(), 2, "the analysis and the code");
    no_token_anywhere(&d, &ran);
}

/// A re-run updates the same pull request and the same comment; a red one turns the pull
/// request an earlier run promoted back into a draft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_re_run_takes_the_promotion_back() {
    let d = double(Some("max_refine_rounds: 1\n")).await;
    let code = |n| files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(n))]);
    let first = build(&d, model(code(6), never)).await;
    assert!(first.build.promoted(), "{:?}", first.build);
    let again = build(
        &d,
        model(code(5), |_| files(&[("tests/test_mul.py", &test_mul(4))])),
    )
    .await;
    assert_eq!(again.build.url(), first.build.url());
    assert!(!draft_reasons(&again.build).is_empty());
    d.assert_demoted();
    let comments = issue_comments(&d);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("Left a draft"), "{}", comments[0]);
    assert!(d.show("cordon/issue-7:tests/test_mul.py").contains("== 4"));
}

/// The first answer's test expects 5, the refine round's 7, the last one's 6.
fn fix_the_test(prompt: &str) -> String {
    if prompt.contains("== 5") {
        // Also a file it was not asked for, which must not be written.
        files(&[
            ("tests/test_mul.py", &test_mul(7)),
            ("calc.py", "def mul(a, b):\n    raise SystemExit\n"),
        ])
    } else {
        files(&[("tests/test_mul.py", &test_mul(6))])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refine_round_asks_only_for_the_failing_file_with_the_latest_failure() {
    let d = double(Some("max_refine_rounds: 3\n")).await;
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(5))]);
    let ran = build(&d, model(code, fix_the_test)).await;
    assert!(
        matches!(
            &ran.build.delivered,
            Delivered::PullRequest { promoted: true, .. }
        ),
        "{:?}",
        ran.build
    );
    assert_eq!(ran.build.last.as_ref().map(|l| l.runs), Some(3));
    let prompts: Vec<String> = ran.requests.iter().map(last_user).collect();
    assert_eq!(prompts.len(), 4, "analysis, code, two refine rounds");
    // The first refine round: the failing test file only, and its failure.
    assert!(
        prompts[2].contains("### tests/test_mul.py"),
        "{}",
        prompts[2]
    );
    assert!(!prompts[2].contains("### calc.py"), "{}", prompts[2]);
    assert!(prompts[2].contains("assert 6 == 5"), "{}", prompts[2]);
    // The second: only the latest failure, not the first one.
    assert!(prompts[3].contains("assert 6 == 7"), "{}", prompts[3]);
    assert!(!prompts[3].contains("== 5"), "{}", prompts[3]);
    // The file it was not asked for was not written.
    assert_eq!(d.show("cordon/issue-7:calc.py"), CALC_MUL);
    assert!(d.show("cordon/issue-7:tests/test_mul.py").contains("== 6"));
    no_token_anywhere(&d, &ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_after_the_last_round_is_a_draft_with_the_failure_on_the_issue() {
    let d = double(Some("max_refine_rounds: 1\n")).await;
    d.with(|w| w.checks_forbidden = true);
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(5))]);
    let ran = build(
        &d,
        model(code, |_| files(&[("tests/test_mul.py", &test_mul(8))])),
    )
    .await;
    let why = draft_reasons(&ran.build);
    assert!(
        why.iter().any(|x| x.contains("1 test(s) failed")),
        "{why:?}"
    );
    let last = ran.build.last.clone().expect("the suite ran");
    assert_eq!(last.runs, 2, "the first run and one refine round");
    assert!(!d.lines().iter().any(|l| l == "POST /graphql"));
    assert_eq!(d.with(|w| w.pulls[0]["draft"].clone()), true);
    let job = last.job;
    let comments = issue_comments(&d);
    assert_eq!(comments.len(), 1);
    let c = &comments[0];
    assert!(
        c.contains("Left a draft")
            && c.contains("The last failure")
            && c.contains("assert 6 == 8")
            && c.contains(&format!("job `{job}`")),
        "{c}"
    );
    assert!(!c.contains("== 5"), "only the last failure: {c}");
    no_token_anywhere(&d, &ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_path_is_never_written_and_keeps_the_pull_request_a_draft() {
    let d = double(None).await;
    let code = files(&[
        ("calc.py", CALC_MUL),
        ("tests/test_mul.py", &test_mul(6)),
        (".github/workflows/ci.yml", "on: push\n"),
        ("../outside.py", "x = 1\n"),
    ]);
    let ran = build(&d, model(code, never)).await;
    let why = draft_reasons(&ran.build);
    assert!(
        why.iter()
            .any(|w| w.contains(".github/workflows/ci.yml") && w.contains("never promoted")),
        "{why:?}"
    );
    assert!(why.iter().any(|w| w.contains("../outside.py")), "{why:?}");
    let tree = github_support::git(&d.bare, &["ls-tree", "-r", "--name-only", "cordon/issue-7"]);
    assert!(!tree.contains(".github"), "{tree}");
    assert!(!d.lines().iter().any(|l| l == "POST /graphql"));
    let comments = issue_comments(&d);
    assert!(comments[0].contains("Left a draft"), "{}", comments[0]);
}

/// A model that makes the suite green by rewriting an existing test file without its tests
/// (the real model did so on boltons, replacing `tests/test_typeutils.py`'s three tests
/// with one of its own): a draft naming the tests it removed, never promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_removes_existing_tests_stays_a_draft() {
    let d = double(None).await;
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_calc.py", &test_mul(6))]);
    let ran = build(&d, model(code, never)).await;
    let last = ran.build.last.as_ref().expect("the suite ran");
    assert_eq!((last.run.passed, last.run.failed), (1, 0), "green");
    let why = draft_reasons(&ran.build);
    assert!(
        why.iter().any(|w| w.contains("removes 1 existing test(s)")
            && w.contains("tests/test_calc.py::test_add")),
        "{why:?}"
    );
    assert!(!d.lines().iter().any(|l| l == "POST /graphql"));
    assert_eq!(d.with(|w| w.pulls[0]["draft"].clone()), true);
    let comments = issue_comments(&d);
    assert!(
        comments[0].contains("Left a draft") && comments[0].contains("test_add"),
        "{}",
        comments[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_when_the_sandbox_cannot_start() {
    // An image the operator does not allow: refused before the model is asked.
    let d = double(Some("image: attacker/anything:latest\n")).await;
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(6))]);
    let ran = build(&d, model(code.clone(), never)).await;
    assert!(
        matches!(&ran.build.delivered, Delivered::NothingPushed(w) if w.contains("allowed images")),
        "{:?}",
        ran.build
    );
    assert!(ran.requests.is_empty(), "the model was not asked");
    assert_eq!(d.branches(), ["main"]);
    assert!(opened(&d).is_none());
    assert!(issue_comments(&d)[0].contains("nothing pushed"));

    // An image that does not exist: the suite never runs.
    let d = double(Some("image: cordon/no-such-image:0\n")).await;
    let ran = build(&d, model(code, never)).await;
    assert!(
        matches!(&ran.build.delivered, Delivered::NothingPushed(w) if w.contains("sandbox")),
        "{:?}",
        ran.build
    );
    assert_eq!(d.branches(), ["main"]);
    assert!(opened(&d).is_none());
    let c = &issue_comments(&d)[0];
    assert!(
        c.contains("nothing pushed") && c.contains("no-such-image"),
        "{c}"
    );
    no_token_anywhere(&d, &ran);
}

/// Answers that bring no change end with a comment saying why, and nothing pushed: an
/// analysis naming no file (not a panic), and files the same as the default branch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_a_change_are_a_comment_and_no_push() {
    let unreadable: Script = Box::new(|_n, _req| Answer::chat("Let us refactor everything."));
    let same = files(&[("calc.py", CALC), ("tests/test_calc.py", TEST_ADD)]);
    for (script, why) in [
        (unreadable, "named no file"),
        (model(same, never), "no change"),
    ] {
        let d = double(None).await;
        let ran = build(&d, script).await;
        assert!(
            matches!(&ran.build.delivered, Delivered::NothingPushed(w) if w.contains(why)),
            "{:?}",
            ran.build
        );
        assert_eq!(d.branches(), ["main"]);
        assert!(issue_comments(&d)[0].contains(why));
    }
}

/// The owner labels issue #7 `cordon`: the service builds it and says so on the issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labeled_issue_is_built_by_the_service() {
    let d = double(None).await;
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(6))]);
    let m = testgen_support::start(model(code, never)).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let s = hook_support::start_on(
        tmp.path(),
        &d.url,
        &[
            ("OPENAI_BASE_URL", m.base_url.as_str()),
            ("OPENAI_MODEL", "scripted"),
            ("OPENAI_API_KEY", "test-key"),
        ],
    );
    let body = json!({
        "action": "labeled",
        "repository": {"full_name": "octo/calc"},
        "issue": {"number": ISSUE, "author_association": "OWNER"},
        "label": {"name": "cordon"},
        "sender": {"login": "ann"}
    })
    .to_string()
    .into_bytes();
    let sig = Some(hook_support::sign(&body));
    let (st, v) = hook_support::deliver(&s, "issues", "9", "issue-run-1", &body, sig).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["work"]["kind"], "build_issue");
    let done = hook_support::finished(tmp.path()).await;
    assert_eq!(done.len(), 1, "never finished: {}", s.log());
    assert_eq!(done[0].state, "done", "{:?}\n{}", done[0].reason, s.log());
    assert_eq!(
        opened(&d).expect("a pull request").body["head"],
        "cordon/issue-7"
    );
    // One comment on the issue: the builder's, naming the delivery (the worker adds none).
    let comments = issue_comments(&d);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].contains("/octo/calc/pull/1") && comments[0].contains("issue-run-1"),
        "{}",
        comments[0]
    );
    assert!(!s.log().contains(TOKEN));
}

/// `cordon build ARGS` with only `env` of the GitHub settings: its exit status, stdout and
/// stderr.
async fn cordon_build(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
        .arg("build")
        .args(args)
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_API_URL")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `cordon build OWNER/NAME --issue N`: the pull request's URL on stdout, 0 when promoted;
/// a bad name or no credentials are refused by name with 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_on_the_command_line_prints_the_pull_request() {
    let (code, _, err) =
        cordon_build(&["not-a-repo", "--issue", "7"], &[("GITHUB_TOKEN", "x")]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("OWNER/NAME"), "{err}");
    let (code, _, err) = cordon_build(&["octo/calc", "--issue", "7"], &[]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("GITHUB_TOKEN"), "{err}");

    let d = double(None).await;
    let code = files(&[("calc.py", CALC_MUL), ("tests/test_mul.py", &test_mul(6))]);
    let m = testgen_support::start(model(code, never)).await;
    let (code, url, err) = cordon_build(
        &[
            "octo/calc",
            "--issue",
            "7",
            "--model",
            "scripted",
            "--base-url",
            &m.base_url,
        ],
        &[
            ("GITHUB_TOKEN", TOKEN),
            ("GITHUB_API_URL", &d.url),
            ("OPENAI_API_KEY", "test-key"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(url.trim().ends_with("/octo/calc/pull/1"), "{url}");
    assert!(err.contains("ready for review"), "{err}");
    assert!(!err.contains(TOKEN));
}
