//! A GitHub double for the GitHub tests: an axum server on 127.0.0.1:0 answering exactly the
//! REST and GraphQL endpoints cordon calls, in GitHub's documented shapes, checking each
//! request's method, path, body and `Authorization`, recording every call, and failing on
//! request (scripted status codes and headers). Its repository's `clone_url` is a real bare
//! git repository whose pre-receive hook refuses pushes touching `.github/workflows/` (as
//! GitHub does for a token without the `workflows` permission).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

pub const OWNER: &str = "octo";
pub const NAME: &str = "calc";
pub const TOKEN: &str = "ghp_doubletoken0123456789";
pub const INSTALL_TOKEN: &str = "ghs_installationtoken9876543210";
/// The login the token belongs to, and the App's slug.
pub const LOGIN: &str = "cordon-user";
pub const APP_SLUG: &str = "cordon-app";

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub body: Value,
    pub auth: Option<String>,
}

/// A scripted failure: the next `times` requests whose method is `method` and whose path
/// starts with `path` get this answer.
pub struct Failure {
    pub method: &'static str,
    pub path: String,
    pub times: usize,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

#[derive(Default)]
pub struct World {
    pub calls: Vec<Call>,
    pub failures: VecDeque<Failure>,
    /// `.cordon.yml` on the default branch, if any.
    pub cordon_yml: Option<String>,
    pub pulls: Vec<Value>,
    /// Comments by issue/pull number.
    pub comments: Vec<(u64, Value)>,
    pub next_id: u64,
    /// Whether check runs are refused (a personal token may not make them).
    pub checks_forbidden: bool,
    pub check_runs: Vec<Value>,
    /// Issues by number, in the shape `GET /repos/{owner}/{repo}/issues/{n}` answers.
    pub issues: Vec<Value>,
}

#[derive(Clone)]
struct Double {
    world: Arc<Mutex<World>>,
    bare: PathBuf,
    base: String,
}

pub struct GitHubDouble {
    pub url: String,
    pub bare: PathBuf,
    pub world: Arc<Mutex<World>>,
    _dir: tempfile::TempDir,
}

impl GitHubDouble {
    pub fn calls(&self) -> Vec<Call> {
        self.world.lock().expect("lock").calls.clone()
    }

    /// `METHOD path` of every call, in order.
    pub fn lines(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }

    /// The one pull request is a draft again: a GraphQL `convertPullRequestToDraft` was
    /// sent and the double holds it as a draft.
    pub fn assert_demoted(&self) {
        assert_eq!(
            self.with(|w| (w.pulls.len(), w.pulls[0]["draft"].clone())),
            (1, serde_json::json!(true))
        );
        assert!(
            self.calls().iter().any(|c| c.path == "/graphql"
                && c.body.to_string().contains("convertPullRequestToDraft")),
            "{:?}",
            self.lines()
        );
    }

    pub fn fail(&self, f: Failure) {
        self.world.lock().expect("lock").failures.push_back(f);
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world.lock().expect("lock"))
    }

