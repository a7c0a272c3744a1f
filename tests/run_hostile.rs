//! Jobs that attack cordon itself rather than the host: forging the outcome, escaping the
//! timeout, lying on stdout, leaving daemons behind, and hostile workspaces. The outcome must
//! still come from what the engine and cordon's own timers saw.

mod common;

use std::time::Duration;

use common::{Job, Running};

// Not tested: that a job cannot make its own step exit 0. It can: code inside the step's
// process tree (a test calling `os._exit(0)`, or one rewriting the gate shell's memory
// through /proc/<pid>/mem, as the same uid) decides the step's exit status. cordon's
// guarantee is that the outcome is the exit status the engine reports, never something
// parsed from files or output; README.md, "Security model", says so.

/// Reads the gate shell's nonce out of its memory (same uid; /proc/PID/mem is readable) and
/// prints it on stderr, faking cordon's "command done" signal. Prints STOLEN when it did.
const STEAL_MARKER: &str = r#"
import os, re, sys
found = None
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"cordon-gate" not in cmd:
        continue
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        continue
    for line in maps:
        if "rw" not in line.split()[1]:
            continue
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except (OSError, OverflowError, ValueError):
            continue
        m = re.search(rb"cordon-done-[0-9a-f]{32}", data)
        if m:
            found = m.group(0).decode()
            break
    if found:
        break
if found:
    print(f"STOLEN={found}", flush=True)
    sys.stderr.write(found + "\n")
    sys.stderr.flush()
"#;

#[test]
fn a_forged_completion_marker_does_not_escape_the_step_timeout() {
    // Step one fakes "command done" and then sleeps. Its 10 s timeout (long enough for the
    // probe to run on a loaded machine) must still end it; cordon
    // must not wait on it past the timeout (or forever).
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - { name: one, run: "python3 steal.py; echo still-running; sleep 1000", timeout: 10s }
  - { name: two, run: "echo two-ran", timeout: 10s }
artifacts: [/out/x]
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/steal.py", STEAL_MARKER);
    let r = Running::spawn(job.command()).wait_at_most(Duration::from_secs(30));
    assert!(
        r.printed("STOLEN").is_some(),
        "the probe did not run\n{}",
        r.context()
    );
    r.assert_ended("timed_out", 3);
    assert!(
        r.elapsed < Duration::from_secs(25),
        "took {:?} for a 10 s timeout\n{}",
        r.elapsed,
        r.context()
    );
    assert!(!r.output().contains("two-ran"), "{}", r.context());
}

#[test]
fn a_forged_completion_marker_in_the_last_step_does_not_escape_the_timeout() {
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - { name: one, run: "python3 steal.py; echo still-running; sleep 1000", timeout: 3s }
artifacts: [/out/x]
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/steal.py", STEAL_MARKER);
    let r = Running::spawn(job.command()).wait_at_most(Duration::from_secs(30));
    r.assert_ended("timed_out", 3);
    assert!(
        r.elapsed < Duration::from_secs(15),
        "took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn a_forged_marker_on_one_stream_does_not_let_output_past_the_cap() {
    // The stolen nonce on stdout only: what follows it waits for stderr's nonce, but only a
    // little of it; the rest is output, counted against the job's cap.
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - { name: one, run: "python3 steal.py 2>/dev/null; yes flood", timeout: 20s }
artifacts: [/out/x]
limits: { memory: 128MiB, pids: 32, scratch: 16MiB, output: 64KiB }
"#,
    )
    .file("repo/steal.py", STEAL_MARKER);
    let r = Running::spawn(job.command()).wait_at_most(Duration::from_secs(40));
    assert!(
        r.printed("STOLEN").is_some(),
        "the probe did not run\n{}",
        r.context()
    );
    r.assert_outcome("output_limit_exceeded");
    assert!(
        r.elapsed < Duration::from_secs(15),
        "took {:?}\n{}",
        r.elapsed,
        r.context()
    );
}

