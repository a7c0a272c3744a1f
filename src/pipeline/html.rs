//! The report as one self-contained HTML page beside `report.json` and `report.md`: coverage
//! before and after per file, with the newly covered lines shown in their source; the tests
//! kept, characterized and discarded; suspected bugs; model time against sandbox time.
//!
//! Everything in it that comes from the repository (paths, source lines) or the model (test
//! code, reasons, evidence) is hostile: every such string goes through [`escape`], the page
//! has no script, and a Content-Security-Policy forbids scripts and remote loads in case a
//! viewer ignores that.

use std::fmt::Write as _;
use std::path::{Component, Path};

use super::coverage::Totals;
use super::report::Report;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(t: &Totals) -> String {
    format!(
        "{:.1}% ({}/{}) · branches {:.1}% ({}/{})",
        t.line_percent(),
        t.lines_covered,
        t.lines,
        t.branch_percent(),
        t.branches_covered,
        t.branches
    )
}

/// The repository file's lines, if `rel` is a plain relative path that stays inside `repo`
/// (no `..`, no symlink out) and the file is under 2 MB.
fn source_lines(repo: &Path, rel: &str) -> Option<Vec<String>> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let root = repo.canonicalize().ok()?;
    let full = root.join(p).canonicalize().ok()?;
    if !full.starts_with(&root) || std::fs::metadata(&full).ok()?.len() > 2 << 20 {
        return None;
    }
    let text = std::fs::read(&full).ok()?;
    Some(
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
pre{background:#f6f6f6;padding:.5em;overflow-x:auto}.new{background:#dfd}.ln{color:#888;user-select:none}\
.char{background:#fff4d6}.bug{background:#fde}";

/// The whole page.
pub fn render(r: &Report, kept: &[(String, String)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>cordon testgen: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&r.repo)
    );
    let _ = writeln!(
        h,
        "<h1>cordon testgen report</h1><p>Repository <code>{}</code> · model <code>{}</code> · status <b>{}</b> · {:.1} s</p>",
        escape(&r.repo),
        escape(&r.model),
        escape(&r.status),
        r.duration_ms as f64 / 1000.0
    );
    if let Some(e) = &r.error {
        let _ = writeln!(h, "<p><b>Error:</b> {}</p>", escape(e));
    }
    coverage(&mut h, r);
    tests(&mut h, r, kept);
    cost(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn coverage(h: &mut String, r: &Report) {
    h.push_str("<h2>Coverage</h2>\n<table><tr><th></th><th>lines · branches</th></tr>\n");
    if let Some(b) = &r.baseline {
        let _ = writeln!(h, "<tr><td>before</td><td>{}</td></tr>", pct(&b.coverage));
    }
    if let Some(a) = &r.after {
        let _ = writeln!(h, "<tr><td>after</td><td>{}</td></tr>", pct(&a.coverage));
    }
    h.push_str("</table>\n");
    let (Some(b), Some(a)) = (&r.baseline, &r.after) else {
        return;
    };
    h.push_str("<h3>Per file (files whose coverage changed)</h3>\n<table><tr><th>file</th><th>lines before → after</th><th>branches before → after</th><th>newly covered lines</th></tr>\n");
    let mut changed = Vec::new();
    for (path, af) in &a.files {
        let before = b.files.get(path);
        let bc = before.map(|f| f.coverage).unwrap_or_default();
        if bc == af.coverage {
            continue;
        }
        let new: Vec<u32> = af
            .covered_lines
            .iter()
            .filter(|n| before.is_none_or(|f| !f.covered_lines.contains(n)))
            .copied()
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{:.1}% → {:.1}%</td><td>{:.1}% → {:.1}%</td><td>{}</td></tr>",
            escape(path),
            bc.line_percent(),
            af.coverage.line_percent(),
            bc.branch_percent(),
            af.coverage.branch_percent(),
            new.len()
        );
        changed.push((path, new));
    }
    h.push_str("</table>\n");
    let repo = Path::new(&r.repo);
    for (path, new) in changed {
        if new.is_empty() {
            continue;
        }
        let _ = writeln!(
            h,
            "<details><summary><code>{}</code>: {} newly covered lines</summary><pre>",
            escape(path),
            new.len()
        );
        match source_lines(repo, path) {
            Some(lines) => {
                for n in new.iter().take(400) {
                    let text = lines.get(*n as usize - 1).map_or("", String::as_str);
                    let _ = writeln!(
                        h,
                        "<span class=\"ln\">{n:>5}</span> <span class=\"new\">{}</span>",
                        escape(text)
                    );
                }
            }
            None => {
                let list: Vec<String> = new.iter().map(u32::to_string).collect();
                let _ = write!(h, "lines {}", list.join(", "));
            }
        }
        h.push_str("</pre></details>\n");
    }
}

fn tests(h: &mut String, r: &Report, kept: &[(String, String)]) {
    let generated: u32 = r.candidates.iter().map(|c| c.tests_generated).sum();
    let kept_n: u32 = r
        .candidates
        .iter()
        .filter(|c| c.status == "kept")
        .map(|c| c.tests_kept)
        .sum();
    let _ = writeln!(
        h,
        "<h2>Tests</h2><p>{kept_n} of {generated} generated tests kept, in {} file(s).</p>\n<table><tr><th>target</th><th>result</th><th>kept/generated</th><th>fix rounds</th><th>gain (lines, branches)</th><th>discarded tests</th></tr>",
        r.kept()
    );
    for c in &r.candidates {
        let discarded: Vec<String> = c
            .discarded_tests
            .iter()
            .map(|d| format!("<code>{}</code>: {}", escape(&d.test), escape(&d.reason)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}{}</td><td>{}/{}</td><td>{}</td><td>+{}, +{}</td><td>{}</td></tr>",
            escape(&c.target),
            escape(&c.status),
            if c.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&c.reason))
            },
            c.tests_kept,
            c.tests_generated,
            c.fix_attempts,
            c.gain_lines,
            c.gain_branches,
            discarded.join("<br>")
        );
    }
    h.push_str("</table>\n");
    let chars: Vec<_> = r
        .candidates
        .iter()
        .filter(|c| c.status == "kept")
        .flat_map(|c| c.characterized.iter().map(move |x| (&c.target, x)))
        .collect();
    if !chars.is_empty() {
        h.push_str("<h3>Characterization tests</h3><p>Kept tests that assert what the code returned in the sandbox, not what the model expected: they guard today's behaviour and say nothing about whether it is right.</p>\n<table class=\"char\"><tr><th>target</th><th>test</th><th>model expected</th><th>observed, now asserted</th></tr>\n");
        for (t, c) in chars {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(t),
                escape(&c.test),
                escape(&c.expected_by_model),
                escape(&c.observed)
            );
        }
        h.push_str("</table>\n");
    }
    if !r.suspected_bugs.is_empty() {
        h.push_str("<h3>Suspected code bugs</h3><p>Reported, never fixed: the tests were discarded and the code left alone.</p>\n");
        for b in &r.suspected_bugs {
            let _ = writeln!(
                h,
                "<div class=\"bug\"><p><code>{}</code> — test <code>{}</code> ({}): {}</p><pre>{}</pre></div>",
                escape(&b.target),
                escape(&b.test),
                escape(&b.by),
                escape(&b.evidence),
                escape(&b.test_source)
            );
        }
    }
    for (name, content) in kept {
        let _ = writeln!(
            h,
            "<details><summary>kept: <code>{}</code></summary><pre>{}</pre></details>",
            escape(name),
            escape(content)
        );
    }
}

