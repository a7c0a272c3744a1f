//! The service's configuration: a YAML file, then `CORDON_*` environment overrides.
//!
//! Every field has a default, so an empty file (or none) is a valid configuration: a service
//! on loopback whose token is generated at first start (see `super::access`). See
//! `docs/server.md` for the full, commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{Size, Span};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] crate::spec::SpecError),
    #[error("environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("invalid configuration: `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// What `cordon serve` reads from its config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// The names (`host` or `host:port`) clients reach the service by: a request whose `Host`
    /// is not one of them is refused (`403`). Empty (the default): the listen address's host,
    /// `localhost`, `127.0.0.1` and `[::1]`, with the port the service is bound to.
    pub server_names: Vec<String>,
    /// The admin token (named `admin`). Prefer `token_file` or `CORDON_TOKEN`. With no token
    /// configured at all, one is generated in `<data_dir>/token`.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// A file holding the admin token (trailing whitespace ignored): a Kubernetes secret mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// More tokens, each with a name: the jobs a token submits are its own; a token that is
    /// not `admin` sees and cancels only those, and cannot read `/metrics`.
    pub tokens: Vec<NamedToken>,
    /// Where the job store (`cordon.db`), uploaded workspaces and artifacts live.
    pub data_dir: PathBuf,
    /// Jobs running at once; default: the machine's cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Jobs waiting at most; a submission beyond it gets `429` and `Retry-After`.
    pub queue_capacity: usize,
    /// Largest request body accepted (spec plus compressed workspace).
    pub max_upload: Size,
    /// Largest unpacked workspace: total file bytes.
    pub max_workspace: Size,
    /// Most entries (files and directories) in an unpacked workspace.
    pub max_workspace_files: u64,
    /// Directories a spec may name as a server-side `workspace.source`. Empty: none; every
    /// job brings its workspace as an upload.
    pub workspace_roots: Vec<PathBuf>,
    /// Where `sandbox-profiles/NAME.yaml` is looked up; default: the current directory.
    /// Jobs name profiles only by name, never by path.
    pub profiles_dir: PathBuf,
    /// Finished jobs (store rows, workspaces, artifacts) older than this are deleted.
    pub retention: Span,
    /// On SIGTERM, how long running jobs may go on before they are cancelled.
    pub shutdown_grace: Span,
    /// Host variables a spec may ask for in `pass_env`. Empty (the default): none — a remote
    /// client must not read the service's environment.
    pub allow_pass_env: Vec<String>,
    /// Warm sandboxes kept ready per (image, profile, limits, …) key: a job whose key has one
    /// skips container creation. 0 (the default) turns the pool off. See `cordon::pool` for
    /// what it costs (idle resources, not isolation).
    pub warm_pool: usize,
    /// A key no job asked for in this long has its warm sandboxes removed.
    pub warm_pool_idle: Span,
    /// Warm sandboxes across all keys at most.
    pub warm_pool_max: usize,
    /// Whether a warm sandbox reads its image's library trees (its `org.cordon.warm` label)
    /// while it waits, so its job's first reads are not cold: `auto` (only on storage drivers
    /// without a page cache shared between containers, such as fuse-overlayfs), `on` or
    /// `off`. See `cordon::pool::Prewarm`.
    pub warm_pool_prewarm: crate::pool::Prewarm,
    /// The operator's policy: the most any job may ask for (limits, images, egress hosts,
    /// the CA bundle `ca_bundle: host` means, root). See `cordon::spec::OperatorPolicy`.
    pub policy: crate::spec::OperatorPolicy,
    /// The web page at `/`: browser sessions (see `super::web`).
    pub web: WebConfig,
    /// GitHub: the webhook (`POST /v1/github/webhook`) and the credentials its work uses.
    /// Absent: no webhook route.
    pub github: Option<GitHubSection>,
    /// The job store: `sqlite` (the default: `cordon.db` in `data_dir`, one controller) or a
    /// PostgreSQL URL, `postgres://USER:PASSWORD@HOST:5432/DB` (several controllers share
    /// its queue). Prefer `CORDON_STORE` (from a secret) over writing a password here.
    #[serde(skip_serializing)]
    pub store: String,
    /// This controller's name in the store and on its containers (`org.cordon.controller`).
    /// Default: the host name and a digest of the data directory, stable across restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_id: Option<String>,
    /// With PostgreSQL: how long a running job's claim lasts unless its controller renews
    /// it (every third of this). A controller silent for longer loses its jobs to another.
    pub lease: Span,
    /// With PostgreSQL: how many times a job whose controller was lost is run again.
    pub job_retries: u32,
    /// With PostgreSQL: the largest artifacts (compressed) kept in the database for the
    /// other controllers to serve; a job's larger artifacts stay on its controller's disk.
    pub max_stored_artifacts: Size,
}

