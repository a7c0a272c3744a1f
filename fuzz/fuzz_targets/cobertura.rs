//! A Cobertura coverage report written inside the sandbox (by code under test): bytes
//! through `cordon::pipeline::coverage::parse_for` (and so `parse`), then everything the
//! pipeline computes from a parsed report: totals, percentages, union, gain, missing lines.
//! None of it may panic (overflow checks are on), and the figures must be consistent.
#![no_main]

use cordon::pipeline::coverage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let known = ["src/pkg/core.py".to_string(), "pkg/core.py".to_string()];
    let Ok(c) = coverage::parse_for(data, "/workspace", &known) else {
        return;
    };
    let t = c.totals();
    assert!(t.lines_covered <= t.lines, "{t:?}");
    assert!(t.branches_covered <= t.branches, "{t:?}");
    for p in [t.line_percent(), t.branch_percent(), t.combined_percent()] {
        assert!((0.0..=100.0).contains(&p), "percentage {p} from {t:?}");
    }

    let u = c.union(&c);
    assert_eq!(u.totals(), t, "a report united with itself changes");
    assert!(c.gain_over(&c).is_empty(), "a report gains over itself");
    let empty = coverage::Coverage::default();
    assert!(empty.gain_over(&c).is_empty());
    let _ = c.gain_over(&empty);
    for path in c.files.keys() {
        let (missing, partial) = c.missing(path);
        assert!(missing.len() + partial.len() <= c.files[path].len());
        let _ = coverage::normalize(path);
    }
});
