//! `GET /v1/jobs`: its query parameters, parsed and checked, and its cursors.
//!
//! A listing is newest first, ordered by `(submitted_ms, id)` descending. A cursor is the key
//! of the last job of a page; the next page holds the jobs strictly after that key, so a page
//! boundary does not move when jobs are submitted (they are newer) or finish (the key does
//! not change) between requests: no job is listed twice and none is skipped. The cursor is
//! opaque to clients (hex), and checked when it comes back.
//!
//! No HTTP types: the API layer passes the query's `(name, value)` pairs in.

use super::store::{JobFilter, JobState, ListKey};
use crate::report::Outcome;

/// Jobs per page without `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// The most `limit` may ask for.
pub const MAX_LIMIT: usize = 500;
/// Every parameter `GET /v1/jobs` takes.
pub const PARAMS: &[&str] = &["state", "outcome", "image", "since", "limit", "cursor"];

/// A checked listing request: which jobs, from where, how many. `filter.submitter` is left
/// for the service to set from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: JobFilter,
    pub limit: usize,
}

/// A parameter the listing cannot use, and why (the allowed values included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{param}`: {message}")]
pub struct BadParam {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        param: param.to_string(),
        message: message.into(),
    }
}

const LISTS: &str = "(repeat the parameter or separate values with commas)";

