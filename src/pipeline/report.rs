//! Stage 9, report: one JSON document and a Markdown summary — coverage before, after and
//! delta (lines and branches), every candidate kept or discarded with its reason, suspected
//! code bugs with their evidence, tokens spent, time per stage. Written on every path,
//! including an early stop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::classify::Classification;
use super::coverage::Totals;
use super::llm::Usage;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub cordon_version: String,
    pub repo: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub model: String,
    pub base_url: String,
    /// `target_reached`, `budget_spent`, `time_budget_spent`, `no_gaps_left`, `stopped`
    /// (Ctrl-C) or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    pub settings: Settings,
    pub project: Option<ProjectSummary>,
    pub baseline: Option<RunSummary>,
    /// The existing suite plus the kept tests, run together in one sandbox at the end.
    pub after: Option<RunSummary>,
    pub iterations: u32,
    pub candidates: Vec<CandidateReport>,
    pub suspected_bugs: Vec<SuspectedBug>,
    pub tokens: Usage,
    pub stages_ms: BTreeMap<String, u64>,
    pub sandbox_jobs: u32,
    /// Wall time of those jobs together (install, containers, test runs), ms.
    #[serde(default)]
    pub sandbox_ms: u64,
    /// The cached dependency environment (`cordon-env:…`) the sandbox jobs started from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environment: Option<String>,
    /// Kept test files, as they would be written to `tests/generated/`.
    pub kept_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub written_to: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    pub target_coverage: f64,
    pub max_iterations: u32,
    pub gaps_per_iteration: u32,
    pub repeats: u32,
    pub fix_attempts: u32,
    /// Candidates a gap may get, one per iteration, while none is kept.
    #[serde(default)]
    pub candidates_per_gap: u32,
    pub image: String,
    /// The dependency install the sandbox jobs started from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// `--only`: what the run was aimed at (`PATH[::NAME]`), if anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Wrong expected values turned into observed ones (characterization tests).
    #[serde(default)]
    pub characterize: bool,
    /// `--time-budget`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProjectSummary {
    pub python_root: String,
    pub framework: String,
    pub source_files: usize,
    pub test_files: usize,
    pub external_imports: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub tests: u64,
    pub passed: u64,
    pub failed: u64,
    /// Tests failing before cordon added anything: recorded, never blamed on generated tests.
    pub quarantined: Vec<String>,
    pub coverage: Totals,
    /// Per source file: its totals and the lines run (for the delta per file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileSummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileSummary {
    pub coverage: Totals,
    /// Line numbers that ran.
    pub covered_lines: Vec<u32>,
}

impl RunSummary {
    /// Fills `coverage` and `files` from a run's coverage.
    pub fn set_coverage(&mut self, c: &super::coverage::Coverage) {
        self.coverage = c.totals();
        self.files = c
            .files
            .iter()
            .map(|(path, lines)| {
                let one = super::coverage::Coverage {
                    files: [(path.clone(), lines.clone())].into_iter().collect(),
                };
                (
                    path.clone(),
                    FileSummary {
                        coverage: one.totals(),
                        covered_lines: lines
                            .iter()
                            .filter(|(_, l)| l.hit)
                            .map(|(n, _)| *n)
                            .collect(),
                    },
                )
            })
            .collect();
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CandidateReport {
    pub target: String,
    pub file: String,
    /// `kept`, `discarded` (ran, and failed a check) or `rejected` (never ran).
    pub status: String,
    pub reason: String,
    pub tests_generated: u32,
    pub tests_kept: u32,
    pub fix_attempts: u32,
    pub gain_lines: u32,
    pub gain_branches: u32,
    pub repairs: Vec<String>,
    pub discarded_tests: Vec<DiscardedTest>,
    /// Kept tests whose expected value is the observed one (see [`super::characterize`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub characterized: Vec<super::characterize::Characterization>,
    /// Every version of the test file, as the model wrote it and as it ran, with what became
    /// of it: what to read when nothing was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    pub time_ms: u64,
}

/// One version of a candidate's test file and its fate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// `answer` (the model's code, before checks), `run` (the file as validated).
    pub stage: String,
    pub source: String,
    pub outcome: String,
}

impl Attempt {
    /// Longer sources are cut: an answer is capped by `max_tokens` anyway.
    const MAX_SOURCE: usize = 8 * 1024;

