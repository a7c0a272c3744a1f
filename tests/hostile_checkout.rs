//! A checkout is the submitter's, so hostile: its links must never hand cordon's host files to
//! the job, whether as a `prepare` key file or through the workspace copy; and a spec cannot
//! mount the workspace over the sandbox's system directories. Real engine, `cordon run`.

mod common;

use common::{Finished, Job};

/// The refusal every invalid input gets: exit 2, one `invalid_input` JSON object whose
/// message (and stderr) names each of `mentions`, and nothing created on the engine.
fn assert_invalid(r: &Finished, mentions: &[&str]) {
    r.assert_exit(2);
    let v = r.json();
    assert_eq!(v["error"]["kind"], "invalid_input", "{}", r.context());
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    for m in mentions {
        assert!(
            msg.contains(m) && r.stderr.contains(m),
            "the error does not mention {m:?}\n{}",
            r.context()
        );
    }
    r.assert_created_nothing();
}

/// A unique value, in a host file outside the workspace.
fn host_secret(job: &Job) -> String {
    let secret = format!(
        "host-only-{}-{}",
        std::process::id(),
        job.dir.path().display()
    );
    job.write("secret.txt", &secret);
    secret
}

#[test]
fn a_key_file_linked_to_a_host_file_is_invalid_input_and_never_read() {
    let job = Job::new(
        r#"
workspace: { source: ./repo }
prepare:
  run: pip install -r requirements.txt
  cache_key_files: ["requirements*.txt"]
steps: [{ name: t, run: "true", timeout: 30s }]
"#,
    );
    let secret = host_secret(&job);
    std::os::unix::fs::symlink(job.path("secret.txt"), job.path("repo/requirements.txt"))
        .expect("symlink");
    let r = job.run();
    assert_invalid(
        &r,
        &[
            "prepare.cache_key_files[0]",
            "`requirements.txt` is a symbolic link; key files must be regular files inside the workspace",
        ],
    );
    assert!(
        !r.stdout.contains(&secret) && !r.stderr.contains(&secret),
        "the host file's contents were printed\n{}",
        r.context()
    );
}

#[test]
fn workspace_links_to_host_files_resolve_inside_the_sandbox() {
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - name: peek
    run: |
      echo "LEAK=[$(cat leak 2>&1)]"
      echo "SECRET=[$(cat secret 2>&1)]"
      echo "DIR=[$(cat etc/hostname 2>&1)]"
      echo "OWN=[$(cat /etc/hostname 2>&1)]"
      echo "KIND=$(test -L leak && test -L etc && echo links)"
    timeout: 30s
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/keep.txt", "kept\n");
    let secret = host_secret(&job);
    std::os::unix::fs::symlink("/etc/hostname", job.path("repo/leak")).expect("symlink");
    std::os::unix::fs::symlink("/etc", job.path("repo/etc")).expect("symlink");
    std::os::unix::fs::symlink(job.path("secret.txt"), job.path("repo/secret")).expect("symlink");
    let r = job.run();
    r.assert_ended("passed", 0);
    assert_eq!(
        r.printed("KIND").as_deref(),
        Some("links"),
        "{}",
        r.context()
    );
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host_name = host_name.trim();
    let own = r.printed("OWN").expect("OWN printed");
    for key in ["LEAK", "DIR"] {
        let seen = r
            .printed(key)
            .unwrap_or_else(|| panic!("{key} printed\n{}", r.context()));
        assert_ne!(
            seen,
            format!("[{host_name}]"),
            "{key}: the host's /etc/hostname reached the sandbox\n{}",
            r.context()
        );
        assert_eq!(
            seen,
            own,
            "{key}: the link resolves to the container's own file\n{}",
            r.context()
        );
    }
    assert!(
        !r.output().contains(&secret) && !r.stdout.contains(&secret),
        "a host file outside the workspace reached the sandbox\n{}",
        r.context()
    );
}

#[test]
fn a_workspace_over_a_system_directory_is_invalid_input() {
    let job = Job::new(
        "workspace: { source: ./repo, path: /proc/self/fd/7 }\nsteps: [{ name: t, run: 'true' }]\n",
    );
    let r = job.run();
    assert_invalid(&r, &["workspace.path", "/proc/self/fd/7"]);
}
