//! The model client against a scripted OpenAI-compatible server: retries, truncation,
//! malformed answers, a dead endpoint, the context budget. No Docker needed.

mod testgen_support;

use cordon::pipeline::llm::{Llm, LlmError, Message};
use testgen_support::{Answer, llm_config, start, start_with_models};

fn hello() -> Vec<Message> {
    vec![Message::system("s"), Message::user("write a test")]
}

#[tokio::test]
async fn retries_429_and_5xx_then_succeeds() {
    let s = start(Box::new(|n, _| match n {
        0 => Answer::status(
            429,
            r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
        ),
        1 => Answer::status(503, "overloaded"),
        _ => Answer::chat("```python\ndef test_a():\n    assert True\n```"),
    }))
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let r = llm
        .chat(&hello(), 0.2, Some(64))
        .await
        .expect("succeeds after retries");
    assert!(r.content.contains("def test_a"));
    assert!(!r.truncated);
    let u = llm.usage();
    assert_eq!((u.requests, u.retries), (3, 2));
    assert_eq!((u.prompt_tokens, u.completion_tokens), (100, 50));
    // Every request carries max_tokens, and the model name.
    for req in s.requests() {
        assert_eq!(req["max_tokens"], 64);
        assert_eq!(req["model"], "scripted");
    }
}

#[tokio::test]
async fn a_length_truncated_or_runaway_answer_is_flagged() {
    let runaway = format!("```python\n{}", "    assert add(1, 2) == 3\n".repeat(60));
    let s = start(Box::new(move |n, _| match n {
        0 => Answer::chat_with("```python\ndef test_a():\n    assert ad", "length"),
        _ => Answer::chat_with(&runaway, "stop"),
    }))
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let r = llm.chat(&hello(), 0.2, None).await.expect("answers");
    assert!(r.truncated);
    assert_eq!(r.finish_reason, "length");
    let r = llm.chat(&hello(), 0.2, None).await.expect("answers");
    assert!(r.repetitive && !r.truncated);
    let u = llm.usage();
    assert_eq!((u.truncated_answers, u.repetitive_answers), (1, 1));
}

#[tokio::test]
async fn malformed_answers_are_errors_not_panics() {
    let s = start(Box::new(|n, _| match n {
        0 => Answer::status(200, "this is not json"),
        1 => Answer::status(200, r#"{"choices": []}"#),
        2 => Answer::status(200, r#"{"choices": [{"message": {"role": "assistant"}}]}"#),
        _ => Answer::status(
            400,
            r#"{"error":{"message":"context length exceeded","type":"invalid_request_error"}}"#,
        ),
    }))
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    for _ in 0..3 {
        let e = llm.chat(&hello(), 0.2, None).await.expect_err("malformed");
        assert!(matches!(e, LlmError::Malformed(_)), "{e:?}");
        assert!(!e.is_fatal());
    }
    let e = llm.chat(&hello(), 0.2, None).await.expect_err("refused");
    assert!(matches!(e, LlmError::Refused { status: 400, .. }), "{e:?}");
    // None of these was retried.
    assert_eq!(s.requests().len(), 4);
}

#[tokio::test]
async fn a_dead_endpoint_is_a_clear_fatal_error() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let llm = Llm::new(llm_config(&format!("http://127.0.0.1:{port}/v1"))).expect("client");
    let e = llm.chat(&hello(), 0.2, None).await.expect_err("dead");
    assert!(e.is_fatal());
    let msg = cordon::error::error_chain(&e);
    assert!(msg.contains("did not answer after 4 attempts"), "{msg}");
    assert_eq!(llm.usage().retries, 3);
}

#[tokio::test]
async fn an_oversized_prompt_is_refused_before_sending() {
    let s = start(Box::new(|_, _| Answer::chat("x"))).await;
    let mut cfg = llm_config(&s.base_url);
    cfg.context_tokens = 1000;
    let llm = Llm::new(cfg).expect("client");
    let big = vec![Message::user("def f():\n    pass\n".repeat(400))];
    let e = llm.chat(&big, 0.2, Some(200)).await.expect_err("too large");
    assert!(matches!(e, LlmError::PromptTooLarge { .. }), "{e:?}");
    assert!(s.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn retry_after_is_followed_instead_of_the_backoff() {
    let s = start(Box::new(|n, _| match n {
        0 => Answer::status(429, r#"{"error":{"message":"slow down"}}"#)
            .with_header("retry-after", "1"),
        _ => Answer::chat("ok"),
    }))
    .await;
    let mut cfg = llm_config(&s.base_url);
    // A backoff this long would be seen: the server's 1 s must be used instead.
    cfg.backoff = std::time::Duration::from_secs(20);
    let llm = Llm::new(cfg).expect("client");
    llm.chat(&hello(), 0.2, Some(8))
        .await
        .expect("succeeds after the wait");
    let u = llm.usage();
    assert_eq!(u.retries, 1);
    assert!(
        (1000..=1100).contains(&u.retry_wait_ms),
        "waited {} ms, not Retry-After's 1 s (+ up to 10 % jitter)",
        u.retry_wait_ms
    );
}

#[tokio::test]
async fn backoff_waits_are_jittered_around_the_doubling() {
    let s = start(Box::new(|n, _| match n {
        0..=2 => Answer::status(503, "busy"),
        _ => Answer::chat("ok"),
    }))
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    llm.chat(&hello(), 0.2, Some(8)).await.expect("succeeds");
    // 20 + 40 + 80 ms, each within ±20 %.
    let u = llm.usage();
    assert_eq!(u.retries, 3);
    assert!(
        (112..=168).contains(&u.retry_wait_ms),
        "{}",
        u.retry_wait_ms
    );
}

#[tokio::test]
async fn the_probe_reads_the_model_list_without_spending_a_request() {
    let s = start(Box::new(|_, _| Answer::chat("unused"))).await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let probe = llm.probe().await.expect("answers");
    assert_eq!(probe.models, Some(vec!["scripted".to_string()]));
    assert_eq!(probe.lists("scripted"), Some(true));
    assert_eq!(probe.lists("gpt-x"), Some(false));
    assert!(s.requests().is_empty(), "no chat request was made");
}

#[tokio::test]
async fn a_refused_key_or_a_dead_endpoint_fails_the_probe_naming_the_fix() {
    let s = start_with_models(
        Box::new(|_, _| Answer::chat("unused")),
        Box::new(|| Answer::status(401, r#"{"error":{"message":"bad key"}}"#)),
    )
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let err = llm.probe().await.expect_err("refused");
    assert!(
        matches!(err, LlmError::KeyRefused { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.is_fatal());
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");

    let dead = Llm::new(llm_config("http://127.0.0.1:9/v1")).expect("client");
    let err = dead.probe().await.expect_err("nothing listens on port 9");
    assert!(matches!(err, LlmError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("OPENAI_BASE_URL"), "{err}");
}

#[tokio::test]
async fn an_endpoint_without_a_model_list_is_probed_with_one_token() {
    let s = start_with_models(
        Box::new(|_, _| Answer::chat("OK")),
        Box::new(|| Answer::status(404, "no such route")),
    )
    .await;
    let llm = Llm::new(llm_config(&s.base_url)).expect("client");
    let probe = llm.probe().await.expect("answers");
    assert_eq!(probe.models, None);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["max_tokens"], 1);
}
