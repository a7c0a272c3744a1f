//! Wrong expected values, the main loss with a small model: a test that fails on
//! `assert CALL == LITERAL` because the model guessed the literal becomes a *characterization
//! test* — the literal is replaced by the value the code returned, read from pytest's own
//! assertion message (`E   assert 3 == 5`), with a comment saying so — and the test is validated
//! again like any other (3 runs, reversed, alone). It is reported apart from the tests whose
//! expectations the model got right, so a reviewer knows it pins down what the code does now,
//! not what it should do.
//!
//! The decision, and why: the model's expected value is a guess by a model that has seen the
//! code only, so a mismatch on a plain equality is evidence against the guess, not against the
//! code. It becomes a *suspected code bug* only on other evidence — an exception the code under
//! test ran into (not one it raised on purpose, below) that the rules or the model judge to be
//! the code's fault (see [`super::classify`]) — and then it is reported and never "fixed". No
//! model time is spent on characterizations: the observed value comes from the sandbox run
//! that already happened.
//!
//! Only what can be written back exactly is characterized: one-line assertions whose one side
//! the test wrote out — a literal, a value built from literals with containers or standard
//! value types (`set(['a'])`, `[Path('a.txt')]`, `Decimal('1.5')`), or a name bound to one
//! earlier in the test, on one line or several (`expected = [...]`, then `assert f(x) ==
//! expected`: the assertion's name is replaced, the binding stays) — and an observed
//! value that is itself a plain literal (number, string, `True`/`False`/`None`, or containers
//! of those, `set()` among them; pytest runs with `-vv` so it prints them whole). Anything
//! else — objects, floats printed as `nan`, a string holding an address (`"<function f at
//! 0x7f…>"`), multi-line assertions, chained comparisons, `and`/`or` — goes to the fix round
//! as before. `assert CALL is LITERAL` is characterized too: `is` stays for `None`, `True` and
//! `False` and becomes `==` for any other observed value.
//!
//! A check that is not an equality is a guess about the value too, and is characterized by
//! pinning the value the code returned: `assert len(f(x)) > 5` that saw `1` becomes `assert
//! len(f(x)) == 1`, `assert "a" in f(x)` that saw `'cat'` becomes `assert f(x) == 'cat'`
//! (`!=`, `<`, `<=`, `>=`, `not in`, `is not` alike), and `assert f(x)` or `assert not f(x)`
//! that saw `False` (or `[]`, `0`, `'abc'`) becomes `assert f(x) is False` (`== []`…). The
//! report shows what the model expected (`> 5`, `'a' in …`, `a true value`) beside it. Such
//! a test is stricter than the model's (it pins the whole value), so a value that changes
//! from run to run (a temporary path, a time) fails the next validation and is dropped.
//!
//! A parametrized test is never characterized as it stands: one rewrite serves all its
//! parameters, and the value one of them saw is not the others'. It is split into one plain
//! test per case first ([`super::parametrized`]), and each of those is characterized alone.
//!
//! An expected exception that did not come is the same kind of guess: `with
//! pytest.raises(E): f(x)` that failed with `DID NOT RAISE` (or `pytest.warns`, `DID NOT
//! WARN`) loses its `with` — the statements stay, and a last bare expression becomes `assert
//! f(x) is None`, so the test still checks what the code did; the next run confirms it or
//! characterizes the value `f(x)` returned. The checks of the exception that never came go
//! with it (`assert "x" in str(e.value)` after `as e`: click's `_pipepager` tests lost all 3
//! to them). Left to the fix round: a block whose exception info the test reads otherwise
//! (in an assignment, an `if`, a check sharing a line), one holding a triple-quoted string,
//! one of several context managers, and a test that would check nothing without it.
//!
//! An exception the code raised *on purpose* where the model expected none is the mirror
//! case: a `raise` statement of the project's own code (the last frame of the traceback, not
//! a test, not an installed package) is the code's designed answer to what the test gave it
//! — click's `Editor(editor="vim").edit("x")` raising `ClickException: vim: Editing failed`
//! in a sandbox without vim. The test's statement that raised goes into `with
//! pytest.raises(CLASS):` (the class imported just above when the file does not name it), and
//! its statements after it, which never ran, go. An exception the code *ran into* (a
//! `TypeError` on a line that is not a `raise`) still goes to the classification, where it
//! may become a suspected code bug; so do a bare re-`raise`, `AssertionError`, import errors
//! and what says something about the run (`MemoryError`, `RecursionError`).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::exec::Case;
use super::generate::Candidate;
use super::python;

/// One expected value replaced by the observed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Characterization {
    /// The test's node id (`test_x` or `TestK::test_x`).
    pub test: String,
    /// What the model expected (its literal).
    pub expected_by_model: String,
    /// What the code returned in the sandbox (pytest's repr), now the test's expectation.
    pub observed: String,
    /// The assertion as it now reads.
    pub assertion: String,
}

/// Longest observed value written into a test.
const MAX_VALUE: usize = 200;

/// The comment cordon puts above a characterized assertion.
pub const COMMENT: &str = "# cordon: characterization - expected value observed in the sandbox";

/// The first `assert A OP B` that pytest printed for this failure (`OP` as the test wrote
/// it: `==`, `in`, `is not`…), split in its two reprs. `None` when there is none, or when
/// ` OP ` does not split it unambiguously.
fn observed_sides(case: &Case, op: &str) -> Option<(String, String)> {
    let rest = first_assertion(case)?;
    let op = format!(" {op} ");
    let mut parts = rest.split(&op);
    let (a, b) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((a.trim().to_string(), b.trim().to_string()))
}

/// What the first `E   assert …` line of this failure says after `assert `: the condition
/// with the values pytest saw (`3 == 5`, `'a' in 'cat'`, `False`, `not 'abc'`).
fn first_assertion(case: &Case) -> Option<&str> {
    case.text
        .lines()
        .filter_map(|l| l.strip_prefix('E'))
        .map(str::trim)
        .map(|l| l.strip_prefix("AssertionError: ").unwrap_or(l))
        .find_map(|l| l.strip_prefix("assert "))
}

/// The frames of a short traceback, in order: (file, line).
fn frames(case: &Case) -> impl DoubleEndedIterator<Item = (String, usize)> + '_ {
    case.text
        .lines()
        .filter(|l| !l.starts_with('E'))
        .filter_map(|l| {
            let (path, rest) = l.trim().split_once(".py:")?;
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((format!("{path}.py"), n.parse::<usize>().ok()?))
        })
}

/// Whether a traceback's `path` is the candidate's file `file_name`.
pub(super) fn in_file(path: &str, file_name: &str) -> bool {
    path == file_name || path.ends_with(&format!("/{file_name}"))
}

/// The line (1-based, in the candidate's whole file) where the test failed: the last frame
/// of the short traceback in the candidate's file.
pub fn failing_line(case: &Case, file_name: &str) -> Option<usize> {
    let frame = frames(case).next_back()?;
    in_file(&frame.0, file_name).then_some(frame.1)
}

