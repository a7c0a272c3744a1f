//! Helpers of the project's own tests that a generated test calls. The prompt's example is a
//! real test of the project, and the model copies what it sees: click's `format_pos` answer
//! in run BB called `_create_progress(…)`, a function of click's `tests/test_termui.py`,
//! imported it from `click._termui_impl` (which has no such name), and lost all 5 tests to a
//! `NameError`. A plain top-level function of a test file — no decorator (not a fixture),
//! not a test, at most [`MAX_LINES`] lines — that the answer calls and does not define or
//! import is copied into the generated file, with the import statements of its file that
//! bind names it uses (not relative ones, which would not resolve from the generated file).
//!
//! What is copied is the repository's own code, as trusted as the code under test: it runs in
//! the same sandbox, never on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::detect::Project;
use super::python;

/// Longest helper copied, in lines.
const MAX_LINES: usize = 30;

/// Test files read, and the largest read.
const MAX_FILES: usize = 60;
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A function of the project's tests, ready to paste into a generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// The test file that defines it (relative to the repository).
    pub file: String,
    /// Its definition, as written.
    pub source: String,
    /// The import statements of its file that bind names it uses, as written.
    pub imports: Vec<String>,
}

/// The helpers of the project's test files (the first file that defines a name wins).
pub fn of_project(project: &Project, repo: &Path) -> BTreeMap<String, Helper> {
    let mut out = BTreeMap::new();
    for file in project.tests.iter().take(MAX_FILES) {
        // Its name goes into a comment line of the generated file.
        if file.chars().any(char::is_control) {
            continue;
        }
        let Some(text) = python::read_regular(&repo.join(file), MAX_FILE_BYTES) else {
            continue;
        };
        let Some(parsed) = python::parse(&text) else {
            continue;
        };
        let imports: Vec<(String, Vec<String>)> = parsed
            .imports()
            .into_iter()
            .filter(|s| !s.starts_with("from ."))
            .filter_map(|s| {
                let names = python::parse(&s)?.imported_names();
                Some((s, names))
            })
            .collect();
        for u in parsed.units() {
            let plain = u.kind == python::UnitKind::Function
                && u.class.is_none()
                && u.decorators.is_empty()
                && !u.qualname.starts_with("test")
                && (u.end_line - u.start_line) as usize <= MAX_LINES;
            if !plain || out.contains_key(&u.qualname) {
                continue;
            }
            let used = parsed.identifiers_in(u.bytes.clone());
            let helper = Helper {
                file: file.clone(),
                source: text[u.bytes.clone()].to_string(),
                imports: imports
                    .iter()
                    .filter(|(_, names)| names.iter().any(|n| used.contains(n)))
                    .map(|(s, _)| s.clone())
                    .collect(),
            };
            out.insert(u.qualname, helper);
        }
    }
    out
}

/// The names of `helpers` that `body` calls (`name(`) and neither defines nor imports, and
/// that `supplied` (what cordon's import header gives: the target module's names…) lacks.
pub fn wanted(
    parsed: &python::Parsed,
    helpers: &BTreeMap<String, Helper>,
    supplied: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let bound = parsed.bound_names();
    let src = parsed.src.as_str();
    let called = |name: &str| {
        src.match_indices(&format!("{name}(")).any(|(at, _)| {
            !src[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
    };
    parsed
        .identifiers_in(0..src.len())
        .into_iter()
        .filter(|n| helpers.contains_key(n) && !bound.contains(n) && !supplied(n) && called(n))
        .collect()
}

/// `body` with the helpers `names` appended, each after the imports it needs (those the body
/// does not have already), under a comment naming the file it comes from.
pub fn append(body: &str, names: &[String], helpers: &BTreeMap<String, Helper>) -> String {
    let mut out = body.trim_end().to_string();
    let mut have: BTreeSet<String> = body.lines().map(|l| l.trim().to_string()).collect();
    for name in names {
        let Some(h) = helpers.get(name) else {
            continue;
        };
        out.push_str(&format!(
            "\n\n\n# cordon: `{name}` copied from the project's {}\n",
            h.file
        ));
        for i in &h.imports {
            if have.insert(i.trim().to_string()) {
                out.push_str(i);
                out.push('\n');
            }
        }
        out.push_str(&h.source);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Project) {
        let d = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        (d, project)
    }

    const TERMUI_TESTS: &str = "import pytest\nimport click\nfrom click._compat import WIN\nfrom .util import other\n\n\ndef _create_progress(length=10, **kwargs):\n    progress = click.progressbar(tuple(range(length)))\n    for key, value in kwargs.items():\n        setattr(progress, key, value)\n    return progress\n\n\n@pytest.fixture\ndef runner():\n    return 1\n\n\ndef test_progress():\n    assert _create_progress()\n\n\nclass TestK:\n    def helper(self):\n        return 2\n";

    /// Plain functions of test files are helpers, with the imports they use; fixtures,
    /// tests and methods are not.
    #[test]
    fn helpers_are_plain_functions_of_test_files_with_their_imports() {
        let (d, p) = project(&[
            ("pkg/__init__.py", ""),
            ("pkg/calc.py", "def util():\n    return 1\n"),
            ("tests/test_termui.py", TERMUI_TESTS),
        ]);
        let h = of_project(&p, d.path());
        assert_eq!(h.keys().collect::<Vec<_>>(), ["_create_progress"], "{h:?}");
        let cp = &h["_create_progress"];
        assert_eq!(cp.file, "tests/test_termui.py");
        assert_eq!(cp.imports, ["import click"]);
        assert!(
            cp.source
                .starts_with("def _create_progress(length=10, **kwargs):\n")
        );
        assert!(cp.source.ends_with("return progress"), "{}", cp.source);
    }

    /// A helper the answer calls unbound is appended with its imports; one it defines,
    /// imports, only names, or that the header supplies is not.
    #[test]
    fn a_called_helper_is_appended_once_with_its_imports() {
        let (d, p) = project(&[
            ("calc.py", "X = 1\n"),
            ("tests/test_termui.py", TERMUI_TESTS),
        ]);
        let helpers = of_project(&p, d.path());
        let body = "import click\n\ndef test_a():\n    p = _create_progress(5)\n    assert p.format_pos() == '0/5'\n";
        let parsed = python::parse(body).expect("parses");
        let names = wanted(&parsed, &helpers, &|_| false);
        assert_eq!(names, ["_create_progress"]);
        let out = append(body, &names, &helpers);
        assert!(
            out.ends_with("# cordon: `_create_progress` copied from the project's tests/test_termui.py\ndef _create_progress(length=10, **kwargs):\n    progress = click.progressbar(tuple(range(length)))\n    for key, value in kwargs.items():\n        setattr(progress, key, value)\n    return progress\n"),
            "{out}"
        );
        assert_eq!(out.matches("import click").count(), 1, "{out}");
        let out = python::parse(&out).expect("parses");
        assert!(out.first_error_line().is_none());
        assert!(wanted(&out, &helpers, &|_| false).is_empty(), "now defined");
        for body in [
            "from tests.test_termui import _create_progress\n\ndef test_a():\n    assert _create_progress()\n",
            "def test_a():\n    assert _create_progress\n",
            "def test_a():\n    assert obj._create_progress()\n",
        ] {
            let parsed = python::parse(body).expect("parses");
            assert!(wanted(&parsed, &helpers, &|_| false).is_empty(), "{body}");
        }
        let parsed =
            python::parse("def test_a():\n    assert _create_progress()\n").expect("parses");
        assert!(wanted(&parsed, &helpers, &|n| n == "_create_progress").is_empty());
    }
}