    /// Branches of the bare repository.
    pub fn branches(&self) -> Vec<String> {
        git(
            &self.bare,
            &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Opens issue `number` (by the repository's owner).
    pub fn issue(&self, number: u64, title: &str, body: &str) {
        self.with(|w| {
            w.issues.push(json!({
                "id": 5000 + number, "node_id": format!("I_{number}"), "number": number,
                "title": title, "body": body, "state": "open",
                "user": {"login": OWNER, "type": "User"}, "author_association": "OWNER",
                "html_url": format!("https://github.invalid/{OWNER}/{NAME}/issues/{number}"),
            }))
        });
    }

    /// A file at a revision of the bare repository.
    pub fn show(&self, rev_path: &str) -> String {
        git(&self.bare, &["show", rev_path])
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PRE_RECEIVE: &str = r#"#!/bin/sh
# As GitHub without the `workflows` permission: refuse any push that touches workflows.
zero=0000000000000000000000000000000000000000
while read old new ref; do
  [ "$new" = "$zero" ] && continue
  if [ "$old" = "$zero" ]; then range="$new --not --all"; else range="$old..$new"; fi
  if git log --name-only --format= $range | grep -q '^\.github/workflows/'; then
    echo "refusing to allow an integration to create or update .github/workflows without the workflows permission" >&2
    exit 1
  fi
done
"#;

/// Starts the double with a bare repository whose `main` holds `files`.
pub async fn start(files: &[(&str, &str)]) -> GitHubDouble {
    let dir = tempfile::tempdir().expect("tmp");
    let bare = dir.path().join("remote.git");
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    git(
        dir.path(),
        &[
            "init",
            "--quiet",
            "--bare",
            "-b",
            "main",
            bare.to_str().expect("utf8"),
        ],
    );
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(&hook, PRE_RECEIVE).expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    git(&seed, &["init", "--quiet", "-b", "main"]);
    for (p, content) in files {
        let path = seed.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "--quiet", "-m", "seed"]);
    git(
        &seed,
        &["push", "--quiet", bare.to_str().expect("utf8"), "main"],
    );

    let world = Arc::new(Mutex::new(World {
        next_id: 1000,
        ..World::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Double {
        world: world.clone(),
        bare: bare.clone(),
        base: format!("http://{addr}"),
    };
    let app = Router::new().fallback(handle).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    GitHubDouble {
        url: format!("http://{addr}"),
        bare,
        world,
        _dir: dir,
    }
}

fn answer(status: u16, body: Value) -> Response {
    let s = StatusCode::from_u16(status).expect("status");
    (s, [("content-type", "application/json")], body.to_string()).into_response()
}

fn not_found() -> Response {
    answer(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn invalid(msg: &str) -> Response {
    answer(
        422,
        json!({"message": "Validation Failed", "errors": [{"message": msg}]}),
    )
}

async fn handle(
    State(d): State<Double>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = uri.path().to_string();
    let full = match &query {
        Some(q) => format!("{raw}?{q}"),
        None => raw.clone(),
    };
    // GitHub Enterprise: REST under /api/v3, GraphQL at /api/graphql (not /api/v3/graphql).
    let path = if raw == "/api/v3/graphql" {
        "/nowhere".to_string()
    } else if let Some(p) = raw.strip_prefix("/api/v3/") {
        format!("/{p}")
    } else if raw == "/api/graphql" {
        "/graphql".to_string()
    } else {
        raw.clone()
    };
    let json_body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return answer(400, json!({"message": "Problems parsing JSON"})),
        }
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut w = d.world.lock().expect("lock");
    w.calls.push(Call {
        method: method.to_string(),
        path: full.clone(),
        body: json_body.clone(),
        auth: auth.clone(),
    });
    if let Some(i) = w
        .failures
        .iter()
        .position(|f| f.method == method.as_str() && full.starts_with(&f.path))
    {
        let f = &mut w.failures[i];
        f.times -= 1;
        let mut r = answer(f.status, f.body.clone());
        for (k, v) in &f.headers {
            r.headers_mut().insert(*k, v.parse().expect("header"));
        }
        if f.times == 0 {
            w.failures.remove(i);
        }
        return r;
    }
    // App endpoints take the App's JWT; everything else the token.
    let app_route = path == format!("/repos/{OWNER}/{NAME}/installation")
        || path == "/app"
        || path.starts_with("/app/installations/");
    let jwt = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t.starts_with("ey") && t.split('.').count() == 3);
    let tokened = matches!(auth.as_deref(), Some(a) if a == format!("Bearer {TOKEN}") || a == format!("Bearer {INSTALL_TOKEN}"));
    if (app_route && !jwt) || (!app_route && !tokened) {
        return answer(401, json!({"message": "Bad credentials"}));
    }
    route(
        &d,
        &mut w,
        &method,
        &path,
        query.as_deref().unwrap_or(""),
        &json_body,
    )
}

/// The item of `items` whose `number` is `n`.
fn numbered<'a>(items: &'a [Value], n: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|i| n.parse::<u64>().ok() == i["number"].as_u64())
}

fn query_param<'a>(q: &'a str, k: &str) -> Option<&'a str> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
}

fn route(
    d: &Double,
    w: &mut World,
    method: &Method,
    path: &str,
    q: &str,
    body: &Value,
) -> Response {
    let repo = format!("/repos/{OWNER}/{NAME}");
    let Some(rest) = path.strip_prefix(&repo) else {
        if method == Method::POST && path == "/app/installations/42/access_tokens" {
            return answer(
                201,
                json!({
                    "token": INSTALL_TOKEN,
                    "expires_at": "2099-01-01T00:00:00Z",
                    "permissions": {"contents": "write", "pull_requests": "write"},
                    "repository_selection": "selected"
                }),
            );
        }
        if method == Method::GET && path == "/app" {
            return answer(200, json!({"id": 7, "slug": APP_SLUG, "name": "cordon"}));
        }
        if method == Method::GET && path == "/user" {
            let login = if w.calls.last().and_then(|c| c.auth.as_deref())
                == Some(&format!("Bearer {INSTALL_TOKEN}"))
            {
                return answer(
                    403,
                    json!({"message": "Resource not accessible by integration"}),
                );
            } else {
                LOGIN
            };
            return answer(200, json!({"login": login, "id": 9, "type": "User"}));
        }
        if method == Method::POST && path == "/graphql" {
            return graphql(w, body);
        }
        return not_found();
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", [""]) => answer(
            200,
            json!({
                "id": 1, "node_id": "R_1", "name": NAME, "full_name": format!("{OWNER}/{NAME}"),
                "default_branch": "main", "private": false,
                "clone_url": format!("file://{}", d.bare.display()),
                "html_url": format!("{}/{OWNER}/{NAME}", d.base),
            }),
        ),
        ("GET", ["installation"]) => answer(
            200,
            json!({
                "id": 42, "account": {"login": OWNER, "id": 1, "node_id": "U_1", "avatar_url": "", "gravatar_id": "", "url": "", "html_url": "", "followers_url": "", "following_url": "", "gists_url": "", "starred_url": "", "subscriptions_url": "", "organizations_url": "", "repos_url": "", "events_url": "", "received_events_url": "", "type": "User", "site_admin": false},
                "app_id": 7, "permissions": {}, "events": []
            }),
        ),
        ("GET", ["contents", ".cordon.yml"]) => {
            if query_param(q, "ref") != Some("main") {
                return invalid("cordon must read .cordon.yml from the default branch");
            }
            match &w.cordon_yml {
                Some(c) => answer(
                    200,
                    json!({
                        "type": "file", "encoding": "base64", "path": ".cordon.yml", "name": ".cordon.yml",
                        "content": base64::engine::general_purpose::STANDARD.encode(c),
                    }),
                ),
                None => not_found(),
            }
        }
        ("GET", ["pulls"]) => {
            let head = query_param(q, "head").map(|h| h.replace("%3A", ":").replace("%2F", "/"));
            let open: Vec<Value> = w
                .pulls
                .iter()
                .filter(|p| p["state"] == "open")
                .filter(|p| {
                    head.as_deref().is_none_or(|h| {
                        format!("{OWNER}:{}", p["head"]["ref"].as_str().unwrap_or("")) == h
                    })
                })
                .cloned()
                .collect();
            answer(200, Value::Array(open))
        }
        ("POST", ["pulls"]) => {
            for k in ["title", "head", "base"] {
                if !body[k].is_string() {
                    return invalid(&format!("`{k}` is required"));
                }
            }
            let head = body["head"].as_str().unwrap_or("");
            let exists = Command::new("git")
                .current_dir(&d.bare)
                .args([
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/heads/{head}"),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if !exists {
                return invalid(&format!("head `{head}` does not exist"));
            }
            // As GitHub: one open pull request per head.
            if w.pulls
                .iter()
                .any(|p| p["state"] == "open" && p["head"]["ref"] == head)
            {
                return invalid(&format!(
                    "A pull request already exists for {OWNER}:{head}."
                ));
            }
            w.next_id += 1;
            let number = w.pulls.len() as u64 + 1;
            let pr = json!({
                "id": w.next_id, "number": number, "node_id": format!("PR_node{number}"),
                "state": "open", "draft": body["draft"].as_bool().unwrap_or(false),
                "title": body["title"], "body": body["body"],
                "head": {"ref": head, "repo": {"full_name": format!("{OWNER}/{NAME}")}},
                "base": {"ref": body["base"]},
                "html_url": format!("{}/{OWNER}/{NAME}/pull/{number}", d.base),
            });
            w.pulls.push(pr.clone());
            answer(201, pr)
        }
        ("GET", ["pulls", n]) => {
            match w
                .pulls
                .iter()
                .find(|p| n.parse::<u64>().ok() == p["number"].as_u64())
            {
                Some(pr) => answer(200, pr.clone()),
                None => not_found(),
            }
        }
        ("PATCH", ["pulls", n]) => {
            let Some(pr) = w
                .pulls
                .iter_mut()
                .find(|p| n.parse::<u64>().ok() == p["number"].as_u64())
            else {
                return not_found();
            };
            if let Some(b) = body.get("body") {
                pr["body"] = b.clone();
            }
            answer(200, pr.clone())
        }
        ("GET", ["issues", n]) => {
            numbered(&w.issues, n).map_or_else(not_found, |i| answer(200, i.clone()))
        }
        ("GET", ["issues", n, "comments"]) => {
            let per_page: usize = query_param(q, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            let page: usize = query_param(q, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let all: Vec<Value> = w
                .comments
                .iter()
                .filter(|(k, _)| k.to_string() == *n)
                .map(|(_, c)| c.clone())
                .collect();
            let slice: Vec<Value> = all
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .collect();
            answer(200, Value::Array(slice))
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(text) = body["body"].as_str() else {
                return invalid("`body` is required");
            };
            let Ok(num) = n.parse::<u64>() else {
                return not_found();
            };
            w.next_id += 1;
            // The commenter is whoever the credentials are.
            let user = if w.calls.last().and_then(|c| c.auth.as_deref())
                == Some(&format!("Bearer {INSTALL_TOKEN}"))
            {
                json!({"login": format!("{APP_SLUG}[bot]"), "type": "Bot"})
            } else {
                json!({"login": LOGIN, "type": "User"})
            };
            let c = json!({"id": w.next_id, "body": text, "user": user});
            w.comments.push((num, c.clone()));
            answer(201, c)
        }
        ("PATCH", ["issues", "comments", id]) => {
            let Some(text) = body["body"].as_str() else {
                return invalid("`body` is required");
            };
            let Some((_, c)) = w
                .comments
                .iter_mut()
                .find(|(_, c)| id.parse::<u64>().ok() == c["id"].as_u64())
            else {
                return not_found();
            };
            c["body"] = json!(text);
            answer(200, c.clone())
        }
        ("POST", ["check-runs"]) => {
            if w.checks_forbidden {
                return answer(
                    403,
                    json!({"message": "Resource not accessible by personal access token"}),
                );
            }
            if !body["name"].is_string() || !body["head_sha"].is_string() {
                return invalid("`name` and `head_sha` are required");
            }
            if body["status"] == "completed" && !body["conclusion"].is_string() {
                return invalid("a completed check run needs a conclusion");
            }
            w.next_id += 1;
            w.check_runs.push(body.clone());
            answer(
                201,
                json!({"id": w.next_id, "name": body["name"], "head_sha": body["head_sha"], "status": body["status"], "conclusion": body["conclusion"]}),
            )
        }
        _ => not_found(),
    }
}

fn graphql(w: &mut World, body: &Value) -> Response {
    let q = body["query"].as_str().unwrap_or("");
    let (mutation, draft) = if q.contains("markPullRequestReadyForReview") {
        ("markPullRequestReadyForReview", false)
    } else if q.contains("convertPullRequestToDraft") {
        ("convertPullRequestToDraft", true)
    } else {
        return answer(200, json!({"errors": [{"message": "unknown query"}]}));
    };
    let id = body["variables"]["id"].as_str().unwrap_or("");
    let Some(pr) = w.pulls.iter_mut().find(|p| p["node_id"] == id) else {
        return answer(
            200,
            json!({"data": null, "errors": [{"type": "NOT_FOUND", "message": format!("Could not resolve to a node with the global id of '{id}'")}]}),
        );
    };
    pr["draft"] = json!(draft);
    answer(
        200,
        json!({"data": {mutation: {"pullRequest": {"isDraft": draft}}}}),
    )
}

// ---------------------------------------------------------------------------------------
// Pull requests with real heads (flow 1 on a pull request's changed lines, forks). Kept in
// a block of its own.
// ---------------------------------------------------------------------------------------

impl GitHubDouble {
    /// A commit on `parent` (a revision of the bare repository) writing `files` (`None`
    /// deletes; a path with `->` renames, as `old->new`, keeping the old content unless a new
    /// one is given), pushed to each of `refs`. Its id.
    pub fn commit_on(
        &self,
        parent: &str,
        files: &[(&str, Option<&str>)],
        refs: &[String],
    ) -> String {
        let work = tempfile::tempdir().expect("tmp");
        let dir = work.path().join("w");
        git(
            work.path(),
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                self.bare.to_str().expect("utf8"),
                dir.to_str().expect("utf8"),
            ],
        );
        git(&dir, &["checkout", "--quiet", "--detach", parent]);
        for (path, content) in files {
            if let Some((old, new)) = path.split_once("->") {
                let to = dir.join(new);
                std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
                git(&dir, &["mv", old, new]);
                if let Some(c) = content {
                    std::fs::write(to, c).expect("write");
                }
                continue;
            }
            let p = dir.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(p, c).expect("write");
                }
                None => {
                    std::fs::remove_file(p).expect("rm");
                }
            }
        }
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "--quiet", "-m", "change"]);
        let sha = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
        for r in refs {
            git(&dir, &["push", "--quiet", "origin", &format!("HEAD:{r}")]);
        }
        sha
    }