    pub fn new(stage: &str, source: &str, outcome: String) -> Attempt {
        let mut end = source.len().min(Self::MAX_SOURCE);
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        Attempt {
            stage: stage.into(),
            source: source[..end].into(),
            outcome,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscardedTest {
    pub test: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub classification: Option<Classification>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuspectedBug {
    pub target: String,
    pub test: String,
    pub evidence: String,
    pub by: String,
    pub test_source: String,
}

impl Report {
    pub fn kept(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.status == "kept")
            .count()
    }

    /// Writes `report.json`, `report.md` and the kept tests under `dir/tests/generated/`.
    pub fn write(&self, dir: &Path, kept: &[(String, String)]) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        let md = dir.join("report.md");
        std::fs::write(
            &json,
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::write(&md, self.markdown())?;
        let html = dir.join("report.html");
        std::fs::write(&html, super::html::render(self, kept))?;
        let mut out = vec![json, md, html];
        if !kept.is_empty() {
            let t = dir.join("tests").join("generated");
            std::fs::create_dir_all(&t)?;
            for (name, content) in kept {
                std::fs::write(t.join(name), content)?;
            }
            out.push(t);
        }
        Ok(out)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        self.md_header(&mut s);
        self.md_coverage(&mut s);
        self.md_tests(&mut s);
        self.md_characterized(&mut s);
        self.md_suspected_bugs(&mut s);
        self.md_cost(&mut s);
        s
    }

    fn md_header(&self, s: &mut String) {
        let _ = writeln!(s, "# cordon testgen report\n");
        let _ = writeln!(
            s,
            "Repository `{}` · model `{}` at `{}` · status **{}** · {:.1} s\n",
            self.repo,
            self.model,
            self.base_url,
            self.status,
            self.duration_ms as f64 / 1000.0
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "> **Error:** {e}\n");
        }
        if let Some(cmd) = &self.settings.install {
            let _ = writeln!(
                s,
                "Dependencies: `{cmd}` (once, egress to package registries only; every sandbox job started from the cached result).\n"
            );
        }
    }

    fn md_coverage(&self, s: &mut String) {
        let _ = writeln!(s, "## Coverage\n");
        let _ = writeln!(s, "| | lines | branches | combined |\n|---|---|---|---|");
        let row = |name: &str, t: &Totals| {
            format!(
                "| {name} | {:.1}% ({}/{}) | {:.1}% ({}/{}) | {:.1}% |\n",
                t.line_percent(),
                t.lines_covered,
                t.lines,
                t.branch_percent(),
                t.branches_covered,
                t.branches,
                t.combined_percent()
            )
        };
        if let Some(b) = &self.baseline {
            s.push_str(&row("before", &b.coverage));
        }
        if let Some(a) = &self.after {
            s.push_str(&row("after", &a.coverage));
        }
        if let (Some(b), Some(a)) = (&self.baseline, &self.after) {
            let _ = writeln!(
                s,
                "| delta | {:+.1} pts | {:+.1} pts | {:+.1} pts |",
                a.coverage.line_percent() - b.coverage.line_percent(),
                a.coverage.branch_percent() - b.coverage.branch_percent(),
                a.coverage.combined_percent() - b.coverage.combined_percent()
            );
        }
        s.push('\n');
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                s,
                "Existing suite: {} tests, {} passed, {} failed{}.\n",
                b.tests,
                b.passed,
                b.failed,
                if b.quarantined.is_empty() {
                    String::new()
                } else {
                    format!(" (quarantined: {})", b.quarantined.join(", "))
                }
            );
        }
    }

