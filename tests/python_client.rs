//! The Python client (`clients/python`) against a real `cordon serve` and the real engine: its
//! unittest suite, the refine-loop example reaching green, and `mypy --strict` over both when
//! mypy is installed (`.ci/run` installs it).
//!
//! The interpreter is `python3`, or `$CORDON_TEST_PYTHON`.

mod events_support;
mod server_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use server_support::*;

fn python() -> String {
    std::env::var("CORDON_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `python3 ARGS` in the repository, importing the client from its source, writing no
/// bytecode into the tree, with `env` (the service's address and token) and nothing of the
/// caller's cordon variables.
fn run_python(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(python())
        .current_dir(repo())
        .args(args)
        .env("PYTHONPATH", repo().join("clients/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("CORDON_SERVER")
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .env_remove("CORDON_CA_CERT")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (set CORDON_TEST_PYTHON)", python()))
}

fn explain(what: &str, out: &Output, srv: Option<&Server>) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        srv.map(|s| format!("\n--- cordon serve ---\n{}", s.log()))
            .unwrap_or_default()
    )
}

fn service(tmp: &Path) -> (Server, String) {
    let srv = start(&tmp.join("data"), "concurrency: 2\nshutdown_grace: 1s\n");
    let token = srv.token.clone().expect("the service generated a token");
    (srv, token)
}

/// Every test in `clients/python/tests` passes against the service, and none was skipped (the
/// service tests skip only without `CORDON_SERVER`).
#[test]
fn python_client_suite_passes_against_the_service() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (srv, token) = service(tmp.path());
    let out = run_python(
        &[
            "-m",
            "unittest",
            "discover",
            "-v",
            "-s",
            "clients/python/tests",
            "-t",
            "clients/python",
        ],
        &[("CORDON_SERVER", &srv.url), ("CORDON_TOKEN", &token)],
    );
    let report = explain("python -m unittest", &out, Some(&srv));
    assert!(out.status.success(), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("test_submit_and_wait_passed") && stderr.contains("\nOK"),
        "{report}"
    );
    assert!(!stderr.contains("skipped"), "a test was skipped: {report}");
    // The token went to the service, never into the output.
    assert!(!stderr.contains(&token), "the token was printed: {report}");
}

/// The example's refine loop fixes its project's two bugs, one per round, and goes green on
/// the third run; the checked-in project is left as it was.
#[test]
fn refine_loop_example_reaches_green() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (srv, _) = service(tmp.path());
    let calc = repo().join("examples/python/project/calc.py");
    let before = std::fs::read_to_string(&calc).expect("calc.py");
    let token_file = srv.token_path();
    let work = tmp.path().join("work");
    let out = run_python(
        &[
            "examples/python/refine_loop.py",
            "--rounds",
            "5",
            "--work",
            work.to_str().expect("utf-8 path"),
        ],
        &[
            ("CORDON_SERVER", &srv.url),
            (
                "CORDON_TOKEN_FILE",
                token_file.to_str().expect("utf-8 path"),
            ),
        ],
    );
    let report = explain("refine_loop.py", &out, Some(&srv));
    assert!(out.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("round 1: ")
            && stdout.contains("failing: test_calc.py::test_add, test_calc.py::test_mean"),
        "{report}"
    );
    assert!(
        stdout.contains("round 3: ") && stdout.contains(" passed\ngreen after 3 rounds"),
        "{report}"
    );
    let fixed = std::fs::read_to_string(work.join("calc.py")).expect("the fixed copy");
    assert!(
        fixed.contains("return a + b") && fixed.contains("sum(xs) / len(xs)"),
        "{fixed}"
    );
    assert_eq!(
        std::fs::read_to_string(&calc).expect("calc.py"),
        before,
        "the example changed its checked-in project"
    );
}

/// `mypy --strict` finds nothing in the client, its tests and the example, when mypy is
/// installed (CI installs it; elsewhere this says so and checks nothing).
#[test]
fn python_client_type_checks_strictly() {
    let probe = run_python(&["-c", "import mypy"], &[]);
    if !probe.status.success() {
        eprintln!(
            "mypy is not importable by {}: not type-checking the Python client (pip install mypy)",
            python()
        );
        return;
    }
    let cache = tempfile::tempdir().expect("tmp");
    let out = run_python(
        &[
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            cache.path().to_str().expect("utf-8 path"),
            "clients/python/cordon_client",
            "clients/python/tests",
            "examples/python/refine_loop.py",
        ],
        &[("MYPYPATH", "clients/python")],
    );
    assert!(
        out.status.success(),
        "{}",
        explain("mypy --strict", &out, None)
    );
}

