//! git, run safely on a repository cordon does not trust: no hooks (`core.hooksPath` is
//! `/dev/null`), no submodules, no user or system configuration, no prompts, and the token
//! handed over by a credential helper that reads it from the child's environment, so it is
//! never in a remote URL, a command line or `.git/config`.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::client::GitHubError;
use super::diff::DiffParser;
use super::secret::Secret;
use crate::pipeline::gaps::Lines;

/// The environment variable the credential helper reads the token from (set only on git's
/// own process).
const TOKEN_ENV: &str = "CORDON_GIT_TOKEN";

/// The helper: prints GitHub's token-as-password form for `get`, nothing for `store`/`erase`.
const HELPER: &str = "!f() { test \"$1\" = get && echo username=x-access-token && echo \"password=${CORDON_GIT_TOKEN}\"; }; f";

/// Where [`Git::clone_pull`] keeps the pull request's head.
pub const PULL_REF: &str = "refs/cordon/pull";

/// A remote URL with credentials in it is refused: they go through the helper only.
fn refuse_credentials(url: &str) -> Result<(), GitHubError> {
    if url.contains('@')
        && url.contains("://")
        && url
            .split("://")
            .nth(1)
            .is_some_and(|r| r.split('/').next().is_some_and(|h| h.contains('@')))
    {
        return Err(GitHubError::Git {
            what: "clone".into(),
            message:
                "the remote URL carries credentials; cordon passes them by a credential helper only"
                    .into(),
        });
    }
    Ok(())
}

/// git for one working copy.
#[derive(Debug, Clone)]
pub struct Git {
    token: Option<Secret>,
    pub dir: PathBuf,
}

impl Git {
    pub fn new(dir: &Path, token: Option<Secret>) -> Git {
        Git {
            token: token.filter(|t| !t.is_empty()),
            dir: dir.to_path_buf(),
        }
    }

