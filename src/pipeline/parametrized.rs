//! A parametrized test whose cases failed on a wrong expected value becomes one plain test per
//! case, so that each case is characterized, kept or dropped on its own. A parametrized test
//! is never characterized as it stands ([`super::characterize`]): one rewrite serves all its
//! cases, and the value one case saw is not the others'. click's `open_url` answers in run N
//! were four `@pytest.mark.parametrize` tests whose `== 0` held for one URL of three; all
//! four were dropped, and with them the 20 lines K and M had covered.
//!
//! `@pytest.mark.parametrize("url, expected", [("a", 0), ("b", 1)])` over `def test_f(url,
//! expected):` becomes `def test_f_case1():` and `def test_f_case2():`, each binding its
//! case's values at the top of the body (`url = "a"`, `expected = 0`); other decorators,
//! fixtures and `self` stay. The binding is what characterization reads: `assert f(url) ==
//! expected` that saw `1` is rewritten like any assertion against a name bound to a literal.
//!
//! Only written-out cases are split (see [`python::Parsed::parametrization`]), at most
//! [`MAX_CASES`]; the values are the model's own text, moved, never evaluated on the host.

use std::collections::BTreeSet;

use super::generate::Candidate;
use super::python;

/// A test with more cases stays as it is: each case becomes a test that runs alone too.
pub const MAX_CASES: usize = 8;

/// No split leaves a file with more tests than this: each runs alone in every validation.
pub const MAX_TESTS: usize = 24;

/// `cand` with the parametrized test `node` split into plain tests, one per case, and a note
/// for the report; `None` when its cases are not written out, are more than [`MAX_CASES`],
/// a new name is taken, or the file would hold more than [`MAX_TESTS`] tests.
pub fn split(cand: &Candidate, node: &str) -> Option<(Candidate, String)> {
    let p = python::parse(&cand.body)?;
    let pz = p.parametrization(node)?;
    if pz.cases.len() > MAX_CASES {
        return None;
    }
    let (class, name) = match node.rsplit_once("::") {
        Some((class, name)) => (Some(class), name),
        None => (None, node),
    };
    let taken: BTreeSet<String> = p.test_functions().into_iter().map(|t| t.name).collect();
    let line_start = p.src[..pz.stmt.start].rfind('\n').map_or(0, |i| i + 1);
    let outer_indent = &p.src[line_start..pz.stmt.start];
    if !outer_indent.chars().all(|c| c == ' ' || c == '\t') {
        return None;
    }
    let mut copies = Vec::new();
    let mut names = Vec::new();
    for (i, values) in pz.cases.iter().enumerate() {
        let new_name = format!("{name}_case{}", i + 1);
        if taken.contains(&new_name) {
            return None;
        }
        copies.push(one_case(&p.src, &pz, &new_name, values));
        names.push(class.map_or(new_name.clone(), |c| format!("{c}::{new_name}")));
    }
    let mut body = p.src.clone();
    body.replace_range(
        pz.stmt.clone(),
        &copies.join(&format!("\n\n{outer_indent}")),
    );
    let parsed = python::parse(&body)?;
    if parsed.first_error_line().is_some() {
        return None;
    }
    let tests: Vec<String> = parsed
        .test_functions()
        .into_iter()
        .filter(|t| !t.placeholder)
        .map(|t| t.node_id)
        .collect();
    if tests.len() > MAX_TESTS {
        return None;
    }
    let note = format!(
        "split the parametrized test {node} into {} plain tests ({}), one per case, so that \
         each case's expected value is checked on its own",
        names.len(),
        names.join(", ")
    );
    Some((
        Candidate {
            body,
            tests,
            ..cand.clone()
        },
        note,
    ))
}

