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

/// The source of one test function of the candidate, or of one of its top-level fixtures
/// (a fix of a fixture that failed at setup, see [`fixture_at`]).
pub fn test_source(cand: &Candidate, node: &str) -> Option<String> {
    let p = python::parse(&cand.body)?;
    p.test_functions()
        .into_iter()
        .find(|t| t.node_id == node)
        .map(|t| t.bytes)
        .or_else(|| fixture_bytes(&p, node))
        .map(|b| cand.body[b].to_string())
}

/// The byte range (decorators included) of the top-level fixture `name`.
fn fixture_bytes(p: &python::Parsed, name: &str) -> Option<std::ops::Range<usize>> {
    p.units()
        .into_iter()
        .find(|u| {
            u.qualname == name
                && u.class.is_none()
                && u.kind == python::UnitKind::Function
                && u.is_fixture()
        })
        .map(|u| u.bytes)
}

/// The top-level fixture of the candidate whose definition holds `line` (1-based, in the
/// candidate's whole file, as pytest reports it): where a test that failed at setup failed,
/// so that the fix goes to the fixture — a fix of the test itself cannot repair it.
pub fn fixture_at(cand: &Candidate, line: usize) -> Option<String> {
    let idx = line.checked_sub(1 + cand.header.matches('\n').count())?;
    let p = python::parse(&cand.body)?;
    let at: usize = cand.body.lines().take(idx).map(|l| l.len() + 1).sum();
    p.units()
        .into_iter()
        .filter(|u| u.class.is_none() && u.is_fixture())
        .find(|u| u.bytes.contains(&at))
        .map(|u| u.qualname)
}

