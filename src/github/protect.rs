//! Protected paths: files a change by cordon may never touch and still be promoted (CI
//! workflows, cordon's own configuration, deployment files). Matched with `globset`.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Always protected, whatever `.cordon.yml` says: a repository's configuration can add paths,
/// never remove these.
pub const DEFAULT_PROTECTED: &[&str] = &[
    ".github/workflows/**",
    ".github/actions/**",
    ".github/CODEOWNERS",
    "CODEOWNERS",
    ".github/dependabot.yml",
    ".cordon.yml",
    ".gitlab-ci.yml",
    ".circleci/**",
    ".travis.yml",
    "azure-pipelines.yml",
    "Jenkinsfile",
    ".buildkite/**",
    "deploy/**",
    "Dockerfile",
    "**/Dockerfile",
    "docker-compose*.yml",
    ".pre-commit-config.yaml",
];

/// The protected patterns of one repository.
#[derive(Debug, Clone)]
pub struct Protected {
    patterns: Vec<String>,
    set: GlobSet,
}

/// A changed path that is protected, and the pattern that protects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub pattern: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is protected (`{}`)", self.path, self.pattern)
    }
}

impl Protected {
    /// The defaults plus `extra` (from `.cordon.yml`'s `protected_paths`). An invalid glob is
    /// an error naming it.
    pub fn new(extra: &[String]) -> Result<Protected, String> {
        let mut patterns: Vec<String> = DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect();
        patterns.extend(extra.iter().cloned());
        let mut b = GlobSetBuilder::new();
        for p in &patterns {
            let g = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("protected_paths: `{p}` is not a glob: {e}"))?;
            b.add(g);
        }
        let set = b.build().map_err(|e| format!("protected_paths: {e}"))?;
        Ok(Protected { patterns, set })
    }

    /// The protected paths among `changed` (paths relative to the repository's root).
    pub fn check<'a>(&self, changed: impl IntoIterator<Item = &'a str>) -> Vec<Violation> {
        let mut out = Vec::new();
        for path in changed {
            let path = path.trim_start_matches("./");
            if let Some(&i) = self.set.matches(path).first() {
                out.push(Violation {
                    path: path.to_string(),
                    pattern: self.patterns[i].clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflows_and_config_are_protected_tests_are_not() {
        let p = Protected::new(&["infra/**".into()]).expect("globs");
        let v = p.check([
            ".github/workflows/ci.yml",
            ".cordon.yml",
            "tests/generated/test_calc.py",
            "infra/main.tf",
            "src/app/Dockerfile",
            "calc.py",
        ]);
        let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".github/workflows/ci.yml",
                ".cordon.yml",
                "infra/main.tf",
                "src/app/Dockerfile"
            ]
        );
        assert_eq!(v[0].pattern, ".github/workflows/**");
        assert!(v[0].to_string().contains("protected"));
    }

    #[test]
    fn a_bad_glob_is_named() {
        let e = Protected::new(&["a/[".into()]).expect_err("refused");
        assert!(e.contains("`a/[`"), "{e}");
    }
}