/// The `github:` section. Secrets only by file, so the configuration can be shown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubSection {
    /// The webhook's secret (as typed into GitHub's webhook settings), at least 16 characters.
    pub webhook_secret_file: PathBuf,
    /// A token (personal or fine-grained) — or `app_id` with `private_key_file`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The GitHub App's id (its settings page).
    #[serde(default)]
    pub app_id: Option<u64>,
    /// The GitHub App's private key (.pem).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The API's URL: `https://api.github.com` unless GitHub Enterprise
    /// (`https://HOST/api/v3`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The labels that trigger cordon on a pull request or issue.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// The builder's warm containers for its suite runs (a delivery at a time, so 1 serves;
    /// 0 starts a fresh container for each run).
    #[serde(default = "default_builder_warm_pool")]
    pub builder_warm_pool: u32,
    /// How long the builder's one run of a repository's test command may take.
    #[serde(default = "default_builder_timeout")]
    pub builder_timeout: Span,
}

fn default_labels() -> Vec<String> {
    vec!["cordon".into()]
}

fn default_builder_warm_pool() -> u32 {
    1
}

fn default_builder_timeout() -> Span {
    Span(std::time::Duration::from_secs(300))
}

impl GitHubSection {
    /// Reads the webhook secret, refusing a short one.
    pub fn webhook_secret(&self) -> Result<crate::github::Secret, ConfigError> {
        let s = crate::github::Secret::from_file(&self.webhook_secret_file).map_err(|source| {
            ConfigError::Read {
                path: self.webhook_secret_file.clone(),
                source,
            }
        })?;
        if s.expose().len() < 16 {
            return Err(ConfigError::Invalid {
                field: "github.webhook_secret_file",
                reason: format!(
                    "{}: the secret is shorter than 16 characters; make one with `openssl rand -hex 32`",
                    self.webhook_secret_file.display()
                ),
            });
        }
        Ok(s)
    }

    /// The API client's settings: the token or App from their files, `api_url`.
    pub fn client_config(&self) -> Result<crate::github::GitHubConfig, ConfigError> {
        let read = |p: &PathBuf| {
            crate::github::Secret::from_file(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })
        };
        let credentials = match (&self.token_file, self.app_id, &self.private_key_file) {
            (Some(t), _, _) => crate::github::Credentials::Token(read(t)?),
            (None, Some(app_id), Some(k)) => crate::github::Credentials::App {
                app_id,
                private_key: read(k)?,
            },
            _ => {
                return Err(ConfigError::Invalid {
                    field: "github",
                    reason: "needs credentials: `token_file`, or `app_id` with `private_key_file`"
                        .into(),
                });
            }
        };
        Ok(crate::github::GitHubConfig::new(
            self.api_url.clone(),
            credentials,
        ))
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.webhook_secret()?;
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        match (&self.token_file, self.app_id, &self.private_key_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (None, None, None) => {
                return Err(invalid(
                    "github",
                    "needs credentials: `token_file`, or `app_id` with `private_key_file`".into(),
                ));
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(invalid(
                    "github.app_id",
                    "`app_id` and `private_key_file` go together".into(),
                ));
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "github.token_file",
                    "give `token_file` or `app_id` with `private_key_file`, not both".into(),
                ));
            }
        }
        for f in [&self.token_file, &self.private_key_file]
            .into_iter()
            .flatten()
        {
            std::fs::metadata(f).map_err(|source| ConfigError::Read {
                path: f.clone(),
                source,
            })?;
        }
        if self.labels.iter().any(|l| l.trim().is_empty()) {
            return Err(invalid("github.labels", "a label must not be empty".into()));
        }
        if self.builder_warm_pool > 8 {
            return Err(invalid(
                "github.builder_warm_pool",
                format!(
                    "{} warm containers for one delivery at a time; use 0 to 8",
                    self.builder_warm_pool
                ),
            ));
        }
        let t = self.builder_timeout.0;
        if t < std::time::Duration::from_secs(10) || t > std::time::Duration::from_secs(3 * 3600) {
            return Err(invalid(
                "github.builder_timeout",
                "must be between 10s and 3h (e.g. `5m`)".into(),
            ));
        }
        Ok(())
    }
}