    fn md_tests(&self, s: &mut String) {
        let generated: u32 = self.candidates.iter().map(|c| c.tests_generated).sum();
        let kept: u32 = self.candidates.iter().map(|c| c.tests_kept).sum();
        let _ = writeln!(
            s,
            "## Tests\n\n{} candidate files for {} targets over {} iteration(s): **{} of {} tests kept** in {} file(s).\n",
            self.candidates.len(),
            self.candidates
                .iter()
                .map(|c| c.target.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            self.iterations,
            kept,
            generated,
            self.kept()
        );
        let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
        for c in &self.candidates {
            for d in &c.discarded_tests {
                *reasons.entry(d.reason.clone()).or_default() += 1;
            }
            if c.status == "rejected" {
                *reasons
                    .entry(format!("file rejected: {}", c.reason))
                    .or_default() += 1;
            }
        }
        if !reasons.is_empty() {
            let _ = writeln!(s, "Discarded, by reason:\n");
            for (r, n) in &reasons {
                let _ = writeln!(s, "- {n} × {r}");
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "| target | file | result | tests kept/generated | fixes | gain (lines, branches) |\n|---|---|---|---|---|---|"
        );
        for c in &self.candidates {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {}{} | {}/{} | {} | +{}, +{} |",
                c.target,
                c.file,
                c.status,
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.reason.replace('|', "\\|"))
                },
                c.tests_kept,
                c.tests_generated,
                c.fix_attempts,
                c.gain_lines,
                c.gain_branches
            );
        }
        s.push('\n');
    }

    /// Kept tests that pin down observed behaviour, apart from suspected bugs.
    fn md_characterized(&self, s: &mut String) {
        let kept: Vec<(&str, &super::characterize::Characterization)> = self
            .candidates
            .iter()
            .filter(|c| c.status == "kept")
            .flat_map(|c| c.characterized.iter().map(move |x| (c.target.as_str(), x)))
            .collect();
        if kept.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## Characterization tests

These kept tests assert what the code returned in the sandbox, not what the model expected: they guard the current behaviour against change and say nothing about whether it is right. Review each before relying on it as a specification.

| target | test | model expected | observed (now asserted) |\n|---|---|---|---|"
        );
        let cell = |x: &str| {
            super::llm::clip(x, 80)
                .replace('|', "\\|")
                .replace('`', "'")
        };
        for (target, c) in kept {
            let _ = writeln!(
                s,
                "| `{target}` | `{}` | `{}` | `{}` |",
                c.test,
                cell(&c.expected_by_model),
                cell(&c.observed)
            );
        }
        s.push('\n');
    }

    fn md_suspected_bugs(&self, s: &mut String) {
        if !self.suspected_bugs.is_empty() {
            let _ = writeln!(
                s,
                "## Suspected code bugs\n\nReported, never fixed: the failing tests were discarded and the code left as it is.\n"
            );
            for b in &self.suspected_bugs {
                let _ = writeln!(
                    s,
                    "- `{}` — test `{}` ({}): {}\n\n```python\n{}\n```\n",
                    b.target, b.test, b.by, b.evidence, b.test_source
                );
            }
        }
    }

    fn md_cost(&self, s: &mut String) {
        let t = &self.tokens;
        let _ = writeln!(
            s,
            "## Cost\n\n{} model requests ({} retried after {:.1} s of waiting, {} failed), {} prompt + {} completion tokens; {} answers cut off at max_tokens, {} runaway. {} sandbox jobs.\n",
            t.requests,
            t.retries,
            t.retry_wait_ms as f64 / 1000.0,
            t.failed_requests,
            t.prompt_tokens,
            t.completion_tokens,
            t.truncated_answers,
            t.repetitive_answers,
            self.sandbox_jobs
        );
        let _ = writeln!(
            s,
            "Model time {:.1} s (waiting for answers), sandbox time {:.1} s (jobs), of {:.1} s in all.\n",
            t.model_ms as f64 / 1000.0,
            self.sandbox_ms as f64 / 1000.0,
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(s, "Time per stage:\n");
        for (k, v) in &self.stages_ms {
            let _ = writeln!(s, "- {k}: {:.1} s", *v as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Attempt;

    #[test]
    fn an_attempts_source_is_cut_on_a_character_boundary() {
        let long = "é".repeat(Attempt::MAX_SOURCE);
        let a = Attempt::new("answer", &long, "rejected".into());
        assert!(a.source.len() <= Attempt::MAX_SOURCE && a.source.len() > Attempt::MAX_SOURCE - 2);
        assert!(a.source.chars().all(|c| c == 'é'));
        assert_eq!(Attempt::new("run", "x = 1", String::new()).source, "x = 1");
    }
}
