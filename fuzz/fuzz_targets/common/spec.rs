#![allow(dead_code)] // each target uses its own part of this
//! What the spec targets share: a fixture directory to validate against, and the rules the
//! service applies to a submitted spec before `cordon::spec::validate` sees it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cordon::server::config::ServerConfig;
use cordon::spec::{self, Job, JobSpec, SpecError};

/// A directory laid out like a service's `profiles_dir` plus an uploaded workspace:
///
/// - `sandbox-profiles/strict.yaml` (the repository's own) and `egress.yaml` (allows egress),
///   so both profile branches of `validate` are reachable;
/// - `workspace/` with a few files for `prepare.cache_key_files` to match;
///
/// and the service's default configuration pointed at it (`config`).
///
/// One per user, under the system temp dir, made idempotently (every file written to a temp
/// name and renamed), so concurrent fuzz processes share it and nothing leaks per run.
pub struct Fixture {
    pub base: PathBuf,
    pub workspace: PathBuf,
    /// `ServerConfig::default()` with `profiles_dir` = `base`: its `policy` is the operator
    /// policy a service applies when its config names none.
    pub config: ServerConfig,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let uid = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        let base = std::env::temp_dir().join(format!(
            "cordon-fuzz-{}/spec-fixture-v1",
            uid.unwrap_or(0)
        ));
        let files: &[(&str, &str)] = &[
            (
                "sandbox-profiles/strict.yaml",
                include_str!("../../../sandbox-profiles/strict.yaml"),
            ),
            (
                "sandbox-profiles/seccomp-strict.json",
                include_str!("../../../sandbox-profiles/seccomp-strict.json"),
            ),
            (
                "sandbox-profiles/egress.yaml",
                "inherits: strict\nallow_egress: true\nlimits: { memory: 2GiB }\n",
            ),
            ("workspace/requirements.txt", "pytest==8.3.3\n"),
            ("workspace/requirements-dev.txt", "-r requirements.txt\ncoverage\n"),
            ("workspace/pyproject.toml", "[project]\nname = \"app\"\n"),
            ("workspace/src/app.py", "def f():\n    return 1\n"),
            ("workspace/tests/test_app.py", "from app import f\n"),
        ];
        for (rel, text) in files {
            let path = base.join(rel);
            if std::fs::read_to_string(&path).is_ok_and(|t| t == *text) {
                continue;
            }
            let dir = path.parent().expect("fixture paths have a parent");
            std::fs::create_dir_all(dir).expect("create the fixture dir");
            let tmp = dir.join(format!(".{}.{}", std::process::id(), rel.replace('/', "_")));
            std::fs::write(&tmp, text).expect("write a fixture file");
            std::fs::rename(&tmp, &path).expect("place a fixture file");
        }
        let workspace = base
            .join("workspace")
            .canonicalize()
            .expect("resolve the fixture workspace");
        let config = ServerConfig {
            profiles_dir: base.clone(),
            ..ServerConfig::default()
        };
        Fixture {
            base,
            workspace,
            config,
        }
    })
}

/// What `cordon::server::upload::prepare` does to a submitted spec before validating it:
/// a profile is a name, never a path; `pass_env` only names variables the service allows
/// (none by default); the workspace is the unpacked upload (here, the fixture's). `None`
/// for a spec the service refuses at this point.
///
/// Applying these keeps the fuzzer on what a remote submitter can reach: without them a
/// spec's `profile: /dev/stdin` would have `validate` read the host's files, which is the
/// trusted CLI user's business, not a submitter's.
pub fn as_submitted(mut spec: JobSpec, fx: &Fixture) -> Option<JobSpec> {
    if let Some(p) = &spec.profile
        && (p.contains('/') || p.contains('\\') || p.ends_with(".yaml") || p.ends_with(".yml"))
    {
        return None;
    }
    if !spec.pass_env.is_empty() {
        return None;
    }
    if let Some(w) = &mut spec.workspace {
        w.source = fx.workspace.clone();
    }
    Some(spec)
}

/// `cordon::spec::validate` as the service calls it: the profiles dir as base, `spec` as the
/// spec's name, the service's default operator policy.
pub fn validate(spec: JobSpec, fx: &Fixture) -> Result<Job, SpecError> {
    spec::validate(spec, &fx.base, Path::new("spec"), &fx.config.policy)
}

/// Checks what every validated job must satisfy, whatever the input.
pub fn check_job(job: &Job) {
    assert!(!job.steps.is_empty(), "a valid job has a step");
    for a in &job.artifacts {
        assert!(
            a.starts_with('/') && !a.split('/').any(|c| c == ".." || c == "."),
            "artifact path `{a}` is not normalized"
        );
    }
    if let Some(w) = &job.workspace {
        assert!(w.path.starts_with('/'), "workspace path `{}`", w.path);
    }
}

/// Validated jobs compared without their random id.
pub fn same_job(a: &Job, b: &Job) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.id.clear();
    b.id.clear();
    format!("{a:?}") == format!("{b:?}")
}
