//! Stage 7, auto-fix a test mistake: the failing test function, the error and the code under
//! test go to the model; its answer replaces just that function; the file is checked again
//! statically and re-validated by the caller. Each attempt is told why the previous ones
//! failed, and runs at a higher temperature.

use super::generate::{self, Candidate, Context};
use super::llm::Message;
use super::python;

/// The temperature of fix attempt `n` (0-based): repeat attempts must not repeat answers.
pub fn temperature(n: u32) -> f32 {
    [0.3, 0.6, 0.9, 1.0][(n as usize).min(3)]
}

/// The source of one top-level test function of the candidate.
pub fn test_source(cand: &Candidate, node: &str) -> Option<String> {
    let p = python::parse(&cand.body)?;
    p.test_functions()
        .into_iter()
        .find(|t| t.node_id == node)
        .map(|t| cand.body[t.bytes].to_string())
}

/// The last lines of a failure, where the cause is.
pub fn error_excerpt(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

pub fn prompt(ctx: &Context, test_src: &str, error: &str, history: &[String]) -> Vec<Message> {
    let mut u = format!(
        "This pytest test for `{}` in module `{}` fails.\n\nCode under test:\n```python\n{}\n```\n\nThe test:\n```python\n{}\n```\n\nThe error:\n```\n{}\n```\n",
        ctx.gap.qualname, ctx.gap.module, ctx.source, test_src, error
    );
    if !history.is_empty() {
        u.push_str("\nEarlier corrections also failed:\n");
        for (i, h) in history.iter().enumerate() {
            u.push_str(&format!("{}. {}\n", i + 1, h));
        }
    }
    u.push_str(&format!(
        "\nThe code under test is correct. Fix the test: correct its arguments or its expected values so that they match what the code really does. \
         Keep the same test function name. Reply with the corrected test function (and any imports it needs) in one ```python block. `{}` is already imported from `{}`.",
        ctx.gap.top_name(),
        ctx.gap.module
    ));
    vec![Message::system(generate::SYSTEM), Message::user(u)]
}

/// Replaces the test `node` in the candidate with the function in `reply_code` (the one of
/// the same name, else the first test function), adds the reply's new imports, and runs the
/// static checks again.
pub fn apply(
    cand: &Candidate,
    node: &str,
    reply_code: &str,
    ctx: &Context,
    project: &super::detect::Project,
) -> Result<Candidate, String> {
    if node.contains("::") {
        return Err("tests inside classes are not auto-fixed".into());
    }
    let reply = python::parse(reply_code).ok_or("the fix does not parse")?;
    if let Some(l) = reply.first_error_line() {
        return Err(format!("the fix does not parse (line {l})"));
    }
    let new_fn = reply
        .test_functions()
        .into_iter()
        .filter(|t| !t.node_id.contains("::"))
        .min_by_key(|t| (t.node_id != node) as u8)
        .ok_or("the fix has no test function")?;
    let new_src = &reply_code[new_fn.bytes.clone()];
    let body = python::parse(&cand.body).ok_or("the candidate no longer parses")?;
    let old = body
        .test_functions()
        .into_iter()
        .find(|t| t.node_id == node)
        .ok_or_else(|| format!("test `{node}` is not in the file"))?;
    let mut text = cand.body.clone();
    text.replace_range(old.bytes.clone(), new_src);
    let existing: Vec<String> = body.imports();
    let mut added = String::new();
    for i in reply.imports() {
        if !existing.contains(&i) {
            added.push_str(&i);
            added.push('\n');
        }
    }
    let text = format!("{added}{text}");
    let mut out =
        generate::check(&text, ctx, project, &cand.file_name).map_err(|r| r.to_string())?;
    let mut repairs = cand.repairs.clone();
    repairs.extend(out.repairs);
    out.repairs = repairs;
    Ok(out)
}

/// Removes tests from a candidate (failed, flaky, code bugs); `None` when none are left.
pub fn without(cand: &Candidate, nodes: &[String]) -> Option<Candidate> {
    let p = python::parse(&cand.body)?;
    let ranges: Vec<std::ops::Range<usize>> = p
        .test_functions()
        .into_iter()
        .filter(|t| nodes.contains(&t.node_id))
        .map(|t| t.bytes)
        .collect();
    let body = python::remove_ranges(&cand.body, &ranges);
    let left = python::parse(&body)?;
    if left.first_error_line().is_some() {
        return None;
    }
    let tests: Vec<String> = left
        .test_functions()
        .into_iter()
        .filter(|t| !t.placeholder)
        .map(|t| t.node_id)
        .collect();
    if tests.is_empty() {
        return None;
    }
    Some(Candidate {
        body,
        tests,
        ..cand.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(body: &str) -> Candidate {
        Candidate {
            file_name: "test_gen_x.py".into(),
            header: String::new(),
            body: body.into(),
            tests: vec!["test_a".into(), "test_b".into()],
            repairs: vec![],
        }
    }

    #[test]
    fn remove_and_extract() {
        let c = cand("import math\n\ndef test_a():\n    assert 1\n\ndef test_b():\n    assert 2\n");
        let w = without(&c, &["test_a".into()]).expect("one left");
        assert_eq!(w.tests, vec!["test_b"]);
        assert!(!w.body.contains("test_a"));
        assert!(without(&c, &["test_a".into(), "test_b".into()]).is_none());
        assert_eq!(
            test_source(&c, "test_b").as_deref(),
            Some("def test_b():\n    assert 2")
        );
        assert!(temperature(0) < temperature(2));
        assert_eq!(error_excerpt("a\nb\nc", 2), "b\nc");
    }
}
