//! The model client against a scripted OpenAI-compatible server: retries, truncation,
//! malformed answers, a dead endpoint, the context budget. No Docker needed.

mod testgen_support;

use cordon::pipeline::llm::{Llm, LlmError, Message};
use testgen_support::{Answer, llm_config, start};

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
    let msg = cordon::runner::error_chain(&e);
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
