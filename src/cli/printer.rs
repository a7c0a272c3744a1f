//! Turns a job's events into what a person (or, with `--json`, a script) reads: the one
//! terminal printer of the event stream, for `cordon run`, `submit` and `logs`.
//!
//! The job's own output goes out exactly as written. cordon's lines go to stderr, `cordon: …`,
//! coloured as [`super::term`] decided; the JSON result on stdout never is. An image build or
//! a `prepare` install is a progress line ([`super::progress`]), with its last lines shown if
//! it fails; refused egress is printed the moment it happens.

use std::io::Write;
use std::path::PathBuf;

use super::progress::{Mode, Progress, Tracker};
use super::term::{self, Term, Tone, paint, printable};
use crate::event::{JobEvent, Phase, Stream};
use crate::report::{JobResult, Outcome};

/// The most failing tests listed by name in the summary.
pub(crate) const FAILING_SHOWN: usize = 10;

/// Which long piece of work a progress line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Building the job's image (cordon's own, on demand).
    Image,
    /// The `prepare` install.
    Prepare,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Image => "image build",
            Work::Prepare => "prepare",
        }
    }
}

pub struct Printer {
    json: bool,
    out_dir: PathBuf,
    term: Term,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    /// Whether the job's last output byte was a newline (so our lines start on their own).
    at_line_start: bool,
    /// The image is resolved: progress from now on is the `prepare`'s.
    resolved: bool,
    /// A step has started: output from now on is the steps'.
    step_started: bool,
    /// The long work in progress.
    work: Option<(Work, Progress)>,
    /// What the last finished work showed, for its tail if the job then fails.
    last_work: Option<(Work, Tracker)>,
    /// Show the `prepare`'s output as progress (not for `cordon logs`, which shows it all).
    collapse_prepare: bool,
}

impl Printer {
    /// A printer to this process's stdout and stderr, with the settings of [`term::get`].
    pub fn new(json: bool, out_dir: PathBuf) -> Printer {
        Printer::with(
            json,
            out_dir,
            term::get(),
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    pub(crate) fn with(
        json: bool,
        out_dir: PathBuf,
        term: Term,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Printer {
        Printer {
            json,
            out_dir,
            term,
            out,
            err,
            at_line_start: true,
            resolved: false,
            step_started: false,
            work: None,
            last_work: None,
            collapse_prepare: true,
        }
    }

    /// A printer for `cordon logs`: every byte of output, the `prepare`'s included.
    pub(crate) fn for_logs() -> Printer {
        let mut p = Printer::new(false, PathBuf::new());
        p.collapse_prepare = false;
        p
    }

    /// `text` in `tone` if stderr is coloured.
    fn paint(&self, tone: Tone, text: &str) -> String {
        paint(self.term.colour_stderr, tone, text)
    }

    /// A line of cordon's own on stderr, `cordon: …`; `line` is already made printable.
    fn note_line(&mut self, line: &str) {
        if !self.at_line_start {
            let _ = writeln!(self.err);
            self.at_line_start = true;
        }
        let line = format!("cordon: {line}");
        match &self.work {
            Some((_, p)) => p.print(&mut self.err, &line),
            None => {
                let _ = writeln!(self.err, "{line}");
                let _ = self.err.flush();
            }
        }
    }

    /// A line of cordon's own, `text` made printable, then painted in `tone`.
    fn note(&mut self, tone: Option<Tone>, text: &str) {
        let text = printable(text);
        let line = match tone {
            Some(t) => self.paint(t, &text),
            None => text,
        };
        self.note_line(&line);
    }

    /// Makes `kind` the work in progress (finishing another).
    fn start_work(&mut self, kind: Work) {
        if self.work.as_ref().is_some_and(|(k, _)| *k != kind) {
            self.finish_work();
        }
        if self.work.is_none() {
            self.work = Some((kind, Progress::start(Mode::for_term(&self.term))));
        }
    }

    fn finish_work(&mut self) {
        if let Some((kind, p)) = self.work.take() {
            self.last_work = Some((kind, p.finish()));
        }
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
                    self.note(
                        None,
                        &format!(
                            "job {job_id}: image {image}, profile {profile}, {} step{}",
                            steps.len(),
                            if steps.len() == 1 { "" } else { "s" }
                        ),
                    );
                }
            }
            JobEvent::Phase { phase, .. } => {
                if *phase == Phase::Resolve {
                    self.resolved = true;
                    if self.work.as_ref().is_some_and(|(k, _)| *k == Work::Image) {
                        // The image is built: its output is no failure's explanation.
                        self.finish_work();
                        self.last_work = None;
                    }
                }
            }
            // Shown by `--json` and the service's job page; too long for a terminal.
            JobEvent::Sandbox { .. } => {}
            JobEvent::Progress { message } => self.progress(message),
            JobEvent::StepStarted { step, .. } => {
                self.finish_work();
                self.step_started = true;
                if !self.json {
                    let header =
                        self.paint(Tone::Heading, &printable(&format!("── step {step} ──")));
                    self.note_line(&header);
                }
            }
            JobEvent::Output { step, stream, data } => {
                if self.collapse_prepare
                    && !self.step_started
                    && step == "prepare"
                    && Mode::for_term(&self.term) != Mode::Raw
                {
                    // The prepare's install output: a progress line, not a flood.
                    self.start_work(Work::Prepare);
                    if let Some((_, p)) = &mut self.work {
                        p.bytes(&mut self.err, data);
                    }
                    return;
                }
                self.output(*stream, data);
            }
            JobEvent::OutputTruncated { step, limit_bytes } => self.note(
                Some(Tone::Warn),
                &format!(
                    "step {step} wrote more than the output cap ({}); stopping it",
                    crate::spec::Size(*limit_bytes)
                ),
            ),
            JobEvent::StepFinished { result } => {
                if !self.json {
                    let code = result
                        .exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default();
                    let outcome = self.paint(tone(result.outcome), result.outcome.as_str());
                    let line = format!(
                        "step {} {outcome}{code} in {}",
                        printable(&result.name),
                        secs(result.duration_ms)
                    );
                    self.note_line(&line);
                }
            }
            JobEvent::Environment { image, cached, .. } => {
                self.finish_work();
                self.last_work = None;
                if !self.json {
                    let how = if *cached {
                        "cached, install skipped"
                    } else {
                        "built and cached"
                    };
                    self.note(Some(Tone::Good), &format!("environment {image}: {how}"));
                }
            }
            JobEvent::EgressRefused {
                destination,
                reason,
            } => self.note(
                Some(Tone::Bad),
                &format!("prepare: egress to {destination} refused ({reason})"),
            ),
            JobEvent::Artifact { .. } => {}
            JobEvent::ArtifactRefused { path, reason } => self.note(
                Some(Tone::Warn),
                &format!("artifact {path} not collected: {reason}"),
            ),
            JobEvent::Warning { message } => {
                self.note(Some(Tone::Warn), &format!("warning: {message}"))
            }
            JobEvent::Finished { result } => {
                self.finish_work();
                if result.outcome != Outcome::Passed && !self.step_started {
                    self.show_tail();
                }
                if self.json {
                    match serde_json::to_string(result) {
                        Ok(s) => {
                            let _ = writeln!(self.out, "{s}");
                            let _ = self.out.flush();
                        }
                        Err(e) => self.note(
                            Some(Tone::Bad),
                            &format!("error: cannot render the result: {e}"),
                        ),
                    }
                } else {
                    self.summary(result);
                }
            }
        }
    }

