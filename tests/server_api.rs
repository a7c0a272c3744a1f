//! The service's API against a real `cordon serve` and the real engine: submit, stream,
//! result; late and resumed subscribers; cancel; auth; the OpenAPI document.

mod events_support;
mod server_support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use server_support::*;

/// `cordon submit` prints what `cordon run` prints and exits with the same status, and the
/// job's state and result are there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_streams_the_job_like_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), "concurrency: 2\n");
    let dir = tmp.path().join("job");
    std::fs::create_dir_all(dir.join("repo")).expect("repo");
    std::fs::write(dir.join("repo/hello.txt"), "hello from the workspace\n").expect("file");
    let spec = format!(
        "image: {IMAGE}\nworkspace: {{ source: ./repo }}\nsteps:\n  - name: show\n    run: cat hello.txt; echo to-stderr >&2; mkdir -p /out; echo art > /out/a.txt\n  - name: fail\n    run: exit 7\nartifacts: [/out/a.txt]\n"
    );
    std::fs::write(dir.join("job.yaml"), &spec).expect("spec");

    let token_file = srv.token_path();
    let submit = Command::new(cordon_bin())
        .current_dir(&dir)
        .args([
            "submit", "job.yaml", "--server", &srv.url, "--out", "sub-out",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("CORDON_TOKEN")
        .output()
        .expect("submit runs");
    let run = Command::new(cordon_bin())
        .current_dir(&dir)
        .args(["run", "job.yaml", "--out", "run-out"])
        .output()
        .expect("run runs");
    let (out_s, out_r) = (
        String::from_utf8_lossy(&submit.stdout),
        String::from_utf8_lossy(&run.stdout),
    );
    let err_s = String::from_utf8_lossy(&submit.stderr);
    assert_eq!(submit.status.code(), Some(1), "{err_s}");
    assert_eq!(submit.status.code(), run.status.code());
    assert_eq!(out_s, out_r, "stdout of submit and run differ");
    assert_eq!(out_s, "hello from the workspace\n");
    assert!(err_s.contains("to-stderr"), "{err_s}");
    assert!(err_s.contains("FAILED"), "{err_s}");
    assert_eq!(
        std::fs::read_to_string(dir.join("sub-out/a.txt")).expect("artifact downloaded"),
        "art\n"
    );

    // --json: exactly one object on stdout, the result.
    let json = Command::new(cordon_bin())
        .current_dir(&dir)
        .args([
            "submit", "job.yaml", "--server", &srv.url, "--json", "--out", "j-out",
        ])
        .env("CORDON_TOKEN_FILE", &token_file)
        .env_remove("CORDON_TOKEN")
        .output()
        .expect("submit --json runs");
    assert_eq!(json.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(result["outcome"], "failed");
    assert_eq!(result["exit_code"], 7);
    assert_eq!(result["steps"][0]["outcome"], "passed");
    let id = result["job_id"].as_str().expect("id");

    let c = srv.client();
    let st = c.status(id).await;
    assert_eq!(st["state"], "finished");
    assert_eq!(st["outcome"], "failed");
    assert_eq!(st["result"]["steps"][1]["exit_code"], 7);
    let (code, list) = c.get(&format!("/v1/jobs/{id}/artifacts")).await;
    assert_eq!(code, 200);
    assert_eq!(list["artifacts"][0]["path"], "a.txt");
    assert!(containers_of(id).is_empty() && volumes_of(id).is_empty());

    // An invalid spec: exit 2, nothing started.
    std::fs::write(dir.join("bad.yaml"), "steps: []\nbogus: 1\n").expect("spec");
    let bad = Command::new(cordon_bin())
        .current_dir(&dir)
        .args(["submit", "bad.yaml", "--server", &srv.url])
        .env("CORDON_TOKEN", srv.token.as_deref().expect("token"))
        .output()
        .expect("submit runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bogus"));

    let text = c.metrics().await;
    assert!(
        text.contains("cordon_jobs_finished_total{outcome=\"failed\"} 2"),
        "{text}"
    );
    assert!(text.contains("cordon_queue_wait_seconds_count 2"), "{text}");
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// A live subscriber, a late one and one resuming mid-way all see every event exactly once,
/// in order, ending with the result; SSE carries the same events with their offsets as ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_resumed_subscribers_see_every_event_once_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), "concurrency: 1\n");
    let c = srv.client();
    let id = c
        .submit_ok(
            &spec("for i in $(seq 1 30); do echo line-$i; sleep 0.02; done"),
            Some(tgz(&[("f.txt", "x")])),
        )
        .await;
    // Subscribe at once (live), then again after the end (late).
    let live = c.events(&id, 0).await;
    let late = c.events(&id, 0).await;
    assert_eq!(seqs(&live), (0..live.len() as u64).collect::<Vec<_>>());
    assert_eq!(live, late);
    assert_eq!(live.last().expect("events")["type"], "finished");
    assert_eq!(live[0]["type"], "started");
    let out: String = live
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["data"].as_str().expect("data"))
        .collect();
    let want: String = (1..=30).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(out, want, "output arrives complete and in order");

    // Resume from the middle: exactly the suffix.
    let k = live.len() as u64 / 2;
    let rest = c.events(&id, k).await;
    assert_eq!(rest, live[k as usize..].to_vec());
    // Past the end: nothing, and the stream still ends.
    assert!(c.events(&id, live.len() as u64 + 5).await.is_empty());

    // SSE resume with Last-Event-ID.
    let text = c
        .req(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", (k - 1).to_string())
        .send()
        .await
        .expect("sse")
        .text()
        .await
        .expect("sse body");
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().expect("id"))
        .collect();
    assert_eq!(ids, (k..live.len() as u64).collect::<Vec<_>>());
    let datas: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|v| serde_json::from_str(v).expect("data is JSON"))
        .collect();
    assert_eq!(datas.last().expect("frames")["type"], "finished");

    // A dropped connection mid-stream: read a few lines of a running job, drop, resume.
    let id2 = c
        .submit_ok(
            &spec("for i in $(seq 1 20); do echo n-$i; sleep 0.05; done"),
            None,
        )
        .await;
    let mut first = Vec::new();
    {
        use futures_util::StreamExt;
        let resp = c
            .req(reqwest::Method::GET, &format!("/v1/jobs/{id2}/events"))
            .send()
            .await
            .expect("events");
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while first.len() < 8 {
            let chunk = body.next().await.expect("more").expect("chunk");
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                first.push(serde_json::from_slice::<Value>(&line).expect("json"));
            }
        }
    } // dropped here
    let next = first.last().expect("some")["seq"].as_u64().expect("seq") + 1;
    let mut all = first.clone();
    all.extend(c.events(&id2, next).await);
    assert_eq!(seqs(&all), (0..all.len() as u64).collect::<Vec<_>>());
    assert_eq!(all, c.events(&id2, 0).await);
    assert_eq!(all.last().expect("events")["result"]["outcome"], "passed");
}