/// The web page's settings: how long a browser session lasts, how many there may be, and
/// whether its cookie is `Secure`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// A browser session ends this long after its sign-in, whatever it did meanwhile.
    pub session_ttl: Span,
    /// Sessions at once across all tokens; signing in beyond it ends the oldest session.
    pub max_sessions: usize,
    /// Mark the session cookie `Secure` (and name it `__Host-cordon_session`): set it when
    /// browsers reach the service over https (a TLS-terminating proxy or ingress in front).
    /// The service itself speaks plain HTTP and does not guess from `X-Forwarded-Proto`.
    pub secure_cookie: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            session_ttl: Span(Duration::from_secs(12 * 3600)),
            max_sessions: 1000,
            secure_cookie: false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8420".into(),
            server_names: Vec::new(),
            token: None,
            token_file: None,
            tokens: Vec::new(),
            data_dir: PathBuf::from("cordon-data"),
            concurrency: None,
            queue_capacity: 1000,
            max_upload: Size::mib(64),
            max_workspace: Size::mib(512),
            max_workspace_files: 50_000,
            workspace_roots: Vec::new(),
            profiles_dir: PathBuf::from("."),
            retention: Span(Duration::from_secs(7 * 24 * 3600)),
            shutdown_grace: Span(Duration::from_secs(30)),
            allow_pass_env: Vec::new(),
            warm_pool: 0,
            warm_pool_idle: Span(Duration::from_secs(600)),
            warm_pool_max: 8,
            warm_pool_prewarm: crate::pool::Prewarm::Auto,
            policy: crate::spec::OperatorPolicy::default(),
            web: WebConfig::default(),
            github: None,
            store: "sqlite".into(),
            controller_id: None,
            lease: Span(Duration::from_secs(15)),
            job_retries: 1,
            max_stored_artifacts: Size::mib(256),
        }
    }
}

/// One entry of `tokens`: a name (recorded as the submitter of the jobs it submits), the
/// secret (`token` or `token_file`) and whether it is an admin's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    pub name: String,
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An admin token sees and cancels every job and reads `/metrics`.
    #[serde(default)]
    pub admin: bool,
}

/// The environment variables that override the file, and the field each sets.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("CORDON_LISTEN", "listen"),
    ("CORDON_SERVER_NAMES", "server_names (`,`-separated)"),
    ("CORDON_TOKEN", "token"),
    ("CORDON_TOKEN_FILE", "token_file"),
    ("CORDON_DATA_DIR", "data_dir"),
    ("CORDON_CONCURRENCY", "concurrency"),
    ("CORDON_QUEUE_CAPACITY", "queue_capacity"),
    ("CORDON_MAX_UPLOAD", "max_upload"),
    ("CORDON_MAX_WORKSPACE", "max_workspace"),
    ("CORDON_WORKSPACE_ROOTS", "workspace_roots (`:`-separated)"),
    ("CORDON_PROFILES_DIR", "profiles_dir"),
    ("CORDON_RETENTION", "retention"),
    ("CORDON_SHUTDOWN_GRACE", "shutdown_grace"),
    ("CORDON_WARM_POOL", "warm_pool"),
    ("CORDON_WARM_POOL_PREWARM", "warm_pool_prewarm"),
    (
        "CORDON_WEB_SECURE_COOKIE",
        "web.secure_cookie (true or false)",
    ),
    ("CORDON_STORE", "store (`sqlite` or `postgres://…`)"),
    ("CORDON_CONTROLLER_ID", "controller_id"),
    ("CORDON_LEASE", "lease"),
    ("CORDON_JOB_RETRIES", "job_retries"),
];