/// The Python client's types name every event type and every outcome the service sends, with
/// the fields the service sends.
#[test]
fn python_types_match_the_services() {
    use events_support::{event_index, every_event};
    let model = std::fs::read_to_string(repo().join("clients/python/cordon_client/model.py"))
        .expect("model.py");
    let events = every_event();
    let places: Vec<usize> = events.iter().map(event_index).collect();
    assert_eq!(
        places,
        (0..events.len()).collect::<Vec<_>>(),
        "every_event() makes one of each event, in order"
    );
    for ev in &events {
        let json = serde_json::to_value(ev).expect("an event serializes");
        let name = json["type"].as_str().expect("a type");
        let marker = format!("    type: Literal[\"{name}\"]\n");
        let at = model.find(&marker).unwrap_or_else(|| {
            panic!("clients/python/cordon_client/model.py has no event with type `{name}`")
        });
        // The TypedDict's body: from its `type` line to the next blank line.
        let body = &model[at..];
        let body = &body[..body.find("\n\n").unwrap_or(body.len())];
        for field in json.as_object().expect("an object").keys() {
            assert!(
                field == "type" || body.contains(&format!("    {field}: ")),
                "the Python event `{name}` lacks the field `{field}`"
            );
        }
    }
    // The result, with every optional field present.
    let result = serde_json::json!({
        "job_id": "job-1", "outcome": "failed", "exit_code": 1, "duration_ms": 1, "error": "e",
        "environment": { "key": "k", "image": "i", "cached": false, "outcome": "passed",
                         "exit_code": 0, "duration_ms": 1, "egress_refused": ["h"] },
        "warm": true, "steps": [], "tests": null, "artifacts": [],
        "artifacts_refused": [{ "path": "p", "reason": "r" }], "output_bytes": 0,
        "output_truncated": false, "image": "i", "profile": "strict", "phases_ms": {}
    });
    let typed: cordon::report::JobResult =
        serde_json::from_value(result.clone()).expect("a job result");
    let start = model
        .find("class _JobResultBase")
        .expect("the result's TypedDict");
    let end = model
        .find("class _JobStatusBase")
        .expect("the status's TypedDict");
    for field in serde_json::to_value(&typed)
        .expect("a result serializes")
        .as_object()
        .expect("an object")
        .keys()
    {
        assert!(
            model[start..end].contains(&format!("    {field}: ")),
            "the Python JobResultDict lacks the field `{field}`"
        );
    }
    for outcome in cordon::report::Outcome::ALL {
        assert!(
            model.contains(&format!("    \"{}\",\n", outcome.as_str())),
            "clients/python/cordon_client/model.py's Outcome lacks `{outcome}`"
        );
        let status = format!("\"{}\": {},", outcome.as_str(), outcome.exit_status());
        assert!(
            model.contains(&status),
            "clients/python/cordon_client/model.py's EXIT_STATUS lacks {status}"
        );
    }
}

/// The Python client leaves out exactly what cordon does: the same exclude patterns over the
/// same paths, decided by `cordon_client.workspace.Excludes` and by `spec::pattern::Excludes`.
#[test]
fn python_excludes_agree_with_cordons() {
    let patterns = [
        "*.pyc",
        ".git",
        "/build",
        "docs/*.md",
        "cache/",
        "**/tmp/*.log",
        "./dist",
        "req-[0-9].txt",
        "[unclosed",
        "*.txt",
        "!keep.txt",
        "a/**/z",
        "?x",
    ];
    let paths: &[(&str, bool)] = &[
        ("a.pyc", false),
        ("pkg/sub/a.pyc", false),
        ("pkg/.git", true),
        (".github", true),
        ("build", true),
        ("src/build", true),
        ("docs/a.md", false),
        ("docs/api/a.md", false),
        ("x/cache", true),
        ("x/cache", false),
        ("a/b/tmp/x.log", false),
        ("tmp/x.log", false),
        ("dist", true),
        ("a/dist", true),
        ("req-1.txt", false),
        ("req-x.txt", false),
        ("[unclosed", false),
        ("keep.txt", false),
        ("other.txt", false),
        ("a/z", false),
        ("a/b/c/z", false),
        ("ax", false),
        ("dir/ax", false),
        ("xx/yy", false),
    ];
    let root = std::path::Path::new("/ws");
    let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let rust = cordon::spec::pattern::Excludes::new(root, &owned).expect("valid patterns");
    let want: Vec<bool> = paths
        .iter()
        .map(|(p, dir)| rust.matches(&root.join(p), *dir))
        .collect();
    let cases = serde_json::json!({ "patterns": patterns, "paths": paths });
    let out = Command::new(python())
        .args([
            "-c",
            "import json,sys; from cordon_client.workspace import Excludes; c=json.load(sys.stdin); \
             e=Excludes(c['patterns']); print(json.dumps([e.matches(p, d) for p, d in c['paths']]))",
        ])
        .env("PYTHONPATH", repo().join("clients/python"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(cases.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<bool> = serde_json::from_slice(&out.stdout).expect("a JSON list");
    for (((path, dir), w), g) in paths.iter().zip(&want).zip(&got) {
        assert_eq!(
            w, g,
            "`{path}` (directory: {dir}): cordon says {w}, Python says {g}"
        );
    }
}
