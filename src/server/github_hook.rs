//! `POST /v1/github/webhook`: GitHub's deliveries. No bearer token (GitHub cannot send one):
//! the `X-Hub-Signature-256` HMAC with the webhook's own secret is the proof, checked in
//! constant time over the raw body before anything else is read. Each delivery is recorded
//! once in the service's SQLite store, keyed by `X-GitHub-Hook-ID` + `X-GitHub-Delivery`
//! (a redelivery reuses the id and is answered `200 duplicate`), and answered at once: work
//! a trusted person asked for is recorded `queued`, anything else `ignored` with the reason
//! (logged). Unknown events are acknowledged (2xx), so GitHub does not retry them.
//!
//! The route still passes the front door (`Host` must be one of `server_names`; GitHub sends
//! no `Origin` or `Sec-Fetch-Site`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::queue::Service;
use super::store::{Delivery, SqliteStore as Store};
use crate::github::Secret;
use crate::github::webhook::{self, Verdict};

/// The route's path.
pub const PATH: &str = "/v1/github/webhook";

/// GitHub caps a delivery's payload at 25 MB.
const MAX_BODY: usize = 25 << 20;

#[derive(Clone)]
struct Hook {
    secret: Secret,
    labels: Arc<Vec<String>>,
    store: Arc<Store>,
    /// Wakes the worker: work was queued.
    wake: Arc<Notify>,
}

/// The webhook's route when the configuration has a `github:` section (none otherwise). Its
/// own connection to the service's database records the deliveries.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(svc: &Service) -> Router<S> {
    let cfg = svc.config();
    let Some(gh) = &cfg.github else {
        return Router::new();
    };
    let hook = gh
        .webhook_secret()
        .map_err(|e| e.to_string())
        .and_then(|secret| {
            Store::open(&cfg.data_dir.join("cordon.db"))
                .map(|store| Hook {
                    secret,
                    labels: Arc::new(gh.labels.clone()),
                    store: Arc::new(store),
                    wake: Arc::new(Notify::new()),
                })
                .map_err(|e| e.to_string())
        });
    match hook {
        Ok(hook) => {
            let worker = Worker {
                store: hook.store.clone(),
                wake: hook.wake.clone(),
                section: gh.clone(),
                policy: cfg.policy.clone(),
                svc: svc.clone(),
            };
            svc.spawn_background(worker.run());
            Router::new()
                .route(PATH, post(receive).layer(DefaultBodyLimit::max(MAX_BODY)))
                .with_state(hook)
        }
        Err(e) => {
            error!(error = %e, "the GitHub webhook cannot start; it answers 503");
            Router::new().route(
                PATH,
                post(|| async {
                    answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": "the webhook is not ready; see the service's log"}),
                    )
                }),
            )
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A header GitHub sends: one visible-ASCII value of at most 100 characters.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let v = all.next()?.to_str().ok()?;
    (all.next().is_none()
        && !v.is_empty()
        && v.len() <= 100
        && v.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(v)
}

async fn receive(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = header(&headers, "x-hub-signature-256").unwrap_or("");
    if !webhook::signature_ok(&h.secret, &body, signature) {
        warn!(
            "GitHub webhook: refused a delivery whose X-Hub-Signature-256 does not match the webhook secret"
        );
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "X-Hub-Signature-256 does not match: the webhook's secret in GitHub must be the one in github.webhook_secret_file"}),
        );
    }
    let (Some(event), Some(delivery), Some(hook_id)) = (
        header(&headers, "x-github-event"),
        header(&headers, "x-github-delivery"),
        header(&headers, "x-github-hook-id"),
    ) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "X-GitHub-Event, X-GitHub-Delivery and X-GitHub-Hook-ID are required"}),
        );
    };
    let verdict = webhook::judge(event, &body, &h.labels);
    let (state, work, reason) = match &verdict {
        Verdict::Queue { work, .. } => ("queued", serde_json::to_string(work).ok(), None),
        Verdict::Ignore(why) => ("ignored", None, Some(why.clone())),
    };
    let d = Delivery {
        hook_id: hook_id.to_string(),
        delivery_id: delivery.to_string(),
        event: event.to_string(),
        received_ms: now_ms(),
        state: state.into(),
        work,
        reason,
    };
    let store = h.store.clone();
    let d2 = d.clone();
    let recorded = tokio::task::spawn_blocking(move || store.record_delivery(&d2)).await;
    match recorded {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            info!(
                delivery,
                hook_id, event, "GitHub webhook: a redelivery, already recorded"
            );
            return answer(StatusCode::OK, json!({"status": "duplicate"}));
        }
        Ok(Err(e)) => {
            error!(error = %e, "GitHub webhook: cannot record a delivery");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot record the delivery; GitHub may redeliver it"}),
            );
        }
        Err(e) => {
            error!(error = %e, "GitHub webhook: the recording task failed");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal"}),
            );
        }
    }
    match verdict {
        Verdict::Queue { work, by } => {
            info!(delivery, event, ?work, by, "GitHub webhook: work queued");
            h.wake.notify_one();
            answer(
                StatusCode::ACCEPTED,
                json!({"status": "queued", "work": work}),
            )
        }
        Verdict::Ignore(why) => {
            info!(delivery, event, reason = %why, "GitHub webhook: ignored");
            answer(StatusCode::OK, json!({"status": "ignored", "reason": why}))
        }
    }
}