fn cost(h: &mut String, r: &Report) {
    let t = &r.tokens;
    let _ = writeln!(
        h,
        "<h2>Cost</h2><p>Model time {:.1} s, sandbox time {:.1} s ({} jobs), {:.1} s in all. {} requests, {} prompt + {} completion tokens; {} answers cut off at max_tokens.</p><ul>",
        t.model_ms as f64 / 1000.0,
        r.sandbox_ms as f64 / 1000.0,
        r.sandbox_jobs,
        r.duration_ms as f64 / 1000.0,
        t.requests,
        t.prompt_tokens,
        t.completion_tokens,
        t.truncated_answers
    );
    for (k, v) in &r.stages_ms {
        let _ = writeln!(h, "<li>{}: {:.1} s</li>", escape(k), *v as f64 / 1000.0);
    }
    h.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::report::{CandidateReport, FileSummary, RunSummary};

    #[test]
    fn hostile_text_is_escaped_and_new_lines_are_shown() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("m.py"),
            "def f(x):\n    if x:\n        return '<script>alert(1)</script>'\n    return 0\n",
        )
        .expect("write");
        let file = |covered: Vec<u32>| FileSummary {
            coverage: Totals {
                lines: 4,
                lines_covered: covered.len() as u32,
                branches: 2,
                branches_covered: covered.len() as u32 / 2,
            },
            covered_lines: covered,
        };
        let run = |covered: Vec<u32>| RunSummary {
            coverage: file(covered.clone()).coverage,
            files: [("m.py".to_string(), file(covered))].into_iter().collect(),
            ..Default::default()
        };
        let r = Report {
            repo: d.path().display().to_string(),
            model: "<img src=x onerror=alert(1)>".into(),
            baseline: Some(run(vec![1, 2, 4])),
            after: Some(run(vec![1, 2, 3, 4])),
            candidates: vec![CandidateReport {
                target: "m.py::f".into(),
                status: "kept".into(),
                reason: "\"><script>x</script>".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(
            &r,
            &[("test_x.py".into(), "assert '</pre><script>'".into())],
        );
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "the new line, escaped"
        );
        assert!(page.contains("<span class=\"ln\">    3</span>"), "{page}");
        assert!(page.contains("75.0% → 100.0%"), "{page}");
        // A path out of the repository is not read.
        assert!(source_lines(d.path(), "../etc/passwd").is_none());
        assert!(source_lines(d.path(), "/etc/passwd").is_none());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", d.path().join("link.py")).expect("link");
            assert!(source_lines(d.path(), "link.py").is_none());
        }
    }
}
