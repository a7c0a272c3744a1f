//! Stage 6, classify a failing generated test: rules first (import errors, missing fixtures,
//! syntax, the test's own names and checks, timeout, memory), the model only for what no rule
//! decides — in practice an exception raised inside the code under test.
//! Three classes, each with its evidence. A likely code bug is reported, never "fixed".

use serde::{Deserialize, Serialize};

use super::detect::Project;
use super::exec::Case;
use super::llm::{Llm, LlmError, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The test is wrong: fix the test.
    TestMistake,
    /// The sandbox lacks something (a dependency, a service): not the test's fault.
    Environment,
    /// The test looks right and the code under test misbehaves.
    LikelyCodeBug,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classification {
    pub class: Class,
    /// `rule:<name>` or `model`.
    pub by: String,
    pub evidence: String,
}

/// How a test's run ended, beyond its JUnit case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Normal,
    TimedOut,
    Killed,
}

fn rule(class: Class, name: &str, evidence: impl Into<String>) -> Option<Classification> {
    Some(Classification {
        class,
        by: format!("rule:{name}"),
        evidence: evidence.into(),
    })
}

/// The line of the error (`E   NameError: …`) or the message.
pub fn error_line(case: &Case) -> String {
    case.text
        .lines()
        .rev()
        .find(|l| l.starts_with("E "))
        .map(|l| l.trim_start_matches('E').trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| case.message.lines().next().unwrap_or("").to_string())
}

/// The file the exception was raised in: the last `path.py:N: in f` frame of a short
/// traceback.
pub fn raised_in(case: &Case) -> Option<String> {
    case.text
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(".py:")?;
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!n.is_empty() && !path.contains(' ')).then(|| format!("{path}.py"))
        })
        .next_back()
}

/// The test's own check failed: an `assert`, or a `pytest.raises`/`warns` that saw nothing.
fn assertion_failed(case: &Case) -> bool {
    let check = |l: &str| {
        l.starts_with("AssertionError")
            || l.starts_with("assert ")
            || l.starts_with("Failed: DID NOT RAISE")
            || l.starts_with("Failed: DID NOT WARN")
    };
    check(case.message.trim())
        || case
            .text
            .lines()
            .filter_map(|l| l.strip_prefix('E'))
            .any(|l| check(l.trim()))
}

fn quoted(s: &str, after: &str) -> Option<String> {
    let i = s.find(after)? + after.len();
    let rest = &s[i..];
    let q = rest.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let end = rest[1..].find(q)?;
    Some(rest[1..1 + end].to_string())
}

/// Decides by rule, or `None` when only judgement (the model) can.
pub fn by_rules(case: &Case, end: RunEnd, project: &Project) -> Option<Classification> {
    let all = format!("{}\n{}", case.message, case.text);
    let err = error_line(case);
    match end {
        RunEnd::TimedOut => {
            return rule(
                Class::TestMistake,
                "timeout",
                "the test run did not finish within its time limit (an endless loop or an input too large for the code)",
            );
        }
        RunEnd::Killed => {
            return rule(
                Class::TestMistake,
                "oom",
                "the test run was killed (most likely it exceeded the sandbox's memory limit)",
            );
        }
        RunEnd::Normal => {}
    }
    if all.contains(super::exec::TEST_LIMIT_MESSAGE) {
        return rule(
            Class::TestMistake,
            "timeout",
            "the test ran longer than its time limit (an endless loop, a prompt waiting for input, or an input too large for the code)",
        );
    }
    if all.contains("MemoryError") {
        return rule(Class::TestMistake, "oom", err);
    }
    if let Some(m) = quoted(&all, "No module named ") {
        let top = m.split('.').next().unwrap_or(&m).to_string();
        if project.external_imports.contains(&top) {
            return rule(
                Class::Environment,
                "module_not_found",
                format!(
                    "`{m}` is a dependency of the project that the sandbox image does not have: {err}"
                ),
            );
        }
        return rule(
            Class::TestMistake,
            "module_not_found",
            format!("the test imports `{m}`, which neither the project nor the image has: {err}"),
        );
    }
    if all.contains("ImportError") {
        return rule(Class::TestMistake, "import_error", err);
    }
    if let Some(f) = quoted(&all, "fixture ")
        && all.contains("not found")
    {
        return rule(
            Class::TestMistake,
            "fixture_not_found",
            format!("the test asks for a fixture `{f}` that does not exist"),
        );
    }
    if all.contains("SyntaxError") || all.contains("IndentationError") {
        return rule(Class::TestMistake, "syntax_error", err);
    }
    let in_test = raised_in(case).is_some_and(|p| p.contains("tests/generated/"));
    for exc in [
        "NameError",
        "AttributeError",
        "TypeError",
        "UnboundLocalError",
    ] {
        if err.starts_with(exc) && in_test {
            return rule(
                Class::TestMistake,
                &exc.to_lowercase(),
                format!("raised by the test's own code: {err}"),
            );
        }
    }
    if in_test && assertion_failed(case) {
        // The expected value is the model's guess from the source alone: a mismatch is
        // evidence against the guess, not the code (one-line equalities were characterized
        // before this). Asking the model would cost a request per test to say so.
        return rule(
            Class::TestMistake,
            "assertion",
            format!("the test's own check failed: {err}"),
        );
    }
    if err.starts_with("NameError") {
        // A NameError inside the module under test is the module's fault.
        return rule(
            Class::LikelyCodeBug,
            "nameerror_in_code",
            format!("raised in {}: {err}", raised_in(case).unwrap_or_default()),
        );
    }
    None
}

