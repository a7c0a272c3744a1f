//! Load run of the controller service, repeatable by anyone with Docker and the default image:
//!
//! ```text
//! cargo bench --bench server_load            # 200 jobs, 20 clients, concurrency 2
//! LOAD_JOBS=400 LOAD_CLIENTS=40 LOAD_CONCURRENCY=2 LOAD_BASELINE=10 cargo bench --bench server_load
//! ```
//!
//! It starts a real `cordon serve` (the binary of this build) on 127.0.0.1:0, submits every
//! job at once from concurrent clients (each job: a small workspace upload plus one short
//! step), streams each job's events to its result, and reports throughput, queue wait and
//! end-to-end p50/p95, the server's peak RSS and CPU time, lost jobs and leftover containers.
//! Before and after the load it runs the same job with `cordon run` (sequentially), so the
//! service's per-job cost can be compared, as a ratio, with the CLI's in the same run. The
//! figures are also written to `target/server-load.json`.

mod load_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load_support::{Route, env_usize, pct, proc_cpu_secs, proc_status_kib, spec, tgz};
use serde_json::{Value, json};

/// Runs the job with `cordon run` `n` times; returns the wall times in seconds.
fn baseline(dir: &std::path::Path, n: usize) -> Vec<f64> {
    let mut v = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_cordon"))
            .current_dir(dir)
            .args(["run", "job.yaml", "--json", "--out"])
            .arg(format!("run-out-{}-{i}", std::process::id()))
            .output()
            .expect("cordon run");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "cordon run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        v.push(secs);
    }
    v
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let jobs = env_usize("LOAD_JOBS", 200);
    let clients = env_usize("LOAD_CLIENTS", 20).max(1);
    let concurrency = env_usize("LOAD_CONCURRENCY", 2);
    let base_n = env_usize("LOAD_BASELINE", 6);

    let tmp = tempfile::tempdir().expect("tmp");
    let job_dir = tmp.path().join("job");
    std::fs::create_dir_all(job_dir.join("repo")).expect("repo");
    std::fs::write(job_dir.join("repo/hello.txt"), load_support::HELLO).expect("file");
    std::fs::write(job_dir.join("job.yaml"), spec()).expect("spec");

    eprintln!(
        "load: baseline, {} x `cordon run` before the load",
        base_n / 2
    );
    let mut base = baseline(&job_dir, base_n / 2);

    let data = tmp.path().join("data");
    let mut server = Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "/dev/null"])
        .env("CORDON_DATA_DIR", &data)
        .env("CORDON_CONCURRENCY", concurrency.to_string())
        .env("CORDON_QUEUE_CAPACITY", (jobs + 100).to_string())
        .env("CORDON_LOG", "cordon=warn")
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .env_remove("CORDON_SERVER_NAMES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cordon serve");
    let pid = server.id();
    let stderr = server.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("serving on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if !line.contains("serving on") {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server started");
    let url = format!("http://{addr}");
    // No token configured: the service generated one in its data directory.
    let token = std::fs::read_to_string(data.join("token")).expect("the generated token");
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim())
            .parse()
            .expect("a header value"),
    );
    let rss_idle_kib = proc_status_kib(pid, "VmRSS:");
    let cpu_before = proc_cpu_secs(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let upload = Arc::new(tgz());
    let spec_text = Arc::new(spec());
    eprintln!("load: {jobs} jobs from {clients} clients at once, concurrency {concurrency}");
    let started = Instant::now();
    let results: Vec<Result<(f64, String, Value), String>> = rt.block_on(async {
        let pool: Vec<reqwest::Client> = (0..clients)
            .map(|_| {
                reqwest::Client::builder()
                    .default_headers(auth.clone())
                    .build()
                    .expect("an HTTP client")
            })
            .collect();
        let mut tasks = Vec::new();
        for i in 0..jobs {
            let http = pool[i % clients].clone();
            let url = url.clone();
            let upload = upload.clone();
            let spec_text = spec_text.clone();
            tasks.push(tokio::spawn(async move {
                let urls = [url];
                let route = Route {
                    urls: &urls,
                    submit_to: 0,
                    stream_from: 0,
                    idempotency_key: None,
                    deadline: Duration::ZERO,
                };
                let done =
                    load_support::submit_and_stream(&http, route, &spec_text, &upload).await?;
                Ok((done.e2e, done.id, done.status))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    });
    let wall = started.elapsed().as_secs_f64();
    let rss_peak_kib = proc_status_kib(pid, "VmHWM:");
    let cpu_server = proc_cpu_secs(pid) - cpu_before;

    // Stop the server (SIGTERM; nothing is running) and check what is left.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();

    eprintln!(
        "load: baseline, {} x `cordon run` after the load",
        base_n - base_n / 2
    );
    base.extend(baseline(&job_dir, base_n - base_n / 2));

    let mut e2e = Vec::new();
    let mut wait = Vec::new();
    let mut run = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for r in &results {
        match r {
            Ok((t, id, st)) => {
                e2e.push(*t);
                ids.push(id.clone());
                let sub = st["submitted_ms"].as_f64().unwrap_or(0.0);
                let sta = st["started_ms"].as_f64().unwrap_or(sub);
                let fin = st["finished_ms"].as_f64().unwrap_or(sta);
                wait.push((sta - sub) / 1000.0);
                run.push((fin - sta) / 1000.0);
                *outcomes
                    .entry(st["outcome"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            Err(e) => errors.push(e.clone()),
        }
    }
    let lost = jobs - ids.len();
    let leftover: usize = {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                "label=org.cordon.managed=true",
                "--format",
                "{{.Label \"org.cordon.job\"}}",
            ])
            .output()
            .expect("docker ps");
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        listed
            .lines()
            .filter(|l| ids.iter().any(|i| i == l))
            .count()
    };
    for v in [&mut e2e, &mut wait, &mut run, &mut base] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let throughput = ids.len() as f64 / wall * 60.0;
    // What one job costs the service: wall time of the whole load divided by the jobs it ran
    // through each of its `concurrency` slots.
    let slot_secs_per_job = wall * concurrency as f64 / ids.len().max(1) as f64;
    let report = json!({
        "jobs": jobs,
        "clients": clients,
        "concurrency": concurrency,
        "wall_secs": wall,
        "throughput_jobs_per_min": throughput,
        "queue_wait_secs": { "p50": pct(&wait, 0.5), "p95": pct(&wait, 0.95), "max": pct(&wait, 1.0) },
        "end_to_end_secs": { "p50": pct(&e2e, 0.5), "p95": pct(&e2e, 0.95), "max": pct(&e2e, 1.0) },
        "job_run_secs": { "p50": pct(&run, 0.5), "p95": pct(&run, 0.95), "mean": mean(&run) },
        "server_rss_kib": { "idle": rss_idle_kib, "peak": rss_peak_kib },
        "server_cpu_secs": cpu_server,
        "server_cpu_ms_per_job": cpu_server * 1000.0 / ids.len().max(1) as f64,
        "outcomes": outcomes,
        "lost_jobs": lost,
        "leftover_containers": leftover,
        "errors": errors.iter().take(5).collect::<Vec<_>>(),
        "cordon_run_secs": { "n": base.len(), "p50": pct(&base, 0.5), "mean": mean(&base) },
        "ratio_service_slot_time_per_job_vs_cordon_run": slot_secs_per_job / pct(&base, 0.5),
        "ratio_service_job_run_vs_cordon_run": pct(&run, 0.5) / pct(&base, 0.5),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/server-load.json");
    let _ = std::fs::write(
        &target,
        serde_json::to_string_pretty(&report).expect("json"),
    );
    println!(
        "\n{jobs} jobs, {clients} clients, concurrency {concurrency}: {throughput:.1} jobs/min over {wall:.1}s\n\
         queue wait p50 {:.2}s p95 {:.2}s; end-to-end p50 {:.2}s p95 {:.2}s; job run p50 {:.2}s\n\
         server peak RSS {:.1} MiB (idle {:.1} MiB), server CPU {:.1} ms/job\n\
         lost jobs {lost}, leftover containers {leftover}\n\
         cordon run of the same job: p50 {:.2}s (n={}); service slot time per job {slot_secs_per_job:.2}s = {:.2}x; service job run p50 / cordon run p50 = {:.2}x",
        pct(&wait, 0.5),
        pct(&wait, 0.95),
        pct(&e2e, 0.5),
        pct(&e2e, 0.95),
        pct(&run, 0.5),
        rss_peak_kib as f64 / 1024.0,
        rss_idle_kib as f64 / 1024.0,
        cpu_server * 1000.0 / ids.len().max(1) as f64,
        pct(&base, 0.5),
        base.len(),
        slot_secs_per_job / pct(&base, 0.5),
        pct(&run, 0.5) / pct(&base, 0.5),
    );
    if lost > 0 || leftover > 0 {
        eprintln!("load: FAILED: {lost} lost, {leftover} leftover; errors: {errors:?}");
        std::process::exit(1);
    }
}
