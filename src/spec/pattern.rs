//! Patterns a spec or the operator's policy writes, all read by one implementation (the
//! `globset`/`ignore` crates, ripgrep's): `workspace.exclude` as `.gitignore` lines,
//! `prepare.cache_key_files` names, and `allowed_images` references.
//!
//! Matching is linear in the input whatever the pattern (globs compile to a finite
//! automaton), so a submitter's `a*a*a*…b` costs nothing. Patterns are checked when the spec
//! is validated, so a bad one is refused naming its field rather than silently matching
//! nothing.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobMatcher};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The longest pattern accepted; longer ones are refused (they only cost compile time).
pub const MAX_PATTERN_BYTES: usize = 1024;

/// `workspace.exclude`, read like the lines of a `.gitignore` at the workspace's top: a name
/// (`*.pyc`, `.git`) matches at any depth; a pattern with a `/` at its start or middle
/// (`/build`, `docs/*.md`) is relative to the top; `*` never crosses `/`, `**` does; a
/// trailing `/` matches directories only; `!pattern` re-includes (except under an excluded
/// directory, as in git). `./x` is read as `/x`.
#[derive(Debug, Clone)]
pub struct Excludes(Gitignore);

impl Excludes {
    /// Compiles `patterns` for the workspace at `root`. The error names the index and why.
    pub fn new(root: &Path, patterns: &[String]) -> Result<Excludes, (usize, String)> {
        let mut builder = GitignoreBuilder::new(root);
        for (i, p) in patterns.iter().enumerate() {
            check_length(p).map_err(|e| (i, e))?;
            // `./x` means what git writes `/x`: relative to the top.
            let line = match p.strip_prefix("./") {
                Some(rest) => format!("/{rest}"),
                None => p.clone(),
            };
            builder
                .add_line(None, &line)
                .map_err(|e| (i, format!("`{p}` is not a valid pattern: {e}")))?;
        }
        builder
            .build()
            .map(Excludes)
            .map_err(|e| (0, format!("the patterns cannot be compiled: {e}")))
    }

    /// Whether `path` (under the root, or relative to it) is excluded. Directories are
    /// matched as such (`build/` matches only a directory).
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        self.0.matched(path, is_dir).is_ignore()
    }
}

/// A file-name pattern (`requirements*.txt`, `req-?.txt`, `{setup,pyproject}.*`) matched
/// against one name: `*` and `?` never match `/`.
pub fn file_name(pattern: &str) -> Result<GlobMatcher, String> {
    check_length(pattern)?;
    if pattern.contains('/') {
        return Err(format!("`{pattern}` is a path, not a file name"));
    }
    glob(pattern, true)
}

/// Whether `name` looks like a pattern rather than a literal name.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '[', '{'])
}

/// An image pattern of the operator's `allowed_images`: an image reference is not a path, so
/// here `*` matches any characters, `/` and `:` included (`cordon/*` allows
/// `cordon/python:3.11`, `*` every image).
pub fn image(pattern: &str) -> Result<GlobMatcher, String> {
    check_length(pattern)?;
    glob(pattern, false)
}

fn glob(pattern: &str, literal_separator: bool) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| format!("`{pattern}` is not a valid pattern: {}", e.kind()))
}

fn check_length(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "a pattern of {} bytes is longer than the {MAX_PATTERN_BYTES} allowed",
            pattern.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excludes(patterns: &[&str]) -> Excludes {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Excludes::new(Path::new("/ws"), &patterns).expect("valid")
    }

    #[test]
    fn excludes_behave_like_gitignore_lines() {
        let ex = excludes(&[
            "*.pyc",
            ".git",
            "/build",
            "docs/*.md",
            "cache/",
            "**/tmp/*.log",
            "./dist",
        ]);
        let m = |p: &str, dir: bool| ex.matches(Path::new(p), dir);
        // A name matches at any depth.
        assert!(m("/ws/a.pyc", false));
        assert!(m("/ws/pkg/sub/a.pyc", false));
        assert!(m("/ws/pkg/.git", true));
        assert!(!m("/ws/.github", true), "a name is not a prefix");
        // A leading or middle `/` anchors to the top.
        assert!(m("/ws/build", true));
        assert!(!m("/ws/src/build", true));
        assert!(m("/ws/docs/a.md", false));
        assert!(!m("/ws/docs/api/a.md", false), "`*` does not cross `/`");
        assert!(!m("/ws/x/docs/a.md", false));
        // A trailing `/` is for directories only.
        assert!(m("/ws/x/cache", true));
        assert!(!m("/ws/x/cache", false));
        // `**` crosses directories.
        assert!(m("/ws/a/b/tmp/x.log", false));
        assert!(m("/ws/tmp/x.log", false));
        // `./` is the top.
        assert!(m("/ws/dist", true));
        assert!(!m("/ws/a/dist", true));
    }

    #[test]
    fn a_negation_keeps_a_file_back() {
        let ex = excludes(&["*.txt", "!keep.txt"]);
        assert!(ex.matches(Path::new("/ws/a.txt"), false));
        assert!(!ex.matches(Path::new("/ws/keep.txt"), false));
    }

    #[test]
    fn what_git_reads_literally_is_literal_and_only_length_is_refused() {
        // git reads an unclosed `[` as itself; so does this.
        let ex = excludes(&["[unclosed"]);
        assert!(ex.matches(Path::new("/ws/[unclosed"), false));
        let long = vec!["ok".to_string(), "a".repeat(MAX_PATTERN_BYTES + 1)];
        let (i, why) = Excludes::new(Path::new("/ws"), &long).expect_err("too long");
        assert_eq!(i, 1);
        assert!(why.contains("longer than"), "{why}");
    }

    #[test]
    fn file_names_match_within_one_name() {
        let g = file_name("requirements*.txt").expect("valid");
        assert!(g.is_match("requirements.txt"));
        assert!(g.is_match("requirements-dev.txt"));
        assert!(!g.is_match("requirements.in"));
        assert!(
            file_name("{setup.cfg,pyproject.toml}")
                .expect("valid")
                .is_match("setup.cfg")
        );
        assert!(file_name("a/*.txt").is_err());
        assert!(is_pattern("req*.txt") && !is_pattern("requirements.txt"));
    }

    #[test]
    fn image_patterns_cross_slashes_and_tags() {
        assert!(
            image("cordon/*")
                .expect("valid")
                .is_match("cordon/python:3.11")
        );
        assert!(
            image("*")
                .expect("valid")
                .is_match("registry.example:5000/team/app:1")
        );
        assert!(
            !image("cordon/*")
                .expect("valid")
                .is_match("evil/cordon/python")
        );
    }

    #[test]
    fn a_hostile_pattern_costs_linear_time() {
        let hostile = format!("{}b", "a*".repeat(400));
        let g = file_name(&hostile).expect("valid");
        assert!(!g.is_match("a".repeat(255)));
    }
}
