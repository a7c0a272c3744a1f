//! GitHub's REST and GraphQL API through octocrab: authentication (a token, or a GitHub App's
//! installation token minted from its id and private key), the base URL (`GITHUB_API_URL`, for
//! GitHub Enterprise and the tests), and one request path that turns every status into a
//! typed error, retrying server errors and secondary rate limits (`Retry-After`).

use std::time::Duration;

use octocrab::Octocrab;
use octocrab::secrecy::ExposeSecret;
use serde_json::Value;
use tracing::{debug, warn};

use super::secret::Secret;

/// api.github.com, unless `GITHUB_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How cordon proves who it is to GitHub.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A fine-grained or classic personal access token (or an Actions token).
    Token(Secret),
    /// A GitHub App: its id and private key (PEM); each repository's installation token is
    /// minted from them.
    App { app_id: u64, private_key: Secret },
}

/// Where GitHub is and how to sign in.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    pub api_url: String,
    pub credentials: Credentials,
    /// Attempts for a request that fails with a server error or a secondary rate limit.
    pub attempts: u32,
    /// The wait before the second attempt after a server error (doubling after).
    pub backoff: Duration,
    /// The longest `Retry-After` cordon waits out; a longer one fails the request.
    pub max_retry_after: Duration,
}

impl GitHubConfig {
    pub fn new(api_url: Option<String>, credentials: Credentials) -> GitHubConfig {
        GitHubConfig {
            api_url: api_url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_API_URL.into())
                .trim_end_matches('/')
                .to_string(),
            credentials,
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(120),
        }
    }

    /// From the environment: `GITHUB_API_URL`; `GITHUB_TOKEN`, or `GITHUB_APP_ID` with
    /// `GITHUB_APP_PRIVATE_KEY_FILE`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<GitHubConfig, GitHubError> {
        let credentials = match (get("GITHUB_TOKEN"), get("GITHUB_APP_ID")) {
            (Some(t), _) if !t.trim().is_empty() => Credentials::Token(Secret::new(t.trim())),
            (_, Some(id)) => {
                let app_id = id.trim().parse().map_err(|_| GitHubError::Config {
                    field: "GITHUB_APP_ID".into(),
                    reason: format!(
                        "`{id}` is not a number (the App's id, from its settings page)"
                    ),
                })?;
                let path =
                    get("GITHUB_APP_PRIVATE_KEY_FILE").ok_or_else(|| GitHubError::Config {
                        field: "GITHUB_APP_PRIVATE_KEY_FILE".into(),
                        reason: "GITHUB_APP_ID needs the App's private key (.pem) file".into(),
                    })?;
                let private_key =
                    Secret::from_file(path.as_ref()).map_err(|e| GitHubError::Config {
                        field: "GITHUB_APP_PRIVATE_KEY_FILE".into(),
                        reason: format!("{path}: {e}"),
                    })?;
                Credentials::App {
                    app_id,
                    private_key,
                }
            }
            _ => {
                return Err(GitHubError::Config {
                    field: "GITHUB_TOKEN".into(),
                    reason: "set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE"
                        .into(),
                });
            }
        };
        Ok(GitHubConfig::new(get("GITHUB_API_URL"), credentials))
    }
}

