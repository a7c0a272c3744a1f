//! Opt-in end-to-end run with a real model (not part of the default suite):
//!
//!   ../shared/llm/local-model.sh start
//!   cargo test --test testgen_real_model -- --ignored --nocapture
//!
//! Uses OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL when set, else the local model. A
//! 1.5B model writes plausible but often wrong tests, so this checks that the run completes,
//! stays in the sandbox and reports, not how many tests survive.

use std::sync::Arc;

use cordon::pipeline::llm::{Llm, LlmConfig};
use cordon::pipeline::{self, Options};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running model: ../shared/llm/local-model.sh start"]
async fn the_local_model_end_to_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("tests")).expect("mkdir");
    std::fs::write(
        repo.join("textutil.py"),
        "def slug(s):\n    out = []\n    for ch in s.lower():\n        if ch.isalnum():\n            out.append(ch)\n        elif out and out[-1] != '-':\n            out.append('-')\n    return ''.join(out).strip('-')\n\n\ndef initials(name):\n    parts = [p for p in name.split() if p]\n    if not parts:\n        raise ValueError('empty name')\n    return ''.join(p[0].upper() for p in parts)\n",
    )
    .expect("write");
    std::fs::write(
        repo.join("tests/test_textutil.py"),
        "from textutil import slug\n\n\ndef test_slug():\n    assert slug('Hello World') == 'hello-world'\n",
    )
    .expect("write");
    let llm = Llm::new(LlmConfig::from_env(None, None)).expect("client");
    let opts = Options {
        repo: repo.clone(),
        target_coverage: 100.0,
        max_iterations: 1,
        gaps_per_iteration: 2,
        ..Options::default()
    };
    let out = pipeline::run(
        &opts,
        &llm,
        CancellationToken::new(),
        Arc::new(|l: &str| eprintln!("{l}")),
    )
    .await;
    let r = &out.report;
    eprintln!("{}", r.markdown());
    assert_ne!(r.status, "failed", "{:?}", r.error);
    assert!(!r.candidates.is_empty());
    assert!(r.tokens.requests > 0 && r.tokens.completion_tokens > 0);
    let after = r.after.as_ref().expect("after");
    let before = r.baseline.as_ref().expect("baseline");
    assert!(after.coverage.lines_covered >= before.coverage.lines_covered);
    assert!(
        !repo.join("tests/generated").exists(),
        "the repository is untouched"
    );
}