/// The last lines of a failure, where the cause is.
pub fn error_excerpt(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

/// The fix prompt: the gap's [`generate::head`] (the prefix its generation request had), then
/// the failing test, its error, and what the project's source says about the names the error
/// is about ([`super::hints`]).
pub fn prompt(
    ctx: &Context,
    test_src: &str,
    error: &str,
    hints: &[String],
    history: &[String],
) -> Vec<Message> {
    let mut u = generate::head(ctx, ctx.shrink);
    let fixture = test_src.trim_start().starts_with('@')
        && test_src
            .lines()
            .next()
            .is_some_and(|l| l.contains("fixture"));
    let (what, fails) = match fixture {
        true => ("fixture", "fails at setup"),
        false => ("test", "fails"),
    };
    u.push_str(&format!(
        "This pytest {what} for `{}` in module `{}` {fails}.\n\nThe {what}:\n```python\n{}\n```\n\nThe error:\n```\n{}\n```\n",
        ctx.gap.qualname, ctx.gap.module, test_src, error
    ));
    if !hints.is_empty() {
        u.push_str("\nFrom the project's source:\n");
        for h in hints {
            u.push_str(h);
            u.push('\n');
        }
    }
    if !history.is_empty() {
        u.push_str("\nEarlier corrections also failed:\n");
        for (i, h) in history.iter().enumerate() {
            u.push_str(&format!("{}. {}\n", i + 1, h));
        }
    }
    let ask = match fixture {
        true => {
            "Fix the fixture: correct the arguments of what it builds so that they match what the code really takes. \
                 Keep its name and its `@pytest.fixture` decorator. Reply with the corrected fixture"
        }
        false => {
            "Fix the test: correct its arguments or its expected values so that they match what the code really does. \
                  Keep the same test function name. Reply with the corrected test function"
        }
    };
    u.push_str(&format!(
        "\nThe code under test is correct. {ask} (and any imports it needs) in one ```python block. `{}` is already imported from `{}`.",
        ctx.gap.top_name(),
        ctx.gap.module
    ));
    vec![Message::system(generate::SYSTEM), Message::user(u)]
}

/// Replaces the test `node` in the candidate with the function in `reply_code` (the one of
/// the same name, else the first test function), adds the reply's new imports, and runs the
/// static checks again. A method of a test class (unittest style, `TestK::test_x`) is fixed
/// the same way: the reply's function or method is re-indented into the class and given its
/// `self`; a top-level test loses a `self` the model wrote. A top-level fixture `node` (see
/// [`fixture_at`]) is replaced by the reply's fixture of that name, decorator included.
pub fn apply(
    cand: &Candidate,
    node: &str,
    reply_code: &str,
    ctx: &Context,
    project: &super::detect::Project,
) -> Result<Candidate, String> {
    let in_class = node.contains("::");
    let leaf = node.rsplit("::").next().unwrap_or(node);
    let reply = python::parse(reply_code).ok_or("the fix does not parse")?;
    if let Some(l) = reply.first_error_line() {
        return Err(format!("the fix does not parse (line {l})"));
    }
    let body = python::parse(&cand.body).ok_or("the candidate no longer parses")?;
    let (old, new_src) = match fixture_bytes(&body, node) {
        Some(old) => (old, fixture_fix(&reply, reply_code, node)?),
        None => {
            let new_fn = reply
                .test_functions()
                .into_iter()
                .min_by_key(|t| ((t.node_id != node) as u8, (t.name != leaf) as u8))
                .ok_or("the fix has no test function")?;
            let old = body
                .test_functions()
                .into_iter()
                .find(|t| t.node_id == node)
                .ok_or_else(|| format!("test `{node}` is not in the file"))?
                .bytes;
            let new_src = reindent(
                &reply_code[new_fn.bytes.clone()],
                column(reply_code, new_fn.bytes.start),
                column(&cand.body, old.start),
                in_class,
            );
            (old, new_src)
        }
    };
    let mut text = cand.body.clone();
    text.replace_range(old, &new_src);
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

/// The reply's fixture `name`, at the top level: a reply that dropped the decorator is no
/// fix of a fixture.
fn fixture_fix(reply: &python::Parsed, reply_code: &str, name: &str) -> Result<String, String> {
    let b = reply
        .units()
        .into_iter()
        .find(|u| u.qualname.rsplit('.').next() == Some(name) && u.kind != python::UnitKind::Class)
        .filter(|u| u.is_fixture())
        .ok_or_else(|| format!("the fix has no fixture `{name}`"))?
        .bytes;
    Ok(reindent(
        &reply_code[b.clone()],
        column(reply_code, b.start),
        0,
        false,
    ))
}

/// The column (bytes since the line's start) of byte `at`.
fn column(src: &str, at: usize) -> usize {
    at - src[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// A function's source (starting at its `def` or decorator, first line unindented) moved
/// from column `from` to column `to`, with a `self` parameter added for a method or dropped
/// for a top-level function.
fn reindent(src: &str, from: usize, to: usize, method: bool) -> String {
    let pad = " ".repeat(to);
    let mut out = String::new();
    for (i, l) in src.lines().enumerate() {
        if i > 0 {
            out.push('\n');
            if !l.trim().is_empty() {
                let lead = l.len() - l.trim_start().len();
                out.push_str(&pad);
                out.push_str(&l[lead.min(from)..]);
            }
            continue;
        }
        out.push_str(l);
    }
    // The `def` line: the first that starts with `def ` or `async def `.
    let Some(def_at) = out.find("def ") else {
        return out;
    };
    let Some(open) = out[def_at..].find('(').map(|i| i + def_at) else {
        return out;
    };
    let params = &out[open + 1..];
    let has_self = params.trim_start().starts_with("self")
        && params.trim_start()[4..]
            .trim_start()
            .starts_with([',', ')']);
    if method && !has_self {
        let sep = if params.trim_start().starts_with(')') {
            ""
        } else {
            ", "
        };
        out.insert_str(open + 1, &format!("self{sep}"));
    } else if !method && has_self {
        let rest = params.trim_start()[4..].trim_start();
        let rest = rest.strip_prefix(',').map(str::trim_start).unwrap_or(rest);
        out = format!("{}{}", &out[..open + 1], rest);
    }
    out
}

/// Removes tests from a candidate (failed, flaky, code bugs); `None` when none are left. A
/// removed method of a test class leaves a `pass`, so the class stays valid.
pub fn without(cand: &Candidate, nodes: &[String]) -> Option<Candidate> {
    let body = python::parse(&cand.body)?.without_tests(nodes)?;
    let tests: Vec<String> = python::parse(&body)?
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

    #[test]
    fn reindenting_a_fix_into_a_class_and_out_of_one() {
        // A bare function answer for a method: moved in, given `self`.
        let m = reindent("def test_x():\n    assert f(1) == 2", 0, 4, true);
        assert_eq!(m, "def test_x(self):\n        assert f(1) == 2");
        // A method answer (class in the reply) for a method: the class's indentation goes.
        let m = reindent(
            "def test_x(self, tmp_path):\n        assert f(1) == 2",
            4,
            4,
            true,
        );
        assert_eq!(m, "def test_x(self, tmp_path):\n        assert f(1) == 2");
        // A method answer for a top-level test: `self` dropped, moved out.
        let m = reindent(
            "def test_x(self, tmp_path):\n        assert f(1) == 2",
            4,
            0,
            false,
        );
        assert_eq!(m, "def test_x(tmp_path):\n    assert f(1) == 2");
        let m = reindent(
            "def test_x(self):\n        x = 1\n\n        assert x",
            4,
            0,
            false,
        );
        assert_eq!(m, "def test_x():\n    x = 1\n\n    assert x");
    }

    #[test]
    fn a_fixture_that_failed_at_setup_is_what_gets_fixed() {
        let (ctx, project) = generate::tests::ctx();
        let c = Candidate {
            file_name: "test_gen_divide.py".into(),
            header: "from pkg.calc import divide\n".into(),
            body: "import pytest\n\n@pytest.fixture\ndef half():\n    return divide(1)\n\ndef test_a(half):\n    assert half == 0.5\n".into(),
            tests: vec!["test_a".into()],
            repairs: vec![],
        };
        // File lines: the header's one, then the body's; `return divide(1)` is line 6.
        assert_eq!(fixture_at(&c, 6).as_deref(), Some("half"));
        assert_eq!(fixture_at(&c, 4).as_deref(), Some("half"), "its decorator");
        assert_eq!(fixture_at(&c, 9), None, "a line of the test");
        assert_eq!(fixture_at(&c, 1), None, "the header");
        let src = test_source(&c, "half").expect("the fixture's source");
        assert_eq!(src, "@pytest.fixture\ndef half():\n    return divide(1)");

        let error = "E   TypeError: divide() missing 1 required positional argument: 'b'";
        let p = prompt(&ctx, &src, error, &[], &[]);
        let u = &p[1].content;
        assert!(
            u.contains("This pytest fixture for `divide` in module `pkg.calc` fails at setup."),
            "{u}"
        );
        assert!(u.contains("Reply with the corrected fixture"), "{u}");
        let t = prompt(&ctx, "def test_a():\n    assert 0", error, &[], &[]);
        assert!(t[1].content.contains("This pytest test for `divide`"));

        // The reply's fixture replaces the old one; the tests it brought along do not count.
        let fixed = apply(
            &c,
            "half",
            "import pytest\n\n@pytest.fixture\ndef half():\n    return divide(1, 2)\n\ndef test_a(half):\n    assert half == 1\n",
            &ctx,
            &project,
        )
        .expect("applies");
        let text = fixed.content();
        assert!(text.contains("    return divide(1, 2)\n"), "{text}");
        assert!(!text.contains("divide(1)\n"), "{text}");
        assert!(text.contains("assert half == 0.5"), "{text}");
        assert_eq!(fixed.tests, vec!["test_a"]);
        // Without its decorator the reply is no fixture.
        let e = apply(
            &c,
            "half",
            "def half():\n    return divide(1, 2)\n",
            &ctx,
            &project,
        )
        .expect_err("no fixture");
        assert!(e.contains("no fixture `half`"), "{e}");
    }

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

        // A unittest-style class: removing a method leaves the class valid.
        let mut k = cand(
            "class TestK:\n    def test_a(self):\n        assert 1\n\n    def test_b(self):\n        assert 2\n",
        );
        k.tests = vec!["TestK::test_a".into(), "TestK::test_b".into()];
        let w = without(&k, &["TestK::test_a".into()]).expect("one left");
        assert_eq!(w.tests, vec!["TestK::test_b"]);
        assert!(!w.body.contains("assert 1"), "{}", w.body);
        assert_eq!(error_excerpt("a\nb\nc", 2), "b\nc");
    }
}
