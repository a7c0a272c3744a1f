//! Several `cordon serve` controllers on one PostgreSQL job store and one Docker engine, for
//! real: any controller accepts, runs and answers for any job; a controller killed while it
//! runs a job loses it to another, which removes its containers and runs it again; a paused
//! controller whose lease was taken over cannot write that job's events or result.
//!
//! Needs a PostgreSQL server that `CORDON_TEST_POSTGRES` (default
//! `postgres://cordon:cordon@127.0.0.1:5432/postgres`) reaches with `CREATEDB`; `.ci/run`
//! starts Debian's and makes that role. Each test makes its own database and drops it.

mod server_support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use server_support::{Server, containers_of, start_env, tgz};

const TOKEN: &str = "controllers-test-token-0123456789";

fn admin_url() -> String {
    std::env::var("CORDON_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://cordon:cordon@127.0.0.1:5432/postgres".into())
}

/// A fresh database for one test, dropped when it ends.
struct Database {
    name: String,
    url: String,
}

impl Database {
    async fn new() -> Database {
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {admin} ({e}): start it (`.ci/run` does: pg_ctlcluster 15 main start, a `cordon` role with CREATEDB) or set CORDON_TEST_POSTGRES"
                )
            });
        tokio::spawn(conn);
        let name = format!("cordon_test_{}_{:08x}", std::process::id(), rand_u32());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').expect("a URL with a database").0;
        Database {
            url: format!("{base}/{name}"),
            name,
        }
    }

    async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client.query(sql, &[]).await.expect("query")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(admin_url())
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    u32::from_le_bytes(b)
}

/// A controller on `db` with `lease`, its data directory under `dir`.
fn controller(
    db: &Database,
    dir: &std::path::Path,
    name: &str,
    lease: &str,
    extra: &str,
) -> Server {
    start_env(
        &dir.join(name),
        &format!("token: {TOKEN}\nconcurrency: 1\nlease: {lease}\ncontroller_id: {name}\n{extra}"),
        &[("CORDON_STORE", db.url.as_str())],
    )
}

fn job(cmd: &str) -> String {
    format!(
        "image: {}\nsteps:\n  - name: main\n    run: {}\n    timeout: 120s\nartifacts: [/out/result.txt]\nlimits: {{ cpus: 0.5, memory: 256MiB }}\n",
        server_support::IMAGE,
        serde_json::to_string(cmd).expect("json")
    )
}

async fn wait_finished(c: &server_support::Client, id: &str, within: Duration) -> Value {
    c.wait_state(id, "finished", within).await
}