/// The line (1-based, in the candidate's whole file) of the test's last frame: where it
/// failed, or where it called the code that raised.
pub fn test_line(case: &Case, file_name: &str) -> Option<usize> {
    frames(case)
        .filter(|(path, _)| in_file(path, file_name))
        .map(|(_, line)| line)
        .next_back()
}

/// Whether the failure `case` is of a kind [`characterize`] rewrites: a failed assertion, an
/// expected exception or warning that did not come, an exception the code raised on purpose.
/// For an instance of a parametrized test, which is not rewritten as it stands, this says
/// whether splitting it into plain tests ([`super::parametrized`]) can help.
pub fn is_characterizable(case: &Case, file_name: &str) -> bool {
    first_assertion(case).is_some()
        || expected_but_absent(case).is_some()
        || raised_on_purpose(case, file_name).is_some()
}

/// The candidate with the failed check of test `node` turned into a characterization, and
/// what was changed; `None` when the failure is not a characterizable wrong expectation. A
/// wrong expected value is replaced by the observed one; an expected exception or warning that
/// did not come is taken away (see [`unexpected_return`]).
pub fn characterize(
    cand: &Candidate,
    node: &str,
    case: &Case,
) -> Option<(Candidate, Characterization)> {
    // One instance of a parametrized test (`test_f[a-1]`): the rewrite would hold for its
    // parameters and break the others' (click's `open_url` over three URLs flipped `== 0` and
    // `== 1` for 8 runs in run CC).
    if case.name.contains('[') {
        return None;
    }
    let header_lines = cand.header.matches('\n').count();
    let p = python::parse(&cand.body)?;
    let t = p.test_functions().into_iter().find(|t| t.node_id == node)?;
    let (out, ch) = if let Some(raised) = raised_on_purpose(case, &cand.file_name) {
        let at = test_line(case, &cand.file_name)?.checked_sub(header_lines)?;
        unexpected_raise(&p, &t, at, &raised, &cand.header)?
    } else {
        let at = failing_line(case, &cand.file_name)?.checked_sub(header_lines)?;
        match expected_but_absent(case) {
            Some(absent) => unexpected_return(&p, &t, at, absent)?,
            None => wrong_value(&p, &t, at, case)?,
        }
    };
    let parsed = python::parse(&out)?;
    if parsed.first_error_line().is_some() {
        return None;
    }
    let out = Candidate {
        body: out,
        ..cand.clone()
    };
    Some((out, ch))
}

/// The body with the failed one-line assertion on line `at` (1-based, in the body) of test
/// `t` rewritten to check the value the code returned (see [`rewrite`]).
fn wrong_value(
    p: &python::Parsed,
    t: &python::TestFn,
    at: usize,
    case: &Case,
) -> Option<(String, Characterization)> {
    let idx = at.checked_sub(1)?;
    let mut lines: Vec<String> = p.src.lines().map(str::to_string).collect();
    let line = lines.get(idx)?.clone();
    // The line must belong to this test (guards against a stale line number).
    let line_start: usize = lines[..idx].iter().map(|l| l.len() + 1).sum();
    if !(t.bytes.start <= line_start + line.len() && line_start < t.bytes.end) {
        return None;
    }
    let indent = line.len() - line.trim_start().len();
    let stmt = &line[indent..];
    let r = rewrite(stmt, p, t.bytes.start..line_start, case)?;
    // `" at 0x7f…"`: a string holding an object's address, another value in every run.
    if r.observed.len() > MAX_VALUE || !written_out(&r.observed) || r.observed.contains(" at 0x") {
        return None;
    }
    let mut new_stmt = stmt.to_string();
    new_stmt.replace_range(r.condition, &r.with);
    let pad = &line[..indent];
    lines[idx] = format!("{pad}{new_stmt}");
    lines.insert(
        idx,
        format!(
            "{pad}{COMMENT}; the model expected {}",
            one_line(&r.expected)
        ),
    );
    let mut body = lines.join("\n");
    body.push('\n');
    Some((
        body,
        Characterization {
            test: t.node_id.clone(),
            expected_by_model: r.expected,
            observed: r.observed,
            assertion: new_stmt,
        },
    ))
}

/// A failed assertion's condition rewritten to check the observed value.
struct Rewrite {
    /// The bytes of the statement that change.
    condition: Range<usize>,
    /// What they become.
    with: String,
    /// What the model expected, as the report shows it (`5`, `> 5`, `'a' in …`, `a true value`).
    expected: String,
    /// The value the code returned (pytest's repr), now the expectation.
    observed: String,
}

/// How the failed assertion `stmt` checks the observed value instead of the model's guess;
/// `before` is the test's bytes up to it (for names bound to an expected value).
///
/// - `A == B` or `A is B`, one side written out: that side becomes the observed value of the
///   other (`is` stays for `None`, `True` and `False`, else becomes `==`);
/// - any other comparison (`!=`, `<`, `>=`, `in`, `not in`, `is not`…), one side written out:
///   the computed side is checked for equality with its observed value (`len(x) > 5` that saw
///   1 becomes `len(x) == 1`, `'a' in f()` that saw `'cat'` becomes `f() == 'cat'`);
/// - `assert EXPR` or `assert not EXPR`: `EXPR` is checked for equality with the value pytest
///   printed (`assert f()` that saw `False` becomes `assert f() is False`).
fn rewrite(stmt: &str, p: &python::Parsed, before: Range<usize>, case: &Case) -> Option<Rewrite> {
    let equal_to = |value: &str, observed: &str| match observed {
        "None" | "True" | "False" => format!("{value} is {observed}"),
        _ => format!("{value} == {observed}"),
    };
    match python::assertion(stmt)? {
        python::Assertion::Comparison { left, op, right } => {
            let op_text = &stmt[op.clone()];
            let (seen_left, seen_right) = observed_sides(case, op_text)?;
            let (l, r) = (
                expectation(&stmt[left.clone()], p, before.clone()),
                expectation(&stmt[right.clone()], p, before),
            );
            // A name bound to a written-out value and compared with a value written in the
            // assertion is what the code filled in (`unknown = set()`, passed to the code,
            // then `assert unknown == {'a'}`): the value in the assertion is the expectation.
            let (l, r) = match (l, r) {
                (Some(_), Some(e))
                    if expected_value(&stmt[right.clone()])
                        && python::is_identifier(&stmt[left.clone()]) =>
                {
                    (None, Some(e))
                }
                (Some(e), Some(_))
                    if expected_value(&stmt[left.clone()])
                        && python::is_identifier(&stmt[right.clone()]) =>
                {
                    (Some(e), None)
                }
                other => other,
            };
            let (expected_range, expected, computed, observed) = match (l, r) {
                (None, Some(e)) => (right.clone(), e, left.clone(), seen_left),
                (Some(e), None) => (left.clone(), e, right.clone(), seen_right),
                _ => return None,
            };
            if matches!(op_text, "==" | "is") {
                if observed == expected {
                    return None;
                }
                // The expected side takes the observed value, the rest stays as written.
                let mut with = stmt[left.start..right.end].to_string();
                let op_with = match op_text {
                    "is" if !matches!(observed.as_str(), "None" | "True" | "False") => "==",
                    other => other,
                };
                let mut edits = [(expected_range, observed.as_str()), (op, op_with)];
                edits.sort_by_key(|e| std::cmp::Reverse(e.0.start));
                for (range, text) in edits {
                    with.replace_range(range.start - left.start..range.end - left.start, text);
                }
                return Some(Rewrite {
                    condition: left.start..right.end,
                    with,
                    expected,
                    observed,
                });
            }
            let expected = match computed.start < expected_range.start {
                true => format!("… {op_text} {expected}"),
                false => format!("{expected} {op_text} …"),
            };
            Some(Rewrite {
                condition: left.start..right.end,
                with: equal_to(&stmt[computed], &observed),
                expected,
                observed,
            })
        }
        python::Assertion::Truth {
            condition,
            value,
            negated,
        } => {
            let printed = first_assertion(case)?;
            let observed = match negated {
                true => printed.strip_prefix("not ")?,
                false => printed,
            };
            Some(Rewrite {
                with: equal_to(&stmt[value], observed),
                condition,
                expected: match negated {
                    true => "a false value".into(),
                    false => "a true value".into(),
                },
                observed: observed.to_string(),
            })
        }
    }
}

