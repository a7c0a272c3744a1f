//! Per-job overhead: cordon's whole job for a trivial command vs `docker run --rm` of the
//! same image and command, interleaved in one run.
//!
//!     cargo bench --bench job_overhead            # 20 rounds
//!     BENCH_ROUNDS=50 cargo bench --bench job_overhead
//!
//! Three things are timed each round, in turn:
//! - `docker run --rm IMAGE true` (the docker CLI: create, attach, start, wait, remove);
//! - a cordon job through the library (`Runner`), no CLI process in between: resolve,
//!   scratch, create with the strict profile (seccomp, limits, verified), attach, start, run
//!   `true`, wait, inspect, remove;
//! - the same job through the `cordon run --json` binary, for reference.
//!
//! Prints the median and p90 of each and the ratios against `docker run --rm`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::report::Outcome;
use cordon::runner::{Runner, RunnerConfig};
use cordon::sandbox::docker::DockerBackend;

const IMAGE: &str = "cordon/python:3.11";

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("trivial.yaml");
    std::fs::write(
        &spec,
        format!("image: {IMAGE}\nsteps: [{{name: trivial, run: \"true\"}}]\n"),
    )
    .expect("write spec");
    let cordon_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/cordon");
    let cordon_bin = if cordon_bin.exists() {
        cordon_bin
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/cordon")
    };

    let backend = rt
        .block_on(DockerBackend::connect())
        .expect("a Docker engine (is dockerd running?)");
    let runner = Runner::new(Arc::new(backend), RunnerConfig::default());
    if rt
        .block_on(runner.backend().local_image(IMAGE))
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!("{IMAGE} is missing: run `cordon image build python` first");
        std::process::exit(2);
    }

    let docker_run = || {
        let t = Instant::now();
        let st = Command::new("docker")
            .args(["run", "--rm", IMAGE, "true"])
            .status()
            .expect("docker CLI");
        assert!(st.success(), "docker run failed");
        t.elapsed()
    };
    let cordon_lib = || {
        let job = cordon::spec::load(&spec).expect("valid spec");
        let t = Instant::now();
        let result = rt.block_on(async {
            let pre = runner.preflight(&job).await.expect("preflight");
            runner.start(job, pre, dir.path().join("out")).wait().await
        });
        let e = t.elapsed();
        assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
        e
    };
    let cordon_cli = || {
        let t = Instant::now();
        let out = Command::new(&cordon_bin)
            .arg("run")
            .arg(&spec)
            .arg("--json")
            .output()
            .expect("cordon binary (cargo build first)");
        assert!(
            out.status.success(),
            "cordon run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };

    // Warm up each path once (page cache, engine, image layers).
    docker_run();
    cordon_lib();
    cordon_cli();

    let (mut d, mut l, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        // Rotate the order so none always runs on a cooler or warmer engine.
        match i % 3 {
            0 => {
                d.push(docker_run());
                l.push(cordon_lib());
                c.push(cordon_cli());
            }
            1 => {
                l.push(cordon_lib());
                c.push(cordon_cli());
                d.push(docker_run());
            }
            _ => {
                c.push(cordon_cli());
                d.push(docker_run());
                l.push(cordon_lib());
            }
        }
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
    };
    let (dm, dp) = stats(&mut d);
    let (lm, lp) = stats(&mut l);
    let (cm, cp) = stats(&mut c);
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    println!("per-job time for `true` in {IMAGE}, {rounds} rounds, interleaved");
    println!(
        "  {:<38} median {:>7.1} ms   p90 {:>7.1} ms",
        "docker run --rm (CLI)",
        ms(dm),
        ms(dp)
    );
    println!(
        "  {:<38} median {:>7.1} ms   p90 {:>7.1} ms   ratio {:.2}",
        "cordon job (library, strict profile)",
        ms(lm),
        ms(lp),
        ms(lm) / ms(dm)
    );
    println!(
        "  {:<38} median {:>7.1} ms   p90 {:>7.1} ms   ratio {:.2}",
        "cordon run --json (CLI process)",
        ms(cm),
        ms(cp),
        ms(cm) / ms(dm)
    );
}
