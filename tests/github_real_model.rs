//! Opt-in runs of both GitHub flows with a real model (not part of the default suite):
//!
//!   ../shared/llm/local-model.sh start
//!   cargo test --test github_real_model -- --ignored --nocapture --test-threads 1
//!
//! The project is a real one: `boltons/typeutils.py` of boltons 26.2.0 and its own tests
//! (tests/fixtures/boltons-typeutils, where its README says why), in the GitHub double's
//! repository (tests/github_support). Flow 1 runs on the default branch and on a pull request
//! that adds a function; flow 2, the builder, on an issue asking for a small option. The
//! model is the one of `OPENAI_BASE_URL` / `OPENAI_MODEL` / `OPENAI_API_KEY`, else the local
//! one. Each test prints what happened and asserts only what must hold whatever the model
//! writes: the run completes, the project's code never runs on the host, the token is
//! nowhere it should not be, the pull request is marked ready exactly when the sandbox's
//! verdict allows it (the report against the double's GraphQL calls), and there is a draft
//! or nothing was pushed, with a reason.

mod github_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cordon::github::Secret;
use cordon::github::builder::{self, Build};
use cordon::github::client::{Credentials, GitHubConfig, RepoName};
use cordon::github::tests_pr::{self, Delivered, Promotion};
use cordon::pipeline::Options;
use cordon::pipeline::llm::{Llm, LlmConfig};
use github_support::{GitHubDouble, NAME, OWNER, TOKEN};
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = "tests/fixtures/boltons-typeutils";

/// The project's files as they are in boltons' sdist, plus the canary (see [`canary`]).
fn project(canary: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = [
        "LICENSE",
        "boltons/__init__.py",
        "boltons/typeutils.py",
        "tests/__init__.py",
        "tests/test_typeutils.py",
    ]
    .iter()
    .map(|p| {
        let text = std::fs::read_to_string(Path::new(FIXTURE).join(p)).expect("fixture");
        (p.to_string(), text)
    })
    .collect();
    files.push(("tests/conftest.py".into(), conftest(canary)));
    files
}

/// A `conftest.py` that, whenever pytest loads it, appends a line to `canary` — a path in
/// this test's temporary directory on the host, which does not exist inside a sandbox (the
/// write fails there and is ignored). The file appearing would mean the project's tests
/// ran on the host.
fn conftest(canary: &Path) -> String {
    format!(
        "# Not boltons': cordon's real-model test checks with this file that the suite only\n# ever runs inside cordon's sandbox (there, this path does not exist).\nimport os\n\ntry:\n    with open({:?}, \"a\") as f:\n        f.write(str(os.getpid()) + \"\\n\")\nexcept OSError:\n    pass\n",
        canary.display().to_string()
    )
}

async fn double(canary: &Path) -> GitHubDouble {
    let files = project(canary);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    github_support::start(&refs).await
}

fn cfg(d: &GitHubDouble) -> GitHubConfig {
    let mut c = GitHubConfig::new(Some(d.url.clone()), Credentials::Token(Secret::new(TOKEN)));
    c.backoff = Duration::from_millis(200);
    c
}

fn repo() -> RepoName {
    RepoName::parse(&format!("{OWNER}/{NAME}")).expect("name")
}

/// The model client, after asking the endpoint whether it is there.
async fn llm() -> Llm {
    let llm = Llm::new(LlmConfig::from_env(None, None)).expect("client");
    if let Err(e) = llm.probe().await {
        panic!("no model to run against: {e}");
    }
    eprintln!(
        "model: {} at {} (answers up to {} tokens)",
        llm.config.model, llm.config.base_url, llm.config.max_tokens
    );
    llm
}

/// Progress lines, printed as they come with the seconds since the start, and kept.
fn progress(started: Instant) -> (cordon::pipeline::Progress, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let p: cordon::pipeline::Progress = Arc::new(move |l: &str| {
        let line = format!("[{:>5.0}s] {l}", started.elapsed().as_secs_f64());
        eprintln!("{line}");
        l2.lock().expect("lock").push(line);
    });
    (p, lines)
}

/// The settings of flow 1's runs: what `cordon testgen --pr` does, kept to about ten
/// minutes of a 1.5B model on two cores (no new gap after 8 minutes).
fn opts() -> Options {
    Options {
        target_coverage: 100.0,
        max_iterations: 2,
        gaps_per_iteration: 3,
        fix_attempts: 1,
        time_budget: Some(Duration::from_secs(480)),
        ..Options::default()
    }
}

