//! What is different under the built-in `gvisor` profile (strict under runsc), against the
//! real engine with runsc registered: the job is on gVisor's kernel; a `prepare` runs under
//! runc; the host's cgroups (invisible inside) enforce the limits, pids scaled for gVisor's own
//! threads; an OOM is found in the engine's events when its flag misses it; no step can ask
//! for egress. The guarantees that are the same are tested under both runtimes in
//! `run_isolation`, `run_outcomes` and `run_artifacts`.

mod common;

use std::time::Duration;

use common::{Job, Runtime, docker};

/// The host kernel's release, as the host's `uname -r` says it.
fn host_kernel() -> String {
    let out = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .expect("uname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_gvisor_job_runs_on_gvisors_kernel_and_cannot_read_the_hosts_cgroups() {
    let job = Job::new_under(
        Runtime::Runsc,
        r#"
steps:
  - name: where
    run: |
      echo "KERNEL=$(uname -r)"
      if cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; then echo CGROUP=visible; else echo CGROUP=hidden; fi
    timeout: 30s
limits: { memory: 64MiB, pids: 16 }
"#,
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    assert_eq!(r.result()["profile"], "gvisor", "{}", r.context());
    let kernel = r.printed("KERNEL").unwrap_or_default();
    assert!(
        !kernel.is_empty() && kernel != host_kernel(),
        "the step saw the host's kernel {kernel:?}\n{}",
        r.context()
    );
    assert_eq!(
        r.printed("CGROUP").as_deref(),
        Some("hidden"),
        "{}",
        r.context()
    );
}

/// The limits are the host's cgroups on the whole sandbox: read from the host while the step
/// runs, since the step cannot read them. The pids limit is scaled for gVisor's own threads.
#[test]
fn the_host_enforces_a_gvisor_sandboxs_limits_with_pids_scaled_for_gvisor() {
    let job = Job::new_under(
        Runtime::Runsc,
        r#"
steps:
  - { name: hold, run: "echo READY; sleep 20", timeout: 3s }
limits: { memory: 96MiB, pids: 40, cpus: 0.5 }
"#,
    );
    let mut running = common::Running::spawn(job.command());
    running.wait_for_output("READY", Duration::from_secs(60));
    let owner = format!("org.cordon.owner={}", common::owner_label(running.pid()));
    let id = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={owner}"),
    ]);
    let id = id.trim().to_string();
    assert!(!id.is_empty() && !id.contains('\n'), "containers: {id:?}");
    let inspect = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Runtime}} {{.State.Pid}}",
        &id,
    ]);
    let (runtime, pid) = inspect.trim().split_once(' ').expect("runtime and pid");
    assert_eq!(runtime, "runsc");
    // The sandbox's process on the host, and its cgroups (v1 or v2).
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let read = |controller: &str, v1: &str, v2: &str| -> String {
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
            let (Some(ctrls), Some(path)) = (ctrls, path) else {
                continue;
            };
            let file = if ctrls.is_empty() {
                format!("/sys/fs/cgroup{path}/{v2}")
            } else if ctrls.split(',').any(|c| c == controller) {
                format!("/sys/fs/cgroup/{ctrls}{path}/{v1}")
            } else {
                continue;
            };
            if let Ok(v) = std::fs::read_to_string(&file) {
                return v.trim().to_string();
            }
        }
        panic!("no {controller} cgroup file for the sandbox in {cgroups}");
    };
    let memory = read("memory", "memory.limit_in_bytes", "memory.max");
    let pids = read("pids", "pids.max", "pids.max");
    let cpu = read("cpu", "cpu.cfs_quota_us", "cpu.max");
    let r = running.wait();
    r.assert_ended("timed_out", 3);
    assert_eq!(memory, (96u64 << 20).to_string());
    // gVisor's kernel and its ptrace stubs are host threads: 64 for the sandbox, 10 for each
    // process of the job's (src/sandbox/policy.rs, engine_pids_limit).
    assert_eq!(pids, (64 + 10 * 40).to_string());
    assert!(
        cpu == "50000" || cpu.starts_with("50000 "),
        "CPU quota for 0.5 CPUs: {cpu}"
    );
}

