//! The repository's suite (`.cordon.yml`'s `test_command`) run in the sandbox, never on the
//! host: one cordon job per round on a copy of the working tree, network `none`, the
//! dependencies from the cached environment (`install`), a warm sandbox ready for the next
//! round. pytest reports through `PYTEST_ADDOPTS=--junitxml`, so any command that ends in
//! pytest is counted test by test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SuiteRun;
use crate::pipeline::exec::Install;
use crate::report::Outcome;
use crate::runner::{Runner, RunnerConfig};
use crate::sandbox::docker::DockerBackend;
use crate::spec::{self, JobSpec, OperatorPolicy, PrepareSpec, StepSpec, WorkspaceSpec};

/// Where the working tree appears in the sandbox.
pub const WORKSPACE: &str = "/workspace";
/// The suite's output and JUnit report inside the sandbox.
const OUT: &str = "/out/r";

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    pub image: String,
    /// A shell command line (`sh -c` in the workspace).
    pub test_command: String,
    pub install: Install,
    /// Ready sandboxes kept for the next round (0: none).
    pub warm_pool: usize,
    /// The suite's wall time in one round.
    pub timeout: Duration,
    /// The operator's policy every job is validated within.
    pub policy: OperatorPolicy,
}

/// One round's verdict: the counts, the sandbox job's id, and its output.
#[derive(Debug, Clone)]
pub struct Ran {
    pub run: SuiteRun,
    pub job_id: String,
    pub outcome: Outcome,
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The sandbox did not run the suite: nothing of this run may be pushed.
    #[error("the sandbox could not run the suite: {0}")]
    Start(String),
    #[error("stopped")]
    Cancelled,
}

/// The suite's runner for one repository.
pub struct Suite {
    runner: Runner,
    cfg: SuiteConfig,
    prepare: Option<PrepareSpec>,
    pythonpath: String,
    work: tempfile::TempDir,
    rounds: std::sync::atomic::AtomicU32,
}

fn start_err(e: impl std::error::Error + 'static) -> SuiteError {
    SuiteError::Start(crate::error::error_chain(&e))
}

impl Suite {
    /// Connects to the engine. `repo` is read (never run) for the dependency files the
    /// environment is keyed by and the import root.
    pub async fn new(repo: &Path, cfg: SuiteConfig) -> Result<Suite, SuiteError> {
        let project = crate::pipeline::detect::detect(repo).ok();
        let prepare = project.as_ref().and_then(|p| cfg.install.prepare(p, None));
        let root = project.map(|p| p.python_root).unwrap_or_default();
        let pythonpath = if root.is_empty() {
            WORKSPACE.to_string()
        } else {
            format!("{WORKSPACE}/{root}")
        };
        let backend = DockerBackend::connect().await.map_err(start_err)?;
        let runner =
            Runner::new(Arc::new(backend), RunnerConfig::default()).with_warm(cfg.warm_pool);
        let work = tempfile::Builder::new()
            .prefix("cordon-build-")
            .tempdir()
            .map_err(start_err)?;
        Ok(Suite {
            runner,
            cfg,
            prepare,
            pythonpath,
            work,
            rounds: Default::default(),
        })
    }

    /// Removes the warm pool's unused sandboxes.
    pub async fn close(&self) {
        if let Some(pool) = self.runner.pool() {
            pool.drain().await;
        }
    }

    fn spec(&self, tree: &Path) -> JobSpec {
        let env = BTreeMap::from([
            ("PYTHONHASHSEED".to_string(), "0".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
            ("PYTHONPATH".to_string(), self.pythonpath.clone()),
            ("HOME".to_string(), "/tmp".to_string()),
            (
                "PYTEST_ADDOPTS".to_string(),
                format!("-p no:cacheprovider --junitxml={OUT}/junit.xml"),
            ),
        ]);
        JobSpec {
            image: Some(self.cfg.image.clone()),
            profile: Some("strict".into()),
            workspace: Some(WorkspaceSpec {
                source: tree.to_path_buf(),
                mode: spec::WorkspaceMode::Copy,
                path: WORKSPACE.into(),
                exclude: None,
            }),
            prepare: self.prepare.clone(),
            steps: vec![StepSpec {
                name: "suite".into(),
                run: format!(
                    "mkdir -p {OUT}\n( {}\n) > {OUT}/output.txt 2>&1\n",
                    self.cfg.test_command
                ),
                network: spec::Network::None,
                timeout: Some(spec::Span(self.cfg.timeout)),
                env: BTreeMap::new(),
            }],
            artifacts: vec![OUT.into()],
            env,
            ..Default::default()
        }
    }

    /// Runs the suite on the working tree `tree` (copied into a fresh sandbox; the host copy
    /// is never written).
    pub async fn run(&self, tree: &Path, cancel: &CancellationToken) -> Result<Ran, SuiteError> {
        let n = 1 + self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.work.path();
        let job = spec::validate(
            self.spec(tree),
            dir,
            &dir.join(format!("suite-{n}.yaml")),
            &self.cfg.policy,
        )
        .map_err(start_err)?;
        let preflight = self.runner.preflight(&job).await.map_err(start_err)?;
        let out = dir.join(format!("out-{n}"));
        let handle = self.runner.start(job, preflight, out.clone());
        let job_id = handle.job_id.clone();
        let stop = handle.cancel_token();
        let wait = handle.wait();
        tokio::pin!(wait);
        let result = tokio::select! {
            r = &mut wait => r,
            _ = cancel.cancelled() => { stop.cancel(); wait.await }
        };
        match (&result.outcome, &result.environment) {
            (Outcome::Cancelled, _) => return Err(SuiteError::Cancelled),
            (Outcome::SandboxError, _) => {
                let why = result.error.as_deref().unwrap_or("sandbox error");
                return Err(SuiteError::Start(why.to_string()));
            }
            (_, Some(env)) if env.outcome != Outcome::Passed => {
                let why = result.error.as_deref().unwrap_or("see the job's log");
                return Err(SuiteError::Start(format!(
                    "installing the dependencies ({}) ended {}: {why}",
                    self.cfg.install_text(),
                    env.outcome
                )));
            }
            _ => {}
        }
        let output = tail_of(&out.join("r/output.txt")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&out);
        Ok(Ran {
            run: verdict(&result),
            job_id,
            outcome: result.outcome,
            output,
        })
    }
}

impl SuiteConfig {
    fn install_text(&self) -> String {
        match &self.install {
            Install::Auto => "auto".into(),
            Install::Off => "none".into(),
            Install::Command(c) => format!("`{c}`"),
        }
    }
}

/// The most of the suite's output read back (its end, where the failures are told).
const OUTPUT_BYTES: u64 = 256 * 1024;

/// The last [`OUTPUT_BYTES`] of a file the job wrote, as text.
fn tail_of(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_BYTES)))?;
    let mut b = Vec::new();
    f.take(OUTPUT_BYTES).read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The counts from the job's JUnit report; a suite that exited non-zero is never green,
/// whatever the report says (or when there is none).
fn verdict(result: &crate::report::JobResult) -> SuiteRun {
    let (passed, mut failed) = result
        .tests
        .as_ref()
        .map_or((0, 0), |t| (t.passed, t.failed + t.errors));
    if result.outcome != Outcome::Passed {
        failed = failed.max(1);
    }
    SuiteRun {
        completed: matches!(result.outcome, Outcome::Passed | Outcome::Failed),
        passed,
        failed,
    }
}
