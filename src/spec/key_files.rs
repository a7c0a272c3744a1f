//! A `prepare`'s cache key files, read from a checkout that is the submitter's and so hostile.
//!
//! A key file's contents go into the environment's cache key and are uploaded to the
//! `prepare` container, so reading one through a symbolic link would hand a host file
//! (`requirements.txt -> /etc/shadow`, `-> ~/.ssh/id_ed25519`) to the submitter's install
//! script. So nothing here follows a link: every directory from the workspace root down is
//! opened relative to its parent with `O_DIRECTORY | O_NOFOLLOW`, the file itself is checked
//! with `lstat` (`fstatat(AT_SYMLINK_NOFOLLOW)`) to be a regular file and opened with
//! `O_NOFOLLOW | O_NONBLOCK` (a FIFO swapped in cannot block validation), and the opened
//! handle must be the very inode that was checked. A symbolic link, FIFO, socket or device
//! where a key file or one of its directories should be is invalid input naming the field
//! and the file: a user must know why their cache key lacks it. Reads are capped, per file
//! and in total.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// The most one key file may hold.
pub const MAX_KEY_FILE_BYTES: u64 = 1 << 20;
/// The most all of a job's key files may hold together.
pub const MAX_KEY_FILES_TOTAL: u64 = 4 << 20;

/// (path relative to the workspace, contents), as [`super::Prepare::key_files`] holds them.
pub type KeyFiles = Vec<(String, Vec<u8>)>;

const NOT_REGULAR: &str = "key files must be regular files inside the workspace";

/// Matches each of `patterns` (paths relative to the workspace; `*` matches within the last
/// name) under the workspace `root` (canonical, as [`super::validate`] resolved it) and reads
/// what matched. Returns (path relative to the workspace, contents), sorted by path, each
/// file once. A pattern that matches nothing contributes nothing; a match that is not a
/// regular file in real directories is an error. Errors are `(field, reason)`, the field
/// being `prepare.cache_key_files[i]`.
pub fn read_key_files(root: &Path, patterns: &[String]) -> Result<KeyFiles, (String, String)> {
    let mut files: KeyFiles = Vec::new();
    let mut total: u64 = 0;
    for (i, pattern) in patterns.iter().enumerate() {
        let at = format!("prepare.cache_key_files[{i}]");
        let fail = |reason: String| (at.clone(), reason);
        let rel = Path::new(pattern);
        if pattern.is_empty()
            || rel.is_absolute()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(fail(format!(
                "`{pattern}` must be a path relative to the workspace, without `..`"
            )));
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
            return Err(fail(format!("`{pattern}` is not a UTF-8 file name")));
        };
        if parent.to_str().is_some_and(super::pattern::is_pattern) {
            return Err(fail(format!(
                "`{pattern}`: a wildcard may only be in the file's name, not in its directories; list each directory's file"
            )));
        }
        let glob = if super::pattern::is_pattern(name) {
            Some(super::pattern::file_name(name).map_err(&fail)?)
        } else {
            None
        };
        let Some(dir) = open_dirs(root, parent).map_err(&fail)? else {
            continue; // a directory on the way does not exist: nothing matched
        };
        let mut matched: Vec<String> = Vec::new();
        if let Some(glob) = &glob {
            // The names come from listing the directory by path; each is then looked at and
            // opened relative to the handle checked above, so a name listed from somewhere
            // else could only fail to be found.
            let listed = std::fs::read_dir(root.join(parent)).map_err(|e| {
                fail(format!(
                    "the workspace directory `{}` cannot be listed: {e}",
                    shown(parent)
                ))
            })?;
            let mut names: Vec<String> = listed
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| glob.is_match(n))
                .collect();
            names.sort();
            for n in names {
                let what = parent.join(&n).to_string_lossy().into_owned();
                match lstat_at(&dir, n.as_str()).map_err(|e| fail(format!("`{what}`: {e}")))? {
                    // A directory a wildcard happens to match is not a key file.
                    Some(st) if kind(&st) == SFlag::S_IFDIR => {}
                    Some(st) => {
                        check_regular(&st, &what).map_err(&fail)?;
                        matched.push(what);
                    }
                    None => {}
                }
            }
        } else {
            match lstat_at(&dir, name).map_err(|e| fail(format!("`{pattern}`: {e}")))? {
                Some(st) if kind(&st) == SFlag::S_IFDIR => {
                    return Err(fail(format!(
                        "`{pattern}` is a directory; name the files in it (`{pattern}/*`)"
                    )));
                }
                Some(st) => {
                    check_regular(&st, pattern).map_err(&fail)?;
                    matched.push(pattern.clone());
                }
                None => {}
            }
        }
        for m in matched {
            if files.iter().any(|(k, _)| *k == m) {
                continue;
            }
            let file_name = Path::new(&m).file_name().unwrap_or_default();
            let contents = read_capped(&dir, file_name, &m).map_err(&fail)?;
            total += contents.len() as u64;
            if total > MAX_KEY_FILES_TOTAL {
                return Err(fail(format!(
                    "the key files together hold more than {} (at `{m}`): name fewer or smaller files",
                    super::Size(MAX_KEY_FILES_TOTAL)
                )));
            }
            files.push((m, contents));
        }
    }
    files.sort();
    Ok(files)
}

