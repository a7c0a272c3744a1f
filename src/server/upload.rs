//! A submission (spec text plus an optional workspace tar.gz) turned into a validated job.
//!
//! The rules a remote client lives by, on top of the spec's own validation:
//!
//! - the workspace comes as an upload, unpacked under the job's own directory with the
//!   artifact extractor's rules (regular files and directories only: no absolute names, no
//!   `..`, no links, no devices, size and count caps that also stop decompression bombs); any
//!   entry refused refuses the whole submission;
//! - a server-side `workspace.source` is accepted only under a configured root;
//! - a profile is named, never a path; `pass_env` only names variables the config allows.
//!
//! On any error the job's directory is removed, so nothing is left behind.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::sandbox::archive::{self, ArchiveError, ExtractLimits};
use crate::spec::{self, Job, JobSpec, SpecError, WorkspaceMode, WorkspaceSpec};

use super::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("invalid spec")]
    Spec(#[source] SpecError),
    #[error("{0}")]
    Refused(String),
    #[error("workspace upload refused: {0}")]
    Workspace(String),
    #[error("cannot store the workspace")]
    Io(#[source] std::io::Error),
}

/// Where a submitted job's files live: `<data>/jobs/<id>/{workspace,out}`.
pub fn workspace_dir(job_dir: &Path) -> PathBuf {
    job_dir.join("workspace")
}

/// Parses and checks a submission, unpacks its workspace under `job_dir`, validates it.
/// Returns the job (with `id`) and the spec to store (its workspace source rewritten to the
/// server's copy). Blocking: run it on a blocking thread.
pub fn prepare(
    config: &ServerConfig,
    id: &str,
    spec_text: &str,
    workspace: Option<&[u8]>,
    job_dir: &Path,
) -> Result<(Job, JobSpec), UploadError> {
    let r = prepare_inner(config, id, spec_text, workspace, job_dir);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(job_dir);
    }
    r
}

fn prepare_inner(
    config: &ServerConfig,
    id: &str,
    spec_text: &str,
    workspace: Option<&[u8]>,
    job_dir: &Path,
) -> Result<(Job, JobSpec), UploadError> {
    let spec_path = Path::new("spec");
    let mut spec: JobSpec = spec::parse_yaml(spec_text, spec_path).map_err(UploadError::Spec)?;

    if let Some(p) = &spec.profile
        && (p.contains('/') || p.contains('\\') || p.ends_with(".yaml") || p.ends_with(".yml"))
    {
        return Err(UploadError::Refused(format!(
            "`profile`: `{p}` is a path; jobs submitted to the service name one of its profiles (like `strict`)"
        )));
    }
    for name in &spec.pass_env {
        if !config.allow_pass_env.contains(name) {
            return Err(UploadError::Refused(format!(
                "`pass_env`: `{name}` is not in the service's `allow_pass_env`; the service's environment is not readable by jobs"
            )));
        }
    }

    match (&mut spec.workspace, workspace) {
        (ws, Some(tgz)) => {
            let dest = workspace_dir(job_dir);
            unpack(tgz, &dest, config)?;
            let source = dest.canonicalize().map_err(UploadError::Io)?;
            match ws {
                Some(w) => w.source = source,
                None => {
                    *ws = Some(WorkspaceSpec {
                        source,
                        mode: WorkspaceMode::Copy,
                        path: "/workspace".into(),
                        exclude: None,
                    })
                }
            }
        }
        (Some(w), None) => {
            w.source = server_side_source(&w.source, &config.workspace_roots)?;
        }
        (None, None) => {}
    }

    let mut job = spec::validate(
        spec.clone(),
        &config.profiles_dir,
        spec_path,
        &config.policy,
    )
    .map_err(UploadError::Spec)?;
    job.id = id.to_string();
    Ok((job, spec))
}

/// Unpacks an uploaded workspace kept by the store into `job_dir` (on a controller other than
/// the one it was sent to), with the same rules as at submission; returns its directory.
pub fn unpack_stored(
    tgz: &[u8],
    job_dir: &Path,
    config: &ServerConfig,
) -> Result<PathBuf, UploadError> {
    let dest = workspace_dir(job_dir);
    let r = unpack(tgz, &dest, config).and_then(|()| dest.canonicalize().map_err(UploadError::Io));
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&dest);
    }
    r
}

fn server_side_source(source: &Path, roots: &[PathBuf]) -> Result<PathBuf, UploadError> {
    if roots.is_empty() {
        return Err(UploadError::Refused(
            "`workspace.source`: this service takes workspaces only as uploads (no `workspace_roots` are configured); send the workspace as a tar.gz".into(),
        ));
    }
    if !source.is_absolute() || source.components().any(|c| c == Component::ParentDir) {
        return Err(UploadError::Refused(format!(
            "`workspace.source`: `{}` must be an absolute path without `..` under one of the service's workspace roots",
            source.display()
        )));
    }
    let real = source.canonicalize().map_err(|e| {
        UploadError::Refused(format!(
            "`workspace.source`: {} cannot be resolved: {e}",
            source.display()
        ))
    })?;
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(UploadError::Refused(format!(
            "`workspace.source`: {} is not under any of the service's workspace roots",
            source.display()
        )));
    }
    Ok(real)
}

/// Unpacks a gzip-compressed tar into `dest`, refusing the whole upload if any entry is not a
/// plain file or directory, or a cap is hit.
fn unpack(tgz: &[u8], dest: &Path, config: &ServerConfig) -> Result<(), UploadError> {
    let limits = ExtractLimits {
        max_total_bytes: config.max_workspace.bytes(),
        max_file_bytes: config.max_workspace.bytes(),
        max_entries: config.max_workspace_files,
    };
    let gz = flate2::read::GzDecoder::new(tgz);
    // The extractor's read budget bounds decompressed bytes too: a bomb stops there.
    let extracted = match archive::extract_artifacts(gz.take(u64::MAX), dest, &limits) {
        Ok(x) => x,
        Err(ArchiveError::Malformed { source, .. }) => {
            return Err(UploadError::Workspace(format!(
                "it is not a gzip-compressed tar, or it is truncated: {source}"
            )));
        }
        Err(e) => {
            return Err(UploadError::Workspace(crate::error::error_chain(&e)));
        }
    };
    if !extracted.refused.is_empty() {
        let shown: Vec<String> = extracted
            .refused
            .iter()
            .take(5)
            .map(|r| format!("{}: {}", r.path, r.reason))
            .collect();
        let more = extracted.refused.len().saturating_sub(5);
        return Err(UploadError::Workspace(format!(
            "{}{}",
            shown.join("; "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}