impl ServerConfig {
    /// Reads `file` (if any), applies the environment, checks the result.
    pub fn load(file: Option<&Path>) -> Result<ServerConfig, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                if text.trim().is_empty() {
                    ServerConfig::default()
                } else {
                    crate::spec::parse_yaml(&text, path)?
                }
            }
            None => ServerConfig::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Applies `CORDON_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: format!("`{v}`: {e}"),
            })
        }
        fn yaml<T: serde::de::DeserializeOwned>(
            name: &'static str,
            v: &str,
        ) -> Result<T, ConfigError> {
            crate::spec::parse_yaml(&format!("{v:?}"), Path::new(name)).map_err(|e| {
                ConfigError::Env {
                    name,
                    reason: e.to_string(),
                }
            })
        }
        if let Some(v) = get("CORDON_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("CORDON_SERVER_NAMES") {
            self.server_names = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = get("CORDON_TOKEN") {
            self.token = Some(v);
        }
        if let Some(v) = get("CORDON_TOKEN_FILE") {
            self.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("CORDON_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("CORDON_CONCURRENCY") {
            self.concurrency = Some(parse("CORDON_CONCURRENCY", &v)?);
        }
        if let Some(v) = get("CORDON_QUEUE_CAPACITY") {
            self.queue_capacity = parse("CORDON_QUEUE_CAPACITY", &v)?;
        }
        if let Some(v) = get("CORDON_MAX_UPLOAD") {
            self.max_upload = yaml("CORDON_MAX_UPLOAD", &v)?;
        }
        if let Some(v) = get("CORDON_MAX_WORKSPACE") {
            self.max_workspace = yaml("CORDON_MAX_WORKSPACE", &v)?;
        }
        if let Some(v) = get("CORDON_WORKSPACE_ROOTS") {
            self.workspace_roots = v
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(v) = get("CORDON_PROFILES_DIR") {
            self.profiles_dir = PathBuf::from(v);
        }
        if let Some(v) = get("CORDON_RETENTION") {
            self.retention = yaml("CORDON_RETENTION", &v)?;
        }
        if let Some(v) = get("CORDON_SHUTDOWN_GRACE") {
            self.shutdown_grace = yaml("CORDON_SHUTDOWN_GRACE", &v)?;
        }
        if let Some(v) = get("CORDON_WARM_POOL") {
            self.warm_pool = parse("CORDON_WARM_POOL", &v)?;
        }
        if let Some(v) = get("CORDON_WARM_POOL_PREWARM") {
            self.warm_pool_prewarm = parse("CORDON_WARM_POOL_PREWARM", &v)?;
        }
        if let Some(v) = get("CORDON_WEB_SECURE_COOKIE") {
            self.web.secure_cookie = parse("CORDON_WEB_SECURE_COOKIE", &v)?;
        }
        if let Some(v) = get("CORDON_STORE") {
            self.store = v.trim().to_string();
        }
        if let Some(v) = get("CORDON_CONTROLLER_ID") {
            self.controller_id = Some(v.trim().to_string());
        }
        if let Some(v) = get("CORDON_LEASE") {
            self.lease = yaml("CORDON_LEASE", &v)?;
        }
        if let Some(v) = get("CORDON_JOB_RETRIES") {
            self.job_retries = parse("CORDON_JOB_RETRIES", &v)?;
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        self.listen_addr()?;
        for name in &self.server_names {
            if super::access::Authority::parse(name).is_none() {
                return Err(invalid(
                    "server_names",
                    format!(
                        "`{name}` is not a host name or host:port (like `cordon.example.com`, `build-host:8420` or `[::1]:8420`); give names only, without `http://` or a path"
                    ),
                ));
            }
        }
        self.check_tokens()?;
        if let Some(g) = &self.github {
            g.check()?;
        }
        if self.concurrency == Some(0) {
            return Err(invalid("concurrency", "must be at least 1".into()));
        }
        if self.warm_pool > 16 {
            return Err(invalid(
                "warm_pool",
                format!(
                    "{} ready sandboxes per key is more than any queue needs; use at most 16 (about `concurrency`)",
                    self.warm_pool
                ),
            ));
        }
        if self.warm_pool > 0 && self.warm_pool_max < self.warm_pool {
            return Err(invalid(
                "warm_pool_max",
                format!(
                    "{} is below warm_pool ({}): not even one key could be filled",
                    self.warm_pool_max, self.warm_pool
                ),
            ));
        }
        self.policy
            .check()
            .map_err(|(field, reason)| invalid("policy", format!("`{field}`: {reason}")))?;
        if self.web.max_sessions == 0 {
            return Err(invalid(
                "web",
                "`web.max_sessions` must be at least 1 (each signed-in browser is one)".into(),
            ));
        }
        if self.web.session_ttl.0 < Duration::from_secs(60) {
            return Err(invalid(
                "web",
                format!(
                    "`web.session_ttl`: {} is under a minute; a session that short signs people out while they read (the default is 12h)",
                    humantime::format_duration(self.web.session_ttl.0)
                ),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1".into()));
        }
        self.check_store()?;
        if self.max_upload < Size(1024) {
            return Err(invalid("max_upload", "must be at least 1KiB".into()));
        }
        let mut roots = Vec::new();
        for r in &self.workspace_roots {
            let c = r.canonicalize().map_err(|e| {
                invalid(
                    "workspace_roots",
                    format!("{} cannot be resolved: {e}", r.display()),
                )
            })?;
            roots.push(c);
        }
        self.workspace_roots = roots;
        // Absolute, so a restart from another directory finds the same profiles.
        self.profiles_dir = self.profiles_dir.canonicalize().map_err(|e| {
            invalid(
                "profiles_dir",
                format!("{} cannot be resolved: {e}", self.profiles_dir.display()),
            )
        })?;
        Ok(())
    }

    /// Reads the token files and checks every token: at least 16 characters, names unique and
    /// plain, no secret used twice.
    fn check_store(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        let store = self.store.as_str();
        if store != "sqlite"
            && !store.starts_with("postgres://")
            && !store.starts_with("postgresql://")
        {
            return Err(invalid(
                "store",
                format!(
                    "`{}` is neither `sqlite` nor a PostgreSQL URL; write `sqlite` (the default) or postgres://USER:PASSWORD@HOST:5432/DATABASE",
                    super::store::postgres::redact_url(store)
                ),
            ));
        }
        if let Some(id) = &self.controller_id
            && (id.is_empty()
                || id.len() > 63
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(invalid(
                "controller_id",
                format!(
                    "`{id}`: use 1 to 63 letters, digits, `.`, `_` or `-` (a pod's name is fine)"
                ),
            ));
        }
        let lease = self.lease.0;
        if lease < Duration::from_secs(3) || lease > Duration::from_secs(600) {
            return Err(invalid(
                "lease",
                format!(
                    "{} is outside 3s..10m: shorter takes jobs from controllers that are merely busy, longer leaves a lost job waiting",
                    humantime::format_duration(lease)
                ),
            ));
        }
        if self.job_retries > 10 {
            return Err(invalid(
                "job_retries",
                format!(
                    "{} is more than anyone needs (a job is hermetic; 1, the default, covers a lost controller)",
                    self.job_retries
                ),
            ));
        }
        Ok(())
    }

    fn check_tokens(&mut self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        let read = |path: &PathBuf| -> Result<String, ConfigError> {
            std::fs::read_to_string(path)
                .map(|t| t.trim_end().to_string())
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })
        };
        const SHORT: &str =
            "a token needs at least 16 characters (make one with e.g. `openssl rand -hex 32`)";
        if let Some(path) = &self.token_file {
            if self.token.is_some() {
                return Err(invalid(
                    "token_file",
                    "both `token` and `token_file` are set (CORDON_TOKEN / CORDON_TOKEN_FILE count): keep one".into(),
                ));
            }
            self.token = Some(read(path)?);
        }
        if let Some(t) = &self.token
            && t.len() < 16
        {
            return Err(invalid("token", SHORT.into()));
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        let has_admin = self.token.is_some();
        if let Some(t) = &self.token {
            seen.push((super::access::ADMIN_NAME.into(), t.clone()));
        }
        for (i, t) in self.tokens.iter_mut().enumerate() {
            let at = format!("`tokens[{i}]` (`{}`)", t.name);
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    "tokens",
                    format!(
                        "{at}: a name is 1 to 64 letters, digits, `-`, `_` or `.`; it is recorded with each job the token submits"
                    ),
                ));
            }
            match (&t.token, &t.token_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "tokens",
                        format!("{at}: give `token` or `token_file`, not both"),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "tokens",
                        format!("{at}: give its secret as `token_file` (or `token`)"),
                    ));
                }
                (None, Some(path)) => t.token = Some(read(path)?),
                (Some(_), None) => {}
            }
            let secret = t.token.clone().unwrap_or_default();
            if secret.len() < 16 {
                return Err(invalid("tokens", format!("{at}: {SHORT}")));
            }
            if let Some((other, _)) = seen.iter().find(|(n, _)| *n == t.name) {
                return Err(invalid(
                    "tokens",
                    format!(
                        "{at}: the name `{other}` is taken{}; give each token its own name",
                        if other == super::access::ADMIN_NAME && has_admin {
                            " (`admin` is the name of `token` / `token_file`)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == secret) {
                return Err(invalid(
                    "tokens",
                    format!(
                        "{at}: the same secret as `{other}`; the token decides whose a job is, so each must be different"
                    ),
                ));
            }
            seen.push((t.name.clone(), secret));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            field: "listen",
            reason: format!(
                "`{}` is not an address like 127.0.0.1:8420: {e}",
                self.listen
            ),
        })
    }

    /// Jobs at once: the configured number, else the machine's cores.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_the_file() {
        let mut c: ServerConfig = crate::spec::parse_yaml(
            "listen: 127.0.0.1:1\nconcurrency: 3\nretention: 1h\n",
            Path::new("t"),
        )
        .expect("valid");
        let env = |k: &str| match k {
            "CORDON_CONCURRENCY" => Some("5".to_string()),
            "CORDON_MAX_UPLOAD" => Some("2MiB".to_string()),
            "CORDON_SHUTDOWN_GRACE" => Some("5s".to_string()),
            "CORDON_WARM_POOL_PREWARM" => Some("off".to_string()),
            _ => None,
        };
        c.apply_env(env).expect("valid env");
        assert_eq!(c.warm_pool_prewarm, crate::pool::Prewarm::Off);
        let bad = c.apply_env(|k| (k == "CORDON_WARM_POOL_PREWARM").then(|| "always".into()));
        assert!(
            bad.is_err_and(|e| e.to_string().contains("auto, on, off")),
            "an unknown prewarm setting is refused with the choices"
        );
        assert_eq!(c.concurrency, Some(5));
        assert_eq!(c.max_upload, Size::mib(2));
        assert_eq!(c.shutdown_grace.0, Duration::from_secs(5));
        assert_eq!(c.retention.0, Duration::from_secs(3600));
        assert_eq!(c.listen, "127.0.0.1:1");
    }

    /// The shipped example configuration and the documented one stay valid.
    #[test]
    fn the_shipped_configurations_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let deploy = root.join("deploy/cordon.yaml");
        let text = std::fs::read_to_string(&deploy).expect("deploy/cordon.yaml");
        let c: ServerConfig = crate::spec::parse_yaml(&text, &deploy).expect("valid");
        assert_eq!(c.warm_pool, 0);
        assert_eq!(c.warm_pool_prewarm, crate::pool::Prewarm::Auto);
        let doc = std::fs::read_to_string(root.join("docs/server.md")).expect("docs/server.md");
        let block = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a yaml block in docs/server.md");
        crate::spec::parse_yaml::<ServerConfig>(block, Path::new("docs/server.md"))
            .expect("the documented configuration is valid");
    }

    /// The builder's pool and timeout come from the `github:` section, each checked by name.
    #[test]
    fn the_builders_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        let token = dir.path().join("token");
        std::fs::write(&secret, "0123456789abcdef0123").expect("write");
        std::fs::write(&token, "ghp_x").expect("write");
        let section = |extra: &str| {
            let yaml = format!(
                "webhook_secret_file: {}\ntoken_file: {}\n{extra}",
                secret.display(),
                token.display()
            );
            let g: GitHubSection =
                crate::spec::parse_yaml(&yaml, Path::new("c.yaml")).expect("parses");
            g.check().map(|()| g).map_err(|e| e.to_string())
        };
        let g = section("").expect("the defaults are valid");
        assert_eq!(
            (g.builder_warm_pool, g.builder_timeout.0),
            (1, Duration::from_secs(300))
        );
        let g = section("builder_warm_pool: 0\nbuilder_timeout: 20m\n").expect("valid");
        assert_eq!(
            (g.builder_warm_pool, g.builder_timeout.0),
            (0, Duration::from_secs(1200))
        );
        let e = section("builder_warm_pool: 50\n").expect_err("too many");
        assert!(
            e.contains("github.builder_warm_pool") && e.contains("0 to 8"),
            "{e}"
        );
        let e = section("builder_timeout: 1s\n").expect_err("too short");
        assert!(
            e.contains("github.builder_timeout") && e.contains("5m"),
            "{e}"
        );
    }

    /// The store's settings: each bad one names its field and the fix; a password in the
    /// store URL never reaches the message.
    #[test]
    fn store_settings_are_checked() {
        let check = |yaml: &str| {
            let c: ServerConfig =
                crate::spec::parse_yaml(yaml, Path::new("c.yaml")).expect("parses");
            c.check_store().map(|()| c).map_err(|e| e.to_string())
        };
        let c = check("store: postgres://cordon:pw@db:5432/cordon\ncontroller_id: cordon-0\n")
            .expect("valid");
        assert_eq!((c.lease.0, c.job_retries), (Duration::from_secs(15), 1));
        let e = check("store: mysql://root:hunter2@db/x\n").expect_err("not postgres");
        assert!(
            e.contains("`store`") && e.contains("postgres://") && !e.contains("hunter2"),
            "{e}"
        );
        let e = check("controller_id: \"a b/c\"\n").expect_err("bad id");
        assert!(e.contains("controller_id"), "{e}");
        let e = check("lease: 1s\n").expect_err("too short");
        assert!(e.contains("lease") && e.contains("3s"), "{e}");
        let e = check("job_retries: 50\n").expect_err("too many");
        assert!(e.contains("job_retries"), "{e}");
        let mut c = ServerConfig::default();
        c.apply_env(|k| (k == "CORDON_STORE").then(|| " postgres://u:p@h/db ".into()))
            .expect("env");
        assert_eq!(c.store, "postgres://u:p@h/db");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = crate::spec::parse_yaml::<ServerConfig>("listn: x\n", Path::new("c.yaml"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("listn"), "{e}");
    }

    fn checked(yaml: &str) -> Result<ServerConfig, String> {
        let mut c: ServerConfig =
            crate::spec::parse_yaml(yaml, Path::new("c.yaml")).map_err(|e| e.to_string())?;
        c.check_tokens().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn named_tokens_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("ci");
        std::fs::write(&file, "ci-secret-0123456789\n").expect("write");
        let c = checked(&format!(
            "token: admin-secret-0123456789\ntokens:\n  - {{ name: ci, token_file: {} }}\n  - {{ name: alice, token: alice-secret-0123456789, admin: true }}\n",
            file.display()
        ))
        .expect("valid");
        assert_eq!(c.tokens[0].token.as_deref(), Some("ci-secret-0123456789"));
        assert!(!c.tokens[0].admin && c.tokens[1].admin);

        for (yaml, want) in [
            ("token: short\n", "`token`: a token needs at least 16"),
            (
                "tokens: [{ name: ci, token: short }]\n",
                "`tokens[0]` (`ci`): a token needs at least 16",
            ),
            (
                "tokens: [{ name: ci }]\n",
                "`tokens[0]` (`ci`): give its secret as `token_file`",
            ),
            (
                "tokens: [{ name: ci, token: aaaaaaaaaaaaaaaaaaaa, token_file: /x }]\n",
                "not both",
            ),
            (
                "tokens: [{ name: \"a b\", token: aaaaaaaaaaaaaaaaaaaa }]\n",
                "a name is 1 to 64 letters",
            ),
            (
                "token: aaaaaaaaaaaaaaaaaaaa\ntokens: [{ name: admin, token: bbbbbbbbbbbbbbbbbbbb }]\n",
                "the name `admin` is taken (`admin` is the name of `token`",
            ),
            (
                "tokens: [{ name: a, token: aaaaaaaaaaaaaaaaaaaa }, { name: a, token: bbbbbbbbbbbbbbbbbbbb }]\n",
                "`tokens[1]` (`a`): the name `a` is taken",
            ),
            (
                "token: aaaaaaaaaaaaaaaaaaaa\ntokens: [{ name: ci, token: aaaaaaaaaaaaaaaaaaaa }]\n",
                "the same secret as `admin`",
            ),
            ("tokens: [{ name: ci, secret: x }]\n", "secret"),
        ] {
            let e = checked(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn web_settings_are_checked() {
        let mut c = ServerConfig::default();
        assert!(!c.web.secure_cookie);
        c.apply_env(|k| (k == "CORDON_WEB_SECURE_COOKIE").then(|| "true".into()))
            .expect("env");
        assert!(c.web.secure_cookie);
        let bad = c.apply_env(|k| (k == "CORDON_WEB_SECURE_COOKIE").then(|| "yes".into()));
        assert!(bad.is_err_and(|e| e.to_string().contains("CORDON_WEB_SECURE_COOKIE")));
        c.check().expect("valid");
        c.web.max_sessions = 0;
        let e = c.check().expect_err("no sessions").to_string();
        assert!(e.contains("`web.max_sessions`"), "{e}");
        let mut c: ServerConfig =
            crate::spec::parse_yaml("web: { session_ttl: 10s }\n", Path::new("c.yaml"))
                .expect("parses");
        let e = c.check().expect_err("too short").to_string();
        assert!(e.contains("`web.session_ttl`: 10s"), "{e}");
        let e = crate::spec::parse_yaml::<ServerConfig>("web: { ttl: 1h }\n", Path::new("c.yaml"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("ttl"), "{e}");
    }

    #[test]
    fn server_names_are_host_names() {
        let mut c = ServerConfig::default();
        c.apply_env(|k| (k == "CORDON_SERVER_NAMES").then(|| "a.example, b:1".into()))
            .expect("env");
        assert_eq!(c.server_names, vec!["a.example".to_string(), "b:1".into()]);
        c.check().expect("valid");
        c.server_names = vec!["http://a.example".into()];
        let e = c.check().expect_err("a URL is not a name").to_string();
        assert!(
            e.contains("`server_names`") && e.contains("http://a.example"),
            "{e}"
        );
    }
}
