//! Sandbox profiles: what a job's container may do, and the default limits.
//!
//! The `strict` profile, its seccomp filter and `gvisor` (strict under runsc) are compiled into
//! the binary, so cordon works from any directory. A profile file overrides only the fields it names, on top of the profile
//! it `inherits:` (default: `strict`).
//!
//! Rules a profile file is held to as it loads (the spec's folder may be a checkout, and so
//! the submitter's):
//! - it cannot take a built-in profile's name: `strict` always means the built-in, and a
//!   `strict.yaml` in a search dir (or named by path) is an error, unless it is an unchanged
//!   copy of the built-in;
//! - its seccomp file must deny what it does not name (`defaultAction`) and be well-formed
//!   ([`check_seccomp`]); the engine must then record that very filter (`docker::config::verify`);
//! - `runtime` is `runc` or `runsc` (gVisor), or unset: the engine's default;
//! - `user: "0:0"` loads: whether root may run is the operator's call, made in
//!   [`super::validate`] (`allow_root`), whatever `cap_add` says;
//! - files are read only if regular and at most 1 MiB.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::units::{Size, Span};

const STRICT_YAML: &str = include_str!("../../sandbox-profiles/strict.yaml");
const STRICT_SECCOMP: &str = include_str!("../../sandbox-profiles/seccomp-strict.json");
const GVISOR_YAML: &str = include_str!("../../sandbox-profiles/gvisor.yaml");

/// Names of the profiles compiled into cordon.
pub const BUILTIN_PROFILES: &[&str] = &["strict", "gvisor"];

/// The OCI runtimes a profile may name: `runc` (what the engine uses by default) and `runsc`
/// (gVisor). Unset means the engine's default.
pub const RUNTIMES: &[&str] = &["runc", "runsc"];

/// The runtime name of gVisor.
pub const RUNSC: &str = "runsc";

/// A profile as written in a file: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub description: Option<String>,
    pub inherits: Option<String>,
    pub user: Option<String>,
    pub read_only_root: Option<bool>,
    pub no_new_privileges: Option<bool>,
    pub cap_drop: Option<Vec<String>>,
    pub cap_add: Option<Vec<String>>,
    pub seccomp: Option<String>,
    pub allow_egress: Option<bool>,
    pub init: Option<bool>,
    pub runtime: Option<String>,
    pub kill_grace: Option<Span>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub artifacts: ArtifactCapsFile,
}

/// Limits as written in a profile or a spec: every field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(default, deserialize_with = "super::units::cpus_opt")]
    pub cpus: Option<f64>,
    pub memory: Option<Size>,
    pub pids: Option<i64>,
    pub output: Option<Size>,
    pub scratch: Option<Size>,
    pub nofile: Option<i64>,
    pub timeout: Option<Span>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactCapsFile {
    pub max_total: Option<Size>,
    pub max_file: Option<Size>,
    pub max_entries: Option<u64>,
}

/// The limits a job runs under, every one set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    pub cpus: f64,
    pub memory: Size,
    pub pids: i64,
    pub output: Size,
    pub scratch: Size,
    pub nofile: i64,
    /// A step's timeout when the step sets none.
    pub timeout: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactCaps {
    pub max_total: Size,
    pub max_file: Size,
    pub max_entries: u64,
}

/// A resolved profile: every field has a value.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxProfile {
    pub name: String,
    pub description: String,
    pub uid: u32,
    pub gid: u32,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    /// Where the seccomp filter came from (a path, or `builtin:strict`).
    pub seccomp_source: String,
    /// The filter itself, as JSON, passed to the engine.
    #[serde(skip)]
    pub seccomp_json: String,
    pub allow_egress: bool,
    pub init: bool,
    pub runtime: Option<String>,
    pub kill_grace: Duration,
    pub limits: Limits,
    pub artifacts: ArtifactCaps,
}

impl SandboxProfile {
    /// Whether the sandbox runs under gVisor.
    pub fn is_runsc(&self) -> bool {
        self.runtime.as_deref() == Some(RUNSC)
    }
}

