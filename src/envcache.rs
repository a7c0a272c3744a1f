//! Dependency environments: images made by a job's `prepare`, keyed by everything that
//! determines them, so a repeat job skips the install.
//!
//! The key is a SHA-256 of: the base image id, the install command and its environment (the
//! job's variables and the prepare's own), the
//! contents of the `cache_key_files`, the allowlist, the sandbox user and the workspace path.
//! The image is tagged `cordon-env:<first 32 hex of the key>` and labelled with what it was
//! built from. Last use is the modification time of a marker file under the state directory
//! (`$CORDON_STATE_DIR`, else `$XDG_CACHE_HOME/cordon`, else `~/.cache/cordon`). Builds of one
//! key are serialized across processes by a lock file there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::{Job, Prepare};

/// The image repository of environment images.
pub const REPO: &str = "cordon-env";

pub mod labels {
    pub const ENV: &str = "org.cordon.env";
    pub const KEY: &str = "org.cordon.env.key";
    pub const BASE: &str = "org.cordon.env.base";
    pub const COMMAND: &str = "org.cordon.env.command";
    pub const FILES: &str = "org.cordon.env.files";
    pub const CREATED: &str = "org.cordon.env.created";
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{action} failed")]
    Engine {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The environment key of a job's `prepare` on a base image.
pub fn key(base_image_id: &str, job: &Job, prep: &Prepare) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("v", b"cordon-env-2");
    field("base", base_image_id.as_bytes());
    field("run", prep.run.as_bytes());
    // The install sees the job's variables too (`policy::prepare_command`): a PIP_INDEX_URL
    // there changes what gets installed.
    for (k, v) in &job.env {
        field("job-env", format!("{k}={v}").as_bytes());
    }
    for (k, v) in &prep.env {
        field("env", format!("{k}={v}").as_bytes());
    }
    for (path, contents) in &prep.key_files {
        field("file", path.as_bytes());
        field("contents", contents);
    }
    let mut hosts = prep.allow_hosts.clone();
    hosts.sort();
    field("hosts", hosts.join(",").as_bytes());
    field(
        "user",
        format!("{}:{}", job.profile.uid, job.profile.gid).as_bytes(),
    );
    field("path", job.workspace_path().as_bytes());
    hex::encode(h.finalize())
}

/// The image reference for a key.
pub fn reference(key: &str) -> String {
    format!("{REPO}:{}", &key[..32.min(key.len())])
}

pub use crate::state::state_dir;

fn marker(key: &str) -> PathBuf {
    state_dir().join("envs").join(format!("{key}.used"))
}

/// Records that the environment `key` was used now.
pub fn touch(key: &str) {
    let path = marker(key);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::File::create(&path).and_then(|f| f.set_modified(SystemTime::now()));
}

fn last_used(key: &str) -> Option<SystemTime> {
    std::fs::metadata(marker(key))
        .and_then(|m| m.modified())
        .ok()
}

/// Waits for the build lock of environment `key` (see [`crate::state::BuildLock`]).
pub async fn lock(key: &str) -> Result<crate::state::BuildLock, crate::state::LockError> {
    crate::state::BuildLock::take(key, || {}).await
}

/// The labels written on a new environment image.
pub fn image_labels(key: &str, base: &str, prep: &Prepare) -> HashMap<String, String> {
    let files: Vec<&str> = prep.key_files.iter().map(|(p, _)| p.as_str()).collect();
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    HashMap::from([
        (labels::ENV.to_string(), "true".to_string()),
        (labels::KEY.to_string(), key.to_string()),
        (labels::BASE.to_string(), base.to_string()),
        (
            labels::COMMAND.to_string(),
            prep.run.chars().take(500).collect(),
        ),
        (labels::FILES.to_string(), files.join(",")),
        (labels::CREATED.to_string(), created.to_string()),
    ])
}

/// One cached environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvEntry {
    pub key: String,
    pub reference: String,
    pub image_id: String,
    pub size_bytes: u64,
    pub created: SystemTime,
    pub last_used: SystemTime,
    pub base: String,
    pub command: String,
    pub files: Vec<String>,
}

