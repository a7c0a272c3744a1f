//! Test generation that never runs generated code on the host.
//!
//! Stages, one module each, in the order a run goes through them:
//!
//! - [`detect`]: the Python root, framework, existing tests and fixtures (reads files only).
//! - [`exec`]: every run of target or generated code is a cordon job on a host copy of the
//!   repository; used by the baseline, validation and final runs.
//! - baseline (here): the existing suite with branch coverage, in the sandbox.
//! - [`coverage`]: Cobertura XML → per-file lines and arcs, by normalized relative path.
//! - [`gaps`]: missing lines and branches → functions, methods, classes (tree-sitter, via
//!   [`python`]).
//! - [`llm`]: the OpenAI-compatible client: budgets, retries, truncation and runaway checks.
//! - [`generate`]: small per-gap prompts (with the public functions that call the target:
//!   [`callers`], and what must hold for the uncovered lines to run: [`reach`]); one code
//!   block out; static checks and repairs (a construction given the
//!   object's state as keywords: [`init_args`]).
//! - [`validate`]: runs, passes, passes again N times and alone, adds coverage.
//! - [`collection`]: a file pytest could not import loses the test or the imported name that
//!   broke it, not every test.
//! - [`classify`]: failing tests → test mistake / environment / likely code bug, rules first.
//! - [`fix`]: bounded auto-fix of test mistakes, told what the project's source says about
//!   the names the error is about ([`hints`]).
//! - [`characterize`]: a wrong expected value → the observed one, an exception the code
//!   raised on purpose → `pytest.raises`, marked as such; a parametrized test is first split
//!   into one plain test per case ([`parametrized`]).
//! - [`str_paths`]: a test that gave the code a `Path` where it wants a `str` gets its
//!   `Path("…")` literals as plain strings, and runs again.
//! - [`report`]: JSON, Markdown and HTML ([`html`]), written on every path.

pub mod callers;
pub mod characterize;
pub mod classify;
pub mod collection;
pub mod coverage;
pub mod detect;
pub mod exec;
pub mod fix;
pub mod gaps;
pub mod generate;
pub mod hints;
pub mod html;
pub mod init_args;
pub mod llm;
pub mod parametrized;
pub mod python;
pub mod reach;
pub mod report;
pub mod str_paths;
pub mod test_helpers;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use self::classify::Class;
use self::coverage::Coverage;
use self::detect::Project;
use self::exec::{ExecConfig, ExecError, Executor, PytestRun, WORKSPACE};
use self::generate::{Candidate, Rejection};
use self::llm::{Llm, LlmError};
use self::report::{CandidateReport, DiscardedTest, Report, RunSummary, SuspectedBug};
use self::validate::Status;

/// What a `testgen` run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub repo: PathBuf,
    /// Stop once combined line+branch coverage reaches this percentage.
    pub target_coverage: f64,
    pub max_iterations: u32,
    /// How many gaps (functions/methods) each iteration works on.
    pub gaps_per_iteration: u32,
    /// Runs a test must pass (the first included).
    pub repeats: u32,
    /// Auto-fix attempts per failing test.
    pub fix_attempts: u32,
    /// Generation attempts per gap when an answer is rejected before running.
    pub generation_attempts: u32,
    /// Candidates one gap may get in all, one per iteration, while none of them is kept: a
    /// gap whose first answer failed is asked again in a later iteration (after the gaps not
    /// tried yet), sampled at a higher temperature.
    pub candidates_per_gap: u32,
    /// `--only`: work only on the gaps these name (all gaps when empty).
    pub only: Vec<gaps::Aim>,
    /// Work only on the missing lines and branches among these (a pull request's changed
    /// lines); every gap when `None`.
    pub changed: Option<gaps::Lines>,
    /// Turn a wrong expected value of a one-line equality into the observed one (a
    /// characterization test, reported as such) instead of asking the model to fix it.
    pub characterize: bool,
    /// No new gap is started after this much time from the start of the run; the final
    /// combined run still happens. `None`: no limit.
    pub time_budget: Option<std::time::Duration>,
    pub exec: ExecConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            repo: PathBuf::from("."),
            target_coverage: 90.0,
            max_iterations: 3,
            gaps_per_iteration: 6,
            repeats: 3,
            fix_attempts: 2,
            generation_attempts: 2,
            candidates_per_gap: 2,
            only: Vec::new(),
            changed: None,
            characterize: true,
            time_budget: None,
            exec: ExecConfig::default(),
        }
    }
}

/// A line of progress for whoever is watching (the CLI prints them).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// The outcome of a run: the report, and the kept test files (name, content).
pub struct Outcome {
    pub report: Report,
    pub kept: Vec<(String, String)>,
}

enum Stop {
    Cancelled,
    Fatal(String),
}

impl From<ExecError> for Stop {
    fn from(e: ExecError) -> Stop {
        match e {
            ExecError::Cancelled => Stop::Cancelled,
            e => Stop::Fatal(crate::error::error_chain(&e)),
        }
    }
}

/// Imports of one candidate's file repaired ([`collection::repair`]) before the fix round.
const MAX_IMPORT_REPAIRS: u32 = 3;

/// Most characterizations of one test. pytest stops a test at its first failed `assert`, so
/// each costs a sandbox run (seconds, no model time): click's `open_url` test, five
/// `assert result == 0` of which four got `1`, needed four and was lost at three.
const MAX_CHARACTERIZATIONS: u32 = 6;