/// What a `pytest.raises`/`warns` block that failed expected and did not see: `Some("no
/// exception")` or `Some("no warning")`, or `None` for any other failure.
fn expected_but_absent(case: &Case) -> Option<&'static str> {
    let said = |what: &str| {
        case.message.contains(what)
            || case
                .text
                .lines()
                .filter_map(|l| l.strip_prefix('E'))
                .any(|l| l.trim().starts_with(what))
    };
    if said("Failed: DID NOT RAISE") {
        Some("no exception")
    } else if said("Failed: DID NOT WARN") {
        Some("no warning")
    } else {
        None
    }
}

/// The body with the `with pytest.raises(…):` block starting on line `at` (1-based, in the
/// body) of test `t` taken away: its statements stay, one level less indented, and a last
/// bare expression becomes `assert EXPR is None` — a test that still checks what the code
/// did, which the next run confirms or characterizes (`is None` that got `3` → `== 3`).
///
/// The checks of `e` after an `as e` go too ([`checks_of_the_exception`]). Left alone
/// (`None`): an `as e` whose `e` the test reads after the block otherwise, a block holding
/// a triple-quoted string (dedenting would change it), a line outdented from the block, and a
/// test that would check nothing without the block.
fn unexpected_return(
    p: &python::Parsed,
    t: &python::TestFn,
    at: usize,
    absent: &str,
) -> Option<(String, Characterization)> {
    let b = p.expecting_block(at)?;
    let src = p.src.as_str();
    if b.stmt.start < t.bytes.start || b.stmt.end > t.bytes.end {
        return None;
    }
    let line_of = |byte: usize| src[..byte].rfind('\n').map_or(0, |i| i + 1);
    let gone = match &b.alias {
        Some(a) => checks_of_the_exception(p, a, &b, t.bytes.end)?,
        None => Vec::new(),
    };
    let (with_start, body_start) = (line_of(b.stmt.start), line_of(b.body.start));
    let pad = &src[with_start..b.stmt.start];
    let inner = &src[body_start..b.body.start];
    let block = match &b.last_expression {
        Some(e) => format!(
            "{}assert {} is None{}",
            &src[body_start..e.start],
            &src[e.clone()],
            &src[e.end..b.body.end]
        ),
        None => src[body_start..b.body.end].to_string(),
    };
    if block.contains("\"\"\"") || block.contains("'''") || !pad.trim().is_empty() {
        return None;
    }
    let call = b.call.split_whitespace().collect::<Vec<_>>().join(" ");
    let went = match gone.len() {
        0 => String::new(),
        1 => " and 1 check of it".to_string(),
        n => format!(" and {n} checks of it"),
    };
    let mut out = vec![format!(
        "{pad}# cordon: characterization - {absent} in the sandbox; the model expected {call}{went}"
    )];
    for l in block.lines() {
        match l.strip_prefix(inner) {
            _ if l.trim().is_empty() => out.push(String::new()),
            Some(rest) => out.push(format!("{pad}{rest}")),
            None => return None,
        }
    }
    let assertion = out.get(1).map(|l| l.trim().to_string()).unwrap_or_default();
    let tail: Vec<Range<usize>> = gone
        .iter()
        .map(|r| r.start - b.body.end..r.end - b.body.end)
        .collect();
    let body = format!(
        "{}{}{}",
        &src[..with_start],
        out.join("\n"),
        python::remove_ranges(&src[b.body.end..], &tail)
    );
    let checks = python::parse(&body)?
        .test_functions()
        .into_iter()
        .any(|x| x.node_id == t.node_id && x.checks);
    checks.then(|| {
        (
            body,
            Characterization {
                test: t.node_id.clone(),
                expected_by_model: call,
                observed: absent.to_string(),
                assertion,
            },
        )
    })
}

/// The statements after block `b` that check the exception it expected (`assert "x" in
/// str(e.value)`), each from the start of its line: they go with the block, since what they
/// check never came. `None` when the alias `a` is read anywhere else before `test_end` (in
/// an `if`, a loop, an assignment) or a check shares its line with other code.
fn checks_of_the_exception(
    p: &python::Parsed,
    a: &str,
    b: &python::ExpectingBlock,
    test_end: usize,
) -> Option<Vec<Range<usize>>> {
    let src = p.src.as_str();
    let mut at = b.stmt.end;
    let mut lines = Vec::new();
    for r in &b.alias_readers {
        let start = src[..r.start].rfind('\n').map_or(0, |i| i + 1);
        let own_line = src[start..r.start].trim().is_empty()
            && src[r.end..]
                .lines()
                .next()
                .is_none_or(|l| l.trim().is_empty());
        if r.start < at || !own_line || p.identifiers_in(at..r.start).contains(a) {
            return None;
        }
        lines.push(start..r.end);
        at = r.end;
    }
    (!p.identifiers_in(at..test_end).contains(a)).then_some(lines)
}

/// An exception the code under test raised on purpose: its class as pytest printed it
/// (`click.exceptions.ClickException`, `ValueError`) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raised {
    class: String,
    message: String,
}

/// Exceptions that say something about the run, not about what the code answers.
const NOT_AN_ANSWER: &[&str] = &[
    "AssertionError",
    "ImportError",
    "ModuleNotFoundError",
    "MemoryError",
    "RecursionError",
    "SystemExit",
    "GeneratorExit",
];