    /// Pull request `number` from `head_repo`'s `head_ref` into `main`: a commit on `main`
    /// writing `files`, at `refs/pull/<number>/head` (GitHub keeps every pull request's head
    /// there, a fork's too) and, for a branch of this repository, at `refs/heads/<head_ref>`.
    /// The bare repository serves partial clones, as GitHub does. The head commit.
    pub fn open_pull(
        &self,
        number: u64,
        head_repo: &str,
        head_ref: &str,
        files: &[(&str, Option<&str>)],
    ) -> String {
        git(&self.bare, &["config", "uploadpack.allowFilter", "true"]);
        let mut refs = vec![format!("refs/pull/{number}/head")];
        if head_repo == format!("{OWNER}/{NAME}") {
            refs.push(format!("refs/heads/{head_ref}"));
        }
        let sha = self.commit_on("main", files, &refs);
        let base_sha = git(&self.bare, &["rev-parse", "main"]).trim().to_string();
        self.with(|w| {
            w.pulls.push(json!({
                "number": number, "node_id": format!("PR_node{number}"), "state": "open",
                "draft": false, "title": "a change", "body": "",
                "head": {"ref": head_ref, "sha": sha, "label": format!("{}:{head_ref}", head_repo.split('/').next().unwrap_or("")),
                         "repo": {"full_name": head_repo, "fork": head_repo != format!("{OWNER}/{NAME}"),
                                  "clone_url": format!("https://github.com/{head_repo}.git")}},
                "base": {"ref": "main", "sha": base_sha, "repo": {"full_name": format!("{OWNER}/{NAME}")}},
                "html_url": format!("https://github.com/{OWNER}/{NAME}/pull/{number}"),
            }))
        });
        sha
    }
}