/// `parent` (relative) for messages; the workspace root is `.`.
fn shown(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".into()
    } else {
        p.display().to_string()
    }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens `root`, then each directory of `parent` relative to the one before, never through
/// a symbolic link. `Ok(None)`: a directory on the way does not exist (or is not a
/// directory), so the pattern matches nothing.
fn open_dirs(root: &Path, parent: &Path) -> Result<Option<OwnedFd>, String> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = File::open(root)
        .map_err(|e| format!("the workspace {} cannot be opened: {e}", root.display()))?
        .into();
    let mut so_far = std::path::PathBuf::new();
    for c in parent.components() {
        let Component::Normal(c) = c else {
            continue;
        };
        so_far.push(c);
        match lstat_at(&dir, c).map_err(|e| format!("`{}`: {e}", so_far.display()))? {
            None => return Ok(None),
            Some(st) if kind(&st) == SFlag::S_IFLNK => {
                return Err(format!(
                    "`{}` is a symbolic link; {NOT_REGULAR}, in its real directories",
                    so_far.display()
                ));
            }
            Some(st) if kind(&st) != SFlag::S_IFDIR => return Ok(None),
            Some(st) => {
                let next = openat(&dir, c, dir_flags, Mode::empty()).map_err(|e| {
                    format!("the directory `{}` cannot be opened: {e}", so_far.display())
                })?;
                same_inode(&next, &st, &so_far.display().to_string())?;
                dir = next;
            }
        }
    }
    Ok(Some(dir))
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
fn lstat_at<P: ?Sized + nix::NixPath>(dir: &OwnedFd, name: &P) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_regular(st: &FileStat, what: &str) -> Result<(), String> {
    let k = kind(st);
    if k == SFlag::S_IFREG {
        return Ok(());
    }
    let is = if k == SFlag::S_IFLNK {
        "a symbolic link"
    } else if k == SFlag::S_IFIFO {
        "a FIFO"
    } else if k == SFlag::S_IFSOCK {
        "a socket"
    } else if k == SFlag::S_IFCHR || k == SFlag::S_IFBLK {
        "a device"
    } else {
        "not a regular file"
    };
    Err(format!("`{what}` is {is}; {NOT_REGULAR}"))
}

/// The handle `fd` must be the inode `st` described (nothing was swapped in between).
fn same_inode(fd: &OwnedFd, st: &FileStat, what: &str) -> Result<(), String> {
    let now = fstat(fd).map_err(|e| format!("`{what}` cannot be read: {e}"))?;
    if now.st_dev != st.st_dev || now.st_ino != st.st_ino || kind(&now) != kind(st) {
        return Err(format!(
            "`{what}` was replaced while it was being read; try again"
        ));
    }
    Ok(())
}

