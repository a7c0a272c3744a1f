//! Turns a job's events into what a person (or, with `--json`, a script) reads.

use std::io::Write;
use std::path::PathBuf;

use crate::event::{JobEvent, Stream};
use crate::report::{JobResult, Outcome};

pub struct Printer {
    json: bool,
    out_dir: PathBuf,
    /// Whether the job's last output byte was a newline (so our lines start on their own).
    at_line_start: bool,
}

impl Printer {
    pub fn new(json: bool, out_dir: PathBuf) -> Printer {
        Printer {
            json,
            out_dir,
            at_line_start: true,
        }
    }

    fn note(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if !self.at_line_start {
            let _ = writeln!(err);
            self.at_line_start = true;
        }
        let _ = writeln!(err, "cordon: {line}");
    }

    pub fn event(&mut self, ev: &JobEvent) {
        match ev {
            JobEvent::Started {
                job_id,
                image,
                profile,
                steps,
            } => {
                if !self.json {
                    self.note(&format!(
                        "job {job_id}: image {image}, profile {profile}, {} step{}",
                        steps.len(),
                        if steps.len() == 1 { "" } else { "s" }
                    ));
                }
            }
            // Shown by `--json` and the service's job page; too long for a terminal.
            JobEvent::Phase { .. } | JobEvent::Sandbox { .. } => {}
            JobEvent::Progress { message } => self.note(message),
            JobEvent::StepStarted { step, .. } => {
                if !self.json {
                    self.note(&format!("── step {step} ──"));
                }
            }
            JobEvent::Output { stream, data, .. } => {
                let res = if self.json || *stream == Stream::Stderr {
                    let mut e = std::io::stderr().lock();
                    e.write_all(data).and_then(|_| e.flush())
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(data).and_then(|_| o.flush())
                };
                let _ = res;
                if let Some(last) = data.last() {
                    self.at_line_start = *last == b'\n';
                }
            }
            JobEvent::OutputTruncated { step, limit_bytes } => self.note(&format!(
                "step {step} wrote more than the output cap ({}); stopping it",
                crate::spec::Size(*limit_bytes)
            )),
            JobEvent::StepFinished { result } => {
                if !self.json {
                    let code = result
                        .exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default();
                    self.note(&format!(
                        "step {} {}{code} in {}",
                        result.name,
                        result.outcome,
                        secs(result.duration_ms)
                    ));
                }
            }
            JobEvent::Environment { image, cached, .. } => {
                if !self.json {
                    if *cached {
                        self.note(&format!("environment {image}: cached, install skipped"));
                    } else {
                        self.note(&format!("environment {image}: built and cached"));
                    }
                }
            }
            JobEvent::EgressRefused {
                destination,
                reason,
            } => self.note(&format!(
                "prepare: egress to {destination} refused ({reason})"
            )),
            JobEvent::Artifact { .. } => {}
            JobEvent::ArtifactRefused { path, reason } => {
                self.note(&format!("artifact {path} not collected: {reason}"))
            }
            JobEvent::Warning { message } => self.note(&format!("warning: {message}")),
            JobEvent::Finished { result } => {
                if self.json {
                    match serde_json::to_string(result) {
                        Ok(s) => println!("{s}"),
                        Err(e) => eprintln!("cordon: error: cannot render the result: {e}"),
                    }
                } else {
                    self.summary(result);
                }
            }
        }
    }

    fn summary(&mut self, r: &JobResult) {
        let headline = match r.outcome {
            Outcome::Passed => "PASSED",
            Outcome::Failed => "FAILED",
            Outcome::TimedOut => "TIMED OUT",
            Outcome::OomKilled => "OUT OF MEMORY (oom_killed)",
            Outcome::OutputLimitExceeded => "OUTPUT LIMIT EXCEEDED",
            Outcome::DiskLimitExceeded => "DISK LIMIT EXCEEDED",
            Outcome::Cancelled => "CANCELLED",
            Outcome::SandboxError => "SANDBOX ERROR",
            Outcome::Skipped => "SKIPPED",
        };
        self.note(&format!(
            "job {} {headline} in {}",
            r.job_id,
            secs(r.duration_ms)
        ));
        if let Some(e) = &r.error {
            self.note(&format!("  error: {e}"));
        }
        if let Some(env) = &r.environment {
            let how = if env.cached {
                "cached".to_string()
            } else {
                format!("built in {}", secs(env.duration_ms))
            };
            self.note(&format!("  environment {} ({how})", env.image));
        }
        let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(4);
        for s in &r.steps {
            let code = s
                .exit_code
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "-".into());
            self.note(&format!(
                "  step {:width$}  {:<22} {:<8} {}",
                s.name,
                s.outcome.as_str(),
                code,
                secs(s.duration_ms)
            ));
        }
        if let Some(t) = &r.tests {
            self.note(&format!(
                "  tests: {} passed, {} failed, {} skipped, {} errors ({} total)",
                t.passed, t.failed, t.skipped, t.errors, t.total
            ));
            for f in t.failing.iter().take(10) {
                self.note(&format!("    failing: {f}"));
            }
        }
        if !r.artifacts.is_empty() {
            self.note(&format!(
                "  artifacts: {} file{} in {}",
                r.artifacts.len(),
                if r.artifacts.len() == 1 { "" } else { "s" },
                self.out_dir.display()
            ));
        }
        if r.output_truncated {
            self.note(&format!(
                "  output: {} bytes, truncated at the cap",
                r.output_bytes
            ));
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}
