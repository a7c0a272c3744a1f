//! A failed suite run as the next round and the comment see it: the output trimmed to
//! where the failure is told, and the repository files its tracebacks name.

use super::suite::WORKSPACE;

/// The most of a failure the model or a comment is shown.
pub const FAILURE_BYTES: usize = 3_000;

/// The part of a suite's output that tells the failure: from pytest's `FAILURES` or `ERRORS`
/// section when there is one (else the end), at most [`FAILURE_BYTES`].
pub fn trim(output: &str) -> String {
    let start = ["= ERRORS =", "= FAILURES ="]
        .iter()
        .filter_map(|m| output.find(m))
        .min()
        .map(|i| output[..i].rfind('\n').map_or(0, |n| n + 1));
    let text = match start {
        Some(i) => &output[i..],
        None => tail(output, FAILURE_BYTES),
    };
    crate::pipeline::llm::clip(text.trim(), FAILURE_BYTES)
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The paths among `candidates` that the output's tracebacks name (`path.py:12:` in pytest's
/// tracebacks, `File "/workspace/path.py", line 12` in Python's), in `candidates`' order.
pub fn pointed_at(output: &str, candidates: &[String]) -> Vec<String> {
    let mut named = std::collections::BTreeSet::new();
    for line in output.lines() {
        for word in line.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
            let path = word.split(':').next().unwrap_or("");
            let path = path
                .strip_prefix(WORKSPACE)
                .map_or(path, |p| p.trim_start_matches('/'));
            if path.ends_with(".py") {
                named.insert(path.trim_start_matches("./").to_string());
            }
        }
    }
    candidates
        .iter()
        .filter(|c| named.contains(c.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "..F\n=================================== FAILURES ===================================\n___ test_mul ___\n\n    def test_mul():\n>       assert mul(2, 3) == 6\nE       assert 5 == 6\n\ntests/test_mul.py:4: AssertionError\n  File \"/workspace/calc.py\", line 2, in mul\n=========================== short test summary info ============================\nFAILED tests/test_mul.py::test_mul - assert 5 == 6\n1 failed, 2 passed in 0.05s\n";

    #[test]
    fn the_failure_section_and_the_files_it_names() {
        let t = trim(&format!("{}{OUT}", "collected 3 items\n".repeat(50)));
        assert!(t.starts_with("=====") && t.contains("assert 5 == 6"), "{t}");
        assert!(!t.contains("collected"));
        let c = vec![
            "calc.py".to_string(),
            "tests/test_mul.py".to_string(),
            "util.py".to_string(),
        ];
        assert_eq!(pointed_at(OUT, &c), ["calc.py", "tests/test_mul.py"]);
        assert!(trim(&"x".repeat(10_000)).len() <= FAILURE_BYTES + 3);
    }
}
