//! The warm pool against the real engine: a pooled sandbox serves exactly one job, carries
//! nothing from another, is gone after its job, and the pool leaves nothing behind when
//! drained.
//!
//! Leftovers are counted by this process's owner label, so these tests need a process per
//! test, as `cargo nextest run` (the README's test command) gives them.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cordon::event::JobEvent;
use cordon::pool::{PoolConfig, PoolStats, Prewarm, Refill, WarmPool};
use cordon::report::{JobResult, Outcome};
use cordon::runner::{Runner, RunnerConfig};
use cordon::sandbox::docker::DockerBackend;
use cordon::spec::{self, Job};

fn job(dir: &Path, name: &str, yaml: &str) -> Job {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write spec");
    spec::load(&path, &spec::OperatorPolicy::for_cli()).expect("valid spec")
}

/// Runs `job`, returning its result and its stdout.
async fn run(runner: &Runner, job: Job, out: &Path) -> (JobResult, String) {
    let preflight = runner.preflight(&job).await.expect("preflight");
    let mut handle = runner.start(job, preflight, out.to_path_buf());
    let mut stdout = String::new();
    let mut result = None;
    while let Some(ev) = handle.next_event().await {
        match ev {
            JobEvent::Output { data, .. } => stdout.push_str(&String::from_utf8_lossy(&data)),
            JobEvent::Finished { result: r } => result = Some(*r),
            _ => {}
        }
    }
    (result.expect("a result"), stdout)
}

fn owner() -> String {
    let host = nix::unistd::gethostname().expect("hostname");
    format!("{}:{}", host.to_string_lossy(), std::process::id())
}

/// Containers and volumes this test process created that still exist.
fn leftovers() -> Vec<String> {
    let filter = format!("label=org.cordon.owner={}", owner());
    let mut names = common::docker(&["ps", "-aq", "--filter", &filter])
        .lines()
        .map(|l| format!("container {l}"))
        .collect::<Vec<_>>();
    names.extend(
        common::docker(&["volume", "ls", "-q", "--filter", &filter])
            .lines()
            .map(|l| format!("volume {l}")),
    );
    names
}

fn container_exists(id_prefix: &str) -> bool {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("id={id_prefix}"),
        ])
        .output()
        .expect("docker ps");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// The id of `job`'s image (present: `require_image`).
async fn image_of(runner: &Runner, job: &Job) -> String {
    runner
        .preflight(job)
        .await
        .expect("preflight")
        .image_id
        .expect("image present")
}

/// Asks the pool for sandboxes like `job`'s and waits until they are ready.
async fn prime(pool: &WarmPool, job: &Job, image_id: &str) {
    pool.prime(job, image_id);
    assert!(
        pool.wait_ready(job, image_id, Duration::from_secs(60))
            .await,
        "the pool did not fill within a minute"
    );
}

async fn pool_runner(per_key: usize) -> (Runner, WarmPool) {
    pool_runner_with(per_key, Refill::default()).await
}

async fn pool_runner_with(per_key: usize, refill: Refill) -> (Runner, WarmPool) {
    pool_runner_full(per_key, refill, Prewarm::default()).await
}

