//! Hostile and malformed submissions: each gets a clear 4xx, nothing is written outside the
//! service's data directory (nor left inside it), nothing is queued or started.

mod server_support;

use std::io::Write;

use serde_json::Value;
use server_support::*;

/// One raw tar entry: any name, any type (the `tar` crate's safe setters refuse the hostile
/// ones, so the header is written by hand).
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn raw_tgz(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_mode(0o644);
        h.set_size(e.data.len() as u64);
        h.set_entry_type(e.kind);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        tar.extend(std::iter::repeat_n(0u8, pad));
    }
    tar.extend(std::iter::repeat_n(0u8, 1024));
    gz(&tar)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gz");
    e.finish().expect("gz")
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
    }
}

fn entries_under(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_malformed_submissions_are_refused_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("repo")).expect("root");
    std::fs::write(root.join("repo/ok.txt"), "ok").expect("file");
    std::os::unix::fs::symlink("/etc", root.join("sneaky")).expect("symlink");
    let data = tmp.path().join("data");
    let srv = start(
        &data,
        &format!(
            "max_upload: 64KiB\nmax_workspace: 1MiB\nmax_workspace_files: 50\nworkspace_roots: [{}]\n",
            root.display()
        ),
    );
    let c = srv.client();
    let marker = format!("cordon-pwned-{}", std::process::id());
    let abs = format!("/tmp/{marker}");
    let dotdot = format!("../../../../../../tmp/{marker}");
    let ok_spec = spec("cat f.txt");

    let zeros = vec![0u8; 50 << 20];
    let many: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let many_entries: Vec<Raw<'_>> = many.iter().map(|n| file(n, b"x")).collect();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            raw_tgz(&[file(&abs, b"pwned")]),
            "absolute",
        ),
        ("dot-dot", raw_tgz(&[file(&dotdot, b"pwned")]), ".."),
        (
            "symlink out, then a file through it",
            raw_tgz(&[
                Raw {
                    name: "link",
                    kind: tar::EntryType::Symlink,
                    link: "/tmp",
                    data: b"",
                },
                file(&format!("link/{marker}"), b"pwned"),
            ]),
            "link",
        ),
        (
            "hard link to a host file",
            raw_tgz(&[Raw {
                name: "h",
                kind: tar::EntryType::Link,
                link: "/etc/passwd",
                data: b"",
            }]),
            "link",
        ),
        (
            "character device",
            raw_tgz(&[Raw {
                name: "dev",
                kind: tar::EntryType::Char,
                link: "",
                data: b"",
            }]),
            "",
        ),
        (
            "fifo",
            raw_tgz(&[Raw {
                name: "p",
                kind: tar::EntryType::Fifo,
                link: "",
                data: b"",
            }]),
            "",
        ),
        (
            "decompression bomb (50 MiB of zeros)",
            raw_tgz(&[file("zeros", &zeros)]),
            "",
        ),
        ("too many entries", raw_tgz(&many_entries), ""),
        ("not gzip", b"this is not a tarball".to_vec(), "gzip"),
        (
            "truncated",
            raw_tgz(&[file("a", b"hello")])[..40].to_vec(),
            "",
        ),
        ("gzip of garbage", gz(&[7u8; 3000]), ""),
    ];
    for (what, body, hint) in cases {
        let (code, v) = c.submit(&ok_spec, Some(body)).await;
        assert_eq!(code, 400, "{what}: {v}");
        assert_eq!(v["error"]["kind"], "upload_refused", "{what}: {v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(hint), "{what}: {msg}");
        assert!(!std::path::Path::new(&abs).exists(), "{what} wrote {abs}");
    }

    // Bodies and specs.
    let big = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (code, v) = c.submit(&ok_spec, Some(big)).await;
    assert_eq!(code, 413, "oversized upload: {v}");
    assert_eq!(v["error"]["kind"], "too_large", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("max_upload"),
        "{v}"
    );
    for (what, spec_text, needle) in [
        (
            "unknown field",
            format!("{ok_spec}bogus_field: 1\n"),
            "bogus_field",
        ),
        (
            "unknown nested field",
            ok_spec.replace("timeout: 120s", "timeout: 120s\n    netwrk: none"),
            "netwrk",
        ),
        ("malformed YAML", "steps: [".to_string(), "spec"),
        ("no steps", "steps: []\n".to_string(), "steps"),
        (
            "profile path",
            format!("{ok_spec}profile: ../../etc/evil.yaml\n"),
            "profile",
        ),
        (
            "pass_env",
            format!("{ok_spec}pass_env: [HOME]\n"),
            "allow_pass_env",
        ),
        (
            "source outside the roots",
            spec_at("true", "/etc"),
            "workspace roots",
        ),
        (
            "source through a symlink out",
            spec_at("true", &format!("{}/sneaky", root.display())),
            "workspace roots",
        ),
        ("relative source", spec_at("true", "repo"), "absolute"),
    ] {
        let (code, v) = c.submit(&spec_text, None).await;
        assert_eq!(code, 400, "{what}: {v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    let missing_image = spec("true").replace(IMAGE, "cordon/no-such-image:1");
    let (code, v) = c.submit(&missing_image, Some(tgz(&[("a", "b")]))).await;
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("never pulls"),
        "{v}"
    );

    // Multipart shape and content types.
    let form = reqwest::multipart::Form::new()
        .text("spec", ok_spec.clone())
        .text("extra", "x");
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new().part(
        "workspace",
        reqwest::multipart::Part::bytes(tgz(&[("a", "b")])),
    );
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "text/plain")
        .body(ok_spec.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415);
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body("{\"steps\": [")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let (code, _) = c.get("/v1/jobs/x/events?from=-1").await;
    assert_eq!(code, 400);

    // Nothing was stored or started for any of them.
    assert!(
        entries_under(&data.join("jobs")).is_empty(),
        "{:?}",
        entries_under(&data.join("jobs"))
    );
    let metrics = c
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cordon_jobs_submitted_total 0"),
        "{metrics}"
    );

    // The accepted forms: a JSON spec alone, a path under a root, and a plain upload.
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"image\": \"{IMAGE}\", \"steps\": [{{\"name\": \"j\", \"run\": \"echo json\"}}]}}"
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("json");
    let evs = c.events(v["id"].as_str().expect("id"), 0).await;
    assert_eq!(evs.last().expect("events")["result"]["outcome"], "passed");
    let under_root = spec_at("cat ok.txt", &format!("{}/repo", root.display()));
    let id = c.submit_ok(&under_root, None).await;
    let evs = c.events(&id, 0).await;
    let last: &Value = evs.last().expect("events");
    assert_eq!(last["result"]["outcome"], "passed", "{last}");
    let id = c
        .submit_ok(
            &ok_spec,
            Some(tgz(&[("f.txt", "fine"), ("dir/g.txt", "g")])),
        )
        .await;
    let evs = c.events(&id, 0).await;
    assert_eq!(evs.last().expect("events")["result"]["outcome"], "passed");
    assert!(evs.iter().any(|e| e["data"] == "fine"));
    assert!(!std::path::Path::new(&abs).exists());
}