/// The pids limit still bounds what the job can start: past about `limits.pids` processes
/// gVisor's kernel cannot make another host thread and the sandbox ends, reported with a
/// warning naming the limit (under runc a fork fails and the job goes on to its timeout:
/// `run_outcomes::python_fork_bomb_under_a_pids_limit_is_contained`). With less memory the
/// bomb may fill that first: then it is `oom_killed` (`run_outcomes`' fork bombs accept both).
#[test]
fn a_gvisor_sandbox_ends_at_the_pids_limit_with_a_warning_naming_it() {
    let job = Job::new_under(
        Runtime::Runsc,
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
    timeout: 20s
limits: { memory: 1GiB, pids: 24 }
"#,
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    assert!(
        r.stderr
            .contains("the gVisor sandbox itself ended (exit 2) before the command did")
            && r.stderr.contains("limits.pids (24)"),
        "{}",
        r.context()
    );
    assert!(
        r.elapsed < Duration::from_secs(15),
        "took {:?}\n{}",
        r.elapsed,
        r.context()
    );
    // A job with fewer processes than that runs them all.
    let job = Job::new_under(
        Runtime::Runsc,
        r#"
steps:
  - name: twelve
    run: |
      for i in $(seq 1 12); do sleep 2 & done
      wait
      echo ALL=done
    timeout: 30s
limits: { memory: 256MiB, pids: 16 }
"#,
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    assert_eq!(r.printed("ALL").as_deref(), Some("done"), "{}", r.context());
}

/// The `prepare` of a gvisor job runs under runc (runsc here cannot start a sandbox with the
/// network its proxy needs), with a warning; the steps run under runsc, on what it made.
#[test]
fn a_gvisor_jobs_prepare_runs_under_runc_with_a_warning_and_its_steps_under_runsc() {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let job = Job::new_under(
        Runtime::Runsc,
        &format!(
            r#"
workspace: {{ source: ./repo }}
prepare:
  run: |
    echo "PREPARE_KERNEL=$(uname -r)"
    echo {nonce} > /opt/venv/cordon-gvisor-marker
steps:
  - name: test
    run: |
      echo "STEP_KERNEL=$(uname -r)"
      echo "MARKER=$(cat /opt/venv/cordon-gvisor-marker)"
    timeout: 30s
limits: {{ memory: 256MiB, pids: 32 }}
"#
        ),
    );
    let r = job.run();
    let image = r.result()["environment"]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cleanup = || {
        if !image.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "-f", &image])
                .output();
        }
    };
    let checks = std::panic::catch_unwind(|| {
        r.assert_ended("passed", 0);
        assert_eq!(
            r.result()["environment"]["cached"],
            false,
            "{}",
            r.context()
        );
        assert_eq!(
            r.printed("PREPARE_KERNEL"),
            Some(host_kernel()),
            "the prepare did not run under runc\n{}",
            r.context()
        );
        let step_kernel = r.printed("STEP_KERNEL").unwrap_or_default();
        assert!(
            !step_kernel.is_empty() && step_kernel != host_kernel(),
            "the step did not run under gVisor\n{}",
            r.context()
        );
        assert_eq!(r.printed("MARKER"), Some(nonce.clone()), "{}", r.context());
        assert!(
            r.stderr
                .contains("warning: prepare runs under runc, not gVisor: profile `gvisor`"),
            "no warning\n{}",
            r.context()
        );
    });
    cleanup();
    if let Err(e) = checks {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_step_under_gvisor_cannot_ask_for_egress() {
    let job = Job::new_under(
        Runtime::Runsc,
        r#"
profile: open
steps:
  - { name: t, run: "true", network: egress, timeout: 30s }
"#,
    )
    .file(
        "sandbox-profiles/open.yaml",
        "inherits: strict\nallow_egress: true\n",
    );
    let r = job.run();
    r.assert_exit(2);
    let e = r.json();
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("`steps[0].network`") && msg.contains("gVisor (runsc)"),
        "{}",
        r.context()
    );
    r.assert_created_nothing();
}

/// Under runsc the OOM killer takes one of gVisor's own processes and the whole sandbox
/// exits at once, so the engine can record the exit before the kernel's OOM notice and leave
/// its OOM flag unset. The notice still becomes the container's `oom` event, which cordon
/// reads: here for a container that ran out of memory, whatever its flag says, and not for
/// one killed by SIGKILL without running out.
#[test]
fn the_engines_oom_event_tells_an_oom_from_a_sigkill_under_runsc() {
    common::require_image();
    common::require_runsc();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let docker = bollard::Docker::connect_with_defaults().expect("engine");
    let run = |script: &str| -> String {
        let id = common::docker(&[
            "run",
            "-d",
            "--runtime=runsc",
            "--network=none",
            "--memory=64m",
            "--memory-swap=64m",
            "--pids-limit=512",
            "--init",
            "--label=org.cordon.test=gvisor-oom",
            common::IMAGE,
            "sh",
            "-c",
            script,
        ]);
        let id = id.trim().to_string();
        let code = common::docker(&["wait", &id]);
        assert_eq!(code.trim(), "137", "{script}");
        id
    };
    let bomb = run("python3 -c \"a = []\nwhile True: a.append(b'x' * (8 << 20))\"");
    let killed = run("sleep 1; kill -9 $$");
    let (oom, not_oom) = rt.block_on(async {
        (
            cordon::sandbox::docker::engine_saw_oom(&docker, &bomb, Duration::from_secs(2)).await,
            cordon::sandbox::docker::engine_saw_oom(&docker, &killed, Duration::from_secs(2)).await,
        )
    });
    common::remove_labelled("org.cordon.test=gvisor-oom");
    assert!(oom, "no oom event for the memory bomb");
    assert!(
        !not_oom,
        "an oom event for a container that was only killed"
    );
}
