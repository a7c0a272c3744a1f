//! A JUnit report written inside the sandbox (by code under test): bytes through
//! `cordon::report::junit::parse`. It must not panic, and the counts must add up.
#![no_main]

use cordon::report::junit::{self, TestSummary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = junit::parse(data) else {
        return;
    };
    assert_eq!(
        s.total,
        s.passed + s.failed + s.skipped + s.errors,
        "counts do not add up: {s:?}"
    );
    assert!(s.failing.len() <= 100, "{} failing names kept", s.failing.len());
    assert_eq!(
        s.failing.len() as u64,
        (s.failed + s.errors).min(100),
        "failing names vs counts: {s:?}"
    );
    // Summing reports (one per step) keeps the caps.
    let mut sum = TestSummary::default();
    sum.add(&s);
    sum.add(&s);
    assert_eq!(sum.total, 2 * s.total);
    assert!(sum.failing.len() <= 100);
});