impl ListQuery {
    /// Parses the query's pairs, in order. `state`, `outcome` and `image` may repeat and take
    /// comma-separated lists (any of them matches); the others may appear once.
    pub fn parse(pairs: &[(String, String)]) -> Result<ListQuery, BadParam> {
        let mut filter = JobFilter::default();
        let mut limit = None;
        let mut seen_once: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let name = name.as_str();
            if !PARAMS.contains(&name) {
                return Err(bad(
                    name,
                    format!(
                        "unknown parameter; `GET /v1/jobs` takes {}",
                        PARAMS.join(", ")
                    ),
                ));
            }
            if matches!(name, "since" | "limit" | "cursor") {
                if seen_once.contains(&name) {
                    return Err(bad(name, "given more than once; give it once"));
                }
                seen_once.push(name);
            }
            let items = || value.split(',').map(str::trim);
            match name {
                "state" => {
                    for v in items() {
                        let st = JobState::from_name(v).ok_or_else(|| {
                            bad(
                                name,
                                format!(
                                    "`{v}` is not a job state; the states are {} {LISTS}",
                                    JobState::ALL.map(JobState::as_str).join(", ")
                                ),
                            )
                        })?;
                        if !filter.states.contains(&st) {
                            filter.states.push(st);
                        }
                    }
                }
                "outcome" => {
                    for v in items() {
                        let o = Outcome::parse(v).ok_or_else(|| {
                            bad(
                                name,
                                format!(
                                    "`{v}` is not an outcome; the outcomes are {} {LISTS}",
                                    Outcome::ALL.map(Outcome::as_str).join(", ")
                                ),
                            )
                        })?;
                        let o = o.as_str().to_string();
                        if !filter.outcomes.contains(&o) {
                            filter.outcomes.push(o);
                        }
                    }
                }
                "image" => {
                    for v in items() {
                        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                            return Err(bad(
                                name,
                                format!(
                                    "`{v}` is not an image reference; give one exactly as jobs name it, like {} {LISTS}",
                                    crate::spec::DEFAULT_IMAGE
                                ),
                            ));
                        }
                        if !filter.images.iter().any(|i| i == v) {
                            filter.images.push(v.to_string());
                        }
                    }
                }
                "since" => {
                    filter.since_ms = Some(parse_since(value).ok_or_else(|| {
                        bad(
                            name,
                            format!(
                                "`{value}` is neither an RFC 3339 time (like 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.5+02:00) nor Unix milliseconds (like 1714564800000)"
                            ),
                        )
                    })?);
                }
                "limit" => {
                    let n = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(
                                name,
                                format!(
                                    "`{value}` is not a number from 1 to {MAX_LIMIT} (jobs per page; default {DEFAULT_LIMIT})"
                                ),
                            )
                        })?;
                    limit = Some(n);
                }
                "cursor" => {
                    filter.after = Some(parse_cursor(value).ok_or_else(|| {
                        bad(
                            name,
                            "not a cursor this service gave; pass the previous page's `next_cursor` unchanged, or leave `cursor` out for the first page",
                        )
                    })?);
                }
                _ => unreachable!("every name in PARAMS is handled"),
            }
        }
        Ok(ListQuery {
            filter,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// The cursor that resumes a listing after the job with `key`.
pub fn cursor(key: &ListKey) -> String {
    hex::encode(format!("1:{}:{}", key.submitted_ms, key.id))
}

fn parse_cursor(s: &str) -> Option<ListKey> {
    let raw = String::from_utf8(hex::decode(s.trim()).ok()?).ok()?;
    let rest = raw.strip_prefix("1:")?;
    let (ms, id) = rest.split_once(':')?;
    let ok_id = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_id || ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ListKey {
        submitted_ms: ms.parse().ok()?,
        id: id.to_string(),
    })
}

/// `since`: Unix milliseconds, or an RFC 3339 time (`Z` or a `±HH:MM` offset; fractions of a
/// second allowed). Returns Unix milliseconds.
pub fn parse_since(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || !s.is_ascii() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    // RFC 3339 allows lower-case `t` and `z`; humantime reads UTC only, so an offset is
    // taken off here and applied after.
    let s = s.to_ascii_uppercase();
    let (utc, offset_secs) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((head, tail)) if head.len() >= 19 && matches!(&tail[..1], "+" | "-") => {
            let t = tail.as_bytes();
            let digits = [t[1], t[2], t[4], t[5]];
            if t[3] != b':' || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours: i64 = tail[1..3].parse().ok()?;
            let minutes: i64 = tail[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (format!("{head}Z"), sign * (hours * 3600 + minutes * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339(&utc).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()?.checked_sub(offset_secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, BadParam> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ListQuery::parse(&pairs)
    }

    #[test]
    fn filters_repeat_and_take_comma_lists() {
        let l = q(&[
            ("state", "queued,running"),
            ("state", "finished"),
            ("state", "queued"),
            ("outcome", "passed, failed"),
            ("image", "cordon/python:3.11"),
            ("limit", "7"),
        ])
        .expect("valid");
        assert_eq!(
            l.filter.states,
            [JobState::Queued, JobState::Running, JobState::Finished]
        );
        assert_eq!(l.filter.outcomes, ["passed", "failed"]);
        assert_eq!(l.filter.images, ["cordon/python:3.11"]);
        assert_eq!(l.limit, 7);
        let d = q(&[]).expect("valid");
        assert_eq!(d.limit, DEFAULT_LIMIT);
        assert_eq!(d.filter, JobFilter::default());
    }

    #[test]
    fn a_bad_value_names_the_parameter_and_what_it_takes() {
        let e = q(&[("state", "done")]).expect_err("bad state");
        assert_eq!(e.param, "state");
        assert!(
            e.message.contains("`done`") && e.message.contains("queued, running, finished"),
            "{e}"
        );
        let e = q(&[("outcome", "passed,ok")]).expect_err("bad outcome");
        assert_eq!(e.param, "outcome");
        assert!(
            e.message.contains("`ok`") && e.message.contains("timed_out"),
            "{e}"
        );
        for limit in ["0", "501", "-1", "ten", ""] {
            let e = q(&[("limit", limit)]).expect_err("bad limit");
            assert_eq!(e.param, "limit");
            assert!(e.message.contains("from 1 to 500"), "{e}");
        }
        assert_eq!(q(&[("limit", "500")]).expect("max").limit, 500);
        let e = q(&[("since", "yesterday")]).expect_err("bad since");
        assert!(e.message.contains("RFC 3339") && e.message.contains("milliseconds"));
        let e = q(&[("cursor", "zz")]).expect_err("bad cursor");
        assert_eq!(e.param, "cursor");
        let e = q(&[("image", "")]).expect_err("empty image");
        assert_eq!(e.param, "image");
        let e = q(&[("sort", "asc")]).expect_err("unknown");
        assert_eq!(e.param, "sort");
        assert!(
            e.message
                .contains("state, outcome, image, since, limit, cursor")
        );
        let e = q(&[("limit", "1"), ("limit", "2")]).expect_err("twice");
        assert_eq!(e.param, "limit");
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let key = ListKey {
            submitted_ms: 1_714_564_800_123,
            id: "job-0123456789ab".into(),
        };
        let c = cursor(&key);
        assert_eq!(q(&[("cursor", &c)]).expect("valid").filter.after, Some(key));
        for forged in [
            hex::encode("2:1:job-x"),
            hex::encode("1:x:job-x"),
            hex::encode("1:1:"),
            hex::encode("1:1:job x' OR 1=1"),
            hex::encode("1:-5:job-x"),
            "not hex".into(),
        ] {
            assert!(q(&[("cursor", &forged)]).is_err(), "{forged}");
        }
    }

    #[test]
    fn since_takes_rfc3339_with_offsets_or_unix_ms() {
        let utc = 1_714_564_800_000; // 2024-05-01T12:00:00Z
        assert_eq!(parse_since("1714564800000"), Some(utc));
        assert_eq!(parse_since("2024-05-01T12:00:00Z"), Some(utc));
        assert_eq!(parse_since("2024-05-01t12:00:00z"), Some(utc));
        assert_eq!(parse_since("2024-05-01T12:00:00.250Z"), Some(utc + 250));
        assert_eq!(parse_since("2024-05-01T14:00:00+02:00"), Some(utc));
        assert_eq!(parse_since("2024-05-01T14:00:00.5+02:00"), Some(utc + 500));
        assert_eq!(parse_since("2024-05-01T07:30:00-04:30"), Some(utc));
        assert_eq!(parse_since("2024-05-01T12:00:00+00:00"), Some(utc));
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01T12:00:00+24:00",
            "2024-13-01T12:00:00Z",
            "12:00",
            "-5",
            "1.5",
            "2024-05-01T12:00:00Zé",
        ] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
    }
}
