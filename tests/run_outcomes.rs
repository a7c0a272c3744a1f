//! Outcomes of `cordon run` against the real Docker engine: passing and failing pytest jobs,
//! each enforcement case (timeout, OOM, output flood, fork bomb), multi-step jobs, and output
//! captured from the first byte. Every case checks the outcome, cordon's exit status, and that
//! no container or volume of the job remains.

mod common;

use std::time::Duration;

use common::{Job, Runtime};
use serde_json::Value;

const PYTEST_SPEC: &str = r#"
image: cordon/python:3.11
workspace: { source: ./repo, mode: copy, path: /workspace }
steps:
  - name: test
    run: python3 -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml
    network: none
    timeout: 60s
artifacts: [/out/junit.xml]
limits: { cpus: 1, memory: 256MiB, pids: 64, output: 1MiB, scratch: 64MiB }
env: { PYTHONHASHSEED: "0" }
"#;

fn tests_field(r: &Value) -> (u64, u64, u64, u64, u64) {
    let t = &r["tests"];
    assert!(t.is_object(), "no `tests` in the result: {r}");
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("tests.{k} missing: {t}"))
    };
    (
        n("total"),
        n("passed"),
        n("failed"),
        n("skipped"),
        n("errors"),
    )
}

#[test]
fn passing_pytest_job_reports_junit_counts() {
    passing_pytest(Runtime::Runc);
}

#[test]
fn passing_pytest_job_reports_junit_counts_under_gvisor() {
    passing_pytest(Runtime::Runsc);
}

