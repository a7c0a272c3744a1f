//! Artifacts out of a hostile job: links pointing outside, link-swapping races, special
//! files, oversize files and totals. Each is refused and reported in `artifacts_refused`,
//! nothing is written outside `--out`, and the job's outcome is not changed by it.

mod common;

use common::{Finished, Job, Runtime, snapshot, tree};

/// A profile with small artifact caps, next to the spec (`profile: small`).
const SMALL_PROFILE: &str = "inherits: strict\nartifacts: { max_file: 1MiB, max_total: 2MiB }\n";

fn refused(r: &Finished) -> Vec<(String, String)> {
    r.result()["artifacts_refused"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn artifacts(r: &Finished) -> Vec<String> {
    r.result()["artifacts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Asserts an entry whose path ends with `name` was refused, and returns its reason.
fn refused_reason(r: &Finished, name: &str) -> String {
    let list = refused(r);
    list.iter()
        .find(|(p, _)| p.trim_end_matches('/').ends_with(name))
        .map(|(_, why)| why.clone())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not in artifacts_refused {list:?}\n{}",
                r.context()
            )
        })
}

/// Everything in the job's directory except `out/`, to prove nothing was written elsewhere.
fn outside_out(job: &Job) -> Vec<String> {
    snapshot(job.dir.path())
        .into_iter()
        .filter(|l| !(l[2..].starts_with("out ") || l[2..].starts_with("out/")))
        .collect()
}

/// Asserts `out/` holds only regular files and directories, all listed in `want`.
fn assert_out_is(job: &Job, want: &[&str]) {
    let got = tree(&job.out());
    assert!(
        !got.iter().any(|e| e.starts_with("l ")),
        "a symlink was written under --out: {got:?}"
    );
    let files: Vec<&str> = got
        .iter()
        .filter(|e| e.starts_with("f "))
        .map(|e| &e[2..])
        .collect();
    assert_eq!(files, want, "files under --out");
}

const HOSTILE: &str = r#"
profile: small
steps:
  - name: hostile
    run: |
      set -e
      ln -s /etc/passwd /out/evil
      ln -s / /out/d
      ln -s ../../../../../../tmp /out/up
      mkfifo /out/pipe
      head -c 3145728 /dev/zero > /out/big
      echo good > /out/good.txt
      echo hostile-done
      exit $JOB_EXIT
    timeout: 30s
artifacts: [/out/evil, /out/d, /out/up, /out/pipe, /out/big, /out/good.txt]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#;

fn hostile_job(rt: Runtime, exit: u8) -> Job {
    Job::new_under(rt, &format!("{HOSTILE}env: {{ JOB_EXIT: \"{exit}\" }}\n"))
        .file("sandbox-profiles/small.yaml", SMALL_PROFILE)
}

fn check_hostile(job: &Job, r: &Finished) {
    assert!(r.output().contains("hostile-done"), "{}", r.context());
    for name in ["evil", "d", "up", "pipe"] {
        refused_reason(r, name);
    }
    let big = refused_reason(r, "big");
    assert!(
        big.contains("cap") || big.contains("limit") || big.contains("large"),
        "the oversize refusal does not say why: {big:?}"
    );
    let good = job.out().join("good.txt");
    assert_eq!(
        artifacts(r),
        vec![good.display().to_string()],
        "{}",
        r.context()
    );
    assert_eq!(std::fs::read_to_string(&good).expect("good.txt"), "good\n");
    assert_out_is(job, &["good.txt"]);
}

#[test]
fn hostile_artifacts_are_refused_and_the_job_still_passes() {
    hostile_passes(Runtime::Runc);
}

#[test]
fn hostile_artifacts_are_refused_and_the_job_still_passes_under_gvisor() {
    hostile_passes(Runtime::Runsc);
}

fn hostile_passes(rt: Runtime) {
    let job = hostile_job(rt, 0);
    let before = outside_out(&job);
    let r = job.run();
    r.assert_ended("passed", 0);
    check_hostile(&job, &r);
    assert_eq!(
        outside_out(&job),
        before,
        "something was written outside --out"
    );
}

#[test]
fn hostile_artifacts_do_not_change_a_failed_outcome() {
    hostile_fails(Runtime::Runc);
}

#[test]
fn hostile_artifacts_do_not_change_a_failed_outcome_under_gvisor() {
    hostile_fails(Runtime::Runsc);
}

fn hostile_fails(rt: Runtime) {
    let job = hostile_job(rt, 9);
    let before = outside_out(&job);
    let r = job.run();
    r.assert_ended("failed", 1);
    assert_eq!(r.result()["exit_code"], 9);
    check_hostile(&job, &r);
    assert_eq!(
        outside_out(&job),
        before,
        "something was written outside --out"
    );
}

#[test]
fn a_whole_directory_artifact_keeps_files_and_refuses_links_inside_it() {
    whole_directory(Runtime::Runc);
}

#[test]
fn a_whole_directory_artifact_keeps_files_and_refuses_links_inside_it_under_gvisor() {
    whole_directory(Runtime::Runsc);
}

fn whole_directory(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
profile: small
steps:
  - name: tree
    run: |
      set -e
      mkdir -p /out/report/sub /out/report/linkdir-target
      echo a > /out/report/a.txt
      echo b > /out/report/sub/b.txt
      ln -s /etc/passwd /out/report/sub/abs
      ln -s ../../../../etc/shadow /out/report/sub/rel
      ln -s / /out/report/root
      ln /out/report/a.txt /out/report/hard
    timeout: 30s
artifacts: [/out/report]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("sandbox-profiles/small.yaml", SMALL_PROFILE);
    let before = outside_out(&job);
    let r = job.run();
    r.assert_ended("passed", 0);
    for name in ["abs", "rel", "root"] {
        refused_reason(&r, name);
    }
    let files: Vec<String> = tree(&job.out())
        .into_iter()
        .filter(|e| !e.starts_with("d "))
        .collect();
    assert!(
        files.iter().all(|e| e.starts_with("f ")),
        "a link was extracted: {files:?}"
    );
    for want in ["report/a.txt", "report/sub/b.txt"] {
        assert!(
            files.iter().any(|e| e == &format!("f {want}")),
            "{want} missing from {files:?}\n{}",
            r.context()
        );
    }
    assert_eq!(
        std::fs::read_to_string(job.out().join("report/sub/b.txt")).expect("b.txt"),
        "b\n"
    );
    assert_eq!(
        outside_out(&job),
        before,
        "something was written outside --out"
    );
}

#[test]
fn artifacts_past_the_total_cap_are_refused() {
    total_cap(Runtime::Runc);
}

#[test]
fn artifacts_past_the_total_cap_are_refused_under_gvisor() {
    total_cap(Runtime::Runsc);
}

fn total_cap(rt: Runtime) {
    // Three 900 KiB files against max_total 2 MiB: two fit, the third is refused.
    let job = Job::new_under(
        rt,
        r#"
profile: small
steps:
  - name: many
    run: |
      mkdir -p /out/tot
      for i in 1 2 3; do head -c 921600 /dev/zero > /out/tot/f$i; done
    timeout: 30s
artifacts: [/out/tot]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("sandbox-profiles/small.yaml", SMALL_PROFILE);
    let r = job.run();
    r.assert_ended("passed", 0);
    let got: Vec<String> = tree(&job.out())
        .into_iter()
        .filter(|e| e.starts_with("f "))
        .collect();
    assert_eq!(got.len(), 2, "files extracted: {got:?}\n{}", r.context());
    assert!(!refused(&r).is_empty(), "nothing refused\n{}", r.context());
    let total: u64 = got
        .iter()
        .map(|e| {
            std::fs::metadata(job.out().join(&e[2..]))
                .expect("meta")
                .len()
        })
        .sum();
    assert!(total <= 2 << 20, "{total} bytes extracted past a 2 MiB cap");
}

#[test]
fn a_missing_artifact_is_reported_without_changing_the_outcome() {
    missing_artifact(Runtime::Runc);
}

#[test]
fn a_missing_artifact_is_reported_without_changing_the_outcome_under_gvisor() {
    missing_artifact(Runtime::Runsc);
}

fn missing_artifact(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
steps:
  - { name: t, run: "echo made > /out/made.txt", timeout: 30s }
artifacts: [/out/made.txt, /out/never.xml]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("passed", 0);
    refused_reason(&r, "never.xml");
    assert_out_is(&job, &["made.txt"]);
}

#[test]
fn when_no_artifact_exists_each_is_reported_missing_and_nothing_else() {
    let job = Job::new(
        r#"
steps:
  - { name: t, run: "exit 1", timeout: 30s }
artifacts: [/out/junit.xml, /out/report]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    let list = refused(&r);
    assert_eq!(list.len(), 2, "{list:?}\n{}", r.context());
    for (path, reason) in &list {
        assert_eq!(reason, "not produced by the job", "{path}\n{}", r.context());
    }
    assert_out_is(&job, &[]);
}

#[test]
fn a_background_link_swapper_cannot_race_the_copy() {
    link_swapper(Runtime::Runc);
}

#[test]
fn a_background_link_swapper_cannot_race_the_copy_under_gvisor() {
    link_swapper(Runtime::Runsc);
}

fn link_swapper(rt: Runtime) {
    // The job leaves a process swapping /out/x between a file and a link to /etc/passwd and
    // exits. Artifacts are copied only once every process of the job has stopped, so what
    // comes out is one consistent state: the file, or a refusal of the link. Never a link
    // on the host, never the container's /etc/passwd.
    let job = Job::new_under(
        rt,
        r#"
steps:
  - name: race
    run: |
      (
        while :; do
          echo safe > /out/x.f && mv -f /out/x.f /out/x
          ln -sfn /etc/passwd /out/x.l && mv -Tf /out/x.l /out/x
        done
      ) >/dev/null 2>&1 &
      sleep 0.5
      exit 0
    timeout: 30s
artifacts: [/out/x]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    for _ in 0..3 {
        let before = outside_out(&job);
        let _ = std::fs::remove_dir_all(job.out());
        let r = job.run();
        r.assert_ended("passed", 0);
        let out = tree(&job.out());
        assert!(
            !out.iter().any(|e| e.starts_with("l ")),
            "a link reached the host: {out:?}"
        );
        if out.iter().any(|e| e == "f x") {
            let x = std::fs::read_to_string(job.out().join("x")).expect("x");
            assert_eq!(x, "safe\n", "collected a torn or foreign file");
        } else {
            refused_reason(&r, "x");
        }
        assert_eq!(outside_out(&job), before);
    }
}

#[test]
fn artifacts_under_the_copied_workspace_are_collected() {
    workspace_artifacts(Runtime::Runc);
}

#[test]
fn artifacts_under_the_copied_workspace_are_collected_under_gvisor() {
    workspace_artifacts(Runtime::Runsc);
}

fn workspace_artifacts(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
workspace: { source: ./repo, mode: copy }
steps:
  - { name: t, run: "mkdir -p build && echo built > build/result.txt", timeout: 30s }
artifacts: [/workspace/build/result.txt]
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/src.txt", "src\n");
    let r = job.run();
    r.assert_ended("passed", 0);
    let arts = artifacts(&r);
    assert_eq!(arts.len(), 1, "{}", r.context());
    assert!(arts[0].starts_with(job.out().to_str().expect("utf-8")));
    assert_eq!(
        std::fs::read_to_string(&arts[0]).expect("artifact"),
        "built\n"
    );
    // The host workspace did not get the build output.
    assert!(!job.path("repo/build").exists());
}

/// The gate takes the workspace and sends the artifacts itself when the image has GNU tar
/// and dd; an image without them gets both through the engine's archive API instead. The job
/// sees the same workspace and the host gets the same artifacts either way.
#[test]
fn an_image_without_tar_or_dd_gets_the_same_workspace_and_artifacts_through_the_engine() {
    without_tar_or_dd(Runtime::Runc);
}

#[test]
fn an_image_without_tar_or_dd_gets_the_same_workspace_and_artifacts_through_the_engine_under_gvisor()
 {
    without_tar_or_dd(Runtime::Runsc);
}

fn without_tar_or_dd(rt: Runtime) {
    common::require_image();
    // A tag per runtime: the two tests run at once, and each removes its tag at the end.
    let no_tools = match rt {
        Runtime::Runc => "cordon-test/no-tar-no-dd:1",
        Runtime::Runsc => "cordon-test/no-tar-no-dd:gvisor",
    };
    let dockerfile = format!(
        "FROM {}\nUSER root\nRUN rm -f /usr/bin/tar /bin/tar /usr/bin/dd /bin/dd\n",
        common::IMAGE
    );
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", no_tools, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    std::io::Write::write_all(
        &mut build.stdin.take().expect("stdin"),
        dockerfile.as_bytes(),
    )
    .expect("write the Dockerfile");
    assert!(
        build.wait().expect("docker build").success(),
        "building {no_tools}"
    );

    let mut trees = Vec::new();
    for (image, has_tools) in [(common::IMAGE, "yes"), (no_tools, "no")] {
        let job = Job::new_under(
            rt,
            &format!(
                r#"
image: {image}
workspace: {{ source: ./repo, mode: copy }}
steps:
  - name: t
    run: |
      set -e
      if command -v tar >/dev/null; then echo TOOLS=yes; else echo TOOLS=no; fi
      cp src.txt /out/copied.txt
      mkdir -p /out/dir/sub build
      echo deep > /out/dir/sub/d.txt
      ln /out/copied.txt /out/dir/hard
      echo built > build/result.txt
    timeout: 30s
artifacts: [/out/copied.txt, /out/dir, /out/never.xml, /workspace/build/result.txt]
limits: {{ memory: 64MiB, pids: 32, scratch: 16MiB }}
"#
            ),
        )
        .file("repo/src.txt", "from the host\n");
        let r = job.run();
        r.assert_ended("passed", 0);
        assert!(
            r.output().contains(&format!("TOOLS={has_tools}")),
            "{}",
            r.context()
        );
        refused_reason(&r, "never.xml");
        assert_eq!(refused(&r).len(), 1, "{}", r.context());
        assert_eq!(
            std::fs::read_to_string(job.out().join("copied.txt")).expect("copied.txt"),
            "from the host\n"
        );
        assert_eq!(
            std::fs::read_to_string(job.out().join("dir/hard")).expect("dir/hard"),
            "from the host\n"
        );
        trees.push(tree(&job.out()));
    }
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "-f", no_tools])
        .output();
    assert_eq!(trees[0], trees[1], "the two ways differ");
}
