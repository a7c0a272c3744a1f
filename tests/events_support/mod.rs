//! One `JobEvent` of each type, for the tests that check a contract against the code (the
//! OpenAPI document, the Python client's types).
#![allow(dead_code)]

/// One of each event, in the order of the enum. `event_type`'s match has no catch-all arm: a
/// new event does not compile until it is named there, and `python_types_match_the_services`
/// fails until it is made here too and the Python client's union has it.
pub fn every_event() -> Vec<cordon::event::JobEvent> {
    use cordon::event::{JobEvent as E, Phase, Stream};
    let step: cordon::report::StepResult = serde_json::from_value(serde_json::json!({
        "name": "s", "outcome": "passed", "exit_code": 0, "duration_ms": 1, "output_bytes": 0
    }))
    .expect("a step result");
    let result: cordon::report::JobResult = serde_json::from_value(serde_json::json!({
        "job_id": "job-1", "outcome": "passed", "exit_code": 0, "duration_ms": 1, "steps": [],
        "tests": null, "artifacts": [], "output_bytes": 0, "output_truncated": false,
        "image": "i", "profile": "strict", "phases_ms": {}
    }))
    .expect("a job result");
    let s = || "s".to_string();
    vec![
        E::Started {
            job_id: s(),
            image: s(),
            profile: s(),
            steps: vec![s()],
        },
        E::Phase {
            phase: Phase::Run,
            duration_ms: 1,
        },
        E::Progress { message: s() },
        E::StepStarted {
            step: s(),
            index: 0,
        },
        E::Output {
            step: s(),
            stream: Stream::Stdout,
            data: "x".into(),
        },
        E::OutputTruncated {
            step: s(),
            limit_bytes: 1,
        },
        E::StepFinished { result: step },
        E::Artifact {
            path: s(),
            bytes: 1,
        },
        E::ArtifactRefused {
            path: s(),
            reason: s(),
        },
        E::Environment {
            key: s(),
            image: s(),
            cached: true,
        },
        E::EgressRefused {
            destination: s(),
            reason: s(),
        },
        E::Sandbox {
            step: s(),
            applied: cordon::event::AppliedSandbox::default(),
        },
        E::Warning { message: s() },
        E::Finished {
            result: Box::new(result),
        },
    ]
}

/// The event's place in the enum.
pub fn event_index(ev: &cordon::event::JobEvent) -> usize {
    use cordon::event::JobEvent as E;
    match ev {
        E::Started { .. } => 0,
        E::Phase { .. } => 1,
        E::Progress { .. } => 2,
        E::StepStarted { .. } => 3,
        E::Output { .. } => 4,
        E::OutputTruncated { .. } => 5,
        E::StepFinished { .. } => 6,
        E::Artifact { .. } => 7,
        E::ArtifactRefused { .. } => 8,
        E::Environment { .. } => 9,
        E::EgressRefused { .. } => 10,
        E::Sandbox { .. } => 11,
        E::Warning { .. } => 12,
        E::Finished { .. } => 13,
    }
}
