//! When to ask the model again: the server's `Retry-After` if it gave one, else exponential
//! backoff; both with jitter, so that several clients refused together do not come back
//! together.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;

/// The longest wait a `Retry-After` may impose; a longer one is cut to this (the endpoint is
/// the operator's, but a typo there should not park a run for a day).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The longest computed backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The `Retry-After` of the last answer the current request got, set by [`service`].
    pub(crate) static RETRY_AFTER: Cell<Option<Duration>>;
}

/// The HTTP service under the model client: plain reqwest (no retries of its own: the chat
/// loop is the one retry policy), noting each answer's `Retry-After` for the loop.
pub(crate) fn service(
    http: reqwest::Client,
) -> impl tower::Service<
    HttpRequestFactory,
    Response = reqwest::Response,
    Error = OpenAIError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            if after.is_some() {
                let _ = RETRY_AFTER.try_with(|c| c.set(after));
            }
            Ok(response)
        }
    })
}

/// A `Retry-After` value (see [`crate::retry::parse_retry_after`]), capped at
/// [`MAX_RETRY_AFTER`].
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    crate::retry::parse_retry_after(value, now).map(|w| w.min(MAX_RETRY_AFTER))
}

/// How long to wait before attempt `attempt + 1` (`attempt` ≥ 1 failed): the server's
/// `retry_after` plus up to 10 %, or `base` doubled per attempt (at most 30 s) within ±20 %.
/// `unit` is a random number in [0, 1).
pub(crate) fn wait(
    attempt: u32,
    base: Duration,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    match retry_after {
        Some(after) => after.mul_f64(1.0 + 0.1 * unit),
        None => {
            let backoff = base
                .saturating_mul(1 << attempt.saturating_sub(1).min(5))
                .min(MAX_BACKOFF);
            backoff.mul_f64(0.8 + 0.4 * unit)
        }
    }
}

pub(crate) use crate::retry::unit_random;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn waits_follow_the_server_or_back_off_with_jitter() {
        let base = Duration::from_secs(1);
        // The server's word, plus at most 10 %.
        let after = Some(Duration::from_secs(10));
        assert_eq!(wait(1, base, after, 0.0), Duration::from_secs(10));
        assert_eq!(wait(1, base, after, 0.999).as_millis(), 10_999);
        // Doubling within ±20 %, capped at 30 s.
        assert_eq!(wait(1, base, None, 0.5), Duration::from_secs(1));
        assert_eq!(wait(3, base, None, 0.5), Duration::from_secs(4));
        assert_eq!(wait(3, base, None, 0.0), Duration::from_millis(3200));
        assert!(wait(3, base, None, 0.999) < Duration::from_millis(4800));
        assert_eq!(wait(20, base, None, 0.5), Duration::from_secs(30));
    }
}