/// The test at `pz.stmt` as a plain test named `new_name`: without its parametrize
/// decorator and the parametrized parameters, its body starting with their `values`.
fn one_case(src: &str, pz: &python::Parametrization, new_name: &str, values: &[String]) -> String {
    let bindings: String = pz
        .argnames
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} = {v}\n{}", pz.indent))
        .collect();
    let mut edits = [
        (pz.decorator.clone(), String::new()),
        (pz.name.clone(), new_name.to_string()),
        (
            pz.params.clone(),
            format!("({})", pz.kept_params.join(", ")),
        ),
        (pz.body_start..pz.body_start, bindings),
    ];
    edits.sort_by_key(|e| std::cmp::Reverse(e.0.start));
    let mut copy = src[pz.stmt.clone()].to_string();
    for (range, with) in edits {
        copy.replace_range(
            range.start - pz.stmt.start..range.end - pz.stmt.start,
            &with,
        );
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(body: &str) -> Candidate {
        let tests = python::parse(body)
            .unwrap()
            .test_functions()
            .into_iter()
            .map(|t| t.node_id)
            .collect();
        Candidate {
            file_name: "test_cordon_x.py".into(),
            header: String::new(),
            body: body.into(),
            tests,
            repairs: Vec::new(),
        }
    }

    #[test]
    fn each_case_becomes_a_plain_test_binding_its_values() {
        let body = "\
import pytest


@pytest.mark.parametrize(\"url, expected\", [
    (\"https://a\", 0),  # the first
    pytest.param(\"file:///b\", 1, id=\"file\"),
])
@pytest.mark.timeout(5)
def test_open(monkeypatch, url, expected):
    \"\"\"Opens it.\"\"\"
    assert open_url(url) == expected


def test_other():
    assert 1
";
        let (out, note) = split(&cand(body), "test_open").unwrap();
        assert_eq!(
            out.body,
            "\
import pytest


@pytest.mark.timeout(5)
def test_open_case1(monkeypatch):
    \"\"\"Opens it.\"\"\"
    url = \"https://a\"
    expected = 0
    assert open_url(url) == expected

@pytest.mark.timeout(5)
def test_open_case2(monkeypatch):
    \"\"\"Opens it.\"\"\"
    url = \"file:///b\"
    expected = 1
    assert open_url(url) == expected


def test_other():
    assert 1
"
        );
        assert_eq!(
            out.tests,
            ["test_open_case1", "test_open_case2", "test_other"]
        );
        assert!(note.contains("test_open_case1, test_open_case2"), "{note}");
    }

    #[test]
    fn a_method_keeps_self_and_its_class_indentation() {
        let body = "\
class TestK:
    @pytest.mark.parametrize(argnames=[\"n\"], argvalues=((1, 2), [3]))
    def test_len(self, n):
        assert len(n) == 2
";
        let (out, _) = split(&cand(body), "TestK::test_len").unwrap();
        assert_eq!(
            out.body,
            "\
class TestK:
    def test_len_case1(self):
        n = (1, 2)
        assert len(n) == 2

    def test_len_case2(self):
        n = [3]
        assert len(n) == 2
"
        );
        assert_eq!(
            out.tests,
            ["TestK::test_len_case1", "TestK::test_len_case2"]
        );
    }

    #[test]
    fn cases_that_are_not_written_out_stay_parametrized() {
        for deco in [
            // Computed cases, a name, a starred element, marks, indirect, two decorators.
            "@pytest.mark.parametrize('n', [i for i in range(3)])",
            "@pytest.mark.parametrize('n', CASES)",
            "@pytest.mark.parametrize('n', [*CASES, 4])",
            "@pytest.mark.parametrize('n', [pytest.param(1, marks=pytest.mark.xfail)])",
            "@pytest.mark.parametrize('n', [1], indirect=True)",
            "@pytest.mark.parametrize('n', [1])\n@pytest.mark.parametrize('m', [2])",
            // A case with too few values, a name the test does not take, names not plain.
            "@pytest.mark.parametrize('n, m', [(1, 2), (3,)])",
            "@pytest.mark.parametrize('k', [1])",
            "@pytest.mark.parametrize(f'n', [1])",
            "@pytest.mark.parametrize('n, n', [(1, 1)])",
            "@pytest.mark.parametrize(('n', N), [(1, 1)])",
            "@pytest.mark.parametrize('n', [])",
        ] {
            let body = format!("{deco}\ndef test_f(n, m=0):\n    assert n\n");
            assert!(split(&cand(&body), "test_f").is_none(), "{deco}");
        }
        let many: Vec<String> = (0..=MAX_CASES).map(|i| i.to_string()).collect();
        let body = format!(
            "@pytest.mark.parametrize('n', [{}])\ndef test_f(n):\n    assert n\n",
            many.join(", ")
        );
        assert!(split(&cand(&body), "test_f").is_none());
        // Too many tests in the file afterwards.
        let others: String = (0..MAX_TESTS - 1)
            .map(|i| format!("\n\ndef test_other{i}():\n    assert 1\n"))
            .collect();
        let body = format!(
            "@pytest.mark.parametrize('n', [1, 2])\ndef test_f(n):\n    assert n\n{others}"
        );
        assert!(split(&cand(&body), "test_f").is_none());
        let body = body.replace("[1, 2]", "[1]");
        assert!(split(&cand(&body), "test_f").is_some());
        // A new name already taken.
        let body = "@pytest.mark.parametrize('n', [1])\ndef test_f(n):\n    assert n\n\n\
                    def test_f_case1():\n    assert 1\n";
        assert!(split(&cand(body), "test_f").is_none());
    }
}