/// A repository's `owner/name`, checked so it is safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, GitHubError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.len() <= 100
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(RepoName {
                owner: o.into(),
                name: n.trim_end_matches(".git").into(),
            }),
            _ => Err(GitHubError::Config {
                field: "REPO".into(),
                reason: format!("`{s}` is not OWNER/NAME (like `octo-org/hello-world`)"),
            }),
        }
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A request GitHub did not do. Each names what was asked and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    #[error(
        "{what}: GitHub refused the credentials (401: {message}); check the token, or the App's id and private key"
    )]
    Unauthorized { what: String, message: String },
    #[error(
        "{what}: forbidden (403: {message}); the token or App lacks a permission (contents, pull requests, issues, checks: write)"
    )]
    Forbidden { what: String, message: String },
    #[error(
        "{what}: not found (404); the repository is missing, or the token or App cannot see it"
    )]
    NotFound { what: String },
    #[error("{what}: GitHub refused the request (422: {message})")]
    Invalid { what: String, message: String },
    #[error("{what}: rate limited by GitHub{}; try again later", retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default())]
    RateLimited {
        what: String,
        retry_after: Option<u64>,
    },
    #[error("{what}: GitHub answered {status} after {attempts} attempts: {message}")]
    Server {
        what: String,
        status: u16,
        attempts: u32,
        message: String,
    },
    #[error("{what}: GitHub answered {status}: {message}")]
    Unexpected {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: cannot reach GitHub: {message}")]
    Transport { what: String, message: String },
    #[error("git {what}: {message}")]
    Git { what: String, message: String },
}

impl GitHubError {
    /// The HTTP status GitHub answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Unauthorized { .. } => Some(401),
            GitHubError::Forbidden { .. } => Some(403),
            GitHubError::NotFound { .. } => Some(404),
            GitHubError::Invalid { .. } => Some(422),
            GitHubError::Server { status, .. } | GitHubError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A signed-in client for one repository.
pub struct GitHub {
    crab: Octocrab,
    /// GitHub Enterprise serves GraphQL at `/api/graphql`, beside (not under) `/api/v3`: a
    /// client for that base, when it differs.
    gql: Option<Octocrab>,
    /// The token git pushes with (the installation token for an App).
    token: Secret,
    pub repo: RepoName,
    cfg: GitHubConfig,
    /// The login cordon's comments carry (`<app-slug>[bot]` for an App), once known.
    login: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.cfg.api_url)
            .field("repo", &self.repo)
            .field("token", &self.token)
            .finish()
    }
}

fn transport(what: &str) -> impl FnOnce(octocrab::Error) -> GitHubError + '_ {
    move |e| GitHubError::Transport {
        what: what.into(),
        message: e.to_string(),
    }
}