/// The exception of a failed test when a `raise` statement of the project's own code raised
/// it (the last frame of the short traceback is a file of the project, not a test, not
/// cordon's plugins, not an installed package or the standard library, and its line starts
/// with `raise `): the code's own answer to what the test gave it. `None` for anything else —
/// an exception the code ran into (a `TypeError` deep inside it), one the test raised, a bare
/// re-`raise` — which the classification decides as before.
fn raised_on_purpose(case: &Case, file_name: &str) -> Option<Raised> {
    let lines: Vec<&str> = case.text.lines().collect();
    let at = lines.iter().rposition(|l| {
        !l.starts_with('E')
            && l.split_once(".py:")
                .is_some_and(|(_, r)| r.contains(": in "))
    })?;
    let (path, _) = lines[at].trim().split_once(".py:")?;
    let file = path.rsplit('/').next().unwrap_or(path);
    let projects = !path.starts_with('/')
        && !path.starts_with(".cordon-testgen")
        && !path.contains("site-packages")
        && !path
            .split('/')
            .any(|d| d == "tests" || d == "test" || d == "generated")
        && !file.starts_with("test_")
        && file != "conftest"
        && !in_file(&format!("{path}.py"), file_name);
    let statement = lines.get(at + 1)?.trim();
    if !projects || !statement.starts_with("raise ") {
        return None;
    }
    let error = lines[at + 1..]
        .iter()
        .find_map(|l| l.strip_prefix("E "))?
        .trim();
    let (class, message) = error.split_once(": ").unwrap_or((error, ""));
    let named = class.split('.').all(python::is_identifier);
    let internal = class.starts_with("_pytest.") || class.starts_with("pytest.");
    if !named || internal || NOT_AN_ANSWER.contains(&class) {
        return None;
    }
    Some(Raised {
        class: class.to_string(),
        message: message.to_string(),
    })
}

/// The body with the statement of test `t` on line `at` (1-based, in the body) — one of the
/// test's own simple statements, which raised — put in a `with pytest.raises(CLASS):` block,
/// and the test's statements after it, which never ran, left out. A class of another module
/// is imported just above the block unless the test or the file already names it.
///
/// Left alone (`None`): a statement in a nested block (a loop, another `with`), a compound
/// one, one holding a triple-quoted string or a backslash-continued line (indenting it would
/// change the string), and one indented with tabs.
fn unexpected_raise(
    p: &python::Parsed,
    t: &python::TestFn,
    at: usize,
    raised: &Raised,
    header: &str,
) -> Option<(String, Characterization)> {
    let stmt = p.simple_statement_in_test(&t.node_id, at)?;
    let src = p.src.as_str();
    let line_start = src[..stmt.start].rfind('\n').map_or(0, |i| i + 1);
    let pad = &src[line_start..stmt.start];
    let written = &src[stmt.clone()];
    // Indenting must not change a string (triple quotes, a backslash-continued line) nor mix
    // tabs with the four spaces it adds (a `TabError` for the whole file).
    let changes_meaning = written.contains("\"\"\"")
        || written.contains("'''")
        || written.contains("\\\n")
        || pad.contains('\t');
    if !pad.trim().is_empty() || changes_meaning {
        return None;
    }
    let (name, import) = match raised.class.rsplit_once('.') {
        None => (raised.class.as_str(), None),
        Some((module, class)) => {
            let named = p.identifiers_in(t.bytes.clone()).contains(class)
                || p.module_scope_names().contains(class)
                || python::parse(header).is_some_and(|h| h.module_scope_names().contains(class));
            (
                class,
                (!named).then(|| format!("{pad}from {module} import {class}\n")),
            )
        }
    };
    let with = format!("with pytest.raises({name}):");
    let block = written.replace('\n', "\n    ");
    let body = format!(
        "{}{pad}# cordon: characterization - the code raised {} here in the sandbox; the model expected no exception\n{}{pad}{with}\n{pad}    {block}{}",
        &src[..line_start],
        raised.class,
        import.unwrap_or_default(),
        &src[t.bytes.end..]
    );
    let checks = python::parse(&body)?
        .test_functions()
        .into_iter()
        .any(|x| x.node_id == t.node_id && x.checks);
    checks.then(|| {
        let observed = match raised.message.is_empty() {
            true => raised.class.clone(),
            false => format!("{}: {}", raised.class, raised.message),
        };
        (
            body,
            Characterization {
                test: t.node_id.clone(),
                expected_by_model: "no exception".into(),
                observed: one_line(&super::llm::clip(&observed, MAX_VALUE)),
                assertion: with,
            },
        )
    })
}

/// What the model expected, if `side` of the equality is written out by the test (see
/// [`expected_value`]), or is a name the test bound to such a value before the assertion
/// (`expected = [1, 2]`, or a dict over several lines: the last binding in `before`, the
/// test's bytes up to the assertion). `None` for anything computed.
fn expectation(side: &str, p: &python::Parsed, before: Range<usize>) -> Option<String> {
    if expected_value(side) {
        return Some(side.to_string());
    }
    if !python::is_identifier(side) {
        return None;
    }
    let value = p.last_assignment(side, before)?;
    expected_value(&value).then_some(value)
}

/// The calls that build a value cordon can write back: what pytest prints for an empty or
/// frozen container (`set()`, `frozenset({1})`).
const CONTAINERS: &[&str] = &["set", "frozenset", "tuple", "list", "dict"];

/// The calls a test's own expected value may be built with besides [`CONTAINERS`]: value
/// types of the standard library (pathspec's `normalize_files` answer of run EE expected
/// `{'a.txt': [Path('a.txt')]}`, three tests lost to it). Only ever on the model's side: an
/// observed value is written back only when it is [`written_out`].
const VALUE_TYPES: &[&str] = &[
    "Path",
    "PosixPath",
    "PurePath",
    "PurePosixPath",
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "Decimal",
    "decimal.Decimal",
    "Fraction",
    "fractions.Fraction",
];

/// A value the test wrote out, the model's guess: literals, and values built from them with
/// [`CONTAINERS`] and [`VALUE_TYPES`] only, at any depth.
fn expected_value(expr: &str) -> bool {
    python::is_built_from_literals(expr, &[CONTAINERS, VALUE_TYPES].concat())
}

