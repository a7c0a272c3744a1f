//! Per-job overhead: cordon's whole job for a trivial command vs `docker run --rm` of the
//! same image and command, interleaved in one run.
//!
//!     cargo bench --bench job_overhead            # 20 rounds
//!     BENCH_ROUNDS=50 cargo bench --bench job_overhead
//!
//! Four things are timed each round, in turn:
//! - `docker run --rm IMAGE true` (the docker CLI: create, attach, start, wait, remove);
//! - a cordon job through the library (`Runner`), no CLI process in between: resolve,
//!   scratch, create with the strict profile (seccomp, limits, verified), attach, start, run
//!   `true`, wait, inspect, remove;
//! - the same job with a warm pool: a sandbox made ahead of time (untimed, as between the
//!   iterations of a refine loop) takes creation off the job's path;
//! - the same job through the `cordon run --json` binary, for reference;
//! - where the engine has runsc registered as cordon needs it (see `.ci/run`), the same under
//!   gVisor: `docker run --rm --runtime=runsc --network none IMAGE true`, and the cordon job
//!   under the `gvisor` profile, cold and with a warm pool.
//!
//! Prints the median and p90 of each, the ratio against `docker run --rm`, and for the gVisor
//! paths the ratio against `docker run --rm --runtime=runsc` too.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::pool::{PoolConfig, WarmPool};
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
    let gvisor_spec = dir.path().join("trivial-gvisor.yaml");
    std::fs::write(
        &gvisor_spec,
        format!("image: {IMAGE}\nprofile: gvisor\nsteps: [{{name: trivial, run: \"true\"}}]\n"),
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

    // The gVisor paths run only where the engine can run the gvisor profile.
    let gvisor = {
        let job = cordon::spec::load(&gvisor_spec, &cordon::spec::OperatorPolicy::for_cli())
            .expect("valid spec");
        match rt.block_on(runner.preflight(&job)) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("skipping the gVisor paths: {e}");
                false
            }
        }
    };

    let docker_run_with = |args: &'static [&'static str]| {
        move || {
            let t = Instant::now();
            let st = Command::new("docker")
                .args(args)
                .status()
                .expect("docker CLI");
            assert!(st.success(), "docker {args:?} failed");
            t.elapsed()
        }
    };
    let docker_run = docker_run_with(&["run", "--rm", IMAGE, "true"]);
    // The same with gVisor; no network, as cordon's sandbox (and as runsc here needs).
    let docker_run_runsc = docker_run_with(&[
        "run",
        "--rm",
        "--runtime=runsc",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    let cordon_lib_of = |spec: &Path| {
        let job =
            cordon::spec::load(spec, &cordon::spec::OperatorPolicy::for_cli()).expect("valid spec");
        let t = Instant::now();
        let result = rt.block_on(async {
            let pre = runner.preflight(&job).await.expect("preflight");
            runner.start(job, pre, dir.path().join("out")).wait().await
        });
        let e = t.elapsed();
        assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
        e
    };
    let cordon_lib = || cordon_lib_of(&spec);
    let cordon_lib_gvisor = || cordon_lib_of(&gvisor_spec);
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

    // The same job with a warm pool: before each timed job (untimed) the pool has a sandbox
    // ready, as it has in a refine loop between iterations or a service between jobs.
    let pool = rt.block_on(async {
        WarmPool::new(
            runner.backend().clone(),
            PoolConfig {
                per_key: 1,
                ..PoolConfig::default()
            },
        )
    });
    let pooled = runner.clone().with_pool(pool.clone());
    // Untimed, before each measurement: the pool full again (it replaces a taken sandbox
    // after the job), so its refill never runs into another path's measurement.
    let settle_spec = |spec: &Path| {
        let job =
            cordon::spec::load(spec, &cordon::spec::OperatorPolicy::for_cli()).expect("valid spec");
        rt.block_on(async {
            let image_id = pooled
                .preflight(&job)
                .await
                .expect("preflight")
                .image_id
                .expect("image present");
            pool.prime(&job, &image_id);
            assert!(
                pool.wait_ready(&job, &image_id, Duration::from_secs(60))
                    .await,
                "the pool did not fill"
            );
        })
    };
    let settle = || {
        settle_spec(&spec);
        if gvisor {
            settle_spec(&gvisor_spec);
        }
    };
    let cordon_warm_of = |spec: &Path| {
        settle();
        let job =
            cordon::spec::load(spec, &cordon::spec::OperatorPolicy::for_cli()).expect("valid spec");
        let result = rt.block_on(async {
            // Timed like the other paths: preflight, then the job.
            let t = Instant::now();
            let pre = pooled.preflight(&job).await.expect("preflight");
            let result = pooled.start(job, pre, dir.path().join("out")).wait().await;
            (t.elapsed(), result)
        });
        assert_eq!(result.1.outcome, Outcome::Passed, "{:?}", result.1);
        assert!(result.1.warm, "the job did not get the warm sandbox");
        result.0
    };
    let cordon_warm = || cordon_warm_of(&spec);
    let cordon_warm_gvisor = || cordon_warm_of(&gvisor_spec);

    // (name, what it times, the index of the `docker run` it is compared with too)
    type Timed<'a> = (&'a str, &'a dyn Fn() -> Duration, usize);
    let mut paths: Vec<Timed> = vec![
        ("docker run --rm (CLI)", &docker_run, 0),
        ("cordon job (library, strict profile)", &cordon_lib, 0),
        ("cordon job, warm pool", &cordon_warm, 0),
        ("cordon run --json (CLI process)", &cordon_cli, 0),
    ];
    if gvisor {
        let base = paths.len();
        paths.push(("docker run --rm --runtime=runsc", &docker_run_runsc, base));
        paths.push((
            "cordon job (library, gvisor profile)",
            &cordon_lib_gvisor,
            base,
        ));
        paths.push(("cordon job, gvisor, warm pool", &cordon_warm_gvisor, base));
    }
    // Warm up each path once (page cache, engine, image layers).
    for (_, f, _) in &paths {
        f();
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    for i in 0..rounds {
        // Rotate the order so none always runs on a cooler or warmer engine.
        for k in 0..paths.len() {
            let p = (i + k) % paths.len();
            settle();
            times[p].push((paths[p].1)());
        }
    }
    rt.block_on(pool.drain());
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
    };
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    let medians: Vec<Duration> = times.iter().map(|t| stats(&mut t.clone()).0).collect();
    println!("per-job time for `true` in {IMAGE}, {rounds} rounds, interleaved");
    for (p, (name, _, base)) in paths.iter().enumerate() {
        let (m, p90) = stats(&mut times[p]);
        let own = if *base > 0 && p != *base {
            format!(
                "   ratio to {:?} {:.2}",
                paths[*base].0,
                ms(m) / ms(medians[*base])
            )
        } else {
            String::new()
        };
        println!(
            "  {:<38} median {:>7.1} ms   p90 {:>7.1} ms   ratio {:.2}{own}",
            name,
            ms(m),
            ms(p90),
            ms(m) / ms(medians[0])
        );
    }
}
