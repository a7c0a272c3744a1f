//! A webhook delivery, judged without I/O: its `X-Hub-Signature-256` (HMAC-SHA256 of the raw
//! body with the webhook's secret, compared in constant time) and what it asks cordon to do.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::secret::Secret;

/// Whether `signature` (the header's value, `sha256=<hex>`) is the HMAC-SHA256 of `body`
/// under `secret`. The comparison takes the same time wherever the first difference is.
pub fn signature_ok(secret: &Secret, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Tests for a pull request (flow 1).
    TestsForPr { repo: String, number: u64 },
    /// An issue to build (flow 2).
    BuildIssue { repo: String, number: u64 },
}

/// The verdict on one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Work to queue, and who asked.
    Queue { work: Work, by: String },
    /// Acknowledged and nothing done, with the reason (logged).
    Ignore(String),
}

/// Associations that may trigger cordon: people with a say over the repository.
pub const TRUSTED: &[&str] = &["OWNER", "MEMBER", "COLLABORATOR"];

#[derive(Deserialize, Default)]
struct Payload {
    #[serde(default)]
    action: String,
    repository: Option<Repository>,
    pull_request: Option<Item>,
    issue: Option<Item>,
    comment: Option<Comment>,
    label: Option<Label>,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Item {
    number: u64,
    #[serde(default)]
    author_association: String,
    /// Present on an issue that is a pull request.
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Comment {
    #[serde(default)]
    body: String,
    #[serde(default)]
    author_association: String,
    user: Option<User>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

/// Decides what a delivery of `event` with this (signature-checked) `body` asks for. `labels`
/// are the labels that trigger.
///
/// - `pull_request` / `issues` `labeled` with a trigger label, on an item whose author is an
///   OWNER, MEMBER or COLLABORATOR: queued. (Adding a label already needs triage access;
///   an outsider's pull request is run only when a trusted person comments `/cordon`.)
/// - `issue_comment` `created` whose body starts with `/cordon`, by an OWNER, MEMBER or
///   COLLABORATOR (the comment's `author_association`): queued.
/// - anything else: ignored with the reason.
pub fn judge(event: &str, body: &[u8], labels: &[String]) -> Verdict {
    let p: Payload = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return Verdict::Ignore(format!("{event}: not a payload cordon reads: {e}")),
    };
    let Some(repo) = p.repository.as_ref().map(|r| r.full_name.clone()) else {
        return Verdict::Ignore(format!("{event}: no repository in the payload"));
    };
    let sender = p
        .sender
        .as_ref()
        .map_or("someone", |s| s.login.as_str())
        .to_string();
    match (event, p.action.as_str()) {
        ("pull_request", "labeled") | ("issues", "labeled") => {
            let label = p.label.as_ref().map_or("", |l| l.name.as_str());
            if !labels.iter().any(|l| l == label) {
                return Verdict::Ignore(format!("{event}: label `{label}` is not a trigger"));
            }
            let (item, is_pr) = match (&p.pull_request, &p.issue) {
                (Some(pr), _) => (pr, true),
                (None, Some(issue)) => (issue, issue.pull_request.is_some()),
                _ => return Verdict::Ignore(format!("{event}: no item in the payload")),
            };
            if !TRUSTED.contains(&item.author_association.as_str()) {
                return Verdict::Ignore(format!(
                    "{repo}#{}: labeled by {sender}, but its author is {} (not an owner, member or collaborator); a collaborator's `/cordon` comment runs it",
                    item.number, item.author_association
                ));
            }
            Verdict::Queue {
                work: work(repo, item.number, is_pr),
                by: sender,
            }
        }
        ("issue_comment", "created") => {
            let (Some(c), Some(issue)) = (&p.comment, &p.issue) else {
                return Verdict::Ignore("issue_comment: no comment or issue".into());
            };
            let first = c.body.split_whitespace().next().unwrap_or("");
            if first != "/cordon" {
                return Verdict::Ignore(format!(
                    "{repo}#{}: a comment without /cordon",
                    issue.number
                ));
            }
            let who = c
                .user
                .as_ref()
                .map_or(sender.as_str(), |u| u.login.as_str())
                .to_string();
            if !TRUSTED.contains(&c.author_association.as_str()) {
                return Verdict::Ignore(format!(
                    "{repo}#{}: /cordon from {who}, whose association is {} (only OWNER, MEMBER or COLLABORATOR can trigger)",
                    issue.number, c.author_association
                ));
            }
            Verdict::Queue {
                work: work(repo, issue.number, issue.pull_request.is_some()),
                by: who,
            }
        }
        _ => Verdict::Ignore(format!(
            "event `{event}` action `{}` is not one cordon acts on",
            p.action
        )),
    }
}

fn work(repo: String, number: u64, is_pr: bool) -> Work {
    if is_pr {
        Work::TestsForPr { repo, number }
    } else {
        Work::BuildIssue { repo, number }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// GitHub's own example, from "Validating webhook deliveries".
    #[test]
    fn githubs_test_vector() {
        let secret = Secret::new("It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_ok(&secret, b"Hello, World!", sig));
        assert!(!signature_ok(&secret, b"Hello, World?", sig));
        assert!(!signature_ok(
            &Secret::new("another"),
            b"Hello, World!",
            sig
        ));
        assert!(!signature_ok(
            &secret,
            b"Hello, World!",
            &sig.replace("sha256=", "sha1=")
        ));
        assert!(!signature_ok(&secret, b"Hello, World!", "sha256=zz"));
        assert!(!signature_ok(&secret, b"Hello, World!", &sig[..20]));
    }

    fn labels() -> Vec<String> {
        vec!["cordon".into()]
    }

    fn comment(body: &str, assoc: &str, on_pr: bool) -> Vec<u8> {
        let mut issue = json!({"number": 7, "author_association": "NONE"});
        if on_pr {
            issue["pull_request"] = json!({"url": "x"});
        }
        json!({
            "action": "created",
            "repository": {"full_name": "o/r"},
            "issue": issue,
            "comment": {"body": body, "author_association": assoc, "user": {"login": "ann"}},
            "sender": {"login": "ann"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_trusted_comments_trigger() {
        let v = judge(
            "issue_comment",
            &comment("/cordon please", "COLLABORATOR", true),
            &labels(),
        );
        assert_eq!(
            v,
            Verdict::Queue {
                work: Work::TestsForPr {
                    repo: "o/r".into(),
                    number: 7
                },
                by: "ann".into()
            }
        );
        let v = judge(
            "issue_comment",
            &comment("/cordon", "OWNER", false),
            &labels(),
        );
        assert!(matches!(
            v,
            Verdict::Queue {
                work: Work::BuildIssue { .. },
                ..
            }
        ));
        for assoc in ["CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "NONE", ""] {
            let v = judge("issue_comment", &comment("/cordon", assoc, true), &labels());
            assert!(matches!(v, Verdict::Ignore(_)), "{assoc}: {v:?}");
        }
        let v = judge(
            "issue_comment",
            &comment("looks good /cordon", "OWNER", true),
            &labels(),
        );
        assert!(matches!(v, Verdict::Ignore(_)));
    }

    #[test]
    fn labels_trigger_for_trusted_authors() {
        let body = |label: &str, assoc: &str| {
            json!({
                "action": "labeled",
                "repository": {"full_name": "o/r"},
                "pull_request": {"number": 3, "author_association": assoc},
                "label": {"name": label},
                "sender": {"login": "maint"}
            })
            .to_string()
            .into_bytes()
        };
        assert!(matches!(
            judge("pull_request", &body("cordon", "MEMBER"), &labels()),
            Verdict::Queue {
                work: Work::TestsForPr { number: 3, .. },
                ..
            }
        ));
        assert!(matches!(
            judge("pull_request", &body("bug", "MEMBER"), &labels()),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            judge("pull_request", &body("cordon", "NONE"), &labels()),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn unknown_events_and_junk_are_ignored() {
        assert!(matches!(
            judge("star", b"{}", &labels()),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            judge("push", b"not json", &labels()),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            judge(
                "ping",
                br#"{"zen":"x","repository":{"full_name":"o/r"}}"#,
                &labels()
            ),
            Verdict::Ignore(_)
        ));
    }
}
