//! The web page `cordon serve` serves at `/`: the job list, a job's page (its output as it
//! runs, its result, artifacts, the sandbox the engine recorded, a cancel button) and the
//! sign-in page.
//!
//! - **Pages and assets** are static files embedded in the binary (`assets/`), served with a
//!   strict Content-Security-Policy: no inline script, nothing from another origin. The pages
//!   hold no data; their scripts read it from the API with `fetch()` and put everything a
//!   submitter controls into the page as text (`textContent`), never as HTML.
//! - **Sign-in** takes a token (`POST /web/session`, JSON) and opens a server-side session
//!   ([`session::Sessions`]): an `HttpOnly`, `SameSite=Strict` cookie, `Secure` when
//!   `web.secure_cookie` says browsers use https. A token never travels in a URL.
//! - **The API with a cookie.** The API's `auth` middleware takes a session cookie where a
//!   request has no `Authorization` header ([`cookie_caller`]); a state-changing request
//!   (anything but `GET`/`HEAD`) must then also carry the session's CSRF token in
//!   `X-Cordon-CSRF`, which only the service's own pages can read. The front door's
//!   cross-site refusal stays in front of all of it.

pub(crate) mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tracing::{info, warn};

use super::access::{self, Caller, Tokens};
use super::api::error;
use super::config::WebConfig;
use session::Sessions;

/// The session cookie's name over plain HTTP, before `_<port>`: browsers keep cookies per
/// host name, not per port, so the port the service is bound to keeps two services on one
/// host from overwriting each other's.
pub const SESSION_COOKIE: &str = "cordon_session";
/// Its prefix with `web.secure_cookie`: the `__Host-` prefix makes browsers refuse it unless
/// it is `Secure`, has `Path=/` and no `Domain`, so a sibling host cannot plant one.
pub const SECURE_PREFIX: &str = "__Host-";
/// The header carrying a session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-cordon-csrf";

/// The web routes, as (method, path): not part of the API contract (`openapi.yaml`), see
/// `docs/server.md`, "The web page".
pub const WEB_ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/sign-in"),
    ("get", "/jobs/{id}"),
    ("get", "/assets/{file}"),
    ("get", "/web/session"),
    ("post", "/web/session"),
    ("delete", "/web/session"),
];

/// The Content-Security-Policy of every response: scripts, styles and connections from the
/// service itself only, no plugins, no `<base>`, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ctype:expr) => {
        Asset {
            name: $name,
            content_type: $ctype,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("job.html", "text/html; charset=utf-8"),
    asset!("sign-in.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("common.js", JS),
    asset!("list.js", JS),
    asset!("job.js", JS),
    asset!("sign-in.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Whether `path` is one of the static pages or assets. A `GET` of one is not refused for
/// coming from another site (a link to a job's page in a chat or a CI log must open): it
/// holds no data, cannot be framed, and `SameSite=Strict` keeps the cookie off such a
/// navigation. Its `Host` is still checked.
pub(crate) fn is_static(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD)
        && (path == "/"
            || path == "/sign-in"
            || path.starts_with("/jobs/")
            || path.starts_with("/assets/"))
}

/// The browser-session side of the service.
pub(crate) struct Web {
    sessions: Sessions,
    secure: bool,
    cookie_name: String,
    tokens: Arc<Tokens>,
}

impl Web {
    /// Sessions for a service bound to `port` (in the cookie's name).
    pub(crate) fn new(config: &WebConfig, tokens: Arc<Tokens>, port: u16) -> Web {
        let prefix = if config.secure_cookie {
            SECURE_PREFIX
        } else {
            ""
        };
        Web {
            sessions: Sessions::new(config.session_ttl.0, config.max_sessions),
            secure: config.secure_cookie,
            cookie_name: format!("{prefix}{SESSION_COOKIE}_{port}"),
            tokens,
        }
    }

    fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn cookie(&self, value: &str, max_age_secs: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session cookie's value in `headers`: `Ok(None)` without one, an error when it is
    /// sent more than once (a planted cookie beside the real one: neither is trusted).
    fn cookie_value<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, ()> {
        let name = self.cookie_name();
        let mut found = None;
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((n, value)) = pair.trim().split_once('=')
                    && n == name
                {
                    if found.is_some() {
                        return Err(());
                    }
                    found = Some(value);
                }
            }
        }
        Ok(found)
    }
}

/// What a request's session cookie makes of it, for the API's `auth` middleware.
pub(crate) enum CookieAuth {
    /// No session cookie: the request needs a bearer token.
    None,
    Caller(Caller),
    /// A cookie that is no session (expired, signed out, its token gone), or a
    /// state-changing request without its session's CSRF token.
    Refused(Response),
}

fn unsigned(message: &str) -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{message}; sign in again at /sign-in"),
    )
}