/// Every place the token must not be: the double's recorded request paths and bodies
/// (the `Authorization` header is where it belongs), everything pushed to the bare
/// repository (every object of every ref), the progress lines and `extra` (reports, the
/// files the model wrote). What was searched, for the printout.
fn no_token_anywhere(d: &GitHubDouble, printed: &[String], extra: &[String]) -> String {
    let calls = d.calls();
    for c in &calls {
        assert!(
            !c.path.contains(TOKEN) && !c.body.to_string().contains(TOKEN),
            "the token in a request: {c:?}"
        );
    }
    let pushed = github_support::git(&d.bare, &["log", "--all", "-p", "--format=%H%n%B"]);
    assert!(!pushed.contains(TOKEN), "the token in a pushed commit");
    let config = std::fs::read_to_string(d.bare.join("config")).unwrap_or_default();
    assert!(!config.contains(TOKEN));
    for l in printed {
        assert!(!l.contains(TOKEN), "the token in a progress line: {l}");
    }
    for e in extra {
        assert!(!e.contains(TOKEN), "the token in what the run returned");
    }
    format!(
        "token: not found in {} request paths and bodies, {} bytes of pushed history (`git log --all -p`), {} progress lines, {} reports/files",
        calls.len(),
        pushed.len(),
        printed.len(),
        extra.len()
    )
}

/// The GraphQL mutations the double received, by name.
fn mutations(d: &GitHubDouble) -> Vec<&'static str> {
    d.calls()
        .iter()
        .filter(|c| c.path == "/graphql")
        .filter_map(|c| {
            let q = c.body["query"].as_str().unwrap_or("");
            if q.contains("markPullRequestReadyForReview") {
                Some("markPullRequestReadyForReview")
            } else if q.contains("convertPullRequestToDraft") {
                Some("convertPullRequestToDraft")
            } else {
                None
            }
        })
        .collect()
}

/// Every comment the double holds, by issue or pull request number.
fn comments(d: &GitHubDouble) -> Vec<(u64, String)> {
    d.with(|w| {
        w.comments
            .iter()
            .map(|(n, c)| (*n, c["body"].as_str().unwrap_or("").to_string()))
            .collect()
    })
}

fn opened_pulls(d: &GitHubDouble) -> usize {
    d.calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/pulls"))
        .count()
}

/// The pull request `number`'s draft flag as the double holds it.
fn is_draft(d: &GitHubDouble, number: u64) -> bool {
    d.with(|w| {
        w.pulls
            .iter()
            .find(|p| p["number"] == number)
            .map(|p| p["draft"].as_bool().unwrap_or(true))
            .expect("the pull request is in the double")
    })
}

/// What must hold of a delivery whatever the model wrote: a pull request (opened as a
/// draft, its branch pushed) marked ready only when `sandbox_green` (the sandbox's own
/// verdict, recomputed by the caller from what the run returned), by exactly one GraphQL
/// call, and a draft otherwise; or nothing pushed, with a reason, and no pull request.
fn check_delivery(
    d: &GitHubDouble,
    delivered: &Delivered,
    sandbox_green: bool,
    branches_before: &[String],
) {
    match delivered {
        Delivered::PullRequest {
            number,
            branch,
            promotion,
            promoted,
            ..
        } => {
            assert!(d.branches().contains(branch), "{branch} was pushed");
            assert_eq!(
                *promoted,
                *promotion == Promotion::Ready,
                "promoted iff the verdict is Ready ({promotion:?})"
            );
            if *promoted {
                assert!(sandbox_green, "promoted without the sandbox's green");
            }
            let graphql = mutations(d);
            if *promoted {
                assert_eq!(graphql, ["markPullRequestReadyForReview"]);
                assert!(!is_draft(d, *number));
            } else {
                assert!(graphql.is_empty(), "{graphql:?}");
                assert!(is_draft(d, *number), "a draft stays a draft");
            }
            let create = d
                .calls()
                .into_iter()
                .find(|c| c.method == "POST" && c.path.ends_with("/pulls"))
                .expect("opened");
            assert_eq!(create.body["draft"], true, "opened as a draft first");
        }
        Delivered::NothingPushed(why) => {
            assert!(!why.trim().is_empty(), "a reason");
            assert_eq!(opened_pulls(d), 0);
            assert!(mutations(d).is_empty());
            assert_eq!(d.branches(), branches_before, "nothing pushed");
        }
    }
}

