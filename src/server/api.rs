//! The HTTP API: handlers that only parse requests into calls on the [`Service`] and turn its
//! answers (and errors) into responses. The contract is `openapi.yaml` at the repository's
//! top level, served at `/v1/openapi.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, Multipart, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;
use tracing::warn;

use super::access::{self, Caller, Header, ServerNames, Tokens};
use super::listing::ListQuery;
use super::queue::{Service, ServiceError};
use super::upload::UploadError;
use super::web::{self, CookieAuth, Web};

/// The OpenAPI document, checked in at the repository's top level.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// Every route the router serves, as (method, OpenAPI path). A test checks `openapi.yaml`
/// documents each, and that the router answers each.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.yaml"),
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("delete", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/events"),
    ("get", "/v1/jobs/{id}/artifacts"),
    ("get", "/v1/jobs/{id}/artifacts/{path}"),
    // Only with a `github:` section (`server::github_hook`); no bearer token, a signature.
    ("post", "/v1/github/webhook"),
];

/// The routes a browser-context request and a missing token do not stop: Kubernetes probes
/// send the pod's IP as `Host` and no token.
const PROBES: &[&str] = &["/healthz", "/readyz"];

#[derive(Clone)]
struct App {
    svc: Service,
    tokens: Arc<Tokens>,
    names: Arc<ServerNames>,
    web: Arc<Web>,
}

/// The service's router, for a service bound to `bound` (the default `server_names` carry its
/// port). Probes (`/healthz`, `/readyz`) are open; every other route refuses browser-context
/// requests (`403`, see [`access::front_door`]; a `GET` of a static page only for its
/// `Host`) and then needs a bearer token or a browser session (`401`). The web page's
/// routes are [`web::router`]'s. Every response carries the browser-facing security headers
/// ([`web::security_headers`]).
pub fn router(svc: Service, bound: SocketAddr) -> Router {
    let tokens = Arc::new(Tokens::from_config(svc.config()));
    let app = App {
        web: Arc::new(Web::new(&svc.config().web, tokens.clone(), bound.port())),
        tokens,
        names: Arc::new(ServerNames::new(&svc.config().server_names, bound)),
        svc: svc.clone(),
    };
    let limit = svc.config().max_upload.bytes() as usize;
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/openapi.yaml", get(openapi))
        .route(
            "/v1/jobs",
            get(list).post(submit).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/jobs/{id}", get(status).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/artifacts", get(artifacts))
        .route("/v1/jobs/{id}/artifacts/{*path}", get(artifact))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(protected)
        .merge(super::github_hook::routes(&svc))
        .with_state(app.clone())
        .merge(web::router(app.web.clone()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(app, front_door))
        .layer(middleware::from_fn(web::security_headers))
}

pub(super) fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": { "kind": kind, "message": message.to_string() } });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let msg = crate::error::error_chain(&self);
        match &self {
            ServiceError::Invalid(UploadError::Io(_)) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
            ServiceError::Invalid(UploadError::Workspace(_)) => {
                error(StatusCode::BAD_REQUEST, "upload_refused", msg)
            }
            ServiceError::Invalid(_) => error(StatusCode::BAD_REQUEST, "invalid_spec", msg),
            ServiceError::Preflight(_) => {
                error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", msg)
            }
            ServiceError::QueueFull { retry_after, .. } => {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "queue_full", msg);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                r
            }
            ServiceError::ShuttingDown => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", msg);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(10u64));
                r
            }
            ServiceError::KeyReused(_) => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                msg,
            ),
            ServiceError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", msg),
            ServiceError::Engine(_) => error(StatusCode::SERVICE_UNAVAILABLE, "engine", msg),
            ServiceError::Store(_) | ServiceError::Internal(_) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

/// One header's value for [`access::front_door`]: absent, one readable value, or unreadable
/// (not visible ASCII, or sent more than once).
fn one_header<'a>(headers: &'a HeaderMap, name: &str) -> Header<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Header::Absent,
        (Some(v), None) => v.to_str().map_or(Header::Unreadable, Header::Value),
        (Some(_), Some(_)) => Header::Unreadable,
    }
}

