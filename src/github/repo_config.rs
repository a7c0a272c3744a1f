//! `.cordon.yml`: one repository's settings, always read from its default branch (a pull
//! request cannot change how it is itself tested or what is protected). No file at all means
//! the defaults, which suit a plain Python repository.

use serde::Deserialize;

use super::protect::Protected;

/// The file's name at the repository's root.
pub const FILE: &str = ".cordon.yml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RepoConfig {
    /// How the suite runs (the builder's refine loop; test generation runs pytest itself).
    pub test_command: String,
    /// `auto` (every requirements*.txt at the root), `none`, or a command.
    pub install: String,
    /// The sandbox image (must be allowed by the operator).
    pub image: String,
    /// Protected paths added to the defaults (never replacing them).
    pub protected_paths: Vec<String>,
    /// The builder's maximum refine rounds.
    pub max_refine_rounds: u32,
    /// Labels that trigger cordon on a pull request or issue.
    pub labels: Vec<String>,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            test_command: "python -m pytest -q".into(),
            install: "auto".into(),
            image: crate::spec::DEFAULT_IMAGE.into(),
            protected_paths: Vec::new(),
            max_refine_rounds: 3,
            labels: vec!["cordon".into()],
        }
    }
}

/// Why a `.cordon.yml` was refused: names the field and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{FILE}: {field}: {reason}")]
pub struct RepoConfigError {
    pub field: String,
    pub reason: String,
}

impl RepoConfig {
    /// Parses the file's text (an empty file is the defaults).
    pub fn parse(text: &str) -> Result<RepoConfig, RepoConfigError> {
        if text.trim().is_empty() {
            return Ok(RepoConfig::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: RepoConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names an unknown field in its message; put it first.
            let field = match inner.split('`').nth(1) {
                Some(f) if inner.starts_with("unknown field") => f.to_string(),
                _ if path != "." => path,
                _ => "(file)".into(),
            };
            RepoConfigError {
                field,
                reason: format!(
                    "{inner} (known fields: test_command, install, image, protected_paths, max_refine_rounds, labels)"
                ),
            }
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), RepoConfigError> {
        let bad = |field: &str, reason: &str| RepoConfigError {
            field: field.into(),
            reason: reason.into(),
        };
        if self.test_command.trim().is_empty() {
            return Err(bad(
                "test_command",
                "must not be empty (the default is `python -m pytest -q`)",
            ));
        }
        if self.install.trim().is_empty() {
            return Err(bad("install", "needs `auto`, `none` or a command"));
        }
        if self.max_refine_rounds == 0 || self.max_refine_rounds > 10 {
            return Err(bad("max_refine_rounds", "must be between 1 and 10"));
        }
        if self.labels.iter().any(|l| l.trim().is_empty()) {
            return Err(bad("labels", "a label must not be empty"));
        }
        self.protected()
            .map_err(|reason| bad("protected_paths", &reason))?;
        Ok(())
    }

    /// The protected paths: the defaults plus this file's.
    pub fn protected(&self) -> Result<Protected, String> {
        Protected::new(&self.protected_paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_the_python_defaults() {
        let c = RepoConfig::parse("").expect("defaults");
        assert_eq!(c, RepoConfig::default());
        assert_eq!(c.install, "auto");
        assert_eq!(c.labels, ["cordon"]);
    }

    #[test]
    fn fields_are_read() {
        let c = RepoConfig::parse(
            "install: pip install -e .\nprotected_paths: [\"infra/**\"]\nmax_refine_rounds: 2\nlabels: [cordon, ai-tests]\n",
        )
        .expect("parses");
        assert_eq!(c.install, "pip install -e .");
        assert_eq!(c.max_refine_rounds, 2);
        assert!(!c.protected().expect("globs").check(["infra/x"]).is_empty());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = RepoConfig::parse("test_comand: pytest\n").expect_err("refused");
        assert_eq!(e.field, "test_comand");
        assert!(e.to_string().contains("known fields"), "{e}");
        let e = RepoConfig::parse("max_refine_rounds: 0\n").expect_err("refused");
        assert_eq!(e.field, "max_refine_rounds");
        let e = RepoConfig::parse("protected_paths: ['a/[']\n").expect_err("refused");
        assert_eq!(e.field, "protected_paths");
    }
}