    /// Progress of an image build (before the image is resolved) or a `prepare`: a line
    /// indented by two spaces is the work's output, any other a stage worth a line of its own.
    fn progress(&mut self, message: &str) {
        let kind = if self.resolved {
            Work::Prepare
        } else {
            Work::Image
        };
        self.start_work(kind);
        match message.strip_prefix("  ") {
            Some(line) => {
                if let Some((_, p)) = &mut self.work {
                    p.line(&mut self.err, line);
                }
            }
            None => self.note(None, message),
        }
    }

    /// A chunk of a step's output, exactly as the job wrote it.
    fn output(&mut self, stream: Stream, data: &[u8]) {
        let w = if self.json || stream == Stream::Stderr {
            &mut self.err
        } else {
            &mut self.out
        };
        let _ = w.write_all(data).and_then(|_| w.flush());
        if let Some(last) = data.last() {
            self.at_line_start = *last == b'\n';
        }
    }

    /// The last lines of a failed image build or `prepare`, which the progress line hid.
    fn show_tail(&mut self) {
        let Some((kind, tracker)) = self.last_work.take() else {
            return;
        };
        if tracker.mode() == Mode::Raw || tracker.lines() == 0 {
            return;
        }
        let tail: Vec<String> = tracker.tail().map(str::to_string).collect();
        self.note(
            None,
            &format!(
                "the {} failed; its last {} of {} output lines (-v shows them all):",
                kind.name(),
                tail.len(),
                tracker.lines()
            ),
        );
        for l in tail {
            let _ = writeln!(self.err, "  {l}");
        }
    }

