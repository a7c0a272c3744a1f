//! Where cordon keeps its small state on the host (`CORDON_STATE_DIR`: environment last-use
//! markers, build locks), and the one build lock every builder takes: of cordon's images and
//! of dependency environments, across threads and processes alike.

use std::path::PathBuf;

/// Cordon's state directory: `CORDON_STATE_DIR`, else `$XDG_CACHE_HOME/cordon`, else
/// `~/.cache/cordon`, else a directory under the system's temporary one.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CORDON_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("cordon");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/cordon");
    }
    std::env::temp_dir().join("cordon-state")
}

/// The state directory could not be used for a lock.
#[derive(Debug, thiserror::Error)]
#[error("cannot take the build lock {}", path.display())]
pub struct LockError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// An exclusive lock on building one thing (an image reference, an environment key), held
/// until dropped. It is an `flock` on a file under `<state>/locks/`: it excludes every other
/// holder, in this process (each take opens the file anew) or another.
#[derive(Debug)]
pub struct BuildLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl BuildLock {
    /// Takes the lock of `name`, waiting (on a blocking thread) while another holds it.
    /// `on_wait` is called once if it has to wait.
    pub async fn take(name: &str, on_wait: impl FnOnce()) -> Result<BuildLock, LockError> {
        take_in(&state_dir().join("locks"), name, on_wait).await
    }
}

async fn take_in(
    dir: &std::path::Path,
    name: &str,
    on_wait: impl FnOnce(),
) -> Result<BuildLock, LockError> {
    let (file, path) = open(dir, name)?;
    let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(BuildLock { _lock: lock }),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => return Err(error(path, errno.into())),
    };
    on_wait();
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
    })
    .await
    .map_err(|e| error(p.clone(), std::io::Error::other(e.to_string())))?
    .map(|lock| BuildLock { _lock: lock })
    .map_err(|(_, errno)| error(p, errno.into()))
}

/// Opens (making it if need be) the lock file of `name`; anything but `[A-Za-z0-9._-]` in the
/// name becomes `_` (an image reference's `/` and `:`).
fn open(dir: &std::path::Path, name: &str) -> Result<(std::fs::File, PathBuf), LockError> {
    std::fs::create_dir_all(dir).map_err(|e| error(dir.to_path_buf(), e))?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{safe}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| error(path.clone(), e))?;
    Ok((file, path))
}

fn error(path: PathBuf, source: std::io::Error) -> LockError {
    LockError { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_second_taker_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = take_in(dir.path(), "env-abc", || {}).await.expect("takes");
        let waited = Arc::new(AtomicBool::new(false));
        let w = waited.clone();
        let d = dir.path().to_path_buf();
        let second = tokio::spawn(async move {
            take_in(&d, "env-abc", move || w.store(true, Ordering::SeqCst))
                .await
                .expect("takes")
        });
        // Another name is not held up.
        let _other = take_in(dir.path(), "env-xyz", || panic!("no wait"))
            .await
            .expect("takes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "taken while the first holds it");
        drop(first);
        let _second = second.await.expect("joins");
        assert!(waited.load(Ordering::SeqCst), "it said it was waiting");
    }

    #[test]
    fn names_become_safe_file_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_, path) = open(dir.path(), "cordon/python:3.11").expect("opens");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("cordon_python_3.11.lock")
        );
        let (_, path) = open(dir.path(), "../../etc/x").expect("opens");
        assert_eq!(path.parent(), Some(dir.path()));
    }
}
