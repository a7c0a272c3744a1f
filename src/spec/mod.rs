//! The job spec: what to run, in which image, under which profile and limits.
//!
//! [`JobSpec`] is the file as written (YAML or JSON); [`load`] parses and validates it into a
//! [`Job`], where every path is resolved, every limit set and every default applied. Nothing
//! here talks to an engine: checks that need one (does the image exist, does the host have
//! that many CPUs) happen in the runner's preflight.

pub mod key_files;
pub mod operator;
pub mod pattern;
pub mod profile;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use operator::{Ceilings, EgressPolicy, HostRule, OperatorPolicy};
pub use profile::{Limits, LimitsFile, SandboxProfile};
pub use units::{Size, Span};

/// The default image: built by `cordon image build python`, or on first use.
pub const DEFAULT_IMAGE: &str = "cordon/python:3.11";

/// Names a workspace copy leaves out unless the spec says otherwise.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".tox",
    "*.pyc",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {location}{message}")]
    Parse {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("{path}: `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("profile `{profile}`: {reason}")]
    Profile { profile: String, reason: String },
}

/// A job spec as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Image reference; default `cordon/python:3.11`. Never pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A profile name (looked up in `sandbox-profiles/`) or a path; default `strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
    /// Dependency installation, run once with allowlisted egress and cached as an
    /// environment image keyed by what determines it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PrepareSpec>,
    pub steps: Vec<StepSpec>,
    /// Absolute paths in the sandbox, under `/out` or the workspace, copied out after the run.
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Environment for every step. Nothing from cordon's own environment enters a sandbox
    /// unless named here or in `pass_env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables of cordon's environment to pass through, by explicit choice.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// The directory to put in the sandbox, relative to the spec file.
    pub source: PathBuf,
    #[serde(default)]
    pub mode: WorkspaceMode,
    /// Where it appears in the sandbox; default `/workspace`.
    #[serde(default = "default_workspace_path")]
    pub path: String,
    /// Names left out of a `copy` (replaces the default list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

fn default_workspace_path() -> String {
    "/workspace".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// A tar stream through the Engine API into a size-capped tmpfs: works with a remote
    /// daemon; the job may write to its copy.
    #[default]
    Copy,
    /// A read-only bind mount of the host directory: local daemon only.
    Bind,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareSpec {
    /// The install command, run with `sh -c` in the workspace path, with only the
    /// `cache_key_files` present there.
    pub run: String,
    /// Files of the workspace that determine the environment (`requirements*.txt`,
    /// `pyproject.toml`, lockfiles); `*` matches within a file name. Their contents are part
    /// of the cache key and they are the only workspace files the install sees.
    #[serde(default)]
    pub cache_key_files: Vec<String>,
    /// Hosts the install may reach (through cordon's allowlisting proxy); `*.example.org`
    /// matches subdomains. Default: the public package registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_hosts: Option<Vec<String>>,
    /// A CA bundle to trust, for networks behind a TLS-intercepting proxy: `host` for the one
    /// the operator configured (the host's own bundle by default). Never a path: the spec is
    /// the submitter's, the host's files are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Hosts a `prepare` step may reach when the spec names none: the public package registries.
pub const DEFAULT_ALLOW_HOSTS: &[&str] = &[
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "deb.debian.org",
    "security.debian.org",
    "proxy.golang.org",
];

/// The most entries a `prepare.allow_hosts` may have.
pub const MAX_ALLOW_HOSTS: usize = 256;

/// The host CA bundle used by `ca_bundle: host`.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    /// A shell command line, run with `sh -c` in the workspace.
    pub run: String,
    #[serde(default)]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Loopback only. The only choice for anything that runs generated code.
    #[default]
    None,
    /// The engine's default bridge network, if the profile allows it.
    Egress,
}

/// A validated job: every default applied, every path resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub image: String,
    pub profile: SandboxProfile,
    pub workspace: Option<Workspace>,
    pub prepare: Option<Prepare>,
    pub steps: Vec<Step>,
    pub artifacts: Vec<String>,
    pub limits: Limits,
    /// The job's `env`: every step's, and the `prepare`'s.
    pub env: BTreeMap<String, String>,
    /// Values of cordon's own variables named in `pass_env`: the steps' only, never the
    /// `prepare`'s (its install scripts are the submitter's packages) nor the cache key.
    #[serde(skip)]
    pub passed_env: BTreeMap<String, String>,
    /// Labels the service adds to the job's containers (its controller and the epoch of its
    /// claim, under `org.cordon.`); never from a spec.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl Job {
    /// Where the workspace appears in the sandbox (its working directory): the spec's
    /// `workspace.path`, else `/workspace`.
    pub fn workspace_path(&self) -> &str {
        self.workspace
            .as_ref()
            .map(|w| w.path.as_str())
            .unwrap_or("/workspace")
    }
}

/// A validated `prepare`.
#[derive(Debug, Clone, Serialize)]
pub struct Prepare {
    pub run: String,
    /// (path relative to the workspace, contents), sorted by path. A pattern that matched
    /// nothing contributes nothing.
    #[serde(skip)]
    pub key_files: Vec<(String, Vec<u8>)>,
    pub key_patterns: Vec<String>,
    pub allow_hosts: Vec<String>,
    /// The parsed `allow_hosts`, each within the operator's egress policy.
    pub allow: Vec<HostRule>,
    /// The operator's rules for hosts that may resolve to internal addresses.
    pub internal: Vec<HostRule>,
    /// The operator's CA bundle, when the spec asked for `ca_bundle: host`.
    pub ca_bundle: Option<PathBuf>,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// The most the install may write to its filesystem.
    pub disk: Size,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub source: PathBuf,
    pub mode: WorkspaceMode,
    pub path: String,
    pub excludes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub run: String,
    pub network: Network,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
}

mod humantime_serde_compat {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// The directory the sandbox writes its artifacts to.
pub const OUT_DIR: &str = "/out";

/// Reads, parses and validates a spec file (YAML or JSON) within the operator's `policy`.
pub fn load(path: &Path, policy: &OperatorPolicy) -> Result<Job, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let spec: JobSpec = parse_yaml(&text, path)?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    validate(spec, dir, path, policy)
}

/// Parses YAML (JSON is YAML) into `T`, naming the path of a bad key.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let location = match inner.location() {
            Some(l) => format!("line {} column {}: ", l.line(), l.column()),
            None => String::new(),
        };
        let message = if at == "." || at.is_empty() {
            inner.to_string()
        } else {
            format!("`{at}`: {inner}")
        };
        SpecError::Parse {
            path: path.to_path_buf(),
            location,
            message: strip_location(&message),
        }
    })
}

