//! Durability: SIGTERM drains (running jobs finish or are cancelled within the grace period,
//! queued ones wait in the store and run after a restart); after `kill -9` the next start
//! reaps the lost job's containers, reports it lost, and runs what was queued.

mod server_support;

use std::time::{Duration, Instant};

use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_queued_jobs_run_after_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut srv = start(&data, "concurrency: 1\nshutdown_grace: 30s\n");
    let c = srv.client();
    let running = c
        .submit_ok(&spec("sleep 2; echo finished-in-grace"), None)
        .await;
    let queued: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..2 {
            v.push(
                c.submit_ok(&spec(&format!("echo queued-{i}")), Some(tgz(&[("a", "b")])))
                    .await,
            );
        }
        v
    };
    c.wait_state(&running, "running", Duration::from_secs(30))
        .await;
    srv.sigterm();
    // Once the service has taken the signal (it says so), new work is refused while it
    // drains (if the listener still answers). Before that, a request may still be accepted.
    let t = Instant::now();
    while !srv.log().contains("shutting down") && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(srv.log().contains("shutting down"), "{}", srv.log());
    if let Ok(r) = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/yaml")
        .body(spec("true"))
        .send()
        .await
    {
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        srv.wait_exit(Duration::from_secs(40)),
        Some(0),
        "{}",
        srv.log()
    );
    assert!(containers_of(&running).is_empty());
    drop(srv);

    let srv = start(&data, "concurrency: 1\nshutdown_grace: 30s\n");
    let c = srv.client();
    let st = c.status(&running).await;
    assert_eq!(
        st["outcome"], "passed",
        "the running job finished within the grace: {st}"
    );
    for id in &queued {
        let evs = c.events(id, 0).await;
        let last = evs.last().expect("events");
        assert_eq!(last["result"]["outcome"], "passed", "{last}");
    }
    // Events from before the restart are still there, in order.
    let evs = c.events(&running, 0).await;
    assert!(evs.iter().any(|e| e["data"] == "finished-in-grace\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_jobs_that_outlive_the_grace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut srv = start(&data, "concurrency: 1\nshutdown_grace: 1s\n");
    let c = srv.client();
    let id = c.submit_ok(&spec("echo up; sleep 120"), None).await;
    c.wait_event(&id, "output").await;
    let t = Instant::now();
    srv.sigterm();
    assert_eq!(
        srv.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        srv.log()
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        containers_of(&id).is_empty(),
        "container outlived the service"
    );
    assert!(volumes_of(&id).is_empty(), "volume outlived the service");
    drop(srv);
    let srv = start(&data, "");
    let st = srv.client().status(&id).await;
    assert_eq!(st["outcome"], "cancelled", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_reaps_reports_and_resumes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut srv = start(&data, "concurrency: 1\n");
    let c = srv.client();
    let lost = c.submit_ok(&spec("echo up; sleep 300"), None).await;
    let queued = c
        .submit_ok(&spec("echo after-the-crash"), Some(tgz(&[("a", "b")])))
        .await;
    c.wait_event(&lost, "output").await;
    assert!(!containers_of(&lost).is_empty(), "no container");
    srv.kill9();
    drop(srv);
    // As if it had died between unpacking an upload and storing the job.
    std::fs::create_dir_all(data.join("jobs/job-orphan000000/workspace")).expect("orphan");

    let srv = start(&data, "concurrency: 1\n");
    let c = srv.client();
    // Start-up reaped the lost job's sandbox before serving.
    assert!(
        containers_of(&lost).is_empty(),
        "the lost job's container survived"
    );
    assert!(
        volumes_of(&lost).is_empty(),
        "the lost job's volume survived"
    );
    let st = c.status(&lost).await;
    assert_eq!(st["state"], "finished");
    assert_eq!(st["outcome"], "sandbox_error");
    let err = st["result"]["error"].as_str().expect("error");
    assert!(err.starts_with("controller lost"), "{err}");
    // Its stream holds what happened before the crash, then the result.
    let evs = c.events(&lost, 0).await;
    assert_eq!(evs[0]["type"], "started");
    assert_eq!(
        evs.last().expect("events")["result"]["outcome"],
        "sandbox_error"
    );
    let seqs: Vec<u64> = evs
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());

    let evs = c.events(&queued, 0).await;
    let last = evs.last().expect("events");
    assert_eq!(last["result"]["outcome"], "passed", "{last}");
    assert!(evs.iter().any(|e| e["data"] == "after-the-crash\n"));
}

/// Finished jobs past the retention are deleted: store rows, events, workspace, artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_finished_jobs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    // Long enough that the job's files are still there when its events have been read on a
    // loaded machine (the sweep runs every second).
    let srv = start(&data, "retention: 5s\n");
    let c = srv.client();
    let id = c
        .submit_ok(
            &format!("{}artifacts: [/out/x]\n", spec("echo x > /out/x")),
            Some(tgz(&[("a", "b")])),
        )
        .await;
    let evs = c.events(&id, 0).await;
    assert_eq!(evs.last().expect("events")["result"]["outcome"], "passed");
    assert!(data.join("jobs").join(&id).join("out/x").is_file());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = c.get(&format!("/v1/jobs/{id}")).await;
        if code == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!data.join("jobs").join(&id).exists(), "files left behind");
}

/// With `warm_pool`, jobs after the first of their kind start in a ready sandbox, each in its
/// own; on SIGTERM the pool is drained, so the server leaves no container or volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_serves_jobs_and_sigterm_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut srv = start(&data, "concurrency: 1\nwarm_pool: 1\n");
    let owner_filter = {
        let host = nix::unistd::gethostname().expect("hostname");
        format!(
            "label=org.cordon.owner={}:{}",
            host.to_string_lossy(),
            srv.child.id()
        )
    };
    let c = srv.client();
    let mut hosts = Vec::new();
    for i in 0..3 {
        let id = c
            .submit_ok(&spec(&format!("echo host=$(hostname) job={i}")), None)
            .await;
        let st = c.wait_state(&id, "finished", Duration::from_secs(60)).await;
        assert_eq!(st["outcome"], "passed", "{st}");
        let evs = c.events(&id, 0).await;
        let result = &evs.last().expect("events")["result"];
        assert_eq!(
            result["warm"].as_bool().unwrap_or(false),
            i > 0,
            "job {i}: {result}"
        );
        let line = evs
            .iter()
            .filter_map(|e| e["data"].as_str())
            .find(|d| d.starts_with("host="))
            .unwrap_or_else(|| panic!("no output in {evs:?}"))
            .to_string();
        assert!(line.ends_with(&format!("job={i}\n")), "{line}");
        hosts.push(line);
        // Give the refill time to finish before the next job, as a refine loop would.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !c
            .metrics()
            .await
            .contains("cordon_warm_sandboxes{state=\"ready\"} 1")
        {
            assert!(
                Instant::now() < deadline,
                "no warm sandbox ready within a minute: {}",
                c.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "a sandbox served two jobs: {hosts:?}");
    assert!(
        !docker(&["ps", "-aq", "--filter", &owner_filter])
            .trim()
            .is_empty(),
        "a ready sandbox waits in the pool"
    );
    srv.sigterm();
    assert_eq!(
        srv.wait_exit(Duration::from_secs(40)),
        Some(0),
        "{}",
        srv.log()
    );
    assert_eq!(docker(&["ps", "-aq", "--filter", &owner_filter]).trim(), "");
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &owner_filter]).trim(),
        ""
    );
}