/// The model's judgement for what no rule decides. `head` is the start of the gap's other
/// prompts ([`super::generate::head`]), so that the server reuses what it already read.
/// Defaults to a test mistake when the answer is unclear: a wrong "code bug" costs a reviewer
/// more than a discarded test.
pub async fn by_model(
    llm: &Llm,
    case: &Case,
    test_source: &str,
    head: &str,
) -> Result<Classification, LlmError> {
    let err: String = case
        .text
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let prompt = format!(
        "{head}A generated pytest test of this code fails.\n\nThe test:\n```python\n{test_source}\n```\n\nThe failure:\n```\n{err}\n```\n\n\
         Is the test wrong (wrong expected value, wrong arguments, wrong use of the API), or does the code under test have a bug?\n\
         Do not write code this time. Answer with one line `VERDICT: TEST_MISTAKE` or `VERDICT: CODE_BUG`, then one line `REASON: ` and a short reason."
    );
    let messages = [
        Message::system(super::generate::SYSTEM),
        Message::user(prompt),
    ];
    let reply = llm.chat(&messages, 0.0, Some(120)).await?;
    let up = reply.content.to_uppercase();
    let class = if up.contains("CODE_BUG") && !up.contains("TEST_MISTAKE") {
        Class::LikelyCodeBug
    } else {
        Class::TestMistake
    };
    let reason = reply
        .content
        .lines()
        .find_map(|l| l.trim().strip_prefix("REASON:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| super::llm::clip(reply.content.trim(), 200));
    Ok(Classification {
        class,
        by: "model".into(),
        evidence: format!("{} | {}", error_line(case), reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::exec::CaseStatus;

    fn case(text: &str) -> Case {
        Case {
            node: "test_a".into(),
            classname: "x".into(),
            name: "test_a".into(),
            status: CaseStatus::Failed,
            message: text.lines().last().unwrap_or("").into(),
            text: text.into(),
        }
    }

    fn project(external: &[&str]) -> Project {
        Project {
            language: crate::pipeline::detect::Language::Python,
            framework: crate::pipeline::detect::Framework::Plain,
            python_root: String::new(),
            sources: vec!["calc.py".into()],
            tests: vec![],
            conftest_fixtures: Default::default(),
            dependency_files: vec![],
            pytest_config: None,
            external_imports: external.iter().map(|s| s.to_string()).collect(),
            own_modules: vec!["calc".into()],
        }
    }

    #[test]
    fn rules_table() {
        let p = project(&["yaml"]);
        type Row = (&'static str, RunEnd, Option<(Class, &'static str)>);
        let table: &[Row] = &[
            (
                "E   ModuleNotFoundError: No module named 'yaml'",
                RunEnd::Normal,
                Some((Class::Environment, "rule:module_not_found")),
            ),
            (
                "E   ModuleNotFoundError: No module named 'calculator'",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:module_not_found")),
            ),
            (
                "E   ImportError: cannot import name 'nope' from 'calc'",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:import_error")),
            ),
            (
                "file tests/generated/cordon/t.py, line 3\n  def test_a(client):\nE       fixture 'client' not found",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:fixture_not_found")),
            ),
            (
                "E     File \"t.py\", line 2\nE   SyntaxError: invalid syntax",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:syntax_error")),
            ),
            (
                "tests/generated/cordon/t.py:4: in test_a\n    assert helper() == 1\nE   NameError: name 'helper' is not defined",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:nameerror")),
            ),
            (
                "tests/generated/cordon/t.py:4: in test_a\n    f(1)\ncalc.py:9: in f\n    return undefined_name\nE   NameError: name 'undefined_name' is not defined",
                RunEnd::Normal,
                Some((Class::LikelyCodeBug, "rule:nameerror_in_code")),
            ),
            (
                "tests/generated/cordon/t.py:4: in test_a\n    assert f(1) == 3\nE   assert 2 == 3\nE    +  where 2 = f(1)",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:assertion")),
            ),
            (
                "tests/generated/cordon/t.py:4: in test_a\n    with pytest.raises(ValueError):\nE   Failed: DID NOT RAISE <class 'ValueError'>",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:assertion")),
            ),
            // An assertion of the code under test is the model's to judge.
            (
                "tests/generated/cordon/t.py:4: in test_a\n    f(-1)\ncalc.py:3: in f\n    assert n >= 0\nE   AssertionError",
                RunEnd::Normal,
                None,
            ),
            (
                "tests/generated/cordon/t.py:4: in test_a\n    f(0)\ncalc.py:7: in f\n    return 1 / n\nE   ZeroDivisionError: division by zero",
                RunEnd::Normal,
                None,
            ),
            (
                "",
                RunEnd::TimedOut,
                Some((Class::TestMistake, "rule:timeout")),
            ),
            (
                "src/click/termui.py:164: in prompt\n    value = prompt_func(prompt)\nE   Failed: cordon: the test ran longer than its time limit (10 s)",
                RunEnd::Normal,
                Some((Class::TestMistake, "rule:timeout")),
            ),
            ("", RunEnd::Killed, Some((Class::TestMistake, "rule:oom"))),
        ];
        for (text, end, want) in table {
            let got = by_rules(&case(text), *end, &p).map(|c| (c.class, c.by));
            let want = want.map(|(c, b)| (c, b.to_string()));
            assert_eq!(got, want, "for {text:?}");
        }
    }
}