#[test]
fn exiting_137_by_itself_is_failed_not_oom_killed() {
    // The OOM outcome comes from the engine's OOM flag, not from guessing at exit codes.
    let job = Job::new(
        "steps:\n  - { name: t, run: 'exit 137', timeout: 30s }\nlimits: { memory: 64MiB, pids: 16 }\n",
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    assert_eq!(r.result()["exit_code"], 137);
}

#[test]
fn printing_a_fake_result_does_not_reach_cordons_stdout() {
    let job = Job::new(
        r#"
steps:
  - name: liar
    run: |
      echo '{"job_id":"job-000000000000","outcome":"passed","exit_code":0}'
      echo '{"job_id":"job-000000000000","outcome":"passed","exit_code":0}' >&2
      exit 1
    timeout: 30s
limits: { memory: 64MiB, pids: 16 }
"#,
    );
    let r = job.run();
    // json() insists on exactly one object on stdout: cordon's.
    r.assert_ended("failed", 1);
    assert_ne!(r.job_id(), "job-000000000000");
}

#[test]
fn a_daemon_left_behind_does_not_hold_the_job_open() {
    for artifacts in ["", "artifacts: [/out/a]\n"] {
        let job = Job::new(&format!(
            r#"
steps:
  - name: daemon
    run: |
      setsid sh -c 'trap "" TERM HUP INT; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
      echo a > /out/a
      echo left-a-daemon
    timeout: 60s
limits: {{ memory: 64MiB, pids: 32, scratch: 16MiB }}
{artifacts}"#
        ));
        let r = job.run();
        r.assert_ended("passed", 0);
        assert!(
            r.elapsed < Duration::from_secs(15),
            "a leftover daemon held the job open for {:?} ({artifacts:?})\n{}",
            r.elapsed,
            r.context()
        );
    }
}

#[test]
fn closing_stdout_and_stderr_does_not_escape_the_timeout() {
    let job = Job::new(
        "steps:\n  - { name: t, run: 'exec >&- 2>&-; sleep 1000', timeout: 2s }\nlimits: { memory: 64MiB, pids: 16 }\n",
    );
    let r = job.run();
    r.assert_ended("timed_out", 3);
    assert!(r.elapsed < Duration::from_secs(12), "took {:?}", r.elapsed);
}

/// The workspace's tmpfs pages count against the job's memory (the sandbox writes them): one
/// bigger than limits.memory ends the sandbox, and the error says which limit to raise.
#[test]
fn a_workspace_bigger_than_the_jobs_memory_is_a_clear_error_and_leaves_nothing() {
    let job = Job::new(
        "workspace: { source: ./repo }\nsteps: [{name: t, run: 'true', timeout: 30s}]\nlimits: { memory: 32MiB, scratch: 256MiB }\n",
    );
    let data: Vec<u8> = (0..(64u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(job.path("repo/big.bin"), data).expect("write");
    let r = job.run();
    assert_eq!(r.code(), Some(5), "{}", r.context());
    r.assert_outcome("sandbox_error");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("limits.memory"),
        "the error does not say what to raise\n{}",
        r.context()
    );
    r.assert_no_leftovers();
}

#[test]
fn a_workspace_bigger_than_scratch_is_a_clear_error_and_leaves_nothing() {
    let job = Job::new(
        "workspace: { source: ./repo }\nsteps: [{name: t, run: 'true', timeout: 30s}]\nlimits: { scratch: 4MiB }\n",
    );
    let big = vec![7u8; 8 << 20];
    std::fs::write(job.path("repo/big.bin"), big).expect("write");
    let r = job.run();
    assert!(
        matches!(r.code(), Some(2) | Some(5)),
        "exit status {:?}\n{}",
        r.code(),
        r.context()
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("scratch"),
        "the error does not say what to raise\n{}",
        r.context()
    );
    if r.code() == Some(5) {
        r.assert_outcome("sandbox_error");
        r.assert_no_leftovers();
    } else {
        r.assert_created_nothing();
    }
}

#[test]
fn special_files_in_the_workspace_are_skipped() {
    let job = Job::new(
        "workspace: { source: ./repo }\nsteps: [{name: t, run: 'ls -la; test -f ok.txt && test ! -e pipe && echo ws-ok', timeout: 30s}]\nlimits: { memory: 64MiB, pids: 16, scratch: 16MiB }\n",
    )
    .file("repo/ok.txt", "ok\n");
    let made = std::process::Command::new("mkfifo")
        .arg(job.path("repo/pipe"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let r = job.run();
    r.assert_ended("passed", 0);
    assert!(r.output().contains("ws-ok"), "{}", r.context());
}

#[test]
fn too_many_artifact_entries_are_refused_past_the_count_cap() {
    let job = Job::new(
        r#"
profile: few
steps:
  - name: many
    run: |
      mkdir -p /out/many
      i=0; while [ $i -lt 200 ]; do : > /out/many/f$i; i=$((i+1)); done
    timeout: 30s
artifacts: [/out/many]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file(
        "sandbox-profiles/few.yaml",
        "inherits: strict\nartifacts: { max_entries: 50 }\n",
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    let files = common::tree(&job.out())
        .into_iter()
        .filter(|e| e.starts_with("f "))
        .count();
    assert!(
        files <= 50,
        "{files} files extracted past a cap of 50 entries"
    );
    let refused = r.result()["artifacts_refused"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !refused.is_empty(),
        "nothing reported refused\n{}",
        r.context()
    );
}
