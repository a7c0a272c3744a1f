//! Every run of target or generated code is a cordon job: this module builds the job in
//! memory (a host copy of the repository plus the candidate test files, written as plain
//! files; fixed command lines; network `none`; no host environment) and runs it through the
//! [`Runner`]. Nothing here executes anything on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::JobEvent;
use crate::pool::{PoolConfig, WarmPool};
use crate::report::{JobResult, Outcome};
use crate::runner::{Runner, RunnerConfig};
use crate::sandbox::SandboxError;
use crate::sandbox::docker::DockerBackend;
use crate::spec::{self, JobSpec, LimitsFile, SpecError, StepSpec, WorkspaceSpec};

use super::detect::Project;

/// Where the repository appears in the sandbox.
pub const WORKSPACE: &str = "/workspace";
/// Where cordon's generated tests live, relative to the repository root.
pub const GENERATED_DIR: &str = "tests/generated";
/// cordon's own coverage configuration inside the workspace copy.
const COVERAGERC: &str = ".cordon-testgen/coveragerc";
/// Where cordon's pytest plugins live inside the workspace copy.
const PLUGINS: &str = ".cordon-testgen/plugins";
/// What a generated test that outlived [`ExecConfig::test_limit`] fails with.
pub const TEST_LIMIT_MESSAGE: &str = "cordon: the test ran longer than its time limit";

