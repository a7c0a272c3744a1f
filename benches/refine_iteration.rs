//! A refine-loop iteration on a project with real PyPI dependencies (attrs, python-dateutil,
//! six, tabulate; `benches/refine-project`): the job the test generator runs each time a
//! generated test changes, driven through the library as `cordon testgen` drives it.
//!
//!     cargo bench --bench refine_iteration             # 10 rounds, 2 of them reinstalling
//!     BENCH_ROUNDS=20 BENCH_REINSTALL=3 cargo bench --bench refine_iteration
//!
//! Needs PyPI (the environment is built once, through cordon's allowlisting proxy, with the
//! host's CA bundle). Timed, interleaved, in one run:
//! - exec-only: the same pytest command alone in an already-running container of the cached
//!   environment image (`docker exec`), the floor an iteration is measured against;
//! - cordon, cached environment, warm pool: a sandbox of the environment image ready (made
//!   untimed before the job, as while the model writes the next test), then workspace load,
//!   pytest, JUnit collection, removal;
//! - the same with a pool that makes the replacement as soon as a sandbox is taken
//!   (`Refill::OnTake`), so it runs during the job, instead of after it (the default);
//! - the same with a pool that does not prewarm (`Prewarm::Off`; `Auto`, the default,
//!   prewarms where each container's caches start cold, as on fuse-overlayfs);
//! - cordon, cached environment, no pool: the same with the container created in the job;
//! - cordon reinstalling: the dependency key changes each time, so `pip install` runs (only
//!   in the first BENCH_REINSTALL rounds: each takes many seconds);
//! - when the engine has gVisor's `runsc` registered (unless BENCH_RUNSC=0): the floor again
//!   in a runsc container, and cordon under the `gvisor` profile with a warm pool and
//!   without, reported as ratios to both floors and to the runc warm path.
//!
//! Before each measurement both pools are full again (untimed), so one variant's refill never
//! runs into another's measurement. Prints medians, the ratio of each cordon path to
//! exec-only (target for the warm one: ≤ 1.2) and the median phases of the warm job.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::pool::{PoolConfig, Prewarm, Refill, WarmPool};
use cordon::report::{JobResult, Outcome};
use cordon::runner::{Runner, RunnerConfig};
use cordon::sandbox::Backend;
use cordon::sandbox::docker::DockerBackend;

const TEST_CMD: &str = "python -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml tests";
const FLOOR: &str = "cordon-bench-refine-floor";

fn spec(requirements: &str, profile: &str) -> String {
    format!(
        r#"profile: {profile}
workspace: {{ source: ./repo }}
prepare:
  run: pip install --no-input --disable-pip-version-check -r {requirements}
  cache_key_files: [{requirements}]
  allow_hosts: [pypi.org, files.pythonhosted.org]
  ca_bundle: host
steps:
  - {{ name: test, run: "{TEST_CMD}", timeout: 120s }}
artifacts: [/out/junit.xml]
limits: {{ cpus: 1, memory: 1GiB, pids: 256, scratch: 256MiB }}
"#
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

const FLOOR_RUNSC: &str = "cordon-bench-refine-floor-runsc";

/// Whether the engine has gVisor's runsc registered (and BENCH_RUNSC is not 0).
fn runsc_registered() -> bool {
    if std::env::var("BENCH_RUNSC").is_ok_and(|v| v == "0") {
        return false;
    }
    Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"runsc\""))
}

