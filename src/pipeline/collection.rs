//! A generated test file that pytest cannot import fails every test in it: one test that
//! does not compile, or one name the model imported from a module that lacks it, cost the
//! whole candidate (click's `@version_option(package_name="p", "--version")`, pathspec's `from
//! pathlib import PathLike`: four tests each in run S). The line of the error decides, with no
//! model time:
//!
//! - a test whose code (its decorators included) failed the import goes alone;
//! - a name that a `from … import` of the file could not find is dropped from that import,
//!   so the tests that use it fail alone (a `NameError`) and go to the fix round;
//! - anything else — a helper, a fixture, module-level code, cordon's header — goes to the
//!   fix round as before.

use super::characterize;
use super::exec::{Case, CaseStatus};
use super::generate::{self, Candidate};
use super::python;
use super::validate::Validation;

/// The error of a file pytest could not import (every test of it failed with it), if any.
pub fn file_error(v: &Validation) -> Option<&Case> {
    v.tests
        .values()
        .filter_map(|o| o.case.as_ref())
        .find(|c| c.classname.is_empty() && c.status == CaseStatus::Error)
}

/// The candidate with what failed its import taken out, and a note saying what; `None` when
/// the error is not in a test or an import of the model's code.
pub fn repair(cand: &Candidate, case: &Case) -> Option<(Candidate, String)> {
    let header_lines = cand.header.matches('\n').count();
    let at = error_line(case, &cand.file_name)?.checked_sub(header_lines)?;
    let error = super::classify::error_line(case);
    let parsed = python::parse(&cand.body)?;
    let line_of = |byte: usize| parsed.src[..byte].matches('\n').count() + 1;
    if let Some(t) = parsed
        .test_functions()
        .into_iter()
        .find(|t| line_of(t.bytes.start) <= at && at <= line_of(t.bytes.end))
    {
        let next = super::fix::without(cand, std::slice::from_ref(&t.node_id))?;
        let note = format!(
            "removed test `{}`: it failed the import of the file ({})",
            t.node_id,
            super::llm::clip(&error, 120)
        );
        return Some((next, note));
    }
    let missing = quoted_after(&error, "cannot import name ")?;
    let module = quoted_after(&error, " from ")?;
    let mut body = cand.body.clone();
    let mut notes = Vec::new();
    generate::edit_from_imports(
        &mut body,
        parsed,
        &mut notes,
        |m| m == module,
        |n, _| n == missing,
        |names, m| format!("dropped {names} from the import of `{m}`: the module has no such name"),
    )
    .ok()?;
    let note = notes.pop()?;
    let next = Candidate {
        body,
        ..cand.clone()
    };
    Some((next, note))
}

/// The line (1-based, in the candidate's whole file) the import of the file failed at: the
/// `File "…", line N` of a `SyntaxError`, else the file's last frame (`…py:N: in <module>`).
fn error_line(case: &Case, file_name: &str) -> Option<usize> {
    let compile = case.text.lines().find_map(|l| {
        let rest = l.strip_prefix('E')?.trim().strip_prefix("File \"")?;
        let (path, after) = rest.split_once("\", line ")?;
        let n: String = after.chars().take_while(char::is_ascii_digit).collect();
        characterize::in_file(path, file_name)
            .then(|| n.parse().ok())
            .flatten()
    });
    compile.or_else(|| characterize::test_line(case, file_name))
}