/// The per-test time limit of generated runs, a pytest plugin (`-p cordon_test_limit`): a test
/// that hangs (click's password prompt spinning on an empty input) fails on its own after
/// `secs` seconds, and the invocation goes on with the others, instead of costing the whole
/// invocation's `run_timeout`. The test is noted in the job's `/tmp`, and the job's later runs
/// (reversed, alone) fail it at once instead of waiting for it again. It is a convenience, not
/// a guard: a test can catch or disarm the alarm, or write the note; `run_timeout` stays the
/// hard limit, and a note only ever fails tests of the job's own candidate.
///
/// The plugin also keeps a `KeyboardInterrupt` a test's call raises (click's
/// `_translate_ch_to_exc("\x03")` raises one on purpose) from ending the whole pytest run, and
/// the other tests' results with it: the test fails with it like with any exception — the same
/// `E   KeyboardInterrupt` line, the traceback from the test down — so characterization can
/// put the call in `pytest.raises(KeyboardInterrupt)`, which holds in a plain pytest run too.
/// No one presses Ctrl-C in the sandbox; cordon stops a run by killing it.
fn test_limit_plugin(secs: u64) -> String {
    format!(
        r#"# cordon's per-test guards for generated tests (loaded with -p; not the project's):
# a time limit, and a KeyboardInterrupt the test raises fails that test, not the run.
import functools
import inspect
import signal

import pytest


class _Interrupted(Exception):
    """A KeyboardInterrupt a test raised, reported as a failure of that test."""


# Reported as what it was: `E   KeyboardInterrupt`.
_Interrupted.__module__ = "builtins"
_Interrupted.__name__ = _Interrupted.__qualname__ = "KeyboardInterrupt"


def _uninterrupted(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            raise _Interrupted(*e.args).with_traceback(e.__traceback__) from None

    return call

_EXPIRED = "/tmp/cordon-test-limit-expired"


def _expired_before(nodeid):
    try:
        with open(_EXPIRED) as f:
            return nodeid in f.read().splitlines()
    except OSError:
        return False


def _limited(item):
    if _expired_before(item.nodeid):
        pytest.fail("{TEST_LIMIT_MESSAGE} ({secs} s, in an earlier run of this job)", pytrace=False)

    def expired(signum, frame):
        with open(_EXPIRED, "a") as f:
            f.write(item.nodeid + "\n")
        pytest.fail("{TEST_LIMIT_MESSAGE} ({secs} s)", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm({secs})
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _limited(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fn = getattr(item, "obj", None)
    # A test function or method; not a unittest case, not a coroutine (its plugin calls it).
    plain = type(item) is pytest.Function and (inspect.isfunction(fn) or inspect.ismethod(fn))
    plain = plain and not inspect.iscoroutinefunction(fn)
    if plain:
        item.obj = _uninterrupted(fn)
    try:
        yield from _limited(item)
    finally:
        if plain:
            item.obj = fn
"#
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot prepare the workspace copy at {path}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cordon built an invalid job")]
    Spec(#[from] SpecError),
    #[error("the sandbox failed")]
    Sandbox(#[from] SandboxError),
    #[error("the sandbox job failed: {0}")]
    Job(String),
    #[error(
        "installing the project's dependencies failed: {0} (pass --install CMD to say how, or --install none; behind a TLS-intercepting proxy add --ca-bundle host)"
    )]
    Install(String),
    #[error("stopped")]
    Cancelled,
}

/// Sandbox settings for every pipeline job.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub image: String,
    pub profile: String,
    pub cpus: f64,
    pub memory: String,
    /// Wall time of one pytest run inside a job.
    pub run_timeout: Duration,
    /// Wall time of one generated test's setup, and of its body, before it fails on its own.
    pub test_limit: Duration,
    /// Warm sandboxes kept ready (0: none), so the next job skips container creation.
    pub warm_pool: usize,
    /// How the project's dependencies are installed (a cached `prepare`).
    pub install: Install,
    /// `ca_bundle` of the install: `host` or an absolute path to a CA bundle (given to the
    /// jobs as the operator's bundle; a spec never names a path).
    pub ca_bundle: Option<String>,
    /// The operator's policy the generated jobs are validated within.
    pub policy: spec::OperatorPolicy,
}

/// How the project's dependencies get into the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Install {
    /// `pip install -r` every `requirements*.txt` at the repository root, if there is one.
    #[default]
    Auto,
    /// This command (`sh -c` in the workspace path, seeing only the dependency files).
    Command(String),
    /// Nothing: the image must have what the project imports.
    Off,
}

impl Install {
    /// The `prepare` for `project`, or `None` when nothing is to be installed.
    pub fn prepare(&self, project: &Project, ca_bundle: Option<&str>) -> Option<spec::PrepareSpec> {
        let (run, key_files) = match self {
            Install::Off => return None,
            Install::Command(cmd) => (cmd.clone(), project.dependency_files.clone()),
            Install::Auto => {
                let reqs: Vec<String> = project
                    .dependency_files
                    .iter()
                    .filter(|f| f.starts_with("requirements") && f.ends_with(".txt"))
                    .cloned()
                    .collect();
                if reqs.is_empty() {
                    return None;
                }
                let args: Vec<String> = reqs
                    .iter()
                    .map(|r| format!("-r {}", crate::sandbox::policy::shell_quote(r)))
                    .collect();
                (
                    format!(
                        "pip install --no-input --disable-pip-version-check {}",
                        args.join(" ")
                    ),
                    reqs,
                )
            }
        };
        Some(spec::PrepareSpec {
            run,
            cache_key_files: key_files,
            allow_hosts: None,
            ca_bundle: ca_bundle.map(|_| "host".to_string()),
            timeout: Some(spec::Span(Duration::from_secs(15 * 60))),
            env: BTreeMap::new(),
        })
    }
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            image: spec::DEFAULT_IMAGE.to_string(),
            profile: "strict".to_string(),
            cpus: 1.0,
            memory: "1GiB".to_string(),
            run_timeout: Duration::from_secs(120),
            test_limit: Duration::from_secs(10),
            warm_pool: 1,
            install: Install::Auto,
            ca_bundle: None,
            policy: spec::OperatorPolicy::for_cli(),
        }
    }
}

/// One pytest invocation inside a job.
#[derive(Debug, Clone)]
pub struct PytestRun {
    /// Test paths or node ids (cordon's own, from sanitized names), empty for the project's
    /// default collection.
    pub args: Vec<String>,
    pub coverage: bool,
    /// Collect only `test_*` functions and `Test*` classes in the named files, each test
    /// within [`ExecConfig::test_limit`] (generated runs).
    pub default_collection: bool,
    /// Add to the coverage data of the job's earlier runs instead of starting afresh.
    pub cov_append: bool,
}

/// What one pytest invocation left behind.
#[derive(Debug, Clone, Default)]
pub struct RunArtifacts {
    /// pytest's exit status (124 = timed out, 137 = killed, likely out of memory).
    pub exit: Option<i32>,
    pub junit: Option<Vec<u8>>,
    pub coverage: Option<Vec<u8>>,
    /// The tail of pytest's output.
    pub output: String,
}

/// The result of a job of several pytest runs.
#[derive(Debug, Clone)]
pub struct JobRuns {
    pub result: JobResult,
    pub runs: Vec<RunArtifacts>,
}