fn strip_location(msg: &str) -> String {
    // serde_yaml_ng appends " at line X column Y"; we print the location up front instead.
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Validates a parsed spec within the operator's `policy`. `dir` is where relative paths
/// start (the spec's folder).
pub fn validate(
    spec: JobSpec,
    dir: &Path,
    spec_path: &Path,
    policy: &OperatorPolicy,
) -> Result<Job, SpecError> {
    let invalid = |(field, reason): (String, String)| SpecError::Invalid {
        path: spec_path.to_path_buf(),
        field,
        reason,
    };
    let image = validate_image(&spec, policy).map_err(invalid)?;
    let profile_name = spec.profile.clone().unwrap_or_else(|| "strict".to_string());
    let profile = profile::load(&profile_name, dir)?;
    // A profile's defaults are capped by the operator's ceilings; only what the spec itself
    // asks for can be refused for exceeding them.
    let limits = profile::merge_limits(&capped(&profile.limits, &policy.max), &spec.limits);
    check_limits(&limits)
        .and_then(|()| check_ceilings(&limits, &policy.max))
        .map_err(|(field, reason)| invalid((format!("limits.{field}"), reason)))?;
    if profile.uid == 0 && !policy.allow_root {
        return Err(invalid((
            "profile".into(),
            format!(
                "profile `{}` runs the sandbox as root (uid 0), which the operator does not allow (`allow_root`), whatever its `cap_add` says",
                profile.name
            ),
        )));
    }
    let workspace = match &spec.workspace {
        None => None,
        Some(w) => Some(validate_workspace(w, dir).map_err(invalid)?),
    };
    let prepare = match &spec.prepare {
        None => None,
        Some(p) => Some(validate_prepare(p, workspace.as_ref(), policy).map_err(invalid)?),
    };
    let steps = validate_steps(&spec, &profile, &limits, policy).map_err(invalid)?;
    let artifacts = validate_artifacts(&spec, workspace.as_ref()).map_err(invalid)?;
    check_env(&spec.env).map_err(|r| invalid(("env".into(), r)))?;
    let passed_env = read_pass_env(&spec).map_err(invalid)?;
    Ok(Job {
        id: new_job_id(),
        image,
        profile,
        workspace,
        prepare,
        steps,
        artifacts,
        limits,
        env: spec.env.clone(),
        passed_env,
        labels: BTreeMap::new(),
    })
}

/// Errors of the parts of a spec: (the field, why).
type FieldError = (String, String);

fn field_error(field: &str, reason: String) -> FieldError {
    (field.to_string(), reason)
}

/// The spec's image (or the default), if it is a reference the operator allows.
fn validate_image(spec: &JobSpec, policy: &OperatorPolicy) -> Result<String, FieldError> {
    let invalid = field_error;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Err(invalid(
            "image",
            format!("`{image}` is not an image reference"),
        ));
    }
    if !policy.image_allowed(&image) {
        return Err(invalid(
            "image",
            format!(
                "`{image}` is not among the images the operator allows ({}): use one of those, or ask the operator to add it to `allowed_images`",
                policy.allowed_images.join(", ")
            ),
        ));
    }

    Ok(image)
}