struct Run<'a> {
    opts: &'a Options,
    llm: &'a Llm,
    cancel: CancellationToken,
    progress: Progress,
    report: Report,
    kept: Vec<(String, String)>,
    stage_started: BTreeMap<&'static str, u64>,
    started: Instant,
}

/// Runs the whole pipeline. Never fails: whatever happens, the report says how far it got.
pub async fn run(
    opts: &Options,
    llm: &Llm,
    cancel: CancellationToken,
    progress: Progress,
) -> Outcome {
    let started = Instant::now();
    let mut r = Run {
        opts,
        llm,
        cancel,
        progress,
        report: Report {
            cordon_version: env!("CARGO_PKG_VERSION").to_string(),
            repo: opts.repo.display().to_string(),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            model: llm.config.model.clone(),
            base_url: llm.config.base_url.clone(),
            settings: report::Settings {
                target_coverage: opts.target_coverage,
                max_iterations: opts.max_iterations,
                gaps_per_iteration: opts.gaps_per_iteration,
                repeats: opts.repeats,
                fix_attempts: opts.fix_attempts,
                candidates_per_gap: opts.candidates_per_gap,
                characterize: opts.characterize,
                time_budget_s: opts.time_budget.map(|d| d.as_secs()),
                image: opts.exec.image.clone(),
                install: None,
                only: opts
                    .only
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{}::{n}", a.path),
                        None => a.path.clone(),
                    })
                    .collect(),
            },
            ..Default::default()
        },
        kept: Vec::new(),
        stage_started: BTreeMap::new(),
        started,
    };
    let mut exec_holder = None;
    let result = unwound(r.go(&mut exec_holder)).await;
    match result {
        Ok(status) => r.report.status = status,
        Err(Stop::Cancelled) => {
            r.report.status = "stopped".into();
            r.say("stopped: the work so far is in the report; the repository is untouched");
        }
        Err(Stop::Fatal(e)) => {
            r.report.status = "failed".into();
            r.say(&format!("error: {e}"));
            r.report.error = Some(e);
        }
    }
    if let Some(exec) = &exec_holder {
        r.report.sandbox_jobs = exec.jobs_run();
        r.report.sandbox_ms = exec.sandbox_ms.load(std::sync::atomic::Ordering::Relaxed);
        r.report.environment = exec.environment();
        exec.close().await;
    }
    r.report.tokens = llm.usage();
    r.report.duration_ms = started.elapsed().as_millis() as u64;
    r.report.kept_files = r.kept.iter().map(|(n, _)| n.clone()).collect();
    Outcome {
        report: r.report,
        kept: r.kept,
    }
}

/// `run`'s work, with a panic in it (a bug of cordon's) turned into a fatal stop: the report
/// is still written and the warm pool drained, instead of the process leaving its sandboxes.
async fn unwound(work: impl Future<Output = Result<String, Stop>>) -> Result<String, Stop> {
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(Stop::Fatal(format!(
                "internal error, a bug in cordon (please report it): {what}"
            )))
        }
    }
}