fn passing_pytest(rt: Runtime) {
    let job = Job::new_under(rt, PYTEST_SPEC).file(
        "repo/test_ok.py",
        r#"
import pytest

def test_one():
    assert 1 + 1 == 2

def test_two():
    assert "a".upper() == "A"

@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    assert x > 0

@pytest.mark.skip(reason="not today")
def test_skipped():
    assert False
"#,
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    let res = r.result();
    assert_eq!(
        tests_field(&res),
        (5, 4, 0, 1, 0),
        "(total, passed, failed, skipped, errors)\n{}",
        r.context()
    );
    assert_eq!(res["exit_code"], 0, "{}", r.context());
    let steps = r.steps();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["name"], "test");
    assert_eq!(steps[0]["outcome"], "passed");
    assert_eq!(steps[0]["exit_code"], 0);
    let arts: Vec<&str> = res["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let junit = job.out().join("junit.xml");
    assert_eq!(
        arts,
        vec![junit.to_str().expect("utf-8")],
        "{}",
        r.context()
    );
    let xml = std::fs::read_to_string(&junit).expect("junit.xml on the host");
    assert!(xml.contains("testsuite"), "{xml}");
    assert_eq!(res["output_truncated"], false);
    assert!(res["output_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(res["duration_ms"].as_u64().is_some());
}

#[test]
fn failing_pytest_job_reports_junit_counts_and_exits_1() {
    failing_pytest(Runtime::Runc);
}

#[test]
fn failing_pytest_job_reports_junit_counts_and_exits_1_under_gvisor() {
    failing_pytest(Runtime::Runsc);
}

fn failing_pytest(rt: Runtime) {
    let job = Job::new_under(rt, PYTEST_SPEC).file(
        "repo/test_bad.py",
        r#"
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture blew up")

def test_ok():
    assert True

def test_wrong_sum():
    assert 1 + 1 == 3

def test_raises():
    raise ValueError("boom")

def test_uses_broken(broken):
    pass

@pytest.mark.skip(reason="later")
def test_skip():
    pass
"#,
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    let res = r.result();
    assert_eq!(
        tests_field(&res),
        (5, 1, 2, 1, 1),
        "(total, passed, failed, skipped, errors)\n{}",
        r.context()
    );
    assert_eq!(
        res["exit_code"],
        1,
        "pytest's own exit code\n{}",
        r.context()
    );
    let failing: Vec<String> = res["tests"]["failing"]
        .as_array()
        .expect("tests.failing")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for name in ["test_wrong_sum", "test_raises", "test_uses_broken"] {
        assert!(
            failing.iter().any(|f| f.contains(name)),
            "{name} not in failing {failing:?}"
        );
    }
    assert!(!failing.iter().any(|f| f.ends_with("test_ok")));
}

#[test]
fn a_failing_test_that_forges_its_junit_file_is_still_a_failed_job() {
    // The conftest rewrites /out/junit.xml after pytest wrote it (atexit runs after the
    // junitxml plugin), claiming everything passed. The exit code still says failed.
    let job = Job::new(PYTEST_SPEC)
        .file(
            "repo/conftest.py",
            r#"
import atexit

FAKE = '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="1" failures="0" errors="0" skipped="0"><testcase classname="test_forge" name="test_fails"/></testsuite></testsuites>'

def _forge():
    with open("/out/junit.xml", "w") as f:
        f.write(FAKE)

atexit.register(_forge)
"#,
        )
        .file(
            "repo/test_forge.py",
            "def test_fails():\n    assert False, 'really failing'\n",
        );
    let r = job.run();
    r.assert_ended("failed", 1);
    let res = r.result();
    assert_eq!(res["exit_code"], 1, "{}", r.context());
    // The forged file was collected (it is information), but it did not decide the outcome.
    let xml = std::fs::read_to_string(job.out().join("junit.xml")).expect("junit.xml");
    assert!(
        xml.contains("failures=\"0\""),
        "the forgery did not happen: {xml}"
    );
}

#[test]
fn a_step_exiting_nonzero_is_failed_with_its_exit_code() {
    nonzero_exit(Runtime::Runc);
}

#[test]
fn a_step_exiting_nonzero_is_failed_with_its_exit_code_under_gvisor() {
    nonzero_exit(Runtime::Runsc);
}

fn nonzero_exit(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
steps:
  - { name: fail, run: "echo about to fail; exit 7", timeout: 30s }
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    assert_eq!(r.result()["exit_code"], 7, "{}", r.context());
    assert_eq!(r.steps()[0]["exit_code"], 7);
    assert!(r.output().contains("about to fail"), "{}", r.context());
}

#[test]
fn wall_clock_timeout_kills_a_process_that_ignores_sigterm() {
    stubborn_timeout(Runtime::Runc);
}

#[test]
fn wall_clock_timeout_kills_a_process_that_ignores_sigterm_under_gvisor() {
    stubborn_timeout(Runtime::Runsc);
}

fn stubborn_timeout(rt: Runtime) {
    let timeout = Duration::from_secs(2);
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: stubborn
    run: |
      trap '' TERM
      python3 -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring TERM', flush=True); time.sleep(1000)"
    timeout: 2s
limits: { memory: 128MiB, pids: 32 }
"#,
    );
    let r = job.run();
    r.assert_ended("timed_out", 3);
    assert!(r.output().contains("ignoring TERM"), "{}", r.context());
    let step = &r.steps()[0];
    assert_eq!(step["outcome"], "timed_out");
    let ms = step["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        ms >= timeout.as_millis() as u64,
        "step ended after {ms} ms, before its {timeout:?} timeout"
    );
    // Promptly: well before the process's own 1000 s sleep, and with no long grace.
    assert!(
        r.elapsed < timeout + Duration::from_secs(10),
        "cordon took {:?} for a {timeout:?} timeout\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn timeout_with_artifacts_declared_still_ends_promptly_and_cleans_up() {
    stubborn_timeout_with_artifacts(Runtime::Runc);
}

#[test]
fn timeout_with_artifacts_declared_still_ends_promptly_and_cleans_up_under_gvisor() {
    stubborn_timeout_with_artifacts(Runtime::Runsc);
}

fn stubborn_timeout_with_artifacts(rt: Runtime) {
    // With artifacts, the container is held after the command for collection: a timeout on
    // that path must also kill everything and remove the container.
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: stubborn
    run: |
      echo partial > /out/partial.txt
      trap '' TERM
      python3 -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring TERM', flush=True); time.sleep(1000)"
    timeout: 2s
artifacts: [/out/partial.txt]
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("timed_out", 3);
    assert!(
        r.elapsed < Duration::from_secs(12),
        "cordon took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn memory_bomb_is_oom_killed() {
    memory_bomb(Runtime::Runc);
}

#[test]
fn memory_bomb_is_oom_killed_under_gvisor() {
    memory_bomb(Runtime::Runsc);
}

fn memory_bomb(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: bomb
    run: |
      python3 -c "
      a = []
      while True:
          a.append(b'x' * (8 << 20))
      "
    timeout: 60s
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let r = job.run();
    r.assert_ended("oom_killed", 4);
    assert_eq!(r.steps()[0]["outcome"], "oom_killed", "{}", r.context());
}

#[test]
fn memory_bomb_with_artifacts_declared_is_oom_killed() {
    memory_bomb_with_artifacts(Runtime::Runc);
}

#[test]
fn memory_bomb_with_artifacts_declared_is_oom_killed_under_gvisor() {
    memory_bomb_with_artifacts(Runtime::Runsc);
}

fn memory_bomb_with_artifacts(rt: Runtime) {
    // The held-container path (artifacts declared): the gate survives, the bomb does not.
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: bomb
    run: |
      echo before > /out/before.txt
      python3 -c "
      a = []
      while True:
          a.append(b'x' * (8 << 20))
      "
    timeout: 60s
artifacts: [/out/before.txt]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("oom_killed", 4);
}

#[test]
fn output_flood_is_cut_at_the_cap_and_cordon_stays_small() {
    output_flood(Runtime::Runc);
}

#[test]
fn output_flood_is_cut_at_the_cap_and_cordon_stays_small_under_gvisor() {
    output_flood(Runtime::Runsc);
}

fn output_flood(rt: Runtime) {
    // A cap big enough that buffering it would show in cordon's RSS (baseline ~16-20 MiB).
    let cap: u64 = 64 << 20;
    let job = Job::new_under(
        rt,
        r#"
steps:
  - { name: flood, run: "yes 'flood flood flood flood flood flood flood flood'", timeout: 60s }
limits: { memory: 64MiB, pids: 32, output: 64MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("output_limit_exceeded", 4);
    let res = r.result();
    assert_eq!(res["output_truncated"], true, "{}", r.context());
    assert_eq!(r.steps()[0]["outcome"], "output_limit_exceeded");
    let bytes = res["output_bytes"].as_u64().expect("output_bytes");
    assert!(
        bytes > cap,
        "output_bytes {bytes} is not past the cap {cap}"
    );
    // What cordon relayed (to stderr, under --json) is the job's output up to the cap, plus
    // cordon's own short notes.
    assert!(
        r.stderr_bytes >= cap && r.stderr_bytes < cap + (64 << 10),
        "cordon relayed {} bytes for an output cap of {cap}",
        r.stderr_bytes
    );
    // The controller does not buffer the flood: its peak RSS stays well under the cap (a
    // debug build's baseline is ~16-20 MiB).
    assert!(r.peak_rss_kib > 0, "could not sample cordon's RSS");
    assert!(
        r.peak_rss_kib < 48 << 10,
        "cordon's peak RSS was {} KiB while relaying an {cap}-byte flood",
        r.peak_rss_kib
    );
    assert!(r.elapsed < Duration::from_secs(30), "took {:?}", r.elapsed);
}

#[test]
fn fork_bomb_is_contained_and_the_job_ends() {
    shell_fork_bomb(Runtime::Runc);
}

#[test]
fn fork_bomb_is_contained_and_the_job_ends_under_gvisor() {
    shell_fork_bomb(Runtime::Runsc);
}

fn shell_fork_bomb(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: forkbomb
    run: |
      bomb() { bomb | bomb & }
      bomb
      sleep 60
    timeout: 4s
limits: { memory: 128MiB, pids: 32 }
"#,
    );
    let r = job.run();
    let outcome = r.outcome();
    // Under runsc the bomb ends the whole sandbox at the pids limit (failed, exit 2, with a
    // warning) or at the memory limit, whichever it reaches first (see tests/gvisor.rs).
    let oom_too = rt == Runtime::Runsc && outcome == "oom_killed";
    assert!(
        outcome == "timed_out" || outcome == "failed" || oom_too,
        "a fork bomb should end as timed_out or failed, got {outcome}\n{}",
        r.context()
    );
    r.assert_exit(match outcome.as_str() {
        "timed_out" => 3,
        "oom_killed" => 4,
        _ => 1,
    });
    r.assert_no_leftovers();
    assert!(
        r.elapsed < Duration::from_secs(20),
        "cordon took {:?} to stop a fork bomb\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn python_fork_bomb_under_a_pids_limit_is_contained() {
    // Every child forks forever; the pids limit stops the growth, the timeout ends the job.
    let job = Job::new(
        r#"
steps:
  - name: forkbomb
    run: |
      python3 -c "
      import os
      while True:
          try:
              os.fork()
          except OSError:
              pass
      "
    timeout: 3s
limits: { memory: 256MiB, pids: 24 }
"#,
    );
    let r = job.run();
    r.assert_ended("timed_out", 3);
    assert!(
        r.elapsed < Duration::from_secs(20),
        "cordon took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn output_is_captured_from_the_first_byte() {
    for (run, want) in [
        ("echo first; exit 0", "first"),
        ("printf early-bird", "early-bird"),
        ("echo to-stderr >&2", "to-stderr"),
    ] {
        let job = Job::new(&format!(
            "steps:\n  - {{ name: quick, run: {run:?}, timeout: 30s }}\nlimits: {{ memory: 32MiB, pids: 16 }}\n"
        ));
        let r = job.run();
        r.assert_ended("passed", 0);
        assert!(
            r.output().contains(want),
            "output of `{run}` lost\n{}",
            r.context()
        );
        assert!(
            r.result()["output_bytes"].as_u64().unwrap_or(0) >= want.len() as u64,
            "{}",
            r.context()
        );
    }
}

#[test]
fn output_without_json_goes_to_stdout_live() {
    let job = Job::new(
        "steps:\n  - { name: quick, run: 'echo on-stdout; echo on-stderr >&2', timeout: 30s }\nlimits: { memory: 32MiB, pids: 16 }\n",
    );
    let mut cmd = std::process::Command::new(common::cordon_bin());
    cmd.arg("run")
        .arg(job.spec())
        .arg("--out")
        .arg(job.out())
        .current_dir(job.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = common::Running::spawn(cmd).wait();
    r.assert_exit(0);
    assert!(r.stdout.contains("on-stdout"), "{}", r.context());
    assert!(!r.stdout.contains("on-stderr"), "{}", r.context());
    assert!(r.stderr.contains("on-stderr"), "{}", r.context());
}

#[test]
fn step_two_sees_what_step_one_wrote() {
    two_steps(Runtime::Runc);
}

#[test]
fn step_two_sees_what_step_one_wrote_under_gvisor() {
    two_steps(Runtime::Runsc);
}

fn two_steps(rt: Runtime) {
    let job = Job::new_under(rt,
        r#"
workspace: { source: ./repo }
steps:
  - { name: write, run: "echo from-step-1 > /workspace/handoff.txt && echo out-1 > /out/one.txt", timeout: 30s }
  - { name: read, run: "test \"$(cat handoff.txt)\" = from-step-1 && test \"$(cat /out/one.txt)\" = out-1 && echo step-2-saw-it", timeout: 30s }
artifacts: [/out/one.txt]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/README", "hello\n");
    let r = job.run();
    r.assert_ended("passed", 0);
    assert!(r.output().contains("step-2-saw-it"), "{}", r.context());
    let steps = r.steps();
    assert_eq!(steps.len(), 2);
    for s in &steps {
        assert_eq!(s["outcome"], "passed", "{s}");
        assert_eq!(s["exit_code"], 0, "{s}");
    }
    assert_eq!(
        std::fs::read_to_string(job.out().join("one.txt")).expect("one.txt"),
        "out-1\n"
    );
}

#[test]
fn step_two_is_skipped_when_step_one_fails() {
    let job = Job::new(
        r#"
steps:
  - { name: first, run: "echo first-ran; exit 3", timeout: 30s }
  - { name: second, run: "echo second-ran", timeout: 30s }
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    let steps = r.steps();
    assert_eq!(steps.len(), 2, "{}", r.context());
    assert_eq!(steps[0]["outcome"], "failed");
    assert_eq!(steps[0]["exit_code"], 3);
    assert_eq!(steps[1]["outcome"], "skipped");
    assert!(steps[1]["exit_code"].is_null(), "{}", steps[1]);
    assert_eq!(r.result()["exit_code"], 3, "{}", r.context());
    assert!(r.output().contains("first-ran"));
    assert!(
        !r.output().contains("second-ran"),
        "a skipped step ran\n{}",
        r.context()
    );
}

#[test]
fn step_two_is_skipped_when_step_one_times_out() {
    let job = Job::new(
        r#"
steps:
  - { name: first, run: "sleep 100", timeout: 1s }
  - { name: second, run: "echo second-ran", timeout: 30s }
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("timed_out", 3);
    let steps = r.steps();
    assert_eq!(steps[0]["outcome"], "timed_out");
    assert_eq!(steps[1]["outcome"], "skipped");
    assert!(!r.output().contains("second-ran"), "{}", r.context());
}

#[test]
fn output_flood_with_artifacts_declared_is_output_limit_exceeded_promptly() {
    output_flood_with_artifacts(Runtime::Runc);
}

#[test]
fn output_flood_with_artifacts_declared_is_output_limit_exceeded_promptly_under_gvisor() {
    output_flood_with_artifacts(Runtime::Runsc);
}

fn output_flood_with_artifacts(rt: Runtime) {
    // Artifacts declared: the container is held for collection, its control input stays
    // open. Stopping a flooding step on that path must still be prompt and correctly named.
    let job = Job::new_under(
        rt,
        r#"
steps:
  - { name: flood, run: "echo a > /out/a.txt; yes", timeout: 60s }
artifacts: [/out/a.txt]
limits: { memory: 64MiB, pids: 32, output: 1MiB, scratch: 16MiB }
"#,
    );
    let r = common::Running::spawn(job.command()).wait_at_most(Duration::from_secs(30));
    r.assert_ended("output_limit_exceeded", 4);
    assert_eq!(r.result()["output_truncated"], true);
    assert!(
        r.elapsed < Duration::from_secs(15),
        "took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn a_step_timing_out_while_writing_output_with_artifacts_declared_is_timed_out_promptly() {
    // The usual case (pytest with a JUnit artifact) of a chatty suite that hangs: output is
    // still flowing when the timeout fires.
    let job = Job::new(
        r#"
steps:
  - { name: chatty, run: "echo a > /out/a.txt; yes", timeout: 2s }
artifacts: [/out/a.txt]
limits: { memory: 64MiB, pids: 32, output: 8GiB, scratch: 16MiB }
"#,
    )
    // `yes` writes more in 2 s than the default ceiling on output: the operator raises it.
    .file(
        "policy.yaml",
        "allowed_images: ['*']\nmax: { output: 8GiB }\n",
    );
    let mut cmd = job.command();
    cmd.arg("--policy").arg(job.path("policy.yaml"));
    let r = common::Running::spawn(cmd).wait_at_most(Duration::from_secs(30));
    r.assert_ended("timed_out", 3);
    assert!(
        r.elapsed < Duration::from_secs(12),
        "took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}
