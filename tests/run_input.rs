//! Bad input and an unreachable engine: a clear error naming the field or file, the right
//! exit status, and nothing created (no container, no volume, no artifact directory).

mod common;

use std::time::Duration;

use common::{Finished, Job};

/// Runs `spec` (with an empty `repo/`) and checks it is refused as invalid input: exit 2, a
/// `{"error": {"kind": "invalid_input"}}` object, every string of `mentions` in the message,
/// and nothing created.
fn assert_invalid(spec: &str, mentions: &[&str]) -> Finished {
    let job = Job::new(spec);
    let r = job.run();
    check_invalid(&job, &r, spec, mentions);
    r
}

fn check_invalid(job: &Job, r: &Finished, spec: &str, mentions: &[&str]) {
    assert_eq!(
        r.code(),
        Some(2),
        "spec {spec:?} was not refused as invalid input\n{}",
        r.context()
    );
    let v = r.json();
    assert_eq!(
        v["error"]["kind"],
        "invalid_input",
        "spec {spec:?}\n{}",
        r.context()
    );
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    for m in mentions {
        assert!(
            msg.contains(m) && r.stderr.contains(m),
            "spec {spec:?}: the error does not mention {m:?}\n{}",
            r.context()
        );
    }
    r.assert_created_nothing();
    assert!(
        !job.out().exists(),
        "the artifact directory was created for an invalid job"
    );
    assert!(
        !job.path("cordon-out").exists(),
        "./cordon-out was created for an invalid job"
    );
}