impl Run<'_> {
    fn say(&self, s: &str) {
        (self.progress)(s);
    }

    fn time(&mut self, stage: &'static str, since: Instant) {
        *self.report.stages_ms.entry(stage.to_string()).or_default() +=
            since.elapsed().as_millis() as u64;
        let _ = &self.stage_started;
    }

    fn over_budget(&self) -> bool {
        self.opts
            .time_budget
            .is_some_and(|b| self.started.elapsed() >= b)
    }

    fn check_cancel(&self) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            Err(Stop::Cancelled)
        } else {
            Ok(())
        }
    }

    /// 0. The model endpoint answers (and takes the key) before any sandbox time is spent.
    async fn probe_model(&mut self) -> Result<(), Stop> {
        let t = Instant::now();
        let cfg = &self.llm.config;
        self.say(&format!(
            "model: asking {} for `{}`",
            cfg.base_url, cfg.model
        ));
        let probe = self
            .llm
            .probe()
            .await
            .map_err(|e| Stop::Fatal(crate::error::error_chain(&e)))?;
        if probe.lists(&cfg.model) == Some(false) {
            let listed = probe.models.clone().unwrap_or_default();
            self.say(&format!(
                "model: warning: `{}` is not among the endpoint's models ({}); a server with one model may answer anyway — set --model or OPENAI_MODEL",
                cfg.model,
                llm::clip(&listed.join(", "), 200)
            ));
        }
        self.time("probe", t);
        Ok(())
    }

    async fn go(&mut self, exec_holder: &mut Option<Executor>) -> Result<String, Stop> {
        self.probe_model().await?;
        let project = self.detect()?;
        // The baseline's time includes making the executor (its preflight).
        let t = Instant::now();
        self.check_cancel()?;
        let exec = Executor::new(
            &self.opts.repo,
            &project,
            self.opts.exec.clone(),
            self.cancel.clone(),
        )
        .await?;
        let exec = exec_holder.insert(exec);
        let baseline_cov = self.baseline(exec, &project, t).await?;
        let (status, current) = self.iterate(exec, &project, baseline_cov).await?;
        // Final: the existing suite and the kept tests together.
        self.check_cancel()?;
        self.final_run(exec, &project, &current).await?;
        Ok(status)
    }

    /// 1. detect: what the repository holds, into the report.
    fn detect(&mut self) -> Result<Project, Stop> {
        let t = Instant::now();
        self.say(&format!("detect: reading {}", self.opts.repo.display()));
        let project = detect::detect(&self.opts.repo)
            .map_err(|e| Stop::Fatal(crate::error::error_chain(&e)))?;
        if let Some(aim) = self
            .opts
            .only
            .iter()
            .find(|a| !project.sources.iter().any(|f| a.covers_file(f)))
        {
            return Err(Stop::Fatal(format!(
                "--only {}: no source file of the project is there (the sources are those `detect` lists; tests are never aimed at)",
                aim.path
            )));
        }
        self.report.project = Some(report::ProjectSummary {
            python_root: project.python_root.clone(),
            framework: format!("{:?}", project.framework).to_lowercase(),
            source_files: project.sources.len(),
            test_files: project.tests.len(),
            external_imports: project.external_imports.clone(),
        });
        self.say(&format!(
            "detect: {} source files (root `{}`), {} test files, framework {:?}{}",
            project.sources.len(),
            if project.python_root.is_empty() {
                "."
            } else {
                &project.python_root
            },
            project.tests.len(),
            project.framework,
            if project.external_imports.is_empty() {
                String::new()
            } else if self.opts.exec.install.prepare(&project, None).is_some() {
                format!(
                    "; imports from outside the project (to be installed): {}",
                    project.external_imports.join(", ")
                )
            } else {
                format!(
                    "; imports not in the image unless bundled: {}",
                    project.external_imports.join(", ")
                )
            }
        ));
        self.time("detect", t);
        Ok(project)
    }

    /// 2. baseline: the existing tests with coverage, in the sandbox. Their coverage.
    async fn baseline(
        &mut self,
        exec: &Executor,
        project: &Project,
        t: Instant,
    ) -> Result<Coverage, Stop> {
        exec.set_generated(&[])?;
        if let Some(cmd) = exec.install_command() {
            self.say(&format!(
                "dependencies: `{cmd}` in a sandbox that reaches only package registries; built once, then cached as an environment image"
            ));
            self.report.settings.install = Some(cmd.to_string());
        }
        self.say("baseline: running the existing tests with branch coverage in the sandbox");
        let base = exec
            .run(
                "baseline",
                &[PytestRun {
                    args: project.suite_args(),
                    coverage: true,
                    default_collection: false,
                    cov_append: false,
                }],
            )
            .await?;
        let run = base.runs.first().cloned().unwrap_or_default();
        let (summary, baseline_cov) = summarize(&run, project);
        let Some(baseline_cov) = baseline_cov else {
            return Err(Stop::Fatal(format!(
                "the baseline run produced no coverage report (pytest exit status {:?}): {}",
                run.exit,
                llm::clip(run.output.trim(), 600)
            )));
        };
        self.say(&format!(
            "baseline: {} tests ({} failing{}), coverage {:.1}% lines, {:.1}% branches",
            summary.tests,
            summary.failed,
            if summary.failed > 0 {
                ", quarantined"
            } else {
                ""
            },
            summary.coverage.line_percent(),
            summary.coverage.branch_percent()
        ));
        self.report.baseline = Some(summary);
        self.time("baseline", t);

        Ok(baseline_cov)
    }

    /// 3-8. gaps → generate → validate → classify → fix, until the target, the budget or
    /// the gaps run out. How it ended, and the coverage reached.
    async fn iterate(
        &mut self,
        exec: &Executor,
        project: &Project,
        baseline_cov: Coverage,
    ) -> Result<(String, Coverage), Stop> {
        let workspace = exec.workspace();
        let mut current = baseline_cov;
        // Candidates each gap has had so far.
        let mut tried: BTreeMap<String, u32> = BTreeMap::new();
        let mut status = "budget_spent".to_string();
        for it in 1..=self.opts.max_iterations {
            self.check_cancel()?;
            let pct = self.aimed_totals(&current).combined_percent();
            if pct >= self.opts.target_coverage {
                status = "target_reached".into();
                break;
            }
            let t = Instant::now();
            let gaps = self.next_gaps(project, &workspace, &current, &tried);
            self.time("gaps", t);
            if gaps.is_empty() {
                status = "no_gaps_left".into();
                break;
            }
            self.report.iterations = it;
            self.say(&format!(
                "iteration {it}/{}: coverage{} {:.1}% (target {:.0}%), {} gaps: {}",
                self.opts.max_iterations,
                if self.opts.only.is_empty() {
                    ""
                } else {
                    " of the --only files"
                },
                pct,
                self.opts.target_coverage,
                gaps.len(),
                gaps.iter().map(|g| g.key()).collect::<Vec<_>>().join(", ")
            ));
            for (i, gap) in gaps.iter().enumerate() {
                self.check_cancel()?;
                if self.over_budget() {
                    self.say("time budget spent: no new gap is started; the final run follows");
                    return Ok(("time_budget_spent".into(), current));
                }
                let n = tried.entry(gap.key()).or_insert(0);
                *n = n.saturating_add(1);
                let sample = *n - 1;
                let again = match sample {
                    0 => String::new(),
                    k => format!(" (candidate {})", k + 1),
                };
                self.say(&format!(
                    "  [{}/{}] {}{again}",
                    i + 1,
                    gaps.len(),
                    gap.key()
                ));
                let (cr, kept) = self
                    .one_gap(exec, project, &workspace, gap, sample, &current)
                    .await?;
                self.say(&format!(
                    "        {}{}",
                    cr.status,
                    if cr.status == "kept" {
                        format!(
                            ": {} tests, +{} lines, +{} branches",
                            cr.tests_kept, cr.gain_lines, cr.gain_branches
                        )
                    } else {
                        format!(": {}", cr.reason)
                    }
                ));
                if let Some((cand, cov)) = kept {
                    current = current.union(&cov);
                    self.kept.push((cand.file_name.clone(), cand.content()));
                    // A gap with a kept candidate gets no other.
                    tried.insert(gap.key(), u32::MAX);
                }
                self.report.candidates.push(cr);
            }
        }
        if status == "budget_spent"
            && self.aimed_totals(&current).combined_percent() >= self.opts.target_coverage
        {
            status = "target_reached".into();
        }

        Ok((status, current))
    }

    /// The totals the target and the progress line speak of: the files `--only` aims at, else
    /// the whole project.
    fn aimed_totals(&self, cov: &Coverage) -> coverage::Totals {
        cov.totals_of(|f| {
            self.opts.only.is_empty() || self.opts.only.iter().any(|a| a.covers_file(f))
        })
    }

    /// This iteration's gaps: those aimed at (`--only`, a pull request's changed lines) that
    /// may still get a candidate, the ones never tried first, then by rank.
    fn next_gaps(
        &self,
        project: &Project,
        workspace: &std::path::Path,
        current: &Coverage,
        tried: &BTreeMap<String, u32>,
    ) -> Vec<gaps::Gap> {
        let tries = |g: &gaps::Gap| tried.get(&g.key()).copied().unwrap_or(0);
        let mut gaps: Vec<gaps::Gap> = gaps::find(project, workspace, current)
            .into_iter()
            .filter(|g| self.opts.only.is_empty() || self.opts.only.iter().any(|a| a.covers(g)))
            .filter_map(|g| match &self.opts.changed {
                Some(lines) => lines.restrict(g),
                None => Some(g),
            })
            .filter(|g| tries(g) < self.opts.candidates_per_gap.max(1))
            .collect();
        // Definitions of one name (click's `@overload`s of `group`) are one gap: the first.
        let mut seen = BTreeSet::new();
        gaps.retain(|g| seen.insert(g.key()));
        // Stable: within each count of tries, the rank order of `gaps::find` stays.
        gaps.sort_by_key(|g| tries(g));
        gaps.truncate(self.opts.gaps_per_iteration as usize);
        gaps
    }

    async fn final_run(
        &mut self,
        exec: &Executor,
        project: &Project,
        estimate: &Coverage,
    ) -> Result<(), Stop> {
        let t = Instant::now();
        if self.kept.is_empty() {
            self.report.after = self.report.baseline.clone();
            return Ok(());
        }
        self.say(&format!(
            "final: the existing suite plus {} kept file(s), together in the sandbox",
            self.kept.len()
        ));
        exec.set_generated(&self.kept)?;
        let files: Vec<String> = self
            .kept
            .iter()
            .map(|(n, _)| format!("{}/cordon/{n}", exec::GENERATED_DIR))
            .collect();
        let job = exec
            .run(
                "final",
                &[
                    PytestRun {
                        args: project.suite_args(),
                        coverage: true,
                        default_collection: false,
                        cov_append: false,
                    },
                    PytestRun {
                        args: files,
                        coverage: true,
                        default_collection: true,
                        cov_append: true,
                    },
                ],
            )
            .await?;
        let second = job.runs.get(1).cloned().unwrap_or_default();
        let (mut summary, cov) = summarize(&second, project);
        match cov {
            Some(_) => {}
            None => {
                summary.set_coverage(estimate);
                self.say("final: no combined coverage report; the figure is the union of the runs");
            }
        }
        if let Some(b) = &self.report.baseline {
            summary.quarantined = b.quarantined.clone();
        }
        self.say(&format!(
            "final: {} generated tests ran together, {} failed; coverage {:.1}% lines, {:.1}% branches",
            summary.tests,
            summary.failed,
            summary.coverage.line_percent(),
            summary.coverage.branch_percent()
        ));
        self.report.after = Some(summary);
        self.time("final", t);
        Ok(())
    }

    /// Generate → check → validate → classify → fix for one gap.
    async fn one_gap(
        &mut self,
        exec: &Executor,
        project: &Project,
        workspace: &std::path::Path,
        gap: &gaps::Gap,
        sample: u32,
        current: &Coverage,
    ) -> Result<(CandidateReport, Option<(Candidate, Coverage)>), Stop> {
        let started = Instant::now();
        let n = self.report.candidates.len() as u32 + 1;
        let file_name = generate::file_name(gap, n);
        let mut cr = CandidateReport {
            target: gap.key(),
            file: format!("{}/{file_name}", exec::GENERATED_DIR),
            status: "rejected".into(),
            ..Default::default()
        };
        let Some(mut ctx) = generate::context(project, workspace, gap) else {
            cr.reason = "the source of the target could not be read".into();
            return Ok((cr, None));
        };
        match self.fitting_shrink(&ctx) {
            Ok(s) => ctx.shrink = s,
            Err(reason) => {
                self.say(&format!("        warning: {reason}; skipping this target"));
                cr.reason = reason;
                cr.time_ms = started.elapsed().as_millis() as u64;
                return Ok((cr, None));
            }
        }
        let t = Instant::now();
        let generated = self
            .generate(&ctx, project, &file_name, sample, &mut cr.attempts)
            .await?;
        self.time("generate", t);
        let mut cand = match generated {
            Ok(c) => c,
            Err(reason) => {
                cr.reason = reason;
                cr.time_ms = started.elapsed().as_millis() as u64;
                return Ok((cr, None));
            }
        };
        cr.tests_generated = cand.tests.len() as u32;
        cr.repairs = cand.repairs.clone();
        cr.status = "discarded".into();
        let verdict = self
            .refine(exec, project, gap, &ctx, &mut cand, &mut cr)
            .await?;
        cr.time_ms = started.elapsed().as_millis() as u64;
        // The repairs of the last version, those after the model's answer included.
        cr.repairs = cand.repairs.clone();
        // Characterizations count only for the tests that stayed.
        cr.characterized.retain(|c| cand.tests.contains(&c.test));
        let Some(v) = verdict else {
            cr.characterized.clear();
            return Ok((cr, None));
        };
        let Some(cov) = v.coverage.map(|c| restrict(c, project)) else {
            cr.reason = "the run produced no coverage report".into();
            return Ok((cr, None));
        };
        let gain = cov.gain_over(current);
        cr.gain_lines = gain.lines;
        cr.gain_branches = gain.branches;
        if gain.is_empty() {
            cr.characterized.clear();
            cr.reason = "passes, but covers nothing new".into();
            return Ok((cr, None));
        }
        // Counted only for a kept file: a discarded one's passing tests are not in the result.
        cr.tests_kept = cand.tests.len() as u32;
        cr.status = "kept".into();
        cr.reason = String::new();
        Ok((cr, Some((cand, cov))))
    }

    /// The least shrink level whose generation prompt fits the model's context (every request
    /// of the gap starts with that level's head), or why none does.
    fn fitting_shrink(&self, ctx: &generate::Context) -> Result<u8, String> {
        let fits = |s: u8| {
            self.llm
                .fits(&generate::prompt(ctx, s), self.llm.config.max_tokens)
        };
        match (0..=3u8).find(|&s| fits(s).is_ok()) {
            Some(s) => Ok(s),
            None => Err(fits(3).err().map(|e| e.to_string()).unwrap_or_default()),
        }
    }

    /// Asks the model for tests of one gap (its `sample`-th candidate), with another try when
    /// an answer is rejected before running. `Err(reason)` inside when no answer was usable.
    async fn generate(
        &mut self,
        ctx: &generate::Context,
        project: &Project,
        file_name: &str,
        sample: u32,
        attempts: &mut Vec<report::Attempt>,
    ) -> Result<Result<Candidate, String>, Stop> {
        let mut last_reason = String::new();
        for attempt in 0..self.opts.generation_attempts.max(1) {
            if attempt > 0 && self.over_budget() {
                break;
            }
            let mut messages = generate::prompt(ctx, ctx.shrink);
            if attempt > 0
                && let Some(m) = messages.last_mut()
            {
                m.content.push_str(&format!(
                    "\nYour previous answer was unusable: {last_reason}. Reply with one short ```python block, at most 3 tests."
                ));
            }
            // A gap's first answer is the model's likeliest; any other is a new sample.
            let temp = if attempt == 0 && sample == 0 {
                0.2
            } else {
                0.7
            };
            let reply = match self
                .chat(&messages, temp, generate::GENERATE_MAX_TOKENS)
                .await?
            {
                Ok(r) => r,
                Err(e) => {
                    last_reason = e.to_string();
                    continue;
                }
            };
            // A cut-off answer keeps the tests it finished.
            let mut salvaged = "";
            let code = generate::extract(&reply.content).map(|code| match reply.truncated {
                true => generate::salvage_truncated(&code)
                    .map(|(code, what)| {
                        salvaged = what;
                        code
                    })
                    .ok_or(Rejection::Truncated),
                false => Ok(code),
            });
            let checked = match code {
                _ if reply.repetitive => Err(Rejection::Repetitive),
                None if reply.truncated => Err(Rejection::Truncated),
                None => Err(Rejection::NoCode),
                Some(Err(r)) => Err(r),
                Some(Ok(code)) => generate::check(&code, ctx, project, file_name).map(|mut c| {
                    if reply.truncated {
                        c.repairs
                            .push(format!("the answer was cut off at max_tokens; {salvaged}"));
                    }
                    c
                }),
            };
            let outcome = match &checked {
                Ok(_) => "passed the static checks".to_string(),
                Err(r) => format!("rejected: {r}"),
            };
            attempts.push(report::Attempt::new("answer", &reply.content, outcome));
            match checked {
                Ok(c) => return Ok(Ok(c)),
                Err(r) => last_reason = r.to_string(),
            }
        }
        Ok(Err(last_reason))
    }

    /// Validate; classify failures; fix test mistakes; repeat within the budget. The
    /// validation of what is left in `cand`, or `None` (the reason in `cr`).
    async fn refine(
        &mut self,
        exec: &Executor,
        project: &Project,
        gap: &gaps::Gap,
        ctx: &generate::Context,
        cand: &mut Candidate,
        cr: &mut CandidateReport,
    ) -> Result<Option<validate::Validation>, Stop> {
        let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut characterized: BTreeMap<String, u32> = BTreeMap::new();
        let mut fix_rounds = 0u32;
        let mut prunes = 0u32;
        let mut import_repairs = 0u32;
        let mut str_paths_done: BTreeSet<String> = BTreeSet::new();
        loop {
            self.check_cancel()?;
            let t = Instant::now();
            exec.set_generated(&[(cand.file_name.clone(), cand.content())])?;
            let v =
                validate::validate(exec, cand, self.opts.repeats, true, &project.sources).await?;
            self.time("validate", t);
            if let Some(h) = &v.harness_error {
                cr.reason = format!("harness error: {h}");
                return Ok(None);
            }
            cr.attempts.push(report::Attempt::new(
                "run",
                &cand.content(),
                v.outcome_line(),
            ));
            if v.all_stable() {
                return Ok(Some(v));
            }
            // A file pytest could not import: what broke it goes, the rest runs again. Each
            // repair removes a test or a name; bounded anyway.
            if let Some(case) = collection::file_error(&v)
                && import_repairs < MAX_IMPORT_REPAIRS
                && let Some((next, note)) = collection::repair(cand, case)
            {
                import_repairs += 1;
                self.say(&format!("        {note}"));
                *cand = next;
                cand.repairs.push(note);
                continue;
            }
            // Wrong expected values first: no model time, the value is in pytest's message.
            let mut pending = if self.opts.characterize {
                self.characterize(&v, cand, cr, &mut characterized)
            } else {
                Vec::new()
            };
            self.pass_str_paths(&v, cand, &mut str_paths_done, &mut pending);
            let t = Instant::now();
            // Past the time budget, a gap in flight gets no more fix rounds.
            let fixable = fix_rounds < self.opts.fix_attempts && !self.over_budget();
            let (remove, to_fix) = self
                .sort_failures(&v, project, gap, ctx, cand, fixable, &pending, cr)
                .await?;
            self.time("classify", t);
            if !to_fix.is_empty() {
                let t = Instant::now();
                let workspace = exec.workspace();
                let to_fix: Vec<_> = to_fix
                    .into_iter()
                    .map(|(node, err)| {
                        let h = hints::for_error(&err, project, &workspace);
                        (node, err, h)
                    })
                    .collect();
                fix_rounds += 1;
                cr.fix_attempts = fix_rounds;
                let next = self
                    .fix_tests(ctx, project, cand, &to_fix, &mut history, fix_rounds)
                    .await?;
                match fix::without(&next, &remove) {
                    Some(c) => *cand = c,
                    None => {
                        cr.reason = "no test left after removing failing ones".into();
                        return Ok(None);
                    }
                }
                self.time("fix", t);
                continue;
            }
            if !pending.is_empty() {
                // Characterized tests run again; what could not be saved goes.
                match fix::without(cand, &remove) {
                    Some(c) => *cand = c,
                    None => {
                        cr.reason = "no test left after removing failing ones".into();
                        return Ok(None);
                    }
                }
                continue;
            }
            // Nothing to fix: drop what failed and validate what is left again — test by
            // test, never all-or-nothing. Each prune removes at least one test; bounded anyway.
            if prunes >= 3 {
                cr.reason = "the remaining tests did not pass consistently".into();
                return Ok(None);
            }
            prunes += 1;
            match fix::without(cand, &remove) {
                Some(c) => *cand = c,
                None => {
                    cr.reason = "no test passed".into();
                    return Ok(None);
                }
            }
        }
    }

    /// Turns the failed tests whose only fault is a wrong literal in a one-line equality into
    /// characterization tests (at most 3 times per test), in `cand` and recorded in `cr`.
    /// Returns the tests changed, to be validated again.
    fn characterize(
        &self,
        v: &validate::Validation,
        cand: &mut Candidate,
        cr: &mut CandidateReport,
        done: &mut BTreeMap<String, u32>,
    ) -> Vec<String> {
        let mut failed: Vec<(usize, &String, &exec::Case)> = v
            .tests
            .iter()
            .filter(|(n, o)| {
                o.status == Status::Failed
                    && done.get(*n).copied().unwrap_or(0) < MAX_CHARACTERIZATIONS
            })
            .filter_map(|(n, o)| {
                let c = o.case.as_ref()?;
                Some((characterize::test_line(c, &cand.file_name)?, n, c))
            })
            .collect();
        // From the bottom up: a characterization adds a comment line above its assertion.
        failed.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut changed = Vec::new();
        for (_, node, case) in failed {
            if let Some((next, ch)) = characterize::characterize(cand, node, case) {
                *cand = next;
                *done.entry(node.clone()).or_default() += 1;
                self.say(&format!(
                    "        characterized {node}: expected {} -> observed {}",
                    llm::clip(&ch.expected_by_model, 60),
                    llm::clip(&ch.observed, 60)
                ));
                cr.characterized.push(ch);
                changed.push(node.clone());
            }
        }
        self.split_parametrized(v, cand, cr, &mut changed);
        changed
    }

    /// Each failed test that gave the code a `Path` where it wants a `str`, not yet mended and
    /// not just characterized, gets its `Path("…")` literals as strings ([`str_paths`]), in
    /// `cand` and its repairs; its node goes into `changed`, to run again.
    fn pass_str_paths(
        &self,
        v: &validate::Validation,
        cand: &mut Candidate,
        done: &mut BTreeSet<String>,
        changed: &mut Vec<String>,
    ) {
        for (node, outcome) in &v.tests {
            let Some(case) = outcome.case.as_ref() else {
                continue;
            };
            if outcome.status != Status::Failed
                || changed.contains(node)
                || done.contains(node)
                || !str_paths::wants_str(case)
            {
                continue;
            }
            done.insert(node.clone());
            if let Some((next, note)) = str_paths::repair(cand, node) {
                self.say(&format!("        {note}"));
                *cand = next;
                cand.repairs.push(note);
                changed.push(node.clone());
            }
        }
    }

    /// Splits each parametrized test that failed in a way [`characterize`] rewrites into one
    /// plain test per case, in `cand` and noted in its repairs; its node goes into `changed`.
    /// The cases count as generated tests from now on, as pytest counts them.
    fn split_parametrized(
        &self,
        v: &validate::Validation,
        cand: &mut Candidate,
        cr: &mut CandidateReport,
        changed: &mut Vec<String>,
    ) {
        for (node, outcome) in &v.tests {
            let Some(case) = outcome.case.as_ref() else {
                continue;
            };
            if outcome.status != Status::Failed
                || !case.name.contains('[')
                || !characterize::is_characterizable(case, &cand.file_name)
            {
                continue;
            }
            if let Some((next, note)) = parametrized::split(cand, node) {
                let added = next.tests.len().saturating_sub(cand.tests.len()) as u32;
                cr.tests_generated += added;
                self.say(&format!("        {note}"));
                *cand = next;
                cand.repairs.push(note);
                changed.push(node.clone());
            }
        }
    }

    /// Sorts a validation's unstable tests into those to remove (recorded in `cr`, suspected
    /// code bugs in the report) and test mistakes to fix (node, error excerpt), only while
    /// `fixable`. Tests in `pending` (just characterized) are left alone.
    #[allow(clippy::too_many_arguments)]
    async fn sort_failures(
        &mut self,
        v: &validate::Validation,
        project: &Project,
        gap: &gaps::Gap,
        ctx: &generate::Context,
        cand: &Candidate,
        fixable: bool,
        pending: &[String],
        cr: &mut CandidateReport,
    ) -> Result<(Vec<String>, Vec<(String, String)>), Stop> {
        let mut remove: Vec<String> = Vec::new();
        let mut to_fix: Vec<(String, String)> = Vec::new();
        let mut verdicts: BTreeMap<String, classify::Classification> = BTreeMap::new();
        let mut discard = |node: &String, reason: String, classification| {
            remove.push(node.clone());
            cr.discarded_tests.push(DiscardedTest {
                test: node.clone(),
                reason,
                classification,
            });
        };
        for (node, o) in v.tests.iter().filter(|(n, _)| !pending.contains(n)) {
            match o.status {
                Status::Stable => {}
                Status::NotRun => discard(node, "not collected".into(), None),
                Status::Flaky => discard(
                    node,
                    "flaky: passed once, failed on a repeat or alone".into(),
                    None,
                ),
                Status::Failed => {
                    let case = o.case.clone().unwrap_or_else(|| exec::Case {
                        node: node.clone(),
                        classname: String::new(),
                        name: node.clone(),
                        status: exec::CaseStatus::Error,
                        message: String::new(),
                        text: String::new(),
                    });
                    let test_src = fix::test_source(cand, node).unwrap_or_default();
                    // Tests of one file that no rule decides, failing with the same error
                    // (pathspec: four with "expected string or bytes-like object, got
                    // 'PosixPath'" inside the code under test), get one verdict: the model
                    // is asked once.
                    let key = classify::error_line(&case);
                    let c = match classify::by_rules(&case, o.end, project) {
                        Some(c) => c,
                        None if !key.is_empty() && verdicts.contains_key(&key) => {
                            verdicts[&key].clone()
                        }
                        None => {
                            let c = self.classify(&case, o.end, project, &test_src, ctx).await?;
                            verdicts.insert(key, c.clone());
                            c
                        }
                    };
                    match c.class {
                        Class::LikelyCodeBug => {
                            self.report.suspected_bugs.push(SuspectedBug {
                                target: gap.key(),
                                test: node.clone(),
                                evidence: c.evidence.clone(),
                                by: c.by.clone(),
                                test_source: test_src,
                            });
                            discard(
                                node,
                                "likely code bug (reported, not fixed)".into(),
                                Some(c),
                            );
                        }
                        Class::Environment => discard(node, "environment problem".into(), Some(c)),
                        Class::TestMistake if fixable => {
                            let err = if case.text.is_empty() {
                                c.evidence.clone()
                            } else {
                                fix::error_excerpt(&case.text, 30)
                            };
                            // Failed at setup in a fixture of the file (click: a `Context()`
                            // built without its command, 5 tests at once): the fixture is
                            // fixed, once, and its tests run again with it.
                            let fixture = characterize::failing_line(&case, &cand.file_name)
                                .and_then(|l| fix::fixture_at(cand, l));
                            match fixture {
                                Some(f) if to_fix.iter().any(|(n, _)| n == &f) => {}
                                Some(f) => to_fix.push((f, err)),
                                None => to_fix.push((node.clone(), err)),
                            }
                        }
                        Class::TestMistake => {
                            let reason = format!(
                                "test mistake ({}), not fixed",
                                c.by.trim_start_matches("rule:")
                            );
                            discard(node, reason, Some(c));
                        }
                    }
                }
            }
        }
        Ok((remove, to_fix))
    }

    /// Why a test failed: by the rules, else by the model (a test mistake if it cannot say).
    async fn classify(
        &self,
        case: &exec::Case,
        end: classify::RunEnd,
        project: &Project,
        test_src: &str,
        ctx: &generate::Context,
    ) -> Result<classify::Classification, Stop> {
        if let Some(c) = classify::by_rules(case, end, project) {
            return Ok(c);
        }
        match self
            .with_cancel(classify::by_model(
                self.llm,
                case,
                test_src,
                &generate::head(ctx, ctx.shrink),
            ))
            .await?
        {
            Ok(c) => Ok(c),
            Err(e) if e.is_fatal() => Err(Stop::Fatal(crate::error::error_chain(&e))),
            Err(e) => Ok(classify::Classification {
                class: Class::TestMistake,
                by: "default".into(),
                evidence: format!(
                    "{} (the model could not classify: {e})",
                    classify::error_line(case)
                ),
            }),
        }
    }

    /// One fix round: asks the model to fix each test in `to_fix` (node, error), keeping per
    /// test what was tried. Returns the candidate with the fixes that applied.
    async fn fix_tests(
        &mut self,
        ctx: &generate::Context,
        project: &Project,
        cand: &Candidate,
        to_fix: &[(String, String, Vec<String>)],
        history: &mut BTreeMap<String, Vec<String>>,
        round: u32,
    ) -> Result<Candidate, Stop> {
        let mut next = cand.clone();
        for (node, err, hints) in to_fix {
            let Some(src) = fix::test_source(&next, node) else {
                continue;
            };
            let h = history.entry(node.clone()).or_default();
            let messages = fix::prompt(ctx, &src, err, hints, h);
            let reply = match self
                .chat(
                    &messages,
                    fix::temperature(round - 1),
                    generate::FIX_MAX_TOKENS,
                )
                .await?
            {
                Ok(r) => r,
                Err(e) => {
                    h.push(format!("no usable answer: {e}"));
                    continue;
                }
            };
            let applied = match generate::extract(&reply.content) {
                None => Err("the answer had no code block".to_string()),
                Some(_) if reply.truncated => Err("the answer was cut off".to_string()),
                Some(code) => fix::apply(&next, node, &code, ctx, project),
            };
            match applied {
                Ok(c) => {
                    h.push(format!(
                        "it failed with: {}",
                        err.lines()
                            .rev()
                            .find(|l| l.starts_with("E "))
                            .unwrap_or(err.lines().last().unwrap_or(""))
                    ));
                    next = c;
                }
                Err(e) => h.push(e),
            }
        }
        Ok(next)
    }

    /// A chat call that stops on Ctrl-C and ends the run if the endpoint is gone.
    async fn chat(
        &self,
        messages: &[llm::Message],
        temperature: f32,
        max_tokens: u32,
    ) -> Result<Result<llm::Reply, LlmError>, Stop> {
        let max_tokens = max_tokens.min(self.llm.config.max_tokens);
        match self
            .with_cancel(self.llm.chat(messages, temperature, Some(max_tokens)))
            .await?
        {
            Err(e) if e.is_fatal() => Err(Stop::Fatal(crate::error::error_chain(&e))),
            r => Ok(r),
        }
    }

    async fn with_cancel<T>(&self, f: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            r = f => Ok(r),
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
        }
    }
}