impl GitHub {
    /// Signs in for `repo`: with the token as given, or as the App's installation on `repo`
    /// (`GET /repos/{owner}/{repo}/installation`, then an installation token).
    pub async fn connect(cfg: &GitHubConfig, repo: RepoName) -> Result<GitHub, GitHubError> {
        let builder = Octocrab::builder()
            .base_uri(cfg.api_url.as_str())
            .map_err(|e| GitHubError::Config {
                field: "GITHUB_API_URL".into(),
                reason: format!("`{}` is not a URL: {e}", cfg.api_url),
            })?;
        let what = format!("signing in for {repo}");
        let (crab, token) = match &cfg.credentials {
            Credentials::Token(t) => (
                builder
                    .personal_token(t.expose().to_string())
                    .build()
                    .map_err(transport(&what))?,
                t.clone(),
            ),
            Credentials::App {
                app_id,
                private_key,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key.expose().as_bytes())
                    .map_err(|e| GitHubError::Config {
                        field: "private_key".into(),
                        reason: format!("not an RSA private key in PEM form: {e}"),
                    })?;
                let app = builder
                    .app(octocrab::models::AppId(*app_id), key)
                    .build()
                    .map_err(transport(&what))?;
                let probe = GitHub {
                    crab: app.clone(),
                    gql: None,
                    token: Secret::new(""),
                    repo: repo.clone(),
                    cfg: cfg.clone(),
                    login: tokio::sync::OnceCell::new(),
                };
                let me = probe.call("GET", "/app", None, "reading the App").await?;
                let slug = me["slug"].as_str().unwrap_or_default().to_string();
                let inst = probe
                    .call(
                        "GET",
                        &format!("/repos/{repo}/installation"),
                        None,
                        "finding the App's installation",
                    )
                    .await?;
                let id = inst["id"].as_u64().ok_or_else(|| GitHubError::Unexpected {
                    what: what.clone(),
                    status: 200,
                    message: "the installation has no id".into(),
                })?;
                let (crab, token) = app
                    .installation_and_token(octocrab::models::InstallationId(id))
                    .await
                    .map_err(|e| app_error(&what, e))?;
                let login = tokio::sync::OnceCell::new();
                let _ = login.set(format!("{slug}[bot]"));
                let token = Secret::new(token.expose_secret().to_string());
                return Ok(GitHub {
                    crab,
                    gql: graphql_client(cfg, &token)?,
                    token,
                    repo,
                    cfg: cfg.clone(),
                    login,
                });
            }
        };
        Ok(GitHub {
            crab,
            gql: graphql_client(cfg, &token)?,
            token,
            repo,
            cfg: cfg.clone(),
            login: tokio::sync::OnceCell::new(),
        })
    }

    /// The login cordon acts as: the App's `<slug>[bot]`, or the token's user (`GET /user`).
    pub async fn login(&self) -> Result<&str, GitHubError> {
        self.login
            .get_or_try_init(|| async {
                let me = self
                    .call("GET", "/user", None, "reading who the token is")
                    .await?;
                me["login"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| GitHubError::Unexpected {
                        what: "reading who the token is".into(),
                        status: 200,
                        message: "no `login`".into(),
                    })
            })
            .await
            .map(String::as_str)
    }

    /// The token for git (never put in a URL: see [`super::git`]).
    pub fn git_token(&self) -> &Secret {
        &self.token
    }

    /// One API request with retries; the parsed JSON answer (`null` for an empty body).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, GitHubError> {
        let mut backoff = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let crab = match &self.gql {
                Some(gql) if path == "/graphql" => gql,
                _ => &self.crab,
            };
            let sent = match method {
                "GET" => crab._get(path).await,
                "POST" => crab._post(path, body).await,
                "PATCH" => crab._patch(path, body).await,
                "PUT" => crab._put(path, body).await,
                other => {
                    return Err(GitHubError::Config {
                        field: "method".into(),
                        reason: format!("{other} is not used"),
                    });
                }
            };
            let resp = sent.map_err(|e| GitHubError::Transport {
                what: what.into(),
                message: self.token.scrub(&e.to_string()),
            })?;
            let status = resp.status().as_u16();
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after: Option<u64> = header("retry-after")
                .and_then(|v| crate::retry::parse_retry_after(&v, std::time::SystemTime::now()))
                .map(|d| d.as_secs());
            let remaining = header("x-ratelimit-remaining");
            let text = self
                .crab
                .body_to_string(resp)
                .await
                .map_err(transport(what))?;
            debug!(method, path, status, "GitHub answered");
            if (200..300).contains(&status) {
                return Ok(if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| GitHubError::Unexpected {
                        what: what.into(),
                        status,
                        message: format!("not JSON: {e}"),
                    })?
                });
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect());
            let message = self.token.scrub(&message);
            let secondary = (status == 403 || status == 429)
                && (retry_after.is_some()
                    || message.to_lowercase().contains("secondary rate limit"));
            let primary = (status == 403 || status == 429) && remaining.as_deref() == Some("0");
            if secondary && !primary {
                let wait = Duration::from_secs(retry_after.unwrap_or(60));
                if attempt < self.cfg.attempts && wait <= self.cfg.max_retry_after {
                    warn!(
                        what,
                        wait_s = wait.as_secs(),
                        "GitHub's secondary rate limit: waiting as Retry-After says"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(GitHubError::RateLimited {
                    what: what.into(),
                    retry_after,
                });
            }
            if primary {
                return Err(GitHubError::RateLimited {
                    what: what.into(),
                    retry_after,
                });
            }
            if status >= 500 {
                if attempt < self.cfg.attempts {
                    warn!(what, status, attempt, "GitHub server error: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    continue;
                }
                return Err(GitHubError::Server {
                    what: what.into(),
                    status,
                    attempts: attempt,
                    message,
                });
            }
            return Err(status_error(status, what, message));
        }
    }

    /// A GraphQL request; GraphQL's own `errors` are an error too.
    pub async fn graphql(
        &self,
        query: &str,
        variables: Value,
        what: &str,
    ) -> Result<Value, GitHubError> {
        let body = serde_json::json!({ "query": query, "variables": variables });
        let v = self.call("POST", "/graphql", Some(&body), what).await?;
        if let Some(errs) = v["errors"].as_array().filter(|e| !e.is_empty()) {
            let msgs: Vec<&str> = errs.iter().filter_map(|e| e["message"].as_str()).collect();
            return Err(GitHubError::Invalid {
                what: what.into(),
                message: msgs.join("; "),
            });
        }
        Ok(v["data"].clone())
    }
}

