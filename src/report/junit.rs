//! JUnit XML (as pytest, and most test runners, write it) → test counts.
//!
//! The file comes out of a sandbox, so it is parsed defensively: a size cap, no entity
//! expansion beyond XML's predefined ones, and a malformed file is an error, not a panic.

use serde::{Deserialize, Serialize};

/// The most bytes of JUnit XML that are parsed.
pub const MAX_JUNIT_BYTES: usize = 32 << 20;

/// Test counts from a JUnit report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub errors: u64,
    /// Failing and erroring tests (the first 100), as pytest node ids where the report allows
    /// (`tests/test_x.py::TestC::test_y`: [`node_id`]), so each can be rerun as it is.
    pub failing: Vec<String>,
}

impl TestSummary {
    pub fn add(&mut self, other: &TestSummary) {
        self.total += other.total;
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.errors += other.errors;
        for f in &other.failing {
            if self.failing.len() < 100 {
                self.failing.push(f.clone());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    #[error("JUnit file is larger than {MAX_JUNIT_BYTES} bytes")]
    TooLarge,
    #[error("JUnit file is not well-formed XML")]
    Xml(#[source] quick_xml::Error),
    #[error("JUnit file has no <testcase> or <testsuite> element")]
    NotJunit,
}

/// Counts `<testcase>` elements by their first child `<failure>`, `<error>` or `<skipped>`.
pub fn parse(xml: &[u8]) -> Result<TestSummary, JunitError> {
    use quick_xml::events::Event;

    if xml.len() > MAX_JUNIT_BYTES {
        return Err(JunitError::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut summary = TestSummary::default();
    let mut saw_suite = false;
    // State of the <testcase> being read: (name, verdict).
    let mut current: Option<(String, Verdict)> = None;

    loop {
        let ev = reader.read_event_into(&mut buf).map_err(JunitError::Xml)?;
        match ev {
            Event::Start(e) | Event::Empty(e)
                if e.name().as_ref() == "testsuite" || e.name().as_ref() == "testsuites" =>
            {
                saw_suite = true;
            }
            Event::Start(ref e) if e.name().as_ref() == "testcase" => {
                current = Some((case_name(e), Verdict::Passed));
            }
            Event::Empty(ref e) if e.name().as_ref() == "testcase" => {
                summary.count(case_name(e), Verdict::Passed);
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                if let Some((_, verdict)) = current.as_mut() {
                    let v = match e.name().as_ref() {
                        "failure" => Some(Verdict::Failed),
                        "error" => Some(Verdict::Error),
                        "skipped" => Some(Verdict::Skipped),
                        _ => None,
                    };
                    // pytest can report a failure and a teardown error on one case; the
                    // first verdict wins, except that any failure beats skipped.
                    if let Some(v) = v
                        && (*verdict == Verdict::Passed
                            || (*verdict == Verdict::Skipped && v != Verdict::Skipped))
                    {
                        *verdict = v;
                    }
                }
            }
            Event::End(ref e) if e.name().as_ref() == "testcase" => {
                if let Some((name, verdict)) = current.take() {
                    summary.count(name, verdict);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_suite && summary.total == 0 {
        return Err(JunitError::NotJunit);
    }
    Ok(summary)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    Error,
    Skipped,
}

impl TestSummary {
    fn count(&mut self, name: String, v: Verdict) {
        self.total += 1;
        match v {
            Verdict::Passed => self.passed += 1,
            Verdict::Skipped => self.skipped += 1,
            Verdict::Failed | Verdict::Error => {
                if v == Verdict::Failed {
                    self.failed += 1;
                } else {
                    self.errors += 1;
                }
                if self.failing.len() < 100 {
                    self.failing.push(name);
                }
            }
        }
    }
}

fn case_name(e: &quick_xml::events::BytesStart) -> String {
    let mut class = String::new();
    let mut name = String::new();
    let mut file = String::new();
    for a in e.attributes().flatten() {
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| a.value.to_string());
        match a.key.as_ref() {
            "classname" => class = v,
            "name" => name = v,
            "file" => file = v,
            _ => {}
        }
    }
    node_id(&class, &file, &name)
}

/// A test's pytest node id from its JUnit `classname`, `file` (written by pytest's `xunit1`
/// family and some other runners; may be empty) and `name`.
///
/// pytest's classname is the module's dotted path and then its classes
/// (`tests.test_x.TestC`). With `file`, the module is the part of the classname the file names
/// and the rest are classes. Without it, the module is everything up to the first part that
/// starts with a capital letter (pytest collects classes named `Test…` by default, and
/// module names are lower case by convention), if that module is named as pytest finds test
/// files by default (`test_*.py`, `*_test.py`). Anything else (another runner's naming, a
/// classname that is not the file's path) is kept as it is: `classname::name`.
pub fn node_id(classname: &str, file: &str, name: &str) -> String {
    if classname.is_empty() {
        return name.to_string();
    }
    let parts: Vec<&str> = classname.split('.').collect();
    let module_len = if file.is_empty() {
        parts
            .iter()
            .position(|p| p.starts_with(|c: char| c.is_ascii_uppercase()))
            .unwrap_or(parts.len())
    } else {
        let module = file.trim_end_matches(".py").replace(['/', '\\'], ".");
        let module_parts: Vec<&str> = module.split('.').collect();
        if parts.starts_with(&module_parts) {
            module_parts.len()
        } else {
            // A classname that is not the file's path (another runner's own naming).
            return format!("{classname}::{name}");
        }
    };
    let module = &parts[..module_len];
    let pytest_file = |m: &str| m.starts_with("test_") || m.ends_with("_test");
    if module.is_empty()
        || module.iter().any(|p| p.is_empty())
        || (file.is_empty() && !module.last().is_some_and(|m| pytest_file(m)))
    {
        return format!("{classname}::{name}");
    }
    let mut id = format!("{}.py", module.join("/"));
    for class in &parts[module_len..] {
        id.push_str("::");
        id.push_str(class);
    }
    id.push_str("::");
    id.push_str(name);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="0.05"><testcase classname="test_m" name="test_ok" time="0.001" /><testcase classname="test_m" name="test_bad" time="0.001"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2</failure></testcase><testcase classname="test_m" name="test_skip" time="0.000"><skipped type="pytest.skip" message="why">skip</skipped></testcase><testcase classname="test_m" name="test_err" time="0.001"><error message="fixture 'nope' not found">...</error></testcase><testcase classname="test_m" name="test_ok2" time="0.001"></testcase></testsuite></testsuites>"#;

    #[test]
    fn counts_a_pytest_report() {
        let s = parse(PYTEST.as_bytes()).expect("parses");
        assert_eq!(
            (s.total, s.passed, s.failed, s.skipped, s.errors),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(
            s.failing,
            vec!["test_m.py::test_bad", "test_m.py::test_err"]
        );
    }

    #[test]
    fn failing_tests_are_named_by_pytest_node_ids() {
        let cases = [
            // pytest's default (xunit2): no file attribute.
            (
                "tests.test_x.TestC",
                "",
                "test_y",
                "tests/test_x.py::TestC::test_y",
            ),
            (
                "tests.test_x",
                "",
                "test_y[1-2]",
                "tests/test_x.py::test_y[1-2]",
            ),
            ("test_m", "", "test_a", "test_m.py::test_a"),
            (
                "tests.test_x.TestOuter.TestInner",
                "",
                "test_y",
                "tests/test_x.py::TestOuter::TestInner::test_y",
            ),
            // xunit1: the file says where the module ends, whatever its case.
            (
                "pkg.Tests.test_x.Checks",
                "pkg/Tests/test_x.py",
                "test_y",
                "pkg/Tests/test_x.py::Checks::test_y",
            ),
            (
                "pkg.test_x",
                "pkg/test_x.py",
                "test_y",
                "pkg/test_x.py::test_y",
            ),
            // Not pytest's naming: kept as it is.
            (
                "com.example.FooTest",
                "",
                "testBar",
                "com.example.FooTest::testBar",
            ),
            ("Suite", "", "case", "Suite::case"),
            ("other", "pkg/test_x.py", "t", "other::t"),
            ("", "", "lonely", "lonely"),
        ];
        for (class, file, name, want) in cases {
            assert_eq!(
                node_id(class, file, name),
                want,
                "{class:?} {file:?} {name:?}"
            );
        }
    }

    #[test]
    fn a_pytest_xunit1_report_gives_node_ids() {
        let xml = br#"<testsuite><testcase classname="tests.test_x.TestC" file="tests/test_x.py" line="3" name="test_y"><failure message="boom"/></testcase></testsuite>"#;
        let s = parse(xml).expect("parses");
        assert_eq!(s.failing, ["tests/test_x.py::TestC::test_y"]);
    }

    #[test]
    fn empty_suite_is_zero_tests() {
        let s =
            parse(br#"<testsuites><testsuite name="pytest" tests="0"></testsuite></testsuites>"#)
                .expect("parses");
        assert_eq!(s.total, 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse(b"<testsuite><testcase></testsuite>"),
            Err(JunitError::Xml(_))
        ));
        assert!(matches!(parse(b"hello"), Err(JunitError::NotJunit)));
    }

    #[test]
    fn entities_are_not_expanded() {
        let xml = br#"<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><testsuite><testcase classname="&b;" name="t"/></testsuite>"#;
        let s = parse(xml).expect("parses without expanding");
        assert_eq!(s.total, 1);
        assert!(s.failing.is_empty());
    }
}
