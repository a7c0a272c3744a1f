//! Profile files are checked as they load: none may take a built-in profile's name, a seccomp
//! file must deny by default and be well-formed, and the filter a profile file names is the
//! one the engine applies. Real engine, `cordon run`.

mod common;

use common::{Finished, Job};
use serde_json::Value;

/// Exit 2, one `invalid_input` JSON object naming each of `mentions`, nothing created.
fn assert_invalid(r: &Finished, mentions: &[&str]) {
    r.assert_exit(2);
    let v = r.json();
    assert_eq!(v["error"]["kind"], "invalid_input", "{}", r.context());
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    for m in mentions {
        assert!(
            msg.contains(m),
            "the error does not mention {m:?}\n{}",
            r.context()
        );
    }
    r.assert_created_nothing();
}

/// `sandbox-profiles/strict.yaml` beside a spec would make every job that names `strict` (or
/// none) run under the checkout's profile: it is refused, whether the spec names `strict` or
/// leaves the default.
#[test]
fn a_profile_file_named_strict_does_not_replace_the_builtin() {
    for spec in [
        "profile: strict\nsteps: [{ name: t, run: 'true' }]\n",
        "steps: [{ name: t, run: 'true' }]\n",
    ] {
        let job = Job::new(spec).file(
            "sandbox-profiles/strict.yaml",
            "inherits: strict\nlimits: { memory: 2GiB }\nno_new_privileges: false\n",
        );
        let r = job.run();
        assert_invalid(
            &r,
            &[
                "profile `strict`",
                "sandbox-profiles/strict.yaml",
                "named like the built-in profile `strict`",
                "rename it; a profile of your own may `inherits: strict`",
            ],
        );
    }
}

#[test]
fn seccomp_files_that_allow_by_default_or_are_malformed_are_refused() {
    for (json, mentions) in [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#,
            &[
                "profile `loose`",
                "loose.json",
                "`defaultAction`",
                "does not deny",
            ][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_LOG"}"#,
            &["profile `loose`", "does not deny"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}"#,
            &["profile `loose`", "loose.json", "`syscalls[0]`", "`names`"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_PERMIT"}]}"#,
            &[
                "loose.json",
                "`syscalls[0]`",
                "SCMP_ACT_PERMIT",
                "not a seccomp action",
            ][..],
        ),
        ("{ not json", &["loose.json", "not valid JSON"][..]),
    ] {
        let job = Job::new("profile: loose\nsteps: [{ name: t, run: 'true' }]\n")
            .file(
                "sandbox-profiles/loose.yaml",
                "inherits: strict\nseccomp: loose.json\n",
            )
            .file("sandbox-profiles/loose.json", json);
        let r = job.run();
        assert_invalid(&r, mentions);
    }
}

/// strict's filter with `mkdir` and `mkdirat` taken out of every rule and denied with EPERM.
fn filter_without_mkdir() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-profiles/seccomp-strict.json"
    );
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read strict's filter"))
            .expect("strict's filter is JSON");
    let denied = ["mkdir", "mkdirat"];
    let rules = v["syscalls"].as_array_mut().expect("syscalls");
    for rule in rules.iter_mut() {
        if let Some(names) = rule.get_mut("names").and_then(Value::as_array_mut) {
            names.retain(|n| !denied.contains(&n.as_str().unwrap_or_default()));
        }
    }
    rules.retain(|r| r["names"].as_array().is_none_or(|n| !n.is_empty()));
    rules.push(serde_json::json!({
        "names": denied,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": 1
    }));
    serde_json::to_string_pretty(&v).expect("json")
}

/// The filter of a profile file is the one applied: `mkdir` fails with EPERM in a step
/// under it (it works under the built-in `strict`: `run_isolation`'s copy-mode test makes
/// directories), while creating a file still works.
#[test]
fn a_profile_files_seccomp_filter_is_the_one_applied() {
    let job = Job::new(
        r#"
profile: nomkdir
steps:
  - name: probe
    run: |
      mkdir /tmp/made 2>&1; echo "MKDIR=$?"
      python3 -c 'import os
      try:
          os.mkdir("/tmp/py"); print("PYMKDIR=made")
      except OSError as e:
          print("PYMKDIR=errno-%d" % e.errno)'
      touch /tmp/file && echo "TOUCH=ok"
    timeout: 60s
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file(
        "sandbox-profiles/nomkdir.yaml",
        "inherits: strict\nseccomp: nomkdir.json\n",
    )
    .file("sandbox-profiles/nomkdir.json", &filter_without_mkdir());
    let r = job.run();
    r.assert_ended("passed", 0);
    assert_ne!(r.printed("MKDIR").as_deref(), Some("0"), "{}", r.context());
    assert!(
        r.output().contains("Operation not permitted"),
        "mkdir did not fail with EPERM\n{}",
        r.context()
    );
    assert_eq!(
        r.printed("PYMKDIR").as_deref(),
        Some("errno-1"),
        "{}",
        r.context()
    );
    assert_eq!(r.printed("TOUCH").as_deref(), Some("ok"), "{}", r.context());
}