/// A queued job cancelled never starts; a running one is stopped and its containers are gone
/// when DELETE returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_jobs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(
        &tmp.path().join("data"),
        "concurrency: 1\nqueue_capacity: 1\n",
    );
    let c = srv.client();
    let running = c.submit_ok(&spec("echo started; sleep 60"), None).await;
    c.wait_state(&running, "running", Duration::from_secs(30))
        .await;
    let queued = c.submit_ok(&spec("echo never"), None).await;
    assert_eq!(c.status(&queued).await["queue_position"], 0);

    // The queue holds one job: the next submission is told to come back later.
    let r = c
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/yaml")
        .body(spec("true"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["kind"], "queue_full");

    // Wait for the first job's output: its command is running.
    c.wait_event(&running, "output").await;

    let r = c
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{queued}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["state"], "finished");
    assert_eq!(v["outcome"], "cancelled");
    assert!(
        v["started_ms"].is_null(),
        "a cancelled queued job never starts: {v}"
    );
    let evs = c.events(&queued, 0).await;
    assert_eq!(evs.len(), 1, "only the result: {evs:?}");
    assert_eq!(evs[0]["result"]["outcome"], "cancelled");

    let t = std::time::Instant::now();
    let r = c
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{running}"))
        .send()
        .await
        .expect("delete");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outcome"], "cancelled", "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        t.elapsed()
    );
    assert!(containers_of(&running).is_empty(), "container left behind");
    assert!(volumes_of(&running).is_empty(), "volume left behind");
    let evs = c.events(&running, 0).await;
    assert!(evs.iter().any(|e| e["type"] == "output"));
    assert_eq!(evs.last().expect("events")["type"], "finished");

    // Cancelling a finished job changes nothing; an unknown one is 404.
    let r = c
        .req(reqwest::Method::DELETE, &format!("/v1/jobs/{running}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let (code, _) = c.get("/v1/jobs/job-nope").await;
    assert_eq!(code, 404);

    // The rejection and the cancellations are counted.
    let text = c
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("cordon_jobs_rejected_total{reason=\"queue_full\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cordon_jobs_finished_total{outcome=\"cancelled\"} 2"),
        "{text}"
    );
    assert!(text.contains("cordon_queue_depth 0"), "{text}");
}