/// Runs queued deliveries one at a time, oldest first: flow 1 for a pull request (tests for
/// its branch, as a pull request into it), flow 2 for an issue (the builder: a change and
/// its tests as a pull request). Deliveries left `running` by a crash are run again.
struct Worker {
    store: Arc<Store>,
    wake: Arc<Notify>,
    section: super::config::GitHubSection,
    /// The operator's policy: which images a repository's `.cordon.yml` may name.
    policy: crate::spec::OperatorPolicy,
    /// The service whose job slots the work shares and whose drain stops it.
    svc: Service,
}

impl Worker {
    async fn run(self) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.requeue_running_deliveries()).await {
            Ok(Ok(n)) if n > 0 => info!(n, "GitHub: deliveries interrupted by a restart run again"),
            Ok(Err(e)) => error!(error = %e, "GitHub: cannot requeue interrupted deliveries"),
            _ => {}
        }
        let stopping = self.svc.stopping();
        loop {
            // One of the service's job slots for the whole delivery: its sandboxes count
            // against `concurrency` like a job's.
            let Some(slot) = self.svc.slot().await else {
                return;
            };
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.claim_delivery()).await {
                Ok(Ok(Some(d))) => {
                    self.work(d).await;
                    drop(slot);
                }
                Ok(Ok(None)) => {
                    drop(slot);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                        _ = stopping.cancelled() => return,
                    }
                }
                Ok(Err(e)) => {
                    error!(error = %e, "GitHub: cannot read queued deliveries");
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                }
                Err(_) => return,
            }
        }
    }

    async fn work(&self, d: Delivery) {
        let result = self.run_one(&d).await;
        if self.svc.stopping().is_cancelled() {
            // Stopped by a drain: the delivery runs again at the next start.
            info!(delivery = %d.delivery_id, "GitHub: delivery interrupted by a shutdown; it runs again at the next start");
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                store.set_delivery_state(&d, "queued", Some("interrupted by a shutdown"))
            })
            .await;
            return;
        }
        let (state, outcome) = match result {
            Ok(o) => ("done", o),
            Err(e) => ("failed", e),
        };
        info!(delivery = %d.delivery_id, state, %outcome, "GitHub: delivery handled");
        self.tell(&d, state == "done", &outcome).await;
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            store.set_delivery_state(&d, state, Some(&outcome))
        })
        .await;
        if !matches!(r, Ok(Ok(()))) {
            error!("GitHub: cannot record a delivery's outcome");
        }
    }

    /// Says on the triggering pull request what became of its request (one sticky comment,
    /// updated by later runs). The builder says it on its issue itself. A failure to say it
    /// is logged only.
    async fn tell(&self, d: &Delivery, ok: bool, outcome: &str) {
        use crate::github::webhook::Work;
        let Some(Ok(Work::TestsForPr { repo, number })) =
            d.work.as_deref().map(serde_json::from_str::<Work>)
        else {
            return;
        };
        let said = async {
            let cfg = self.section.client_config().map_err(|e| e.to_string())?;
            let repo = crate::github::RepoName::parse(&repo).map_err(|e| e.to_string())?;
            let gh = crate::github::GitHub::connect(&cfg, repo)
                .await
                .map_err(|e| e.to_string())?;
            let text = format!(
                "**cordon** ({}): {}\n\nDelivery `{}`.",
                if ok { "done" } else { "could not do it" },
                crate::github::pulls::truncate(&outcome.replace("<!--", "&lt;!--"), 4000),
                d.delivery_id
            );
            gh.sticky_comment(number, &text)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = said {
            warn!(delivery = %d.delivery_id, error = %e, "GitHub: cannot comment the outcome");
        }
    }

    async fn run_one(&self, d: &Delivery) -> Result<String, String> {
        use crate::github::tests_pr::{self, Delivered, On};
        use crate::github::webhook::Work;
        let chain = |e: &(dyn std::error::Error + 'static)| crate::error::error_chain(e);
        let work: Work = serde_json::from_str(d.work.as_deref().unwrap_or(""))
            .map_err(|e| format!("unreadable work: {e}"))?;
        let (Work::TestsForPr { repo, number } | Work::BuildIssue { repo, number }) = &work;
        let number = *number;
        let cfg = self.section.client_config().map_err(|e| chain(&e))?;
        let repo = crate::github::RepoName::parse(repo).map_err(|e| chain(&e))?;
        let llm =
            crate::pipeline::llm::Llm::new(crate::pipeline::llm::LlmConfig::from_env(None, None))
                .map_err(|e| chain(&e))?;
        let id = d.delivery_id.clone();
        let progress: crate::pipeline::Progress =
            Arc::new(move |l: &str| info!(delivery = %id, "{l}"));
        if let Work::BuildIssue { .. } = work {
            return self.build(d, &cfg, repo, number, &llm, progress).await;
        }
        let r = tests_pr::run(
            &cfg,
            tests_pr::Target {
                repo: repo.clone(),
                on: On::PullRequest(number),
                policy: &self.policy,
            },
            crate::pipeline::Options::default(),
            &llm,
            self.svc.stopping().child_token(),
            progress,
        )
        .await
        .map_err(|e| chain(&e))?;
        Ok(match r.delivered {
            Delivered::NothingPushed(why) => format!("{repo}#{number}: nothing pushed: {why}"),
            Delivered::PullRequest { url, promoted, .. } => {
                format!("{repo}#{number}: tests in {url} ({})", state(promoted))
            }
        })
    }

    /// Flow 2 on an issue; the builder comments on the issue itself.
    async fn build(
        &self,
        d: &Delivery,
        cfg: &crate::github::GitHubConfig,
        repo: crate::github::RepoName,
        number: u64,
        llm: &crate::pipeline::llm::Llm,
        progress: crate::pipeline::Progress,
    ) -> Result<String, String> {
        use crate::github::builder;
        let req = builder::Request {
            repo: repo.clone(),
            issue: number,
            policy: &self.policy,
            warm_pool: self.section.builder_warm_pool as usize,
            timeout: self.section.builder_timeout.0,
            trigger: Some(d.delivery_id.clone()),
        };
        let b = builder::run(cfg, req, llm, self.svc.stopping().child_token(), progress)
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        Ok(match (b.url(), b.nothing_pushed()) {
            (Some(url), _) => format!("{repo}#{number}: built in {url} ({})", state(b.promoted())),
            (None, why) => format!("{repo}#{number}: nothing pushed: {}", why.unwrap_or("")),
        })
    }
}

/// A delivered pull request's state, for the delivery's outcome.
fn state(promoted: bool) -> &'static str {
    if promoted {
        "ready for review"
    } else {
        "draft"
    }
}