/// Runs jobs on a working copy of the repository.
pub struct Executor {
    runner: Runner,
    cfg: ExecConfig,
    /// The dependency install every job starts from (cached after the first).
    prepare: Option<spec::PrepareSpec>,
    work: tempfile::TempDir,
    python_root: String,
    cancel: CancellationToken,
    jobs: AtomicU32,
    /// Total sandbox wall time, ms.
    pub sandbox_ms: std::sync::atomic::AtomicU64,
    /// The environment image of the last job, when there is an install.
    environment: std::sync::Mutex<Option<String>>,
}

/// Copies a repository (no symlinks, no VCS or cache directories) into `dst`.
pub fn copy_repo(src: &Path, dst: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    let walker = walkdir::WalkDir::new(src)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !spec::DEFAULT_EXCLUDES
                    .iter()
                    .any(|x| *x == name || (x.starts_with("*.") && name.ends_with(&x[1..])))
        });
    for e in walker {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e.path().strip_prefix(src).map_err(std::io::Error::other)?;
        let target = dst.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &target)?;
            n += 1;
        }
    }
    Ok(n)
}

impl Executor {
    /// Connects to the engine and makes the working copy of `repo`.
    pub async fn new(
        repo: &Path,
        project: &Project,
        cfg: ExecConfig,
        cancel: CancellationToken,
    ) -> Result<Executor, ExecError> {
        let work = tempfile::Builder::new()
            .prefix("cordon-testgen-")
            .tempdir()
            .map_err(|source| ExecError::Workspace {
                path: std::env::temp_dir(),
                source,
            })?;
        let ws = work.path().join("repo");
        let io = |source| ExecError::Workspace {
            path: ws.clone(),
            source,
        };
        copy_repo(repo, &ws).map_err(io)?;
        // Generated tests of an earlier run in the repository are part of the project now;
        // cordon's own candidates go in a clean directory of their own. Its own files go in
        // `.cordon-testgen/`, replacing whatever the checkout had there (the copy holds no
        // symlinks, so this removes only what was copied).
        let own = ws.join(".cordon-testgen");
        match std::fs::symlink_metadata(&own) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&own).map_err(io)?,
            Ok(_) => std::fs::remove_file(&own).map_err(io)?,
            Err(_) => {}
        }
        std::fs::create_dir_all(&own).map_err(io)?;
        std::fs::write(ws.join(COVERAGERC), coveragerc(project)).map_err(io)?;
        std::fs::create_dir_all(ws.join(PLUGINS)).map_err(io)?;
        let limit = test_limit_plugin(cfg.test_limit.as_secs().max(1));
        std::fs::write(ws.join(PLUGINS).join("cordon_test_limit.py"), limit).map_err(io)?;
        let backend: Arc<dyn crate::sandbox::Backend> = Arc::new(DockerBackend::connect().await?);
        let mut runner = Runner::new(backend.clone(), RunnerConfig::default());
        if cfg.warm_pool > 0 {
            runner = runner.with_pool(WarmPool::new(
                backend,
                PoolConfig {
                    per_key: cfg.warm_pool,
                    ..PoolConfig::default()
                },
            ));
        }
        let prepare = cfg.install.prepare(project, cfg.ca_bundle.as_deref());
        let mut cfg = cfg;
        if let Some(path) = cfg.ca_bundle.as_deref().filter(|c| *c != "host") {
            cfg.policy.ca_bundle = Some(PathBuf::from(path));
        }
        Ok(Executor {
            runner,
            prepare,
            cfg,
            work,
            python_root: project.python_root.clone(),
            cancel,
            jobs: AtomicU32::new(0),
            sandbox_ms: Default::default(),
            environment: Default::default(),
        })
    }

    /// Removes the warm pool's unused sandboxes. Call once the last job has run.
    pub async fn close(&self) {
        if let Some(pool) = self.runner.pool() {
            pool.drain().await;
        }
    }

    /// The environment image the jobs started from, once one has run.
    pub fn environment(&self) -> Option<String> {
        self.environment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The install command every job's environment comes from, if any.
    pub fn install_command(&self) -> Option<&str> {
        self.prepare.as_ref().map(|p| p.run.as_str())
    }

    /// The host copy of the repository the jobs load.
    pub fn workspace(&self) -> PathBuf {
        self.work.path().join("repo")
    }

    pub fn jobs_run(&self) -> u32 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Puts exactly these files (name → content) in the copy's `tests/generated/`, as plain
    /// files. Names are cordon's own (`test_gen_*.py`).
    pub fn set_generated(&self, files: &[(String, String)]) -> Result<(), ExecError> {
        let dir = self.workspace().join(GENERATED_DIR).join("cordon");
        let io = |source| ExecError::Workspace {
            path: dir.clone(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        for (name, content) in files {
            debug_assert!(is_safe_file_name(name));
            std::fs::write(dir.join(name), content).map_err(io)?;
        }
        Ok(())
    }

    /// Runs the pytest invocations one after another in one fresh sandbox.
    pub async fn run(&self, label: &str, runs: &[PytestRun]) -> Result<JobRuns, ExecError> {
        if self.cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let n = self.jobs.fetch_add(1, Ordering::Relaxed) + 1;
        let script = script(self.cfg.run_timeout, runs);
        let pythonpath = if self.python_root.is_empty() {
            WORKSPACE.to_string()
        } else {
            format!("{WORKSPACE}/{}", self.python_root)
        };
        let env: BTreeMap<String, String> = [
            ("PYTHONHASHSEED", "0"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONPATH", pythonpath.as_str()),
            ("HOME", "/tmp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let step_timeout = self.cfg.run_timeout * (runs.len() as u32) + Duration::from_secs(30);
        let job_spec = JobSpec {
            image: Some(self.cfg.image.clone()),
            profile: Some(self.cfg.profile.clone()),
            workspace: Some(WorkspaceSpec {
                source: self.workspace(),
                mode: spec::WorkspaceMode::Copy,
                path: WORKSPACE.to_string(),
                exclude: None,
            }),
            steps: vec![StepSpec {
                name: format!("testgen-{}", sanitize_label(label)),
                run: script,
                network: spec::Network::None,
                timeout: Some(spec::Span(step_timeout)),
                env: BTreeMap::new(),
            }],
            artifacts: vec!["/out/r".to_string()],
            limits: limits(&self.cfg),
            prepare: self.prepare.clone(),
            env,
            ..Default::default()
        };
        let dir = self.work.path().to_path_buf();
        let job = spec::validate(
            job_spec,
            &dir,
            &dir.join(format!("job-{n}.yaml")),
            &self.cfg.policy,
        )?;
        let preflight = self.runner.preflight(&job).await?;
        let out_dir = self.work.path().join(format!("out-{n}"));
        let mut handle = self.runner.start(job, preflight, out_dir.clone());
        let mut result = None;
        loop {
            let ev = tokio::select! {
                ev = handle.next_event() => ev,
                _ = self.cancel.cancelled() => { handle.cancel(); handle.next_event().await }
            };
            match ev {
                Some(JobEvent::Finished { result: r }) => result = Some(*r),
                Some(_) => {}
                None => break,
            }
        }
        let result =
            result.ok_or_else(|| ExecError::Job("the job ended without a result".into()))?;
        self.sandbox_ms
            .fetch_add(result.duration_ms, Ordering::Relaxed);
        if result.outcome == Outcome::Cancelled {
            return Err(ExecError::Cancelled);
        }
        if let Some(env) = &result.environment {
            if env.outcome != Outcome::Passed {
                return Err(ExecError::Install(
                    result
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("the install ended {}", env.outcome)),
                ));
            }
            *self.environment.lock().unwrap_or_else(|p| p.into_inner()) = Some(env.image.clone());
        }
        if result.outcome == Outcome::SandboxError {
            return Err(ExecError::Job(
                result
                    .error
                    .clone()
                    .unwrap_or_else(|| "sandbox error".into()),
            ));
        }
        let read = |name: &str| std::fs::read(out_dir.join("r").join(name)).ok();
        let runs = (1..=runs.len())
            .map(|i| RunArtifacts {
                exit: read(&format!("rc{i}"))
                    .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<i32>().ok()),
                junit: read(&format!("j{i}.xml")),
                coverage: read(&format!("c{i}.xml")),
                output: read(&format!("o{i}.txt"))
                    .map(|b| tail(&String::from_utf8_lossy(&b), 6000))
                    .unwrap_or_default(),
            })
            .collect();
        let _ = std::fs::remove_dir_all(&out_dir);
        Ok(JobRuns { result, runs })
    }
}

/// The step's shell script: the pytest invocations one after another, each within
/// `run_timeout`, each leaving its exit status, JUnit XML, coverage and output in `/out/r`.
fn script(run_timeout: Duration, runs: &[PytestRun]) -> String {
    let secs = run_timeout.as_secs().max(1);
    let mut s = String::from("mkdir -p /out/r\n");
    for (i, r) in runs.iter().enumerate() {
        let i = i + 1;
        let mut cmd = String::new();
        if r.default_collection {
            cmd.push_str(&format!(
                "PYTHONPATH=\"$PYTHONPATH:{WORKSPACE}/{PLUGINS}\" "
            ));
        }
        cmd.push_str(&format!(
            "timeout -k 5 {secs} python3 -m pytest -vv -p no:cacheprovider -o addopts= --rootdir={WORKSPACE} --tb=short --junitxml=/out/r/j{i}.xml"
        ));
        if r.default_collection {
            cmd.push_str(
                " -p cordon_test_limit -o python_files=test_*.py -o python_classes=Test* -o python_functions=test*",
            );
        }
        if r.coverage {
            cmd.push_str(&format!(
                " --cov --cov-config={COVERAGERC} --cov-branch --cov-report=xml:/out/r/c{i}.xml"
            ));
            if r.cov_append {
                cmd.push_str(" --cov-append");
            }
        }
        for a in &r.args {
            debug_assert!(is_safe_arg(a), "unsafe pytest argument {a}");
            if is_safe_arg(a) {
                cmd.push(' ');
                cmd.push_str(a);
            }
        }
        s.push_str(&format!(
            "{cmd} > /out/r/o{i}.txt 2>&1; echo $? > /out/r/rc{i}\n"
        ));
    }
    s.push_str("exit 0\n");
    s
}

fn limits(cfg: &ExecConfig) -> LimitsFile {
    let yaml = format!(
        "{{ cpus: {}, memory: {}, pids: 256, output: 8MiB, scratch: 512MiB }}",
        cfg.cpus, cfg.memory
    );
    serde_yaml_ng::from_str(&yaml).unwrap_or_default()
}

fn coveragerc(project: &Project) -> String {
    let source = if project.python_root.is_empty() {
        ".".to_string()
    } else {
        project.python_root.clone()
    };
    format!(
        "[run]\nbranch = True\nrelative_files = True\nsource =\n    {source}\nomit =\n    tests/*\n    */tests/*\n    test/*\n    */test/*\n    */conftest.py\n    conftest.py\n    setup.py\n    .cordon-testgen/*\n    docs/*\n\n[report]\nignore_errors = True\n"
    )
}

/// A file name cordon writes and puts on a command line: `test_gen_…py`, letters, digits, `_`.
pub fn is_safe_file_name(name: &str) -> bool {
    name.strip_suffix(".py").is_some_and(|stem| {
        !stem.is_empty() && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A pytest argument cordon builds: a relative path or node id of letters, digits, `_`, `-`,
/// `.`, `/` and `::` only — never anything a shell would interpret.
pub fn is_safe_arg(a: &str) -> bool {
    !a.is_empty()
        && !a.starts_with('-')
        && !a.contains("..")
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:".contains(c))
}

fn sanitize_label(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if t.is_empty() { "job".into() } else { t }
}

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    s[i..].to_string()
}

/// One test case from a JUnit report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Case {
    /// `test_x` or `TestK::test_x` (parameters stripped).
    pub node: String,
    pub classname: String,
    pub name: String,
    pub status: CaseStatus,
    pub message: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Passed,
    Failed,
    Error,
    Skipped,
}

/// Parses JUnit XML into its test cases (defensively: a cap and no entities).
pub fn junit_cases(xml: &[u8]) -> Option<Vec<Case>> {
    use quick_xml::events::Event;
    if xml.len() > crate::report::junit::MAX_JUNIT_BYTES {
        return None;
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut cases = Vec::new();
    let mut cur: Option<Case> = None;
    let mut in_detail = false;
    let attr = |e: &quick_xml::events::BytesStart<'_>, k: &str| -> String {
        e.attributes()
            .flatten()
            .find(|a| a.key.as_ref() == k)
            .map(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| v.into_owned())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    };
    let new_case = |e: &quick_xml::events::BytesStart<'_>| {
        let classname = attr(e, "classname");
        let name = attr(e, "name");
        let base = name.split('[').next().unwrap_or(&name).to_string();
        let class = classname.rsplit('.').next().unwrap_or("");
        let node = if class.starts_with("Test") {
            format!("{class}::{base}")
        } else {
            base
        };
        Case {
            node,
            classname,
            name,
            status: CaseStatus::Passed,
            message: String::new(),
            text: String::new(),
        }
    };
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(ref e) if e.name().as_ref() == "testcase" => cur = Some(new_case(e)),
            Event::Empty(ref e) if e.name().as_ref() == "testcase" => cases.push(new_case(e)),
            Event::End(ref e) if e.name().as_ref() == "testcase" => {
                if let Some(c) = cur.take() {
                    cases.push(c);
                }
            }
            ref ev @ (Event::Start(ref e) | Event::Empty(ref e)) if cur.is_some() => {
                let opens = matches!(ev, Event::Start(_));
                let status = match e.name().as_ref() {
                    "failure" => Some(CaseStatus::Failed),
                    "error" => Some(CaseStatus::Error),
                    "skipped" => Some(CaseStatus::Skipped),
                    _ => None,
                };
                if let (Some(s), Some(c)) = (status, cur.as_mut()) {
                    // An error in teardown after a failure keeps the failure.
                    if c.status == CaseStatus::Passed || c.status == CaseStatus::Skipped {
                        c.status = s;
                        c.message = attr(e, "message");
                    }
                    in_detail = opens && s != CaseStatus::Skipped;
                }
            }
            Event::Text(t) if in_detail => {
                if let Some(c) = cur.as_mut()
                    && c.text.len() < 20_000
                {
                    c.text.push_str(t.as_ref());
                }
            }
            Event::GeneralRef(r) if in_detail => {
                if let Some(c) = cur.as_mut() {
                    let s = match r.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    };
                    c.text.push_str(s);
                }
            }
            Event::End(ref e) if matches!(e.name().as_ref(), "failure" | "error" | "skipped") => {
                in_detail = false
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Some(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_cases_with_collection_errors() {
        let xml = br#"<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="1" failures="1" tests="3">
<testcase classname="tests.generated.cordon.test_gen_a" name="test_ok" time="0.1"/>
<testcase classname="tests.generated.cordon.test_gen_a.TestK" name="test_bad[1]" time="0.1"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2
E       assert 1 == 2</failure></testcase>
<testcase classname="" name="tests.generated.cordon.test_gen_b" time="0"><error message="collection failure">ImportError: cannot import name 'nope'</error></testcase>
</testsuite></testsuites>"#;
        let cases = junit_cases(xml).expect("parses");
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].node, "test_ok");
        assert_eq!(cases[0].status, CaseStatus::Passed);
        assert_eq!(cases[1].node, "TestK::test_bad");
        assert_eq!(cases[1].status, CaseStatus::Failed);
        assert!(cases[1].text.contains("> "), "{}", cases[1].text);
        assert_eq!(cases[2].status, CaseStatus::Error);
        assert!(cases[2].text.contains("ImportError"));
    }

    /// Generated runs load the per-test limit; the project's own suite runs as it is.
    #[test]
    fn only_generated_runs_get_the_per_test_limit() {
        let run = |default_collection| PytestRun {
            args: vec!["tests/generated/cordon/test_gen_a.py".into()],
            coverage: false,
            default_collection,
            cov_append: false,
        };
        let s = script(Duration::from_secs(120), &[run(false), run(true)]);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].starts_with("timeout -k 5 120 python3 -m pytest"));
        assert!(!lines[1].contains("cordon_test_limit"), "{}", lines[1]);
        assert!(
            lines[2].starts_with(
                "PYTHONPATH=\"$PYTHONPATH:/workspace/.cordon-testgen/plugins\" timeout -k 5 120 "
            ) && lines[2].contains(" -p cordon_test_limit "),
            "{}",
            lines[2]
        );
        let plugin = test_limit_plugin(7);
        assert!(plugin.contains("signal.alarm(7)") && plugin.contains(TEST_LIMIT_MESSAGE));
    }

    #[test]
    fn command_line_pieces_are_safe() {
        assert!(is_safe_file_name("test_gen_calc_divide_1.py"));
        assert!(!is_safe_file_name("x;rm -rf.py"));
        assert!(is_safe_arg(
            "tests/generated/cordon/test_gen_a.py::TestK::test_b"
        ));
        assert!(!is_safe_arg("--co"));
        assert!(!is_safe_arg("a b"));
        assert!(!is_safe_arg("$(x)"));
        assert!(!is_safe_arg("../x"));
    }
}