/// The test functions a Python file defines, as pytest collects them (`TestK::test_x` too).
fn test_names(source: &str) -> Vec<String> {
    cordon::pipeline::python::parse(source)
        .map(|p| p.test_functions().into_iter().map(|t| t.node_id).collect())
        .unwrap_or_default()
}

/// `s` on one line, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    t.chars().take(max).collect()
}

fn describe(delivered: &Delivered, d: &GitHubDouble) -> String {
    match delivered {
        Delivered::PullRequest {
            number,
            branch,
            promotion,
            promoted,
            notes,
            ..
        } => format!(
            "pull request #{number} from {branch}: {} (promoted: {promoted}; GraphQL: {:?}); verdict {promotion:?}; notes {notes:?}",
            if is_draft(d, *number) {
                "draft"
            } else {
                "ready for review"
            },
            mutations(d),
        ),
        Delivered::NothingPushed(why) => format!("nothing pushed: {why}"),
    }
}

/// Flow 1 on `on`; prints and checks what happened.
async fn flow1(d: &GitHubDouble, on: tests_pr::On, canary: &Path) {
    let started = Instant::now();
    let llm = llm().await;
    let (p, lines) = progress(started);
    let branches_before = d.branches();
    let r = tests_pr::run(
        &cfg(d),
        tests_pr::Target {
            repo: repo(),
            on,
            policy: &cordon::spec::OperatorPolicy::default(),
        },
        opts(),
        &llm,
        CancellationToken::new(),
        p,
    )
    .await
    .expect("flow 1 runs to the end");
    let elapsed = started.elapsed();
    let report = &r.outcome.report;
    eprintln!("\n===== report =====\n{}", report.markdown());
    // Why each candidate that kept nothing was discarded: its tests' verdicts.
    for c in report.candidates.iter().filter(|c| c.status != "kept") {
        eprintln!("--- discarded {} ({}): {}", c.target, c.file, c.reason);
        for t in &c.discarded_tests {
            eprintln!("    {}: {}", t.test, one_line(&t.reason, 300));
        }
    }
    eprintln!("===== kept test files: {} =====", r.outcome.kept.len());
    for (name, content) in &r.outcome.kept {
        eprintln!("--- {name}\n{content}");
    }
    eprintln!("===== comments =====");
    for (n, c) in comments(d) {
        eprintln!("--- on #{n}\n{c}");
    }
    let u = llm.usage();
    eprintln!(
        "===== delivered: {} =====\nstatus {}; kept {} of {} candidates; coverage {} → {}; sandbox jobs {}; model requests {} ({} prompt + {} completion tokens, {} cut off, {:.0} s waiting for the model); wall time {:.0} s",
        describe(&r.delivered, d),
        report.status,
        report.kept(),
        report.candidates.len(),
        report.baseline.as_ref().map_or("-".into(), |b| format!(
            "{:.1}%",
            b.coverage.combined_percent()
        )),
        report.after.as_ref().map_or("-".into(), |a| format!(
            "{:.1}%",
            a.coverage.combined_percent()
        )),
        report.sandbox_jobs,
        u.requests,
        u.prompt_tokens,
        u.completion_tokens,
        u.truncated_answers,
        u.model_ms as f64 / 1000.0,
        elapsed.as_secs_f64(),
    );

    assert_ne!(report.status, "failed", "{:?}", report.error);
    assert!(!canary.exists(), "the project's tests ran on the host");
    // The sandbox's own verdict, from the report: the combined suite had no failing test
    // (the existing suite's included) and coverage rose.
    let green_and_rose = match (&report.baseline, &report.after) {
        (Some(b), Some(a)) => {
            a.failed == 0
                && b.failed == 0
                && a.quarantined.is_empty()
                && a.coverage.combined_percent() > b.coverage.combined_percent()
        }
        _ => false,
    };
    if let Delivered::PullRequest { .. } = &r.delivered {
        assert!(
            report.after.is_some(),
            "a pull request only after the combined run"
        );
        assert!(!r.outcome.kept.is_empty());
    }
    check_delivery(d, &r.delivered, green_and_rose, &branches_before);
    if let Delivered::PullRequest { promoted, .. } = &r.delivered {
        // Nothing else keeps flow 1's pull request a draft here: the tests are only under
        // tests/generated/, and the run did not fail.
        assert_eq!(
            *promoted, green_and_rose,
            "ready exactly when green and rose"
        );
    }
    let printed = lines.lock().expect("lock").clone();
    let mut extra = vec![serde_json::to_string(report).expect("json")];
    extra.extend(r.outcome.kept.iter().map(|(_, c)| c.clone()));
    eprintln!("{}", no_token_anywhere(d, &printed, &extra));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running model: ../shared/llm/local-model.sh start"]
async fn flow1_on_the_default_branch_of_a_real_project() {
    let tmp = tempfile::tempdir().expect("tmp");
    let canary = tmp.path().join("ran-on-the-host");
    let d = double(&canary).await;
    flow1(&d, tests_pr::On::DefaultBranch, &canary).await;
}

/// The pull request's change: a function added to `boltons/typeutils.py` (written for this
/// test, in the module's style; not boltons').
const SUPERCLASSES: &str = r#"

def get_all_superclasses(cls, include_object=False):
    """Returns a :class:`list` of the classes *cls* inherits from, nearest
    first: its method resolution order without *cls* itself. ``object``
    is left out unless *include_object* is true.

    >>> class A(object):
    ...     pass
    ...
    >>> class B(A):
    ...     pass
    ...
    >>> [t.__name__ for t in get_all_superclasses(B)]
    ['A']
    """
    if not isinstance(cls, type):
        raise TypeError('expected type object, not %r' % cls)
    ret = list(cls.__mro__[1:])
    if not include_object and ret and ret[-1] is object:
        ret.pop()
    return ret
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running model: ../shared/llm/local-model.sh start"]
async fn flow1_on_a_pull_request_of_a_real_project() {
    let tmp = tempfile::tempdir().expect("tmp");
    let canary = tmp.path().join("ran-on-the-host");
    let d = double(&canary).await;
    let module =
        std::fs::read_to_string(Path::new(FIXTURE).join("boltons/typeutils.py")).expect("fixture");
    let changed = module.replace(
        "\n\nclass classproperty:",
        &format!("{SUPERCLASSES}\n\nclass classproperty:"),
    );
    assert_ne!(changed, module);
    d.open_pull(
        1,
        &format!("{OWNER}/{NAME}"),
        "superclasses",
        &[("boltons/typeutils.py", Some(&changed))],
    );
    flow1(&d, tests_pr::On::PullRequest(1), &canary).await;
    // Whatever came of it, the pull request's own branch is untouched.
    assert_eq!(
        d.show("superclasses:boltons/typeutils.py"),
        changed,
        "the pull request's branch"
    );
}

const ISSUE: u64 = 3;
const ISSUE_TITLE: &str = "get_all_subclasses: an option to return only the leaf classes";
const ISSUE_BODY: &str = "`boltons.typeutils.get_all_subclasses(cls)` returns every class that inherits from `cls`, at any depth. Often I only want the *leaf* classes, the ones nothing else inherits from (for example the concrete implementations of a plugin base class).

Please add a keyword argument `leaf_only=False` to `get_all_subclasses`. With `leaf_only=True`, only the subclasses that have no subclasses of their own are returned, in the same order as now; the default stays as it is.

Acceptance criteria:
- with `class A: pass`, `class B(A): pass`, `class C(B): pass` and `class D(A): pass`, `get_all_subclasses(A, leaf_only=True)` returns `[D, C]`
- `get_all_subclasses(A)` still returns `[B, D, C]`
- something that is not a class still raises `TypeError`
- pytest tests for it under `tests/`
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running model: ../shared/llm/local-model.sh start"]
async fn flow2_builds_an_issue_of_a_real_project() {
    let tmp = tempfile::tempdir().expect("tmp");
    let canary = tmp.path().join("ran-on-the-host");
    let d = double(&canary).await;
    d.issue(ISSUE, ISSUE_TITLE, ISSUE_BODY);
    // Two refine rounds (the default is 3) keep the run near fifteen minutes at worst.
    d.with(|w| w.cordon_yml = Some("max_refine_rounds: 2\n".into()));
    let started = Instant::now();
    // The builder asks for whole files and sizes each answer to the files it quotes
    // (typeutils.py alone is about 1,700 tokens, more than the default 900).
    let llm = llm().await;
    let (p, lines) = progress(started);
    let req = builder::Request {
        repo: repo(),
        issue: ISSUE,
        policy: &cordon::spec::OperatorPolicy::default(),
        warm_pool: 1,
        timeout: Duration::from_secs(120),
        trigger: None,
    };
    let build: Build = builder::run(&cfg(&d), req, &llm, CancellationToken::new(), p)
        .await
        .expect("the builder runs to the end");
    let elapsed = started.elapsed();
    let u = llm.usage();
    eprintln!("\n===== files the model wrote: {:?} =====", build.files);
    let mut written = Vec::new();
    if let Delivered::PullRequest { branch, .. } = &build.delivered {
        for f in &build.files {
            let text = d.show(&format!("{branch}:{f}"));
            eprintln!("--- {f}\n{text}");
            written.push(text);
        }
        let diff = github_support::git(&d.bare, &["diff", "main", branch.as_str()]);
        eprintln!("===== diff main..{branch} =====\n{diff}");
    }
    eprintln!("===== comments =====");
    for (n, c) in comments(&d) {
        eprintln!("--- on #{n}\n{c}");
    }
    if let Some(last) = &build.last {
        eprintln!(
            "===== the suite: {} run(s); the last, job {}: {} passed, {} failed, completed {} =====",
            last.runs, last.job, last.run.passed, last.run.failed, last.run.completed
        );
        if let Some(f) = &last.failure {
            eprintln!("{f}");
        }
    }
    eprintln!(
        "===== delivered: {} =====\nwarnings {:?}; model requests {} ({} prompt + {} completion tokens, {} cut off, {:.0} s waiting for the model); wall time {:.0} s",
        describe(&build.delivered, &d),
        build.warnings(),
        u.requests,
        u.prompt_tokens,
        u.completion_tokens,
        u.truncated_answers,
        u.model_ms as f64 / 1000.0,
        elapsed.as_secs_f64()
    );

    assert!(!canary.exists(), "the project's tests ran on the host");
    assert!(u.requests > 0, "the model was asked");
    // The sandbox's own verdict: the suite ran to the end, every test passed and one ran.
    let green = build
        .last
        .as_ref()
        .is_some_and(|l| l.run.completed && l.run.failed == 0 && l.run.passed > 0);
    check_delivery(&d, &build.delivered, green, &["main".to_string()]);
    // Nor is a change promoted that drops a test the default branch has.
    if let Delivered::PullRequest {
        branch,
        promoted: true,
        ..
    } = &build.delivered
    {
        for f in &build.files {
            let before = github_support::git(&d.bare, &["ls-tree", "--name-only", "main", f]);
            if before.trim().is_empty() {
                continue;
            }
            let now = test_names(&d.show(&format!("{branch}:{f}")));
            for t in test_names(&d.show(&format!("main:{f}"))) {
                assert!(now.contains(&t), "promoted without {f}::{t}");
            }
        }
    }
    // A green suite left a draft only for a reason that is not the sandbox's (a refused or
    // protected path, no test file); a red one always says so.
    if let Some(Promotion::Draft(why)) = build.verdict() {
        let sandbox_said = |w: &String| {
            w.contains("failed in the sandbox")
                || w.contains("did not run to the end")
                || w == "no test ran"
        };
        assert_eq!(
            why.iter().any(sandbox_said),
            !green,
            "the reasons against the sandbox's verdict: {why:?}"
        );
    }
    // One comment on the issue says what became of it.
    let on_issue: Vec<String> = comments(&d)
        .into_iter()
        .filter(|(n, _)| *n == ISSUE)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(on_issue.len(), 1, "{on_issue:?}");
    match &build.delivered {
        Delivered::PullRequest { url, .. } => {
            assert!(on_issue[0].contains(url.as_str()), "{}", on_issue[0])
        }
        Delivered::NothingPushed(_) => {
            assert!(on_issue[0].contains("nothing pushed"), "{}", on_issue[0])
        }
    }
    let printed = lines.lock().expect("lock").clone();
    let mut extra = written;
    extra.push(format!("{build:?}"));
    extra.extend(on_issue);
    eprintln!("{}", no_token_anywhere(&d, &printed, &extra));
}