/// Keeps only the project's source files.
fn restrict(mut c: Coverage, project: &Project) -> Coverage {
    c.files.retain(|p, _| project.sources.contains(p));
    c
}

/// Test counts and coverage of one pytest run.
fn summarize(run: &exec::RunArtifacts, project: &Project) -> (RunSummary, Option<Coverage>) {
    let mut s = RunSummary::default();
    if let Some(cases) = run.junit.as_deref().and_then(exec::junit_cases) {
        for c in &cases {
            s.tests += 1;
            match c.status {
                exec::CaseStatus::Passed => s.passed += 1,
                exec::CaseStatus::Failed | exec::CaseStatus::Error => {
                    s.failed += 1;
                    if s.quarantined.len() < 200 {
                        s.quarantined.push(format!("{}::{}", c.classname, c.name));
                    }
                }
                exec::CaseStatus::Skipped => {}
            }
        }
    }
    let cov = run
        .coverage
        .as_deref()
        .and_then(|x| coverage::parse_for(x, WORKSPACE, &project.sources).ok())
        .map(|c| restrict(c, project));
    if let Some(c) = &cov {
        s.set_coverage(c);
    }
    (s, cov)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in the work becomes a fatal stop that names it; a result passes through.
    #[tokio::test]
    async fn a_panic_in_the_run_is_a_fatal_stop() {
        let count = u32::MAX;
        let stop = unwound(async move {
            let n = count.checked_add(1).expect("gap count overflowed");
            Ok(n.to_string())
        })
        .await;
        match stop {
            Err(Stop::Fatal(e)) => assert!(
                e.starts_with("internal error, a bug in cordon")
                    && e.ends_with("gap count overflowed"),
                "{e}"
            ),
            _ => panic!("not a fatal stop"),
        }
        assert!(matches!(unwound(async { Ok("done".to_string()) }).await, Ok(s) if s == "done"));
        assert!(matches!(
            unwound(async { Err(Stop::Cancelled) }).await,
            Err(Stop::Cancelled)
        ));
    }
}