/// A long-running container of the environment image under `runtime`, the project in it.
fn start_floor(name: &str, runtime: &str, env_image: &str, repo: &Path) {
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        runtime,
        "--user",
        "1000:1000",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp:uid=1000",
        "--tmpfs",
        "/out:uid=1000",
        "--tmpfs",
        "/workspace:uid=1000,exec",
        "-w",
        "/workspace",
        env_image,
        "sleep",
        "infinity",
    ]);
    let tar = Command::new("tar")
        .arg("-C")
        .arg(repo)
        .args(["-c", "."])
        .output()
        .expect("tar");
    let mut load = Command::new("docker")
        .args(["exec", "-i", name, "tar", "-x", "-C", "/workspace"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec");
    std::io::Write::write_all(&mut load.stdin.take().expect("stdin"), &tar.stdout)
        .expect("load floor workspace");
    assert!(load.wait().expect("wait").success());
}

/// pytest alone in the floor container `name`, timed.
fn exec_in(name: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("docker")
        .args(["exec", "-w", "/workspace", name, "sh", "-c", TEST_CMD])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker exec");
    assert!(st.success(), "pytest in the floor container {name} failed");
    t.elapsed()
}

fn docker(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let reinstall_rounds: usize = std::env::var("BENCH_REINSTALL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/refine-project"),
        &repo,
    );
    let cached_spec = dir.path().join("cached.yaml");
    std::fs::write(&cached_spec, spec("requirements.txt", "strict")).expect("write spec");
    let gvisor = runsc_registered();
    let gvisor_spec = dir.path().join("gvisor.yaml");
    std::fs::write(&gvisor_spec, spec("requirements.txt", "gvisor")).expect("write spec");

    let backend: Arc<dyn Backend> = Arc::new(
        rt.block_on(DockerBackend::connect())
            .expect("a Docker engine (is dockerd running?)"),
    );
    let runner = Runner::new(backend.clone(), RunnerConfig::default());
    let new_pool = |refill, prewarm| {
        rt.block_on(async {
            WarmPool::new(
                backend.clone(),
                PoolConfig {
                    per_key: 1,
                    refill,
                    prewarm,
                    ..PoolConfig::default()
                },
            )
        })
    };
    let pool = new_pool(Refill::AfterJob, Prewarm::Auto);
    let pooled = runner.clone().with_pool(pool.clone());
    let pool_on_take = new_pool(Refill::OnTake, Prewarm::Auto);
    let pooled_on_take = runner.clone().with_pool(pool_on_take.clone());
    let pool_unwarmed = new_pool(Refill::AfterJob, Prewarm::Off);
    let pooled_unwarmed = runner.clone().with_pool(pool_unwarmed.clone());
    let pool_gvisor = new_pool(Refill::AfterJob, Prewarm::Auto);
    let pooled_gvisor = runner.clone().with_pool(pool_gvisor.clone());

    let mut n = 0;
    // `warm`: the pool (the runner's) and the id of the environment image it should have a
    // sandbox of.
    let mut run_job =
        |runner: &Runner, spec: &Path, warm: Option<(&WarmPool, &str)>| -> (Duration, JobResult) {
            n += 1;
            let job = cordon::spec::load(spec, &cordon::spec::OperatorPolicy::for_cli())
                .expect("valid spec");
            let out = dir.path().join(format!("out-{n}"));
            let (elapsed, result) = rt.block_on(async {
                if let Some((pool, env_id)) = warm {
                    // Untimed: the pool fills while the model writes the next test.
                    pool.prime(&job, env_id);
                    assert!(
                        pool.wait_ready(&job, env_id, Duration::from_secs(60)).await,
                        "the pool did not fill"
                    );
                }
                // Timed from here: what a refine loop does per iteration.
                let t = Instant::now();
                let pre = runner.preflight(&job).await.expect("preflight");
                let result = runner.start(job, pre, out.clone()).wait().await;
                (t.elapsed(), result)
            });
            let _ = std::fs::remove_dir_all(&out);
            assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
            assert_eq!(
                result.tests.as_ref().map(|t| t.failed + t.errors),
                Some(0),
                "{result:?}"
            );
            assert_eq!(result.warm, warm.is_some(), "{result:?}");
            (elapsed, result)
        };

    eprintln!(
        "warming: building the dependency environment once (pip install through cordon's proxy)"
    );
    let (_, first) = run_job(&runner, &cached_spec, None);
    let env_image = first.environment.expect("an environment").image;
    let env_id = rt
        .block_on(backend.local_image(&env_image))
        .expect("engine")
        .expect("the environment image");

    // The floor: pytest alone, in a long-running container of the same environment image.
    start_floor(FLOOR, "runc", &env_image, &repo);
    let exec_only = || exec_in(FLOOR);
    exec_only();
    if gvisor {
        start_floor(FLOOR_RUNSC, "runsc", &env_image, &repo);
        exec_in(FLOOR_RUNSC);
    }

    let (mut floor, mut warm, mut warm_on_take, mut unwarmed, mut cold, mut reinstall) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut floor_runsc, mut gvisor_warm, mut gvisor_cold) = (vec![], vec![], vec![]);
    let gvisor_job = cordon::spec::load(&gvisor_spec, &cordon::spec::OperatorPolicy::for_cli())
        .expect("valid spec");
    let mut phases: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let cached_job = cordon::spec::load(&cached_spec, &cordon::spec::OperatorPolicy::for_cli())
        .expect("valid spec");
    // Untimed, before each measurement: both pools full again, as they are while the model
    // writes the next test, so one variant's refill never runs into another's measurement.
    let settle = || {
        rt.block_on(async {
            for p in [&pool, &pool_on_take, &pool_unwarmed] {
                p.prime(&cached_job, &env_id);
                assert!(
                    p.wait_ready(&cached_job, &env_id, Duration::from_secs(60))
                        .await,
                    "a pool did not fill"
                );
            }
            if gvisor {
                pool_gvisor.prime(&gvisor_job, &env_id);
                assert!(
                    pool_gvisor
                        .wait_ready(&gvisor_job, &env_id, Duration::from_secs(60))
                        .await,
                    "the gvisor pool did not fill"
                );
            }
        })
    };
    let variants = if gvisor { 8 } else { 5 };
    for i in 0..rounds {
        for k in 0..variants {
            settle();
            match (i + k) % variants {
                5 => floor_runsc.push(exec_in(FLOOR_RUNSC)),
                6 => {
                    let (t, r) =
                        run_job(&pooled_gvisor, &gvisor_spec, Some((&pool_gvisor, &env_id)));
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    gvisor_warm.push(t);
                }
                7 => {
                    let (t, r) = run_job(&runner, &gvisor_spec, None);
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    gvisor_cold.push(t);
                }
                0 => floor.push(exec_only()),
                1 => {
                    let (t, r) = run_job(&pooled, &cached_spec, Some((&pool, &env_id)));
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    for (p, ms) in r.phases_ms {
                        phases.entry(p).or_default().push(ms);
                    }
                    warm.push(t);
                }
                2 => {
                    let (t, r) = run_job(
                        &pooled_on_take,
                        &cached_spec,
                        Some((&pool_on_take, &env_id)),
                    );
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    warm_on_take.push(t);
                }
                3 => {
                    let (t, r) = run_job(
                        &pooled_unwarmed,
                        &cached_spec,
                        Some((&pool_unwarmed, &env_id)),
                    );
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    unwarmed.push(t);
                }
                4 => {
                    let (t, r) = run_job(&runner, &cached_spec, None);
                    assert!(r.environment.as_ref().is_some_and(|e| e.cached));
                    cold.push(t);
                }
                _ => unreachable!("{variants} variants"),
            }
        }
        if i < reinstall_rounds {
            let req = format!("requirements-{i}-{}.txt", std::process::id());
            let mut text = std::fs::read_to_string(repo.join("requirements.txt")).expect("read");
            text.push_str(&format!("# round {i}\n"));
            std::fs::write(repo.join(&req), text).expect("write");
            let s = dir.path().join("reinstall.yaml");
            std::fs::write(&s, spec(&req, "strict")).expect("write spec");
            let (t, r) = run_job(&runner, &s, None);
            let env = r.environment.expect("an environment");
            assert!(!env.cached, "a changed dependency file must rebuild");
            reinstall.push(t);
            let _ = std::fs::remove_file(repo.join(&req));
            let _ = Command::new("docker")
                .args(["image", "rm", &env.image])
                .output();
        }
    }
    rt.block_on(pool.drain());
    rt.block_on(pool_on_take.drain());
    rt.block_on(pool_unwarmed.drain());
    rt.block_on(pool_gvisor.drain());
    let _ = Command::new("docker")
        .args(["rm", "-f", FLOOR, FLOOR_RUNSC])
        .output();

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let f = median(&mut floor);
    println!("refine iteration, {rounds} rounds interleaved ({reinstall_rounds} reinstalling)");
    println!(
        "  {:<52} median {:>8.0} ms",
        "exec-only (pytest in a running container)",
        ms(f)
    );
    for (name, v) in [
        ("cordon, cached environment, warm pool", &mut warm),
        (
            "cordon, warm pool replacing during the job",
            &mut warm_on_take,
        ),
        ("cordon, warm pool without prewarming", &mut unwarmed),
        ("cordon, cached environment, no pool", &mut cold),
        ("cordon, reinstalling the dependencies", &mut reinstall),
    ] {
        if v.is_empty() {
            continue;
        }
        let m = median(v);
        println!(
            "  {:<52} median {:>8.0} ms   ratio to exec-only {:.2}",
            name,
            ms(m),
            ms(m) / ms(f)
        );
    }
    if gvisor {
        let fr = median(&mut floor_runsc);
        let w = median(&mut warm);
        println!(
            "  {:<52} median {:>8.0} ms   ratio to exec-only {:.2}",
            "exec-only under runsc (pytest in a running container)",
            ms(fr),
            ms(fr) / ms(f)
        );
        for (name, v) in [
            (
                "cordon gvisor, cached environment, warm pool",
                &mut gvisor_warm,
            ),
            (
                "cordon gvisor, cached environment, no pool",
                &mut gvisor_cold,
            ),
        ] {
            let m = median(v);
            println!(
                "  {:<52} median {:>8.0} ms   ratio to runsc exec-only {:.2}, to runc exec-only {:.2}, to cordon runc warm {:.2}",
                name,
                ms(m),
                ms(m) / ms(fr),
                ms(m) / ms(f),
                ms(m) / ms(w)
            );
        }
    }
    let phase_text: Vec<String> = phases
        .iter_mut()
        .map(|(p, v)| {
            v.sort();
            format!("{p} {} ms", v[v.len() / 2])
        })
        .collect();
    println!("  warm job phases (medians): {}", phase_text.join(", "));
}
