//! Seeing and steering jobs on a cordon service: `cordon jobs` (the listing), `cordon status
//! ID`, `cordon logs ID [-f]` and `cordon cancel ID`. Each takes the service options of
//! `cordon submit` ([`ServiceArgs`]) and exits as it does: 2 for invalid input, a refused
//! token or a job that does not exist (for this token), 5 when the service cannot be reached
//! or fails.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;

use super::client::{Failure, ServiceArgs, ServiceClient, api_error, check_job_id, read_json};
use super::printer::Printer;
use crate::event::JobEvent;

#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Only jobs in these states: queued, running, finished (repeat it or separate with
    /// commas).
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    state: Vec<String>,
    /// Only finished jobs with these outcomes: passed, failed, timed_out, oom_killed,
    /// output_limit_exceeded, disk_limit_exceeded, cancelled, sandbox_error (repeat it or
    /// separate with commas).
    #[arg(long, value_name = "OUTCOME", value_delimiter = ',')]
    outcome: Vec<String>,
    /// Only jobs in this image, named exactly as their status shows it.
    #[arg(long, value_name = "IMAGE", value_delimiter = ',')]
    image: Vec<String>,
    /// Only jobs submitted at or after this time: RFC 3339 (2024-05-01T12:00:00Z) or Unix
    /// milliseconds.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Jobs per page, newest first (1 to 500; the service's default is 50).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Every matching job: follow the service's cursors page after page.
    #[arg(long)]
    all: bool,
    /// Start after this place: the `next_cursor` of a previous `--json` page.
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    cursor: Option<String>,
    /// Print one JSON object, `{"jobs": [status, …], "next_cursor": …}` (with --all: every job
    /// and a null cursor), instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The job's id (as `cordon submit --detach` prints it).
    id: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// Print the service's status object (what `GET /v1/jobs/ID` returns) instead.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The job's id.
    id: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// Follow: print output as the job writes it, until the job ends; then exit with the
    /// status `cordon submit` would have (0 passed, 1 failed, …).
    #[arg(short, long)]
    follow: bool,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The job's id.
    id: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// Print the job's status after the cancel (a JSON object) instead of a line.
    #[arg(long)]
    json: bool,
}

pub async fn jobs(args: JobsArgs) -> u8 {
    finish(jobs_inner(&args).await, args.json)
}

pub async fn status(args: StatusArgs) -> u8 {
    finish(status_inner(&args).await, args.json)
}

pub async fn logs(args: LogsArgs) -> u8 {
    finish(logs_inner(&args).await, false)
}

pub async fn cancel(args: CancelArgs) -> u8 {
    finish(cancel_inner(&args).await, args.json)
}

fn finish(r: Result<u8, Failure>, json: bool) -> u8 {
    let _ = std::io::stdout().flush();
    r.unwrap_or_else(|f| f.report(json))
}

async fn jobs_inner(args: &JobsArgs) -> Result<u8, Failure> {
    let client = args.service.connect()?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for s in &args.state {
        query.push(("state", s.clone()));
    }
    for o in &args.outcome {
        query.push(("outcome", o.clone()));
    }
    for i in &args.image {
        query.push(("image", i.clone()));
    }
    if let Some(s) = &args.since {
        query.push(("since", s.clone()));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    let mut cursor = args.cursor.clone();
    let mut jobs: Vec<Value> = Vec::new();
    let next = loop {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let resp = client
            .send(client.req(reqwest::Method::GET, "/v1/jobs").query(&q))
            .await?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        let mut page = read_json(resp).await?;
        if let Some(list) = page["jobs"].as_array_mut() {
            jobs.append(list);
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || !args.all {
            break cursor;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "jobs": jobs, "next_cursor": next })
        );
        return Ok(0);
    }
    if jobs.is_empty() {
        eprintln!("cordon: no jobs");
    } else {
        print!(
            "{}",
            table(&jobs, now_ms(), super::term::get().colour_stdout)
        );
    }
    if let Some(c) = next {
        eprintln!(
            "cordon: more jobs than shown: --all lists every one (or --cursor {c} the next page)"
        );
    }
    Ok(0)
}