/// Who a request without an `Authorization` header acts as, by its session cookie. Every
/// method but `GET` and `HEAD` also needs the session's CSRF token in `X-Cordon-CSRF`
/// (compared in constant time): a form or script of another site can make a browser send the
/// cookie (were the front door and `SameSite` both to fail), never that header's value.
pub(crate) fn cookie_caller(web: &Web, method: &Method, headers: &HeaderMap) -> CookieAuth {
    let id = match web.cookie_value(headers) {
        Ok(None) => return CookieAuth::None,
        Ok(Some(id)) => id,
        Err(()) => {
            return CookieAuth::Refused(unsigned(&format!(
                "the request carries more than one `{}` cookie",
                web.cookie_name()
            )));
        }
    };
    let Some(s) = web.sessions.get(id) else {
        return CookieAuth::Refused(unsigned("the browser session has expired or ended"));
    };
    let Some(caller) = web.tokens.by_digest(&s.token) else {
        return CookieAuth::Refused(unsigned(
            "the token this browser session signed in with is no longer configured",
        ));
    };
    if *method != Method::GET && *method != Method::HEAD {
        let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !access::csrf_matches(&s.csrf, given) {
            return CookieAuth::Refused(error(
                StatusCode::FORBIDDEN,
                "csrf",
                format!(
                    "refused: a {method} with a browser session needs the session's CSRF token in `X-Cordon-CSRF` (the service's own pages send it); a form or script of another site cannot. API clients send `Authorization: Bearer TOKEN` instead"
                ),
            ));
        }
    }
    CookieAuth::Caller(caller)
}

/// The web routes: pages, assets and the session endpoints.
pub(crate) fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(|| async { page("index.html") }))
        .route("/sign-in", get(|| async { page("sign-in.html") }))
        .route("/jobs/{id}", get(|| async { page("job.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { page(&file) }),
        )
        .route(
            "/web/session",
            get(current)
                .post(sign_in)
                .delete(sign_out)
                .layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .with_state(web)
}

fn page(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// Adds the browser-facing security headers to every response (API ones too): the CSP,
/// `nosniff` (an artifact or an event stream is never sniffed into HTML), no referrer (a
/// job's URL does not leak to a link's target), no framing, and a window of its own.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn session_body(caller: &Caller, csrf: &str, expires_in_s: u64) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "name": caller.name,
            "admin": caller.admin,
            "csrf": csrf,
            "expires_in_s": expires_in_s,
        })),
    )
        .into_response()
}

