//! The warm pool against the in-memory engine (`sandbox::fake`): no Docker.

use std::sync::Arc;

use super::*;
use crate::sandbox::fake::{FakeEngine, job};

const IMAGE: &str = "sha256:base";
const JOB: &str = "steps: [{name: test, run: go}]\nartifacts: [/out/r.txt]";

fn pool(engine: &FakeEngine, config: PoolConfig) -> WarmPool {
    WarmPool::new(Arc::new(engine.clone()), config)
}

fn config(per_key: usize) -> PoolConfig {
    PoolConfig {
        per_key,
        prewarm: Prewarm::Off,
        name: "test".into(),
        ..Default::default()
    }
}

/// Waits until no sandbox is being made (what was made is ready or gone).
async fn settle(pool: &WarmPool) {
    for _ in 0..1000 {
        if pool.totals().filling == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the pool is still making sandboxes: {:?}", pool.totals());
}

async fn remove(engine: &FakeEngine, mut w: Warm) {
    w.sandbox.destroy().await.expect("destroy");
    engine.remove_scratch(&w.scratch).await.expect("scratch");
}

#[tokio::test]
async fn a_taken_sandbox_is_started_and_replaced_once_its_job_ends() {
    let engine = FakeEngine::new();
    let pool = pool(&engine, config(1));
    let j = job(JOB);
    assert!(pool.take(&j, IMAGE).is_none(), "nothing is ready at first");
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    assert_eq!(
        pool.stats(&j, IMAGE),
        PoolStats {
            ready: 1,
            filling: 0
        }
    );
    let calls = engine.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("create_scratch cordon-warm-test-"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("start cordon-warm-test-"))
    );

    let mut w = pool.take(&j, IMAGE).expect("a ready sandbox");
    assert!(w.sandbox.is_waiting());
    assert_eq!(w.scratch.volumes.len(), 1, "its own /out volume");
    // Refill::AfterJob: no replacement while the job runs.
    settle(&pool).await;
    assert_eq!(pool.stats(&j, IMAGE), PoolStats::default());
    let lease = std::mem::take(&mut w.lease);
    remove(&engine, w).await;
    drop(lease);
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    assert_eq!(engine.count("create"), 2);

    assert_eq!(pool.drain().await, 1);
    assert!(engine.live().is_empty(), "{:?}", engine.live());
    assert!(
        pool.take(&j, IMAGE).is_none(),
        "a drained pool serves nothing"
    );
}

#[tokio::test]
async fn a_sandbox_the_pool_cannot_finish_making_leaves_nothing() {
    for (op, nth) in [("create_scratch", 1), ("create", 1), ("start", 1)] {
        let engine = FakeEngine::new();
        engine.fail(op, nth);
        let pool = pool(&engine, config(1));
        let j = job(JOB);
        pool.prime(&j, IMAGE);
        settle(&pool).await;
        assert_eq!(pool.stats(&j, IMAGE).ready, 0, "{op}");
        assert!(engine.live().is_empty(), "{op}: left {:?}", engine.live());
        // The next ask tries again.
        assert!(pool.take(&j, IMAGE).is_none());
        assert!(
            pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await,
            "{op}"
        );
        pool.drain().await;
        assert!(engine.live().is_empty(), "{op}: left {:?}", engine.live());
    }
}

#[tokio::test]
async fn a_sandbox_that_ended_while_waiting_is_never_handed_out() {
    let engine = FakeEngine::new();
    let pool = pool(&engine, config(1));
    let j = job(JOB);
    pool.prime(&j, IMAGE);
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    engine.end_waiting_sandboxes();
    assert!(pool.take(&j, IMAGE).is_none());
    // Discarded, and a fresh one made at once.
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    assert_eq!(engine.count("destroy"), 1);
    let w = pool.take(&j, IMAGE).expect("the fresh one");
    remove(&engine, w).await;
    pool.drain().await;
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn prewarming_runs_where_caches_start_cold_and_stops_for_a_key_where_it_failed() {
    let engine = FakeEngine::new();
    engine.with_cold_caches().fail("prewarm", 1);
    let pool = pool(
        &engine,
        PoolConfig {
            prewarm: Prewarm::Auto,
            ..config(1)
        },
    );
    let j = job(JOB);
    pool.prime(&j, IMAGE);
    settle(&pool).await;
    assert_eq!(
        pool.stats(&j, IMAGE).ready,
        0,
        "the failed one is discarded"
    );
    assert!(engine.live().is_empty(), "{:?}", engine.live());
    pool.prime(&j, IMAGE);
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    assert_eq!(engine.count("prewarm"), 1, "the key is made without it now");
    pool.drain().await;

    // Where caches are shared (the default here), Auto does not prewarm.
    let shared = FakeEngine::new();
    let pool = super::WarmPool::new(
        Arc::new(shared.clone()),
        PoolConfig {
            prewarm: Prewarm::Auto,
            ..config(1)
        },
    );
    pool.prime(&j, IMAGE);
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    assert_eq!(shared.count("prewarm"), 0);
    pool.drain().await;
}

#[tokio::test]
async fn the_pool_holds_at_most_max_total_and_drains_them_all() {
    let engine = FakeEngine::new();
    let pool = pool(
        &engine,
        PoolConfig {
            max_total: 3,
            ..config(2)
        },
    );
    let small = job(JOB);
    let big = job(&format!("{JOB}\nlimits: {{memory: 300MiB}}"));
    assert_ne!(
        policy::warm_key(&small, IMAGE),
        policy::warm_key(&big, IMAGE),
        "different settings, different keys"
    );
    pool.prime(&small, IMAGE);
    pool.prime(&big, IMAGE);
    settle(&pool).await;
    assert_eq!(pool.totals().ready, 3);
    assert_eq!(pool.drain().await, 3);
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn a_bind_mounted_workspace_is_never_pooled() {
    let engine = FakeEngine::new();
    let pool = pool(&engine, config(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("job.yaml");
    std::fs::write(
        &path,
        "workspace: {source: ., mode: bind}\nsteps: [{name: t, run: go}]",
    )
    .expect("write");
    let j = crate::spec::load(&path, &crate::spec::OperatorPolicy::for_cli()).expect("valid");
    pool.prime(&j, IMAGE);
    assert!(pool.take(&j, IMAGE).is_none());
    settle(&pool).await;
    assert_eq!(engine.count("create"), 0);
}
