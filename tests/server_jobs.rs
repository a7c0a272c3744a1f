//! Seeing jobs, against a real `cordon serve` and the real engine: `GET /v1/jobs` (each
//! filter, pages that hold still while jobs are submitted, a token that is not an admin's
//! seeing only its own, 400s naming the parameter), and the commands `cordon jobs`,
//! `cordon status`, `cordon logs [-f]`, `cordon cancel`, `cordon submit --detach`.

mod server_support;

use std::collections::HashSet;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;
use server_support::*;

/// One job at a time: the first job submitted runs, the others wait in the queue (so most
/// jobs here never need a container). Draining at the end takes a second.
const CONFIG: &str = "concurrency: 1\nshutdown_grace: 1s\n";
const CI: &str = "ci-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const ALICE: &str = "alice-token-0123456789abcdef";

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array: {page}"))
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect()
}

fn set(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A listing's page; asserts `200`.
async fn list(c: &Client, query: &str) -> Value {
    let (code, v) = c.get(&format!("/v1/jobs{query}")).await;
    assert_eq!(code, 200, "GET /v1/jobs{query}: {v}");
    v
}

async fn listed(c: &Client, query: &str) -> HashSet<String> {
    ids(&list(c, query).await).into_iter().collect()
}

/// The jobs of a listing are newest first: `(submitted_ms, id)` strictly descending.
fn assert_newest_first(jobs: &[Value]) {
    let keys: Vec<(i64, String)> = jobs
        .iter()
        .map(|j| {
            (
                j["submitted_ms"].as_i64().expect("submitted_ms"),
                j["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(w[0] > w[1], "not newest first: {keys:?}");
    }
}

/// `cordon ARGS --server URL` with `auth` (`--token T` or `--token-file F`), no CORDON_*
/// variables from the environment.
async fn cordon(url: &str, auth: &[&str], args: &[&str]) -> Output {
    tokio::process::Command::new(cordon_bin())
        .args(args)
        .args(["--server", url])
        .args(auth)
        .env_remove("CORDON_SERVER")
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .output()
        .await
        .expect("cordon runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A second name for the test image (removed again at the end), so jobs can differ in image.
struct Tag(String);

impl Tag {
    fn new() -> Tag {
        let name = format!("cordon/jobs-test:filter-{}", std::process::id());
        docker(&["tag", IMAGE, &name]);
        Tag(name)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", &self.0])
            .output();
    }
}

/// `since` as RFC 3339 in UTC with milliseconds, or the same instant at +02:00.
fn rfc3339(ms: i64, plus_two_hours: bool) -> String {
    let shift = if plus_two_hours { 2 * 3600 * 1000 } else { 0 };
    let t = UNIX_EPOCH + Duration::from_millis((ms + shift) as u64);
    let s = humantime::format_rfc3339_millis(t).to_string();
    if plus_two_hours {
        s.replace('Z', "+02:00")
    } else {
        s
    }
}

/// Every filter of `GET /v1/jobs` — `state` (repeated or a comma list), `outcome`, `image`,
/// `since` (Unix ms, RFC 3339 in UTC and with an offset; at or after) — and their
/// combinations; the items are the jobs' status objects. `cordon jobs` shows the same, as
/// JSON and as a table, one page or all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_by_state_outcome_image_and_since() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), CONFIG);
    let c = srv.client();
    let tag = Tag::new();

    let passed = c.submit_ok(&spec("true"), None).await;
    c.wait_state(&passed, "finished", Duration::from_secs(120))
        .await;
    let failed = c.submit_ok(&spec("exit 3"), None).await;
    let failed_st = c
        .wait_state(&failed, "finished", Duration::from_secs(120))
        .await;
    let running = c.submit_ok(&spec("echo up; sleep 120"), None).await;
    c.wait_event(&running, "output").await;
    let tagged = c
        .submit_ok(&spec("true").replace(IMAGE, &tag.0), None)
        .await;
    let queued = c.submit_ok(&spec("true"), None).await;

    let all = list(&c, "").await;
    assert_eq!(all["next_cursor"], Value::Null, "{all}");
    let jobs = all["jobs"].as_array().expect("jobs").clone();
    assert_newest_first(&jobs);
    assert_eq!(
        ids(&all),
        [&queued, &tagged, &running, &failed, &passed].map(String::as_str),
        "submitted one after another: newest first"
    );
    // Each item is the job's status, as GET /v1/jobs/{id} has it.
    for j in &jobs {
        let id = j["id"].as_str().expect("id");
        if j["state"] == "finished" {
            assert_eq!(j, &c.status(id).await);
        }
    }
    assert_eq!(jobs[0]["image"], IMAGE);
    assert_eq!(jobs[1]["image"], tag.0.as_str());
    assert_eq!(jobs[1]["queue_position"], 0, "{}", jobs[1]);
    assert_eq!(jobs[0]["queue_position"], 1, "{}", jobs[0]);
    assert_eq!(jobs[3]["result"]["exit_code"], 3);

    // state
    assert_eq!(listed(&c, "?state=running").await, set(&[&running]));
    assert_eq!(listed(&c, "?state=queued").await, set(&[&queued, &tagged]));
    let waiting = set(&[&queued, &tagged, &running]);
    assert_eq!(listed(&c, "?state=queued,running").await, waiting);
    assert_eq!(listed(&c, "?state=queued&state=running").await, waiting);
    assert_eq!(
        listed(&c, "?state=finished").await,
        set(&[&passed, &failed])
    );
    // outcome
    assert_eq!(listed(&c, "?outcome=passed").await, set(&[&passed]));
    assert_eq!(listed(&c, "?outcome=failed").await, set(&[&failed]));
    assert_eq!(
        listed(&c, "?outcome=failed,passed").await,
        set(&[&passed, &failed])
    );
    assert!(listed(&c, "?outcome=cancelled").await.is_empty());
    // image
    assert_eq!(
        listed(&c, &format!("?image={}", tag.0)).await,
        set(&[&tagged])
    );
    assert_eq!(
        listed(&c, &format!("?image={IMAGE}")).await,
        set(&[&queued, &running, &failed, &passed])
    );
    // since: at or after, whichever way the time is written.
    let at = failed_st["submitted_ms"].as_i64().expect("ms");
    let from_failed = set(&[&queued, &tagged, &running, &failed]);
    assert_eq!(listed(&c, &format!("?since={at}")).await, from_failed);
    assert_eq!(
        listed(&c, &format!("?since={}", at + 1)).await,
        set(&[&queued, &tagged, &running])
    );
    let utc = rfc3339(at, false);
    assert_eq!(listed(&c, &format!("?since={utc}")).await, from_failed);
    let offset = rfc3339(at, true);
    assert!(offset.ends_with("+02:00"), "{offset}");
    assert_eq!(
        listed(&c, &format!("?since={}", offset.replace('+', "%2B"))).await,
        from_failed
    );
    // Together: every parameter must match.
    assert_eq!(
        listed(&c, &format!("?state=finished&since={at}")).await,
        set(&[&failed])
    );
    assert!(
        listed(&c, &format!("?outcome=passed&image={}", tag.0))
            .await
            .is_empty()
    );

    // The command line: the same listing.
    let token_file = srv.token_path();
    let auth = ["--token-file", token_file.to_str().expect("utf-8")];
    let o = cordon(&srv.url, &auth, &["jobs", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(ids(&v), ids(&all));
    assert_eq!(v["next_cursor"], Value::Null);
    assert_eq!(v["jobs"][3], jobs[3], "a finished job's status, unchanged");
    let o = cordon(
        &srv.url,
        &auth,
        &["jobs", "--json", "--state", "queued", "--image", &tag.0],
    )
    .await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(ids(&v), [tagged.as_str()]);
    let o = cordon(&srv.url, &auth, &["jobs", "--json", "--outcome", "failed"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(ids(&v), [failed.as_str()]);

    // The table: a header and a row per job, newest first.
    let o = cordon(&srv.url, &auth, &["jobs"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    for h in ["ID", "STATE", "OUTCOME", "IMAGE", "SUBMITTED", "DURATION"] {
        assert!(lines[0].contains(h), "{out}");
    }
    for (line, id) in lines[1..].iter().zip(ids(&all)) {
        assert!(line.starts_with(&id), "{out}");
    }
    let failed_row: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(failed_row[1..4], ["finished", "failed", IMAGE], "{out}");
    assert!(failed_row[4].ends_with('Z') && failed_row[5].ends_with('s'));
    assert!(
        lines[3].contains("running") && lines[3].ends_with("s+"),
        "{out}"
    );
    // One page of two, then all of them page by page.
    let o = cordon(&srv.url, &auth, &["jobs", "--limit", "2"]).await;
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    assert!(stderr(&o).contains("--all"), "{}", stderr(&o));
    let o = cordon(
        &srv.url,
        &auth,
        &["jobs", "--limit", "2", "--all", "--json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(ids(&v), ids(&all));
    assert_eq!(v["next_cursor"], Value::Null);

    for id in [&queued, &tagged, &running] {
        let r = c
            .req(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .expect("cancel");
        assert_eq!(r.status(), 200);
    }
    assert!(containers_of(&running).is_empty());
}

/// Three pages of four while jobs are submitted all along (between the pages and from
/// another client): together the pages hold every job there was when the first was read,
/// each once, newest first; nothing submitted after the first page shows up on a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hold_still_while_jobs_are_submitted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), CONFIG);
    let c = srv.client();
    // The first job holds the only slot; the others wait.
    let mut before = vec![c.submit_ok(&spec("sleep 120"), None).await];
    for _ in 0..10 {
        before.push(c.submit_ok(&spec("true"), None).await);
    }

    let p1 = list(&c, "?limit=4").await;
    // Another client submits from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let other = {
        let (stop, count) = (stop.clone(), count.clone());
        let c = srv.client();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                ids.push(c.submit_ok(&spec("true"), None).await);
                count.fetch_add(1, Ordering::SeqCst);
            }
            ids
        })
    };
    let wait_for = |n: usize| {
        let count = count.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while count.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the other client is stuck");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut after = Vec::new();
    let mut pages = vec![p1];
    for round in 1..=2 {
        after.push(c.submit_ok(&spec("true"), None).await);
        after.push(c.submit_ok(&spec("true"), None).await);
        wait_for(round).await;
        let cursor = pages
            .last()
            .and_then(|p| p["next_cursor"].as_str())
            .expect("a next page")
            .to_string();
        pages.push(list(&c, &format!("?limit=4&cursor={cursor}")).await);
    }
    stop.store(true, Ordering::SeqCst);
    after.extend(other.await.expect("the other client"));
    assert!(after.len() >= 6, "jobs were submitted while paging");

    let sizes: Vec<usize> = pages.iter().map(|p| ids(p).len()).collect();
    assert_eq!(sizes, [4, 4, 3], "11 jobs in pages of 4");
    assert_eq!(pages[2]["next_cursor"], Value::Null, "the last page");
    let paged: Vec<Value> = pages
        .iter()
        .flat_map(|p| p["jobs"].as_array().expect("jobs").clone())
        .collect();
    assert_newest_first(&paged); // and so no job twice
    let paged_ids: Vec<String> = pages.iter().flat_map(ids).collect();
    let mut expected = before.clone();
    expected.reverse();
    assert_eq!(paged_ids, expected, "every job there was, newest first");
    let later: HashSet<&String> = after.iter().collect();
    assert!(paged_ids.iter().all(|id| !later.contains(id)));
    // They are all there now, ahead of the others.
    let now = list(&c, "?limit=500").await;
    assert_eq!(ids(&now).len(), before.len() + after.len());
    assert_eq!(ids(&now)[after.len()..], paged_ids[..]);

    // A filter holds across pages too.
    let p = list(&c, "?state=queued&limit=5").await;
    let next = p["next_cursor"].as_str().expect("more than 5 queued");
    let rest = list(&c, &format!("?state=queued&limit=500&cursor={next}")).await;
    let queued: Vec<String> = ids(&p).into_iter().chain(ids(&rest)).collect();
    assert_eq!(
        queued.len(),
        before.len() + after.len() - 1,
        "all but the first"
    );
    assert_eq!(queued.iter().collect::<HashSet<_>>().len(), queued.len());

    let r = c
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{}", before[0]))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 200);
}

/// A token that is not an admin's lists only the jobs it submitted, through every filter and
/// page; an admin's lists everyone's. `cordon jobs` with such a token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_is_not_an_admins_lists_only_its_own() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(
        &tmp.path().join("data"),
        &format!(
            "{CONFIG}tokens:\n  - {{ name: ci, token: {CI} }}\n  - {{ name: bob, token: {BOB} }}\n  - {{ name: alice, token: {ALICE}, admin: true }}\n"
        ),
    );
    let (ci, bob, alice) = (
        srv.client_with(Some(CI)),
        srv.client_with(Some(BOB)),
        srv.client_with(Some(ALICE)),
    );
    let ci_running = ci.submit_ok(&spec("echo up; sleep 120"), None).await;
    ci.wait_event(&ci_running, "output").await;
    let ci_queued = ci.submit_ok(&spec("true"), None).await;
    let bob_1 = bob.submit_ok(&spec("true"), None).await;
    let bob_2 = bob.submit_ok(&spec("true"), None).await;

    assert_eq!(listed(&ci, "").await, set(&[&ci_running, &ci_queued]));
    assert_eq!(listed(&bob, "").await, set(&[&bob_1, &bob_2]));
    assert_eq!(
        listed(&alice, "").await,
        set(&[&ci_running, &ci_queued, &bob_1, &bob_2])
    );
    assert_eq!(listed(&ci, "?state=queued").await, set(&[&ci_queued]));
    assert!(listed(&bob, "?state=running").await.is_empty());
    for j in list(&bob, "").await["jobs"].as_array().expect("jobs") {
        assert_eq!(j["submitted_by"], "bob");
    }
    // Bob's pages of one: his two jobs, no one else's.
    let p1 = list(&bob, "?limit=1").await;
    let next = p1["next_cursor"].as_str().expect("a second page");
    let p2 = list(&bob, &format!("?limit=1&cursor={next}")).await;
    assert_eq!(p2["next_cursor"], Value::Null);
    assert_eq!(
        [ids(&p1), ids(&p2)].concat(),
        [bob_2.as_str(), bob_1.as_str()]
    );
    // A cursor from alice's listing leads bob to his own jobs only.
    let a1 = list(&alice, "?limit=1").await;
    let next = a1["next_cursor"].as_str().expect("more");
    assert_eq!(
        listed(&bob, &format!("?cursor={next}")).await,
        set(&[&bob_1])
    );

    let o = cordon(&srv.url, &["--token", BOB], &["jobs", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(ids(&v), [bob_2.as_str(), bob_1.as_str()]);

    let r = ci
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{ci_running}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 200);
}

/// A value the listing does not take is `400` naming the parameter and what it takes; so is
/// an unknown parameter. `cordon jobs` exits 2 with the service's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_a_400_naming_the_parameter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), CONFIG);
    let c = srv.client();
    for (query, param, says) in [
        ("state=done", "state", "queued, running, finished"),
        ("state=queued,done", "state", "`done`"),
        ("outcome=ok", "outcome", "passed, failed, timed_out"),
        ("image=", "image", "image reference"),
        ("since=yesterday", "since", "RFC 3339"),
        ("since=2024-05-01T12:00:00", "since", "Unix milliseconds"),
        ("limit=0", "limit", "from 1 to 500"),
        ("limit=501", "limit", "from 1 to 500"),
        ("limit=all", "limit", "from 1 to 500"),
        ("cursor=abc", "cursor", "next_cursor"),
        (
            "sort=asc",
            "sort",
            "state, outcome, image, since, limit, cursor",
        ),
        ("limit=1&limit=2", "limit", "more than once"),
    ] {
        let (code, v) = c.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(code, 400, "{query}: {v}");
        assert_eq!(v["error"]["kind"], "bad_request", "{query}: {v}");
        assert_eq!(v["error"]["param"], param, "{query}: {v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.starts_with(&format!("`{param}`")), "{query}: {msg}");
        assert!(msg.contains(says), "{query}: {msg}");
    }

    let token_file = srv.token_path();
    let auth = ["--token-file", token_file.to_str().expect("utf-8")];
    let o = cordon(&srv.url, &auth, &["jobs", "--state", "done"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("400") && stderr(&o).contains("queued, running, finished"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let o = cordon(&srv.url, &auth, &["jobs", "--since", "soon", "--json"]).await;
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).expect("the error as JSON");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`since`"))
    );
    // A refused token is exit 2 as well.
    let o = cordon(
        &srv.url,
        &["--token", "not-the-token-0123456789"],
        &["jobs"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
}

/// `cordon submit --detach` prints the id; `cordon logs -f` prints a running job's output as
/// it comes, stdout to stdout and stderr to stderr, and ends when the job does, with its exit
/// status; `cordon logs` prints what there is and exits; `cordon status` shows the job;
/// `cordon cancel` stops a running one. A job that does not exist is exit 2, "no such job".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_and_cancel_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(
        &tmp.path().join("data"),
        "concurrency: 2\nshutdown_grace: 1s\n",
    );
    let c = srv.client();
    let token_file = srv.token_path();
    let auth = ["--token-file", token_file.to_str().expect("utf-8")];

    let job = tmp.path().join("ticks.yaml");
    std::fs::write(
        &job,
        spec("for i in 1 2 3 4 5 6 7 8; do echo tick $i; echo err $i >&2; sleep 0.4; done; exit 3"),
    )
    .expect("spec");
    let o = cordon(
        &srv.url,
        &auth,
        &["submit", job.to_str().expect("utf-8"), "--detach"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(
        id.starts_with("job-") && !id.contains(char::is_whitespace),
        "only the id: {id:?}"
    );

    // Follow it from its first line of output to its end.
    c.wait_event(&id, "output").await;
    let args = ["logs", "-f", &id];
    let follow = cordon(&srv.url, &auth, &args);
    let o = tokio::time::timeout(Duration::from_secs(90), follow)
        .await
        .expect("logs -f ends when the job does");
    let st = c.status(&id).await;
    assert_eq!(st["state"], "finished", "logs -f ended with the job: {st}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "failed, as submit would: {}",
        stderr(&o)
    );
    let ticks: String = (1..=8).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(stdout(&o), ticks, "the job's stdout, all of it, only it");
    let err = stderr(&o);
    for i in 1..=8 {
        assert!(err.contains(&format!("err {i}\n")), "{err}");
    }
    assert!(err.contains("finished: failed"), "{err}");
    // Finished: `logs` prints it all again and exits 0.
    let o = cordon(&srv.url, &auth, &["logs", &id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), ticks);

    // status, for a person and as JSON.
    let o = cordon(&srv.url, &auth, &["status", &id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        format!("id:        {id}\n"),
        "state:     finished\n".to_string(),
        "outcome:   failed (exit 3)\n".to_string(),
        format!("image:     {IMAGE}\n"),
        "by admin\n".to_string(),
        "step main: failed, exit 3, ".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} in:\n{out}");
    }
    let o = cordon(&srv.url, &auth, &["status", &id, "--json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v, st);

    // A running job: `logs` without -f prints what there is and returns; `cancel` stops it.
    let running = c.submit_ok(&spec("echo up; sleep 120"), None).await;
    c.wait_event(&running, "output").await;
    let started = Instant::now();
    let o = cordon(&srv.url, &auth, &["logs", &running]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "up\n");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it did not wait"
    );
    assert_eq!(c.status(&running).await["state"], "running");
    let o = cordon(&srv.url, &auth, &["cancel", &running]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{running} cancelled\n"));
    let st = c.status(&running).await;
    assert_eq!(st["state"], "finished");
    assert_eq!(st["outcome"], "cancelled");
    assert!(
        containers_of(&running).is_empty(),
        "its containers are gone"
    );
    let o = cordon(&srv.url, &auth, &["cancel", &running]).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("already finished (cancelled)"),
        "{}",
        stdout(&o)
    );

    // No such job: exit 2, each command.
    for args in [
        vec!["status", "job-000000000000"],
        vec!["logs", "job-000000000000"],
        vec!["logs", "-f", "job-000000000000"],
        vec!["cancel", "job-000000000000"],
    ] {
        let o = cordon(&srv.url, &auth, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&o).contains("no such job `job-000000000000`"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = cordon(&srv.url, &auth, &["status", "../metrics"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a job id"), "{}", stderr(&o));
}
