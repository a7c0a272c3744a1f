//! Ctrl-C (SIGINT) and SIGTERM on `cordon run` while a step runs: the job ends as
//! `cancelled`, cordon exits 130, and every container and volume of the job is gone by the
//! time cordon has exited.

mod common;

use std::time::{Duration, Instant};

use common::{Job, Running, containers_with_label, owner_label};
use nix::sys::signal::Signal;

/// Starts `job`, waits for its step to print `ready`, checks its container is running, sends
/// `sig` to cordon, and returns the finished run and how long cordon took after the signal.
fn interrupt(job: &Job, sig: Signal) -> (common::Finished, Duration) {
    let mut run = Running::spawn(job.command());
    run.wait_for_output("ready", Duration::from_secs(60));
    let owner = format!("org.cordon.owner={}", owner_label(run.pid()));
    let live = containers_with_label(&owner);
    assert!(
        live.iter().any(|c| c.contains(" Up ")),
        "no running container of this cordon process before the signal: {live:?}"
    );
    let signalled = Instant::now();
    run.signal(sig);
    let r = run.wait();
    let after = signalled.elapsed();
    // Checked right after cordon exited: it must have removed everything before exiting.
    let left = containers_with_label(&owner);
    assert!(
        left.is_empty(),
        "containers left after cordon exited: {left:?}\n{}",
        r.context()
    );
    (r, after)
}

fn check_cancelled(r: &common::Finished, after: Duration) {
    r.assert_ended("cancelled", 130);
    assert!(
        after < Duration::from_secs(15),
        "cordon took {after:?} to clean up after the signal\n{}",
        r.context()
    );
}

#[test]
fn ctrl_c_removes_the_container_before_cordon_exits() {
    let job = Job::new(
        r#"
steps:
  - { name: long, run: "echo ready; sleep 1000", timeout: 300s }
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let (r, after) = interrupt(&job, Signal::SIGINT);
    check_cancelled(&r, after);
}

#[test]
fn ctrl_c_on_a_step_that_ignores_signals_still_cleans_up() {
    let job = Job::new(
        r#"
steps:
  - name: stubborn
    run: |
      trap '' INT TERM HUP
      python3 -c "import signal, time; [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]; print('ready', flush=True); time.sleep(1000)"
    timeout: 300s
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let (r, after) = interrupt(&job, Signal::SIGINT);
    check_cancelled(&r, after);
}

#[test]
fn ctrl_c_in_a_multi_step_job_with_artifacts_removes_containers_and_volumes() {
    // Held containers and per-job scratch volumes are in play here.
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - { name: one, run: "echo one > /out/one.txt", timeout: 60s }
  - { name: two, run: "echo ready; sleep 1000", timeout: 300s }
  - { name: three, run: "echo three-ran", timeout: 60s }
artifacts: [/out/one.txt]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/x.txt", "x\n");
    let (r, after) = interrupt(&job, Signal::SIGINT);
    check_cancelled(&r, after);
    assert!(!r.output().contains("three-ran"), "{}", r.context());
    let steps = r.steps();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0]["outcome"], "passed", "{steps:?}");
    assert_eq!(steps[2]["outcome"], "skipped", "{steps:?}");
}

#[test]
fn sigterm_cancels_the_job_and_cleans_up() {
    let job = Job::new(
        r#"
steps:
  - { name: long, run: "echo ready; sleep 1000", timeout: 300s }
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let (r, after) = interrupt(&job, Signal::SIGTERM);
    r.assert_outcome("cancelled");
    assert!(
        matches!(r.code(), Some(130) | Some(143)),
        "exit status after SIGTERM: {:?}\n{}",
        r.code(),
        r.context()
    );
    r.assert_no_leftovers();
    assert!(after < Duration::from_secs(15), "took {after:?}");
}

#[test]
fn the_interrupted_step_is_reported_cancelled_not_skipped() {
    // `skipped` means "did not run because an earlier step did not pass"; the step that was
    // running when Ctrl-C came did run (its output was relayed) and was cancelled.
    let job = Job::new(
        r#"
steps:
  - { name: one, run: "echo one-done", timeout: 60s }
  - { name: two, run: "echo ready; sleep 1000", timeout: 300s }
  - { name: three, run: "echo three-ran", timeout: 60s }
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let (r, after) = interrupt(&job, Signal::SIGINT);
    check_cancelled(&r, after);
    let steps = r.steps();
    let outcomes: Vec<&str> = steps
        .iter()
        .map(|s| s["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        vec!["passed", "cancelled", "skipped"],
        "per-step outcomes: {steps:?}"
    );
    assert!(
        steps[1]["output_bytes"].as_u64().unwrap_or(0) >= 6,
        "the interrupted step's output (`ready`) is not counted: {steps:?}"
    );
}
