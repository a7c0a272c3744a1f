//! The runner's phases, outcomes, cancellation and cleanup, against the in-memory engine
//! (`sandbox::fake`): no Docker. What the real engine does is tested in `tests/`.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::event::Stream;
use crate::pool::{PoolConfig, Prewarm, WarmPool};
use crate::sandbox::fake::{FakeEngine, Script, job};

const IMAGE: &str = "sha256:base";

/// Runs `job` to its end on `engine` (its image present), artifacts under `out`.
async fn run_in(engine: &FakeEngine, job: Job, out: &Path) -> (JobResult, Vec<JobEvent>) {
    engine.image(&job.image, IMAGE);
    let runner = Runner::new(Arc::new(engine.clone()), RunnerConfig::default());
    let preflight = runner.preflight(&job).await.expect("preflight");
    let mut handle = runner.start(job, preflight, out.to_path_buf());
    let mut events = Vec::new();
    while let Some(e) = handle.next_event().await {
        events.push(e);
    }
    (handle.wait().await, events)
}

async fn run(engine: &FakeEngine, job: Job) -> (JobResult, Vec<JobEvent>) {
    let out = tempfile::tempdir().expect("tempdir");
    run_in(engine, job, out.path()).await
}

/// The operations of the calls so far, in order.
fn ops(engine: &FakeEngine) -> Vec<String> {
    engine
        .calls()
        .iter()
        .map(|c| c.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call || c.starts_with(&format!("{call} ")))
        .unwrap_or_else(|| panic!("no call `{call}` in {calls:#?}"))
}