/// Each step: a unique name, a command, a network the profile allows, a timeout within the
/// operator's ceiling, variables and a command the kernel would take.
fn validate_steps(
    spec: &JobSpec,
    profile: &SandboxProfile,
    limits: &Limits,
    policy: &OperatorPolicy,
) -> Result<Vec<Step>, FieldError> {
    let invalid = field_error;
    if spec.steps.is_empty() {
        return Err(invalid("steps", "a job needs at least one step".into()));
    }
    let mut steps = Vec::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let field = |f: &str| format!("steps[{i}].{f}");
        if s.name.is_empty()
            || s.name.len() > 64
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                &field("name"),
                format!("`{}` must be 1-64 letters, digits, `-`, `_` or `.`", s.name),
            ));
        }
        if steps.iter().any(|x: &Step| x.name == s.name) {
            return Err(invalid(
                &field("name"),
                format!("`{}` is used by two steps", s.name),
            ));
        }
        if s.run.trim().is_empty() {
            return Err(invalid(&field("run"), "the command is empty".into()));
        }
        if s.network == Network::Egress && !profile.allow_egress {
            return Err(invalid(
                &field("network"),
                format!(
                    "profile `{}` does not allow network egress; use `network: none` or a profile with `allow_egress: true`",
                    profile.name
                ),
            ));
        }
        if s.network == Network::Egress && profile.is_runsc() {
            // gVisor is registered with `--network=none` (Debian's runsc cannot start a
            // sandbox with a network in a VM like cordon's CI), so the step would get none.
            return Err(invalid(
                &field("network"),
                format!(
                    "profile `{}` runs under gVisor (runsc), whose sandboxes have no network but loopback; use `network: none`, or a runc profile for a step that needs egress",
                    profile.name
                ),
            ));
        }
        let timeout = s.timeout.unwrap_or(limits.timeout).0;
        if timeout.is_zero() || timeout > policy.max.timeout.0 {
            return Err(invalid(
                &field("timeout"),
                format!(
                    "{} is outside 1ms..{} (the operator's ceiling `max.timeout`)",
                    humantime::format_duration(timeout),
                    policy.max.timeout
                ),
            ));
        }
        check_env(&s.env).map_err(|r| invalid(&field("env"), r))?;
        check_command(&s.run).map_err(|r| invalid(&field("run"), r))?;
        steps.push(Step {
            name: s.name.clone(),
            run: s.run.clone(),
            network: s.network,
            timeout,
            env: s.env.clone(),
        });
    }

    Ok(steps)
}

/// Artifacts: absolute paths without `..`, under /out or a copied workspace.
fn validate_artifacts(
    spec: &JobSpec,
    workspace: Option<&Workspace>,
) -> Result<Vec<String>, FieldError> {
    let invalid = field_error;
    let ws_path = workspace.map(|w| w.path.clone());
    let mut artifacts = Vec::new();
    for (i, a) in spec.artifacts.iter().enumerate() {
        let norm = normalize_abs(a).ok_or_else(|| {
            invalid(
                &format!("artifacts[{i}]"),
                format!("`{a}` must be an absolute path without `..`"),
            )
        })?;
        let under = |root: &str| norm == root || norm.starts_with(&format!("{root}/"));
        let ok = under(OUT_DIR)
            || ws_path.as_deref().is_some_and(|w| {
                under(w) && workspace.is_some_and(|ws| ws.mode == WorkspaceMode::Copy)
            });
        if !ok {
            return Err(invalid(
                &format!("artifacts[{i}]"),
                format!(
                    "`{a}` is not under {OUT_DIR}{}: only those are collected",
                    ws_path
                        .as_deref()
                        .map(|w| format!(" or the copied workspace {w}"))
                        .unwrap_or_default()
                ),
            ));
        }
        if norm == OUT_DIR || Some(norm.as_str()) == ws_path.as_deref() {
            // A whole scratch dir is fine; keep it.
        }
        artifacts.push(norm);
    }

    Ok(artifacts)
}