/// Reads the regular file `name` in `dir`, never through a link, at most
/// [`MAX_KEY_FILE_BYTES`] (reading one byte more to know).
fn read_capped(dir: &OwnedFd, name: &std::ffi::OsStr, what: &str) -> Result<Vec<u8>, String> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let before = lstat_at(dir, name)
        .map_err(|e| format!("`{what}` cannot be read: {e}"))?
        .ok_or_else(|| format!("`{what}` disappeared while it was being read; try again"))?;
    check_regular(&before, what)?;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => format!("`{what}` is a symbolic link; {NOT_REGULAR}"),
        e => format!("`{what}` cannot be read: {e}"),
    })?;
    same_inode(&fd, &before, what)?;
    let mut contents = Vec::new();
    File::from(fd)
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| format!("`{what}` cannot be read: {e}"))?;
    if contents.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "`{what}` is larger than {}, the most a key file may hold",
            super::Size(MAX_KEY_FILE_BYTES)
        ));
    }
    Ok(contents)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn ws() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "attrs\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/req.txt"), "pytest\n").unwrap();
        dir
    }

    fn root(d: &tempfile::TempDir) -> std::path::PathBuf {
        d.path().canonicalize().unwrap()
    }

    #[test]
    fn regular_files_match_and_are_read_once_sorted() {
        let d = ws();
        std::fs::create_dir(d.path().join("requirements.d.txt")).unwrap();
        let got = read_key_files(
            &root(&d),
            &patterns(&[
                "sub/*.txt",
                "requirements*.txt",
                "requirements.txt",
                "missing/x",
                "nope",
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("requirements.txt".to_string(), b"attrs\n".to_vec()),
                ("sub/req.txt".to_string(), b"pytest\n".to_vec()),
            ]
        );
    }

    #[test]
    fn a_symlinked_key_file_is_named_not_followed() {
        let d = ws();
        std::fs::remove_file(d.path().join("requirements.txt")).unwrap();
        symlink("/etc/passwd", d.path().join("requirements.txt")).unwrap();
        for p in ["requirements.txt", "requirements*.txt", "*"] {
            let (field, reason) = read_key_files(&root(&d), &patterns(&[p])).unwrap_err();
            assert_eq!(field, "prepare.cache_key_files[0]");
            assert!(
                reason.contains("`requirements.txt` is a symbolic link")
                    && reason.contains("regular files inside the workspace"),
                "{p}: {reason}"
            );
            assert!(!reason.contains("root:"), "{reason}");
        }
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_named() {
        let d = ws();
        symlink("/etc", d.path().join("etc")).unwrap();
        symlink("sub", d.path().join("inner")).unwrap();
        for p in ["etc/passwd", "etc/*", "inner/req.txt"] {
            let (field, reason) =
                read_key_files(&root(&d), &patterns(&["sub/req.txt", p])).unwrap_err();
            assert_eq!(field, "prepare.cache_key_files[1]");
            assert!(reason.contains("is a symbolic link"), "{p}: {reason}");
        }
    }

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let d = ws();
        let status = std::process::Command::new("mkfifo")
            .arg(d.path().join("lock.txt"))
            .status()
            .unwrap();
        assert!(status.success());
        let (_, reason) = read_key_files(&root(&d), &patterns(&["lock.txt"])).unwrap_err();
        assert!(reason.contains("`lock.txt` is a FIFO"), "{reason}");
        let (_, reason) = read_key_files(&root(&d), &patterns(&["*.txt"])).unwrap_err();
        assert!(reason.contains("`lock.txt` is a FIFO"), "{reason}");
        let (_, reason) = read_key_files(&root(&d), &patterns(&["sub"])).unwrap_err();
        assert!(reason.contains("is a directory"), "{reason}");
    }

    #[test]
    fn sizes_are_capped_per_file_and_in_total() {
        let d = ws();
        let big = vec![b'x'; MAX_KEY_FILE_BYTES as usize + 1];
        std::fs::write(d.path().join("big.txt"), &big).unwrap();
        let (_, reason) = read_key_files(&root(&d), &patterns(&["big.txt"])).unwrap_err();
        assert!(reason.contains("`big.txt` is larger than 1MiB"), "{reason}");

        let full = vec![b'y'; MAX_KEY_FILE_BYTES as usize];
        for i in 0..5 {
            std::fs::write(d.path().join(format!("lock{i}.txt")), &full).unwrap();
        }
        let got = read_key_files(&root(&d), &patterns(&["lock0.txt", "lock1.txt"])).unwrap();
        assert_eq!(got.len(), 2, "at the per-file cap is fine");
        let (field, reason) = read_key_files(&root(&d), &patterns(&["lock*.txt"])).unwrap_err();
        assert_eq!(field, "prepare.cache_key_files[0]");
        assert!(reason.contains("more than 4MiB"), "{reason}");
    }

    #[test]
    fn bad_patterns_are_named() {
        let d = ws();
        for p in ["../x", "/etc/passwd", "a/../b", "./x", ""] {
            let (field, reason) = read_key_files(&root(&d), &patterns(&[p])).unwrap_err();
            assert_eq!(field, "prepare.cache_key_files[0]", "{p}");
            assert!(reason.contains("without `..`"), "{p}: {reason}");
        }
        for (p, why) in [
            ("*/requirements.txt", "only be in the file's name"),
            ("**/requirements.txt", "only be in the file's name"),
            ("req[.txt", "not a valid pattern"),
        ] {
            let (field, reason) = read_key_files(&root(&d), &patterns(&[p])).unwrap_err();
            assert_eq!(field, "prepare.cache_key_files[0]", "{p}");
            assert!(reason.contains(why), "{p}: {reason}");
        }
    }

    #[test]
    fn name_patterns_take_brackets_and_alternatives() {
        let d = ws();
        std::fs::write(d.path().join("setup.cfg"), "a").unwrap();
        std::fs::write(d.path().join("req-1.txt"), "b").unwrap();
        std::fs::write(d.path().join("req-12.txt"), "c").unwrap();
        let got = read_key_files(
            &root(&d),
            &patterns(&["{setup.cfg,pyproject.toml}", "req-?.txt"]),
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["req-1.txt", "setup.cfg"]);
    }
}