/// `GET /web/session`: who the browser is signed in as, and the CSRF token its page sends.
async fn current(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let id = match web.cookie_value(&headers) {
        Ok(Some(id)) => id,
        Ok(None) => return unsigned("this browser is not signed in"),
        Err(()) => return unsigned("the request carries more than one session cookie"),
    };
    match web.sessions.get(id) {
        Some(s) => match web.tokens.by_digest(&s.token) {
            Some(caller) => session_body(&caller, &s.csrf, s.expires_in.as_secs()),
            None => unsigned("the token this session signed in with is no longer configured"),
        },
        None => unsigned("the browser session has expired or ended"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /web/session` with `{"token": "..."}` (JSON only: a plain HTML form of another site
/// cannot send it): opens a session and sets its cookie.
async fn sign_in(State(web): State<Arc<Web>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with `application/json`: {\"token\": \"...\"} (the sign-in page does this; it needs JavaScript)",
        );
    }
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be {\"token\": \"...\"}",
        );
    };
    let Some((caller, digest)) = web.tokens.identify(token.trim()) else {
        warn!("web sign-in with a token that is not one of the service's");
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not one of this service's tokens: paste the content of the token file (`<data_dir>/token` unless the operator configured others)",
        );
    };
    let opened = match web.sessions.open(digest) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    info!(token = %caller.name, "web sign-in");
    let ttl = web.sessions.ttl().as_secs();
    let mut r = session_body(&caller, &opened.csrf, ttl);
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut()
        .insert(header::SET_COOKIE, web.cookie(&opened.id, ttl));
    r
}

/// `DELETE /web/session` (with the CSRF token): ends the session and clears the cookie.
async fn sign_out(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let id = match web.cookie_value(&headers) {
        Ok(Some(id)) => id,
        Ok(None) => return unsigned("this browser is not signed in"),
        Err(()) => return unsigned("the request carries more than one session cookie"),
    };
    let Some(s) = web.sessions.get(id) else {
        return unsigned("the browser session has expired or ended");
    };
    let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !access::csrf_matches(&s.csrf, given) {
        return error(
            StatusCode::FORBIDDEN,
            "csrf",
            "refused: signing out needs the session's CSRF token in `X-Cordon-CSRF`",
        );
    }
    web.sessions.close(id);
    info!("web sign-out");
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, web.cookie("", 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerConfig;

    fn web(secure: bool) -> Web {
        let c = ServerConfig {
            token: Some("t".repeat(20)),
            ..ServerConfig::default()
        };
        let w = WebConfig {
            secure_cookie: secure,
            ..WebConfig::default()
        };
        Web::new(&w, Arc::new(Tokens::from_config(&c)), 8420)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_cookie_is_httponly_strict_and_secure_when_configured() {
        let plain = web(false).cookie("abc", 60);
        assert_eq!(
            plain,
            "cordon_session_8420=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let secure = web(true).cookie("abc", 60);
        assert_eq!(
            secure,
            "__Host-cordon_session_8420=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }

    #[test]
    fn a_cookie_request_acts_as_its_token_and_changes_need_the_csrf_token() {
        let w = web(false);
        let (_, d) = w.tokens.identify(&"t".repeat(20)).expect("known");
        let o = w.sessions.open(d).expect("open");
        let cookie = format!("other=1; cordon_session_9=x; cordon_session_8420={}", o.id);
        let ok = |m: Method, h: &HeaderMap| match cookie_caller(&w, &m, h) {
            CookieAuth::Caller(c) => Ok(c.name),
            CookieAuth::None => Err(0),
            CookieAuth::Refused(r) => Err(r.status().as_u16()),
        };
        let plain = headers(&[("cookie", &cookie)]);
        assert_eq!(ok(Method::GET, &plain), Ok("admin".into()));
        assert_eq!(ok(Method::DELETE, &plain), Err(403));
        assert_eq!(ok(Method::POST, &plain), Err(403));
        let wrong = headers(&[("cookie", &cookie), (CSRF_HEADER, "0".repeat(64).as_str())]);
        assert_eq!(ok(Method::POST, &wrong), Err(403));
        let right = headers(&[("cookie", &cookie), (CSRF_HEADER, &o.csrf)]);
        assert_eq!(ok(Method::DELETE, &right), Ok("admin".into()));
        assert_eq!(ok(Method::GET, &headers(&[])), Err(0));
        assert_eq!(
            ok(
                Method::GET,
                &headers(&[("cookie", "cordon_session_8420=nope")])
            ),
            Err(401)
        );
        let twice = headers(&[
            ("cookie", &cookie),
            ("cookie", &format!("cordon_session_8420={}", "a".repeat(64))),
        ]);
        assert_eq!(ok(Method::GET, &twice), Err(401), "a planted second cookie");
        w.sessions.close(&o.id);
        assert_eq!(ok(Method::GET, &plain), Err(401), "signed out");
    }

    #[test]
    fn every_asset_is_served_with_its_type() {
        for a in ASSETS {
            let r = page(a.name);
            assert_eq!(r.status(), 200, "{}", a.name);
            assert_eq!(r.headers()[header::CONTENT_TYPE], a.content_type);
        }
        assert_eq!(page("../Cargo.toml").status(), 404);
    }

    /// Nothing the pages load comes from elsewhere, and no page holds a script or a style
    /// of its own (the CSP would refuse both).
    #[test]
    fn pages_load_only_the_services_own_files() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            let html = std::str::from_utf8(a.body).expect("utf-8");
            assert!(
                !html.contains("http:") && !html.contains("https:"),
                "{}",
                a.name
            );
            assert!(!html.contains("<script>"), "{}: inline script", a.name);
            assert!(!html.contains("<style"), "{}: inline style", a.name);
            let handler = html.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "{}: an inline event handler", a.name);
            for src in html
                .split("src=\"")
                .skip(1)
                .chain(html.split("href=\"").skip(1))
            {
                let target = src.split('"').next().unwrap_or("");
                assert!(target.starts_with('/'), "{}: {target}", a.name);
            }
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).expect("utf-8");
            assert!(!js.contains("innerHTML"), "{}: innerHTML", a.name);
            assert!(!js.contains("insertAdjacentHTML"), "{}", a.name);
            assert!(!js.contains("document.write"), "{}", a.name);
        }
    }
}