/// `pass_env`: the values of cordon's own variables the spec names, each of which must be set.
fn read_pass_env(spec: &JobSpec) -> Result<BTreeMap<String, String>, FieldError> {
    let invalid = field_error;
    let mut passed_env = BTreeMap::new();
    for name in &spec.pass_env {
        if !is_variable_name(name) {
            return Err(invalid(
                "pass_env",
                format!("`{name}` is not a valid variable name"),
            ));
        }
        match std::env::var(name) {
            Ok(v) => {
                passed_env.insert(name.clone(), v);
            }
            Err(_) => {
                return Err(invalid(
                    "pass_env",
                    format!("`{name}` is not set in cordon's environment (or is not valid UTF-8)"),
                ));
            }
        }
    }

    Ok(passed_env)
}

fn validate_workspace(w: &WorkspaceSpec, dir: &Path) -> Result<Workspace, (String, String)> {
    let source = dir.join(&w.source);
    let meta = std::fs::metadata(&source).map_err(|e| {
        (
            "workspace.source".to_string(),
            format!("{} cannot be read: {e}", source.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err((
            "workspace.source".into(),
            format!("{} is not a directory", source.display()),
        ));
    }
    std::fs::read_dir(&source).map_err(|e| {
        (
            "workspace.source".to_string(),
            format!("{} cannot be listed: {e}", source.display()),
        )
    })?;
    let source = source.canonicalize().map_err(|e| {
        (
            "workspace.source".to_string(),
            format!("{} cannot be resolved: {e}", source.display()),
        )
    })?;
    let path = normalize_abs(&w.path).ok_or_else(|| {
        (
            "workspace.path".to_string(),
            format!("`{}` must be an absolute path without `..`", w.path),
        )
    })?;
    const RESERVED: &[&str] = &[
        "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
        "/sys", "/tmp", "/usr", "/var", OUT_DIR,
    ];
    // A mount anywhere under these would shadow or expose what the sandbox relies on
    // (`/proc/self/fd/7`, `/dev/shm`, `/etc/…`); `/` and `/tmp` themselves only.
    let under_reserved = RESERVED
        .iter()
        .any(|r| path == *r || (*r != "/" && *r != "/tmp" && path.starts_with(&format!("{r}/"))));
    if under_reserved {
        return Err((
            "workspace.path".into(),
            format!(
                "`{path}` is or is under a system directory; use a path of its own such as /workspace"
            ),
        ));
    }
    let excludes = w
        .exclude
        .clone()
        .unwrap_or_else(|| DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect());
    pattern::Excludes::new(&source, &excludes)
        .map_err(|(i, reason)| (format!("workspace.exclude[{i}]"), reason))?;
    Ok(Workspace {
        source,
        mode: w.mode,
        path,
        excludes,
    })
}

fn validate_prepare(
    p: &PrepareSpec,
    ws: Option<&Workspace>,
    policy: &OperatorPolicy,
) -> Result<Prepare, (String, String)> {
    let field = |f: &str| format!("prepare.{f}");
    if p.run.trim().is_empty() {
        return Err((field("run"), "the command is empty".into()));
    }
    if !p.cache_key_files.is_empty() && ws.is_none() {
        return Err((
            field("cache_key_files"),
            "names workspace files, but the job has no workspace".into(),
        ));
    }
    let key_files = match ws {
        Some(ws) => key_files::read_key_files(&ws.source, &p.cache_key_files)?,
        None => Vec::new(),
    };
    let operator_rules = policy.egress_rules();
    let allow_hosts = p
        .allow_hosts
        .clone()
        .unwrap_or_else(|| operator_rules.iter().map(ToString::to_string).collect());
    if allow_hosts.len() > MAX_ALLOW_HOSTS {
        return Err((
            field("allow_hosts"),
            format!(
                "{} hosts are more than the {MAX_ALLOW_HOSTS} a prepare may list: use `*.domain` entries",
                allow_hosts.len()
            ),
        ));
    }
    let mut allow = Vec::new();
    for (i, h) in allow_hosts.iter().enumerate() {
        let at = format!("prepare.allow_hosts[{i}]");
        let rule = HostRule::parse(h).map_err(|r| (at.clone(), r))?;
        if !operator_rules.iter().any(|o| o.covers(&rule)) {
            return Err((
                at,
                format!(
                    "`{h}` is not within the operator's egress allowlist ({}): list only those hosts, or ask the operator to add it to `egress.allow_hosts`",
                    operator_rules
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        allow.push(rule);
    }
    let ca_bundle = match p.ca_bundle.as_deref() {
        None => None,
        Some("host") => match &policy.ca_bundle {
            Some(ca) if ca.is_file() => Some(ca.clone()),
            Some(ca) => {
                return Err((
                    field("ca_bundle"),
                    format!(
                        "the operator's CA bundle {} is not a readable file: ask the operator to fix `ca_bundle`",
                        ca.display()
                    ),
                ));
            }
            None => {
                return Err((
                    field("ca_bundle"),
                    "the operator configured no CA bundle (`ca_bundle`), so `host` is not available".into(),
                ));
            }
        },
        Some(other) => {
            return Err((
                field("ca_bundle"),
                format!(
                    "`{other}` is not allowed: a spec names no host file; use `ca_bundle: host` for the bundle the operator configured"
                ),
            ));
        }
    };
    check_env(&p.env).map_err(|r| (field("env"), r))?;
    check_command(&p.run).map_err(|r| (field("run"), r))?;
    let ceiling = policy.max.prepare_timeout.0;
    let timeout = p
        .timeout
        .map(|t| t.0)
        .unwrap_or(Duration::from_secs(15 * 60).min(ceiling));
    if timeout.is_zero() || timeout > ceiling {
        return Err((
            field("timeout"),
            format!(
                "{} is outside 1ms..{} (the operator's ceiling `max.prepare_timeout`)",
                humantime::format_duration(timeout),
                policy.max.prepare_timeout
            ),
        ));
    }
    Ok(Prepare {
        run: p.run.clone(),
        key_files,
        key_patterns: p.cache_key_files.clone(),
        allow_hosts,
        allow,
        internal: policy.internal_rules(),
        ca_bundle,
        timeout,
        disk: policy.max.prepare_disk,
        env: p.env.clone(),
    })
}

/// `l` with every limit at most its ceiling.
fn capped(l: &Limits, max: &Ceilings) -> Limits {
    Limits {
        cpus: l.cpus.min(max.cpus),
        memory: l.memory.min(max.memory),
        pids: l.pids.min(max.pids),
        output: l.output.min(max.output),
        scratch: l.scratch.min(max.scratch),
        nofile: l.nofile.min(max.nofile),
        timeout: l.timeout.min(max.timeout),
    }
}

/// A limit beyond the operator's ceiling is refused, naming both.
fn check_ceilings(l: &Limits, max: &Ceilings) -> Result<(), (&'static str, String)> {
    let over = |what: &'static str, asked: String, ceiling: String| {
        Err((
            what,
            format!(
                "{asked} is over the operator's ceiling of {ceiling} (`max.{what}`): ask for less, or ask the operator to raise it"
            ),
        ))
    };
    if l.cpus > max.cpus {
        return over("cpus", l.cpus.to_string(), max.cpus.to_string());
    }
    if l.memory > max.memory {
        return over("memory", l.memory.to_string(), max.memory.to_string());
    }
    if l.pids > max.pids {
        return over("pids", l.pids.to_string(), max.pids.to_string());
    }
    if l.nofile > max.nofile {
        return over("nofile", l.nofile.to_string(), max.nofile.to_string());
    }
    if l.output > max.output {
        return over("output", l.output.to_string(), max.output.to_string());
    }
    if l.scratch > max.scratch {
        return over("scratch", l.scratch.to_string(), max.scratch.to_string());
    }
    if l.timeout.0 > max.timeout.0 {
        return over("timeout", l.timeout.to_string(), max.timeout.to_string());
    }
    Ok(())
}

fn check_limits(l: &Limits) -> Result<(), (&'static str, String)> {
    if !(l.cpus > 0.0 && l.cpus <= 1024.0 && l.cpus.is_finite()) {
        return Err((
            "cpus",
            format!(
                "{} is not a CPU quota: use a number of cores > 0, like 1 or 0.5",
                l.cpus
            ),
        ));
    }
    if l.memory < Size::mib(8) || l.memory > Size(1 << 40) {
        return Err(("memory", format!("{} is outside 8MiB..1TiB", l.memory)));
    }
    if l.pids < 8 || l.pids > 1 << 22 {
        return Err((
            "pids",
            format!(
                "{} is outside 8..4194304 (the shell, init and your command need a few)",
                l.pids
            ),
        ));
    }
    if l.output < Size(1024) || l.output > Size(1 << 34) {
        return Err(("output", format!("{} is outside 1KiB..16GiB", l.output)));
    }
    if l.scratch < Size::mib(1) || l.scratch > Size(1 << 40) {
        return Err(("scratch", format!("{} is outside 1MiB..1TiB", l.scratch)));
    }
    if l.nofile < 16 || l.nofile > 1 << 20 {
        return Err(("nofile", format!("{} is outside 16..1048576", l.nofile)));
    }
    Ok(())
}

/// Whether `k` can name an environment variable in a POSIX shell.
pub fn is_variable_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The longest command or variable value: the kernel refuses a longer single argument or
/// environment string (`MAX_ARG_STRLEN`, 128 KiB), so such a step could never start.
pub const MAX_COMMAND_BYTES: usize = 100 * 1024;
/// All of a step's variables together.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    let mut total = 0;
    for (k, v) in env {
        if !is_variable_name(k) {
            return Err(format!("`{k}` is not a valid variable name"));
        }
        if v.contains('\0') {
            return Err(format!("the value of `{k}` contains a NUL byte"));
        }
        if v.len() > MAX_COMMAND_BYTES {
            return Err(format!(
                "the value of `{k}` is {} bytes, more than the {MAX_COMMAND_BYTES} a variable may hold: put it in a file in the workspace",
                v.len()
            ));
        }
        total += k.len() + v.len() + 2;
    }
    if total > MAX_ENV_BYTES {
        return Err(format!(
            "the variables total {total} bytes, more than {MAX_ENV_BYTES}: put large values in files in the workspace"
        ));
    }
    Ok(())
}

fn check_command(run: &str) -> Result<(), String> {
    if run.len() > MAX_COMMAND_BYTES {
        return Err(format!(
            "the command is {} bytes, more than {MAX_COMMAND_BYTES}: put it in a script in the workspace and run that",
            run.len()
        ));
    }
    Ok(())
}

/// `/a/./b/` → `/a/b`; `None` for relative paths or any `..`.
fn normalize_abs(p: &str) -> Option<String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// A job id: short enough to read, unique enough for a host's lifetime.
pub fn new_job_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("job-{}", &u[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Job, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(&spec_path, yaml).expect("write");
        load(&spec_path, &OperatorPolicy::for_cli()).map_err(|e| e.to_string())
    }

    fn check_as_service(yaml: &str) -> Result<Job, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(&spec_path, yaml).expect("write");
        load(&spec_path, &OperatorPolicy::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_is_valid() {
        let job = check(
            r#"
image: cordon/python:3.11
profile: strict
workspace: { source: ./repo, mode: copy, path: /workspace }
steps:
  - name: test
    run: python3 -m pytest -q --junitxml=/out/junit.xml
    network: none
    timeout: 60s
artifacts: [/out/junit.xml]
limits: { cpus: 1, memory: 512MiB, pids: 128, output: 4MiB, scratch: 256MiB }
env: { PYTHONHASHSEED: "0" }
"#,
        )
        .expect("valid");
        assert_eq!(job.limits.memory, Size(512 << 20));
        assert_eq!(job.limits.pids, 128);
        assert_eq!(
            job.limits.nofile, 1024,
            "unset limits come from the profile"
        );
        assert_eq!(job.steps[0].timeout, Duration::from_secs(60));
        assert_eq!(job.artifacts, vec!["/out/junit.xml"]);
        assert!(job.workspace.expect("workspace").source.is_absolute());
        assert!(job.id.starts_with("job-"));
    }

    #[test]
    fn kubernetes_style_quantities_are_read_like_docker_ones() {
        let job = check(
            "steps: [{name: t, run: x}]\nlimits: { cpus: 500m, memory: 512Mi, scratch: 1Gi }",
        )
        .expect("valid");
        assert_eq!(job.limits.cpus, 0.5);
        assert_eq!(job.limits.memory, Size(512 << 20));
        assert_eq!(job.limits.scratch, Size(1 << 30));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("steps: []", "a job needs at least one step"),
            (
                "steps: [{name: t, run: x}]\nbogus: 1",
                "unknown field `bogus`",
            ),
            ("steps: [{name: t, run: x, timeout: 60}]", "needs a unit"),
            (
                "steps: [{name: t, run: x, timeout: 3d}]",
                "outside 1ms..1h (the operator's ceiling `max.timeout`)",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { memory: 20GiB }",
                "`limits.memory`: 20GiB is over the operator's ceiling of 4GiB (`max.memory`)",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { output: 8GiB }",
                "`max.output`",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { timeout: 24h }",
                "`max.timeout`",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, timeout: 24h }",
                "`max.prepare_timeout`",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, allow_hosts: ['127.0.0.1'] }",
                "`prepare.allow_hosts[0]`: `127.0.0.1` is not within the operator's egress allowlist",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, allow_hosts: [localhost] }",
                "not within the operator's egress allowlist",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, allow_hosts: ['pypi.org:22'] }",
                "not within the operator's egress allowlist",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, ca_bundle: /etc/shadow }",
                "`prepare.ca_bundle`: `/etc/shadow` is not allowed: a spec names no host file",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./repo, path: /proc/self/fd/7 }",
                "`workspace.path`: `/proc/self/fd/7` is or is under a system directory",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./repo, path: /dev/shm/x }",
                "system directory",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { memory: 12 parsecs }",
                "unknown size unit",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { memory: 0 }",
                "`limits.memory`",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { cpus: 0 }",
                "`limits.cpus`",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { cpus: two }",
                "limits.cpus",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { cpus: 0m }",
                "`limits.cpus`",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { pids: -1 }",
                "`limits.pids`",
            ),
            (
                "steps: [{name: t, run: x}]\nlimits: { cpus: 1, memroy: 1GiB }",
                "memroy",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./missing }",
                "`workspace.source`",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./repo, path: /etc }",
                "system directory",
            ),
            (
                &format!(
                    "steps: [{{name: t, run: x}}]\nworkspace: {{ source: ./repo, exclude: ['a', '{}'] }}",
                    "b".repeat(2000)
                ),
                "`workspace.exclude[1]`",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./repo, mode: rsync }",
                "unknown variant `rsync`",
            ),
            (
                "steps: [{name: t, run: x}]\nartifacts: [/etc/passwd]",
                "`artifacts[0]`",
            ),
            (
                "steps: [{name: t, run: x}]\nartifacts: [/out/../etc]",
                "without `..`",
            ),
            (
                "steps: [{name: t, run: x}, {name: t, run: y}]",
                "used by two steps",
            ),
            ("steps: [{name: 'a b', run: x}]", "`steps[0].name`"),
            ("steps: [{name: t, run: ' '}]", "the command is empty"),
            (
                "steps: [{name: t, run: x, network: egress}]",
                "does not allow network egress",
            ),
            (
                "steps: [{name: t, run: x}]\nenv: { 'A-B': x }",
                "not a valid variable name",
            ),
            (
                "steps: [{name: t, run: x}]\npass_env: [CORDON_TEST_SURELY_UNSET]",
                "pass_env",
            ),
            (
                "steps: [{name: t, run: x}]\npass_env: ['X$(id)']",
                "`X$(id)` is not a valid variable name",
            ),
            (
                "steps: [{name: t, run: x}]\nprofile: nope",
                "no such profile",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: ' ' }",
                "`prepare.run`",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, cache_key_files: [req.txt] }",
                "no workspace",
            ),
            (
                "steps: [{name: t, run: x}]\nworkspace: { source: ./repo }\nprepare: { run: x, cache_key_files: [../x] }",
                "without `..`",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, allow_hosts: ['a b'] }",
                "`prepare.allow_hosts[0]`: `a b` is not a host rule",
            ),
            (
                "steps: [{name: t, run: x}]\nprepare: { run: x, ca_bundle: ./nope.pem }",
                "is not allowed",
            ),
            ("steps: {name: t}", "`steps`"),
        ];
        for (yaml, want) in cases {
            let err = check(yaml).expect_err(yaml);
            assert!(
                err.contains(want),
                "spec {yaml:?}: error {err:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn a_step_under_gvisor_cannot_ask_for_egress() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sandbox-profiles")).expect("mkdir");
        std::fs::write(
            dir.path().join("sandbox-profiles/open.yaml"),
            "inherits: gvisor\nallow_egress: true\n",
        )
        .expect("write");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(
            &spec_path,
            "profile: open\nsteps: [{name: t, run: x}, {name: u, run: y, network: egress}]\n",
        )
        .expect("write");
        let e = load(&spec_path, &OperatorPolicy::for_cli())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`steps[1].network`") && e.contains("gVisor (runsc)"),
            "{e}"
        );
        std::fs::write(&spec_path, "profile: open\nsteps: [{name: t, run: x}]\n").expect("write");
        let job = load(&spec_path, &OperatorPolicy::for_cli()).expect("no egress asked");
        assert!(job.profile.is_runsc());
    }

    #[test]
    fn the_service_allows_only_its_images_and_the_cli_every_local_one() {
        let err = check_as_service("image: corp/secrets:1\nsteps: [{name: t, run: x}]")
            .expect_err("not allowed");
        assert!(
            err.contains("`image`") && err.contains("allowed_images"),
            "{err}"
        );
        check_as_service("image: cordon/python:3.11\nsteps: [{name: t, run: x}]")
            .expect("cordon's");
        check("image: corp/secrets:1\nsteps: [{name: t, run: x}]").expect("the CLI's operator");
    }

    #[test]
    fn profile_defaults_are_capped_by_the_ceilings_and_only_requests_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec_path = dir.path().join("job.yaml");
        let policy = OperatorPolicy {
            max: Ceilings {
                memory: Size::mib(512),
                timeout: Span(Duration::from_secs(300)),
                ..Ceilings::default()
            },
            ..OperatorPolicy::for_cli()
        };
        std::fs::write(&spec_path, "steps: [{name: t, run: x}]\n").expect("write");
        let job = load(&spec_path, &policy).expect("the profile's 1GiB default is capped");
        assert_eq!(job.limits.memory, Size::mib(512));
        assert_eq!(job.steps[0].timeout, Duration::from_secs(300));
        std::fs::write(
            &spec_path,
            "steps: [{name: t, run: x}]\nlimits: {memory: 1GiB}\n",
        )
        .expect("write");
        let err = load(&spec_path, &policy)
            .expect_err("asked for more")
            .to_string();
        assert!(err.contains("`max.memory`"), "{err}");
    }

    #[test]
    fn an_endless_allowlist_is_refused() {
        let hosts: Vec<String> = (0..=MAX_ALLOW_HOSTS)
            .map(|i| format!("h{i}.pypi.org"))
            .collect();
        let err = check(&format!(
            "steps: [{{name: t, run: x}}]\nprepare: {{ run: x, allow_hosts: [{}] }}",
            hosts.join(", ")
        ))
        .expect_err("too many");
        assert!(
            err.contains("`prepare.allow_hosts`") && err.contains("*.domain"),
            "{err}"
        );
    }

    #[test]
    fn passed_variables_reach_the_steps_but_not_the_prepare() {
        let job =
            check("steps: [{name: t, run: x}]\npass_env: [PATH]\nenv: {A: b}").expect("valid");
        assert!(job.passed_env.contains_key("PATH"));
        assert!(
            !job.env.contains_key("PATH"),
            "passed values stay out of `env`"
        );
    }

    #[test]
    fn commands_and_variables_the_kernel_would_refuse_are_refused_here() {
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        let err = check(&format!("steps: [{{name: t, run: {long}}}]")).expect_err("too long");
        assert!(
            err.contains("`steps[0].run`") && err.contains("script"),
            "{err}"
        );
        let err = check(&format!(
            "steps: [{{name: t, run: x}}]\nenv: {{ A: {long} }}"
        ))
        .expect_err("too long");
        assert!(err.contains("`env`") && err.contains("`A`"), "{err}");
        let ok = "x".repeat(MAX_COMMAND_BYTES);
        check(&format!("steps: [{{name: t, run: {ok}}}]")).expect("at the limit");
    }

    #[test]
    fn parse_errors_give_line_and_field() {
        let err =
            check("steps:\n  - name: t\n    run: x\n    timout: 5s\n").expect_err("unknown field");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("steps[0]"), "{err}");
    }

    #[test]
    fn prepare_reads_its_key_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        std::fs::write(dir.path().join("repo/requirements.txt"), "attrs==23.1.0\n").expect("write");
        std::fs::write(dir.path().join("repo/requirements-dev.txt"), "pytest\n").expect("write");
        std::fs::write(dir.path().join("repo/setup.py"), "").expect("write");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(
            &spec_path,
            "workspace: { source: ./repo }\nprepare: { run: pip install -r requirements.txt, cache_key_files: ['requirements*.txt', pyproject.toml] }\nsteps: [{name: t, run: x}]\n",
        )
        .expect("write");
        let job = load(&spec_path, &OperatorPolicy::for_cli()).expect("valid");
        let p = job.prepare.expect("prepare");
        let names: Vec<&str> = p.key_files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["requirements-dev.txt", "requirements.txt"]);
        assert_eq!(p.allow_hosts.len(), DEFAULT_ALLOW_HOSTS.len());
    }

    #[test]
    fn a_symlinked_key_file_is_invalid_input_naming_the_field_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("repo/requirements.txt"))
            .expect("symlink");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(
            &spec_path,
            "workspace: { source: ./repo }\nprepare: { run: x, cache_key_files: [pyproject.toml, 'requirements*.txt'] }\nsteps: [{name: t, run: x}]\n",
        )
        .expect("write");
        let err = load(&spec_path, &OperatorPolicy::for_cli())
            .expect_err("a link is not a key file")
            .to_string();
        assert!(
            err.contains("`prepare.cache_key_files[1]`")
                && err.contains("`requirements.txt` is a symbolic link; key files must be regular files inside the workspace"),
            "{err}"
        );
    }

    #[test]
    fn artifacts_are_normalized() {
        let job = check("steps: [{name: t, run: x}]\nartifacts: [/out/./a//b.xml]").expect("valid");
        assert_eq!(job.artifacts, vec!["/out/a/b.xml"]);
    }
}