/// Every API route needs the token (compared in constant time); probes stay open. A short
/// configured token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_on_every_route() {
    let tmp = tempfile::tempdir().expect("tmp");
    let token = "s3cret-token-0123456789";
    let srv = start(&tmp.path().join("data"), &format!("token: {token}\n"));
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/v1/jobs/x"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("DELETE", "/v1/jobs/x"),
        ("GET", "/v1/jobs/x/events"),
        ("GET", "/metrics"),
        ("GET", "/v1/openapi.yaml"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-token-012345678"),
            Some(token),
        ] {
            let mut r = http.request(m.clone(), format!("{}{path}", srv.url));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.expect("request");
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
        }
    }
    let ok = http
        .get(format!("{}/metrics", srv.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(ok.status(), 200);
    for probe in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{probe}", srv.url))
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200, "{probe}");
    }

    // A token under 16 characters: refuses to start, naming the field and the fix.
    let out = Command::new(cordon_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "/dev/null"])
        .env("CORDON_TOKEN", "short")
        .env_remove("CORDON_TOKEN_FILE")
        .env("CORDON_DATA_DIR", tmp.path().join("d2"))
        .output()
        .expect("serve runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`token`: a token needs at least 16 characters"),
        "{err}"
    );
}

/// `openapi.yaml` parses, documents every route the router has (and no other), each with its
/// own `operationId` (what generated clients name their methods after), and is served; the
/// router answers every documented route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(cordon::server::api::OPENAPI).expect("openapi.yaml parses");
    let paths = doc["paths"].as_mapping().expect("paths");
    let mut documented = Vec::new();
    let mut operation_ids = std::collections::BTreeSet::new();
    for (p, ops) in paths {
        for (m, op) in ops.as_mapping().expect("operations") {
            let m = m.as_str().expect("method");
            if m != "parameters" {
                let p = p.as_str().expect("path");
                let op_id = op["operationId"].as_str().unwrap_or_default();
                assert!(!op_id.is_empty(), "{m} {p} has no operationId");
                assert!(
                    operation_ids.insert(op_id.to_string()),
                    "{m} {p}: operationId `{op_id}` is used twice"
                );
                documented.push((m.to_string(), p.to_string()));
            }
        }
    }
    let mut routes: Vec<(String, String)> = cordon::server::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);

    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), "");
    let c = srv.client();
    let id = c
        .submit_ok(
            &format!(
                "{}artifacts: [/out/d]\n",
                spec("mkdir -p /out/d; echo x > /out/d/f")
            ),
            None,
        )
        .await;
    c.events(&id, 0).await;
    let served = c
        .req(reqwest::Method::GET, "/v1/openapi.yaml")
        .send()
        .await
        .expect("openapi")
        .text()
        .await
        .expect("text");
    assert_eq!(served, cordon::server::api::OPENAPI);
    for (m, p) in &routes {
        if p == "/v1/github/webhook" {
            // Routed only with a `github:` section: tests/github_webhook.rs.
            continue;
        }
        let path = p.replace("{id}", &id).replace("{path}", "d/f");
        let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
        let mut r = c.req(method, &path);
        if m == "post" {
            r = r
                .header("content-type", "application/yaml")
                .body(spec("true"));
        }
        let r = r.send().await.expect("request");
        let code = r.status().as_u16();
        assert!(code != 404 && code != 405, "{m} {path}: {code}");
        if m != "get" || !path.ends_with("/events") {
            continue;
        }
        let _ = r.text().await;
    }
}