    fn summary(&mut self, r: &JobResult) {
        let headline = self.paint(tone(r.outcome), headline(r.outcome));
        self.note_line(&format!(
            "job {} {headline} in {}",
            printable(&r.job_id),
            secs(r.duration_ms)
        ));
        if let Some(e) = &r.error {
            self.note(Some(Tone::Bad), &format!("  error: {e}"));
        }
        if let Some(env) = &r.environment {
            let how = if env.cached {
                "cached".to_string()
            } else {
                format!("built in {}", secs(env.duration_ms))
            };
            self.note(None, &format!("  environment {} ({how})", env.image));
        }
        let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(4);
        for s in &r.steps {
            let code = s
                .exit_code
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "-".into());
            let outcome = self.paint(tone(s.outcome), &format!("{:<22}", s.outcome.as_str()));
            let line = format!(
                "  step {:width$}  {outcome} {:<8} {}",
                printable(&s.name),
                code,
                secs(s.duration_ms)
            );
            self.note_line(&line);
        }
        if let Some(t) = &r.tests {
            self.note(
                None,
                &format!(
                    "  tests: {} passed, {} failed, {} skipped, {} errors ({} total)",
                    t.passed, t.failed, t.skipped, t.errors, t.total
                ),
            );
            for line in failing_lines(&t.failing, t.failed + t.errors, FAILING_SHOWN) {
                self.note(Some(Tone::Bad), &format!("    {line}"));
            }
        }
        if !r.artifacts.is_empty() {
            let dir = self.out_dir.display().to_string();
            self.note(
                None,
                &format!(
                    "  artifacts: {} file{} in {dir}",
                    r.artifacts.len(),
                    if r.artifacts.len() == 1 { "" } else { "s" },
                ),
            );
        }
        if r.output_truncated {
            self.note(
                Some(Tone::Warn),
                &format!("  output: {} bytes, truncated at the cap", r.output_bytes),
            );
        }
    }
}

/// The summary's word for an outcome.
fn headline(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "PASSED",
        Outcome::Failed => "FAILED",
        Outcome::TimedOut => "TIMED OUT",
        Outcome::OomKilled => "OUT OF MEMORY (oom_killed)",
        Outcome::OutputLimitExceeded => "OUTPUT LIMIT EXCEEDED",
        Outcome::DiskLimitExceeded => "DISK LIMIT EXCEEDED",
        Outcome::Cancelled => "CANCELLED",
        Outcome::SandboxError => "SANDBOX ERROR",
        Outcome::Skipped => "SKIPPED",
    }
}

/// The colour of an outcome.
pub(crate) fn tone(o: Outcome) -> Tone {
    match o {
        Outcome::Passed => Tone::Good,
        Outcome::Cancelled | Outcome::Skipped => Tone::Warn,
        _ => Tone::Bad,
    }
}

/// The failing tests by node id, at most `shown`, then `and N more` for the rest of `total`
/// (the report keeps only the first names; the count is of all of them).
pub(crate) fn failing_lines(failing: &[String], total: u64, shown: usize) -> Vec<String> {
    let mut lines: Vec<String> = failing
        .iter()
        .take(shown)
        .map(|f| format!("failing: {f}"))
        .collect();
    let total = total.max(failing.len() as u64);
    let rest = total.saturating_sub(lines.len() as u64);
    if rest > 0 {
        lines.push(format!("and {rest} more"));
    }
    lines
}

fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::report::TestSummary;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    fn printer(json: bool, term: Term) -> (Printer, Buf, Buf) {
        let (out, err) = (Buf::default(), Buf::default());
        let p = Printer::with(
            json,
            PathBuf::from("out"),
            term,
            Box::new(out.clone()),
            Box::new(err.clone()),
        );
        (p, out, err)
    }

    fn failed_result(failing: usize) -> JobResult {
        let mut r: JobResult = serde_json::from_value(serde_json::json!({
            "job_id": "job-1", "outcome": "failed", "exit_code": 1, "duration_ms": 10,
            "steps": [], "artifacts": [], "output_bytes": 0, "output_truncated": false,
            "image": "i", "profile": "strict", "phases_ms": {}
        }))
        .expect("a result");
        r.tests = Some(TestSummary {
            total: failing as u64,
            failed: failing as u64,
            failing: (0..failing.min(100))
                .map(|i| format!("tests/test_x.py::TestC::test_{i}"))
                .collect(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn ten_failing_tests_then_and_n_more() {
        let names: Vec<String> = (0..12).map(|i| format!("t.py::test_{i}")).collect();
        let l = failing_lines(&names, 12, 10);
        assert_eq!(l.len(), 11);
        assert_eq!(l[0], "failing: t.py::test_0");
        assert_eq!(l[10], "and 2 more");
        // The report keeps 100 names; the count says how many there were.
        let l = failing_lines(&names[..3], 250, 10);
        assert_eq!(l.last().map(String::as_str), Some("and 247 more"));
        assert_eq!(failing_lines(&names[..3], 3, 10).len(), 3);
    }

    #[test]
    fn the_summary_lists_node_ids_and_colours_only_when_asked() {
        let ev = JobEvent::Finished {
            result: Box::new(failed_result(15)),
        };
        let (mut p, out, err) = printer(false, Term::default());
        p.event(&ev);
        let text = err.text();
        assert!(
            text.contains("cordon: job job-1 FAILED in 0.01s\n"),
            "{text}"
        );
        assert!(
            text.contains("cordon:     failing: tests/test_x.py::TestC::test_0\n"),
            "{text}"
        );
        assert!(text.contains("cordon:     and 5 more\n"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(out.text().is_empty());

        let colour = Term {
            colour_stderr: true,
            colour_stdout: true,
            ..Term::default()
        };
        let (mut p, _, err) = printer(false, colour);
        p.event(&ev);
        assert!(
            err.text().contains("\x1b[1m\x1b[31mFAILED\x1b[0m"),
            "{}",
            err.text()
        );
    }

    #[test]
    fn json_on_stdout_is_never_coloured() {
        let colour = Term {
            colour_stderr: true,
            colour_stdout: true,
            ..Term::default()
        };
        let (mut p, out, _) = printer(true, colour);
        p.event(&JobEvent::Finished {
            result: Box::new(failed_result(1)),
        });
        let json = out.text();
        assert!(!json.contains('\x1b'), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(v["outcome"], "failed");
    }

    #[test]
    fn a_prepare_flood_is_a_few_lines_and_a_refusal_shows_at_once() {
        let (mut p, out, err) = printer(false, Term::default());
        p.event(&JobEvent::Phase {
            phase: Phase::Resolve,
            duration_ms: 1,
        });
        p.event(&JobEvent::Progress {
            message: "building the dependency environment x (prepare: pip install)".into(),
        });
        for i in 0..500 {
            p.event(&JobEvent::Output {
                step: "prepare".into(),
                stream: Stream::Stdout,
                data: format!("Collecting pkg{i}\n").into(),
            });
            if i == 100 {
                p.event(&JobEvent::EgressRefused {
                    destination: "evil.example:443".into(),
                    reason: "not on the allowlist".into(),
                });
            }
        }
        let text = err.text();
        let lines: Vec<&str> = text.lines().collect();
        // Fast output: no periodic line is due yet.
        assert_eq!(
            lines,
            [
                "cordon: building the dependency environment x (prepare: pip install)",
                "cordon: prepare: egress to evil.example:443 refused (not on the allowlist)",
            ]
        );
        assert!(out.text().is_empty());
        // The install fails: its last lines are shown.
        p.event(&JobEvent::Finished {
            result: Box::new(failed_result(0)),
        });
        let text = err.text();
        assert!(
            text.contains("the prepare failed; its last 30 of 500 output lines"),
            "{text}"
        );
        assert!(text.contains("\n  Collecting pkg499\n"), "{text}");
        assert!(!text.contains("Collecting pkg469\n"), "{text}");
    }

    #[test]
    fn an_image_built_on_demand_is_stages_and_a_tail_if_it_fails() {
        let (mut p, _, err) = printer(false, Term::default());
        p.event(&JobEvent::Progress {
            message: "image cordon/python:3.11 is not built yet; building it now".into(),
        });
        for i in 0..300 {
            p.event(&JobEvent::Progress {
                message: format!("  I: Retrieving package-{i}"),
            });
        }
        p.event(&JobEvent::Progress {
            message: "building cordon/python:3.11 from images/python".into(),
        });
        p.event(&JobEvent::Progress {
            message: "  E: no space left on device".into(),
        });
        let mut r = failed_result(0);
        r.outcome = Outcome::SandboxError;
        r.tests = None;
        p.event(&JobEvent::Finished {
            result: Box::new(r),
        });
        let text = err.text();
        assert!(!text.contains("Retrieving package-100\n"), "{text}");
        assert!(
            text.contains("cordon: building cordon/python:3.11 from images/python\n"),
            "{text}"
        );
        assert!(
            text.contains("the image build failed; its last 30 of 301 output lines"),
            "{text}"
        );
        assert!(text.contains("\n  E: no space left on device\n"), "{text}");
        assert!(text.contains("SANDBOX ERROR"), "{text}");
    }

    #[test]
    fn with_v_the_prepare_output_is_raw() {
        let verbose = Term {
            verbose: 1,
            ..Term::default()
        };
        let (mut p, out, _) = printer(false, verbose);
        p.event(&JobEvent::Output {
            step: "prepare".into(),
            stream: Stream::Stdout,
            data: "Collecting six\n".into(),
        });
        assert_eq!(out.text(), "Collecting six\n");
    }

    #[test]
    fn names_from_the_job_cannot_drive_the_terminal() {
        let (mut p, _, err) = printer(false, Term::default());
        p.event(&JobEvent::ArtifactRefused {
            path: "/out/\x1b]0;pwned\x07".into(),
            reason: "a link".into(),
        });
        assert!(!err.text().contains('\x1b'), "{}", err.text());
    }
}
