//! Sandbox profiles: what a job's container may do, and the default limits.
//!
//! The `strict` profile and its seccomp filter are compiled into the binary, so cordon works
//! from any directory. A profile file overrides only the fields it names, on top of the profile
//! it `inherits:` (default: `strict`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::units::{Size, Span};

const STRICT_YAML: &str = include_str!("../../sandbox-profiles/strict.yaml");
const STRICT_SECCOMP: &str = include_str!("../../sandbox-profiles/seccomp-strict.json");

/// Names of the profiles compiled into cordon.
pub const BUILTIN_PROFILES: &[&str] = &["strict"];

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

/// Where to look for `profile: NAME`: the spec's own `sandbox-profiles/` folder, then
/// `$CORDON_PROFILE_DIR`, then the profiles compiled into cordon.
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
        if name_or_path == "strict" {
            return builtin_strict();
        }
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

    let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let file: ProfileFile = super::parse_yaml(&text, &path)?;
    let profile_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name_or_path.to_string());
    let parent_name = file
        .inherits
        .clone()
        .unwrap_or_else(|| "strict".to_string());
    let parent = if parent_name == name && !is_path {
        // `strict.yaml` in a profile dir that inherits `strict` means the built-in one.
        builtin_strict()?
    } else {
        load_depth(&parent_name, &profile_dir, depth + 1)?
    };
    apply(parent, &file, name, &profile_dir)
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
        let json = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str::<serde_json::Value>(&json).map_err(|e| {
            err(format!(
                "seccomp file {} is not valid JSON: {e}",
                path.display()
            ))
        })?;
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
    if p.uid == 0 && p.cap_add.is_empty() && f.user.is_some() {
        return Err(err(
            "`user` must not be root (uid 0): untrusted code never runs as root".into(),
        ));
    }
    Ok(p)
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
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("root.yaml"), "user: \"0:0\"\n").expect("write");
        let e = load("./root.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("must not be root"), "{e}");
    }
}