/// The error for a final (not retried) non-2xx answer.
fn status_error(status: u16, what: &str, message: String) -> GitHubError {
    let what = what.to_string();
    match status {
        401 => GitHubError::Unauthorized { what, message },
        403 => GitHubError::Forbidden { what, message },
        404 => GitHubError::NotFound { what },
        422 => GitHubError::Invalid { what, message },
        _ => GitHubError::Unexpected {
            what,
            status,
            message,
        },
    }
}

/// Where `/graphql` is: `https://HOST/api` for GitHub Enterprise's `https://HOST/api/v3`,
/// else the API's own base.
pub fn graphql_base(api_url: &str) -> &str {
    api_url.strip_suffix("/v3").unwrap_or(api_url)
}

fn graphql_client(cfg: &GitHubConfig, token: &Secret) -> Result<Option<Octocrab>, GitHubError> {
    let base = graphql_base(&cfg.api_url);
    if base == cfg.api_url {
        return Ok(None);
    }
    let crab = Octocrab::builder()
        .base_uri(base)
        .map_err(|e| GitHubError::Config {
            field: "GITHUB_API_URL".into(),
            reason: format!("`{base}` is not a URL: {e}"),
        })?
        .personal_token(token.expose().to_string())
        .build()
        .map_err(transport("making the GraphQL client"))?;
    Ok(Some(crab))
}

fn app_error(what: &str, e: octocrab::Error) -> GitHubError {
    match &e {
        octocrab::Error::GitHub { source, .. } => {
            let message = source.message.clone();
            match source.status_code.as_u16() {
                401 => GitHubError::Unauthorized {
                    what: what.into(),
                    message,
                },
                403 => GitHubError::Forbidden {
                    what: what.into(),
                    message,
                },
                404 => GitHubError::NotFound { what: what.into() },
                s => GitHubError::Unexpected {
                    what: what.into(),
                    status: s,
                    message,
                },
            }
        }
        _ => GitHubError::Transport {
            what: what.into(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_checked() {
        assert_eq!(
            RepoName::parse("octo/hello.git").expect("ok").to_string(),
            "octo/hello"
        );
        for bad in ["octo", "../x", "o/..", "o/r/x", "o/r?x=1", "/r", "o/ r"] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enterprise_graphql_is_beside_v3() {
        assert_eq!(
            graphql_base("https://ghe.example.com/api/v3"),
            "https://ghe.example.com/api"
        );
        assert_eq!(
            graphql_base("https://api.github.com"),
            "https://api.github.com"
        );
    }

    #[test]
    fn config_from_env_never_shows_the_token() {
        let env = |k: &str| match k {
            "GITHUB_TOKEN" => Some("ghp_supersecret123".to_string()),
            "GITHUB_API_URL" => Some("http://127.0.0.1:9/api/v3/".to_string()),
            _ => None,
        };
        let c = GitHubConfig::from_env(env).expect("config");
        assert_eq!(c.api_url, "http://127.0.0.1:9/api/v3");
        assert!(!format!("{c:?}").contains("supersecret"));
        let e = GitHubConfig::from_env(|_| None).expect_err("no credentials");
        assert!(e.to_string().contains("GITHUB_TOKEN"), "{e}");
    }
}