/// Where to look for `profile: NAME`: the spec's own `sandbox-profiles/` folder, then
/// `$CORDON_PROFILE_DIR`; a built-in name (`strict`) is never looked up here, it is always
/// the built-in profile.
pub fn search_dirs(spec_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![spec_dir.join("sandbox-profiles")];
    if let Some(dir) = std::env::var_os("CORDON_PROFILE_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs
}

/// Loads a profile by name (`strict`) or path (`./profiles/mine.yaml`).
pub fn load(name_or_path: &str, spec_dir: &Path) -> Result<SandboxProfile, SpecError> {
    load_depth(name_or_path, spec_dir, 0)
}

fn load_depth(
    name_or_path: &str,
    spec_dir: &Path,
    depth: usize,
) -> Result<SandboxProfile, SpecError> {
    if depth > 8 {
        return Err(SpecError::Profile {
            profile: name_or_path.to_string(),
            reason: "`inherits:` chain is longer than 8 profiles (a cycle?)".into(),
        });
    }
    let is_path = name_or_path.contains('/')
        || name_or_path.ends_with(".yaml")
        || name_or_path.ends_with(".yml");
    if !is_path && BUILTIN_PROFILES.contains(&name_or_path) {
        // A built-in name always means the built-in profile: a file in a search dir must not
        // take its place (a checkout's `sandbox-profiles/strict.yaml` would otherwise turn
        // every default job into the submitter's profile).
        for dir in search_dirs(spec_dir) {
            let candidate = dir.join(format!("{name_or_path}.yaml"));
            if std::fs::symlink_metadata(&candidate).is_ok() {
                refuse_builtin_name(name_or_path, &candidate)?;
            }
        }
        return builtin(name_or_path);
    }
    let file = if is_path {
        let p = spec_dir.join(name_or_path);
        Some(p)
    } else {
        if name_or_path.is_empty()
            || !name_or_path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SpecError::Profile {
                profile: name_or_path.to_string(),
                reason:
                    "a profile name is letters, digits, `-` and `_`; use a path with `/` for a file"
                        .into(),
            });
        }
        search_dirs(spec_dir)
            .into_iter()
            .map(|d| d.join(format!("{name_or_path}.yaml")))
            .find(|p| p.is_file())
    };

    let Some(path) = file else {
        return Err(SpecError::Profile {
            profile: name_or_path.to_string(),
            reason: format!(
                "no such profile: looked for {name_or_path}.yaml in {} and among the built-in profiles ({})",
                search_dirs(spec_dir)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                BUILTIN_PROFILES.join(", ")
            ),
        });
    };

    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name_or_path.to_string());
    if BUILTIN_PROFILES.contains(&name.as_str()) {
        // Named by path: the same rule, or the job would report a built-in's name for it.
        refuse_builtin_name(&name, &path)?;
        return builtin(&name);
    }
    let text = read_capped(&path, MAX_PROFILE_BYTES, &name)?;
    let file: ProfileFile = super::parse_yaml(&text, &path)?;
    let profile_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let parent_name = file
        .inherits
        .clone()
        .unwrap_or_else(|| "strict".to_string());
    if parent_name == name {
        return Err(SpecError::Profile {
            profile: name,
            reason: format!(
                "{} inherits itself (`inherits: {parent_name}`); a profile of your own may `inherits: strict`",
                path.display()
            ),
        });
    }
    let parent = load_depth(&parent_name, &profile_dir, depth + 1)?;
    apply(parent, &file, name, &profile_dir)
}

/// The most a profile file may hold.
const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// The most a seccomp file may hold (Docker's default filter is about 20 KiB).
const MAX_SECCOMP_BYTES: u64 = 1 << 20;

/// The built-in profile called `name`.
fn builtin(name: &str) -> Result<SandboxProfile, SpecError> {
    match name {
        "strict" => builtin_strict(),
        "gvisor" => builtin_gvisor(),
        other => Err(SpecError::Profile {
            profile: other.to_string(),
            reason: "not a built-in profile (a bug in cordon)".into(),
        }),
    }
}