#[test]
fn unknown_fields_are_refused_naming_the_field_and_file() {
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nbogus: 1\n",
        &["bogus", "job.yaml"],
    );
    assert_invalid(
        "steps:\n  - name: t\n    run: 'true'\n    timout: 5s\n",
        &["timout", "steps[0]", "line 4"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nlimits: { memroy: 1GiB }\n",
        &["memroy"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nworkspace: { source: ./repo, mode: rsync }\n",
        &["rsync"],
    );
}

#[test]
fn bad_units_are_refused_naming_the_field() {
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nlimits: { memory: 12 parsecs }\n",
        &["limits.memory"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true', timeout: 60}]\n",
        &["steps[0].timeout"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true', timeout: soon}]\n",
        &["steps[0].timeout"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nlimits: { output: 4 MiBs }\n",
        &["limits.output"],
    );
}

#[test]
fn zero_limits_are_refused_naming_the_field() {
    for (limits, field) in [
        ("memory: 0", "limits.memory"),
        ("cpus: 0", "limits.cpus"),
        ("pids: 0", "limits.pids"),
        ("output: 0", "limits.output"),
        ("scratch: 0", "limits.scratch"),
        ("nofile: 0", "limits.nofile"),
        ("cpus: -1", "limits.cpus"),
        ("pids: -1", "limits.pids"),
    ] {
        assert_invalid(
            &format!("steps: [{{name: t, run: 'true'}}]\nlimits: {{ {limits} }}\n"),
            &[field],
        );
    }
    assert_invalid(
        "steps: [{name: t, run: 'true', timeout: 0s}]\n",
        &["steps[0].timeout"],
    );
}

#[test]
fn absurd_limits_are_refused_naming_the_field() {
    for (limits, field) in [
        ("memory: 2TiB", "limits.memory"),
        ("pids: 100000000", "limits.pids"),
        ("cpus: 100000", "limits.cpus"),
        ("cpus: .nan", "limits.cpus"),
        ("memory: 1KiB", "limits.memory"),
    ] {
        assert_invalid(
            &format!("steps: [{{name: t, run: 'true'}}]\nlimits: {{ {limits} }}\n"),
            &[field],
        );
    }
    assert_invalid(
        "steps: [{name: t, run: 'true', timeout: 400d}]\n",
        &["steps[0].timeout"],
    );
}

#[test]
fn limits_beyond_this_host_are_refused_before_anything_starts() {
    // Plausible numbers, but more than the engine's machine has: only the engine can tell.
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nlimits: { cpus: 512 }\n",
        &["limits.cpus"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nlimits: { memory: 900GiB }\n",
        &["limits.memory"],
    );
}

#[test]
fn a_missing_source_directory_is_refused_naming_it() {
    assert_invalid(
        "workspace: { source: ./no-such-dir }\nsteps: [{name: t, run: 'true'}]\n",
        &["workspace.source", "no-such-dir"],
    );
    // A file is not a directory either.
    let job = Job::new("workspace: { source: ./afile }\nsteps: [{name: t, run: 'true'}]\n")
        .file("afile", "x");
    let r = job.run();
    check_invalid(&job, &r, "source: ./afile", &["workspace.source", "afile"]);
}

#[test]
fn an_image_that_neither_exists_nor_can_be_built_is_refused() {
    assert_invalid(
        "image: nosuch/image:1\nsteps: [{name: t, run: 'true'}]\n",
        &["nosuch/image:1"],
    );
}

#[test]
fn other_bad_specs_are_refused() {
    assert_invalid("steps: []\n", &["steps"]);
    assert_invalid("steps: [{name: t, run: '  '}]\n", &["steps[0].run"]);
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nartifacts: [/etc/passwd]\n",
        &["artifacts[0]"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nartifacts: [/out/../etc/passwd]\n",
        &["artifacts[0]"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nprofile: no-such-profile\n",
        &["no-such-profile"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true', network: egress}]\n",
        &["steps[0].network"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\nworkspace: { source: ./repo, path: /etc }\n",
        &["workspace.path"],
    );
    assert_invalid(
        "steps: [{name: t, run: 'true'}]\npass_env: [CORDON_TEST_SURELY_UNSET_VAR]\n",
        &["pass_env", "CORDON_TEST_SURELY_UNSET_VAR"],
    );
    assert_invalid("steps: [{name: t, run: 'true'\n", &["job.yaml"]);
}

#[test]
fn a_spec_file_that_does_not_exist_is_refused_naming_it() {
    let job = Job::new("steps: [{name: t, run: 'true'}]\n");
    std::fs::remove_file(job.spec()).expect("rm spec");
    let r = job.run();
    check_invalid(&job, &r, "(none)", &["job.yaml"]);
}

#[test]
fn a_non_empty_out_directory_is_refused() {
    let job = Job::new("steps: [{name: t, run: 'true'}]\n").file("out/existing.txt", "mine\n");
    let r = job.run();
    assert_eq!(r.code(), Some(2), "{}", r.context());
    assert!(r.stderr.contains("out"), "{}", r.context());
    r.assert_created_nothing();
    assert_eq!(
        std::fs::read_to_string(job.out().join("existing.txt")).expect("kept"),
        "mine\n"
    );
}

fn unreachable(docker_host: &str, mentions: &[&str]) {
    let job = Job::new("steps: [{name: t, run: 'true'}]\n");
    let mut cmd = job.command();
    cmd.env("DOCKER_HOST", docker_host);
    let r = common::Running::spawn(cmd).wait();
    r.assert_exit(5);
    let v = r.json();
    assert_eq!(v["error"]["kind"], "sandbox_error", "{}", r.context());
    for m in mentions {
        assert!(
            r.stderr.contains(m),
            "the error does not mention {m:?}\n{}",
            r.context()
        );
    }
    assert!(
        r.elapsed < Duration::from_secs(15),
        "took {:?} to notice the engine is unreachable",
        r.elapsed
    );
    assert!(!job.out().exists());
}

#[test]
fn an_unreachable_engine_is_a_clear_error_naming_docker_host() {
    unreachable(
        "unix:///nonexistent.sock",
        &["DOCKER_HOST", "/nonexistent.sock"],
    );
}

#[test]
fn an_engine_refusing_connections_is_a_clear_error() {
    unreachable("tcp://127.0.0.1:1", &["DOCKER_HOST", "127.0.0.1:1"]);
}

#[test]
fn the_nothing_created_check_does_see_what_a_valid_job_creates() {
    // A control for `assert_created_nothing`: the same engine-event query finds the
    // containers of a job that did start.
    let job = Job::new(
        "steps: [{name: t, run: 'true', timeout: 30s}]\nlimits: { memory: 32MiB, pids: 16 }\n",
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    let ev = common::events_of_owner(r.pid, r.started_at, r.ended_at);
    assert!(
        ev.iter().any(|e| e.starts_with("container create")),
        "no create event found for a job that ran: {ev:?}"
    );
}