/// A value cordon can write into a test as it is: a literal, or [`CONTAINERS`] of literals.
fn written_out(expr: &str) -> bool {
    python::is_built_from_literals(expr, CONTAINERS)
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::exec::CaseStatus;

    fn cand(body: &str) -> Candidate {
        Candidate {
            file_name: "test_gen_calc_clamp_1.py".into(),
            header: "# h\nimport pytest\n\n".into(),
            body: body.into(),
            tests: vec!["test_a".into(), "test_b".into()],
            repairs: vec![],
        }
    }

    fn case(node: &str, text: &str) -> Case {
        Case {
            node: node.into(),
            classname: String::new(),
            name: node.into(),
            status: CaseStatus::Failed,
            message: String::new(),
            text: text.into(),
        }
    }

    const BODY: &str = "from calc import clamp\n\ndef test_a():\n    assert clamp(1, 0, 3) == 1\n\ndef test_b():\n    x = clamp(5, 0, 3)\n    assert clamp(5, 0, 3) == 5\n";

    #[test]
    fn a_wrong_literal_becomes_the_observed_value() {
        let c = cand(BODY);
        // Line 8 of the body is line 11 of the file (3 header lines).
        let f = case(
            "test_b",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:11: in test_b\n    assert clamp(5, 0, 3) == 5\nE   assert 3 == 5\nE    +  where 3 = clamp(5, 0, 3)",
        );
        let (out, ch) = characterize(&c, "test_b", &f).expect("characterized");
        assert_eq!(ch.expected_by_model, "5");
        assert_eq!(ch.observed, "3");
        assert!(
            out.body.contains("    assert clamp(5, 0, 3) == 3\n"),
            "{}",
            out.body
        );
        assert!(out.body.contains(COMMENT), "{}", out.body);
        assert!(
            out.body.contains("assert clamp(1, 0, 3) == 1"),
            "the other test is untouched"
        );
        // Literal on the left, strings with pytest's quotes.
        let c = cand("def test_a():\n    assert \"odd\" == parity(2)\n");
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   AssertionError: assert 'odd' == 'even'",
        );
        let (out, ch) = characterize(&c, "test_a", &f).expect("characterized");
        assert_eq!(ch.observed, "'even'");
        assert!(
            out.body.contains("assert 'even' == parity(2)"),
            "{}",
            out.body
        );
    }

    #[test]
    fn a_name_bound_to_a_literal_or_a_built_set_is_an_expected_value() {
        let body = "def test_a():\n    expected = [('a', 1)]\n    assert list(it(n)) == expected\n\ndef test_b():\n    s = strip(t)\n    assert s == set(['n'])\n";
        let c = cand(body);
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:6: in test_a\nE   AssertionError: assert [(1, 'a')] == [('a', 1)]",
        );
        let (out, ch) = characterize(&c, "test_a", &f).expect("characterized");
        assert_eq!(ch.expected_by_model, "[('a', 1)]");
        assert!(
            out.body.contains("    assert list(it(n)) == [(1, 'a')]\n"),
            "{}",
            out.body
        );
        // A name bound to a literal is not mistaken for the observed side.
        let f = case(
            "test_b",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:10: in test_b\nE   AssertionError: assert {'lineno', 'ctx'} == {'n'}",
        );
        let (out, ch) = characterize(&c, "test_b", &f).expect("characterized");
        assert_eq!(ch.expected_by_model, "set(['n'])");
        assert!(
            out.body.contains("    assert s == {'lineno', 'ctx'}\n"),
            "{}",
            out.body
        );
        // A name bound to something computed is not an expectation; nor is a comparison, nor
        // a name whose last binding adds to it. A binding may span lines.
        let at = |src: &str| {
            let p = python::parse(src).expect("parses");
            expectation("r", &p, 0..src.len())
        };
        assert_eq!(at("r = f(1)\n"), None);
        assert_eq!(at("r = 1\nr == 2\n").as_deref(), Some("1"));
        assert_eq!(at("r = [1]\nr += [2]\n"), None);
        assert_eq!(at("r = {1: 2}\n").as_deref(), Some("{1: 2}"));
        assert_eq!(
            at("r = {\n    'a': [1],\n    'b': [2],\n}\n").as_deref(),
            Some("{\n    'a': [1],\n    'b': [2],\n}")
        );
        assert!(!written_out("set(f(1))") && !written_out("set([1]) | set(f(2))"));
        assert!(written_out("frozenset()") && written_out("tuple((1, 2))"));
        // The model's side may be built with value types; what cordon writes back may not.
        assert!(expected_value("{'a': [Path('a', b='c')]}") && !written_out("[Path('a')]"));
        assert!(!expected_value("[Path(f(1))]") && !expected_value("[Path(*a)]"));
        assert!(!expected_value("Path('a') / 'b'") && !expected_value("os.path.join('a')"));
    }

    #[test]
    fn an_empty_set_observed_is_written_back() {
        // astor's run M: `strip_tree` returned `set()` where the model expected three names,
        // the name bound twice, the assertion with a message.
        let body = "def test_a():\n    e = set()\n    assert strip_tree(n) == e, \"1\"\n    e = {'func', 'args'}\n    assert strip_tree(n) == e, \"2\"\n";
        let c = cand(body);
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:8: in test_a\nE   AssertionError: 2\nE   assert set() == {'func', 'args'}",
        );
        let (out, ch) = characterize(&c, "test_a", &f).expect("characterized");
        assert_eq!(ch.expected_by_model, "{'func', 'args'}");
        assert_eq!(ch.observed, "set()");
        assert!(
            out.body
                .contains("    assert strip_tree(n) == set(), \"2\"\n"),
            "{}",
            out.body
        );
        // A dict bound over several lines (pathspec's `normalize_files`).
        let body =
            "def test_a():\n    e = {\n        '/a': ['a'],\n    }\n    assert nf(['a']) == e\n";
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:8: in test_a\nE   AssertionError: assert {'a': ['a']} == {'/a': ['a']}",
        );
        let (out, ch) = characterize(&cand(body), "test_a", &f).expect("characterized");
        assert_eq!(ch.observed, "{'a': ['a']}");
        assert!(
            out.body.contains("    assert nf(['a']) == {'a': ['a']}\n"),
            "{}",
            out.body
        );
        // An expectation built with a standard value type (run EE: pathspec's
        // `normalize_files`, 3 tests lost to `[Path('a.txt')]`); pytest 7.2's own output.
        let body = "def test_a():\n    files = ['a.txt', 'b.txt']\n    expected = {\n        'a.txt': [Path('a.txt')],\n        'b.txt': [Path('b.txt')],\n    }\n    assert normalize_files(files) == expected\n";
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:10: in test_a\n    assert normalize_files(files) == expected\nE   AssertionError: assert {'a.txt': ['a.txt'], 'b.txt': ['b.txt']} == {'a.txt': [PosixPath('a.txt')], 'b.txt': [PosixPath('b.txt')]}\nE     Differing items:\nE     {'b.txt': ['b.txt']} != {'b.txt': [PosixPath('b.txt')]}\nE     {'a.txt': ['a.txt']} != {'a.txt': [PosixPath('a.txt')]}\nE     Full diff:\nE     - {'a.txt': [PosixPath('a.txt')], 'b.txt': [PosixPath('b.txt')]}\nE     ?            ----------       -             ----------       -\nE     + {'a.txt': ['a.txt'], 'b.txt': ['b.txt']}",
        );
        let (out, ch) = characterize(&cand(body), "test_a", &f).expect("characterized");
        assert_eq!(ch.observed, "{'a.txt': ['a.txt'], 'b.txt': ['b.txt']}");
        assert!(
            out.body.contains(
                "    assert normalize_files(files) == {'a.txt': ['a.txt'], 'b.txt': ['b.txt']}\n"
            ),
            "{}",
            out.body
        );
        // The other way round, the code's `PosixPath` is no value cordon writes back: no
        // import of it in the test, and its repr is not a literal.
        let body = "def test_a():\n    assert to_path('a') == 'a'\n";
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   AssertionError: assert PosixPath('a') == 'a'",
        );
        assert!(characterize(&cand(body), "test_a", &f).is_none());
        // A string holding an object's address differs in every run (pathspec's
        // `register_pattern`: characterized three times, failing each time).
        let body = "def test_a():\n    assert str(e) == 'x'\n";
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   assert \"('p', <function f at 0x7f9fbe2516c0>)\" == 'x'",
        );
        assert!(characterize(&cand(body), "test_a", &f).is_none());
        // A call that is not a container of literals is not written back.
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:8: in test_a\nE   assert set(x) == {'func', 'args'}",
        );
        assert!(characterize(&c, "test_a", &f).is_none());
    }

    #[test]
    fn what_cannot_be_written_back_is_left_to_the_fix_round() {
        let c = cand(BODY);
        let at = |e: &str| {
            case(
                "test_b",
                &format!("tests/generated/cordon/test_gen_calc_clamp_1.py:11: in test_b\nE   {e}"),
            )
        };
        // An object, a truncated repr, an inequality, an exception: no characterization.
        assert!(characterize(&c, "test_b", &at("assert <calc.K object at 0x7f> == 5")).is_none());
        assert!(characterize(&c, "test_b", &at("assert [1, 2, ...] == 5")).is_none());
        assert!(characterize(&c, "test_b", &at("ZeroDivisionError: division by zero")).is_none());
        // The failing frame is in the code under test, not in the test file.
        let f = case(
            "test_b",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:11: in test_b\ncalc.py:3: in clamp\nE   assert 3 == 5",
        );
        assert!(characterize(&c, "test_b", &f).is_none());
        // The line belongs to another test.
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:11: in test_a\nE   assert 3 == 5",
        );
        assert!(characterize(&c, "test_a", &f).is_none());
        // Both sides computed: nothing to replace.
        let c2 = cand("def test_a():\n    assert clamp(1, 0, 3) == clamp(2, 0, 3)\n");
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   assert 1 == 2",
        );
        assert!(characterize(&c2, "test_a", &f).is_none());
    }

    #[test]
    fn an_exception_that_did_not_come_is_taken_away() {
        let body = "def test_a():\n    x = 1\n    with pytest.raises(ClickException,\n                       match=\"no\"):\n        setup(x)\n        pager(\"text\")\n    assert x == 1\n\ndef test_b():\n    with pytest.raises(ValueError):\n        r = parse(\"1\")\n";
        let did_not = |line: usize, node: &str, what: &str| {
            case(
                node,
                &format!(
                    "tests/generated/cordon/test_gen_calc_clamp_1.py:{line}: in {node}\n    with pytest.raises(\nE   Failed: DID NOT {what}"
                ),
            )
        };
        let (out, ch) = characterize(
            &cand(body),
            "test_a",
            &did_not(6, "test_a", "RAISE ClickException"),
        )
        .expect("characterized");
        let want = "def test_a():\n    x = 1\n    # cordon: characterization - no exception in the sandbox; the model expected pytest.raises(ClickException, match=\"no\")\n    setup(x)\n    assert pager(\"text\") is None\n    assert x == 1\n\ndef test_b():";
        assert!(out.body.starts_with(want), "{}", out.body);
        assert_eq!(ch.observed, "no exception");
        assert_eq!(ch.assertion, "setup(x)");
        // The next run returned 1: `is None` becomes `== 1`.
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:8: in test_a\n    assert pager(\"text\") is None\nE   assert 1 is None\nE    +  where 1 = pager('text')",
        );
        let (out, ch) = characterize(&out, "test_a", &f).expect("characterized again");
        assert!(
            out.body.contains("\n    assert pager(\"text\") == 1\n"),
            "{}",
            out.body
        );
        assert_eq!(
            (ch.expected_by_model.as_str(), ch.observed.as_str()),
            ("None", "1")
        );
        // A singleton keeps `is`.
        let c = cand("def test_a():\n    assert ok() is None\n");
        let f = case(
            "test_a",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   assert True is None",
        );
        let (out, _) = characterize(&c, "test_a", &f).expect("characterized");
        assert!(out.body.contains("assert ok() is True\n"), "{}", out.body);
        // test_b would check nothing without its block: left to the fix round.
        assert!(
            characterize(
                &cand(body),
                "test_b",
                &did_not(13, "test_b", "RAISE ValueError")
            )
            .is_none()
        );
        // A warning that did not come, in a method.
        let c = cand(
            "class TestK:\n    def test_w(self):\n        with pytest.warns(UserWarning):\n            warn_maybe(0)\n",
        );
        let (out, ch) = characterize(
            &c,
            "TestK::test_w",
            &did_not(6, "TestK::test_w", "WARN. No warnings"),
        )
        .expect("characterized");
        assert!(
            out.body.ends_with("        assert warn_maybe(0) is None\n"),
            "{}",
            out.body
        );
        assert_eq!(ch.observed, "no warning");
    }

    /// A short traceback of `node` (its frame on body line `line`, header of 3 lines) into
    /// the code, which raised `error` from `statement` in `path`.
    fn raised(node: &str, line: usize, path: &str, statement: &str, error: &str) -> Case {
        case(
            node,
            &format!(
                "tests/generated/cordon/test_gen_calc_clamp_1.py:{}: in {node}\n    x\n{path}:8: in edit\n    {statement}\nE   {error}",
                line + 3
            ),
        )
    }

    #[test]
    fn an_exception_the_code_raised_on_purpose_is_expected() {
        let body = "from click._termui_impl import Editor\n\ndef test_a():\n    e = Editor(editor=\"vim\")\n    r = e.edit(\n        \"x\")\n    assert r == \"y\"\n\ndef test_b():\n    assert clamp(5, 0, -1) == 0\n";
        // The call spans two lines; the frame names its second. A chained exception's frames
        // come first.
        let chained = case(
            "test_a",
            "src/click/_termui_impl.py:6: in edit\n    open(p)\nE   FileNotFoundError: [Errno 2]\n\nThe above exception was the direct cause of the following exception:\ntests/generated/cordon/test_gen_calc_clamp_1.py:9: in test_a\n    \"x\")\nsrc/click/_termui_impl.py:8: in edit\n    raise ClickException(\nE   click.exceptions.ClickException: vim: Editing failed",
        );
        let (out, ch) = characterize(&cand(body), "test_a", &chained).expect("characterized");
        let want = "def test_a():\n    e = Editor(editor=\"vim\")\n    # cordon: characterization - the code raised click.exceptions.ClickException here in the sandbox; the model expected no exception\n    from click.exceptions import ClickException\n    with pytest.raises(ClickException):\n        r = e.edit(\n            \"x\")\n\ndef test_b():";
        assert!(out.body.contains(want), "{}", out.body);
        assert_eq!(ch.expected_by_model, "no exception");
        assert_eq!(
            ch.observed,
            "click.exceptions.ClickException: vim: Editing failed"
        );
        assert_eq!(ch.assertion, "with pytest.raises(ClickException):");
        // A built-in exception needs no import; an assertion raising is put in the block too.
        let f = raised(
            "test_b",
            10,
            "src/calc.py",
            "raise ValueError(f\"bad {hi}\")",
            "ValueError: bad -1",
        );
        let (out, _) = characterize(&cand(body), "test_b", &f).expect("characterized");
        assert!(
            out.body.ends_with(
                "    with pytest.raises(ValueError):\n        assert clamp(5, 0, -1) == 0\n"
            ),
            "{}",
            out.body
        );
        // A class the file already names is not imported again.
        let named = "from calc import clamp, Bad\n\ndef test_b():\n    clamp(5, 0, -1)\n";
        let f = raised("test_b", 4, "src/calc.py", "raise Bad()", "calc.Bad");
        let (out, ch) = characterize(&cand(named), "test_b", &f).expect("characterized");
        assert!(
            out.body
                .contains("    with pytest.raises(Bad):\n        clamp(5, 0, -1)\n"),
            "{}",
            out.body
        );
        assert!(!out.body.contains("from calc import Bad"), "{}", out.body);
        assert_eq!(ch.observed, "calc.Bad");
    }

    #[test]
    fn an_exception_the_code_ran_into_or_the_test_raised_is_not_expected() {
        let body = "def test_b():\n    assert clamp(5, 0, -1) == 0\n\ndef test_c():\n    for i in range(3):\n        clamp(i, 0, -1)\n";
        let none = |node: &str, line: usize, path: &str, statement: &str, error: &str| {
            characterize(
                &cand(body),
                node,
                &raised(node, line, path, statement, error),
            )
            .is_none()
        };
        // Not a `raise`: an exception the code ran into is for the classification.
        assert!(none(
            "test_b",
            2,
            "src/calc.py",
            "return lo[hi]",
            "TypeError: 'int' object is not subscriptable"
        ));
        // A bare re-raise, the standard library, an installed package, a test helper, cordon's plugin.
        assert!(none("test_b", 2, "src/calc.py", "raise", "ValueError: x"));
        assert!(none(
            "test_b",
            2,
            "/usr/lib/python3.11/json/decoder.py",
            "raise JSONDecodeError(\"x\")",
            "json.decoder.JSONDecodeError: x"
        ));
        assert!(none(
            "test_b",
            2,
            "/venv/lib/python3.11/site-packages/a/b.py",
            "raise E()",
            "a.b.E"
        ));
        assert!(none("test_b", 2, "tests/conftest.py", "raise E()", "E"));
        assert!(none(
            "test_b",
            2,
            ".cordon-testgen/plugins/cordon_test_limit.py",
            "raise Failed(\"x\")",
            "Failed: x"
        ));
        // What says something about the run, or is pytest's own.
        assert!(none(
            "test_b",
            2,
            "src/calc.py",
            "raise AssertionError(\"x\")",
            "AssertionError: x"
        ));
        assert!(none(
            "test_b",
            2,
            "src/calc.py",
            "raise ImportError(\"x\")",
            "ImportError: x"
        ));
        assert!(none(
            "test_b",
            2,
            "src/calc.py",
            "raise pytest.skip.Exception()",
            "_pytest.outcomes.Skipped"
        ));
        // Tabs, a backslash-continued line.
        let tabbed = "def test_b():\n\tassert clamp(5, 0, -1) == 0\n";
        let f = raised(
            "test_b",
            2,
            "src/calc.py",
            "raise ValueError(\"x\")",
            "ValueError: x",
        );
        assert!(characterize(&cand(tabbed), "test_b", &f).is_none());
        let continued = "def test_b():\n    assert clamp(5, 0, -1) == len(\"a\\\nb\")\n";
        assert!(characterize(&cand(continued), "test_b", &f).is_none());
        // A class name that is not one, a call inside a loop.
        assert!(none(
            "test_b",
            2,
            "src/calc.py",
            "raise E()",
            "<locals>.E: x"
        ));
        assert!(none(
            "test_c",
            6,
            "src/calc.py",
            "raise ValueError(\"x\")",
            "ValueError: x"
        ));
        // The test raised it itself.
        let own = case(
            "test_b",
            "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_b\n    raise ValueError(\"x\")\nE   ValueError: x",
        );
        assert!(characterize(&cand(body), "test_b", &own).is_none());
    }

    #[test]
    fn a_raises_block_is_left_alone_when_taking_it_away_would_change_the_test() {
        let did_not = |body: &str| {
            let f = case(
                "test_a",
                "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\nE   Failed: DID NOT RAISE <class 'KeyError'>",
            );
            characterize(&cand(body), "test_a", &f)
        };
        // The exception info is read after the block, other than by a check of its own.
        assert!(did_not("def test_a():\n    with pytest.raises(KeyError) as e:\n        get({}, 'k')\n    m = str(e.value)\n    assert m\n").is_none());
        assert!(did_not("def test_a():\n    with pytest.raises(KeyError) as e:\n        get({}, 'k')\n    if e:\n        assert e.value\n").is_none());
        assert!(did_not("def test_a():\n    with pytest.raises(KeyError) as e:\n        get({}, 'k')\n    x = 1; assert e.value\n").is_none());
        // Checked after it: the checks go with the block, the rest stays.
        let (out, ch) = did_not("def test_a():\n    with pytest.raises(KeyError) as e:\n        get({}, 'k')\n    assert 'k' in str(e.value)\n    assert e.type is KeyError\n    assert size() == 0\n").expect("characterized");
        assert_eq!(
            out.body,
            "def test_a():\n    # cordon: characterization - no exception in the sandbox; the model expected pytest.raises(KeyError) and 2 checks of it\n    assert get({}, 'k') is None\n    assert size() == 0\n"
        );
        assert_eq!(ch.assertion, "assert get({}, 'k') is None");
        // Not read after it: taken away.
        assert!(
            did_not(
                "def test_a():\n    with pytest.raises(KeyError) as e:\n        get({}, 'k')\n"
            )
            .is_some()
        );
        // Dedenting would change a triple-quoted string.
        assert!(did_not("def test_a():\n    with pytest.raises(KeyError):\n        get(\"\"\"a\n        b\"\"\")\n").is_none());
        // Two context managers, a body on the `with` line, another context manager.
        assert!(
            did_not(
                "def test_a():\n    with pytest.raises(KeyError), open(p):\n        get({}, 'k')\n"
            )
            .is_none()
        );
        assert!(
            did_not("def test_a():\n    with pytest.raises(KeyError): get({}, 'k')\n").is_none()
        );
        assert!(did_not("def test_a():\n    with open(p):\n        get({}, 'k')\n").is_none());
        // The line is not the block's.
        assert!(did_not("def test_a():\n    x = 1\n    with pytest.raises(KeyError):\n        get({}, 'k')\n").is_none());
    }

    #[test]
    fn literals() {
        for l in [
            "1",
            "-2.5",
            "'a'",
            "\"b\"",
            "None",
            "True",
            "[1, 'a', (2, 3)]",
            "{'k': [1]}",
            "()",
        ] {
            assert!(python::is_literal(l), "{l}");
        }
        for n in [
            "x",
            "f(1)",
            "f'{x}'",
            "[1, ...]",
            "nan",
            "<K object>",
            "1 + 2",
            "a.b",
        ] {
            assert!(!python::is_literal(n), "{n}");
        }
        let op = |stmt: &str| match python::assertion(stmt) {
            Some(python::Assertion::Comparison { op, .. }) => Some(stmt[op].to_string()),
            _ => None,
        };
        assert_eq!(op("assert f(1) == 2, 'msg'").as_deref(), Some("=="));
        assert_eq!(op("assert f(1) != 2").as_deref(), Some("!="));
        assert_eq!(op("assert f(1) is  not None").as_deref(), None);
        assert_eq!(op("assert 'a' not in f(1)").as_deref(), Some("not in"));
        assert_eq!(python::assertion("assert f(1) == 2 == 3"), None);
        assert_eq!(python::assertion("assert f(1) and g(2)"), None);
        assert_eq!(python::assertion("x = f(1)"), None);
        let truth = |stmt: &str| match python::assertion(stmt) {
            Some(python::Assertion::Truth {
                condition,
                value,
                negated,
            }) => Some((
                stmt[condition].to_string(),
                stmt[value].to_string(),
                negated,
            )),
            _ => None,
        };
        assert_eq!(
            truth("assert not r.ok, 'm'"),
            Some(("not r.ok".into(), "r.ok".into(), true))
        );
        assert_eq!(
            truth("assert f(1)"),
            Some(("f(1)".into(), "f(1)".into(), false))
        );
        assert_eq!(truth("assert not (a or b)"), None);
        assert_eq!(truth("assert 1"), None);
    }

    /// What pytest 7.2 (the image's) prints with `-vv --tb=short` for each kind of failed
    /// check, copied from a run.
    #[test]
    fn a_check_that_is_not_an_equality_pins_the_observed_value() {
        let at = |test: &str, e: &str| {
            case(
                "test_a",
                &format!(
                    "tests/generated/cordon/test_gen_calc_clamp_1.py:5: in test_a\n    {test}\n{e}"
                ),
            )
        };
        let one = |test: &str, e: &str| {
            let c = cand(&format!("def test_a():\n    {test}\n"));
            characterize(&c, "test_a", &at(test, e)).map(|(out, ch)| {
                (
                    out.body.lines().nth(2).unwrap_or("").trim().to_string(),
                    ch.expected_by_model,
                    ch.observed,
                )
            })
        };
        let got =
            |a: &str, exp: &str, obs: &str| Some((a.to_string(), exp.to_string(), obs.to_string()));
        assert_eq!(
            one(
                "assert \"foo\" in f(\"bar baz\")",
                "E   AssertionError: assert 'foo' in 'bar baz'\nE    +  where 'bar baz' = f('bar baz')"
            ),
            got(
                "assert f(\"bar baz\") == 'bar baz'",
                "\"foo\" in …",
                "'bar baz'"
            )
        );
        assert_eq!(
            one(
                "assert f(\"odd\") in (\"even\", \"x\")",
                "E   AssertionError: assert 'odd' in ('even', 'x')\nE    +  where 'odd' = f('odd')"
            ),
            got(
                "assert f(\"odd\") == 'odd'",
                "… in (\"even\", \"x\")",
                "'odd'"
            )
        );
        assert_eq!(
            one(
                "assert \"a\" not in f(\"cat\")",
                "E   AssertionError: assert 'a' not in 'cat'\nE     'a' is contained here:\nE       cat\nE     ?  +"
            ),
            got("assert f(\"cat\") == 'cat'", "\"a\" not in …", "'cat'")
        );
        assert_eq!(
            one(
                "assert len(f([1])) > 5",
                "E   assert 1 > 5\nE    +  where 1 = len([1])\nE    +    where [1] = f([1])"
            ),
            got("assert len(f([1])) == 1", "… > 5", "1")
        );
        assert_eq!(
            one(
                "assert f(3) != 3",
                "E   assert 3 != 3\nE    +  where 3 = f(3)"
            ),
            got("assert f(3) == 3", "… != 3", "3")
        );
        assert_eq!(
            one(
                "assert f(None) is not None",
                "E   assert None is not None\nE    +  where None = f(None)"
            ),
            got("assert f(None) is None", "… is not None", "None")
        );
        assert_eq!(
            one(
                "assert f(False)",
                "E   assert False\nE    +  where False = f(False)"
            ),
            got("assert f(False) is False", "a true value", "False")
        );
        assert_eq!(
            one(
                "assert not f(\"abc\")",
                "E   AssertionError: assert not 'abc'\nE    +  where 'abc' = f('abc')"
            ),
            got("assert f(\"abc\") == 'abc'", "a false value", "'abc'")
        );
        assert_eq!(
            one(
                "assert f(0), \"should be set\"",
                "E   AssertionError: should be set\nE   assert 0\nE    +  where 0 = f(0)"
            ),
            got("assert f(0) == 0, \"should be set\"", "a true value", "0")
        );
        // A name bound to a written-out value that the code filled in, compared with a value
        // written in the assertion: the name is what the code made (astor's `iter_node(node,
        // unknown=unknown_set)`, run BB).
        let c = cand(
            "def test_a():\n    unknown = set()\n    f(unknown)\n    assert unknown == {'a'}\n",
        );
        let (out, ch) = characterize(&c, "test_a", &case("test_a", "tests/generated/cordon/test_gen_calc_clamp_1.py:7: in test_a\nE   AssertionError: assert set() == {'a'}\nE     Extra items in the right set:")).expect("characterized");
        assert!(
            out.body.contains("    assert unknown == set()\n"),
            "{}",
            out.body
        );
        assert_eq!(
            (ch.expected_by_model.as_str(), ch.observed.as_str()),
            ("{'a'}", "set()")
        );
        // Two names bound to written-out values: nothing says which is the expectation.
        let c = cand("def test_a():\n    a = [1]\n    b = [2]\n    assert a == b\n");
        assert!(characterize(&c, "test_a", &case("test_a", "tests/generated/cordon/test_gen_calc_clamp_1.py:7: in test_a\nE   assert [1] == [2]")).is_none());
        // A name the test bound to a call is computed, not an expected value.
        let c = cand("def test_a():\n    r = f([])\n    assert r\n");
        let (out, _) = characterize(
            &c,
            "test_a",
            &case(
                "test_a",
                "tests/generated/cordon/test_gen_calc_clamp_1.py:6: in test_a\nE   assert []",
            ),
        )
        .expect("characterized");
        assert!(out.body.contains("    r = f([])\n    # cordon: characterization - expected value observed in the sandbox; the model expected a true value\n    assert r == []\n"), "{}", out.body);
        // The method's address is in pytest's explanation, not in the value it saw.
        assert_eq!(
            one(
                "assert f(\"abc\").startswith(\"x\")",
                "E   AssertionError: assert False\nE    +  where False = <built-in method startswith of str object at 0x7f8b0ccfdd20>('x')"
            ),
            got(
                "assert f(\"abc\").startswith(\"x\") is False",
                "a true value",
                "False"
            )
        );
        // What is not a written-out value stays a failure: an object, both sides computed, a
        // string ` in ` cannot split, a chained comparison.
        assert_eq!(
            one(
                "assert f(K())",
                "E   AssertionError: assert <K object at 0x7f8b0ccfdd20>"
            ),
            None
        );
        assert_eq!(one("assert len(a) > len(b)", "E   assert 1 > 2"), None);
        assert_eq!(
            one(
                "assert \"in\" in f(x)",
                "E   AssertionError: assert 'in' in 'a in b'"
            ),
            None
        );
        assert_eq!(one("assert 0 < f(x) < 5", "E   assert 0 < -1"), None);
        // An instance of a parametrized test: its other parameters would see other values.
        let c = cand("def test_a(n):\n    assert clamp(n, 0, 3) == 5\n");
        let mut f = at("assert clamp(n, 0, 3) == 5", "E   assert 3 == 5");
        assert!(characterize(&c, "test_a", &f).is_some());
        f.name = "test_a[9]".into();
        assert!(characterize(&c, "test_a", &f).is_none());
    }
}