/// A profile file at `path` named like the built-in `name`: an error naming the file and the
/// fix. Only an unchanged copy of the built-in itself (as a deployment may ship beside the
/// binary) is let through, since loading it gives exactly the built-in.
fn refuse_builtin_name(name: &str, path: &Path) -> Result<(), SpecError> {
    let builtin_text = match name {
        "strict" => STRICT_YAML,
        "gvisor" => GVISOR_YAML,
        _ => "",
    };
    let same = std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && read_capped(path, MAX_PROFILE_BYTES, name).is_ok_and(|t| t == builtin_text);
    if same {
        return Ok(());
    }
    Err(SpecError::Profile {
        profile: name.to_string(),
        reason: format!(
            "{} is named like the built-in profile `{name}`, which a file cannot replace: rename it; a profile of your own may `inherits: {name}`",
            path.display()
        ),
    })
}

/// Reads a profile's file (following links: profile files are the operator's or the
/// spec's), refusing anything but a regular file and more than `cap` bytes.
fn read_capped(path: &Path, cap: u64, profile: &str) -> Result<String, SpecError> {
    use std::io::Read;
    let read_err = |source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(SpecError::Profile {
            profile: profile.to_string(),
            reason: format!("{} is not a regular file", path.display()),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > cap {
        return Err(SpecError::Profile {
            profile: profile.to_string(),
            reason: format!(
                "{} is larger than {}, the most cordon reads",
                path.display(),
                Size(cap)
            ),
        });
    }
    String::from_utf8(bytes).map_err(|_| SpecError::Profile {
        profile: profile.to_string(),
        reason: format!("{} is not UTF-8 text", path.display()),
    })
}

/// The built-in `strict` profile.
pub fn builtin_strict() -> Result<SandboxProfile, SpecError> {
    let path = PathBuf::from("<builtin>/strict.yaml");
    let file: ProfileFile = super::parse_yaml(STRICT_YAML, &path)?;
    let base = SandboxProfile {
        name: "strict".into(),
        description: String::new(),
        uid: 0,
        gid: 0,
        read_only_root: false,
        no_new_privileges: false,
        cap_drop: vec![],
        cap_add: vec![],
        seccomp_source: "builtin:strict".into(),
        seccomp_json: STRICT_SECCOMP.to_string(),
        allow_egress: false,
        init: true,
        runtime: None,
        kill_grace: Duration::from_secs(2),
        limits: Limits {
            cpus: 0.0,
            memory: Size(0),
            pids: 0,
            output: Size(0),
            scratch: Size(0),
            nofile: 0,
            timeout: Span(Duration::ZERO),
        },
        artifacts: ArtifactCaps {
            max_total: Size(0),
            max_file: Size(0),
            max_entries: 0,
        },
    };
    let mut file = file;
    // The built-in profile's seccomp file is compiled in; do not look for it on disk.
    file.seccomp = None;
    let profile = apply(base, &file, "strict".into(), Path::new("."))?;
    // Every field must be set by strict.yaml itself: zero values would mean a hole.
    if profile.uid == 0 || profile.limits.memory.0 == 0 || profile.limits.pids == 0 {
        return Err(SpecError::Profile {
            profile: "strict".into(),
            reason: "the built-in profile is incomplete (a bug in cordon)".into(),
        });
    }
    Ok(profile)
}

/// The built-in `gvisor` profile: `strict` under runsc.
pub fn builtin_gvisor() -> Result<SandboxProfile, SpecError> {
    let path = PathBuf::from("<builtin>/gvisor.yaml");
    let file: ProfileFile = super::parse_yaml(GVISOR_YAML, &path)?;
    if file.inherits.as_deref() != Some("strict") || file.seccomp.is_some() {
        return Err(SpecError::Profile {
            profile: "gvisor".into(),
            reason: "the built-in profile must inherit strict's filter (a bug in cordon)".into(),
        });
    }
    apply(builtin_strict()?, &file, "gvisor".into(), Path::new("."))
}

fn apply(
    mut p: SandboxProfile,
    f: &ProfileFile,
    name: String,
    profile_dir: &Path,
) -> Result<SandboxProfile, SpecError> {
    let err = |reason: String| SpecError::Profile {
        profile: name.clone(),
        reason,
    };
    p.name = name.clone();
    if let Some(d) = &f.description {
        p.description = d.trim().to_string();
    }
    if let Some(user) = &f.user {
        let (uid, gid) = parse_user(user).map_err(err)?;
        p.uid = uid;
        p.gid = gid;
    }
    if let Some(v) = f.read_only_root {
        p.read_only_root = v;
    }
    if let Some(v) = f.no_new_privileges {
        p.no_new_privileges = v;
    }
    if let Some(v) = &f.cap_drop {
        p.cap_drop = v.iter().map(|c| normalize_cap(c)).collect();
    }
    if let Some(v) = &f.cap_add {
        p.cap_add = v.iter().map(|c| normalize_cap(c)).collect();
    }
    if let Some(s) = &f.seccomp {
        let path = profile_dir.join(s);
        let json = read_capped(&path, MAX_SECCOMP_BYTES, &name)?;
        check_seccomp(&json)
            .map_err(|reason| err(format!("seccomp file {}: {reason}", path.display())))?;
        p.seccomp_source = path.display().to_string();
        p.seccomp_json = json;
    }
    if let Some(v) = f.allow_egress {
        p.allow_egress = v;
    }
    if let Some(v) = f.init {
        p.init = v;
    }
    if let Some(v) = &f.runtime {
        if !RUNTIMES.contains(&v.as_str()) {
            return Err(err(format!(
                "`runtime: {v}` is not one cordon knows: use {} (gVisor), or leave it unset for the engine's default",
                RUNTIMES.join(" or ")
            )));
        }
        p.runtime = Some(v.clone());
    }
    if let Some(v) = f.kill_grace {
        p.kill_grace = v.0;
    }
    p.limits = merge_limits(&p.limits, &f.limits);
    if let Some(v) = f.artifacts.max_total {
        p.artifacts.max_total = v;
    }
    if let Some(v) = f.artifacts.max_file {
        p.artifacts.max_file = v;
    }
    if let Some(v) = f.artifacts.max_entries {
        p.artifacts.max_entries = v;
    }
    // A profile with uid 0 loads; `spec::validate` refuses it unless the operator allows
    // root (`allow_root`), whatever `cap_add` says. That is the one place that decides.
    Ok(p)
}

/// Every seccomp action the engine (runc, libseccomp) knows.
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

/// The actions that deny a syscall: a filter's `defaultAction` must be one of them, so what
/// the filter does not name is refused, not allowed (or only logged, or handed to a tracer).
const SECCOMP_DENY_ACTIONS: &[&str] = &[
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
];

/// Checks a Docker-format seccomp filter: a JSON object whose `defaultAction` denies and whose
/// `syscalls` entries each name syscalls (`names`: strings) and a known `action`.
pub fn check_seccomp(json: &str) -> Result<(), String> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(json).map_err(|e| format!("is not valid JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("is not a JSON object (a Docker-format seccomp profile)".into());
    };
    match obj.get("defaultAction") {
        None => return Err("has no `defaultAction`".into()),
        Some(Value::String(a)) if SECCOMP_DENY_ACTIONS.contains(&a.as_str()) => {}
        Some(a) => {
            return Err(format!(
                "`defaultAction` is {a}, which does not deny: use one of {} so that what the filter does not name is refused",
                SECCOMP_DENY_ACTIONS.join(", ")
            ));
        }
    }
    let syscalls = match obj.get("syscalls") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("`syscalls` is not an array".into()),
    };
    for (i, entry) in syscalls.iter().enumerate() {
        let at = format!("`syscalls[{i}]`");
        let Some(e) = entry.as_object() else {
            return Err(format!("{at} is not an object"));
        };
        let names_ok = match (e.get("names"), e.get("name")) {
            (Some(Value::Array(names)), _) => {
                !names.is_empty()
                    && names
                        .iter()
                        .all(|n| n.as_str().is_some_and(|n| !n.is_empty()))
            }
            (None, Some(Value::String(n))) => !n.is_empty(),
            _ => false,
        };
        if !names_ok {
            return Err(format!(
                "{at}: `names` must be a non-empty array of syscall names (strings)"
            ));
        }
        match e.get("action") {
            Some(Value::String(a)) if SECCOMP_ACTIONS.contains(&a.as_str()) => {}
            Some(a) => {
                return Err(format!(
                    "{at}: `action` {a} is not a seccomp action ({})",
                    SECCOMP_ACTIONS.join(", ")
                ));
            }
            None => return Err(format!("{at} has no `action`")),
        }
    }
    Ok(())
}

/// Overrides `base` with whatever `over` sets.
pub fn merge_limits(base: &Limits, over: &LimitsFile) -> Limits {
    Limits {
        cpus: over.cpus.unwrap_or(base.cpus),
        memory: over.memory.unwrap_or(base.memory),
        pids: over.pids.unwrap_or(base.pids),
        output: over.output.unwrap_or(base.output),
        scratch: over.scratch.unwrap_or(base.scratch),
        nofile: over.nofile.unwrap_or(base.nofile),
        timeout: over.timeout.unwrap_or(base.timeout),
    }
}

fn parse_user(user: &str) -> Result<(u32, u32), String> {
    let (u, g) = user.split_once(':').unwrap_or((user, user));
    let uid: u32 = u
        .parse()
        .map_err(|_| format!("`user: {user}` must be numeric uid:gid, like \"1000:1000\""))?;
    let gid: u32 = g
        .parse()
        .map_err(|_| format!("`user: {user}` must be numeric uid:gid, like \"1000:1000\""))?;
    Ok((uid, gid))
}

fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_strict_sets_every_field() {
        let p = builtin_strict().expect("strict loads");
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert!(p.read_only_root && p.no_new_privileges && p.init);
        assert!(!p.allow_egress);
        assert_eq!(p.cap_drop, vec!["ALL"]);
        assert!(p.cap_add.is_empty());
        assert_eq!(p.limits.memory, Size(1 << 30));
        assert_eq!(p.limits.pids, 256);
        assert!(p.seccomp_json.contains("defaultAction"));
        assert_eq!(p.seccomp_source, "builtin:strict");
    }

    #[test]
    fn a_profile_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let profiles = dir.path().join("sandbox-profiles");
        std::fs::create_dir(&profiles).expect("mkdir");
        std::fs::write(
            profiles.join("roomy.yaml"),
            "inherits: strict\nlimits: { memory: 2GiB, pids: 512 }\n",
        )
        .expect("write");
        let p = load("roomy", dir.path()).expect("loads");
        assert_eq!(p.name, "roomy");
        assert_eq!(p.limits.memory, Size(2 << 30));
        assert_eq!(p.limits.pids, 512);
        assert_eq!(p.limits.cpus, 1.0);
        assert_eq!(p.cap_drop, vec!["ALL"]);
        assert!(p.read_only_root);
    }

    #[test]
    fn unknown_profiles_and_fields_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load("nope", dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("profile `nope`") && e.contains("no such profile"),
            "{e}"
        );

        std::fs::write(dir.path().join("bad.yaml"), "limits: { memroy: 1GiB }\n").expect("write");
        let e = load("./bad.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("memroy"), "{e}");
    }

    #[test]
    fn root_user_is_refused() {
        // The profile loads; validate refuses it unless the operator allows root.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("root.yaml"), "user: \"0:0\"\n").expect("write");
        let p = load("./root.yaml", dir.path()).expect("a root profile loads");
        assert_eq!((p.uid, p.gid), (0, 0));
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(
            &spec_path,
            "profile: ./root.yaml\nsteps: [{name: t, run: x}]\n",
        )
        .expect("write");
        let e = crate::spec::load(&spec_path, &crate::spec::OperatorPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`profile`") && e.contains("allow_root"), "{e}");
    }

    #[test]
    fn root_with_added_capabilities_is_refused_unless_the_operator_allows_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("admin.yaml"),
            "user: \"0:0\"\ncap_add: [SYS_ADMIN]\n",
        )
        .expect("write");
        let spec_path = dir.path().join("job.yaml");
        std::fs::write(
            &spec_path,
            "profile: ./admin.yaml\nsteps: [{name: t, run: x}]\n",
        )
        .expect("write");
        for policy in [
            crate::spec::OperatorPolicy::default(),
            crate::spec::OperatorPolicy::for_cli(),
        ] {
            let e = crate::spec::load(&spec_path, &policy)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("runs the sandbox as root") && e.contains("whatever its `cap_add` says"),
                "{e}"
            );
        }
        let allowed = crate::spec::OperatorPolicy {
            allow_root: true,
            ..crate::spec::OperatorPolicy::default()
        };
        let job = crate::spec::load(&spec_path, &allowed).expect("the operator allows root");
        assert_eq!(job.profile.uid, 0);
        assert_eq!(job.profile.cap_add, vec!["SYS_ADMIN"]);
    }

    #[test]
    fn a_file_cannot_take_a_builtin_profiles_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let profiles = dir.path().join("sandbox-profiles");
        std::fs::create_dir(&profiles).expect("mkdir");
        std::fs::write(
            profiles.join("strict.yaml"),
            "inherits: strict\nuser: \"0:0\"\n",
        )
        .expect("write");
        for name in ["strict", "./sandbox-profiles/strict.yaml"] {
            let e = load(name, dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("profile `strict`")
                    && e.contains("sandbox-profiles/strict.yaml")
                    && e.contains("named like the built-in profile `strict`")
                    && e.contains("rename it; a profile of your own may `inherits: strict`"),
                "{name}: {e}"
            );
        }
        // Not even as a broken link or a directory.
        std::fs::remove_file(profiles.join("strict.yaml")).expect("rm");
        std::os::unix::fs::symlink("/nonexistent", profiles.join("strict.yaml")).expect("ln");
        let e = load("strict", dir.path()).unwrap_err().to_string();
        assert!(e.contains("named like the built-in"), "{e}");
        // An unchanged copy of the built-in is the built-in.
        std::fs::remove_file(profiles.join("strict.yaml")).expect("rm");
        std::fs::write(profiles.join("strict.yaml"), STRICT_YAML).expect("write");
        let p = load("strict", dir.path()).expect("the built-in");
        assert_eq!(p.seccomp_source, "builtin:strict");
        // A profile of its own that inherits `strict` gets the built-in under it.
        std::fs::write(profiles.join("strict.yaml"), "user: \"0:0\"\n").expect("write");
        std::fs::write(profiles.join("mine.yaml"), "inherits: strict\n").expect("write");
        let p = load("mine", dir.path()).expect("mine");
        assert_eq!((p.name.as_str(), p.uid), ("mine", 1000));
    }

    #[test]
    fn gvisor_is_strict_under_runsc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = load("gvisor", dir.path()).expect("gvisor loads");
        let s = builtin_strict().expect("strict");
        assert_eq!(g.name, "gvisor");
        assert_eq!(g.runtime.as_deref(), Some("runsc"));
        assert!(g.is_runsc() && !s.is_runsc());
        assert_eq!((g.uid, g.gid), (s.uid, s.gid));
        assert_eq!(g.cap_drop, s.cap_drop);
        assert!(g.read_only_root && g.no_new_privileges && g.init && !g.allow_egress);
        assert_eq!(g.seccomp_source, "builtin:strict");
        assert_eq!(g.seccomp_json, s.seccomp_json);
        assert_eq!(g.limits, s.limits);
        assert_eq!(g.artifacts, s.artifacts);
        assert!(g.description.contains("gVisor"), "{}", g.description);
        // A profile of one's own may start from it.
        std::fs::write(
            dir.path().join("mine.yaml"),
            "inherits: gvisor\nlimits: { memory: 2GiB }\n",
        )
        .expect("write");
        let p = load("./mine.yaml", dir.path()).expect("mine");
        assert!(p.is_runsc());
        assert_eq!(p.limits.memory, Size(2 << 30));
    }

    #[test]
    fn a_file_cannot_take_the_gvisor_profiles_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let profiles = dir.path().join("sandbox-profiles");
        std::fs::create_dir(&profiles).expect("mkdir");
        // The same settings as gvisor, but runc: the name must not carry them.
        std::fs::write(
            profiles.join("gvisor.yaml"),
            "inherits: strict\nruntime: runc\n",
        )
        .expect("write");
        for name in ["gvisor", "./sandbox-profiles/gvisor.yaml"] {
            let e = load(name, dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("named like the built-in profile `gvisor`")
                    && e.contains("`inherits: gvisor`"),
                "{name}: {e}"
            );
        }
        std::fs::write(profiles.join("gvisor.yaml"), GVISOR_YAML).expect("write");
        assert!(load("gvisor", dir.path()).expect("the built-in").is_runsc());
    }

    #[test]
    fn a_runtime_is_runc_runsc_or_the_engines_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, want) in [
            ("runtime: runc\n", Some("runc")),
            ("runtime: runsc\n", Some("runsc")),
            ("runtime: null\n", None),
            ("limits: { pids: 64 }\n", None),
        ] {
            std::fs::write(dir.path().join("p.yaml"), text).expect("write");
            let p = load("./p.yaml", dir.path()).expect(text);
            assert_eq!(p.runtime.as_deref(), want, "{text}");
        }
        for bad in ["kata", "io.containerd.runc.v2", "RUNSC", "\"\""] {
            std::fs::write(dir.path().join("p.yaml"), format!("runtime: {bad}\n")).expect("write");
            let e = load("./p.yaml", dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("profile `p`")
                    && e.contains("is not one cordon knows")
                    && e.contains("runc or runsc"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_profile_cannot_inherit_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("me.yaml"), "inherits: me\n").expect("write");
        let e = load("./me.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("inherits itself"), "{e}");
    }

    #[test]
    fn the_builtin_seccomp_filter_passes_its_own_checks() {
        check_seccomp(STRICT_SECCOMP).expect("strict's filter");
    }

    #[test]
    fn seccomp_files_are_checked_when_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(&str, &str)] = &[
            ("{", "is not valid JSON"),
            ("[]", "is not a JSON object"),
            ("{\"syscalls\": []}", "has no `defaultAction`"),
            (
                "{\"defaultAction\": \"SCMP_ACT_ALLOW\"}",
                "`defaultAction` is \"SCMP_ACT_ALLOW\", which does not deny",
            ),
            ("{\"defaultAction\": \"SCMP_ACT_LOG\"}", "does not deny"),
            ("{\"defaultAction\": \"SCMP_ACT_TRACE\"}", "does not deny"),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": {}}",
                "`syscalls` is not an array",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{\"names\": \"read\", \"action\": \"SCMP_ACT_ALLOW\"}]}",
                "`syscalls[0]`: `names` must be a non-empty array",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{\"names\": [\"read\", 3], \"action\": \"SCMP_ACT_ALLOW\"}]}",
                "`names` must be",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"ALLOW\"}]}",
                "`syscalls[0]`: `action` \"ALLOW\" is not a seccomp action",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\"}, {\"names\": [\"write\"]}]}",
                "`syscalls[1]` has no `action`",
            ),
        ];
        for (json, want) in cases {
            std::fs::write(dir.path().join("f.json"), json).expect("write");
            std::fs::write(dir.path().join("p.yaml"), "seccomp: f.json\n").expect("write");
            let e = load("./p.yaml", dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("profile `p`")
                    && e.contains("seccomp file")
                    && e.contains("f.json")
                    && e.contains(want),
                "{json}: {e} lacks {want:?}"
            );
        }
        std::fs::write(
            dir.path().join("f.json"),
            "{\"defaultAction\": \"SCMP_ACT_KILL_PROCESS\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\"}, {\"name\": \"mkdir\", \"action\": \"SCMP_ACT_ERRNO\"}]}",
        )
        .expect("write");
        let p = load("./p.yaml", dir.path()).expect("a denying filter loads");
        assert!(p.seccomp_source.ends_with("f.json"));
        // Not a regular file, or too big: refused before it is read whole.
        std::fs::write(dir.path().join("p.yaml"), "seccomp: /dev/zero\n").expect("write");
        let e = load("./p.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("/dev/zero is not a regular file"), "{e}");
    }
}