/// The OpenAPI document's `Event` is the tagged union the code sends: one schema per type
/// (no more, no fewer), each requiring exactly the fields the code always sends and
/// documenting every field it may send.
#[test]
fn openapi_event_union_matches_the_code() {
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(cordon::server::api::OPENAPI).expect("openapi.yaml parses");
    let schemas = &doc["components"]["schemas"];
    let mapping = schemas["Event"]["discriminator"]["mapping"]
        .as_object()
        .expect("Event has a discriminator mapping");
    let one_of: Vec<&str> = schemas["Event"]["oneOf"]
        .as_array()
        .expect("Event is a oneOf")
        .iter()
        .map(|r| r["$ref"].as_str().expect("a $ref"))
        .collect();
    let mut sent = Vec::new();
    for event in events_support::every_event() {
        let mut json = serde_json::to_value(&event).expect("serializes");
        json["seq"] = 0.into();
        let ty = json["type"].as_str().expect("tagged").to_string();
        let reference = mapping
            .get(&ty)
            .and_then(|r| r.as_str())
            .unwrap_or_else(|| panic!("openapi.yaml's Event has no `{ty}`"));
        assert!(
            one_of.contains(&reference),
            "`{ty}`: {reference} is not in oneOf"
        );
        let name = reference.trim_start_matches("#/components/schemas/");
        let schema = &schemas[name];
        assert_eq!(
            schema["properties"]["type"]["enum"],
            serde_json::json!([ty]),
            "{name}"
        );
        let keys: std::collections::BTreeSet<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let required: std::collections::BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no `required`"))
            .iter()
            .map(|v| v.as_str().expect("a name"))
            .collect();
        assert_eq!(keys, required, "{name}: the fields sent vs. those required");
        for k in &keys {
            assert!(
                schema["properties"].get(k).is_some(),
                "{name} does not document `{k}`"
            );
        }
        sent.push(ty);
    }
    let mut documented: Vec<&String> = mapping.keys().collect();
    documented.sort();
    sent.sort();
    assert_eq!(
        documented,
        sent.iter().collect::<Vec<_>>(),
        "no stale types"
    );
    assert_eq!(one_of.len(), sent.len());
}

/// `Idempotency-Key` over HTTP: a retry gets the same job; the key with another submission is
/// 422; a malformed or repeated header is 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_retry_the_same_job() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), "");
    let c = srv.client();
    let post = |spec: String, keys: Vec<String>| {
        let mut r = c
            .req(reqwest::Method::POST, "/v1/jobs")
            .header("content-type", "application/yaml")
            .body(spec);
        for k in keys {
            r = r.header("Idempotency-Key", k);
        }
        r.send()
    };
    let key = || vec!["client-retry-42".to_string()];
    let first = post(spec("true"), key()).await.expect("first");
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.expect("json");
    let again = post(spec("true"), key()).await.expect("again");
    assert_eq!(again.status().as_u16(), 202);
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    let other = post(spec("false"), key()).await.expect("other");
    assert_eq!(other.status().as_u16(), 422);
    let body: Value = other.json().await.expect("json");
    assert_eq!(body["error"]["kind"], "idempotency_key_reused", "{body}");
    for bad in [
        vec!["x".repeat(256)],
        vec!["has space".to_string()],
        vec!["a".to_string(), "b".to_string()],
    ] {
        let r = post(spec("true"), bad.clone()).await.expect("bad");
        assert_eq!(r.status().as_u16(), 400, "{bad:?}");
        let body: Value = r.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{body}"
        );
    }
    let (_, page) = c.get("/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
}
