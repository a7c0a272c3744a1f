//! Flow 2's rules (the builder: an issue becomes a tested pull request). Only the decisions
//! are built so far: the branch name, which of the model's files may be written at all, and
//! when the pull request may be promoted. The loop that asks the model, runs the suite in the
//! sandbox and refines is not built yet.

use super::client::RepoName;
use super::protect::{Protected, Violation};
use super::tests_pr::Promotion;

/// The branch of issue `n`'s pull request.
pub fn branch(issue: u64) -> String {
    format!("cordon/issue-{issue}")
}

/// The sandbox's verdict on the suite after the last refine round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteRun {
    /// Whether the suite ran to the end in the sandbox (false: it could not start, or timed
    /// out).
    pub completed: bool,
    pub passed: u64,
    pub failed: u64,
}

/// A path the model proposed that cordon refuses to write (before any protected-path rule):
/// absolute, `..`, `.git/`, or empty.
pub fn unsafe_path(path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Some(format!("`{path}` is not a path inside the repository"));
    }
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) if n == ".git" => {
                return Some(format!("`{path}` is inside .git"));
            }
            std::path::Component::Normal(_) => {}
            _ => return Some(format!("`{path}` leaves the repository or is not plain")),
        }
    }
    None
}

/// Whether the builder's pull request may be marked ready: every test passed in the sandbox
/// (and at least one ran), nothing protected changed, and the repository is not one of
/// `own` (cordon never promotes changes to itself).
pub fn promotion(
    run: &SuiteRun,
    changed: &[String],
    protected: &Protected,
    repo: &RepoName,
    own: &[RepoName],
) -> (Promotion, Vec<Violation>) {
    let mut why = Vec::new();
    if !run.completed {
        why.push("the suite did not run to the end in the sandbox".to_string());
    } else if run.failed > 0 {
        why.push(format!("{} test(s) failed in the sandbox", run.failed));
    } else if run.passed == 0 {
        why.push("no test ran".to_string());
    }
    let violations = protected.check(changed.iter().map(String::as_str));
    for v in &violations {
        why.push(format!("{v}: changes to it are never promoted"));
    }
    if own.contains(repo) {
        why.push(format!(
            "{repo} is cordon's own repository: a person promotes its changes"
        ));
    }
    let p = if why.is_empty() {
        Promotion::Ready
    } else {
        Promotion::Draft(why)
    };
    (p, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green() -> SuiteRun {
        SuiteRun {
            completed: true,
            passed: 4,
            failed: 0,
        }
    }

    #[test]
    fn promoted_only_when_green_unprotected_and_not_cordon() {
        let prot = Protected::new(&[]).expect("defaults");
        let repo = RepoName::parse("octo/app").expect("name");
        let own = [RepoName::parse("octo/cordon").expect("name")];
        let files = vec!["app/x.py".to_string(), "tests/test_x.py".to_string()];
        assert_eq!(
            promotion(&green(), &files, &prot, &repo, &own).0,
            Promotion::Ready
        );

        let red = SuiteRun {
            failed: 1,
            ..green()
        };
        assert!(matches!(
            promotion(&red, &files, &prot, &repo, &own).0,
            Promotion::Draft(_)
        ));
        let none = SuiteRun {
            passed: 0,
            ..green()
        };
        assert!(matches!(
            promotion(&none, &files, &prot, &repo, &own).0,
            Promotion::Draft(_)
        ));
        let cut = SuiteRun {
            completed: false,
            ..green()
        };
        assert!(matches!(
            promotion(&cut, &files, &prot, &repo, &own).0,
            Promotion::Draft(_)
        ));

        let wf = vec![
            "app/x.py".to_string(),
            ".github/workflows/ci.yml".to_string(),
        ];
        let (p, v) = promotion(&green(), &wf, &prot, &repo, &own);
        assert_eq!(v.len(), 1);
        assert!(
            matches!(&p, Promotion::Draft(w) if w[0].contains(".github/workflows/ci.yml")),
            "{p:?}"
        );

        let (p, _) = promotion(&green(), &files, &prot, &own[0], &own);
        assert!(
            matches!(&p, Promotion::Draft(w) if w[0].contains("cordon's own")),
            "{p:?}"
        );
        assert_eq!(branch(12), "cordon/issue-12");
    }

    #[test]
    fn paths_outside_the_repository_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".git/hooks/pre-commit",
            "a/.git/config",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
        assert_eq!(unsafe_path("src/app.py"), None);
    }
}