/// The listing as a table: id, state, outcome, image, submitted (UTC), duration; with
/// `colour`, each outcome in its colour.
fn table(jobs: &[Value], now: i64, colour: bool) -> String {
    let header = ["ID", "STATE", "OUTCOME", "IMAGE", "SUBMITTED", "DURATION"].map(String::from);
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|j| {
            [
                text(&j["id"]),
                text(&j["state"]),
                text(&j["outcome"]),
                text(&j["image"]),
                j["submitted_ms"].as_i64().map(time).unwrap_or_default(),
                duration(j, now),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (n, r) in std::iter::once(&header).chain(&rows).enumerate() {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else if i == 2 && n > 0 && colour {
                // Padded first, so the escapes do not count towards the width.
                let padded = format!("{c:<w$}");
                match crate::report::Outcome::parse(c).map(super::printer::tone) {
                    Some(t) => line.push_str(&super::term::paint(true, t, &padded)),
                    None => line.push_str(&padded),
                }
                line.push_str("  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A string field, or `-`.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix ms as UTC, to the second: `2024-05-01T12:00:00Z`.
fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long the job ran: its result's duration once finished, the time since it started
/// while it runs (marked `+`), `-` if it never started.
fn duration(j: &Value, now: i64) -> String {
    if let Some(ms) = j["result"]["duration_ms"].as_u64()
        && j["started_ms"].is_i64()
    {
        return span(ms);
    }
    match (j["started_ms"].as_i64(), j["finished_ms"].as_i64()) {
        (Some(s), Some(f)) => span((f - s).max(0) as u64),
        (Some(s), None) => format!("{}+", span((now - s).max(0) as u64)),
        _ => "-".into(),
    }
}

/// `0.52s`, `2m03s`, `1h02m`.
fn span(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

async fn get_status(client: &ServiceClient, id: &str) -> Result<Value, Failure> {
    check_job_id(id)?;
    client
        .job_json(
            client.req(reqwest::Method::GET, &format!("/v1/jobs/{id}")),
            id,
        )
        .await
}

async fn status_inner(args: &StatusArgs) -> Result<u8, Failure> {
    let client = args.service.connect()?;
    let st = get_status(&client, &args.id).await?;
    if args.json {
        println!("{st}");
    } else {
        print!("{}", describe(&st, now_ms()));
    }
    Ok(0)
}

/// A job's status for a person: one `key: value` line each.
fn describe(st: &Value, now: i64) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
    add("id", text(&st["id"]));
    let mut state = text(&st["state"]);
    if let Some(p) = st["queue_position"].as_u64() {
        let _ = write!(state, " ({p} ahead)");
    }
    add("state", state);
    let result = &st["result"];
    if let Some(o) = st["outcome"].as_str() {
        let code = result["exit_code"]
            .as_i64()
            .map(|c| format!(" (exit {c})"))
            .unwrap_or_default();
        add("outcome", format!("{o}{code}"));
    }
    add("image", text(&st["image"]));
    let by = st["submitted_by"]
        .as_str()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    if let Some(ms) = st["submitted_ms"].as_i64() {
        add("submitted", format!("{}{by}", time(ms)));
    }
    if let Some(ms) = st["started_ms"].as_i64() {
        add("started", time(ms));
    }
    if let Some(ms) = st["finished_ms"].as_i64() {
        add("finished", time(ms));
    }
    if st["started_ms"].is_i64() {
        add("duration", duration(st, now));
    }
    add("events", st["events"].as_u64().unwrap_or(0).to_string());
    if let Some(e) = result["error"].as_str() {
        add("error", e.to_string());
    }
    for s in result["steps"].as_array().into_iter().flatten() {
        let code = s["exit_code"]
            .as_i64()
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        add(
            &format!("step {}", text(&s["name"])),
            format!(
                "{}{code}, {}",
                text(&s["outcome"]),
                span(s["duration_ms"].as_u64().unwrap_or(0))
            ),
        );
    }
    let t = &result["tests"];
    if t.is_object() {
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        add(
            "tests",
            format!(
                "{} passed, {} failed, {} skipped, {} errors ({} total)",
                n("passed"),
                n("failed"),
                n("skipped"),
                n("errors"),
                n("total")
            ),
        );
    }
    if let Some(a) = result["artifacts"].as_array()
        && !a.is_empty()
    {
        add("artifacts", format!("{} (on the service)", a.len()));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in lines {
        let _ = writeln!(out, "{:width$} {v}", format!("{k}:"));
    }
    out
}

async fn logs_inner(args: &LogsArgs) -> Result<u8, Failure> {
    let client = args.service.connect()?;
    let st = get_status(&client, &args.id).await?;
    // Without --follow: the events that exist now, and no more.
    let until = (!args.follow).then(|| st["events"].as_u64().unwrap_or(0));
    if until == Some(0) {
        return Ok(0);
    }
    let mut printer = Printer::for_logs();
    let mut events = client.events(&args.id, 0);
    loop {
        let (seq, ev) = events.next().await?;
        match &ev {
            JobEvent::Output { .. } | JobEvent::OutputTruncated { .. } => printer.event(&ev),
            JobEvent::Finished { result } => {
                if !args.follow {
                    return Ok(0);
                }
                let _ = std::io::stdout().flush();
                eprintln!(
                    "cordon: job {} finished: {}",
                    result.job_id,
                    result.outcome.as_str()
                );
                return Ok(result.outcome.exit_status());
            }
            _ => {}
        }
        if until.is_some_and(|n| seq + 1 >= n) {
            return Ok(0);
        }
    }
}

async fn cancel_inner(args: &CancelArgs) -> Result<u8, Failure> {
    let client = args.service.connect()?;
    let id = &args.id;
    let before = get_status(&client, id).await?;
    // A finished job is left alone: the service would change nothing.
    let already = before["state"] == "finished";
    let st = if already {
        before
    } else {
        client
            .job_json(
                client.req(reqwest::Method::DELETE, &format!("/v1/jobs/{id}")),
                id,
            )
            .await?
    };
    if args.json {
        println!("{st}");
    }
    match (st["state"].as_str(), st["outcome"].as_str()) {
        (Some("finished"), Some("cancelled")) if !already => {
            if !args.json {
                println!("{id} cancelled");
            }
            Ok(0)
        }
        (Some("finished"), outcome) => {
            if !args.json {
                println!(
                    "{id} had already finished ({}): nothing to cancel",
                    outcome.unwrap_or("-")
                );
            }
            Ok(0)
        }
        (state, _) => Err(super::client::infra(format!(
            "the service was asked to cancel {id} but has not stopped it yet (state: {}); `cordon status {id}` shows when it has",
            state.unwrap_or("unknown")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_shows_durations() {
        let jobs = [
            serde_json::json!({
                "id": "job-aaaaaaaaaaaa", "state": "finished", "outcome": "passed",
                "image": "cordon/python:3.11", "submitted_ms": 1_714_564_800_000_i64,
                "started_ms": 1_714_564_801_000_i64, "finished_ms": 1_714_564_802_000_i64,
                "result": { "duration_ms": 520 }
            }),
            serde_json::json!({
                "id": "job-bbbbbbbbbbbb", "state": "running", "outcome": null,
                "image": "x", "submitted_ms": 1_714_564_800_000_i64,
                "started_ms": 1_714_564_800_000_i64, "finished_ms": null
            }),
            serde_json::json!({
                "id": "job-cccccccccccc", "state": "queued", "outcome": null,
                "image": "x", "submitted_ms": 1_714_564_800_000_i64
            }),
        ];
        let t = table(&jobs, 1_714_564_800_000 + 125_000, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            [
                "ID                STATE     OUTCOME  IMAGE               SUBMITTED             DURATION",
                "job-aaaaaaaaaaaa  finished  passed   cordon/python:3.11  2024-05-01T12:00:00Z  0.52s",
                "job-bbbbbbbbbbbb  running   -        x                   2024-05-01T12:00:00Z  2m05s+",
                "job-cccccccccccc  queued    -        x                   2024-05-01T12:00:00Z  -",
            ]
        );
        assert_eq!(span(3_725_000), "1h02m");
        let coloured = table(&jobs, 1_714_564_800_000 + 125_000, true);
        assert!(
            coloured.contains("\x1b[1m\x1b[32mpassed \x1b[0m  cordon/python:3.11"),
            "{coloured}"
        );
        assert_eq!(
            coloured.matches('\x1b').count(),
            3,
            "only the outcome: {coloured}"
        );
    }

    #[test]
    fn a_status_reads_as_lines() {
        let st = serde_json::json!({
            "id": "job-aaaaaaaaaaaa", "state": "finished", "outcome": "failed",
            "image": "cordon/python:3.11", "submitted_ms": 1_714_564_800_000_i64,
            "started_ms": 1_714_564_801_000_i64, "finished_ms": 1_714_564_802_000_i64,
            "events": 9, "submitted_by": "ci",
            "result": { "duration_ms": 1000, "exit_code": 7,
                        "steps": [{ "name": "test", "outcome": "failed", "exit_code": 7, "duration_ms": 900 }] }
        });
        let d = describe(&st, 0);
        assert!(d.contains("outcome:   failed (exit 7)\n"), "{d}");
        assert!(d.contains("submitted: 2024-05-01T12:00:00Z by ci\n"), "{d}");
        assert!(d.contains("step test: failed, exit 7, 0.90s\n"), "{d}");
    }
}
