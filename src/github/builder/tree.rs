//! The clone's working tree, touched only through these: what the model is shown of it, and
//! the model's files written into it. A repository is untrusted too, so a write never
//! follows a symbolic link (one could point out of the tree) and never enters `.git`.

use std::path::{Component, Path};

/// Files listed for the analysis, at most; and the largest file quoted to the model.
const MAX_LISTED: usize = 500;
const MAX_READ: u64 = 100_000;

/// The tree's files (relative paths, sorted), without `.git` and the like.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0 || !crate::spec::DEFAULT_EXCLUDES.contains(&name.as_ref())
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(root).ok()?;
            Some(rel.to_string_lossy().into_owned())
        })
        .take(MAX_LISTED)
        .collect();
    out.sort();
    out
}

/// A regular file's text (not through a link), if it is there and small.
pub fn read(root: &Path, rel: &str) -> Option<String> {
    let p = root.join(rel);
    no_link_on_the_way(root, rel).ok()?;
    let m = std::fs::symlink_metadata(&p).ok()?;
    (m.is_file() && m.len() <= MAX_READ)
        .then(|| std::fs::read_to_string(&p).ok())
        .flatten()
}

/// Refuses a path any of whose existing components is a symbolic link.
fn no_link_on_the_way(root: &Path, rel: &str) -> Result<(), String> {
    let mut at = root.to_path_buf();
    for c in Path::new(rel).components() {
        let Component::Normal(n) = c else {
            return Err(format!("`{rel}` is not a plain relative path"));
        };
        at.push(n);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "`{rel}` goes through a symbolic link in the repository"
                ));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Writes `content` at `rel` (checked by [`super::unsafe_path`] first), making directories;
/// refused when the way there, or the file, is a link or not a plain directory or file.
pub fn write(root: &Path, rel: &str, content: &str) -> Result<(), String> {
    if let Some(why) = super::unsafe_path(rel) {
        return Err(why);
    }
    no_link_on_the_way(root, rel)?;
    let p = root.join(rel);
    if p.exists() && !p.is_file() {
        return Err(format!("`{rel}` is not a file in the repository"));
    }
    let io = |e: std::io::Error| format!("`{rel}`: {e}");
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&p, content).map_err(io)
}

/// Whether the tree is cordon itself (its `Cargo.toml` names the package `cordon`): cordon
/// never promotes a change to itself.
pub fn is_cordon(root: &Path) -> bool {
    read(root, "Cargo.toml").is_some_and(|t| {
        t.lines()
            .map(|l| l.split_whitespace().collect::<String>())
            .any(|l| l == "name=\"cordon\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_the_tree_and_off_links() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path().join("repo");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("link");
        std::os::unix::fs::symlink(outside.join("f.py"), root.join("f.py")).expect("link");
        write(&root, "pkg/a.py", "x = 1\n").expect("plain write");
        assert_eq!(read(&root, "pkg/a.py").as_deref(), Some("x = 1\n"));
        for bad in [
            "link/evil.py",
            "f.py",
            ".git/config",
            "../outside/x.py",
            "/tmp/x.py",
        ] {
            assert!(write(&root, bad, "evil").is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(&outside).expect("dir").count(), 0);
        assert_eq!(listing(&root), ["pkg/a.py"]);
        std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"cordon\"\n").expect("w");
        assert!(is_cordon(&root));
    }
}
