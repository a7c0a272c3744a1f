//! What the service load runs share (`server_load`, `controllers_load`): the job, its upload,
//! percentiles, a process's memory and CPU from /proc, and a client that submits one job and
//! streams its events to its result.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

pub const IMAGE: &str = "cordon/python:3.11";
pub const CMD: &str = "cat hello.txt && echo done";
pub const HELLO: &str = "hello from the load run\n";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The job: one short step over a one-file uploaded workspace, under the strict profile.
pub fn spec() -> String {
    format!(
        "image: {IMAGE}\nworkspace: {{ source: ./repo }}\nsteps:\n  - name: main\n    run: {CMD:?}\n    timeout: 60s\nlimits: {{ cpus: 0.5, memory: 256MiB }}\n"
    )
}

/// The workspace upload: `hello.txt`, tar.gz.
pub fn tgz() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let content = HELLO.as_bytes();
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello.txt", content).expect("append");
    b.into_inner().expect("tar").finish().expect("gz")
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn sort(v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Fields of /proc/PID/stat after the command's `)`: state is 0, utime 11, stime 12, cutime
/// 13, cstime 14; in clock ticks (100 a second).
fn proc_stat_ticks(pid: u32, fields: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    fields
        .iter()
        .map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum()
}

/// utime + stime of a process, in seconds.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    proc_stat_ticks(pid, &[11, 12]) / 100.0
}

/// utime + stime of a process and of its children that ended (cutime + cstime), in seconds.
pub fn proc_cpu_with_reaped_secs(pid: u32) -> f64 {
    proc_stat_ticks(pid, &[11, 12, 13, 14]) / 100.0
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// One job, end to end, as a client saw it.
pub struct Done {
    pub id: String,
    /// From the first submission attempt to the `finished` event.
    pub e2e: f64,
    /// `GET /v1/jobs/{id}` after the result.
    pub status: Value,
    /// Submission attempts and event-stream (re)connections that failed and were retried.
    pub retries: u32,
}

/// Where a client sends a job and reads it from.
pub struct Route<'a> {
    /// Controllers' base URLs.
    pub urls: &'a [String],
    /// Index of the controller to submit to, and of the one to stream from; on an error the
    /// client moves on to the next one.
    pub submit_to: usize,
    pub stream_from: usize,
    /// With `Some`: an `Idempotency-Key`, and connection errors, 5xx and 429 are retried (on
    /// the next controller) until the deadline. With `None`, the first error ends the job.
    pub idempotency_key: Option<String>,
    pub deadline: Duration,
}

/// Submits the job (`spec` plus the `upload`) and streams its events to `finished`, checking
/// that they arrive in order with no gap, resuming from the next one when a stream drops.
pub async fn submit_and_stream(
    http: &reqwest::Client,
    route: Route<'_>,
    spec: &str,
    upload: &[u8],
) -> Result<Done, String> {
    let t0 = Instant::now();
    let retrying = route.idempotency_key.is_some();
    let n = route.urls.len().max(1);
    let mut retries = 0u32;
    let mut at = route.submit_to % n;
    let give_up = |what: String, retries: &mut u32| -> Result<(), String> {
        if !retrying || t0.elapsed() > route.deadline {
            return Err(what);
        }
        *retries += 1;
        Ok(())
    };
    let id = loop {
        let url = &route.urls[at];
        let form = reqwest::multipart::Form::new()
            .text("spec", spec.to_string())
            .part(
                "workspace",
                reqwest::multipart::Part::bytes(upload.to_vec()),
            );
        let mut req = http.post(format!("{url}/v1/jobs")).multipart(form);
        if let Some(key) = &route.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let failed = match req.send().await {
            Ok(r) if r.status() == 202 => {
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                break v["id"].as_str().ok_or("no id")?.to_string();
            }
            Ok(r) if r.status().is_server_error() || r.status() == 429 => {
                format!("submit to {url}: {}", r.status())
            }
            Ok(r) => {
                return Err(format!(
                    "submit to {url}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ));
            }
            Err(e) => format!("submit to {url}: {e}"),
        };
        give_up(failed, &mut retries)?;
        at = (at + 1) % n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut at = route.stream_from % n;
    let mut next = 0u64;
    loop {
        let url = &route.urls[at];
        let resp = match http
            .get(format!("{url}/v1/jobs/{id}/events?from={next}"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                give_up(
                    format!("events of {id} from {url}: {}", r.status()),
                    &mut retries,
                )?;
                at = (at + 1) % n;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                give_up(format!("events of {id} from {url}: {e}"), &mut retries)?;
                at = (at + 1) % n;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut dropped = false;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                dropped = true;
                break;
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let ev: Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
                let seq = ev["seq"].as_u64().unwrap_or(u64::MAX);
                if seq != next {
                    return Err(format!("{id}: event {seq} where {next} was due"));
                }
                next += 1;
                if ev["type"] == "finished" {
                    let e2e = t0.elapsed().as_secs_f64();
                    let status = job_status(http, route.urls, at, &id, retrying).await?;
                    return Ok(Done {
                        id,
                        e2e,
                        status,
                        retries,
                    });
                }
            }
        }
        if dropped && retrying {
            // The controller went away mid-stream: resume from the next event elsewhere.
            retries += 1;
            at = (at + 1) % n;
        }
    }
}

async fn job_status(
    http: &reqwest::Client,
    urls: &[String],
    mut at: usize,
    id: &str,
    retrying: bool,
) -> Result<Value, String> {
    let tries = if retrying { 50 } else { 1 };
    for _ in 0..tries {
        let url = &urls[at];
        match http.get(format!("{url}/v1/jobs/{id}")).send().await {
            Ok(r) if r.status().is_success() => return r.json().await.map_err(|e| e.to_string()),
            Ok(r) if !retrying => return Err(format!("status of {id}: {}", r.status())),
            Err(e) if !retrying => return Err(e.to_string()),
            _ => {}
        }
        at = (at + 1) % urls.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("status of {id}: no controller answered"))
}
