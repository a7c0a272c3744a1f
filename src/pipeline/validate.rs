//! Stage 5, validate a candidate in the sandbox, TestGen-LLM style: it runs, it passes, it
//! passes again on repeated runs (in reverse order) and alone, and what it covers is read from
//! the first run. "0 tests ran" is a harness error, not a verdict.

use std::collections::BTreeMap;

use serde::Serialize;

use super::classify::RunEnd;
use super::coverage::{self, Coverage};
use super::exec::{
    Case, CaseStatus, ExecError, Executor, GENERATED_DIR, PytestRun, RunArtifacts, WORKSPACE,
};
use super::generate::Candidate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Passed in every run.
    Stable,
    Failed,
    /// Passed once, failed in a repeat or alone.
    Flaky,
    /// Not in the JUnit report.
    NotRun,
}

#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub status: Status,
    /// The failing case, for failed and flaky tests.
    pub case: Option<Case>,
    pub end: RunEnd,
}

#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// Something about the run itself went wrong: no report, nothing collected.
    pub harness_error: Option<String>,
    pub tests: BTreeMap<String, TestOutcome>,
    /// What the first run covered.
    pub coverage: Option<Coverage>,
    pub output: String,
}

impl Validation {
    pub fn all_stable(&self) -> bool {
        !self.tests.is_empty() && self.tests.values().all(|t| t.status == Status::Stable)
    }
    /// One line per test: its status, and for a failure pytest's message (cut short).
    pub fn outcome_line(&self) -> String {
        if let Some(h) = &self.harness_error {
            return format!("harness error: {h}");
        }
        let line = |(node, t): (&String, &TestOutcome)| {
            let message = t.case.as_ref().map_or("", |c| c.message.as_str());
            let message: String = message.chars().take(200).collect();
            match t.status {
                Status::Stable => format!("{node}: passed"),
                s => format!("{node}: {s:?} {message}").trim_end().to_string(),
            }
        };
        self.tests.iter().map(line).collect::<Vec<_>>().join("\n")
    }

    pub fn with_status(&self, s: Status) -> Vec<String> {
        self.tests
            .iter()
            .filter(|(_, t)| t.status == s)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// The candidate's path in the workspace.
pub fn path_of(c: &Candidate) -> String {
    format!("{GENERATED_DIR}/cordon/{}", c.file_name)
}

fn end_of(run: &RunArtifacts) -> RunEnd {
    match run.exit {
        Some(124) => RunEnd::TimedOut,
        Some(137) | Some(-9) => RunEnd::Killed,
        _ => RunEnd::Normal,
    }
}

/// Runs `cand` (already written to the workspace with [`Executor::set_generated`]) `repeats`
/// times, and each test alone when `isolation`.
pub async fn validate(
    exec: &Executor,
    cand: &Candidate,
    repeats: u32,
    isolation: bool,
    sources: &[String],
) -> Result<Validation, ExecError> {
    let path = path_of(cand);
    let mut runs = vec![PytestRun {
        args: vec![path.clone()],
        coverage: true,
        default_collection: true,
        cov_append: false,
    }];
    let reversed: Vec<String> = cand
        .tests
        .iter()
        .rev()
        .map(|t| format!("{path}::{t}"))
        .collect();
    for _ in 1..repeats.max(1) {
        runs.push(PytestRun {
            args: reversed.clone(),
            coverage: false,
            default_collection: true,
            cov_append: false,
        });
    }
    if isolation && cand.tests.len() > 1 {
        // Every test, however many: a test kept is one that passed alone. Their number is
        // bounded by the model's answer and by what a split may add (`parametrized`).
        for t in &cand.tests {
            runs.push(PytestRun {
                args: vec![format!("{path}::{t}")],
                coverage: false,
                default_collection: true,
                cov_append: false,
            });
        }
    }
    let job = exec.run(&cand.file_name, &runs).await?;
    Ok(judge(cand, &job.runs, sources))
}

/// Turns the runs' reports into per-test outcomes.
/// `sources` are the project's source files, to read coverage paths against.
pub fn judge(cand: &Candidate, runs: &[RunArtifacts], sources: &[String]) -> Validation {
    let mut v = Validation {
        output: runs.first().map(|r| r.output.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let Some(first) = runs.first() else {
        v.harness_error = Some("the job ran nothing".into());
        return v;
    };
    let end = end_of(first);
    v.coverage = first
        .coverage
        .as_ref()
        .and_then(|x| coverage::parse_for(x, WORKSPACE, sources).ok());
    let cases1 = first.junit.as_deref().and_then(super::exec::junit_cases);
    let cases1 = match cases1 {
        Some(c) => c,
        None if end != RunEnd::Normal => {
            for t in &cand.tests {
                v.tests.insert(
                    t.clone(),
                    TestOutcome {
                        status: Status::Failed,
                        case: None,
                        end,
                    },
                );
            }
            return v;
        }
        None => {
            v.harness_error = Some(format!(
                "pytest wrote no JUnit report (exit status {:?}): {}",
                first.exit,
                super::llm::clip(first.output.trim(), 400)
            ));
            return v;
        }
    };
    // A collection error (the module failed to import) fails every test of the file.
    let file_error = cases1
        .iter()
        .find(|c| c.classname.is_empty() && c.status == CaseStatus::Error)
        .cloned();
    for t in &cand.tests {
        let mine: Vec<&Case> = cases1.iter().filter(|c| &c.node == t).collect();
        let outcome = if let Some(bad) = mine
            .iter()
            .find(|c| matches!(c.status, CaseStatus::Failed | CaseStatus::Error))
        {
            TestOutcome {
                status: Status::Failed,
                case: Some((*bad).clone()),
                end,
            }
        } else if mine.iter().any(|c| c.status == CaseStatus::Passed) {
            TestOutcome {
                status: Status::Stable,
                case: None,
                end,
            }
        } else if let Some(fe) = &file_error {
            TestOutcome {
                status: Status::Failed,
                case: Some(fe.clone()),
                end,
            }
        } else if end != RunEnd::Normal {
            TestOutcome {
                status: Status::Failed,
                case: None,
                end,
            }
        } else {
            TestOutcome {
                status: Status::NotRun,
                case: None,
                end,
            }
        };
        v.tests.insert(t.clone(), outcome);
    }
    if v.tests.values().all(|t| t.status == Status::NotRun) {
        v.harness_error = Some(format!(
            "0 of the file's {} tests ran (exit status {:?}); pytest collected something else or nothing",
            cand.tests.len(),
            first.exit
        ));
        return v;
    }
    // Repeats and isolated runs: a stable test passes in every one that ran it.
    for run in &runs[1..] {
        let rend = end_of(run);
        let cases = run
            .junit
            .as_deref()
            .and_then(super::exec::junit_cases)
            .unwrap_or_default();
        for (node, outcome) in v.tests.iter_mut() {
            if outcome.status != Status::Stable {
                continue;
            }
            let mine: Vec<&Case> = cases.iter().filter(|c| &c.node == node).collect();
            let failed = mine
                .iter()
                .find(|c| matches!(c.status, CaseStatus::Failed | CaseStatus::Error));
            if let Some(f) = failed {
                outcome.status = Status::Flaky;
                outcome.case = Some((*f).clone());
            } else if mine.is_empty() && rend != RunEnd::Normal {
                outcome.status = Status::Flaky;
                outcome.end = rend;
            }
        }
    }
    v
}
