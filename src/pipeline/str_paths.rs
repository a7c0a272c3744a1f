//! A `pathlib.Path` given where the code under test wants a `str`. The model builds file
//! names as `Path("a.txt")` out of habit; pathspec's matchers run a regular expression on
//! them (`TypeError: expected string or bytes-like object, got 'PosixPath'`) and key their
//! results by the string (`KeyError: PosixPath('a.txt')`): run NN lost its whole
//! `detailed_match_files` answer and 3 `normalize_files` tests to it, and the fix round kept
//! the `Path`s. When a failed test's error says so, each `Path("…")` built from one plain
//! string literal in that test becomes the literal, once per test, and the test runs again
//! like any other: a test that used the path as a `Path` afterwards (`p.name`) fails again and
//! goes where failures go. The error text comes from the sandbox (the submitter's code wrote
//! it): it is only searched for a fixed word, and the edit moves the test's own literals.

use super::exec::Case;
use super::generate::Candidate;
use super::python;

/// Whether the failure is a `Path` object met where a string was wanted: a `TypeError`,
/// `KeyError` or `AttributeError` (`'PosixPath' object has no attribute 'startswith'`) that
/// names `PosixPath`.
pub fn wants_str(case: &Case) -> bool {
    let error = super::classify::error_line(case);
    ["TypeError:", "KeyError:", "AttributeError:"]
        .iter()
        .any(|kind| error.starts_with(kind))
        && error.contains("PosixPath")
}

/// `cand` with test `node`'s `Path("…")` literals written as plain strings, and a note saying
/// so; `None` when the test builds none.
pub fn repair(cand: &Candidate, node: &str) -> Option<(Candidate, String)> {
    let parsed = python::parse(&cand.body)?;
    let literals = parsed.path_literals_in_test(node);
    let first = literals
        .first()
        .map(|(r, _)| parsed.src[r.clone()].to_string())?;
    let count = literals.len();
    let mut body = cand.body.clone();
    super::generate::apply_edits(&mut body, literals)
        .ok()
        .filter(|p| p.first_error_line().is_none())?;
    let note = format!(
        "{node}: {} path(s) like `{}` passed as plain strings: the code wanted a `str`, not a `Path`",
        count,
        super::llm::clip(&first, 60)
    );
    Some((
        Candidate {
            body,
            ..cand.clone()
        },
        note,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::exec::CaseStatus;
    use super::*;

    fn case(error: &str) -> Case {
        Case {
            node: "test_a".into(),
            classname: "t".into(),
            name: "test_a".into(),
            status: CaseStatus::Failed,
            message: error.into(),
            text: format!("t.py:3: in test_a\nE   {error}"),
        }
    }

    #[test]
    fn only_a_path_met_where_a_string_was_wanted_counts() {
        for (error, want) in [
            (
                "TypeError: expected string or bytes-like object, got 'PosixPath'",
                true,
            ),
            ("KeyError: PosixPath('file1.txt')", true),
            (
                "AttributeError: 'PosixPath' object has no attribute 'startswith'",
                true,
            ),
            (
                "TypeError: expected string or bytes-like object, got 'int'",
                false,
            ),
            ("AssertionError: assert PosixPath('a') == 'a'", false),
            ("KeyError: 'file1.txt'", false),
        ] {
            assert_eq!(wants_str(&case(error)), want, "{error}");
        }
    }

    #[test]
    fn the_failed_tests_path_literals_become_strings_and_nothing_else_changes() {
        let body = "import pathlib\nfrom pathlib import Path\n\n\ndef test_a():\n    files = [Path(\"a.txt\"), pathlib.Path('b/c.py'), Path(\"x\", \"y\"), Path(f\"{1}.txt\"), Path(name)]\n    assert f(files)\n\n\ndef test_b():\n    assert f([Path(\"a.txt\")])\n\n\nclass TestK:\n    def test_c(self):\n        assert f(PurePosixPath(\"d\"))\n";
        let cand = Candidate {
            file_name: "t.py".into(),
            header: String::new(),
            body: body.into(),
            tests: vec!["test_a".into(), "test_b".into(), "TestK::test_c".into()],
            repairs: Vec::new(),
        };
        let (next, note) = repair(&cand, "test_a").expect("repaired");
        assert_eq!(
            next.body,
            body.replace(
                "[Path(\"a.txt\"), pathlib.Path('b/c.py'),",
                "[\"a.txt\", 'b/c.py',"
            )
        );
        assert_eq!(
            note,
            "test_a: 2 path(s) like `Path(\"a.txt\")` passed as plain strings: the code wanted a `str`, not a `Path`"
        );
        let (next, _) = repair(&cand, "TestK::test_c").expect("a method too");
        assert!(next.body.contains("assert f(\"d\")"), "{}", next.body);
        let plain = Candidate {
            body: "def test_a():\n    assert f(\"a\")\n".into(),
            ..cand.clone()
        };
        assert!(repair(&plain, "test_a").is_none());
        assert!(repair(&cand, "test_missing").is_none());
    }
}
