//! What a gap's fix and classification requests cost the model once its generation request
//! has been read, with the prompts `cordon testgen` sends (which start with the generation
//! prompt's head, so that llama.cpp reuses its cached prefix) against the layout before
//! them (the code under test after a prompt of its own: only the system message shared).
//!
//!     ../shared/llm/local-model.sh start
//!     OPENAI_BASE_URL=http://127.0.0.1:18080/v1 OPENAI_API_KEY=local cargo bench --bench prompt_cache
//!     BENCH_GAPS=8 ... cargo bench --bench prompt_cache
//!
//! Gaps: the functions and methods of a real module (boltons' typeutils, the fixture of the
//! testgen tests), each with its whole body marked uncovered. Per gap, interleaved and in
//! alternating order: the generation prompt is sent (untimed: it fills the server's cache,
//! as the real run's generation request does), then one follow-up request is timed; the
//! answers are one token long, so the time is the prompt's reading. Prints the medians of
//! the two layouts for the fix and the classification request, and their ratio.

use std::path::Path;
use std::time::Instant;

use cordon::pipeline::detect;
use cordon::pipeline::gaps::Gap;
use cordon::pipeline::generate::{self, Context};
use cordon::pipeline::llm::{Llm, LlmConfig, Message};
use cordon::pipeline::{fix, python};

const TEST: &str = "def test_it_works():\n    result = target(1, 2)\n    assert result == 3\n";
const ERROR: &str = "    def test_it_works():\n        result = target(1, 2)\n>       assert result == 3\nE       assert None == 3\n\ntests/generated/test_gen.py:3: AssertionError";

/// The fix prompt before the shared head: the code under test after its own first line.
fn fix_before(ctx: &Context) -> Vec<Message> {
    let u = format!(
        "This pytest test for `{}` in module `{}` fails.\n\nCode under test:\n```python\n{}\n```\n\nThe test:\n```python\n{TEST}\n```\n\nThe error:\n```\n{ERROR}\n```\n\nThe code under test is correct. Fix the test: correct its arguments or its expected values so that they match what the code really does. Keep the same test function name. Reply with the corrected test function (and any imports it needs) in one ```python block. `{}` is already imported from `{}`.",
        ctx.gap.qualname,
        ctx.gap.module,
        ctx.source,
        ctx.gap.top_name(),
        ctx.gap.module
    );
    vec![Message::system(generate::SYSTEM), Message::user(u)]
}

/// The classification prompt before the shared head (its own system message too).
fn classify_before(ctx: &Context) -> Vec<Message> {
    let u = format!(
        "A generated pytest test fails.\n\nCode under test:\n```python\n{}\n```\n\nThe test:\n```python\n{TEST}\n```\n\nThe failure:\n```\n{ERROR}\n```\n\nIs the test wrong (wrong expected value, wrong arguments, wrong use of the API), or does the code under test have a bug?\nAnswer with one line `VERDICT: TEST_MISTAKE` or `VERDICT: CODE_BUG`, then one line `REASON: ` and a short reason.",
        ctx.source
    );
    vec![
        Message::system("You review failing unit tests and answer briefly."),
        Message::user(u),
    ]
}

/// The classification prompt as `cordon testgen` sends it (see `classify::by_model`).
fn classify_now(ctx: &Context) -> Vec<Message> {
    let u = format!(
        "{}A generated pytest test of this code fails.\n\nThe test:\n```python\n{TEST}\n```\n\nThe failure:\n```\n{ERROR}\n```\n\nIs the test wrong (wrong expected value, wrong arguments, wrong use of the API), or does the code under test have a bug?\nDo not write code this time. Answer with one line `VERDICT: TEST_MISTAKE` or `VERDICT: CODE_BUG`, then one line `REASON: ` and a short reason.",
        generate::head(ctx, ctx.shrink)
    );
    vec![Message::system(generate::SYSTEM), Message::user(u)]
}

fn gaps(root: &Path, file: &str, module: &str, n: usize) -> Vec<Gap> {
    let src = std::fs::read_to_string(root.join(file)).expect("the fixture module");
    let parsed = python::parse(&src).expect("it parses");
    parsed
        .units()
        .into_iter()
        .filter(|u| u.kind != python::UnitKind::Class && u.end_line > u.start_line + 2)
        .take(n)
        .map(|u| Gap {
            file: file.into(),
            module: module.into(),
            qualname: u.qualname.clone(),
            kind: u.kind,
            start_line: u.start_line,
            end_line: u.end_line,
            missing_lines: (u.start_line + 1..=u.end_line).collect(),
            partial_lines: Vec::new(),
            params: 1,
        })
        .collect()
}

/// Sends `warm` untimed, then `timed`; the seconds `timed` took and its prompt tokens.
async fn after(llm: &Llm, warm: &[Message], timed: &[Message]) -> (f64, u32) {
    llm.chat(warm, 0.0, Some(1))
        .await
        .expect("the model answers");
    let t = Instant::now();
    let r = llm
        .chat(timed, 0.0, Some(1))
        .await
        .expect("the model answers");
    (t.elapsed().as_secs_f64(), r.prompt_tokens)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::var("OPENAI_BASE_URL").is_err() {
        eprintln!(
            "prompt_cache: set OPENAI_BASE_URL (and OPENAI_API_KEY) to a llama.cpp server, e.g. ../shared/llm/local-model.sh start; skipped"
        );
        return;
    }
    let n: usize = std::env::var("BENCH_GAPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/boltons-typeutils");
    let project = detect::detect(&root).expect("the fixture project is detected");
    let llm = Llm::new(LlmConfig::from_env(None, None)).expect("an LLM client");
    let mut rows: [(Vec<f64>, u64); 4] = Default::default();
    let names = [
        "fix, before (code after its own first line)",
        "fix, now (the generation prompt's head first)",
        "classify, before (own system message)",
        "classify, now (the generation prompt's head first)",
    ];
    let list = gaps(&root, "boltons/typeutils.py", "boltons.typeutils", n);
    for (i, gap) in list.iter().enumerate() {
        let ctx = generate::context(&project, &root, gap).expect("a context");
        let generation = generate::prompt(&ctx, ctx.shrink);
        let requests = [
            fix_before(&ctx),
            fix::prompt(&ctx, TEST, ERROR, &[], &[]),
            classify_before(&ctx),
            classify_now(&ctx),
        ];
        // Alternating order, so that neither layout always runs first.
        let mut order: Vec<usize> = (0..4).collect();
        if i % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let (secs, tokens) = after(&llm, &generation, &requests[k]).await;
            rows[k].0.push(secs);
            rows[k].1 += u64::from(tokens);
        }
        eprintln!("gap {}/{}: {}", i + 1, list.len(), gap.qualname);
    }
    println!(
        "prompt_cache: {} gaps of boltons/typeutils.py, each request after its gap's generation prompt",
        list.len()
    );
    for (k, name) in names.iter().enumerate() {
        let (secs, tokens) = &rows[k];
        println!(
            "  {name:<52} median {:>6.2} s   {:>5} prompt tokens per request",
            median(secs.clone()),
            tokens / list.len().max(1) as u64
        );
    }
    for (what, before, now) in [("fix", 0, 1), ("classify", 2, 3)] {
        println!(
            "  {what}: now / before = {:.2}",
            median(rows[now].0.clone()) / median(rows[before].0.clone())
        );
    }
}