/// `x` of `…AFTER'x'…`.
fn quoted_after<'a>(s: &'a str, after: &str) -> Option<&'a str> {
    let rest = s.split_once(after)?.1.strip_prefix('\'')?;
    let name = rest.split_once('\'')?.0;
    name.split('.').all(python::is_identifier).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(body: &str) -> Candidate {
        Candidate {
            file_name: "test_gen_x_1.py".into(),
            header: "# h\nimport pytest\n\n".into(),
            body: body.into(),
            tests: python::parse(body)
                .expect("parses")
                .test_functions()
                .into_iter()
                .map(|t| t.node_id)
                .collect(),
            repairs: vec![],
        }
    }

    fn failure(text: &str) -> Case {
        Case {
            node: "tests.generated.cordon.test_gen_x_1".into(),
            classname: String::new(),
            name: "tests.generated.cordon.test_gen_x_1".into(),
            status: CaseStatus::Error,
            message: "collection failure".into(),
            text: text.into(),
        }
    }

    const BODY: &str = "from pathlib import PathLike, Path\nfrom pkg import edit\n\n@opt(1)\ndef test_a():\n    assert edit(1) == 2\n\ndef test_b():\n    assert Path('a').name == 'a'\n";

    #[test]
    fn a_test_that_failed_the_import_goes_alone() {
        // pytest's own text for a SyntaxError: the file and line in `E` lines. Line 7 of
        // the file is line 4 of the body: test_a's decorator.
        let f = failure(
            "/usr/lib/python3.11/ast.py:50: in parse\n    return compile(source, filename, mode, flags,\nE     File \"/workspace/tests/generated/cordon/test_gen_x_1.py\", line 7\nE       @opt(1)\nE   SyntaxError: positional argument follows keyword argument",
        );
        let (next, note) = repair(&cand(BODY), &f).expect("repaired");
        assert_eq!(next.tests, vec!["test_b"]);
        assert!(!next.body.contains("@opt"), "{}", next.body);
        assert_eq!(
            note,
            "removed test `test_a`: it failed the import of the file (SyntaxError: positional argument follows keyword argument)"
        );
        // A decorator that raised at import: the file's last frame names the line.
        let f = failure(
            "tests/generated/cordon/test_gen_x_1.py:7: in <module>\n    @opt(1)\nsrc/pkg/o.py:3: in opt\n    raise RuntimeError('x')\nE   RuntimeError: x",
        );
        let (next, _) = repair(&cand(BODY), &f).expect("repaired");
        assert_eq!(next.tests, vec!["test_b"]);
    }

    #[test]
    fn a_name_the_module_lacks_is_dropped_from_its_import() {
        let f = failure(
            "ImportError while importing test module '/workspace/tests/generated/cordon/test_gen_x_1.py'.\nTraceback:\n/usr/lib/python3.11/importlib/__init__.py:126: in import_module\n    return _bootstrap._gcd_import(name[level:], package, level)\ntests/generated/cordon/test_gen_x_1.py:4: in <module>\n    from pathlib import PathLike, Path\nE   ImportError: cannot import name 'PathLike' from 'pathlib' (/usr/lib/python3.11/pathlib.py)",
        );
        let (next, note) = repair(&cand(BODY), &f).expect("repaired");
        assert!(
            next.body
                .starts_with("from pathlib import Path\nfrom pkg import edit\n"),
            "{}",
            next.body
        );
        assert_eq!(next.tests, vec!["test_a", "test_b"]);
        assert!(note.contains("`PathLike`"), "{note}");
    }

    #[test]
    fn what_is_not_a_test_or_an_import_goes_to_the_fix_round() {
        // An error in cordon's header (line 2), in module-level code, and one that names no
        // line of the file.
        let header = failure(
            "tests/generated/cordon/test_gen_x_1.py:2: in <module>\n    import pytest\nE   ImportError: cannot import name 'x' from 'pytest'",
        );
        let body = "from pkg import edit\nX = edit(0)\n\ndef test_a():\n    assert X == 1\n";
        let module_level = failure(
            "tests/generated/cordon/test_gen_x_1.py:5: in <module>\n    X = edit(0)\nE   ValueError: 0",
        );
        let elsewhere = failure("E   ImportError: cannot import name 'x' from 'pkg'");
        for f in [&header, &module_level, &elsewhere] {
            assert!(repair(&cand(body), f).is_none(), "{}", f.text);
        }
        // The only test: nothing would be left.
        let f = failure(
            "E     File \"/workspace/tests/generated/cordon/test_gen_x_1.py\", line 7\nE   SyntaxError: x",
        );
        assert!(repair(&cand(body), &f).is_none());
    }
}