/// Refuses requests from a browser context (another site's page, a rebound DNS name) with
/// `403`, before the token is even looked at. Probes pass.
async fn front_door(State(app): State<App>, req: Request, next: Next) -> Response {
    if PROBES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let headers = req.headers();
    // A static page may be opened from a link on another site; its Host is still checked.
    let page = web::is_static(req.method(), req.uri().path());
    let (origin, fetch_site) = if page {
        (Header::Absent, Header::Absent)
    } else {
        (
            one_header(headers, header::ORIGIN.as_str()),
            one_header(headers, "sec-fetch-site"),
        )
    };
    // HTTP/2 carries the host in the URI's authority instead of a Host header.
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = match one_header(headers, header::HOST.as_str()) {
        Header::Absent => authority.map_or(Header::Absent, Header::Value),
        h => h,
    };
    let verdict = access::front_door(&app.names, host, origin, fetch_site);
    match verdict {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            warn!(
                method = %req.method(),
                path = %req.uri().path(),
                header = refusal.header,
                server_names = %app.names.describe(),
                "refused a browser-context request: {}",
                refusal.message
            );
            error(StatusCode::FORBIDDEN, "forbidden", refusal.message)
        }
    }
}

/// Finds whose bearer token the request carries (`401` if nobody's) and hands the handlers
/// that [`Caller`]. A request without an `Authorization` header may instead carry a browser
/// session's cookie (and, to change anything, its CSRF token: [`web::cookie_caller`]).
/// Nothing is read from the query string.
async fn auth(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION);
    if authorization.is_none() {
        match web::cookie_caller(&app.web, req.method(), req.headers()) {
            CookieAuth::None => {}
            CookieAuth::Caller(caller) => {
                req.extensions_mut().insert(caller);
                return next.run(req).await;
            }
            CookieAuth::Refused(r) => return r,
        }
    }
    let given = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(caller) = given.and_then(|g| app.tokens.check(g)) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer TOKEN); `cordon submit` takes it with --token-file or --token. With no token configured, the service generated one: its path is printed when `cordon serve` starts (<data_dir>/token)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn ready(State(app): State<App>) -> Response {
    if app.svc.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is shutting down",
        );
    }
    match app.svc.ready().await {
        Ok(()) => "ready\n".into_response(),
        // Not ready is 503 whatever did not answer (a probe restarts nothing on a 503).
        Err(e @ (ServiceError::Store(_) | ServiceError::Internal(_))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            crate::error::error_chain(&e),
        ),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(app): State<App>, Extension(caller): Extension<Caller>) -> Response {
    if !caller.admin {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`/metrics` needs an admin token, and token `{}` is not one (`admin: true` in its `tokens` entry)",
                caller.name
            ),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.svc.metrics_text().await,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// `POST /v1/jobs`: `multipart/form-data` with a `spec` part (YAML or JSON) and an optional
/// `workspace` part (tar.gz); or just the spec as an `application/json` / `application/yaml`
/// body.
async fn submit(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let idempotency_key = match idempotency_key(req.headers()) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let limit = app.svc.config().max_upload.bytes();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit
    {
        // Read (and drop) what the client is sending before answering, within reason: a
        // client still writing when the connection closes never sees the 413.
        if len <= limit.saturating_mul(4) {
            let mut body = req.into_body().into_data_stream();
            while let Some(Ok(_)) = body.next().await {}
        }
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request body is {len} bytes, over the service's max_upload of {}",
                app.svc.config().max_upload
            ),
        );
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (spec, workspace) = if ctype.starts_with("multipart/form-data") {
        let mut mp = match Multipart::from_request(req, &()).await {
            Ok(m) => m,
            Err(e) => return error(e.status(), "bad_request", e.body_text()),
        };
        let mut spec = None;
        let mut workspace = None;
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return multipart_error(e),
            };
            let name = field.name().unwrap_or("").to_string();
            let data = match field.bytes().await {
                Ok(d) => d,
                Err(e) => return multipart_error(e),
            };
            match name.as_str() {
                "spec" if spec.is_none() => match String::from_utf8(data.to_vec()) {
                    Ok(s) => spec = Some(s),
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_spec",
                            "the `spec` part is not UTF-8 text",
                        );
                    }
                },
                "workspace" if workspace.is_none() => workspace = Some(data),
                "spec" | "workspace" => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("the `{name}` part appears twice"),
                    );
                }
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!(
                            "unknown part `{other}`: a submission has a `spec` part and optionally a `workspace` part"
                        ),
                    );
                }
            }
        }
        let Some(spec) = spec else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the submission has no `spec` part",
            );
        };
        (spec, workspace)
    } else if ctype.starts_with("application/json")
        || ctype.starts_with("application/yaml")
        || ctype.starts_with("application/x-yaml")
        || ctype.starts_with("text/yaml")
    {
        let body = match Bytes::from_request(req, &()).await {
            Ok(b) => b,
            Err(e) => return error(e.status(), "bad_request", e.body_text()),
        };
        match String::from_utf8(body.to_vec()) {
            Ok(s) => (s, None),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_spec",
                    "the spec is not UTF-8 text",
                );
            }
        }
    } else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data (parts `spec` and `workspace`), application/json or application/yaml",
        );
    };
    match app
        .svc
        .submit(spec, workspace, &caller, idempotency_key)
        .await
    {
        Ok(st) => {
            let location = format!("/v1/jobs/{}", st.id);
            let mut r = (StatusCode::ACCEPTED, axum::Json(st)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

/// The client's `Idempotency-Key`: a retry with the same key (and the same submission) gets
/// the job the first attempt made, never a second one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let bad = || {
        "`Idempotency-Key`: send it once, as 1 to 255 visible ASCII characters (a UUID is fine)"
            .to_string()
    };
    match one_header(headers, "idempotency-key") {
        Header::Absent => Ok(None),
        Header::Unreadable => Err(bad()),
        Header::Value(v) => {
            if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad());
            }
            Ok(Some(v.to_string()))
        }
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> Response {
    let status = e.status();
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    error(status, kind, e.body_text())
}

/// `GET /v1/jobs`: a page of the caller's jobs (every job for an admin), newest first.
async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(pairs) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let query = match ListQuery::parse(&pairs) {
        Ok(q) => q,
        Err(bad) => {
            let body = serde_json::json!({ "error": {
                "kind": "bad_request",
                "message": bad.to_string(),
                "param": bad.param,
            } });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    match app.svc.list(&query, &caller).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn status(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match app.svc.status(&id, &caller).await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cancel(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match app.svc.cancel(&id, &caller, Duration::from_secs(20)).await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The first event offset to send (0 = from the beginning).
    from: Option<u64>,
    /// `ndjson` (default) or `sse`; `Accept: text/event-stream` also picks SSE.
    format: Option<String>,
}

async fn events(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let wants_sse = match q.format.as_deref() {
        Some("sse") => true,
        Some("ndjson") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown format `{other}`: use `ndjson` or `sse`"),
            );
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream")),
    };
    // An SSE client resuming sends the last id it saw.
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let from = q.from.or(last_id.map(|l| l + 1)).unwrap_or(0);
    let stream = match app.svc.events(&id, from, &caller).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if wants_sse {
        let s = stream.map(|ev| {
            Ok::<_, std::convert::Infallible>(Event::default().id(ev.seq.to_string()).data(ev.json))
        });
        Sse::new(s)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response()
    } else {
        let s = stream.map(|ev| {
            // `{"seq":N,` + the event's own fields.
            let body = ev.json.strip_prefix('{').unwrap_or(&ev.json);
            let sep = if body.starts_with('}') { "" } else { "," };
            Ok::<_, std::convert::Infallible>(Bytes::from(format!(
                "{{\"seq\":{}{sep}{body}\n",
                ev.seq
            )))
        });
        (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(s),
        )
            .into_response()
    }
}

async fn artifacts(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match app.svc.artifacts(&id, &caller).await {
        Ok(list) => {
            let items: Vec<_> = list
                .into_iter()
                .map(|(path, bytes)| serde_json::json!({ "path": path, "bytes": bytes }))
                .collect();
            axum::Json(serde_json::json!({ "artifacts": items })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn artifact(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    let file = match app.svc.artifact(&id, &path, &caller).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    match tokio::fs::File::open(&file).await {
        Ok(f) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                // Downloaded, never shown in the service's origin (an artifact is the
                // submitter's file: an HTML one must not run as the web page).
                (header::CONTENT_DISPOSITION, "attachment"),
            ],
            Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", e),
    }
}
