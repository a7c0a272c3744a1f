//! The service's queue against the in-memory engine (`sandbox::fake`): submission, order,
//! bounds, cancellation, crash recovery and drain, without Docker.

use super::*;
use crate::sandbox::fake::{FakeEngine, Script};

const JOB: &str = "steps: [{name: test, run: go}]";
const SPIN: &str = "steps: [{name: test, run: spin}]";

fn admin() -> Caller {
    Caller {
        name: "admin".into(),
        admin: true,
    }
}

fn engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine
        .image(spec::DEFAULT_IMAGE, "sha256:base")
        .script("spin", Script::hangs());
    engine
}

async fn service(
    engine: &FakeEngine,
    dir: &Path,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Service {
    let mut config = ServerConfig {
        data_dir: dir.to_path_buf(),
        concurrency: Some(1),
        ..Default::default()
    };
    tweak(&mut config);
    Service::start_on(config, Arc::new(engine.clone()))
        .await
        .expect("the service starts")
}

/// Waits until job `id` is in `state`.
async fn wait_for(svc: &Service, id: &str, state: JobState) -> JobStatus {
    for _ in 0..2000 {
        let st = svc.status(id, &admin()).await.expect("status");
        if st.state == state {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {id} never became {state:?}");
}

#[tokio::test]
async fn a_submitted_job_runs_and_every_event_is_stored_in_order() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(&engine, dir.path(), |_| {}).await;
    let st = svc
        .submit(JOB.into(), None, &admin(), None)
        .await
        .expect("accepted");
    let done = wait_for(&svc, &st.id, JobState::Finished).await;
    assert_eq!(done.outcome.as_deref(), Some("passed"), "{done:?}");
    assert!(done.result.is_some());
    assert_eq!(done.submitted_by.as_deref(), Some("admin"));

    use futures_util::StreamExt;
    let events: Vec<EventRecord> = svc
        .events(&st.id, 0, &admin())
        .await
        .expect("events")
        .collect()
        .await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    assert!(events[0].json.contains("\"started\""), "{}", events[0].json);
    assert!(
        events.last().expect("events").json.contains("\"finished\""),
        "{events:?}"
    );
    // Resuming from an offset reads the rest only.
    let rest: Vec<EventRecord> = svc
        .events(&st.id, 2, &admin())
        .await
        .expect("events")
        .collect()
        .await;
    assert_eq!(rest.len(), events.len() - 2);
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn jobs_wait_their_turn_and_a_cancelled_one_frees_its_slot() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(&engine, dir.path(), |_| {}).await;
    let first = svc
        .submit(SPIN.into(), None, &admin(), None)
        .await
        .expect("first");
    wait_for(&svc, &first.id, JobState::Running).await;
    let second = svc
        .submit(JOB.into(), None, &admin(), None)
        .await
        .expect("second");
    let third = svc
        .submit(JOB.into(), None, &admin(), None)
        .await
        .expect("third");
    assert_eq!(second.state, JobState::Queued);
    assert_eq!(second.queue_position, Some(0));
    assert_eq!(third.queue_position, Some(1));

    // A queued job cancelled never starts.
    let t = svc
        .cancel(&third.id, &admin(), Duration::from_secs(5))
        .await
        .expect("cancel");
    assert_eq!(t.outcome.as_deref(), Some("cancelled"));
    // The running one is stopped, its sandbox removed; then the next runs.
    let f = svc
        .cancel(&first.id, &admin(), Duration::from_secs(30))
        .await
        .expect("cancel");
    assert_eq!(f.state, JobState::Finished);
    assert_eq!(f.outcome.as_deref(), Some("cancelled"));
    let s = wait_for(&svc, &second.id, JobState::Finished).await;
    assert_eq!(s.outcome.as_deref(), Some("passed"));
    assert!(
        !engine.calls().iter().any(|c| c.contains(&third.id)),
        "the cancelled queued job made nothing"
    );
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn a_full_queue_and_an_impossible_job_are_refused_before_anything_is_stored() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(&engine, dir.path(), |c| c.queue_capacity = 1).await;
    let too_big = svc
        .submit(format!("{JOB}\nlimits: {{cpus: 64}}"), None, &admin(), None)
        .await;
    let refused = too_big.expect_err("more CPUs than there are");
    assert!(
        matches!(
            refused,
            ServiceError::Preflight(_) | ServiceError::Invalid(_)
        ) && error_chain(&refused).contains("cpus"),
        "{refused:?}"
    );
    let running = svc
        .submit(SPIN.into(), None, &admin(), None)
        .await
        .expect("runs");
    wait_for(&svc, &running.id, JobState::Running).await;
    svc.submit(JOB.into(), None, &admin(), None)
        .await
        .expect("queued");
    let full = svc.submit(JOB.into(), None, &admin(), None).await;
    assert!(
        matches!(full, Err(ServiceError::QueueFull { queued: 1, retry_after }) if retry_after >= 1),
        "{full:?}"
    );

    let query = ListQuery {
        filter: Default::default(),
        limit: 10,
    };
    let page = svc.list(&query, &admin()).await.expect("list");
    assert_eq!(page.jobs.len(), 2, "refused submissions are not stored");
    svc.drain(Duration::ZERO).await;
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn a_job_running_when_the_service_died_is_reported_lost_and_its_sandbox_removed() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = service(&engine, dir.path(), |_| {}).await;
    let st = first
        .submit(SPIN.into(), None, &admin(), None)
        .await
        .expect("runs");
    wait_for(&first, &st.id, JobState::Running).await;
    for _ in 0..2000 {
        if engine.live().iter().any(|l| l.contains(&st.id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(engine.live().iter().any(|l| l.contains(&st.id)));

    // A second service on the same data directory, as after a crash of the first.
    let second = service(&engine, dir.path(), |_| {}).await;
    let lost = second.status(&st.id, &admin()).await.expect("status");
    assert_eq!(lost.state, JobState::Finished);
    assert_eq!(lost.outcome.as_deref(), Some("sandbox_error"));
    assert!(
        lost.result
            .as_ref()
            .is_some_and(|r| r.to_string().contains(CONTROLLER_LOST)),
        "{lost:?}"
    );
    assert!(
        engine.calls().contains(&format!("remove_job {}", st.id)),
        "{:?}",
        engine.calls()
    );
    assert!(
        !engine.live().iter().any(|l| l.contains(&st.id)),
        "{:?}",
        engine.live()
    );
    assert!(engine.calls().iter().any(|c| c == "reap"));
}

#[tokio::test]
async fn a_drain_cancels_what_outlives_the_grace_and_takes_nothing_new() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(&engine, dir.path(), |_| {}).await;
    let running = svc
        .submit(SPIN.into(), None, &admin(), None)
        .await
        .expect("runs");
    wait_for(&svc, &running.id, JobState::Running).await;
    let queued = svc
        .submit(JOB.into(), None, &admin(), None)
        .await
        .expect("queued");
    svc.drain(Duration::ZERO).await;
    assert!(svc.is_draining());
    let r = svc.status(&running.id, &admin()).await.expect("status");
    assert_eq!(r.outcome.as_deref(), Some("cancelled"));
    // Queued jobs stay queued for the next start.
    let q = svc.status(&queued.id, &admin()).await.expect("status");
    assert_eq!(q.state, JobState::Queued);
    assert!(matches!(
        svc.submit(JOB.into(), None, &admin(), None).await,
        Err(ServiceError::ShuttingDown)
    ));
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn a_retried_submission_with_its_idempotency_key_gets_the_same_job() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(&engine, dir.path(), |_| {}).await;
    let key = || Some("retry-7f3a".to_string());
    let first = svc
        .submit(SPIN.into(), None, &admin(), key())
        .await
        .expect("first");
    let again = svc
        .submit(SPIN.into(), None, &admin(), key())
        .await
        .expect("again");
    assert_eq!(again.id, first.id, "the same key and request: the same job");
    // Another token's key space is its own.
    let other = Caller {
        name: "ci".into(),
        admin: false,
    };
    let theirs = svc
        .submit(SPIN.into(), None, &other, key())
        .await
        .expect("theirs");
    assert_ne!(theirs.id, first.id);
    // The same key with another request is refused, naming the job it made.
    let reused = svc.submit(JOB.into(), None, &admin(), key()).await;
    assert!(
        matches!(&reused, Err(ServiceError::KeyReused(id)) if *id == first.id),
        "{reused:?}"
    );
    let query = ListQuery {
        filter: Default::default(),
        limit: 10,
    };
    assert_eq!(
        svc.list(&query, &admin()).await.expect("list").jobs.len(),
        2
    );
    svc.drain(Duration::ZERO).await;
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}