    fn command(&self, cwd: &Path) -> Command {
        let mut c = Command::new("git");
        c.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("GIT_AUTHOR_NAME", "cordon")
            .env("GIT_AUTHOR_EMAIL", "cordon@users.noreply.github.com")
            .env("GIT_COMMITTER_NAME", "cordon")
            .env("GIT_COMMITTER_EMAIL", "cordon@users.noreply.github.com")
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "submodule.recurse=false",
                "-c",
                "protocol.ext.allow=never",
                "-c",
                "core.fsmonitor=false",
                "-c",
                "credential.helper=",
                "-c",
            ])
            .arg(format!("credential.helper={HELPER}"))
            .kill_on_drop(true);
        if let Some(t) = &self.token {
            c.env(TOKEN_ENV, t.expose());
        }
        c
    }

    async fn run_in(&self, cwd: &Path, what: &str, args: &[&str]) -> Result<String, GitHubError> {
        let out = self
            .command(cwd)
            .args(args)
            .output()
            .await
            .map_err(|e| GitHubError::Git {
                what: what.into(),
                message: format!("cannot run git: {e}"),
            })?;
        let scrub = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            self.token.as_ref().map_or(s.clone(), |t| t.scrub(&s))
        };
        if !out.status.success() {
            return Err(GitHubError::Git {
                what: what.into(),
                message: scrub(&out.stderr).trim().to_string(),
            });
        }
        Ok(scrub(&out.stdout))
    }

    async fn run(&self, what: &str, args: &[&str]) -> Result<String, GitHubError> {
        self.run_in(&self.dir, what, args).await
    }

    /// Clones `branch` of `url` (shallow, no submodules, no checkout hooks) into `self.dir`.
    pub async fn clone(&self, url: &str, branch: &str) -> Result<(), GitHubError> {
        self.clone_branch(url, branch, &["--depth=1"]).await
    }

    /// Clones `branch` of `url` into `self.dir` with no submodules, and `how` (depth, filter).
    async fn clone_branch(&self, url: &str, branch: &str, how: &[&str]) -> Result<(), GitHubError> {
        refuse_credentials(url)?;
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        let dir = self.dir.display().to_string();
        let mut args = vec!["clone", "--quiet"];
        args.extend_from_slice(how);
        args.extend_from_slice(&[
            "--no-recurse-submodules",
            "--single-branch",
            "--branch",
            branch,
            "--",
            url,
            &dir,
        ]);
        self.run_in(parent, "clone", &args).await?;
        Ok(())
    }

    /// For pull request `number` of the repository at `url` (the base repository, whatever
    /// repository the pull request's branch is in): clones `base` with its history but no file
    /// contents until needed (`--filter=blob:none`; a server without filters sends them all),
    /// fetches `refs/pull/<number>/head` from that same remote into `refs/cordon/pull`, and
    /// checks it out (detached). A fork's own URL is never used.
    pub async fn clone_pull(&self, url: &str, base: &str, number: u64) -> Result<(), GitHubError> {
        self.clone_branch(url, base, &["--filter=blob:none", "--no-checkout"])
            .await?;
        let refspec = format!("+refs/pull/{number}/head:{PULL_REF}");
        self.run(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-recurse-submodules",
                "origin",
                &refspec,
            ],
        )
        .await?;
        self.run(
            "checkout",
            &["checkout", "--quiet", "--detach", PULL_REF, "--"],
        )
        .await?;
        Ok(())
    }

    /// The lines `head` changed since it left `base` (`git diff BASE...HEAD`, GitHub's
    /// "files changed"), in Python files, read as the diff streams.
    pub async fn changed_lines(&self, base: &str, head: &str) -> Result<Lines, GitHubError> {
        use tokio::io::AsyncBufReadExt;
        let range = format!("{base}...{head}");
        let mut child = self
            .command(&self.dir)
            .args([
                "-c",
                "core.quotePath=true",
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--unified=0",
                "--find-renames",
                "--diff-filter=ACMRT",
                "--src-prefix=a/",
                "--dst-prefix=b/",
                &range,
                "--",
                ":(glob)**/*.py",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| GitHubError::Git {
                what: "diff".into(),
                message: format!("cannot run git: {e}"),
            })?;
        let stdout = child.stdout.take().ok_or_else(|| GitHubError::Git {
            what: "diff".into(),
            message: "no output".into(),
        })?;
        let mut reader = tokio::io::BufReader::new(stdout);
        let mut parser = DiffParser::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| GitHubError::Git {
                    what: "diff".into(),
                    message: format!("reading its output: {e}"),
                })?;
            if n == 0 {
                break;
            }
            parser.line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| GitHubError::Git {
                what: "diff".into(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(GitHubError::Git {
                what: "diff".into(),
                message: self
                    .token
                    .as_ref()
                    .map_or(err.clone(), |t| t.scrub(&err))
                    .trim()
                    .to_string(),
            });
        }
        Ok(parser.finish())
    }

    /// The last commit as a patch `git am` (or `git apply`) takes.
    pub async fn patch(&self) -> Result<String, GitHubError> {
        self.run(
            "format-patch",
            &[
                "format-patch",
                "--stdout",
                "--no-color",
                "--no-signature",
                "-1",
                "HEAD",
            ],
        )
        .await
    }

    /// A clone of `branch` of `url` (as [`Git::clone`]) in a new temporary directory, which
    /// is removed when the returned guard is dropped.
    pub async fn clone_temp(
        url: &str,
        branch: &str,
        token: Option<Secret>,
    ) -> Result<(tempfile::TempDir, Git), GitHubError> {
        let work = tempfile::tempdir().map_err(|e| GitHubError::Git {
            what: "clone".into(),
            message: format!("cannot make a temporary directory: {e}"),
        })?;
        let git = Git::new(&work.path().join("repo"), token);
        git.clone(url, branch).await?;
        Ok((work, git))
    }

    /// The commit `HEAD` names.
    pub async fn head(&self) -> Result<String, GitHubError> {
        Ok(self
            .run("rev-parse", &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_string())
    }

    /// Starts (or restarts) `branch` at `HEAD`.
    pub async fn branch(&self, branch: &str) -> Result<(), GitHubError> {
        self.run("checkout", &["checkout", "--quiet", "-B", branch])
            .await?;
        Ok(())
    }

    /// Stages `paths` and commits them; the paths changed relative to the parent.
    pub async fn commit(
        &self,
        paths: &[String],
        message: &str,
    ) -> Result<Vec<String>, GitHubError> {
        let mut args = vec!["add", "--"];
        args.extend(paths.iter().map(String::as_str));
        self.run("add", &args).await?;
        self.run(
            "commit",
            &["commit", "--quiet", "--no-verify", "-m", message],
        )
        .await?;
        let changed = self
            .run("diff", &["diff", "--name-only", "HEAD~1", "HEAD"])
            .await?;
        Ok(changed.lines().map(str::to_string).collect())
    }

    /// Whether any of `paths` differs from `HEAD` (or is new).
    pub async fn differs(&self, paths: &[String]) -> Result<bool, GitHubError> {
        let mut args = vec!["status", "--porcelain", "--untracked-files=all", "--"];
        args.extend(paths.iter().map(String::as_str));
        Ok(!self.run("status", &args).await?.trim().is_empty())
    }

    /// Pushes `branch` to `origin`, replacing cordon's earlier push of it.
    pub async fn push(&self, branch: &str) -> Result<(), GitHubError> {
        let refspec = format!("+HEAD:refs/heads/{branch}");
        self.run(
            "push",
            &["push", "--quiet", "--no-verify", "origin", &refspec],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper hands git the token for `get`, and git never writes it to the config.
    #[tokio::test]
    async fn the_helper_gives_the_token_to_git_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let git = Git::new(dir.path(), Some(Secret::new("ghs_helpertoken42")));
        let mut c = git.command(dir.path());
        c.args(["credential", "fill"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().expect("git");
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"protocol=https\nhost=github.com\n\n")
            .await
            .expect("write");
        drop(stdin);
        let out = child.wait_with_output().await.expect("waits");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("username=x-access-token"), "{text}");
        assert!(text.contains("password=ghs_helpertoken42"), "{text}");
    }

    #[tokio::test]
    async fn a_url_with_credentials_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let git = Git::new(&dir.path().join("c"), None);
        let e = git
            .clone("https://x-access-token:abc@github.com/o/r.git", "main")
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("credential helper"), "{e}");
    }
}