/// Every environment image in the engine, most recently used first.
pub async fn list(docker: &Docker) -> Result<Vec<EnvEntry>, CacheError> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{}=true", labels::ENV)])]);
    let opts = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(opts))
        .await
        .map_err(|source| CacheError::Engine {
            action: "listing environment images".into(),
            source,
        })?;
    // An environment's own size is what its install added on top of its base image.
    let all = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .map_err(|source| CacheError::Engine {
            action: "listing images".into(),
            source,
        })?;
    let size_of = |reference: &str| {
        all.iter()
            .find(|i| i.repo_tags.iter().any(|t| t == reference))
            .map(|i| i.size.max(0) as u64)
    };
    let mut out = Vec::new();
    for img in images {
        let l = &img.labels;
        let Some(key) = l.get(labels::KEY).cloned() else {
            continue;
        };
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(img.created.max(0) as u64);
        out.push(EnvEntry {
            reference: reference(&key),
            last_used: last_used(&key).unwrap_or(created),
            key,
            image_id: img.id.clone(),
            size_bytes: (img.size.max(0) as u64)
                .saturating_sub(l.get(labels::BASE).and_then(|b| size_of(b)).unwrap_or(0)),
            created,
            base: l.get(labels::BASE).cloned().unwrap_or_default(),
            command: l.get(labels::COMMAND).cloned().unwrap_or_default(),
            files: l
                .get(labels::FILES)
                .map(|f| {
                    f.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.last_used));
    Ok(out)
}

/// What to prune: environments unused for longer than `older_than`, then the least recently
/// used ones until the rest fit in `max_total_bytes`.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    pub older_than: Option<Duration>,
    pub max_total_bytes: Option<u64>,
    pub all: bool,
}

/// Chooses the entries to remove (pure, for testing). `entries` most recently used first.
pub fn choose(entries: &[EnvEntry], policy: &PrunePolicy, now: SystemTime) -> Vec<EnvEntry> {
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for e in entries {
        let idle = now.duration_since(e.last_used).unwrap_or_default();
        if policy.all || policy.older_than.is_some_and(|age| idle > age) {
            remove.push(e.clone());
        } else {
            keep.push(e.clone());
        }
    }
    if let Some(cap) = policy.max_total_bytes {
        let mut total: u64 = keep.iter().map(|e| e.size_bytes).sum();
        while total > cap {
            let Some(oldest) = keep.pop() else { break };
            total -= oldest.size_bytes;
            remove.push(oldest);
        }
    }
    remove
}

/// Removes the chosen environments; returns those actually removed (an image in use by a
/// running job is kept).
pub async fn prune(docker: &Docker, policy: &PrunePolicy) -> Result<Vec<EnvEntry>, CacheError> {
    let entries = list(docker).await?;
    let mut removed = Vec::new();
    for e in choose(&entries, policy, SystemTime::now()) {
        let opts = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        match docker.remove_image(&e.reference, Some(opts), None).await {
            Ok(_) => {
                let _ = std::fs::remove_file(marker(&e.key));
                removed.push(e);
            }
            Err(err) => {
                tracing::warn!(image = %e.reference, error = %err, "could not remove an environment image")
            }
        }
    }
    Ok(removed)
}

/// The cap on the total size of environment images from `CORDON_ENV_CACHE_MAX` (`20GiB`).
pub fn configured_cap() -> Option<u64> {
    std::env::var("CORDON_ENV_CACHE_MAX")
        .ok()
        .and_then(|v| v.parse::<crate::spec::Size>().ok())
        .map(|s| s.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: u64, idle_secs: u64, now: SystemTime) -> EnvEntry {
        EnvEntry {
            key: key.into(),
            reference: reference(key),
            image_id: format!("sha256:{key}"),
            size_bytes: size,
            created: now - Duration::from_secs(idle_secs),
            last_used: now - Duration::from_secs(idle_secs),
            base: String::new(),
            command: String::new(),
            files: vec![],
        }
    }

    /// Whatever the install sees is in the key; what only the steps see is not.
    #[test]
    fn the_key_covers_what_the_install_sees_and_only_that() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        std::fs::write(dir.path().join("repo/requirements.txt"), "six\n").expect("write");
        let key_of = |extra: &str| {
            let path = dir.path().join("job.yaml");
            std::fs::write(
                &path,
                format!("workspace: {{ source: ./repo }}\nprepare: {{ run: pip install -r requirements.txt, cache_key_files: [requirements.txt] }}\n{extra}"),
            )
            .expect("write");
            let job =
                crate::spec::load(&path, &crate::spec::OperatorPolicy::for_cli()).expect("valid");
            let prep = job.prepare.clone().expect("prepare");
            key("sha256:base", &job, &prep)
        };
        let base = key_of("steps: [{name: t, run: pytest}]\n");
        assert_eq!(
            base,
            key_of("steps: [{name: t, run: 'pytest -x', env: { A: b }}]\n")
        );
        assert_ne!(
            base,
            key_of(
                "steps: [{name: t, run: pytest}]\nenv: { PIP_INDEX_URL: 'http://mirror/simple' }\n"
            )
        );
        std::fs::write(dir.path().join("repo/requirements.txt"), "six==1.16.0\n").expect("write");
        assert_ne!(base, key_of("steps: [{name: t, run: pytest}]\n"));
    }

    #[test]
    fn prune_by_age_then_by_size_least_recent_first() {
        let now = SystemTime::now();
        let entries = vec![
            entry("a", 100, 10, now),
            entry("b", 100, 100, now),
            entry("c", 100, 1000, now),
        ];
        let by_age = choose(
            &entries,
            &PrunePolicy {
                older_than: Some(Duration::from_secs(500)),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            by_age.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
        let by_size = choose(
            &entries,
            &PrunePolicy {
                max_total_bytes: Some(150),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            by_size.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["c", "b"]
        );
        let all = choose(
            &entries,
            &PrunePolicy {
                all: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(all.len(), 3);
        assert!(choose(&entries, &PrunePolicy::default(), now).is_empty());
    }
}