async fn pool_runner_full(per_key: usize, refill: Refill, prewarm: Prewarm) -> (Runner, WarmPool) {
    let backend: Arc<dyn cordon::sandbox::Backend> =
        Arc::new(DockerBackend::connect().await.expect("a Docker engine"));
    let pool = WarmPool::new(
        backend.clone(),
        PoolConfig {
            per_key,
            idle: Duration::from_secs(600),
            refill,
            prewarm,
            ..PoolConfig::default()
        },
    );
    let runner = Runner::new(backend, RunnerConfig::default()).with_pool(pool.clone());
    (runner, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sandboxes_serve_one_job_each_and_none_is_left_after_drain() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
    let (runner, pool) = pool_runner(2).await;

    let mut hosts = Vec::new();
    let mut last = None;
    for i in 0..5 {
        std::fs::write(dir.path().join("repo/input.txt"), format!("round {i}\n")).expect("write");
        // Each job leaves marks where a reused container would show them to the next one.
        let spec = format!(
            r#"workspace: {{ source: ./repo }}
env: {{ ROUND: "{i}" }}
steps:
  - name: check
    run: |
      for f in /tmp/used /workspace/used /out/used; do
        if [ -e "$f" ]; then echo "REUSED: $f exists"; exit 9; fi
        touch "$f"
      done
      echo "host=$(hostname) round=$ROUND input=$(cat /workspace/input.txt)"
artifacts: [/out/used]
"#
        );
        let j = job(dir.path(), &format!("j{i}"), &spec);
        let image_id = image_of(&runner, &j).await;
        if i > 0 {
            assert!(
                pool.wait_ready(&j, &image_id, Duration::from_secs(60))
                    .await,
                "the pool did not refill within a minute"
            );
        }
        last = Some((j.clone(), image_id.clone()));
        let (result, stdout) = run(&runner, j, &dir.path().join(format!("out{i}"))).await;
        assert_eq!(result.outcome, Outcome::Passed, "{stdout}\n{result:?}");
        assert_eq!(result.warm, i > 0, "job {i}: {result:?}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("host="))
            .unwrap_or_else(|| panic!("no report line in {stdout:?}"));
        assert!(
            line.ends_with(&format!("round={i} input=round {i}")),
            "the job's own command, environment and workspace: {line}"
        );
        let host = line["host=".len()..]
            .split(' ')
            .next()
            .expect("host")
            .to_string();
        assert!(
            !container_exists(&host),
            "job {i}'s container {host} is still there after its result"
        );
        hosts.push(host);
    }
    let mut distinct = hosts.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        hosts.len(),
        "a container served two jobs: {hosts:?}"
    );

    // The refill after the last job: both ready, none still in the making.
    let (j, image_id) = last.expect("jobs ran");
    assert!(
        pool.wait_ready(&j, &image_id, Duration::from_secs(60))
            .await,
        "the pool did not refill within a minute"
    );
    assert!(
        !leftovers().is_empty(),
        "the pool should hold ready sandboxes before the drain"
    );
    let removed = pool.drain().await;
    assert_eq!(removed, 2, "two ready sandboxes were waiting");
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

/// By default a taken sandbox is replaced once its job has ended, so the replacement is not
/// made while the job runs; with `Refill::OnTake` it is made at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_sandbox_is_replaced_after_its_job_or_on_take_as_configured() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    for refill in [Refill::AfterJob, Refill::OnTake] {
        let (runner, pool) = pool_runner_with(1, refill).await;
        let j = job(
            dir.path(),
            "a",
            "steps: [{name: a, run: 'echo started; sleep 2'}]\n",
        );
        let preflight = runner.preflight(&j).await.expect("preflight");
        let image_id = preflight.image_id.clone().expect("image present");
        prime(&pool, &j, &image_id).await;
        let mut handle = runner.start(j.clone(), preflight, dir.path().join(format!("{refill:?}")));
        let mut during = None;
        let mut result = None;
        while let Some(ev) = handle.next_event().await {
            match ev {
                JobEvent::Output { .. } if during.is_none() => {
                    // Give a refill started at the take time to show up.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    during = Some(pool.stats(&j, &image_id));
                }
                JobEvent::Finished { result: r } => result = Some(*r),
                _ => {}
            }
        }
        let result = result.expect("a result");
        assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
        assert!(result.warm, "{refill:?}: {result:?}");
        let during = during.expect("the job wrote output");
        match refill {
            Refill::AfterJob => assert_eq!(
                during,
                PoolStats::default(),
                "nothing is made for the key while its job runs"
            ),
            Refill::OnTake => assert_eq!(
                during.ready + during.filling,
                1,
                "the replacement is made while the job runs"
            ),
        }
        assert!(
            pool.wait_ready(&j, &image_id, Duration::from_secs(60))
                .await,
            "{refill:?}: the pool did not refill after the job"
        );
        assert_eq!(pool.drain().await, 1);
    }
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

/// A prewarmed sandbox has read its image's `org.cordon.warm` trees before its job: the
/// job finds that page cache already charged to its memory cgroup (where each container's
/// caches are its own, as on fuse-overlayfs), and otherwise runs as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarmed_sandbox_has_read_its_images_trees_before_the_job() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = DockerBackend::connect().await.expect("a Docker engine");
    let cold = cordon::sandbox::Backend::cold_caches(&backend).await;
    // The page cache the job's memory cgroup holds when it starts, in bytes (v1, then v2).
    let spec = r#"steps:
  - name: cache
    run: |
      awk '$1 == "total_cache" || $1 == "file" { print "cache=" $2; exit }' \
        /sys/fs/cgroup/memory/memory.stat /sys/fs/cgroup/memory.stat 2>/dev/null
"#;
    let mut cache = Vec::new();
    for prewarm in [Prewarm::On, Prewarm::Off] {
        let (runner, pool) = pool_runner_full(1, Refill::default(), prewarm).await;
        let j = job(dir.path(), "cache", spec);
        let image_id = image_of(&runner, &j).await;
        prime(&pool, &j, &image_id).await;
        let (result, stdout) = run(&runner, j, &dir.path().join(format!("out-{prewarm:?}"))).await;
        assert_eq!(result.outcome, Outcome::Passed, "{stdout} {result:?}");
        assert!(result.warm, "{result:?}");
        let bytes: u64 = stdout
            .trim()
            .strip_prefix("cache=")
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("no cache figure in {stdout:?}"));
        cache.push(bytes);
        pool.drain().await;
    }
    if cold {
        // cordon/python's trees hold about 60 MB; the job itself reads a few.
        assert!(
            cache[0] > 30 << 20 && cache[1] < 20 << 20,
            "page cache at the job's start, prewarmed vs not: {cache:?}"
        );
    }
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_other_settings_never_gets_a_sandbox_made_for_another() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let (runner, pool) = pool_runner(1).await;
    let small = job(
        dir.path(),
        "small",
        "steps: [{name: a, run: 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes'}]\nlimits: { memory: 256MiB }\n",
    );
    let image_id = image_of(&runner, &small).await;
    prime(&pool, &small, &image_id).await;

    // Same image and profile, other memory limit: a different key, so a fresh container.
    let big = job(
        dir.path(),
        "big",
        "steps: [{name: a, run: 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes'}]\nlimits: { memory: 384MiB }\n",
    );
    let (result, stdout) = run(&runner, big, &dir.path().join("out-big")).await;
    assert_eq!(result.outcome, Outcome::Passed, "{stdout}");
    assert!(!result.warm);
    assert_eq!(stdout.trim(), (384u64 << 20).to_string());
    assert_eq!(
        pool.stats(&small, &image_id).ready,
        1,
        "the other key's sandbox was taken"
    );

    // The matching job gets it, under its own limit, and a multi-step job's later steps
    // share the pooled sandbox's scratch.
    let two_steps = job(
        dir.path(),
        "two",
        "steps:\n  - {name: a, run: 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo kept > /out/x'}\n  - {name: b, run: 'cat /out/x'}\nlimits: { memory: 256MiB }\n",
    );
    let image_id2 = image_of(&runner, &two_steps).await;
    prime(&pool, &two_steps, &image_id2).await;
    let (result, stdout) = run(&runner, two_steps, &dir.path().join("out-two")).await;
    assert_eq!(result.outcome, Outcome::Passed, "{stdout}");
    assert!(result.warm);
    assert_eq!(stdout, format!("{}\nkept\n", 256u64 << 20));

    pool.drain().await;
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_removes_its_pooled_sandbox() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let (runner, pool) = pool_runner(1).await;
    let j = job(
        dir.path(),
        "slow",
        "steps: [{name: a, run: 'echo started; sleep 60'}]\n",
    );
    let preflight = runner.preflight(&j).await.expect("preflight");
    let image_id = preflight.image_id.clone().expect("image present");
    prime(&pool, &j, &image_id).await;
    let mut handle = runner.start(j.clone(), preflight, dir.path().join("out"));
    while let Some(ev) = handle.next_event().await {
        if let JobEvent::Output { .. } = ev {
            handle.cancel();
        }
        if let JobEvent::Finished { result } = ev {
            assert_eq!(result.outcome, Outcome::Cancelled);
            assert!(result.warm);
        }
    }
    // Only the refill is left, and the drain removes it.
    assert!(
        pool.wait_ready(&j, &image_id, Duration::from_secs(60))
            .await
    );
    assert_eq!(
        leftovers()
            .iter()
            .filter(|l| l.starts_with("container"))
            .count(),
        1
    );
    pool.drain().await;
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_idle_is_drained_on_its_own() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn cordon::sandbox::Backend> =
        Arc::new(DockerBackend::connect().await.expect("a Docker engine"));
    let pool = WarmPool::new(
        backend.clone(),
        PoolConfig {
            per_key: 1,
            idle: Duration::from_secs(1),
            ..PoolConfig::default()
        },
    );
    let runner = Runner::new(backend, RunnerConfig::default());
    let j = job(dir.path(), "idle", "steps: [{name: a, run: 'true'}]\n");
    let image_id = image_of(&runner, &j).await;
    prime(&pool, &j, &image_id).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !leftovers().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "the idle key was not drained"
    );
    assert_eq!(pool.stats(&j, &image_id).ready, 0);
    assert_eq!(pool.drain().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_never_holds_more_than_its_total_cap() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn cordon::sandbox::Backend> =
        Arc::new(DockerBackend::connect().await.expect("a Docker engine"));
    let pool = WarmPool::new(
        backend.clone(),
        PoolConfig {
            per_key: 1,
            max_total: 1,
            ..PoolConfig::default()
        },
    );
    let runner = Runner::new(backend, RunnerConfig::default());
    let a = job(
        dir.path(),
        "a",
        "steps: [{name: a, run: 'true'}]\nlimits: { pids: 100 }\n",
    );
    let b = job(
        dir.path(),
        "b",
        "steps: [{name: b, run: 'true'}]\nlimits: { pids: 101 }\n",
    );
    let image_id = image_of(&runner, &a).await;
    prime(&pool, &a, &image_id).await;
    pool.prime(&b, &image_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sb = pool.stats(&b, &image_id);
    assert_eq!(
        (sb.ready, sb.filling),
        (0, 0),
        "a second key filled past the cap"
    );
    assert_eq!(
        leftovers()
            .iter()
            .filter(|l| l.starts_with("container"))
            .count(),
        1
    );
    assert_eq!(pool.drain().await, 1);
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_that_died_while_waiting_is_not_handed_out() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let (runner, pool) = pool_runner(1).await;
    let j = job(dir.path(), "a", "steps: [{name: a, run: 'echo fine'}]\n");
    let image_id = image_of(&runner, &j).await;
    prime(&pool, &j, &image_id).await;
    // Someone removes it behind cordon's back (or the engine restarts).
    let filter = format!("label=org.cordon.owner={}", owner());
    for id in common::docker(&["ps", "-q", "--filter", &filter]).lines() {
        common::docker(&["rm", "-f", id]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (result, stdout) = run(&runner, j, &dir.path().join("out")).await;
    assert_eq!(result.outcome, Outcome::Passed, "{stdout} {result:?}");
    assert!(!result.warm, "a dead sandbox was handed out");
    assert_eq!(stdout, "fine\n");
    pool.drain().await;
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}

/// After a crash, whoever runs the pool next removes its sandboxes by name, even when the
/// owner label names a process it cannot judge (another host, a reused pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_sandboxes_can_be_removed_by_name() {
    common::require_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn cordon::sandbox::Backend> =
        Arc::new(DockerBackend::connect().await.expect("a Docker engine"));
    let name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..7]);
    let pool = WarmPool::new(
        backend.clone(),
        PoolConfig {
            per_key: 2,
            name: name.clone(),
            ..PoolConfig::default()
        },
    );
    let runner = Runner::new(backend.clone(), RunnerConfig::default());
    let j = job(
        dir.path(),
        "a",
        "steps: [{name: a, run: 'true'}]\nartifacts: [/out/x]\n",
    );
    let image_id = image_of(&runner, &j).await;
    prime(&pool, &j, &image_id).await;
    // Two containers, each with its /out volume.
    assert_eq!(leftovers().len(), 4, "{:?}", leftovers());
    let removed = backend
        .remove_named(&PoolConfig::prefix_of(&name))
        .await
        .expect("remove");
    assert_eq!(removed, 4);
    assert_eq!(leftovers(), Vec::<String>::new());
    // The pool notices they are gone and hands none out.
    let (result, _) = run(
        &runner.clone().with_pool(pool.clone()),
        j,
        &dir.path().join("out"),
    )
    .await;
    assert_eq!(result.outcome, Outcome::Passed);
    assert!(!result.warm);
    pool.drain().await;
    assert_eq!(leftovers(), Vec::<String>::new(), "left after the drain");
}