fn pids(s: &Server) -> String {
    s.child.id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_controller_accepts_runs_and_answers_for_any_job() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cs: Vec<Server> = ["c-a", "c-b", "c-c"]
        .iter()
        .map(|n| controller(&db, dir.path(), n, "15s", ""))
        .collect();
    let clients: Vec<_> = cs.iter().map(|c| c.client()).collect();

    // A job submitted to the first, streamed live from the third while it runs.
    let streamed = clients[0]
        .submit_ok(
            &job("for i in 1 2 3 4; do echo tick $i; sleep 0.5; done; cat input.txt > /out/result.txt"),
            Some(tgz(&[("input.txt", "from the upload")])),
        )
        .await;
    let started = clients[2].wait_event(&streamed, "started").await;
    assert_eq!(started["type"], "started");

    // Six more, two to each controller, each with its own upload.
    let mut ids = vec![streamed.clone()];
    for i in 0..6 {
        let c = &clients[i % 3];
        let content = format!("job {i}");
        ids.push(
            c.submit_ok(
                &job("sleep 1; cat input.txt > /out/result.txt"),
                Some(tgz(&[("input.txt", &content)])),
            )
            .await,
        );
    }
    let mut runners = std::collections::BTreeSet::new();
    for (n, id) in ids.iter().enumerate() {
        // Asked of a controller other than the one it was submitted to.
        let asker = &clients[(n + 1) % 3];
        let done = wait_finished(asker, id, Duration::from_secs(180)).await;
        assert_eq!(done["outcome"], "passed", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        let runner = done["controller"]
            .as_str()
            .expect("a controller")
            .to_string();
        runners.insert(runner.clone());
        // Its artifact, from a controller that did not run it.
        let other = cs
            .iter()
            .position(|c| !c.data.ends_with(&runner))
            .expect("another controller");
        let body = clients[other]
            .req(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}/artifacts/result.txt"),
            )
            .send()
            .await
            .expect("artifact");
        assert_eq!(
            body.status().as_u16(),
            200,
            "artifact of {id} from {}",
            cs[other].url
        );
        let text = body.text().await.expect("text");
        let expected = if n == 0 {
            "from the upload".to_string()
        } else {
            format!("job {}", n - 1)
        };
        assert_eq!(text, expected);
        // The whole stream, from yet another controller.
        let events = clients[n % 3].events(id, 0).await;
        assert_eq!(events.last().expect("events")["type"], "finished");
    }
    assert!(
        runners.len() >= 2,
        "7 jobs over 3 controllers of 1 slot each ran on {runners:?} only"
    );
    // The live stream of the first job carried its output as it ran.
    let events = clients[2].events(&streamed, 0).await;
    let ticks = events
        .iter()
        .filter(|e| e["type"] == "output" && e["data"].as_str().is_some_and(|d| d.contains("tick")))
        .count();
    assert!(ticks >= 1, "{events:?}");

    // A retried submission (the same Idempotency-Key) to another controller: the same job.
    let submit_keyed = |c: &server_support::Client| {
        let form = reqwest::multipart::Form::new().text("spec", job("true"));
        c.req(reqwest::Method::POST, "/v1/jobs")
            .header("Idempotency-Key", "load-run-1")
            .multipart(form)
            .send()
    };
    let first: Value = submit_keyed(&clients[0])
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let again: Value = submit_keyed(&clients[1])
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    assert_eq!(first["id"], again["id"], "{first} {again}");
    let n: i64 = db.query("SELECT COUNT(*) FROM jobs").await[0].get(0);
    assert_eq!(n, 8, "8 jobs, not 9");

    let metrics = clients[1].metrics().await;
    assert!(
        metrics.contains("cordon_controller_info{controller=\"c-b\",store=\"postgres\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cordon_leases_held"), "{metrics}");
    for id in &ids {
        assert!(containers_of(id).is_empty(), "{id} left containers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controllers_job_is_run_again_elsewhere_and_finishes() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the first controller is up when the job arrives, so it is the one to run it.
    let mut a = controller(&db, dir.path(), "k-a", "3s", "");
    let ca = a.client();
    let id = ca
        .submit_ok(
            &job("echo attempt; sleep 6; echo done > /out/result.txt"),
            None,
        )
        .await;
    ca.wait_event(&id, "step_started").await;
    let b = controller(&db, dir.path(), "k-b", "3s", "");
    let c = controller(&db, dir.path(), "k-c", "3s", "");
    for _ in 0..100 {
        if !containers_of(&id).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!containers_of(&id).is_empty(), "the job runs on k-a");
    a.kill9();

    let cb = b.client();
    let done = wait_finished(&cb, &id, Duration::from_secs(120)).await;
    assert_eq!(done["outcome"], "passed", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let runner = done["controller"].as_str().expect("controller");
    assert!(runner == "k-b" || runner == "k-c", "{done}");
    let events = cb.events(&id, 0).await;
    let warning = events
        .iter()
        .find(|e| e["type"] == "warning")
        .unwrap_or_else(|| panic!("no warning about the lost attempt: {events:?}"));
    assert!(
        warning["message"]
            .as_str()
            .is_some_and(|m| m.contains("k-a")),
        "{warning}"
    );
    let started = events.iter().filter(|e| e["type"] == "started").count();
    assert_eq!(started, 2, "two attempts, each its own start: {events:?}");
    // Taken over within the lease and a renewal period or so, whatever the job took.
    let takeover = [&b, &c].iter().any(|s| s.log().contains("took over a job"));
    assert!(takeover, "b: {}\nc: {}", b.log(), c.log());
    assert!(
        containers_of(&id).is_empty(),
        "the lost run's containers are gone"
    );
    let total: usize = [&b, &c]
        .iter()
        .map(|s| s.log().matches("took over a job").count())
        .sum();
    assert_eq!(total, 1, "exactly one takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_controller_that_resumes_cannot_overwrite_the_result() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = controller(&db, dir.path(), "p-a", "3s", "");
    let ca = a.client();
    let id = ca
        .submit_ok(
            &job(
                "for i in $(seq 1 12); do echo tick $i; sleep 0.5; done; echo ok > /out/result.txt",
            ),
            None,
        )
        .await;
    ca.wait_event(&id, "step_started").await;
    let b = controller(&db, dir.path(), "p-b", "3s", "");
    let cb = b.client();
    // Paused past its lease: its renewals stop, so b takes the job over and runs it again.
    assert!(
        Command::new("kill")
            .args(["-STOP", &pids(&a)])
            .status()
            .expect("kill")
            .success()
    );
    let done = wait_finished(&cb, &id, Duration::from_secs(120)).await;
    assert_eq!(done["controller"], "p-b", "{done}");
    assert_eq!(done["outcome"], "passed", "{done}");
    let events_before = done["events"].as_u64().expect("events");
    // Resumed: its sandbox is gone and its lease with it; whatever it tries to write is
    // refused, and it stops the job rather than run it on.
    assert!(
        Command::new("kill")
            .args(["-CONT", &pids(&a)])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.log().contains("another controller took this job over") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        a.log().contains("another controller took this job over"),
        "{}",
        a.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cb.status(&id).await;
    assert_eq!(after["controller"], "p-b", "{after}");
    assert_eq!(after["outcome"], "passed", "{after}");
    assert_eq!(
        after["events"].as_u64(),
        Some(events_before),
        "nothing written after the result"
    );
    assert_eq!(after["result"], done["result"]);
    let m = ca.metrics().await;
    assert!(m.contains("cordon_jobs_lost_total 1"), "{m}");
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retry_budget_a_lost_job_is_reported_lost() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = controller(&db, dir.path(), "r-a", "3s", "job_retries: 0\n");
    let ca = a.client();
    let id = ca.submit_ok(&job("sleep 30"), None).await;
    ca.wait_event(&id, "step_started").await;
    a.kill9();
    let b = controller(&db, dir.path(), "r-b", "3s", "job_retries: 0\n");
    let done = wait_finished(&b.client(), &id, Duration::from_secs(60)).await;
    assert_eq!(done["outcome"], "sandbox_error", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let err = done["result"]["error"].as_str().expect("error");
    assert!(err.contains("retry budget") && err.contains("r-a"), "{err}");
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_controller_stops_the_job_another_runs() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = controller(&db, dir.path(), "x-a", "15s", "");
    let ca = a.client();
    let id = ca.submit_ok(&job("sleep 60"), None).await;
    ca.wait_event(&id, "step_started").await;
    let b = controller(&db, dir.path(), "x-b", "15s", "");
    let cb = b.client();
    let r = cb
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"))
        .send()
        .await
        .expect("cancel");
    assert!(r.status().is_success(), "{}", r.status());
    let done = wait_finished(&cb, &id, Duration::from_secs(30)).await;
    assert_eq!(done["outcome"], "cancelled", "{done}");
    // Stopped where it ran (the job would have passed after its 60 s otherwise).
    assert_eq!(done["controller"], "x-a", "{done}");
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_with_its_id_takes_its_job_back_at_once() {
    let db = Database::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A long lease: nobody else could take the job over before the test ends.
    let mut a = controller(&db, dir.path(), "s-a", "10m", "");
    let id = a
        .client()
        .submit_ok(&job("sleep 3; echo ok > /out/result.txt"), None)
        .await;
    a.client().wait_event(&id, "step_started").await;
    let other = controller(&db, dir.path(), "s-b", "10m", "");
    a.kill9();
    let a = controller(&db, dir.path(), "s-a", "10m", "");
    let done = wait_finished(&a.client(), &id, Duration::from_secs(120)).await;
    assert_eq!(done["outcome"], "passed", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert!(a.log().contains("took over a job"), "{}", a.log());
    assert!(!other.log().contains("took over a job"), "{}", other.log());
    let epoch: i64 = db
        .query(&format!("SELECT epoch FROM jobs WHERE id = '{id}'"))
        .await[0]
        .get(0);
    assert_eq!(epoch, 3, "claimed, taken back, claimed again");
    assert!(containers_of(&id).is_empty());
}