fn output_of(events: &[JobEvent]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Output { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

const ONE_STEP: &str = "steps: [{name: test, run: 'go'}]";
const TWO_STEPS: &str =
    "steps: [{name: build, run: 'one'}, {name: test, run: 'two'}]\nartifacts: [/out/r.txt]";

#[tokio::test]
async fn a_passing_step_goes_through_every_phase_in_order_and_leaves_nothing() {
    let engine = FakeEngine::new();
    engine.script("go", Script::prints("hello\n"));
    let (result, events) = run(&engine, job(ONE_STEP)).await;
    assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(output_of(&events), b"hello\n");
    assert_eq!(
        ops(&engine),
        [
            "engine",
            "local_image",
            "create_scratch",
            "create",
            "start",
            "release",
            "finish",
            "destroy",
            "remove_scratch"
        ]
    );
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Started { .. } => Some("started"),
            JobEvent::Sandbox { .. } => Some("sandbox"),
            JobEvent::StepStarted { .. } => Some("step-started"),
            JobEvent::Output { .. } => Some("output"),
            JobEvent::StepFinished { .. } => Some("step-finished"),
            JobEvent::Finished { .. } => Some("finished"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "sandbox",
            "step-started",
            "output",
            "step-finished",
            "finished"
        ]
    );
    for phase in ["resolve", "create", "run", "destroy"] {
        assert!(
            result.phases_ms.contains_key(phase),
            "{:?}",
            result.phases_ms
        );
    }
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn the_outcome_is_the_exit_status_the_engine_reports() {
    let engine = FakeEngine::new();
    engine.script("go", Script::exits(3));
    let (result, _) = run(&engine, job(ONE_STEP)).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, Some(3));

    let engine = FakeEngine::new();
    engine.script(
        "go",
        Script {
            exit: 137,
            oom: true,
            ..Default::default()
        },
    );
    let (result, _) = run(&engine, job(ONE_STEP)).await;
    assert_eq!(result.outcome, Outcome::OomKilled);
    assert!(engine.live().is_empty());
}

#[tokio::test]
async fn an_image_that_is_not_built_is_built_before_anything_is_created() {
    let engine = FakeEngine::new();
    let runner = Runner::new(Arc::new(engine.clone()), RunnerConfig::default());
    let j = job(&format!(
        "image: {}\n{ONE_STEP}",
        crate::spec::DEFAULT_IMAGE
    ));
    let preflight = runner
        .preflight(&j)
        .await
        .expect("cordon's own image can be built");
    assert_eq!(preflight.image_id, None);
    let out = tempfile::tempdir().expect("tempdir");
    let result = runner.start(j, preflight, out.path().into()).wait().await;
    assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
    let calls = ops(&engine);
    assert!(position(&calls, "build_image") < position(&calls, "create_scratch"));

    let missing = job(&format!("image: not/there:1\n{ONE_STEP}"));
    let e = runner.preflight(&missing).await.expect_err("never pulled");
    assert!(e.is_invalid_input(), "{e}");
}

#[tokio::test]
async fn output_past_the_jobs_cap_stops_the_step_with_its_own_outcome() {
    let engine = FakeEngine::new();
    engine.script(
        "flood",
        Script {
            output: vec![
                (Stream::Stdout, Bytes::from("y".repeat(800))),
                (Stream::Stderr, Bytes::from("z".repeat(800))),
            ],
            hang: true,
            ..Default::default()
        },
    );
    let (result, events) = run(
        &engine,
        job("steps: [{name: test, run: flood}]\nlimits: {output: 1KiB}"),
    )
    .await;
    assert_eq!(result.outcome, Outcome::OutputLimitExceeded, "{result:?}");
    assert!(result.output_truncated);
    assert_eq!(
        output_of(&events).len(),
        1024,
        "exactly the cap is passed on"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        JobEvent::OutputTruncated {
            limit_bytes: 1024,
            ..
        }
    )));
    let calls = ops(&engine);
    assert!(position(&calls, "freeze") < position(&calls, "kill"));
    assert!(engine.live().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_timeout_is_frozen_killed_and_removed() {
    let engine = FakeEngine::new();
    engine.script("spin", Script::hangs());
    let (result, _) = run(
        &engine,
        job("steps: [{name: test, run: spin, timeout: 5s}]"),
    )
    .await;
    assert_eq!(result.outcome, Outcome::TimedOut, "{result:?}");
    assert_eq!(result.steps[0].outcome, Outcome::TimedOut);
    assert_eq!(result.exit_code, None);
    let calls = ops(&engine);
    assert!(position(&calls, "freeze") < position(&calls, "kill"));
    assert!(position(&calls, "kill") < position(&calls, "destroy"));
    assert!(engine.live().is_empty());
}

#[tokio::test]
async fn a_cancelled_job_finishes_cancelled_with_everything_removed() {
    let engine = FakeEngine::new();
    engine.script("spin", Script::hangs());
    let j = job(TWO_STEPS.replace("'one'", "spin").as_str());
    engine.image(&j.image, IMAGE);
    let runner = Runner::new(Arc::new(engine.clone()), RunnerConfig::default());
    let preflight = runner.preflight(&j).await.expect("preflight");
    let out = tempfile::tempdir().expect("tempdir");
    let mut handle = runner.start(j, preflight, out.path().into());
    while let Some(e) = handle.next_event().await {
        if matches!(e, JobEvent::StepStarted { .. }) {
            handle.cancel();
        }
    }
    let result = handle.wait().await;
    assert_eq!(result.outcome, Outcome::Cancelled, "{result:?}");
    let steps: Vec<Outcome> = result.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(steps, [Outcome::Cancelled, Outcome::Skipped]);
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn steps_hand_over_their_scratch_before_the_previous_container_goes() {
    let engine = FakeEngine::new();
    engine.script(
        "two",
        Script {
            files: vec![("/out/r.txt".into(), b"report".to_vec())],
            ..Default::default()
        },
    );
    let out = tempfile::tempdir().expect("tempdir");
    let j = job(TWO_STEPS);
    let id = j.id.clone();
    let (result, _) = run_in(&engine, j, out.path()).await;
    assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
    let calls = engine.calls();
    let first = format!("cordon-{id}-0");
    let second = format!("cordon-{id}-1");
    // Step 0 is frozen and held; step 1's container (holding the volumes) exists before step
    // 0's is let go.
    assert!(
        position(&calls, &format!("freeze {first}"))
            < position(&calls, &format!("create {second}"))
    );
    assert!(
        position(&calls, &format!("create {second}"))
            < position(&calls, &format!("destroy {first}"))
    );
    // The last step's artifacts came over the gate: nothing was frozen or downloaded.
    assert!(!calls.iter().any(|c| c == &format!("freeze {second}")));
    assert_eq!(engine.count("download"), 0);
    assert_eq!(
        std::fs::read(out.path().join("r.txt")).expect("the artifact"),
        b"report"
    );
    assert_eq!(result.artifacts, [out.path().join("r.txt")]);
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}

#[tokio::test]
async fn a_failing_step_skips_the_rest_and_its_artifacts_are_still_collected() {
    let engine = FakeEngine::new();
    engine.script(
        "one",
        Script {
            exit: 1,
            files: vec![("/out/r.txt".into(), b"half".to_vec())],
            ..Default::default()
        },
    );
    let out = tempfile::tempdir().expect("tempdir");
    let (result, _) = run_in(&engine, job(TWO_STEPS), out.path()).await;
    assert_eq!(result.outcome, Outcome::Failed);
    let steps: Vec<Outcome> = result.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(steps, [Outcome::Failed, Outcome::Skipped]);
    // Collected from the next container, which never ran anything, through the engine.
    assert_eq!(engine.count("release"), 1);
    assert_eq!(engine.count("download"), 1);
    assert_eq!(
        std::fs::read(out.path().join("r.txt")).expect("artifact"),
        b"half"
    );
    assert!(engine.live().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_step_with_artifacts_is_collected_frozen_then_killed() {
    let engine = FakeEngine::new();
    engine.script(
        "spin",
        Script {
            hang: true,
            files: vec![("/out/partial.txt".into(), b"so far".to_vec())],
            ..Default::default()
        },
    );
    let out = tempfile::tempdir().expect("tempdir");
    let j = job(
        "steps: [{name: test, run: spin, timeout: 5s}]\nartifacts: [/out/partial.txt, /out/never.txt]",
    );
    let (result, _) = run_in(&engine, j, out.path()).await;
    assert_eq!(result.outcome, Outcome::TimedOut);
    let calls = ops(&engine);
    assert!(position(&calls, "freeze") < position(&calls, "download"));
    assert!(position(&calls, "download") < position(&calls, "kill"));
    assert_eq!(
        std::fs::read(out.path().join("partial.txt")).expect("artifact"),
        b"so far"
    );
    assert_eq!(result.artifacts_refused.len(), 1);
    assert_eq!(result.artifacts_refused[0].path, "/out/never.txt");
    assert_eq!(
        result.artifacts_refused[0].reason,
        "not produced by the job"
    );
    assert!(engine.live().is_empty());
}

/// Every container, volume and network a job creates is removed whatever call fails, and
/// the failure is the job's error.
#[tokio::test]
async fn whatever_engine_call_fails_nothing_is_left_behind() {
    let steps_job = TWO_STEPS;
    let prepare_job =
        "prepare: {run: install}\nsteps: [{name: test, run: 'two'}]\nartifacts: [/out/r.txt]";
    let cases: &[(&str, &[(&str, usize)])] = &[
        (
            steps_job,
            &[
                ("create_scratch", 1),
                ("create", 1),
                ("create", 2),
                ("start", 1),
                ("start", 2),
                ("release", 1),
                ("release", 2),
                ("freeze", 1),
                ("finish", 1),
                ("finish", 2),
            ],
        ),
        (
            prepare_job,
            &[
                ("create_egress", 1),
                ("create", 1),
                ("start", 1),
                ("release", 1),
                ("finish", 1),
                ("written", 1),
                ("commit", 1),
                ("remove_egress", 1),
                ("create_scratch", 1),
                ("create", 2),
            ],
        ),
    ];
    for (spec, failures) in cases {
        for (op, nth) in *failures {
            let engine = FakeEngine::new();
            engine.script(
                "two",
                Script {
                    files: vec![("/out/r.txt".into(), b"r".to_vec())],
                    ..Default::default()
                },
            );
            engine.fail(op, *nth);
            let (result, _) = run(&engine, job(spec)).await;
            let case = format!("{op} #{nth} failing in a job with {spec:?}");
            assert!(engine.count(op) >= *nth, "{case}: never called");
            assert_eq!(result.outcome, Outcome::SandboxError, "{case}: {result:?}");
            assert!(
                result
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains(&format!("failed {op}"))),
                "{case}: {:?}",
                result.error
            );
            assert!(engine.live().is_empty(), "{case}: left {:?}", engine.live());
        }
    }
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_removed_is_reported_and_the_rest_still_goes() {
    let engine = FakeEngine::new();
    engine.fail("destroy", 1);
    let j = job(TWO_STEPS);
    let id = j.id.clone();
    let (result, _) = run(&engine, j).await;
    assert_eq!(result.outcome, Outcome::SandboxError);
    assert!(
        result
            .error
            .as_deref()
            .is_some_and(|e| e.contains("failed destroy")),
        "{:?}",
        result.error
    );
    // Only the container whose removal failed is left, for the reaper (and, with Docker, the
    // sandbox's drop guard); the volumes went.
    assert_eq!(
        engine.live().into_iter().collect::<Vec<_>>(),
        [format!("container:cordon-{id}-0")]
    );
}

const PREPARE: &str = "prepare: {run: install}\nsteps: [{name: test, run: go}]";

#[tokio::test]
async fn a_prepare_is_built_once_behind_its_proxy_then_reused() {
    let engine = FakeEngine::new();
    engine.refuses(&["evil.example:443"]);
    let j = job(PREPARE);
    let (result, events) = run(&engine, j.clone()).await;
    assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
    assert_eq!(result.outcome, Outcome::Passed, "{result:?}");
    let env = result.environment.expect("an environment");
    assert!(!env.cached);
    assert_eq!(env.egress_refused, ["evil.example:443"]);
    assert!(events.iter().any(
        |e| matches!(e, JobEvent::EgressRefused { destination, .. } if destination == "evil.example:443")
    ));
    let calls = ops(&engine);
    assert!(
        engine.calls()[position(&calls, "create")]
            .starts_with(&format!("create cordon-{}-prepare ", j.id)),
        "the prepare's sandbox is made first"
    );
    for (a, b) in [
        ("create_egress", "create"),
        ("create", "start"),
        ("finish", "written"),
        ("written", "commit"),
        ("commit", "remove_egress"),
        ("remove_egress", "create_scratch"),
    ] {
        assert!(
            position(&calls, a) < position(&calls, b),
            "{a} before {b}: {calls:?}"
        );
    }
    assert!(engine.live().is_empty(), "{:?}", engine.live());
    // The engine was given the plans and nothing else: the prepare's on its internal network
    // with no resolver, then the step's on none.
    let plans = engine.plans();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans, {
        let plan = Runner::new(Arc::new(engine.clone()), RunnerConfig::default()).plan(&j, IMAGE);
        let mut step = plan.steps[0].clone();
        step.image = plans[1].image.clone();
        vec![plan.prepare.expect("a prepare").sandbox, step]
    });
    assert!(matches!(
        &plans[0].network,
        crate::sandbox::plan::NetworkAccess::Internal { dns, .. } if dns == &[policy::NO_DNS]
    ));
    assert_eq!(plans[1].network, crate::sandbox::plan::NetworkAccess::None);

    // The same dependencies again: the image is there, nothing is installed.
    let again = FakeEngine::new();
    again.image(&env.image, "sha256:env");
    let (result, _) = run(&again, job(PREPARE)).await;
    assert!(result.environment.expect("environment").cached);
    assert_eq!(again.count("create_egress"), 0);
    assert!(
        again
            .calls()
            .iter()
            .any(|c| c.starts_with("create cordon-"))
    );
}

#[tokio::test]
async fn a_prepare_that_fails_or_writes_too_much_commits_nothing() {
    let engine = FakeEngine::new();
    engine.script("install", Script::exits(1));
    let (result, _) = run(&engine, job(PREPARE)).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert!(
        result
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("prepare (install) did not succeed: failed, exit 1")),
        "{:?}",
        result.error
    );
    assert_eq!(engine.count("commit"), 0);
    assert_eq!(engine.count("create"), 1, "the prepare's only: no step ran");
    assert!(engine.live().is_empty());

    let engine = FakeEngine::new();
    engine.writes(u64::MAX);
    let (result, _) = run(&engine, job(PREPARE)).await;
    assert_eq!(result.outcome, Outcome::DiskLimitExceeded);
    assert_eq!(engine.count("commit"), 0);
    assert!(engine.live().is_empty());
}

#[tokio::test]
async fn a_job_takes_a_warm_sandbox_and_its_replacement_follows_the_job() {
    let engine = FakeEngine::new();
    let pool = WarmPool::new(
        Arc::new(engine.clone()),
        PoolConfig {
            per_key: 1,
            prewarm: Prewarm::Off,
            name: "test".into(),
            ..Default::default()
        },
    );
    let j = job(TWO_STEPS);
    engine.image(&j.image, IMAGE);
    pool.prime(&j, IMAGE);
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    let runner =
        Runner::new(Arc::new(engine.clone()), RunnerConfig::default()).with_pool(pool.clone());
    let preflight = runner.preflight(&j).await.expect("preflight");
    let out = tempfile::tempdir().expect("tempdir");
    let result = runner
        .start(j.clone(), preflight, out.path().into())
        .wait()
        .await;
    assert!(result.warm, "{result:?}");
    assert_eq!(result.outcome, Outcome::Passed);
    assert!(
        !engine
            .calls()
            .iter()
            .any(|c| c.contains(&format!("cordon-{}-0", j.id))),
        "the job made no container of its own"
    );
    assert!(pool.wait_ready(&j, IMAGE, Duration::from_secs(30)).await);
    pool.drain().await;
    assert!(engine.live().is_empty(), "{:?}", engine.live());
}
