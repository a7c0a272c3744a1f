//! Properties a target checks beyond "does not panic" can be switched off one by one with
//! `CORDON_FUZZ_KNOWN=name,name`: for a finding that is reported but not fixed yet, so the
//! fuzzer can go on looking for others meanwhile. Each name is documented where it is used.

use std::sync::OnceLock;

/// Whether property `name` is to be checked (not listed in `CORDON_FUZZ_KNOWN`).
pub fn check(name: &str) -> bool {
    static KNOWN: OnceLock<Vec<String>> = OnceLock::new();
    !KNOWN
        .get_or_init(|| {
            std::env::var("CORDON_FUZZ_KNOWN")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|k| k == name)
}
